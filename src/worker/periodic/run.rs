//! Running a schedule: claim each due tick in Redis on Redis' clock, enqueue its job with
//! a per-tick unique key, retry while Redis is away, and stop with the worker.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::CronSchedule;
use super::ticks::{next_tick, settled_at_start};
use crate::Result;
use crate::job::{IntoJob, PreparedJob};
use crate::redis::{CronClaim as Claim, CronState};
use crate::worker::Runtime;

/// Longest sleep before Redis' clock is read again, so a long wait cannot drift.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long the enqueue of a claimed tick is retried before the tick is given up.
const ENQUEUE_PATIENCE: Duration = Duration::from_secs(60);
/// First and longest pause between retries after a failed Redis call.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Redis' clock as last read: `redis_ms` was its time no later than `at` on ours, so
/// estimates from it never run ahead of Redis.
#[derive(Clone, Copy)]
struct Clock {
    redis_ms: i64,
    at: Instant,
}

impl Clock {
    fn new(redis_ms: i64) -> Self {
        Clock {
            redis_ms,
            at: Instant::now(),
        }
    }

    fn now(&self) -> i64 {
        self.redis_ms + self.at.elapsed().as_millis() as i64
    }

    /// The instant on our clock when Redis' clock shows `ms`.
    fn instant_of(&self, ms: i64) -> Instant {
        self.at + Duration::from_millis((ms - self.redis_ms).max(0) as u64)
    }
}

/// Claims `tick` of `s` (or only reads its state, `None`), on Redis' clock.
async fn call_claim(rt: &Runtime, s: &CronSchedule, tick: Option<i64>) -> Result<CronState> {
    rt.client
        .store()
        .cron_claim(&s.queue, &s.name, tick, &rt.settings.consumer)
        .await
}

/// Runs `schedules` until `stop` fires.
pub(crate) async fn run(rt: Arc<Runtime>, schedules: Vec<CronSchedule>, stop: CancellationToken) {
    futures::future::join_all(
        schedules
            .into_iter()
            .map(|s| run_one(rt.clone(), s, stop.clone())),
    )
    .await;
}

async fn run_one(rt: Arc<Runtime>, s: CronSchedule, stop: CancellationToken) {
    tracing::info!(
        schedule = %s.name, queue = %s.queue, job_type = %s.job_type, cron = %s.expr,
        time_zone = %s.zone, "periodic job scheduled"
    );
    let mut pause = RETRY_FIRST;
    // Where the schedule stood in Redis when this worker started.
    let (mut clock, mut settled) = loop {
        match call_claim(&rt, &s, None).await {
            Ok(r) => {
                break (
                    Clock::new(r.now_ms),
                    settled_at_start(s.catch_up, r.now_ms, r.last),
                );
            }
            Err(e) => {
                tracing::warn!(schedule = %s.name, error = %e, "reading a periodic job's state failed; retrying");
                if !pause_or_stop(&stop, &mut pause).await {
                    return;
                }
            }
        }
    };
    loop {
        let Some(next) = next_tick(&*s.ticks, settled, clock.now()) else {
            tracing::info!(schedule = %s.name, "periodic job has no more ticks");
            stop.cancelled().await;
            return;
        };
        let due = clock.instant_of(next.at);
        let wake = due.min(Instant::now() + MAX_SLEEP);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if wake < due {
            // A long wait: read Redis' clock again rather than trust ours for longer.
            match call_claim(&rt, &s, None).await {
                Ok(r) => {
                    pause = RETRY_FIRST;
                    clock = Clock::new(r.now_ms);
                }
                Err(e) => {
                    tracing::warn!(schedule = %s.name, error = %e, "reading Redis' clock failed; retrying");
                    if !pause_or_stop(&stop, &mut pause).await {
                        return;
                    }
                }
            }
            continue;
        }
        // Enqueue first, claim second: the tick's unique key makes the enqueue idempotent
        // across workers and retries, so a worker dying between the two steps loses
        // nothing, and the claim only records progress (for catch-up).
        if next.late {
            tracing::info!(schedule = %s.name, tick = %show(next.at), "catching up: enqueueing the latest missed tick only");
        }
        enqueue(&rt, &s, next.at, &stop).await;
        let reply = match call_claim(&rt, &s, Some(next.at)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(schedule = %s.name, tick = %show(next.at), error = %e, "claiming a periodic job's tick failed; retrying");
                if !pause_or_stop(&stop, &mut pause).await {
                    return;
                }
                continue;
            }
        };
        pause = RETRY_FIRST;
        clock = Clock::new(reply.now_ms);
        match reply.claim {
            Claim::Claimed => settled = next.at,
            Claim::Taken => {
                // Another worker has it (or a newer one): move on past both.
                settled = next.at.max(reply.last.unwrap_or(next.at).min(reply.now_ms));
            }
            // Our clock ran ahead of Redis': wait for the rest.
            Claim::NotDue | Claim::Read => {}
        }
    }
}

/// How long a tick's unique key keeps other workers (and retries) from enqueueing it again.
const TICK_UNIQUE_TTL: Duration = Duration::from_secs(600);

/// A tick's job, made idempotent: unique per schedule and tick, and not ready before the
/// tick on Redis' clock (a worker whose clock runs ahead schedules it instead).
pub(super) struct TickJob<J> {
    pub(super) job: J,
    pub(super) key: String,
    pub(super) at: SystemTime,
}

impl<J: IntoJob> IntoJob for TickJob<J> {
    fn prepare(self) -> Result<PreparedJob> {
        let mut prepared = self.job.prepare()?;
        prepared.envelope.unique = Some(self.key.clone());
        prepared.unique = Some((self.key, TICK_UNIQUE_TTL));
        if prepared.schedule.is_none() {
            prepared.schedule = Some(crate::job::Schedule::At(self.at));
        }
        Ok(prepared)
    }
}

/// Enqueues a tick's job, retrying Redis errors for a while. Safe to repeat: the tick's
/// unique key makes every enqueue after the first return the same job.
async fn enqueue(rt: &Runtime, s: &CronSchedule, tick: i64, stop: &CancellationToken) {
    let tick_time = UNIX_EPOCH + Duration::from_millis(tick.max(0) as u64);
    let give_up = Instant::now() + ENQUEUE_PATIENCE;
    let mut pause = RETRY_FIRST;
    loop {
        let key = format!("cron:{}:{tick}", s.name);
        let e = match (s.enqueue)(rt.client.clone(), tick_time, key).await {
            Ok(id) => {
                tracing::debug!(schedule = %s.name, tick = %show(tick), job_id = %id, "periodic job enqueued");
                return;
            }
            Err(e) => e,
        };
        let retryable = e.is_redis();
        if !retryable || Instant::now() + pause > give_up {
            tracing::error!(schedule = %s.name, tick = %show(tick), error = %e, "enqueueing a periodic job failed; this tick is skipped");
            return;
        }
        tracing::warn!(schedule = %s.name, tick = %show(tick), error = %e, "enqueueing a periodic job failed; retrying");
        if !pause_or_stop(stop, &mut pause).await {
            tracing::error!(schedule = %s.name, tick = %show(tick), "worker stopped before a claimed tick was enqueued; this tick is skipped");
            return;
        }
    }
}

/// Sleeps for `pause` (then doubles it, up to a cap); false if `stop` fired first.
async fn pause_or_stop(stop: &CancellationToken, pause: &mut Duration) -> bool {
    let d = *pause;
    *pause = (*pause * 2).min(RETRY_MAX);
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// A tick for logs: RFC 3339 in UTC.
fn show(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| ms.to_string())
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
