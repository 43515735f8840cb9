//! The queue registry, pause flags, lifetime totals and health probes.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::{Store, all_ok, fail};

/// The server settings that decide whether it can lose jobs (`None`: not readable, e.g.
/// CONFIG is refused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Durability {
    /// `appendonly`: `yes` or `no`.
    pub(crate) appendonly: Option<String>,
    /// `maxmemory-policy`: `noeviction` keeps every key.
    pub(crate) maxmemory_policy: Option<String>,
}

impl Store {
    /// Reads the server's persistence and eviction settings (CONFIG GET).
    pub(crate) async fn durability(&self) -> crate::Result<Durability> {
        let get = |name: &'static str| async move {
            let pair: Vec<String> = self.conn().config_get(name).await.map_err(fail)?;
            Ok::<_, crate::Error>(pair.into_iter().nth(1))
        };
        Ok(Durability {
            appendonly: get("appendonly").await.unwrap_or(None),
            maxmemory_policy: get("maxmemory-policy").await.unwrap_or(None),
        })
    }

    /// Adds `queues` to the set of known queues.
    pub(crate) async fn register_queues(&self, queues: &[String]) -> crate::Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        self.conn()
            .sadd::<(), _, _>(self.keys.queues(), queues.to_vec())
            .await
            .map_err(fail)
    }

    /// Every known queue (a job was enqueued to it, or a worker consumed it), unsorted.
    pub(crate) async fn known_queues(&self) -> crate::Result<Vec<String>> {
        self.conn().smembers(self.keys.queues()).await.map_err(fail)
    }

    /// Whether `queue` is in the set of known queues.
    pub(crate) async fn is_known_queue(&self, queue: &str) -> crate::Result<bool> {
        self.conn()
            .sismember(self.keys.queues(), queue)
            .await
            .map_err(fail)
    }

    /// The paused queues.
    pub(crate) async fn paused_queues(&self) -> crate::Result<Vec<String>> {
        self.conn().smembers(self.keys.paused()).await.map_err(fail)
    }

    /// Whether `queue` is paused.
    pub(crate) async fn is_paused(&self, queue: &str) -> crate::Result<bool> {
        self.conn()
            .sismember(self.keys.paused(), queue)
            .await
            .map_err(fail)
    }

    /// Pauses `queue`; false when it was paused already.
    pub(crate) async fn pause(&self, queue: &str) -> crate::Result<bool> {
        let added: i64 = self
            .conn()
            .sadd(self.keys.paused(), queue)
            .await
            .map_err(fail)?;
        Ok(added == 1)
    }

    /// Resumes `queue`; false when it was not paused.
    pub(crate) async fn resume(&self, queue: &str) -> crate::Result<bool> {
        let removed: i64 = self
            .conn()
            .srem(self.keys.paused(), queue)
            .await
            .map_err(fail)?;
        Ok(removed == 1)
    }

    /// Adds `counts[i]` to field `names[i]` of each queue's lifetime totals hash, in one
    /// round trip. Fails when any increment failed (the caller keeps the counts to retry).
    pub(crate) async fn add_totals<const N: usize>(
        &self,
        names: &[&str; N],
        counts: &HashMap<String, [u64; N]>,
    ) -> crate::Result<()> {
        let p = self.conn().pipeline();
        for (queue, c) in counts {
            let key = self.keys.totals(queue);
            for (name, n) in names.iter().zip(c) {
                if *n > 0 {
                    let _: () = p
                        .hincrby(key.as_str(), *name, *n as i64)
                        .await
                        .map_err(fail)?;
                }
            }
        }
        all_ok(p).await
    }

    /// PINGs Redis; [`Error::Timeout`](crate::Error::Timeout) when it has not answered
    /// within `deadline`.
    pub(crate) async fn ping(&self, deadline: Duration) -> crate::Result<()> {
        let ping = self.conn().ping::<String>(None);
        within(deadline, "answer PING", async { ping.await.map(drop) }).await
    }

    /// Writes the readiness probe key (`<prefix>:health`, kept 10 s) within `deadline`: a
    /// server that answers but refuses writes (out of memory, a read-only replica) fails.
    pub(crate) async fn probe_write(&self, deadline: Duration) -> crate::Result<()> {
        let write = self.conn().set::<(), _, _>(
            self.keys.health_probe(),
            "ok",
            Some(Expiration::PX(10_000)),
            None::<SetOptions>,
            false,
        );
        within(deadline, "accept a write", write).await
    }
}

/// `call`'s outcome, or [`Error::Timeout`](crate::Error::Timeout) saying Redis did not
/// `what` within `deadline`.
async fn within(
    deadline: Duration,
    what: &str,
    call: impl Future<Output = Result<(), fred::error::Error>>,
) -> crate::Result<()> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(crate::Error::Timeout(format!(
            "redis did not {what} within {}",
            humantime::format_duration(deadline)
        ))),
    }
}
