//! Workers: consume queues, run handlers, acknowledge, shut down gracefully.
//!
//! A [`Worker`] is one consumer in each of its queues' consumer groups. It runs one fetch
//! loop per queue (`consume`), which starts what it reads a batch at a time (`started`:
//! recorded as running in one call), a task per delivery (`dispatch`) bounded by a shared
//! concurrency limit, and one acker that batches acknowledgements (`ack`). Shutdown
//! (`shutdown`) stops the fetch loops first, lets running jobs finish within a drain
//! deadline, and leaves whatever did not finish unacknowledged, so it runs again. A
//! `promoter` moves delayed jobs and retries into the streams when they are due, and a
//! `periodic` task enqueues the ticks of cron schedules ([`Periodic`](crate::Periodic)).

pub(crate) mod ack;
pub(crate) mod consume;
pub(crate) mod control;
pub(crate) mod dispatch;
pub(crate) mod janitor;
pub(crate) mod lease;
pub(crate) mod periodic;
pub(crate) mod promoter;
pub(crate) mod shutdown;
pub(crate) mod started;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::ConfigInterface as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{JobHandler, Registry};
use crate::health::{ConsumeState, Health};
use crate::job::validate_name;
use crate::metrics::Metrics;
use crate::observe::{LogEvents, Observer, Observers};
use crate::priority::PriorityWeights;
use crate::retry::RetryPolicy;
use crate::{Client, Error, Result};

/// Handlers run at once per worker unless set otherwise.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// How long an unrenewed entry stays leased unless set otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Deliveries before an unfinished entry is poison unless set otherwise.
pub const DEFAULT_MAX_DELIVERIES: u32 = 3;
/// How long shutdown waits for running jobs unless set otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The periodic wake-up of a worker's background tasks (renewer, heartbeat, janitor):
/// missed ticks are delayed rather than bunched, and the ticker ends when `stop` fires.
pub(crate) struct Ticker {
    interval: tokio::time::Interval,
    stop: CancellationToken,
}

impl Ticker {
    pub(crate) fn new(period: Duration, stop: CancellationToken) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker { interval, stop }
    }

    /// Waits for the next tick; false once `stop` fired.
    pub(crate) async fn tick(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}

/// What every task of one running worker shares.
pub(crate) struct Runtime {
    pub(crate) client: Client,
    pub(crate) registry: Registry,
    pub(crate) consumer: String,
    pub(crate) weights: PriorityWeights,
    /// Retry policy for handlers without their own, and for unknown job types.
    pub(crate) retry_policy: RetryPolicy,
    /// How long an entry may stay pending unrenewed before a janitor takes it back.
    pub(crate) lease: Duration,
    /// Deliveries after which an unfinished entry is poison.
    pub(crate) max_deliveries: u32,
    /// Dead letters older than this are purged by the janitor.
    pub(crate) dlq_retention: Option<Duration>,
    /// Entries this worker holds, renewed while held.
    pub(crate) leases: Arc<lease::LeaseTable>,
    /// Wakes the janitor before its next round: a stopping worker handed entries back.
    pub(crate) janitor_wake: tokio::sync::Notify,
    /// Told about every job event of this worker.
    pub(crate) observers: Observers,
    /// Which consume loops are reading (for readiness).
    pub(crate) consume_state: Arc<ConsumeState>,
    /// Which queues are paused (read from Redis by the control loop).
    pub(crate) pause: control::PauseFlags,
    /// Finished jobs not yet added to the queues' lifetime totals.
    pub(crate) totals: Arc<control::TotalsCounter>,
    /// One permit per concurrency slot.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) acks: mpsc::Sender<ack::Ack>,
    /// Fires when the drain deadline passes: running handlers are dropped.
    pub(crate) hard_stop: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// A worker: consumes queues and runs their jobs' handlers. Build one with
/// [`Worker::builder`].
pub struct Worker {
    client: Client,
    registry: Registry,
    queues: Vec<String>,
    consumer: String,
    concurrency: usize,
    weights: PriorityWeights,
    retry_policy: RetryPolicy,
    lease: Duration,
    max_deliveries: u32,
    dlq_retention: Option<Duration>,
    drain_timeout: Duration,
    /// Cron schedules this worker runs (see `periodic`).
    periodic: Vec<periodic::CronSchedule>,
    observers: Vec<Arc<dyn Observer>>,
    metrics: Option<Metrics>,
    consume_state: Arc<ConsumeState>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("consumer", &self.consumer)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("job_types", &self.registry.names().collect::<Vec<_>>())
            .finish()
    }
}

