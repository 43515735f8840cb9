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
mod builder;
pub(crate) mod consume;
pub(crate) mod control;
pub(crate) mod dispatch;
pub(crate) mod janitor;
mod layout;
pub(crate) mod lease;
mod limits;
mod parts;
pub(crate) mod periodic;
mod places;
pub(crate) mod promoter;
mod settings;
pub(crate) mod shutdown;
pub(crate) mod started;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{HandlerOptions, Registry};
use crate::health::{ConsumeState, Health};
use crate::metrics::Metrics;
use crate::observe::{LogEvents, Observer, Observers};
use crate::{Client, Error, Result};

pub use builder::WorkerBuilder;
pub(crate) use settings::Settings;

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
    /// The worker's settings, checked by the builder.
    pub(crate) settings: Settings,
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
    /// The rate and concurrency limits in force (read from Redis by the control loop).
    pub(crate) limits: limits::LimitTable,
    /// When this worker last told producers of room, per bounded queue.
    pub(crate) room: limits::RoomNotices,
    /// The places this worker holds under concurrency limits, renewed with its leases.
    pub(crate) running: Arc<places::SlotTable>,
    /// Finished jobs not yet added to the queues' lifetime totals.
    pub(crate) totals: Arc<control::TotalsCounter>,
    /// One permit per concurrency slot.
    pub(crate) slots: Arc<Semaphore>,
    /// Per queue, where finished entries go: its fetch loop's next read, or the acker.
    pub(crate) handoffs: HashMap<String, Arc<ack::Handoff>>,
    /// The acker's inbox.
    pub(crate) acker: mpsc::Sender<ack::Ack>,
    /// Tasks waiting for a slot.
    pub(crate) slot_waiters: Arc<ack::SlotWaiters>,
    /// Fires when the drain deadline passes: running handlers are dropped.
    pub(crate) hard_stop: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Runtime {
    /// Where finished entries of `queue` go (a queue this worker consumes; for any other,
    /// a handoff whose loop never waits, so they go straight to the acker).
    pub(crate) fn handoff(&self, queue: &str) -> Arc<ack::Handoff> {
        self.handoffs.get(queue).cloned().unwrap_or_else(|| {
            Arc::new(ack::Handoff::new(
                self.acker.clone(),
                self.slot_waiters.clone(),
            ))
        })
    }

    /// How long a succeeded job of `queue` whose handler has `options` keeps its success
    /// record, in ms (0: none is written): the handler's `keep_succeeded`, else the
    /// worker's for the queue, else the client's status retention.
    pub(crate) fn keep_succeeded_ms(&self, queue: &str, options: &HandlerOptions) -> u64 {
        options
            .keep_succeeded
            .or_else(|| {
                let of = crate::names::queue_of(queue);
                self.settings.keep_succeeded.get(of).copied()
            })
            .map(crate::clock::clamped_ms)
            .unwrap_or_else(|| self.client.status_retention_ms())
    }
}

