//! Job lifecycle events, and observers that react to them.
//!
//! Every stage of a job's life is reported to the [`Observer`]s of the client and worker
//! that handle it: enqueued, started, succeeded, failed (one attempt), retried, dead,
//! abandoned at shutdown, and reclaimed by the janitor. stevedore's own metrics
//! ([`Metrics`](crate::Metrics)) and its log lines are observers like any other; add your
//! own with [`ClientBuilder::observer`](crate::ClientBuilder::observer) (every event of that
//! client and of the workers built on it) or
//! [`WorkerBuilder::observer`](crate::WorkerBuilder::observer) (one worker's events).
//!
//! Callbacks run inline on the worker's tasks, inside the job's tracing span, so they must
//! be quick and must not block: count, record, or hand the event to a channel or a spawned
//! task. A panicking observer is caught and logged; it does not fail the job.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::time::Duration;
//! use stevedore::observe::{DeadJobEvent, JobEvent, Observer};
//!
//! #[derive(Default)]
//! struct SlowJobs(AtomicU64);
//!
//! impl Observer for SlowJobs {
//!     fn succeeded(&self, job: &JobEvent<'_>, took: Duration) {
//!         if took > Duration::from_secs(10) {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//!     fn dead(&self, job: &DeadJobEvent<'_>) {
//!         eprintln!("{:?} of type {:?} is dead: {}", job.job_id, job.job_type, job.error);
//!     }
//! }
//! ```

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use crate::Priority;
use crate::dlq::DeadReason;

/// Reactions to job events. Every method has an empty default: implement the ones you need.
///
/// Methods are called synchronously on the worker's (or producer's) task: keep them short
/// and non-blocking.
pub trait Observer: Send + Sync + 'static {
    /// A job was accepted by Redis (one call per job, also for bulk enqueues). Reported
    /// once the producer has Redis' reply, which carries the job's id: a worker elsewhere
    /// may already have reported the job `started` by then.
    fn enqueued(&self, job: &EnqueuedEvent<'_>) {
        let _ = job;
    }

    /// A bounded queue had no room for a job, which was not written (README, "Bounded
    /// queues"). A producer waiting for room reports each refused try.
    fn refused(&self, job: &RefusedEvent<'_>) {
        let _ = job;
    }

    /// An attempt is about to run the job's handler.
    fn started(&self, job: &JobEvent<'_>) {
        let _ = job;
    }

    /// An attempt succeeded after `took`.
    fn succeeded(&self, job: &JobEvent<'_>, took: Duration) {
        let _ = (job, took);
    }

    /// An attempt failed: the handler returned an error, panicked or timed out. A
    /// [`retried`](Self::retried) or [`dead`](Self::dead) event follows.
    fn failed(&self, job: &JobEvent<'_>, failure: &Failure<'_>) {
        let _ = (job, failure);
    }

    /// A failed attempt (or a job of a type this worker does not know) was scheduled to run
    /// again after `delay`.
    fn retried(&self, job: &JobEvent<'_>, delay: Duration, error: &str) {
        let _ = (job, delay, error);
    }

    /// A job was moved to its queue's dead-letter stream.
    fn dead(&self, job: &DeadJobEvent<'_>) {
        let _ = job;
    }

    /// The drain deadline of a stopping worker passed while the job ran: it was dropped
    /// unacknowledged and runs again later.
    fn abandoned(&self, job: &JobEvent<'_>) {
        let _ = job;
    }

    /// A rate limit held the job back: it starts in `wait` (its attempt count unchanged).
    /// `limit` names the limit (`rate limit of job type "email.send" (50/1s)`). Not
    /// reported for a wait short enough to spend holding the job's slot.
    fn limited(&self, job: &JobEvent<'_>, wait: Duration, limit: &str) {
        let _ = (job, wait, limit);
    }

    /// The janitor took back `entries` entries of `queue` whose worker is gone; they run on
    /// this worker next (each then reports [`started`](Self::started)).
    fn reclaimed(&self, queue: &str, entries: u64) {
        let _ = (queue, entries);
    }

    /// An attempt stopped after `took` because an operator cancelled (or deleted) its job:
    /// the job ends `cancelled`, neither retried nor dead-lettered.
    fn cancelled(&self, job: &JobEvent<'_>, took: Duration) {
        let _ = (job, took);
    }

    /// An operator acted on jobs (README, "Cancel, delete, purge"): reported by the client
    /// that acted (a cancelled waiting job, a delete, a purge, a retry now), and by the
    /// worker that found a job cancelled before its attempt started or whose janitor
    /// found one of a dead worker. A running attempt that stops reports
    /// [`cancelled`](Self::cancelled) instead.
    fn controlled(&self, event: &ControlEvent<'_>) {
        let _ = event;
    }

    /// A job that waited for others, or a batch, was resolved (README, "Chains,
    /// dependencies, batches"): a job `released` to run (or `scheduled`, its delay still
    /// to run), `cancelled` or `dead` because a job it waited for did not succeed; a batch
    /// `done`. Reported by the worker (or client) whose call resolved it.
    fn resolved(&self, event: &ResolvedEvent<'_>) {
        let _ = event;
    }

    /// A read of `queue`'s streams failed (Redis unreachable, paused past the read's
    /// deadline, or refusing); the fetch loop retries with a backoff. Every failure is
    /// reported; [`stalled`](Self::stalled) says when they add up to an outage.
    fn read_failed(&self, queue: &str, error: &str) {
        let _ = (queue, error);
    }

    /// This worker has made no progress on `queue` for `for_how_long` because Redis does
    /// not answer or refuses its reads (`error`, the latest). Reported once a stall passes
    /// [`STALL_REPORT_AFTER`], then again every minute it lasts.
    fn stalled(&self, queue: &str, for_how_long: Duration, error: &str) {
        let _ = (queue, for_how_long, error);
    }

    /// Reads of `queue` work again after a stall that was reported with
    /// [`stalled`](Self::stalled); it lasted `lasted`.
    fn recovered(&self, queue: &str, lasted: Duration) {
        let _ = (queue, lasted);
    }
}

