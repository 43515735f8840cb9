//! The promoter: moves delayed jobs and retries into their ready streams when they are due.
//!
//! Every worker runs one for its queues. It sleeps until the earliest known due time
//! rather than polling: each promotion call returns the next due time on Redis' clock, and
//! whoever schedules a job publishes its due time on the queue's wake channel, so an
//! earlier job shortens the sleep. The move itself is one Lua script, so many promoters
//! can race and each job is still promoted exactly once. A missed wake-up (a reconnect) is
//! caught by a periodic check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::Priority;
use crate::redis::scripts;

/// Jobs moved per script call at most; a full batch is followed by another at once.
const BATCH: i64 = 500;
/// The wake-channel message of a worker that stopped and handed its entries back.
pub(crate) const HANDOFF: &str = "handoff";

/// Longest sleep without a check, in case a wake-up message was missed.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Promotes due jobs of `queues` until `stop` fires.
pub(crate) async fn run(rt: Arc<Runtime>, queues: Vec<String>, stop: CancellationToken) {
    let keys = rt.client.keys().clone();
    let channels: HashMap<String, String> =
        queues.iter().map(|q| (keys.wake(q), q.clone())).collect();
    let subscriber = subscribe(&rt, channels.keys().cloned().collect()).await;
    let mut wakeups = subscriber.as_ref().map(|s| s.message_rx());

    let now = Instant::now();
    let mut next: HashMap<String, Instant> = queues.iter().map(|q| (q.clone(), now)).collect();
    // Redis' clock minus ours, in ms, as last seen: turns a published due time into an
    // instant on our clock.
    let mut offset_ms: i64 = 0;

    loop {
        let now = Instant::now();
        for (queue, at) in next.iter_mut() {
            if *at > now {
                continue;
            }
            match promote(&rt, queue).await {
                Ok(Promoted {
                    moved,
                    next_due,
                    redis_now,
                }) => {
                    offset_ms = redis_now - wall_ms();
                    *at = if moved >= BATCH {
                        now
                    } else if next_due < 0 {
                        now + MAX_SLEEP
                    } else {
                        now + Duration::from_millis((next_due - redis_now).max(0) as u64)
                            .min(MAX_SLEEP)
                    };
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "promoting due jobs failed; retrying");
                    *at = now + Duration::from_millis(500);
                }
            }
        }
        let wake_at = next.values().min().copied().unwrap_or(now + MAX_SLEEP);
        let message = async {
            match wakeups.as_mut() {
                Some(rx) => rx.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(wake_at.into()) => {}
            m = message => {
                let Some(m) = m else {
                    // Lagged or closed: check everything now.
                    next.values_mut().for_each(|at| *at = Instant::now());
                    continue;
                };
                let channel = m.channel.to_string();
                if m.value.as_str().as_deref() == Some(HANDOFF) {
                    // A stopping worker handed entries back: the janitor takes them now.
                    rt.janitor_wake.notify_one();
                    continue;
                }
                let due: Option<i64> = m.value.as_str().and_then(|s| s.parse().ok());
                if let (Some(queue), Some(due)) = (channels.get(&channel), due) {
                    let in_ms = (due - (wall_ms() + offset_ms)).max(0) as u64;
                    let at = Instant::now() + Duration::from_millis(in_ms);
                    if let Some(current) = next.get_mut(queue) && at < *current {
                        *current = at;
                    }
                }
            }
        }
    }
    if let Some(s) = subscriber {
        let _ = s.quit().await;
    }
}

/// A connection listening on the wake channels, or `None` (then only the periodic check
/// runs) when it cannot be had.
async fn subscribe(rt: &Runtime, channels: Vec<String>) -> Option<fred::clients::SubscriberClient> {
    let subscribed = match rt.client.connector().subscriber().await {
        Ok(s) => s
            .subscribe(channels)
            .await
            .map(|()| s)
            .map_err(crate::Error::from),
        Err(e) => Err(e),
    };
    match subscribed {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "promoter cannot subscribe to wake-ups; checking every few seconds");
            None
        }
    }
}

struct Promoted {
    moved: i64,
    next_due: i64,
    redis_now: i64,
}

async fn promote(rt: &Runtime, queue: &str) -> Result<Promoted, fred::error::Error> {
    let keys = rt.client.keys();
    let mut script_keys = vec![keys.scheduled(queue)];
    script_keys.extend(Priority::ALL.map(|p| keys.stream(queue, p)));
    script_keys.push(keys.dlq(queue));
    let (moved, next_due, redis_now): (i64, i64, i64) = scripts::run(
        rt.client.redis(),
        &rt.client.scripts().promote,
        script_keys,
        vec![Value::from(BATCH), keys.job_prefix(queue).into()],
    )
    .await?;
    if moved > 0 {
        tracing::debug!(queue, moved, "promoted due jobs");
    }
    Ok(Promoted {
        moved,
        next_due,
        redis_now,
    })
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
