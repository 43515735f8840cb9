//! Periodic jobs: cron schedules whose every tick enqueues one job, once, however many
//! workers run the schedule.
//!
//! Every worker that registers a schedule runs it, so a schedule keeps going as long as any
//! one of those workers lives, with no leader to elect. When a tick is due, each worker
//! enqueues its job with a unique key for that schedule and tick
//! (`cron:<name>:<tick ms>`, kept 10 minutes) and `run_at` the tick, so however many
//! workers (or retries) enqueue it, one job exists, and a worker whose clock runs ahead
//! only schedules it for the tick on Redis' clock. Then it records progress in the queue's
//! hash `<prefix>:{<queue>}:cron` (schedule name → newest tick claimed) through
//! `lua/cron_claim.lua`, which moves that field forward atomically and only once the tick
//! is due on Redis' clock. A worker dying between the two steps loses nothing: the next
//! one enqueues the same tick again and gets the same job.
//!
//! The same field gives catch-up: a worker that starts after an outage finds the newest
//! claimed tick older than the latest due one and enqueues that latest tick only, so an
//! outage costs at most one late run per schedule rather than a burst of them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use fred::prelude::Value;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Runtime, WorkerBuilder};
use crate::job::{IntoJob, PreparedJob};
use crate::redis::scripts;
use crate::{Client, Error, JobId, Result};

/// Longest sleep before Redis' clock is read again, so a long wait cannot drift.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long the enqueue of a claimed tick is retried before the tick is given up.
const ENQUEUE_PATIENCE: Duration = Duration::from_secs(60);
/// First and longest pause between retries after a failed Redis call.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Longest schedule name.
const MAX_NAME_LEN: usize = 100;

/// Enqueues the job of one tick, given the client and the tick's scheduled time.
type EnqueueTick =
    Arc<dyn Fn(Client, SystemTime, String) -> BoxFuture<'static, Result<JobId>> + Send + Sync>;
/// Prepares the job of a tick without sending it: at build time, to check it and learn its
/// queue and job type.
type PrepareTick = Box<dyn Fn(SystemTime) -> Result<PreparedJob> + Send + Sync>;
/// Turns a parsed expression into ticks in the schedule's time zone.
type InZone = Box<dyn FnOnce(cron::Schedule) -> Arc<dyn Ticks> + Send + Sync>;

/// A periodic job: a cron schedule and the job each of its ticks enqueues.
///
/// Register it with [`WorkerBuilder::periodic`], or with the shorthands
/// [`cron`](WorkerBuilder::cron), [`cron_named`](WorkerBuilder::cron_named) and
/// [`cron_in_tz`](WorkerBuilder::cron_in_tz). Every worker that registers the same
/// schedule (same name, same queue) runs it, and each tick is still enqueued exactly once:
/// the workers claim ticks in Redis, on Redis' clock.
///
/// Expressions have six fields, seconds first, and an optional seventh for the year, as
/// the [`cron`](https://docs.rs/cron) crate parses them:
/// `sec min hour day-of-month month day-of-week [year]`, e.g. `"0 */5 * * * *"` for every
/// five minutes or `"0 30 9 * * Mon-Fri"` for 09:30 on weekdays. Times are UTC unless
/// [`time_zone`](Self::time_zone) says otherwise.
///
/// A schedule is known by its name, which keys its state in Redis (field `<name>` of hash
/// `<prefix>:{<queue>}:cron`: the newest tick claimed, in ms). The default name is
/// `<job type>-<10 hex digits>`, the digits from a SHA-1 of the queue, the job type, the
/// expression (whitespace collapsed) and the time zone: changing any of them makes a new
/// schedule, which starts without catch-up. Give a name with [`name`](Self::name) to keep a
/// schedule's history across such changes.
///
/// After an outage (no worker ran the schedule for a while), the first worker to start
/// runs the latest missed tick once, as soon as it starts, and skips the older ones; turn
/// that off with [`catch_up(false)`](Self::catch_up). A new schedule never catches up.
///
/// ```no_run
/// use std::time::{SystemTime, UNIX_EPOCH};
/// use serde::{Deserialize, Serialize};
/// use stevedore::{Client, JobContext, JobError, Periodic, RawJob, Worker, job_handler};
///
/// #[derive(Serialize, Deserialize)]
/// struct Report {
///     hour_ending_ms: u64,
/// }
///
/// #[job_handler(name = "report.hourly", queue = "reports")]
/// async fn hourly_report(r: Report, _ctx: JobContext) -> Result<(), JobError> {
///     println!("report for the hour ending at {}", r.hour_ending_ms);
///     Ok(())
/// }
///
/// # async fn run(client: Client) -> stevedore::Result<()> {
/// let worker = Worker::builder(client)
///     .handler(hourly_report::handler())
///     // Every hour on the hour (UTC); each job knows which hour it covers.
///     .periodic(Periodic::from_fn("0 0 * * * *", |tick: SystemTime| {
///         let ms = tick.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
///         hourly_report::job(Report { hour_ending_ms: ms })
///     }))
///     // Every five minutes, the same untyped job for another service's handler.
///     .cron("0 */5 * * * *", RawJob::new("email.digest", "emails", &serde_json::json!({}))?)
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[must_use = "register it with WorkerBuilder::periodic"]
pub struct Periodic {
    expr: String,
    name: Option<String>,
    zone_label: String,
    in_zone: InZone,
    catch_up: bool,
    prepare: PrepareTick,
    enqueue: EnqueueTick,
}

