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
use std::time::SystemTime;

use chrono::{TimeZone, Utc};
use futures::future::BoxFuture;

mod run;
mod ticks;

pub(crate) use run::run;
use run::{TickJob, now_ms};
use ticks::{CronTicks, Ticks};

use super::WorkerBuilder;
use crate::job::{IntoJob, PreparedJob};
use crate::{Client, JobId, Result};

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
    /// [`build`](Self::build) fail with [`Error::InvalidConfig`](crate::Error::InvalidConfig). Every worker with the same
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
    /// by [`build`](Self::build) as [`Error::InvalidConfig`](crate::Error::InvalidConfig).
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
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(format!("{queue}\n{job_type}\n{expr}\n{zone}").as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{job_type}-{hex}")
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