/// A worker: consumes queues and runs their jobs' handlers. Build one with
/// [`Worker::builder`].
pub struct Worker {
    client: Client,
    registry: Registry,
    settings: Settings,
    /// Cron schedules this worker runs (see `periodic`).
    periodic: Vec<periodic::CronSchedule>,
    observers: Vec<Arc<dyn Observer>>,
    metrics: Option<Metrics>,
    consume_state: Arc<ConsumeState>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("consumer", &self.settings.consumer)
            .field("queues", &self.settings.queues)
            .field("concurrency", &self.settings.concurrency)
            .field("job_types", &self.registry.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Worker {
    /// A builder for a worker that uses `client`'s Redis and prefix.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder::new(client)
    }

    /// A health handle for this worker: `/readyz` is ready while it runs and every queue's
    /// consume loop reads. Take it before [`run_until`](Self::run_until).
    pub fn health(&self) -> Health {
        Health::for_worker(self.client.clone(), self.consume_state.clone())
    }

    /// This worker's consumer name in its queues' groups.
    pub fn consumer_name(&self) -> &str {
        &self.settings.consumer
    }

    /// The queues this worker consumes.
    pub fn queues(&self) -> &[String] {
        &self.settings.queues
    }

    /// Runs until `signal` resolves (e.g. [`shutdown_signal`](crate::shutdown_signal)),
    /// then shuts down gracefully: stops fetching, waits up to the drain timeout for running
    /// jobs, and leaves unfinished ones unacknowledged so they run again. Returns
    /// [`Error::DrainTimeout`] if jobs were still running at the deadline.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(signal);
        // Advice only: a server that does not answer in time is not waited for.
        let _ =
            tokio::time::timeout(Duration::from_secs(5), warn_about_durability(&self.client)).await;
        // A partitioned queue's partitions are consumed as queues (`layout`).
        let fetch_loops = match layout::loops(&self.client, &self.settings, signal.as_mut()).await?
        {
            Some(loops) => loops,
            None => return Ok(()),
        };
        self.settings.queues = fetch_loops.iter().flatten().cloned().collect();
        self.consume_state.set_loops(&self.settings.queues);
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
            m.prepare(&self.settings.queues, &types);
            m.add_concurrency(self.settings.concurrency as i64);
            (m.clone(), m.watch(&self.client, &self.settings.queues))
        });
        self.consume_state.set_running(true);
        let (tx, rx) = mpsc::channel(4096);
        let acker = ack::spawn(self.client.clone(), rx);
        let concurrency = self.settings.concurrency;
        let drain_timeout = self.settings.drain_timeout;
        let queues = self.settings.queues.clone();
        let slot_waiters = Arc::<ack::SlotWaiters>::default();
        let rt = Arc::new(Runtime {
            client: self.client,
            registry: self.registry,
            pause: control::PauseFlags::new(&self.settings.queues),
            limits: limits::LimitTable::default(),
            room: limits::RoomNotices::default(),
            running: Arc::default(),
            slots: Arc::new(Semaphore::new(concurrency)),
            settings: self.settings,
            leases: Arc::default(),
            janitor_wake: tokio::sync::Notify::new(),
            observers,
            consume_state: self.consume_state.clone(),
            totals,
            handoffs: queues
                .iter()
                .map(|q| {
                    let handoff = ack::Handoff::new(tx.clone(), slot_waiters.clone());
                    (q.clone(), Arc::new(handoff))
                })
                .collect(),
            acker: tx,
            slot_waiters,
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        // The limits this worker declares are in Redis, and those in force read, before the
        // first fetch; should Redis not answer now, the control loop keeps trying.
        let mut declare =
            Some(limits::declared(&rt.settings, &rt.registry)).filter(|d| !d.is_empty());
        let _ =
            tokio::time::timeout(Duration::from_secs(5), limits::refresh(&rt, &mut declare)).await;
        let settings = &rt.settings;
        tracing::info!(consumer = %settings.consumer, queues = ?settings.queues, concurrency, "worker started");

        let stop = CancellationToken::new();
        let mut loops = JoinSet::new();
        for names in fetch_loops {
            match <[String; 1]>::try_from(names) {
                Ok([queue]) => loops.spawn(consume::run(rt.clone(), queue, stop.clone())),
                Err(parts) => loops.spawn(parts::run(rt.clone(), parts, stop.clone())),
            };
        }
        loops.spawn(promoter::run(rt.clone(), stop.clone()));
        loops.spawn(janitor::run(rt.clone(), stop.clone()));
        if !self.periodic.is_empty() {
            loops.spawn(periodic::run(rt.clone(), self.periodic, stop.clone()));
        }
        // Leases and the heartbeat outlive the fetch loops: running jobs keep their
        // entries while the worker drains.
        let keep_alive = CancellationToken::new();
        let mut keepers = JoinSet::new();
        keepers.spawn(lease::renew(rt.clone(), keep_alive.clone()));
        keepers.spawn(control::run(rt.clone(), declare, keep_alive.clone()));
        keepers.spawn(lease::heartbeat(rt.clone(), keep_alive.clone()));
        tokio::select! {
            _ = &mut signal => {}
            Some(r) = loops.join_next() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "a fetch loop ended unexpectedly; shutting down");
                }
            }
        }
        tracing::info!(consumer = %rt.settings.consumer, "worker stopping: no new jobs, waiting for running ones");
        // Every step from here on is bounded, so the drain deadline holds whatever Redis
        // does: a step that waits on an unreachable server is abandoned, and what it did
        // not write stays pending for another worker's janitor.
        let drained_by = tokio::time::Instant::now() + drain_timeout;
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
            result = Err(Error::DrainTimeout(drain_timeout));
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
        let consumer = rt.settings.consumer.clone();
        rt.consume_state.set_running(false);
        drop(rt);
        if let Some((m, _)) = &_sampling {
            m.add_concurrency(-(concurrency as i64));
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
    let Ok(d) = client.store().durability().await else {
        return;
    };
    if d.appendonly.as_deref() == Some("no") {
        tracing::warn!(
            "redis runs without AOF (appendonly no): a redis restart loses queued jobs; set appendonly yes"
        );
    }
    if let Some(policy) = d.maxmemory_policy
        && policy != "noeviction"
    {
        tracing::warn!(policy = %policy, "redis may evict keys under memory pressure, losing jobs; set maxmemory-policy noeviction");
    }
}