impl fmt::Debug for Periodic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Periodic")
            .field("expr", &self.expr)
            .field("name", &self.name)
            .field("time_zone", &self.zone_label)
            .field("catch_up", &self.catch_up)
            .finish_non_exhaustive()
    }
}

impl Periodic {
    /// Enqueues a clone of `job` (a [`RawJob`](crate::RawJob), or any other `IntoJob +
    /// Clone`) at every tick of the cron expression `expr`; for a typed job built anew
    /// each tick, use [`from_fn`](Self::from_fn). The expression is checked by
    /// [`WorkerBuilder::build`].
    pub fn new<J>(expr: impl Into<String>, job: J) -> Self
    where
        J: IntoJob + Clone + Send + Sync + 'static,
    {
        Self::from_fn(expr, move |_tick| job.clone())
    }

    /// Enqueues the job `make` returns for each tick, given the tick's scheduled time (on
    /// Redis' clock; a catch-up run gets the missed tick's time). For jobs that need to know
    /// which period they cover, e.g. a report for the hour ending at the tick.
    ///
    /// `make` is also called once by [`WorkerBuilder::periodic`], with the current time,
    /// to check the job and learn its queue and job type, which must then stay the same
    /// for every tick (the tick is claimed in that queue).
    pub fn from_fn<J, F>(expr: impl Into<String>, make: F) -> Self
    where
        J: IntoJob + Send + 'static,
        F: Fn(SystemTime) -> J + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        let prepare: PrepareTick = {
            let make = make.clone();
            Box::new(move |tick| make(tick).prepare())
        };
        let enqueue: EnqueueTick = Arc::new(move |client: Client, tick, key: String| {
            let job = TickJob {
                job: make(tick),
                key,
                at: tick,
            };
            Box::pin(async move { client.enqueue(job).await })
        });
        let (zone_label, in_zone) = in_zone(Utc);
        Periodic {
            expr: expr.into(),
            name: None,
            zone_label,
            in_zone,
            catch_up: true,
            prepare,
            enqueue,
        }
    }

    /// The schedule's name (default: derived from queue, job type, expression and time
    /// zone, see above). 1 to 100 characters from `A-Z a-z 0-9 _ . -`; unique per queue
    /// within a worker. Workers that share a name share the schedule's ticks.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Reads the expression in this time zone instead of UTC: any chrono time zone that
    /// prints its name, such as a `chrono_tz::Tz` (`chrono_tz::Europe::Paris`) or a
    /// `chrono::FixedOffset`. Around daylight-saving changes, ticks are what the `cron`
    /// crate makes of local times that are skipped or repeated.
    pub fn time_zone<Z>(mut self, zone: Z) -> Self
    where
        Z: TimeZone + fmt::Display + Send + Sync + 'static,
    {
        (self.zone_label, self.in_zone) = in_zone(zone);
        self
    }

    /// Whether a worker that starts after an outage runs the latest missed tick once
    /// (default true). With `false`, missed ticks are skipped.
    pub fn catch_up(mut self, catch_up: bool) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Parses and checks everything, as [`WorkerBuilder::build`] reports it.
    fn into_schedule(self, payload_limit: usize) -> std::result::Result<CronSchedule, String> {
        let expr = self.expr.split_whitespace().collect::<Vec<_>>().join(" ");
        let parsed = cron::Schedule::from_str(&expr).map_err(|e| {
            let reason = parser_reason(&e.to_string());
            let mut msg = format!("invalid cron expression {:?}: {reason}", self.expr);
            if expr.split(' ').count() == 5 {
                msg.push_str(
                    " (expressions start with a seconds field: \
                     sec min hour day-of-month month day-of-week [year])",
                );
            }
            msg
        })?;
        let sample = (self.prepare)(SystemTime::now())
            .map_err(|e| format!("periodic job for cron expression {expr:?}: {e}"))?;
        if sample.envelope.payload.len() > payload_limit {
            return Err(format!(
                "periodic job for cron expression {expr:?}: payload of {} bytes exceeds the limit of {payload_limit} bytes",
                sample.envelope.payload.len()
            ));
        }
        let queue = sample.queue.clone();
        let job_type = sample.envelope.job_type.clone();
        let name = match self.name {
            Some(name) => {
                check_name(&name)?;
                name
            }
            None => default_name(&queue, &job_type, &expr, &self.zone_label),
        };
        let ticks = (self.in_zone)(parsed);
        if ticks.next_after(now_ms()).is_none() {
            return Err(format!(
                "cron expression {expr:?} has no tick after now: it would never run"
            ));
        }
        Ok(CronSchedule {
            name,
            queue,
            job_type,
            expr,
            zone: self.zone_label,
            ticks,
            catch_up: self.catch_up,
            enqueue: self.enqueue,
        })
    }
}

