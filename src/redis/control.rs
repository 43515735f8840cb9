//! The queue registry, pause flags, lifetime totals and health probes.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::{Route, Store, fail};

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
        // Any node: every node of a cluster is configured alike (or should be).
        let get = |name: &'static str| async move {
            let conn = self.node(&self.keys.queues()).await?;
            let pair: Vec<String> = conn.config_get(name).await.map_err(|e| self.fail(e))?;
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
        let key = self.keys.queues();
        self.node(&key)
            .await?
            .sadd::<(), _, _>(key, queues.to_vec())
            .await
            .map_err(|e| self.fail(e))
    }

    /// Every known queue (a job was enqueued to it, or a worker consumed it), unsorted.
    pub(crate) async fn known_queues(&self) -> crate::Result<Vec<String>> {
        let key = self.keys.queues();
        let conn = self.node(&key).await?;
        conn.smembers(key).await.map_err(|e| self.fail(e))
    }

    /// Whether `queue` is in the set of known queues.
    pub(crate) async fn is_known_queue(&self, queue: &str) -> crate::Result<bool> {
        let key = self.keys.queues();
        let conn = self.node(&key).await?;
        conn.sismember(key, queue).await.map_err(|e| self.fail(e))
    }

    /// The paused queues.
    pub(crate) async fn paused_queues(&self) -> crate::Result<Vec<String>> {
        let key = self.keys.paused();
        let conn = self.node(&key).await?;
        conn.smembers(key).await.map_err(|e| self.fail(e))
    }

    /// Whether `queue` is paused.
    pub(crate) async fn is_paused(&self, queue: &str) -> crate::Result<bool> {
        let key = self.keys.paused();
        let conn = self.node(&key).await?;
        conn.sismember(key, queue).await.map_err(|e| self.fail(e))
    }

    /// Pauses `queue`; false when it was paused already.
    pub(crate) async fn pause(&self, queue: &str) -> crate::Result<bool> {
        let key = self.keys.paused();
        let conn = self.node(&key).await?;
        let added: i64 = conn.sadd(key, queue).await.map_err(|e| self.fail(e))?;
        Ok(added == 1)
    }

    /// Resumes `queue`; false when it was not paused.
    pub(crate) async fn resume(&self, queue: &str) -> crate::Result<bool> {
        let key = self.keys.paused();
        let conn = self.node(&key).await?;
        let removed: i64 = conn.srem(key, queue).await.map_err(|e| self.fail(e))?;
        Ok(removed == 1)
    }

    /// Adds `counts[i]` to field `names[i]` of each queue's lifetime totals hash, in one
    /// round trip. Fails when any increment failed (the caller keeps the counts to retry).
    pub(crate) async fn add_totals<const N: usize>(
        &self,
        names: &[&str; N],
        counts: &HashMap<String, [u64; N]>,
    ) -> crate::Result<()> {
        // Each queue's totals live on its queue's slot: on a cluster, one pipeline per node.
        let mut b = self.batch();
        for (queue, c) in counts {
            let key = self.keys.totals(queue);
            for (name, n) in names.iter().zip(c) {
                if *n > 0 {
                    let node = self.batch_node(&key).await?;
                    let _: () = b
                        .pipe(node)
                        .hincrby(key.as_str(), *name, *n as i64)
                        .await
                        .map_err(|e| self.fail(e))?;
                }
            }
        }
        self.batch_ok(b).await
    }

    /// PINGs Redis; [`Error::Timeout`](crate::Error::Timeout) when it has not answered
    /// within `deadline`. On a cluster, PINGs every primary of the slot map, all at once:
    /// one that does not answer fails the probe (a worker's queues, and the registry and
    /// heartbeat keys, may be on any of them).
    pub(crate) async fn ping(&self, deadline: Duration) -> crate::Result<()> {
        let c = match &self.route {
            Route::Pool(p) => {
                let ping = p.next().ping::<String>(None);
                return within(deadline, "answer PING", async { ping.await.map(drop) }).await;
            }
            Route::Cluster(c) => c,
        };
        let pings = c.primaries().into_iter().map(|node| async move {
            let client = c.client_of(&node).await.map_err(|e| self.noted(e))?;
            within(deadline, "answer PING", async {
                client.ping::<String>(None).await.map(drop)
            })
            .await
            .map_err(|e| match e {
                crate::Error::Timeout(m) => crate::Error::Timeout(format!("{}: {m}", node.addr())),
                e => self.noted(e),
            })
        });
        let all = futures::future::join_all(pings);
        match tokio::time::timeout(deadline, all).await {
            Ok(results) => results
                .into_iter()
                .collect::<crate::Result<Vec<()>>>()
                .map(drop),
            Err(_) => Err(crate::Error::Timeout(format!(
                "redis did not answer PING within {}",
                humantime::format_duration(deadline)
            ))),
        }
    }

    /// Writes the readiness probe key (`<prefix>:health`, kept 10 s) within `deadline`: a
    /// server that answers but refuses writes (out of memory, a read-only replica) fails.
    pub(crate) async fn probe_write(&self, deadline: Duration) -> crate::Result<()> {
        let key = self.keys.health_probe();
        let conn = self.node(&key).await?;
        let write = conn.set::<(), _, _>(
            key,
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
