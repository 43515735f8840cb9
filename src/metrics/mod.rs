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

mod families;
mod labels;
mod observer;
pub(crate) mod sampler;
mod series;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::registry::Registry;

pub(crate) use self::families::Families;
use self::labels::QueueTypeReason;
pub(crate) use self::labels::{QueueLabel, QueuePriority};
use self::series::{EnqueuedCounters, JobHandles};
use crate::Priority;

/// Bucket bounds (seconds) of the duration and wait histograms: 1 ms to 10 min.
pub const BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// How often queue gauges are sampled from Redis unless set otherwise.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

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

impl Metrics {
    /// New metrics with their own registry (serve it with [`encode`](Self::encode)).
    pub fn new() -> Self {
        let families = Families::new();
        let mut registry = Registry::default();
        families.register(&mut registry);
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
        self.inner.families.register(registry);
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

#[cfg(test)]
mod tests {
    use super::series::MAX_TYPES;
    use super::*;
    use crate::observe::{EnqueuedEvent, JobEvent, Observer};

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