/// A time zone's name and what turns an expression into ticks there.
fn in_zone<Z>(zone: Z) -> (String, InZone)
where
    Z: TimeZone + fmt::Display + Send + Sync + 'static,
{
    let label = zone.to_string();
    (
        label,
        Box::new(move |schedule| Arc::new(CronTicks { schedule, zone })),
    )
}

impl WorkerBuilder {
    /// Enqueues a clone of `job` at every tick of the cron expression `expr`, read in UTC,
    /// e.g. `.cron("0 */5 * * * *", RawJob::new("email.digest", "emails", &payload)?)` for
    /// every five minutes. `job` is anything `IntoJob + Clone`; a typed job is built per
    /// tick with [`Periodic::from_fn`] and [`periodic`](Self::periodic).
    ///
    /// Expressions have six fields, seconds first (seven with a year); a bad one makes
    /// [`build`](Self::build) fail with [`Error::InvalidConfig`]. Every worker with the same
    /// schedule shares its ticks: each is enqueued once. See [`Periodic`] for names,
    /// catch-up after an outage and the other options.
    pub fn cron<J>(self, expr: &str, job: J) -> Self
    where
        J: IntoJob + Clone + Send + Sync + 'static,
    {
        self.periodic(Periodic::new(expr, job))
    }

    /// Like [`cron`](Self::cron), with the schedule's name given rather than derived, so
    /// its history (the newest tick run, for catch-up) survives a change of expression.
    pub fn cron_named<J>(self, name: &str, expr: &str, job: J) -> Self
    where
        J: IntoJob + Clone + Send + Sync + 'static,
    {
        self.periodic(Periodic::new(expr, job).name(name))
    }

    /// Like [`cron`](Self::cron), with the expression read in time zone `zone`
    /// (`chrono_tz::Europe::Paris`, a `chrono::FixedOffset`, ...).
    pub fn cron_in_tz<J, Z>(self, expr: &str, zone: Z, job: J) -> Self
    where
        J: IntoJob + Clone + Send + Sync + 'static,
        Z: TimeZone + fmt::Display + Send + Sync + 'static,
    {
        self.periodic(Periodic::new(expr, job).time_zone(zone))
    }