/// Settings for a [`Worker`].
#[must_use = "call build() to get a worker"]
pub struct WorkerBuilder {
    client: Client,
    registry: Registry,
    errors: Vec<String>,
    queues: Option<Vec<String>>,
    consumer: Option<String>,
    concurrency: usize,
    weights: PriorityWeights,
    retry_policy: RetryPolicy,
    lease: Duration,
    max_deliveries: u32,
    dlq_retention: Option<Duration>,
    drain_timeout: Duration,
    /// Cron schedules this worker runs (see `periodic`).
    periodic: Vec<periodic::CronSchedule>,
    observers: Vec<Arc<dyn Observer>>,
    metrics: Option<Metrics>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Registers a handler (`send_email::handler()` for a `#[job_handler] fn send_email`).
    /// Its queue is consumed unless [`queues`](Self::queues) says otherwise.
    pub fn handler<H: JobHandler>(mut self, handler: H) -> Self {
        if let Err(e) = self.registry.insert(handler) {
            self.errors.push(e);
        }
        self
    }

    /// The queues to consume, replacing the handlers' own. Every registered handler runs
    /// for its job type on every one of these queues.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Handlers running at once, across all queues (default 10). A full worker stops
    /// fetching until a slot frees up.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How free slots are split between priorities (default 6 : 3 : 1).
    pub fn priority_weights(mut self, weights: PriorityWeights) -> Self {
        self.weights = weights;
        self
    }

    /// Retry policy for handlers that do not set their own, and for job types this worker
    /// does not know (default: exponential from 1 s to 10 min, with jitter).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// How long an entry may stay pending without its worker renewing it before a janitor
    /// takes it back (default 30 s). Running jobs renew every lease/3, so this bounds how
    /// long a crashed worker's jobs wait, not how long a job may run.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Keeps dead letters of this worker's queues for `retention` (by failure time, on
    /// Redis' clock); the janitor purges older ones. Unset by default: dead letters stay
    /// until replayed or purged.
    pub fn dlq_retention(mut self, retention: Duration) -> Self {
        self.dlq_retention = Some(retention);
        self
    }

