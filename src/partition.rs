//! Partitioned queues: one queue spread over several partitions, each a complete queue
//! under its own hash tag (`emails~3`: streams, scheduled set, dead letters, status), so a
//! busy queue can use every primary of a Redis Cluster.
//!
//! A queue's partition count is recorded in Redis (`<prefix>:partitions`) by whoever
//! declares it first ([`Client::declare_partitions`], [`WorkerBuilder::partitions`]); a
//! different declaration later is refused. Producers read it (cached for
//! [`LAYOUT_TTL`]) and place each job into one partition: by its partition key, else its
//! unique key, else in turn. Workers read it when they start and consume every partition.
//! The count changes only on an empty queue ([`Client::set_partitions`]).
//!
//! [`WorkerBuilder::partitions`]: crate::WorkerBuilder::partitions

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::names::{MAX_PARTITIONS, validate_name};
use crate::redis::Declared;
use crate::redis::partition_names;
use crate::{Client, Error, Result};

/// How long a producer trusts the partition count it read before reading it again. The
/// read again happens beside the enqueue that found the count old, which goes on with the
/// count it has: no enqueue waits for the count once it was read, so a producer goes on
/// while the primary holding the counts fails over. While the count cannot be read (Redis
/// unreachable), the last one read stays in use.
pub(crate) const LAYOUT_TTL: Duration = Duration::from_secs(2);

/// A queue's partitions, in partition order (one name, the queue's own, when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) names: Arc<[String]>,
}

impl Layout {
    pub(crate) fn of(queue: &str, n: u16) -> Layout {
        Layout {
            names: partition_names(queue, n).into(),
        }
    }

    /// The partition a job goes to: by `key` when it has one, else the next in turn.
    pub(crate) fn place(&self, key: Option<&str>, turn: &AtomicU64) -> &str {
        let n = self.names.len() as u64;
        if n == 1 {
            return &self.names[0];
        }
        let i = match key {
            Some(k) => crate::names::fnv1a(k.as_bytes()) % n,
            None => turn.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.names[i as usize]
    }
}

/// The layouts a client read lately, and its turn counter.
#[derive(Debug, Default)]
pub(crate) struct Layouts {
    read: Mutex<HashMap<String, (Layout, Instant)>>,
    pub(crate) turn: AtomicU64,
}

impl Layouts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Layout, Instant)>> {
        // A map of cached reads: valid whatever a panicking holder left.
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached layout of `queue` however old, and whether it is due to be read again
    /// (read [`LAYOUT_TTL`] ago or more). A due layout counts as read now, so that one
    /// caller, not every one, reads it again; should that read fail, the layout stays in
    /// use for another [`LAYOUT_TTL`].
    fn cached(&self, queue: &str) -> Option<(Layout, bool)> {
        let mut read = self.lock();
        let (layout, at) = read.get_mut(queue)?;
        let due = at.elapsed() >= LAYOUT_TTL;
        if due {
            *at = Instant::now();
        }
        Some((layout.clone(), due))
    }

    pub(crate) fn remember(&self, queue: &str, n: u16) -> Layout {
        let layout = Layout::of(queue, n);
        self.lock()
            .insert(queue.to_string(), (layout.clone(), Instant::now()));
        layout
    }
}

fn check_count(n: u16) -> Result<()> {
    if (1..=MAX_PARTITIONS).contains(&n) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "a queue has 1 to {MAX_PARTITIONS} partitions, not {n}"
        )))
    }
}

impl Client {
    /// Declares that `queue` has `n` partitions (1 to 128): recorded in Redis unless a
    /// count is recorded already. Declaring the count that is recorded is a no-op, so every
    /// producer and worker may declare it at start. Fails with [`Error::InvalidConfig`]
    /// when another count is recorded: change it with [`set_partitions`](Self::set_partitions)
    /// on an empty queue.
    pub async fn declare_partitions(&self, queue: &str, n: u16) -> Result<()> {
        validate_name("queue", queue)?;
        check_count(n)?;
        match self.store().declare_partitions(queue, n).await? {
            Declared::Same => {
                self.layouts().remember(queue, n);
                // A capacity set before the queue had partitions is shared over them.
                if n > 1 {
                    let names = partition_names(queue, n);
                    self.respread_capacity(queue, &[queue.to_string()], &names)
                        .await?;
                }
                Ok(())
            }
            Declared::Other(now) => Err(Error::InvalidConfig(format!(
                "queue {queue:?} has {now} partitions, not {n}: change it with `stevedore partitions {queue} {n}` once the queue is empty"
            ))),
        }
    }

    /// How many partitions `queue` has (1: it is a plain queue), read from Redis. A
    /// partition's name (`emails~3`) has 1: itself.
    pub async fn partitions(&self, queue: &str) -> Result<u16> {
        crate::names::validate_queue_ref(queue)?;
        if crate::names::is_partition(queue) {
            return Ok(1);
        }
        let n = self
            .store()
            .partition_counts(&[queue])
            .await?
            .first()
            .copied()
            .unwrap_or(1);
        self.layouts().remember(queue, n);
        Ok(n)
    }