    /// Registers a periodic job with all its options. Errors (a bad expression or name, a
    /// job that does not prepare, two schedules with one name on one queue) are reported
    /// by [`build`](Self::build) as [`Error::InvalidConfig`].
    pub fn periodic(mut self, periodic: Periodic) -> Self {
        match periodic.into_schedule(self.client.payload_limit()) {
            Ok(s) => {
                if self
                    .periodic
                    .iter()
                    .any(|o| o.queue == s.queue && o.name == s.name)
                {
                    self.errors.push(format!(
                        "two periodic jobs named {:?} on queue {:?}: name them apart with cron_named",
                        s.name, s.queue
                    ));
                } else {
                    self.periodic.push(s);
                }
            }
            Err(e) => self.errors.push(e),
        }
        self
    }
}

/// The cron parser's message on one line: it prints the expression, a caret under the
/// offending column, then the reason.
fn parser_reason(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    match lines.as_slice() {
        [expr, caret, rest @ ..] if caret.trim() == "^" => {
            let column = caret.find('^').unwrap_or(0) + 1;
            if column > expr.len() {
                return "the expression ends too early".to_string();
            }
            let reason = rest
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if reason.is_empty() {
                format!("unexpected input at column {column}")
            } else {
                format!("{reason} (at column {column})")
            }
        }
        _ => lines.join(" "),
    }
}

/// `^[A-Za-z0-9_.-]{1,100}$`: no name can break out of its hash field.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid periodic job name {name:?}: use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 _ . -"
        ))
    }
}

/// `<job type>-<first 10 hex digits of SHA-1(queue, job type, expression, zone)>`.
fn default_name(queue: &str, job_type: &str, expr: &str, zone: &str) -> String {
    let digest = fred::util::sha1_hash(&format!("{queue}\n{job_type}\n{expr}\n{zone}"));
    format!("{job_type}-{}", &digest[..10])
}

/// A schedule as a worker runs it.
pub(crate) struct CronSchedule {
    name: String,
    queue: String,
    job_type: String,
    /// The expression, whitespace collapsed.
    expr: String,
    zone: String,
    ticks: Arc<dyn Ticks>,
    catch_up: bool,
    enqueue: EnqueueTick,
}

/// The ticks of a schedule, in ms since the epoch. Ticks fall on whole seconds.
trait Ticks: Send + Sync {
    /// The first tick strictly after `ms`, if there is one.
    fn next_after(&self, ms: i64) -> Option<i64>;
    /// The newest tick at or before `ms`, if there is one.
    fn latest_until(&self, ms: i64) -> Option<i64>;
}

struct CronTicks<Z> {
    schedule: cron::Schedule,
    zone: Z,
}

impl<Z: TimeZone + Send + Sync> Ticks for CronTicks<Z> {
    fn next_after(&self, ms: i64) -> Option<i64> {
        let at = DateTime::<Utc>::from_timestamp_millis(ms)?.with_timezone(&self.zone);
        self.schedule
            .after(&at)
            .next()
            .map(|t| t.timestamp_millis())
    }

    fn latest_until(&self, ms: i64) -> Option<i64> {
        // Ticks are whole seconds: the newest one strictly before the next whole second.
        let bound = (ms.div_euclid(1000) + 1) * 1000;
        let at = DateTime::<Utc>::from_timestamp_millis(bound)?.with_timezone(&self.zone);
        self.schedule
            .after(&at)
            .next_back()
            .map(|t| t.timestamp_millis())
    }
}

/// Where a schedule stands when its worker starts: ticks up to the returned time are
/// settled. With catch-up and a known newest claimed tick, that tick (so a missed one
/// after it is due at once); otherwise now (only future ticks run).
fn settled_at_start(catch_up: bool, now: i64, last_claimed: Option<i64>) -> i64 {
    match last_claimed {
        Some(last) if catch_up => last.min(now),
        _ => now,
    }
}

/// The tick to claim next, given that ticks up to `settled` are settled: the first tick
/// after `settled` if it is still to come, else the newest tick due by `now` (several
/// missed ticks collapse into that one). `late` is true when the tick is already due.
fn next_tick(ticks: &dyn Ticks, settled: i64, now: i64) -> Option<NextTick> {
    let next = ticks.next_after(settled)?;
    if next > now {
        return Some(NextTick {
            at: next,
            late: false,
        });
    }
    let at = ticks.latest_until(now).unwrap_or(next).max(next);
    Some(NextTick { at, late: true })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NextTick {
    at: i64,
    late: bool,
}

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

/// What `lua/cron_claim.lua` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Claimed,
    Taken,
    NotDue,
    Read,
}

