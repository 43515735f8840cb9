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

use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::backoff::Backoff;
use crate::redis::{Promoted, Subscription, WakeMessage};

/// Jobs moved per script call at most; a full batch is followed by another at once.
const BATCH: u64 = 500;

/// Longest sleep without a check, in case a wake-up message was missed.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Promotes due jobs of `queues` until `stop` fires.
pub(crate) async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let queues = &rt.settings.queues;
    let keys = rt.client.keys().clone();
    let channels: HashMap<String, String> =
        queues.iter().map(|q| (keys.wake(q), q.clone())).collect();
    let mut wakeups = subscribe(&rt, queues).await;
    let mut backoff = Backoff::new(Duration::from_millis(500), MAX_SLEEP);

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
            match rt.client.store().promote_due(queue, BATCH).await {
                Ok(Promoted {
                    moved,
                    next_due_ms,
                    now_ms,
                }) => {
                    backoff.reset();
                    if moved > 0 {
                        tracing::debug!(queue, moved, "promoted due jobs");
                    }
                    offset_ms = now_ms - wall_ms();
                    *at = match next_due_ms {
                        _ if moved >= BATCH => now,
                        None => now + MAX_SLEEP,
                        Some(due) => {
                            now + Duration::from_millis((due - now_ms).max(0) as u64).min(MAX_SLEEP)
                        }
                    };
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "promoting due jobs failed; retrying");
                    *at = now + backoff.next_delay();
                }
            }
        }
        let wake_at = next.values().min().copied().unwrap_or(now + MAX_SLEEP);
        let message = async {
            match wakeups.as_mut() {
                Some(rx) => rx.recv().await,
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
                let (channel, due) = match m {
                    WakeMessage::Handoff => {
                        // A stopping worker handed entries back: the janitor takes them now.
                        rt.janitor_wake.notify_one();
                        continue;
                    }
                    WakeMessage::Cancel { stream, entry_id } => {
                        if rt.leases.cancel_requested(&stream, &entry_id) {
                            tracing::debug!(stream = %stream, entry = %entry_id, "cancel requested for a running job");
                        }
                        continue;
                    }
                    WakeMessage::Deps { channel } => {
                        if let Some(queue) = channels.get(&channel)
                            && let Err(e) = crate::flow::drain_outbox(&rt.client, &rt.observers, queue).await
                        {
                            tracing::warn!(queue = %queue, error = %e, "telling dependents of ended jobs failed; the janitor tries again");
                        }
                        continue;
                    }
                    WakeMessage::Due { channel, due_ms } => (channel, due_ms),
                    WakeMessage::Other => continue,
                };
                if let Some(queue) = channels.get(&channel) {
                    let in_ms = (due - (wall_ms() + offset_ms)).max(0) as u64;
                    let at = Instant::now() + Duration::from_millis(in_ms);
                    if let Some(current) = next.get_mut(queue) && at < *current {
                        *current = at;
                    }
                }
            }
        }
    }
    if let Some(s) = wakeups {
        s.close().await;
    }
}

/// A connection listening on the wake channels, or `None` (then only the periodic check
/// runs) when it cannot be had.
async fn subscribe(rt: &Runtime, queues: &[String]) -> Option<Subscription> {
    match rt.client.store().subscribe_wake(queues).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "promoter cannot subscribe to wake-ups; checking every few seconds");
            None
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
