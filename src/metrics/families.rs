//! The metric families: every series stevedore reports, by name, and their registration.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::BUCKETS;
use super::labels::{
    LimitLabel, LimitQueueLabel, QueueAction, QueueLabel, QueueOutcome, QueuePriority, QueueType,
    QueueTypePriority, QueueTypeReason,
};

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric family stevedore reports. The sampler sets the queue gauges (`ready` to
/// `workers`) from Redis; job events update the rest.
pub(crate) struct Families {
    pub(super) enqueued: Family<QueueTypePriority, Counter>,
    pub(super) started: Family<QueueTypePriority, Counter>,
    pub(super) succeeded: Family<QueueType, Counter>,
    pub(super) failed: Family<QueueType, Counter>,
    pub(super) retried: Family<QueueType, Counter>,
    pub(super) limited: Family<QueueType, Counter>,
    pub(super) refused: Family<QueueType, Counter>,
    pub(super) dead: Family<QueueTypeReason, Counter>,
    pub(super) reclaimed: Family<QueueLabel, Counter>,
    pub(super) controlled: Family<QueueAction, Counter>,
    pub(super) resolved: Family<QueueOutcome, Counter>,
    pub(super) stalled: Family<QueueLabel, Gauge>,
    pub(super) read_errors: Family<QueueLabel, Counter>,
    pub(super) duration: HistogramFamily<QueueType>,
    pub(super) wait: HistogramFamily<QueueTypePriority>,
    pub(super) in_flight: Gauge,
    pub(super) concurrency: Gauge,
    pub(crate) ready: Family<QueuePriority, Gauge>,
    pub(crate) pending: Family<QueuePriority, Gauge>,
    pub(crate) scheduled: Family<QueueLabel, Gauge>,
    pub(crate) dead_depth: Family<QueueLabel, Gauge>,
    pub(crate) oldest_waiting: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    pub(crate) workers: Family<QueueLabel, Gauge>,
    pub(crate) limit_rate: Family<LimitLabel, Gauge<f64, AtomicU64>>,
    pub(crate) limit_max_running: Family<LimitLabel, Gauge>,
    pub(crate) limit_tokens: Family<LimitQueueLabel, Gauge<f64, AtomicU64>>,
    pub(crate) limit_running: Family<LimitQueueLabel, Gauge>,
    pub(crate) capacity: Family<QueueLabel, Gauge>,
}

impl Families {
    /// Every family, empty.
    pub(super) fn new() -> Self {
        Families {
            enqueued: Family::default(),
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            limited: Family::default(),
            refused: Family::default(),
            dead: Family::default(),
            reclaimed: Family::default(),
            controlled: Family::default(),
            resolved: Family::default(),
            stalled: Family::default(),
            read_errors: Family::default(),
            duration: Family::new_with_constructor(histogram),
            wait: Family::new_with_constructor(histogram),
            in_flight: Gauge::default(),
            concurrency: Gauge::default(),
            ready: Family::default(),
            pending: Family::default(),
            scheduled: Family::default(),
            dead_depth: Family::default(),
            oldest_waiting: Family::default(),
            workers: Family::default(),
            limit_rate: Family::default(),
            limit_max_running: Family::default(),
            limit_tokens: Family::default(),
            limit_running: Family::default(),
            capacity: Family::default(),
        }
    }

    /// Registers every family in `r` under its name and help text.
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "stevedore_jobs_enqueued",
            "Jobs accepted by Redis",
            self.enqueued.clone(),
        );
        r.register(
            "stevedore_jobs_started",
            "Attempts started",
            self.started.clone(),
        );
        r.register(
            "stevedore_jobs_succeeded",
            "Attempts that succeeded",
            self.succeeded.clone(),
        );
        r.register(
            "stevedore_jobs_failed",
            "Attempts that failed (error, panic or timeout)",
            self.failed.clone(),
        );
        r.register(
            "stevedore_jobs_retried",
            "Failed attempts scheduled to run again",
            self.retried.clone(),
        );
        r.register(
            "stevedore_jobs_limited",
            "Jobs a rate limit held back, sent to wait for their tokens (attempt count unchanged)",
            self.limited.clone(),
        );
        r.register(
            "stevedore_jobs_refused",
            "Jobs a bounded queue refused at enqueue for want of room (producer side; nothing written)",
            self.refused.clone(),
        );
        r.register(
            "stevedore_jobs_dead",
            "Jobs moved to the dead-letter stream, by reason",
            self.dead.clone(),
        );
        r.register(
            "stevedore_jobs_controlled",
            "Jobs an operator acted on, by action: cancelled (waiting, or stopped while running), cancel_requested, deleted, purged, retried_now",
            self.controlled.clone(),
        );
        r.register(
            "stevedore_jobs_resolved",
            "Jobs that waited for others, resolved by outcome: released, scheduled, cancelled, dead; batches done",
            self.resolved.clone(),
        );
        r.register(
            "stevedore_jobs_reclaimed",
            "Entries the janitor took back from a worker that is gone",
            self.reclaimed.clone(),
        );
        r.register(
            "stevedore_worker_queue_stalled",
            "1 while this process has made no progress on the queue for 10 s or more because redis does not answer or refuses its reads",
            self.stalled.clone(),
        );
        r.register(
            "stevedore_worker_read_errors",
            "Reads of a queue's streams by this process that failed (redis unreachable, too slow, or refusing)",
            self.read_errors.clone(),
        );
        r.register(
            "stevedore_job_duration_seconds",
            "Handler run time per attempt",
            self.duration.clone(),
        );
        r.register(
            "stevedore_job_wait_seconds",
            "Time from a job becoming ready (enqueued, or due) to its attempt starting",
            self.wait.clone(),
        );
        r.register(
            "stevedore_worker_jobs_in_flight",
            "Handlers running now in this process",
            self.in_flight.clone(),
        );
        r.register(
            "stevedore_worker_concurrency",
            "Configured concurrency of the running workers in this process",
            self.concurrency.clone(),
        );
        r.register(
            "stevedore_queue_ready",
            "Entries waiting in a priority stream, not yet delivered (sampled)",
            self.ready.clone(),
        );
        r.register(
            "stevedore_queue_pending",
            "Entries delivered to a worker and not yet acknowledged (sampled)",
            self.pending.clone(),
        );
        r.register(
            "stevedore_queue_scheduled",
            "Delayed jobs and retries waiting for their time (sampled)",
            self.scheduled.clone(),
        );
        r.register(
            "stevedore_queue_dead",
            "Entries in the dead-letter stream (sampled)",
            self.dead_depth.clone(),
        );
        r.register(
            "stevedore_queue_oldest_waiting_seconds",
            "Age of the oldest ready job not yet started, 0 when none waits (sampled)",
            self.oldest_waiting.clone(),
        );
        r.register(
            "stevedore_queue_workers",
            "Live workers consuming the queue (sampled)",
            self.workers.clone(),
        );
        r.register(
            "stevedore_limit_rate_per_second",
            "A rate limit's steady rate, jobs per second (sampled; scope queue, type or key)",
            self.limit_rate.clone(),
        );
        r.register(
            "stevedore_limit_max_running",
            "A concurrency limit: jobs running at once at most (sampled)",
            self.limit_max_running.clone(),
        );
        r.register(
            "stevedore_limit_tokens",
            "Jobs a rate limit lets start now on the queue, up to its burst (sampled)",
            self.limit_tokens.clone(),
        );
        r.register(
            "stevedore_limit_running",
            "Jobs running under a concurrency limit on the queue now (sampled)",
            self.limit_running.clone(),
        );
        r.register(
            "stevedore_queue_capacity",
            "A bounded queue's capacity: jobs it may hold waiting (sampled)",
            self.capacity.clone(),
        );
    }
}