struct Reply {
    claim: Claim,
    now: i64,
    /// The newest claimed tick, if any.
    last: Option<i64>,
}

async fn call_claim(
    rt: &Runtime,
    s: &CronSchedule,
    tick: Option<i64>,
) -> std::result::Result<Reply, fred::error::Error> {
    let (status, now, last): (i64, i64, i64) = scripts::run(
        rt.client.redis(),
        &rt.client.scripts().cron_claim,
        vec![rt.client.keys().cron(&s.queue)],
        vec![
            Value::from(s.name.as_str()),
            Value::from(tick.unwrap_or(-1)),
            Value::from(rt.consumer.as_str()),
        ],
    )
    .await?;
    let claim = match status {
        1 => Claim::Claimed,
        0 => Claim::Taken,
        -1 => Claim::NotDue,
        _ => Claim::Read,
    };
    Ok(Reply {
        claim,
        now,
        last: (last >= 0).then_some(last),
    })
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
                    Clock::new(r.now),
                    settled_at_start(s.catch_up, r.now, r.last),
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
                    clock = Clock::new(r.now);
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
        clock = Clock::new(reply.now);
        match reply.claim {
            Claim::Claimed => settled = next.at,
            Claim::Taken => {
                // Another worker has it (or a newer one): move on past both.
                settled = next.at.max(reply.last.unwrap_or(next.at).min(reply.now));
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
struct TickJob<J> {
    job: J,
    key: String,
    at: SystemTime,
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
        let retryable = matches!(e, Error::Connection(_) | Error::Redis(_));
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(expr: &str) -> Arc<dyn Ticks> {
        let schedule = cron::Schedule::from_str(expr).expect("valid expression");
        Arc::new(CronTicks {
            schedule,
            zone: Utc,
        })
    }

    /// 2024-01-01T00:00:00Z, a Monday.
    const T0: i64 = 1_704_067_200_000;

    #[test]
    fn next_tick_is_strictly_after() {
        let t = ticks("*/5 * * * * *");
        assert_eq!(t.next_after(T0), Some(T0 + 5_000));
        assert_eq!(t.next_after(T0 - 1), Some(T0));
        assert_eq!(t.next_after(T0 + 4_999), Some(T0 + 5_000));
        assert_eq!(t.next_after(T0 + 5_000), Some(T0 + 10_000));
    }

    #[test]
    fn latest_tick_is_at_or_before() {
        let t = ticks("*/5 * * * * *");
        assert_eq!(t.latest_until(T0), Some(T0));
        assert_eq!(t.latest_until(T0 + 1), Some(T0));
        assert_eq!(t.latest_until(T0 + 4_999), Some(T0));
        assert_eq!(t.latest_until(T0 + 5_000), Some(T0 + 5_000));
        assert_eq!(t.latest_until(T0 - 1), Some(T0 - 5_000));
        let daily = ticks("0 0 0 * * *");
        assert_eq!(daily.latest_until(T0 + 36_000_000), Some(T0));
    }

    #[test]
    fn time_zones_shift_ticks() {
        let paris_winter = chrono::FixedOffset::east_opt(3600).expect("offset");
        let t: Arc<dyn Ticks> = Arc::new(CronTicks {
            schedule: cron::Schedule::from_str("0 0 9 * * *").expect("valid"),
            zone: paris_winter,
        });
        // 09:00 at UTC+1 is 08:00 UTC.
        assert_eq!(t.next_after(T0), Some(T0 + 8 * 3_600_000));
        assert_eq!(
            ticks("0 0 9 * * *").next_after(T0),
            Some(T0 + 9 * 3_600_000)
        );
    }

    #[test]
    fn on_time_ticks_wait_and_are_not_late() {
        let t = ticks("*/5 * * * * *");
        let settled = settled_at_start(true, T0 + 2_000, Some(T0));
        assert_eq!(
            next_tick(&*t, settled, T0 + 2_000),
            Some(NextTick {
                at: T0 + 5_000,
                late: false
            })
        );
    }

    #[test]
    fn an_outage_catches_up_with_the_latest_missed_tick_only() {
        let t = ticks("* * * * * *");
        // Last claimed 10 s ago: nine ticks missed, one catch-up for the latest.
        let now = T0 + 10_300;
        let settled = settled_at_start(true, now, Some(T0));
        assert_eq!(
            next_tick(&*t, settled, now),
            Some(NextTick {
                at: T0 + 10_000,
                late: true
            })
        );
        // Once that one is settled, the next regular tick waits.
        assert_eq!(
            next_tick(&*t, T0 + 10_000, now),
            Some(NextTick {
                at: T0 + 11_000,
                late: false
            })
        );
    }

    #[test]
    fn no_catch_up_when_nothing_was_missed_new_or_disabled() {
        let t = ticks("*/5 * * * * *");
        let now = T0 + 7_000;
        // The latest due tick (T0 + 5 s) was claimed: wait for the next.
        let settled = settled_at_start(true, now, Some(T0 + 5_000));
        assert!(!next_tick(&*t, settled, now).expect("tick").late);
        // A new schedule (nothing claimed ever) starts with its next tick.
        let settled = settled_at_start(true, now, None);
        assert!(!next_tick(&*t, settled, now).expect("tick").late);
        // Catch-up off: the missed ticks are skipped.
        let settled = settled_at_start(false, now, Some(T0 - 60_000));
        assert_eq!(
            next_tick(&*t, settled, now),
            Some(NextTick {
                at: T0 + 10_000,
                late: false
            })
        );
        // A newest tick in the future (Redis' clock went back) does not stall planning.
        assert_eq!(settled_at_start(true, now, Some(now + 999_000)), now);
    }

    #[test]
    fn a_stalled_worker_collapses_missed_ticks() {
        let t = ticks("*/5 * * * * *");
        // Settled T0, then the process stalled for a minute.
        assert_eq!(
            next_tick(&*t, T0, T0 + 60_001),
            Some(NextTick {
                at: T0 + 60_000,
                late: true
            })
        );
    }

    #[test]
    fn default_names_are_stable_and_tell_apart() {
        let a = default_name("emails", "email.digest", "0 */5 * * * *", "UTC");
        assert_eq!(
            a,
            default_name("emails", "email.digest", "0 */5 * * * *", "UTC")
        );
        assert!(a.starts_with("email.digest-"), "{a}");
        assert_eq!(a.len(), "email.digest-".len() + 10);
        assert!(check_name(&a).is_ok());
        assert_ne!(
            a,
            default_name("other", "email.digest", "0 */5 * * * *", "UTC")
        );
        assert_ne!(
            a,
            default_name("emails", "email.other", "0 */5 * * * *", "UTC")
        );
        assert_ne!(
            a,
            default_name("emails", "email.digest", "0 */10 * * * *", "UTC")
        );
        assert_ne!(
            a,
            default_name("emails", "email.digest", "0 */5 * * * *", "+01:00")
        );
        // Pinned: a default name must not change between releases, or schedules would
        // lose their history on upgrade.
        assert_eq!(default_name("q", "t", "* * * * * *", "UTC"), "t-e0d3cdaec2");
    }

    #[test]
    fn names_are_checked() {
        for ok in ["nightly", "report.hourly-v2", "a_b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(101);
        for bad in ["", "a b", "a:b", "{q}", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_expressions_are_refused_with_the_parsers_reason() {
        let job = crate::RawJob::new("t", "q", &1).expect("job");
        for (expr, hint) in [
            ("not a cron", "invalid cron expression"),
            ("*/5 * * * *", "seconds field"),
            ("61 * * * * *", "invalid cron expression"),
            ("0 0 0 30 2 * 2020", "never run"),
        ] {
            let err = Periodic::new(expr, job.clone())
                .into_schedule(1024)
                .err()
                .unwrap_or_default();
            assert!(err.contains(hint), "{expr:?}: {err}");
            assert!(!err.contains('\n'), "{expr:?}: {err}");
            assert!(err.contains(expr), "{expr:?}: {err}");
        }
        let s = Periodic::new("  0  */5 * * * * ", job)
            .into_schedule(1024)
            .expect("valid");
        assert_eq!(s.expr, "0 */5 * * * *");
        assert_eq!(s.queue, "q");
        assert_eq!(s.job_type, "t");
    }
}