    /// Deliveries after which an entry whose workers keep dying is dead-lettered as
    /// `poison` (default 3). Separate from `max_attempts`, which counts handler failures.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// How long shutdown waits for running jobs before leaving them pending (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The consumer name in the queues' groups (default: host name, process id and a random
    /// suffix, unique per run).
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Reports this worker's job events to `observer` too, after the client's observers.
    /// See [`observe`](crate::observe).
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Records this worker in `metrics`: its job events (unless the client already reports
    /// to the same `metrics`), its concurrency and in-flight gauges, and its queues' depths,
    /// sampled from Redis while it runs. See [`Metrics`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Worker> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(Error::InvalidConfig(e));
        }
        if self.registry.is_empty() {
            return Err(Error::InvalidConfig(
                "a worker needs at least one handler".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::InvalidConfig(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.lease < Duration::from_millis(30) {
            return Err(Error::InvalidConfig("lease must be at least 30 ms".into()));
        }
        if self.max_deliveries == 0 {
            return Err(Error::InvalidConfig(
                "max_deliveries must be at least 1".into(),
            ));
        }
        if self.weights.all_zero() {
            return Err(Error::InvalidConfig(
                "at least one priority weight must be above 0".into(),
            ));
        }
        let mut queues = self
            .queues
            .unwrap_or_else(|| self.registry.queues().to_vec());
        queues.dedup();
        if queues.is_empty() {
            return Err(Error::InvalidConfig(
                "a worker needs at least one queue".into(),
            ));
        }
        for q in &queues {
            validate_name("queue", q)?;
        }
        let consumer = self.consumer.unwrap_or_else(default_consumer_name);
        if consumer.is_empty() || consumer.len() > 200 {
            return Err(Error::InvalidConfig(
                "consumer name must have 1 to 200 characters".into(),
            ));
        }
        Ok(Worker {
            client: self.client,
            registry: self.registry,
            consumer,
            concurrency: self.concurrency,
            weights: self.weights,
            retry_policy: self.retry_policy,
            lease: self.lease,
            max_deliveries: self.max_deliveries,
            dlq_retention: self.dlq_retention,
            drain_timeout: self.drain_timeout,
            periodic: self.periodic,
            observers: self.observers,
            metrics: self.metrics,
            consume_state: Arc::new(ConsumeState::new(&queues)),
            queues,
        })
    }
}

fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".to_string());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

impl Worker {
    /// A builder for a worker that uses `client`'s Redis and prefix.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder {
            client,
            registry: Registry::default(),
            errors: Vec::new(),
            queues: None,
            consumer: None,
            concurrency: DEFAULT_CONCURRENCY,
            weights: PriorityWeights::default(),
            retry_policy: RetryPolicy::default(),
            lease: DEFAULT_LEASE,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            dlq_retention: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            periodic: Vec::new(),
            observers: Vec::new(),
            metrics: None,
        }
    }

    /// A health handle for this worker: `/readyz` is ready while it runs and every queue's
    /// consume loop reads. Take it before [`run_until`](Self::run_until).
    pub fn health(&self) -> Health {
        Health::for_worker(self.client.clone(), self.consume_state.clone())
    }

    /// This worker's consumer name in its queues' groups.
    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// The queues this worker consumes.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// Runs until `signal` resolves (e.g. [`shutdown_signal`](crate::shutdown_signal)),
    /// then shuts down gracefully: stops fetching, waits up to the drain timeout for running
    /// jobs, and leaves unfinished ones unacknowledged so they run again. Returns
    /// [`Error::DrainTimeout`] if jobs were still running at the deadline.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        // Advice only: a server that does not answer in time is not waited for.
        let _ =
            tokio::time::timeout(Duration::from_secs(5), warn_about_durability(&self.client)).await;
        // Metrics come from the worker's own setting, else the client's; events go to the
        // log first, then the client's observers, then the worker's.
        let client_metrics = self.client.metrics().cloned();
        let metrics = self.metrics.clone().or_else(|| client_metrics.clone());
        let mut extra: Vec<Arc<dyn Observer>> = self.observers;
        if let Some(m) = &self.metrics
            && !client_metrics.as_ref().is_some_and(|c| c.same_as(m))
        {
            extra.push(Arc::new(m.clone()));
        }
        let totals = Arc::new(control::TotalsCounter::default());
        let observers = Observers::new(vec![Arc::new(LogEvents), Arc::new(totals.clone())])
            .with(self.client.observers().iter())
            .with(extra);
        let _sampling = metrics.as_ref().map(|m| {
            let types: Vec<&str> = self.registry.names().collect();
            m.prepare(&self.queues, &types);
            m.add_concurrency(self.concurrency as i64);
            (m.clone(), m.watch(&self.client, &self.queues))
        });
        self.consume_state.set_running(true);
        let (tx, rx) = mpsc::channel(4096);
        let acker = ack::spawn(self.client.clone(), rx);
        let rt = Arc::new(Runtime {
            client: self.client,
            registry: self.registry,
            consumer: self.consumer,
            weights: self.weights,
            retry_policy: self.retry_policy,
            lease: self.lease,
            max_deliveries: self.max_deliveries,
            dlq_retention: self.dlq_retention,
            leases: Arc::default(),
            janitor_wake: tokio::sync::Notify::new(),
            observers,
            consume_state: self.consume_state.clone(),
            pause: control::PauseFlags::new(&self.queues),
            totals,
            slots: Arc::new(Semaphore::new(self.concurrency)),
            acks: tx,
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        tracing::info!(consumer = %rt.consumer, queues = ?self.queues, concurrency = self.concurrency, "worker started");

        let stop = CancellationToken::new();
        let mut loops = JoinSet::new();
        for q in &self.queues {
            loops.spawn(consume::run(rt.clone(), q.clone(), stop.clone()));
        }
        loops.spawn(promoter::run(rt.clone(), self.queues.clone(), stop.clone()));
        loops.spawn(janitor::run(rt.clone(), self.queues.clone(), stop.clone()));
        if !self.periodic.is_empty() {
            loops.spawn(periodic::run(rt.clone(), self.periodic, stop.clone()));
        }
        // Leases and the heartbeat outlive the fetch loops: running jobs keep their
        // entries while the worker drains.
        let keep_alive = CancellationToken::new();
        let mut keepers = JoinSet::new();
        keepers.spawn(lease::renew(rt.clone(), keep_alive.clone()));
        keepers.spawn(control::run(
            rt.clone(),
            self.queues.clone(),
            keep_alive.clone(),
        ));
        keepers.spawn(lease::heartbeat(
            rt.clone(),
            self.queues.clone(),
            self.concurrency,
            keep_alive.clone(),
        ));
        tokio::pin!(signal);
        tokio::select! {
            _ = &mut signal => {}
            Some(r) = loops.join_next() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "a fetch loop ended unexpectedly; shutting down");
                }
            }
        }
        tracing::info!(consumer = %rt.consumer, "worker stopping: no new jobs, waiting for running ones");
        // Every step from here on is bounded, so the drain deadline holds whatever Redis
        // does: a step that waits on an unreachable server is abandoned, and what it did
        // not write stays pending for another worker's janitor.
        let drained_by = tokio::time::Instant::now() + self.drain_timeout;
        stop.cancel();
        if tokio::time::timeout_at(drained_by, async {
            while loops.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                "fetch loops did not stop by the drain deadline (redis unreachable?); abandoning them"
            );
            loops.abort_all();
        }

