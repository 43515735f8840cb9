//! Bounded queues: a capacity per queue, refused or waiting enqueues beyond it (README,
//! "Bounded queues"; docs/architecture.md, "Bounded queues").

use crate::names::validate_name;
use crate::redis::capacity_field;
use crate::{Client, Error, Result};

/// Checks a capacity: at least 1.
pub(crate) fn check_capacity(capacity: u64) -> Result<()> {
    if capacity == 0 {
        return Err(Error::InvalidInput(
            "a queue's capacity must be at least 1 (remove the capacity to lift the bound)".into(),
        ));
    }
    Ok(())
}

impl Client {
    /// Bounds `queue` to `capacity` jobs waiting: ready jobs not yet started, plus its
    /// scheduled ones (delayed, retrying, held back by a limit). Running jobs do not count.
    /// An enqueue that finds no room fails with [`Error::QueueFull`] and writes nothing
    /// (or, with [`enqueue_wait`](Self::enqueue_wait), waits for room); the count and the
    /// write are one step in Redis, so concurrent producers never push the queue past its
    /// capacity. Retries, promotions and dead-letter replays are never refused: they count
    /// toward the capacity but may pass it.
    ///
    /// A partitioned queue's capacity is shared over its partitions, each taking its
    /// share rounded up (so they may hold up to one job per partition more in all); a
    /// producer may be refused by a full partition while another has room.
    ///
    /// ```no_run
    /// # async fn run(client: stevedore::Client) -> stevedore::Result<()> {
    /// client.set_queue_capacity("reports", 10_000).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`Error::InvalidInput`] for 0, [`Error::InvalidName`] for a name that is not a
    /// queue name.
    pub async fn set_queue_capacity(&self, queue: &str, capacity: u64) -> Result<()> {
        validate_name("queue", queue)?;
        check_capacity(capacity)?;
        let parts = self.partition_names(queue).await?;
        self.store()
            .set_capacity(queue, &parts, Some(capacity))
            .await
            .map(|_| ())
    }

    /// Lifts `queue`'s bound; false when it had none. Producers waiting for room go on at
    /// once.
    pub async fn remove_queue_capacity(&self, queue: &str) -> Result<bool> {
        validate_name("queue", queue)?;
        let parts = self.partition_names(queue).await?;
        self.store().set_capacity(queue, &parts, None).await
    }

    /// `queue`'s capacity, `None` when it is not bounded.
    pub async fn queue_capacity(&self, queue: &str) -> Result<Option<u64>> {
        validate_name("queue", queue)?;
        Ok(self
            .store()
            .limit_fields()
            .await?
            .get(&capacity_field(queue))
            .and_then(|v| v.trim().parse().ok()))
    }

    /// Every bounded queue with its capacity, sorted by name.
    pub async fn queue_capacities(&self) -> Result<Vec<(String, u64)>> {
        let mut out: Vec<(String, u64)> = self
            .store()
            .limit_fields()
            .await?
            .into_iter()
            .filter_map(|(field, value)| {
                let queue = field.strip_prefix("capacity:")?;
                validate_name("queue", queue).ok()?;
                Some((queue.to_string(), value.trim().parse().ok()?))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// After `queue`'s partitions changed from `old` to `new` (names): its capacity, if
    /// any, shared over the new ones, and taken off the old ones that are gone.
    pub(crate) async fn respread_capacity(
        &self,
        queue: &str,
        old: &[String],
        new: &[String],
    ) -> Result<()> {
        let gone: Vec<String> = old.iter().filter(|n| !new.contains(n)).cloned().collect();
        if !gone.is_empty() {
            self.store().clear_capacity_keys(&gone).await?;
        }
        if let Some(capacity) = self.queue_capacity(queue).await? {
            self.store()
                .set_capacity(queue, new, Some(capacity))
                .await?;
        }
        Ok(())
    }
}