    /// The names of `queue`'s partitions, in partition order (the queue's own name when it
    /// has one partition): what metrics, `redis-cli` keys and job ids show
    /// (`emails~3:n-1733300000000-0`).
    pub async fn partition_names(&self, queue: &str) -> Result<Vec<String>> {
        let n = self.partitions(queue).await?;
        Ok(partition_names(queue, n))
    }

    /// Changes `queue`'s partition count to `n` (1 to 128; 1 makes it a plain queue again).
    /// Refused with [`Error::QueueNotEmpty`] while the queue holds any job, in its current
    /// partitions or in the new ones: waiting, running, scheduled or dead. Producers follow
    /// within 2 s; running workers keep reading the partitions they started with, so
    /// restart them (README, "Partitioned queues": drain, switch, restart).
    pub async fn set_partitions(&self, queue: &str, n: u16) -> Result<()> {
        validate_name("queue", queue)?;
        check_count(n)?;
        let now = self.partitions(queue).await?;
        let mut names = partition_names(queue, now);
        for name in partition_names(queue, n) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let counts =
            futures::future::try_join_all(names.iter().map(|q| self.store().queue_counts(q)))
                .await?;
        let jobs: u64 = counts
            .iter()
            .map(|c| c.ready.iter().chain(&c.pending).sum::<u64>() + c.scheduled + c.dead)
            .sum();
        if jobs > 0 {
            return Err(Error::QueueNotEmpty {
                queue: queue.to_string(),
                jobs,
            });
        }
        self.store().set_partitions(queue, n).await?;
        self.layouts().remember(queue, n);
        self.respread_capacity(
            queue,
            &partition_names(queue, now),
            &partition_names(queue, n),
        )
        .await
    }

    /// The layouts of `queues` (distinct). A queue never read is read from Redis now; one
    /// read [`LAYOUT_TTL`] ago or more is used as it is and read again in the background.
    pub(crate) async fn layouts_of(&self, queues: &[&str]) -> Result<HashMap<String, Layout>> {
        let mut out = HashMap::with_capacity(queues.len());
        let mut unread = Vec::new();
        let mut due = Vec::new();
        for q in queues {
            if out.contains_key(*q) || unread.contains(q) {
                continue;
            }
            match self.layouts().cached(q) {
                Some((l, old)) => {
                    if old {
                        due.push(q.to_string());
                    }
                    out.insert(q.to_string(), l);
                }
                None => unread.push(*q),
            }
        }
        if !due.is_empty() {
            self.read_layouts_again(due);
        }
        if unread.is_empty() {
            return Ok(out);
        }
        let counts = self.store().partition_counts(&unread).await?;
        for (q, n) in unread.into_iter().zip(counts) {
            out.insert(q.to_string(), self.layouts().remember(q, n));
        }
        Ok(out)
    }

    /// Reads the counts of `queues` again in a task of its own. The counts' key may be on a
    /// primary that is failing over, and a command sent to it as it died waits for its
    /// connection to give up (seconds): the enqueue that found the count old does not.
    fn read_layouts_again(&self, queues: Vec<String>) {
        let client = self.clone();
        tokio::spawn(async move {
            let names: Vec<&str> = queues.iter().map(String::as_str).collect();
            match client.store().partition_counts(&names).await {
                Ok(counts) => {
                    for (q, n) in names.into_iter().zip(counts) {
                        client.layouts().remember(q, n);
                    }
                }
                // The counts read before stay in use for another LAYOUT_TTL.
                Err(e) => {
                    tracing::debug!(error = %e, "partition counts not read again; the last ones stay in use")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stick_to_a_partition_and_turns_go_round() {
        let layout = Layout::of("q", 3);
        let turn = AtomicU64::new(0);
        let turns: Vec<&str> = (0..6).map(|_| layout.place(None, &turn)).collect();
        assert_eq!(&turns[..3], &layout.names[..]);
        assert_eq!(&turns[3..], &layout.names[..]);
        let a = layout.place(Some("customer-17"), &turn);
        for _ in 0..10 {
            assert_eq!(layout.place(Some("customer-17"), &turn), a);
        }
        let spread: std::collections::HashSet<&str> = (0..100)
            .map(|i| layout.place(Some(&format!("k{i}")), &turn))
            .collect();
        assert_eq!(spread.len(), 3);
        assert_eq!(crate::names::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let one = Layout::of("q", 1);
        assert_eq!(one.place(Some("x"), &turn), "q");
    }

    #[test]
    fn an_old_layout_is_due_to_one_caller_and_stays_in_use() {
        let layouts = Layouts::default();
        assert!(layouts.cached("q").is_none());
        layouts.remember("q", 3);
        assert_eq!(layouts.cached("q"), Some((Layout::of("q", 3), false)));
        // Read LAYOUT_TTL ago: the first caller reads it again, the next ones do not.
        if let Some((_, at)) = layouts.lock().get_mut("q") {
            *at = Instant::now() - LAYOUT_TTL;
        }
        assert_eq!(layouts.cached("q"), Some((Layout::of("q", 3), true)));
        assert_eq!(layouts.cached("q"), Some((Layout::of("q", 3), false)));
        layouts.remember("q", 4);
        assert_eq!(layouts.cached("q"), Some((Layout::of("q", 4), false)));
    }
}