/// How long a worker's reads of a queue must fail before [`Observer::stalled`] is called
/// (and the log warns).
pub const STALL_REPORT_AFTER: Duration = Duration::from_secs(10);

/// A job Redis accepted.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct EnqueuedEvent<'a> {
    /// The job's id.
    pub job_id: &'a str,
    /// The job's type.
    pub job_type: &'a str,
    /// Its queue.
    pub queue: &'a str,
    /// Its priority.
    pub priority: Priority,
    /// Whether it waits in the schedule (delay or run-at) rather than being ready now.
    pub scheduled: bool,
}

/// A job a bounded queue refused for want of room.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RefusedEvent<'a> {
    /// The job's type.
    pub job_type: &'a str,
    /// The queue (the partition, of a partitioned queue) that refused it.
    pub queue: &'a str,
    /// Its priority.
    pub priority: Priority,
    /// The queue's capacity (a partition's share).
    pub capacity: u64,
}

/// A waiting job or a batch resolved ([`Observer::resolved`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ResolvedEvent<'a> {
    /// Its queue.
    pub queue: &'a str,
    /// The job's (or batch's) id.
    pub id: &'a str,
    /// `released`, `scheduled`, `cancelled`, `dead`, or `done` for a batch.
    pub outcome: &'a str,
}

/// What an operator did to jobs ([`Observer::controlled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlAction {
    /// A job was cancelled: it will not run again (a running one has stopped).
    Cancelled,
    /// The worker running a job was asked to stop it; [`Cancelled`](Self::Cancelled)
    /// follows from that worker.
    CancelRequested,
    /// A job was deleted, in whatever state it was.
    Deleted,
    /// Waiting jobs were purged from a queue (`jobs` says how many).
    Purged,
    /// A scheduled or retrying job was made due now.
    RetriedNow,
}

impl ControlAction {
    /// The name metrics and logs use: `cancelled`, `cancel_requested`, `deleted`,
    /// `purged`, `retried_now`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ControlAction::Cancelled => "cancelled",
            ControlAction::CancelRequested => "cancel_requested",
            ControlAction::Deleted => "deleted",
            ControlAction::Purged => "purged",
            ControlAction::RetriedNow => "retried_now",
        }
    }
}

/// An operator's action on jobs.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ControlEvent<'a> {
    /// What was done.
    pub action: ControlAction,
    /// The queue (the partition, of a partitioned queue).
    pub queue: &'a str,
    /// The job, for an action on one job.
    pub job_id: Option<&'a str>,
    /// Its type, when known.
    pub job_type: Option<&'a str>,
    /// How many jobs: 1 for an action on one job, the count of a purge.
    pub jobs: u64,
}

/// One attempt of a job, as its events describe it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JobEvent<'a> {
    /// The job's id.
    pub job_id: &'a str,
    /// The job's type, as written in the entry.
    pub job_type: &'a str,
    /// Whether this worker has a handler for the type.
    pub known_type: bool,
    /// Its queue.
    pub queue: &'a str,
    /// The priority stream it came from.
    pub priority: Priority,
    /// This attempt, from 1.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// How long the job waited between becoming ready (enqueued, or its delay or retry
    /// backoff over) and this attempt's start.
    pub waited: Duration,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Failure<'a> {
    /// What went wrong, as stored with the job.
    pub error: &'a str,
    /// How it failed.
    pub kind: FailureKind,
    /// How long the attempt ran.
    pub took: Duration,
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned an error.
    Error,
    /// The handler panicked.
    Panic,
    /// The handler ran past its timeout.
    Timeout,
}

