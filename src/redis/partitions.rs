//! How many partitions each partitioned queue has (`<prefix>:partitions`, a hash of queue
//! name → count). A queue missing from it has one: it is a plain queue.

use std::collections::HashMap;

use fred::prelude::*;

use super::Store;

/// What a declaration found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Declared {
    /// The count is now the one declared (it was, or nothing was set).
    Same,
    /// Another count was set before: it stays.
    Other(u16),
}

impl Store {
    /// The partition counts of `queues` (1 for a queue that has none recorded), in order.
    pub(crate) async fn partition_counts(&self, queues: &[&str]) -> crate::Result<Vec<u16>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.partitions();
        let conn = self.node(&key).await?;
        let fields: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
        let reply: Vec<Option<String>> = if fields.len() == 1 {
            let one: Option<String> = conn.hget(key, &fields[0]).await.map_err(|e| self.fail(e))?;
            vec![one]
        } else {
            conn.hmget(key, fields).await.map_err(|e| self.fail(e))?
        };
        Ok(reply.into_iter().map(|v| count_of(v.as_deref())).collect())
    }

    /// Every partitioned queue and its count.
    pub(crate) async fn all_partition_counts(&self) -> crate::Result<HashMap<String, u16>> {
        let key = self.keys.partitions();
        let conn = self.node(&key).await?;
        let all: HashMap<String, String> = conn.hgetall(key).await.map_err(|e| self.fail(e))?;
        Ok(all
            .into_iter()
            .map(|(q, n)| {
                let n = count_of(Some(&n));
                (q, n)
            })
            .filter(|(_, n)| *n > 1)
            .collect())
    }

    /// Records `n` partitions for `queue` unless a count is recorded already: an HSETNX,
    /// and an HGET only when a count was there before.
    pub(crate) async fn declare_partitions(&self, queue: &str, n: u16) -> crate::Result<Declared> {
        let key = self.keys.partitions();
        let conn = self.node(&key).await?;
        let set: bool = conn
            .hsetnx(&key, queue, n)
            .await
            .map_err(|e| self.fail(e))?;
        if set {
            return Ok(Declared::Same);
        }
        let now: Option<String> = conn.hget(&key, queue).await.map_err(|e| self.fail(e))?;
        let now = count_of(now.as_deref());
        Ok(if now == n.max(1) {
            Declared::Same
        } else {
            Declared::Other(now)
        })
    }

    /// Records `n` partitions for `queue`, whatever was recorded (1 removes the record).
    pub(crate) async fn set_partitions(&self, queue: &str, n: u16) -> crate::Result<()> {
        let key = self.keys.partitions();
        let conn = self.node(&key).await?;
        if n <= 1 {
            conn.hdel::<(), _, _>(key, queue).await
        } else {
            conn.hset::<(), _, _>(key, (queue, n)).await
        }
        .map_err(|e| self.fail(e))
    }
}

/// A recorded count; anything unreadable counts as 1 (a plain queue).
fn count_of(v: Option<&str>) -> u16 {
    v.and_then(|v| v.parse::<u16>().ok())
        .filter(|n| (1..=crate::names::MAX_PARTITIONS).contains(n))
        .unwrap_or(1)
}
