//! Prometheus metrics: job counters and histograms fed by job events, worker gauges, and
//! queue gauges sampled from Redis.
//!
//! One [`Metrics`] value is meant per process: hand it to the [`ClientBuilder`] (counts
//! enqueues and every event of workers built on that client) and to each
//! [`WorkerBuilder`] (adds the worker's concurrency and in-flight gauges and samples its
//! queues' depths from Redis). Serve it with [`encode`](Metrics::encode), the
//! [`http`](crate::http) router, or [`register`](Metrics::register) it into the
//! application's own `prometheus_client` registry.
//!
//! ```no_run
//! # async fn run() -> stevedore::Result<()> {
//! use stevedore::{Client, Metrics};
//!
//! let metrics = Metrics::new();
//! let client = Client::builder("redis://127.0.0.1:6379").metrics(&metrics).connect().await?;
//! // ... enqueue, run workers built with `.metrics(&metrics)` ...
//! println!("{}", metrics.encode());
//! # Ok(())
//! # }
//! ```
//!
//! Label values are bounded: job types a worker has no handler for are reported as
//! `(unknown)`, entries too damaged to read as `(invalid)`, and past 500 distinct types
//! a process reports further ones as `(other)`. Job ids never become labels.
//!
//! [`ClientBuilder`]: crate::ClientBuilder
//! [`WorkerBuilder`]: crate::WorkerBuilder

pub(crate) mod sampler;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Priority;
use crate::observe::{DeadJobEvent, EnqueuedEvent, Failure, JobEvent, Observer};

/// Bucket bounds (seconds) of the duration and wait histograms: 1 ms to 10 min.
pub const BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Distinct job types one process reports before further ones become `(other)`.
const MAX_TYPES: usize = 500;

/// How often queue gauges are sampled from Redis unless set otherwise.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