/// A job moved to the dead-letter stream. Entries too damaged to read, and entries the
/// janitor dead-letters as poison, may lack a job id, type or attempt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadJobEvent<'a> {
    /// The job's id, when the entry had a readable one.
    pub job_id: Option<&'a str>,
    /// The job's type, when the entry had a readable one.
    pub job_type: Option<&'a str>,
    /// Whether this worker has a handler for the type.
    pub known_type: bool,
    /// Its queue.
    pub queue: &'a str,
    /// The priority stream it came from.
    pub priority: Priority,
    /// Why it is dead.
    pub reason: DeadReason,
    /// The last error.
    pub error: &'a str,
    /// The attempt that failed last, when known.
    pub attempt: Option<u32>,
}

/// The observers one client or worker reports to, in order.
#[derive(Clone, Default)]
pub(crate) struct Observers(Arc<[Arc<dyn Observer>]>);

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

impl Observers {
    pub(crate) fn new(list: Vec<Arc<dyn Observer>>) -> Self {
        Observers(list.into())
    }

    /// These observers followed by `more`.
    pub(crate) fn with(&self, more: impl IntoIterator<Item = Arc<dyn Observer>>) -> Self {
        let mut all: Vec<Arc<dyn Observer>> = self.0.to_vec();
        all.extend(more);
        Observers(all.into())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Arc<dyn Observer>> + '_ {
        self.0.iter().cloned()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Calls `event` on every observer; a panicking observer is logged and skipped.
    pub(crate) fn each(&self, event: impl Fn(&dyn Observer)) {
        for o in self.0.iter() {
            if std::panic::catch_unwind(AssertUnwindSafe(|| event(o.as_ref()))).is_err() {
                tracing::error!("a job observer panicked; the job goes on");
            }
        }
    }
}

/// The worker's log lines, as an observer: retries, dead letters, reclaims and abandoned
/// jobs, with the error. Payloads are never logged.
#[derive(Debug, Default)]
pub(crate) struct LogEvents;

impl Observer for LogEvents {
    fn succeeded(&self, job: &JobEvent<'_>, took: Duration) {
        tracing::debug!(
            job_id = job.job_id,
            job_type = job.job_type,
            ?took,
            "job succeeded"
        );
    }

    fn failed(&self, job: &JobEvent<'_>, failure: &Failure<'_>) {
        tracing::debug!(target: "stevedore::worker", job_id = job.job_id, job_type = job.job_type, attempt = job.attempt, error = failure.error, kind = ?failure.kind, "attempt failed");
    }

    fn retried(&self, job: &JobEvent<'_>, delay: Duration, error: &str) {
        if job.known_type {
            tracing::info!(
                queue = job.queue,
                job_id = job.job_id,
                job_type = job.job_type,
                attempt = job.attempt,
                error,
                ?delay,
                "attempt failed; retrying"
            );
        } else {
            tracing::info!(
                queue = job.queue,
                job_id = job.job_id,
                job_type = job.job_type,
                attempt = job.attempt,
                ?delay,
                "unknown job type; retrying later"
            );
        }
    }

    fn dead(&self, job: &DeadJobEvent<'_>) {
        tracing::warn!(
            target: "stevedore::worker",
            queue = job.queue,
            job_id = job.job_id.unwrap_or("-"),
            job_type = job.job_type.unwrap_or("-"),
            attempt = job.attempt,
            reason = job.reason.as_str(),
            error = job.error,
            "job dead-lettered"
        );
    }

    fn limited(&self, job: &JobEvent<'_>, wait: Duration, limit: &str) {
        tracing::debug!(
            target: "stevedore::worker",
            job_id = job.job_id,
            job_type = job.job_type,
            wait = ?wait,
            limit,
            "held back by a rate limit"
        );
    }

    fn abandoned(&self, job: &JobEvent<'_>) {
        tracing::warn!(
            job_id = job.job_id,
            job_type = job.job_type,
            "drain deadline passed; job left pending to run again"
        );
    }

    fn reclaimed(&self, queue: &str, entries: u64) {
        tracing::info!(
            queue,
            entries,
            "reclaimed jobs whose worker is gone; running them here"
        );
    }

    fn cancelled(&self, job: &JobEvent<'_>, took: Duration) {
        tracing::info!(
            queue = job.queue,
            job_id = job.job_id,
            job_type = job.job_type,
            ?took,
            "cancelled job stopped"
        );
    }

    fn controlled(&self, event: &ControlEvent<'_>) {
        tracing::info!(
            queue = event.queue,
            job_id = event.job_id.unwrap_or("-"),
            job_type = event.job_type.unwrap_or("-"),
            jobs = event.jobs,
            action = event.action.as_str(),
            "operator action"
        );
    }

    fn stalled(&self, queue: &str, for_how_long: Duration, error: &str) {
        tracing::warn!(
            queue,
            stalled_for = ?Duration::from_secs(for_how_long.as_secs()),
            error,
            "no progress on this queue: redis does not answer or refuses reads"
        );
    }

    fn recovered(&self, queue: &str, lasted: Duration) {
        tracing::info!(
            queue,
            stalled_for = ?Duration::from_millis(lasted.as_millis() as u64),
            "redis answers again; consuming this queue"
        );
    }
}
