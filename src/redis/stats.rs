//! Counting where a queue's jobs wait, and which workers are alive, for metrics and admin
//! views.

use std::collections::HashMap;

use fred::prelude::*;

use super::Store;
use super::keys::GROUP;

/// How long a worker's heartbeat stays fresh for the live-worker counts: several heartbeat
/// periods (workers beat every `min(lease / 3, 5 s)`).
pub(crate) const LIVE_WORKER_WINDOW_MS: u64 = 15_000;

/// Where one queue's jobs are, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueueCounts {
    /// Ready (undelivered) entries per priority, in `Priority::ALL` order.
    pub(crate) ready: [u64; 3],
    /// Delivered, unacknowledged entries per priority.
    pub(crate) pending: [u64; 3],
    pub(crate) scheduled: u64,
    pub(crate) dead: u64,
    /// Age of the oldest job that could run and has not started, 0 when none waits.
    pub(crate) oldest_waiting_ms: u64,
}

impl QueueCounts {
    /// Reads `lua/queue_stats.lua`'s nine numbers.
    fn from_reply(reply: &[i64]) -> crate::Result<QueueCounts> {
        if reply.len() != 9 {
            return Err(crate::Error::Decode(format!(
                "queue stats: expected 9 numbers, got {}",
                reply.len()
            )));
        }
        let n = |i: usize| reply[i].max(0) as u64;
        Ok(QueueCounts {
            ready: [n(0), n(2), n(4)],
            pending: [n(1), n(3), n(5)],
            scheduled: n(6),
            dead: n(7),
            oldest_waiting_ms: n(8),
        })
    }
}

impl Store {
    /// Counts `queue`'s jobs in one script call (`lua/queue_stats.lua`).
    pub(crate) async fn queue_counts(&self, queue: &str) -> crate::Result<QueueCounts> {
        let keys = &self.keys;
        let [high, normal, low] = keys.streams(queue);
        let reply: Vec<i64> = self
            .run(
                &self.scripts.queue_stats,
                vec![high, normal, low, keys.scheduled(queue), keys.dlq(queue)],
                vec![GROUP.into()],
            )
            .await?;
        QueueCounts::from_reply(&reply)
    }

    /// The workers whose heartbeat is younger than `window_ms` on Redis' clock
    /// (`lua/alive.lua`).
    pub(crate) async fn alive_workers(&self, window_ms: u64) -> crate::Result<Vec<String>> {
        self.run(
            &self.scripts.alive,
            vec![self.keys.workers()],
            vec![Value::from(window_ms as i64)],
        )
        .await
    }

    /// The live workers (heartbeat within `window_ms`) with the details each published
    /// (queues, concurrency, in flight...), in two round trips.
    pub(crate) async fn live_workers(
        &self,
        window_ms: u64,
    ) -> crate::Result<Vec<(String, HashMap<String, String>)>> {
        let alive = self.alive_workers(window_ms).await?;
        if alive.is_empty() {
            return Ok(Vec::new());
        }
        // Each worker's details key has a slot of its own: on a cluster, one pipeline per
        // node.
        let mut b = self.batch();
        for id in &alive {
            let key = self.keys.worker(id);
            let node = self.batch_node(&key).await?;
            let _: () = b.pipe(node).hgetall(key).await.map_err(|e| self.fail(e))?;
        }
        let details = b.try_all().await;
        Ok(alive
            .into_iter()
            .zip(details)
            .map(|(id, d)| {
                let d = d.and_then(|v| v.convert::<HashMap<String, String>>());
                (id, d.unwrap_or_default())
            })
            .collect())
    }

    /// A queue's lifetime totals (`succeeded`, `failed`, ...), as the workers flushed them.
    pub(crate) async fn totals(&self, queue: &str) -> crate::Result<HashMap<String, u64>> {
        let key = self.keys.totals(queue);
        let conn = self.node(&key).await?;
        conn.hgetall(key).await.map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::QueueCounts;

    #[test]
    fn counts_read_in_script_order_and_a_short_reply_is_an_error() {
        let c = QueueCounts::from_reply(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).expect("nine numbers");
        assert_eq!(c.ready, [1, 3, 5]);
        assert_eq!(c.pending, [2, 4, 6]);
        assert_eq!((c.scheduled, c.dead, c.oldest_waiting_ms), (7, 8, 9));
        assert!(matches!(
            QueueCounts::from_reply(&[1, 2]),
            Err(crate::Error::Decode(_))
        ));
    }
}
