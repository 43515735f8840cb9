//! Leases and liveness: renewing held entries, heartbeats, and handing entries back at stop.

use std::time::Duration;

use fred::prelude::*;

use super::Store;
use super::keys::GROUP;

/// The wake-channel message of a worker that stopped and handed its entries back.
pub(crate) const HANDOFF: &str = "handoff";

/// Entries renewed per script call at most.
const RENEW_BATCH: usize = 500;

/// What a worker publishes about itself with each heartbeat (`<prefix>:worker:<id>`).
#[derive(Debug, Clone)]
pub(crate) struct WorkerDetails<'a> {
    pub(crate) queues: &'a [String],
    /// The job types it has handlers for, comma-separated.
    pub(crate) types: &'a str,
    pub(crate) concurrency: usize,
    pub(crate) in_flight: usize,
    pub(crate) started_at_ms: u64,
    pub(crate) pid: u32,
}

/// What a renewal found (`lua/renew.lua`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Renewed {
    /// Entries another consumer owns now.
    pub(crate) lost: Vec<String>,
    /// Entries whose jobs an operator asked to cancel, or deleted.
    pub(crate) cancelled: Vec<String>,
}

impl Store {
    /// Renews `consumer`'s leases on `ids` of `stream` (`lua/renew.lua`, 500 ids a call);
    /// returns the ids another consumer owns now, and the ids whose jobs an operator asked
    /// to cancel (or deleted).
    pub(crate) async fn renew_leases(
        &self,
        stream: &str,
        consumer: &str,
        ids: &[String],
    ) -> crate::Result<Renewed> {
        let mut out = Renewed::default();
        let cancel = super::keys::Keys::cancel_of_stream(stream);
        for chunk in ids.chunks(RENEW_BATCH) {
            let mut args: Vec<Value> = vec![GROUP.into(), consumer.into()];
            args.extend(chunk.iter().map(|id| Value::from(id.as_str())));
            let (lost, cancelled): (Vec<String>, Vec<String>) = self
                .run(
                    &self.scripts.renew,
                    vec![stream.to_string(), cancel.clone()],
                    args,
                )
                .await?;
            out.lost.extend(lost);
            out.cancelled.extend(cancelled);
        }
        Ok(out)
    }

    /// Records `consumer` alive on Redis' clock and forgets workers silent for
    /// `forget_after` (`lua/heartbeat.lua`); returns Redis' now in ms.
    pub(crate) async fn heartbeat(
        &self,
        consumer: &str,
        forget_after: Duration,
    ) -> crate::Result<i64> {
        self.run(
            &self.scripts.heartbeat,
            vec![self.keys.workers()],
            vec![
                consumer.into(),
                Value::from(forget_after.as_millis() as i64),
            ],
        )
        .await
    }

    /// Publishes `consumer`'s details with the time of its heartbeat, kept for `ttl`.
    pub(crate) async fn publish_worker(
        &self,
        consumer: &str,
        d: &WorkerDetails<'_>,
        heartbeat_ms: i64,
        ttl: Duration,
    ) -> crate::Result<()> {
        let details: Vec<(&str, Value)> = vec![
            ("queues", d.queues.join(",").into()),
            ("types", d.types.into()),
            ("concurrency", Value::from(d.concurrency as i64)),
            ("in_flight", Value::from(d.in_flight as i64)),
            ("started_at", Value::from(d.started_at_ms as i64)),
            ("last_heartbeat", Value::from(heartbeat_ms)),
            ("pid", Value::from(i64::from(d.pid))),
        ];
        let key = self.keys.worker(consumer);
        let conn = self.node(&key).await?;
        let p = conn.pipeline();
        let _: () = p
            .hset(key.as_str(), details)
            .await
            .map_err(|e| self.fail(e))?;
        let _: () = p
            .pexpire(key.as_str(), ttl.as_millis() as i64, None)
            .await
            .map_err(|e| self.fail(e))?;
        let results: Vec<Result<Value, fred::error::Error>> = p.try_all().await;
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(self.fail(e)),
            None => Ok(()),
        }
    }

    /// At a worker's stop: withdraws `consumer`'s heartbeat and details, adds it to each of
    /// `queues`' hand-off set (kept for `keep`) and says `handoff` on their wake channels, so
    /// other workers' janitors take what it left pending at once. One round trip.
    pub(crate) async fn withdraw(
        &self,
        consumer: &str,
        queues: &[String],
        keep: Duration,
    ) -> crate::Result<()> {
        // The worker keys and each queue's hand-off set may be on different nodes of a
        // cluster: one pipeline per node, sent at once.
        let keys = &self.keys;
        let mut b = self.batch();
        let fail = |e| self.fail(e);
        let workers = keys.workers();
        let node = self.batch_node(&workers).await?;
        let _: () = b.pipe(node).zrem(workers, consumer).await.map_err(fail)?;
        let worker = keys.worker(consumer);
        let node = self.batch_node(&worker).await?;
        let _: () = b.pipe(node).del(worker).await.map_err(fail)?;
        for q in queues {
            let handoff = keys.handoff(q);
            let node = self.batch_node(&handoff).await?;
            let _: () = b
                .pipe(node.clone())
                .sadd(handoff.as_str(), consumer)
                .await
                .map_err(fail)?;
            let _: () = b
                .pipe(node.clone())
                .pexpire(handoff.as_str(), keep.as_millis() as i64, None)
                .await
                .map_err(fail)?;
            // Published on the queue's node (a cluster forwards it to every node).
            let _: () = b
                .pipe(node)
                .publish(keys.wake(q), HANDOFF)
                .await
                .map_err(fail)?;
        }
        self.batch_ok(b).await
    }

    /// The consumers that handed `queue`'s entries back when they stopped.
    pub(crate) async fn handed_off(&self, queue: &str) -> crate::Result<Vec<String>> {
        let key = self.keys.handoff(queue);
        let conn = self.node(&key).await?;
        conn.smembers(key).await.map_err(|e| self.fail(e))
    }

    /// Forgets `consumer`'s hand-off of `queue` (everything it left was taken).
    pub(crate) async fn forget_handoff(&self, queue: &str, consumer: &str) -> crate::Result<()> {
        let key = self.keys.handoff(queue);
        let conn = self.node(&key).await?;
        conn.srem::<(), _, _>(key, consumer)
            .await
            .map_err(|e| self.fail(e))
    }
}