const UNKNOWN_TYPE: &str = "(unknown)";
const INVALID_TYPE: &str = "(invalid)";
const OTHER_TYPE: &str = "(other)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueTypePriority {
    queue: String,
    r#type: String,
    priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueType {
    queue: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueTypeReason {
    queue: String,
    r#type: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueuePriority {
    queue: String,
    priority: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// stevedore's metrics for one process. Cheap to clone; clones share every value.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub(crate) struct Families {
    enqueued: Family<QueueTypePriority, Counter>,
    started: Family<QueueTypePriority, Counter>,
    succeeded: Family<QueueType, Counter>,
    failed: Family<QueueType, Counter>,
    retried: Family<QueueType, Counter>,
    dead: Family<QueueTypeReason, Counter>,
    reclaimed: Family<QueueLabel, Counter>,
    stalled: Family<QueueLabel, Gauge>,
    read_errors: Family<QueueLabel, Counter>,
    duration: HistogramFamily<QueueType>,
    wait: HistogramFamily<QueueTypePriority>,
    in_flight: Gauge,
    concurrency: Gauge,
    pub(crate) ready: Family<QueuePriority, Gauge>,
    pub(crate) pending: Family<QueuePriority, Gauge>,
    pub(crate) scheduled: Family<QueueLabel, Gauge>,
    pub(crate) dead_depth: Family<QueueLabel, Gauge>,
    pub(crate) oldest_waiting: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    pub(crate) workers: Family<QueueLabel, Gauge>,
}

struct Inner {
    families: Families,
    registry: Registry,
    /// Job types seen so far (bounds the `type` label).
    types: Mutex<HashSet<String>>,
    /// Per queue and type, the series a started job touches, so the hot path skips the
    /// families' label lookups.
    handles: RwLock<HashMap<String, HashMap<String, Arc<JobHandles>>>>,
    /// Per queue and type, the enqueue counter of each priority used so far, for the same
    /// reason (a producer counts every job it enqueues).
    enqueued: RwLock<HashMap<String, HashMap<String, EnqueuedCounters>>>,
    pub(crate) sampler: sampler::Sampler,
}

/// One (queue, type) pair's enqueue counters, by priority, each created on first use.
type EnqueuedCounters = [Option<Counter>; 3];

/// The series one (queue, type) pair's attempts update.
struct JobHandles {
    started: [Counter; 3],
    wait: [Histogram; 3],
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    duration: Histogram,
}

impl Metrics {
    /// New metrics with their own registry (serve it with [`encode`](Self::encode)).
    pub fn new() -> Self {
        let families = Families {
            enqueued: Family::default(),
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            reclaimed: Family::default(),
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
        };
        let mut registry = Registry::default();
        register_families(&families, &mut registry);
        Metrics {
            inner: Arc::new(Inner {
                families,
                registry,
                types: Mutex::new(HashSet::new()),
                handles: RwLock::new(HashMap::new()),
                enqueued: RwLock::new(HashMap::new()),
                sampler: sampler::Sampler::new(DEFAULT_SAMPLE_INTERVAL),
            }),
        }
    }

    /// Adds these metrics to an application's own `prometheus_client` registry, so one
    /// scrape of the application shows them. They stay in this value's own registry too.
    pub fn register(&self, registry: &mut Registry) {
        register_families(&self.inner.families, registry);
    }

    /// How often queue gauges are sampled from Redis (default 5 s). Takes effect at the next
    /// sample.
    pub fn set_sample_interval(&self, interval: Duration) {
        self.inner
            .sampler
            .set_interval(interval.max(Duration::from_millis(100)));
    }

    /// The metrics in the OpenMetrics text format, as `/metrics` serves them.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// The content type of [`encode`](Self::encode)'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Whether `other` is a clone of this value (shares its series).
    pub(crate) fn same_as(&self, other: &Metrics) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn families(&self) -> &Families {
        &self.inner.families
    }

    pub(crate) fn sampler(&self) -> &sampler::Sampler {
        &self.inner.sampler
    }

    /// The label value for `job_type`: itself while fewer than [`MAX_TYPES`] are known.
    fn type_label(&self, job_type: &str, known: bool) -> String {
        if !known {
            return UNKNOWN_TYPE.to_string();
        }
        let mut types = self.inner.types.lock().unwrap_or_else(|p| p.into_inner());
        if types.contains(job_type) {
            return job_type.to_string();
        }
        if types.len() >= MAX_TYPES {
            return OTHER_TYPE.to_string();
        }
        types.insert(job_type.to_string());
        job_type.to_string()
    }

    fn handles(&self, queue: &str, job_type: &str, known: bool) -> Arc<JobHandles> {
        let type_key = if known { job_type } else { UNKNOWN_TYPE };
        {
            let map = self.inner.handles.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = map.get(queue).and_then(|m| m.get(type_key)) {
                return h.clone();
            }
        }
        let label = self.type_label(job_type, known);
        let f = &self.inner.families;
        let qt = QueueType {
            queue: queue.to_string(),
            r#type: label.clone(),
        };
        let qtp = |p: Priority| QueueTypePriority {
            queue: queue.to_string(),
            r#type: label.clone(),
            priority: p.as_str().to_string(),
        };
        let handles = Arc::new(JobHandles {
            started: Priority::ALL.map(|p| f.started.get_or_create_owned(&qtp(p))),
            wait: Priority::ALL.map(|p| f.wait.get_or_create_owned(&qtp(p))),
            succeeded: f.succeeded.get_or_create_owned(&qt),
            failed: f.failed.get_or_create_owned(&qt),
            retried: f.retried.get_or_create_owned(&qt),
            duration: f.duration.get_or_create_owned(&qt),
        });
        let mut map = self
            .inner
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if label == OTHER_TYPE {
            // Not cached under its own name: the map stays bounded too.
            return handles;
        }
        map.entry(queue.to_string())
            .or_default()
            .entry(type_key.to_string())
            .or_insert(handles)
            .clone()
    }

    /// Creates every series a worker of `queues` with handlers `types` touches, at zero, so
    /// dashboards and alerts see them before the first job.
    pub(crate) fn prepare(&self, queues: &[String], types: &[&str]) {
        let f = &self.inner.families;
        for q in queues {
            let ql = QueueLabel { queue: q.clone() };
            let _ = f.reclaimed.get_or_create(&ql);
            let _ = f.stalled.get_or_create(&ql);
            let _ = f.read_errors.get_or_create(&ql);
            let _ = f.scheduled.get_or_create(&ql);
            let _ = f.dead_depth.get_or_create(&ql);
            let _ = f.oldest_waiting.get_or_create(&ql);
            let _ = f.workers.get_or_create(&ql);
            for p in Priority::ALL {
                let qp = QueuePriority {
                    queue: q.clone(),
                    priority: p.as_str().to_string(),
                };
                let _ = f.ready.get_or_create(&qp);
                let _ = f.pending.get_or_create(&qp);
            }
            for t in types {
                self.handles(q, t, true);
                for reason in crate::DeadReason::ALL {
                    let _ = f.dead.get_or_create(&QueueTypeReason {
                        queue: q.clone(),
                        r#type: (*t).to_string(),
                        reason: reason.as_str().to_string(),
                    });
                }
            }
        }
    }

    /// Adds `n` to the configured-concurrency gauge (a worker starting; negative when it
    /// stops).
    pub(crate) fn add_concurrency(&self, n: i64) {
        self.inner.families.concurrency.inc_by(n);
    }
}

fn register_families(f: &Families, r: &mut Registry) {
    r.register(
        "stevedore_jobs_enqueued",
        "Jobs accepted by Redis",
        f.enqueued.clone(),
    );
    r.register(
        "stevedore_jobs_started",
        "Attempts started",
        f.started.clone(),
    );
    r.register(
        "stevedore_jobs_succeeded",
        "Attempts that succeeded",
        f.succeeded.clone(),
    );
    r.register(
        "stevedore_jobs_failed",
        "Attempts that failed (error, panic or timeout)",
        f.failed.clone(),
    );
    r.register(
        "stevedore_jobs_retried",
        "Failed attempts scheduled to run again",
        f.retried.clone(),
    );
    r.register(
        "stevedore_jobs_dead",
        "Jobs moved to the dead-letter stream, by reason",
        f.dead.clone(),
    );
    r.register(
        "stevedore_jobs_reclaimed",
        "Entries the janitor took back from a worker that is gone",
        f.reclaimed.clone(),
    );
    r.register(
        "stevedore_worker_queue_stalled",
        "1 while this process has made no progress on the queue for 10 s or more because redis does not answer or refuses its reads",
        f.stalled.clone(),
    );
    r.register(
        "stevedore_worker_read_errors",
        "Reads of a queue's streams by this process that failed (redis unreachable, too slow, or refusing)",
        f.read_errors.clone(),
    );
    r.register(
        "stevedore_job_duration_seconds",
        "Handler run time per attempt",
        f.duration.clone(),
    );
    r.register(
        "stevedore_job_wait_seconds",
        "Time from a job becoming ready (enqueued, or due) to its attempt starting",
        f.wait.clone(),
    );
    r.register(
        "stevedore_worker_jobs_in_flight",
        "Handlers running now in this process",
        f.in_flight.clone(),
    );
    r.register(
        "stevedore_worker_concurrency",
        "Configured concurrency of the running workers in this process",
        f.concurrency.clone(),
    );
    r.register(
        "stevedore_queue_ready",
        "Entries waiting in a priority stream, not yet delivered (sampled)",
        f.ready.clone(),
    );
    r.register(
        "stevedore_queue_pending",
        "Entries delivered to a worker and not yet acknowledged (sampled)",
        f.pending.clone(),
    );
    r.register(
        "stevedore_queue_scheduled",
        "Delayed jobs and retries waiting for their time (sampled)",
        f.scheduled.clone(),
    );
    r.register(
        "stevedore_queue_dead",
        "Entries in the dead-letter stream (sampled)",
        f.dead_depth.clone(),
    );
    r.register(
        "stevedore_queue_oldest_waiting_seconds",
        "Age of the oldest ready job not yet started, 0 when none waits (sampled)",
        f.oldest_waiting.clone(),
    );
    r.register(
        "stevedore_queue_workers",
        "Live workers consuming the queue (sampled)",
        f.workers.clone(),
    );
}

impl Metrics {
    /// The enqueue counter of `queue`, `job_type` and `priority`, created on first use.
    fn enqueued_counter(&self, queue: &str, job_type: &str, priority: Priority) -> Counter {
        let i = priority.index();
        {
            let map = self
                .inner
                .enqueued
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(Some(c)) = map.get(queue).and_then(|m| m.get(job_type)).map(|c| &c[i]) {
                return c.clone();
            }
        }
        let label = self.type_label(job_type, true);
        let counter = self
            .inner
            .families
            .enqueued
            .get_or_create_owned(&QueueTypePriority {
                queue: queue.to_string(),
                r#type: label.clone(),
                priority: priority.as_str().to_string(),
            });
        if label == OTHER_TYPE {
            // Not cached under its own name: the map stays bounded too.
            return counter;
        }
        let mut map = self
            .inner
            .enqueued
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(queue.to_string())
            .or_default()
            .entry(job_type.to_string())
            .or_default()[i]
            .get_or_insert(counter)
            .clone()
    }
}

impl Observer for Metrics {
    fn enqueued(&self, job: &EnqueuedEvent<'_>) {
        self.enqueued_counter(job.queue, job.job_type, job.priority)
            .inc();
    }

    fn started(&self, job: &JobEvent<'_>) {
        let h = self.handles(job.queue, job.job_type, job.known_type);
        let i = job.priority.index();
        h.started[i].inc();
        h.wait[i].observe(job.waited.as_secs_f64());
        self.inner.families.in_flight.inc();
    }

    fn succeeded(&self, job: &JobEvent<'_>, took: Duration) {
        let h = self.handles(job.queue, job.job_type, job.known_type);
        h.succeeded.inc();
        h.duration.observe(took.as_secs_f64());
        self.inner.families.in_flight.dec();
    }

    fn failed(&self, job: &JobEvent<'_>, failure: &Failure<'_>) {
        let h = self.handles(job.queue, job.job_type, job.known_type);
        h.failed.inc();
        h.duration.observe(failure.took.as_secs_f64());
        self.inner.families.in_flight.dec();
    }

    fn retried(&self, job: &JobEvent<'_>, _delay: Duration, _error: &str) {
        self.handles(job.queue, job.job_type, job.known_type)
            .retried
            .inc();
    }

    fn abandoned(&self, _job: &JobEvent<'_>) {
        self.inner.families.in_flight.dec();
    }

    fn dead(&self, job: &DeadJobEvent<'_>) {
        let label = match job.job_type {
            None => INVALID_TYPE.to_string(),
            Some(t) => self.type_label(t, job.known_type),
        };
        self.inner
            .families
            .dead
            .get_or_create(&QueueTypeReason {
                queue: job.queue.to_string(),
                r#type: label,
                reason: job.reason.as_str().to_string(),
            })
            .inc();
    }

    fn reclaimed(&self, queue: &str, entries: u64) {
        self.inner
            .families
            .reclaimed
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .inc_by(entries);
    }

    fn read_failed(&self, queue: &str, _error: &str) {
        self.inner
            .families
            .read_errors
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .inc();
    }

    fn stalled(&self, queue: &str, _for_how_long: Duration, _error: &str) {
        self.inner
            .families
            .stalled
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .set(1);
    }

    fn recovered(&self, queue: &str, _lasted: Duration) {
        self.inner
            .families
            .stalled
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .set(0);
    }
}

impl QueuePriority {
    pub(crate) fn new(queue: &str, priority: Priority) -> Self {
        QueuePriority {
            queue: queue.to_string(),
            priority: priority.as_str().to_string(),
        }
    }
}

impl QueueLabel {
    pub(crate) fn new(queue: &str) -> Self {
        QueueLabel {
            queue: queue.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(job_type: &'a str, known: bool) -> JobEvent<'a> {
        JobEvent {
            job_id: "id",
            job_type,
            known_type: known,
            queue: "q",
            priority: Priority::High,
            attempt: 1,
            max_attempts: 3,
            waited: Duration::from_millis(3),
        }
    }

    #[test]
    fn counts_attempts_and_keeps_labels_bounded() {
        let m = Metrics::new();
        m.started(&event("a", true));
        m.succeeded(&event("a", true), Duration::from_millis(2));
        m.started(&event("secret-random-type", false));
        let text = m.encode();
        assert!(
            text.contains(r#"stevedore_jobs_started_total{queue="q",type="a",priority="high"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"stevedore_jobs_succeeded_total{queue="q",type="a"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"type="(unknown)""#), "{text}");
        assert!(!text.contains("secret-random-type"), "{text}");
        assert!(text.contains("stevedore_worker_jobs_in_flight 1"), "{text}");
        for i in 0..MAX_TYPES + 10 {
            m.started(&event(&format!("t{i}"), true));
        }
        assert!(m.encode().contains(r#"type="(other)""#));
        assert!(m.inner.types.lock().map(|t| t.len()).unwrap_or(0) <= MAX_TYPES);
    }

    #[test]
    fn enqueues_are_counted_by_queue_type_and_priority_with_bounded_types() {
        let m = Metrics::new();
        let enqueued = |job_type: &str, priority| {
            m.enqueued(&EnqueuedEvent {
                job_id: "id",
                job_type,
                queue: "q",
                priority,
                scheduled: false,
            })
        };
        enqueued("a", Priority::High);
        enqueued("a", Priority::High);
        enqueued("a", Priority::Low);
        let text = m.encode();
        for needle in [
            r#"stevedore_jobs_enqueued_total{queue="q",type="a",priority="high"} 2"#,
            r#"stevedore_jobs_enqueued_total{queue="q",type="a",priority="low"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert!(!text.contains(r#"type="a",priority="normal""#), "{text}");
        // "a" is one of the MAX_TYPES; eleven more types than fit become "(other)".
        for i in 0..MAX_TYPES + 10 {
            enqueued(&format!("t{i}"), Priority::Normal);
        }
        assert!(m.encode().contains(
            r#"stevedore_jobs_enqueued_total{queue="q",type="(other)",priority="normal"} 11"#
        ));
    }

    #[test]
    fn prepared_series_exist_at_zero() {
        let m = Metrics::new();
        m.prepare(&["emails".to_string()], &["email.send"]);
        let text = m.encode();
        for needle in [
            r#"stevedore_jobs_started_total{queue="emails",type="email.send",priority="low"} 0"#,
            r#"stevedore_jobs_dead_total{queue="emails",type="email.send",reason="poison"} 0"#,
            r#"stevedore_jobs_reclaimed_total{queue="emails"} 0"#,
            r#"stevedore_queue_ready{queue="emails",priority="normal"} 0"#,
            r#"stevedore_job_wait_seconds_bucket{le="0.001",queue="emails",type="email.send",priority="high"} 0"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn registers_into_an_application_registry() {
        let m = Metrics::new();
        let mut app = Registry::default();
        m.register(&mut app);
        m.reclaimed("q", 2);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &app).expect("encode");
        assert!(
            out.contains(r#"stevedore_jobs_reclaimed_total{queue="q"} 2"#),
            "{out}"
        );
    }
}
