//! Counting where a queue's jobs wait, and which workers are alive, for metrics and admin
//! views.

use std::collections::HashMap;

use fred::prelude::*;

use super::keys::{GROUP, Keys};
use super::scripts::{self, Scripts};

/// How long a worker's heartbeat stays fresh for the live-worker counts: several heartbeat
/// periods (workers beat every `min(lease / 3, 5 s)`).
pub(crate) const LIVE_WORKER_WINDOW_MS: i64 = 15_000;

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

/// Counts `queue`'s jobs in one script call.
pub(crate) async fn queue_counts(
    redis: &Client,
    keys: &Keys,
    scripts: &Scripts,
    queue: &str,
) -> Result<QueueCounts, Error> {
    let [high, normal, low] = keys.streams(queue);
    let reply: Vec<i64> = scripts::run(
        redis,
        &scripts.queue_stats,
        vec![high, normal, low, keys.scheduled(queue), keys.dlq(queue)],
        vec![GROUP.into()],
    )
    .await?;
    let n = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
    if reply.len() != 9 {
        return Err(Error::new(
            ErrorKind::Parse,
            format!("queue stats: expected 9 numbers, got {}", reply.len()),
        ));
    }
    Ok(QueueCounts {
        ready: [n(0), n(2), n(4)],
        pending: [n(1), n(3), n(5)],
        scheduled: n(6),
        dead: n(7),
        oldest_waiting_ms: n(8),
    })
}

/// The live workers (heartbeat within `window_ms` on Redis' clock) and the queues each
/// consumes, in two round trips.
pub(crate) async fn live_workers(
    redis: &Client,
    keys: &Keys,
    scripts: &Scripts,
    window_ms: i64,
) -> Result<Vec<(String, HashMap<String, String>)>, Error> {
    let alive: Vec<String> = scripts::run(
        redis,
        &scripts.alive,
        vec![keys.workers()],
        vec![Value::from(window_ms)],
    )
    .await?;
    if alive.is_empty() {
        return Ok(Vec::new());
    }
    let p = redis.pipeline();
    for id in &alive {
        let _: () = p.hgetall(keys.worker(id)).await?;
    }
    let details: Vec<Result<HashMap<String, String>, Error>> = p.try_all().await;
    Ok(alive
        .into_iter()
        .zip(details)
        .map(|(id, d)| (id, d.unwrap_or_default()))
        .collect())
}