        rt.tracker.close();
        let mut result = Ok(());
        if tokio::time::timeout_at(drained_by, rt.tracker.wait())
            .await
            .is_err()
        {
            rt.hard_stop.cancel();
            // Cancelled handlers end at once; their failure paths may still wait on Redis.
            if tokio::time::timeout(TIDY_UP, rt.tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "jobs past the drain deadline could not record their outcome (redis unreachable?); they stay pending and run again"
                );
            }
            result = Err(Error::DrainTimeout(self.drain_timeout));
        }
        let tidy_by = tokio::time::Instant::now() + TIDY_UP;
        keep_alive.cancel();
        if tokio::time::timeout_at(tidy_by, async {
            while keepers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                "could not withdraw the heartbeat (redis unreachable?); this worker's entries are taken over once its lease and heartbeat expire"
            );
            keepers.abort_all();
        }
        let consumer = rt.consumer.clone();
        rt.consume_state.set_running(false);
        drop(rt);
        if let Some((m, _)) = &_sampling {
            m.add_concurrency(-(self.concurrency as i64));
        }
        let acker_abort = acker.abort_handle();
        match tokio::time::timeout_at(tidy_by, acker).await {
            Ok(Err(e)) if !e.is_cancelled() => {
                tracing::error!(error = %e, "the acknowledging task failed");
            }
            Ok(_) => {}
            Err(_) => {
                acker_abort.abort();
                tracing::warn!(
                    "finished jobs could not be acknowledged (redis unreachable?); they stay pending and run again"
                );
            }
        }

        tracing::info!(%consumer, "worker stopped");
        result
    }
}

/// How long a stopping worker waits, past its drain deadline (or past its last job), to
/// withdraw its heartbeat and send its last acknowledgements; beyond it they are abandoned.
const TIDY_UP: Duration = Duration::from_secs(3);

/// Logs a warning when the server can lose jobs: no AOF, or an eviction policy that may
/// drop keys under memory pressure. Servers that refuse CONFIG are left alone.
async fn warn_about_durability(client: &Client) {
    let redis = client.redis();
    let appendonly: Result<Vec<String>, _> = redis.config_get("appendonly").await;
    if matches!(appendonly.as_deref(), Ok([_, v]) if v == "no") {
        tracing::warn!(
            "redis runs without AOF (appendonly no): a redis restart loses queued jobs; set appendonly yes"
        );
    }
    let policy: Result<Vec<String>, _> = redis.config_get("maxmemory-policy").await;
    if let Ok([_, policy]) = policy.as_deref()
        && policy != "noeviction"
    {
        tracing::warn!(policy = %policy, "redis may evict keys under memory pressure, losing jobs; set maxmemory-policy noeviction");
    }
}
