//! A harness for testing an application's job handlers end to end: a real Redis, workers
//! in the test's process, and what a test needs to drive and observe them.
//!
//! Unit tests call a handler directly (`send_email(payload, JobContext::for_tests(..))`);
//! that cannot show what the queue does around it: decoding the payload the producer
//! wrote, retries, the dead-letter stream, a worker dying mid-job. A [`Harness`] runs the
//! handlers the way production does, on a Redis from [`TestRedis`], under a key prefix of
//! its own, and lets the test wait for a job's final status with a deadline, read dead
//! letters, crash a worker and start another.
//!
//! Settings differ from production where tests want speed: a failed attempt is retried
//! after 10 ms (unless the handler sets its own backoff), leases last 1 s so a crashed
//! worker's jobs are taken over within about 1.5 s, and a graceful stop waits 5 s at
//! most for running jobs. Each can be changed on the [`HarnessBuilder`].

mod worker;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface, StreamsInterface};
use fred::types::Value;
use futures::TryStreamExt;
use stevedore::{
    Client, ClientBuilder, DeadJob, DeadLetterQuery, IntoJob, JobHandler, JobId, JobState,
    JobStatus, RetryPolicy, WorkerBuilder,
};

use crate::{KitError, RedisSource, TestRedis};
use worker::{InProcessWorker, Recipe, Setup};

/// How long a harness worker's leases last unless set otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(1);
/// The retry policy of harness workers unless set otherwise: 10 ms between attempts.
pub const DEFAULT_RETRY_POLICY: RetryPolicy = RetryPolicy::fixed(Duration::from_millis(10));
/// How long stopping a harness worker waits for running jobs unless set otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer group stevedore creates on every stream (see the README's data model).
const GROUP: &str = "stevedore";
/// Longest pause between two status polls.
const MAX_POLL: Duration = Duration::from_millis(100);

/// Settings for a [`Harness`]. Made by [`Harness::builder`].
#[must_use = "a builder does nothing until .start() is awaited"]
pub struct HarnessBuilder {
    redis_url: Option<String>,
    prefix: Option<String>,
    workers: usize,
    lease: Duration,
    retry_policy: RetryPolicy,
    drain_timeout: Duration,
    handlers: Vec<Setup>,
    worker_setups: Vec<Setup>,
    client_setups: Vec<Arc<dyn Fn(ClientBuilder) -> ClientBuilder + Send + Sync>>,
}

impl fmt::Debug for HarnessBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HarnessBuilder")
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(crate::announce::redact),
            )
            .field("prefix", &self.prefix)
            .field("workers", &self.workers)
            .field("lease", &self.lease)
            .field("retry_policy", &self.retry_policy)
            .field("drain_timeout", &self.drain_timeout)
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl HarnessBuilder {
    /// Registers a handler (`send_email::handler()`) with every worker the harness starts.
    /// Its queue is consumed unless [`configure_worker`](Self::configure_worker) sets
    /// other queues.
    pub fn handler<H: JobHandler + Clone>(mut self, handler: H) -> Self {
        self.handlers
            .push(Arc::new(move |w: WorkerBuilder| w.handler(handler.clone())));
        self
    }

    /// How many workers [`start`](Self::start) starts (default 1). With 0, start them
    /// yourself with [`Harness::start_worker`], e.g. after enqueueing.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// How long an unrenewed entry stays with its worker (default 1 s): after a
    /// [`crash`](Harness::crash_worker), its jobs are taken over by another worker within
    /// about 1.5 leases.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The retry policy for handlers without their own backoff (default: 10 ms between
    /// attempts, so a job that fails every time reaches the dead-letter stream at once).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// How long [`stop_worker`](Harness::stop_worker) and [`shutdown`](Harness::shutdown)
    /// wait for running jobs (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Any other worker setting (concurrency, queues, cron schedules...), applied to every
    /// worker after the harness' own, so it wins over them. The consumer name is the
    /// harness' to choose.
    pub fn configure_worker(
        mut self,
        f: impl Fn(WorkerBuilder) -> WorkerBuilder + Send + Sync + 'static,
    ) -> Self {
        self.worker_setups.push(Arc::new(f));
        self
    }

    /// Client settings (payload limit, status retention...) for the harness' client and
    /// every worker's. The key prefix is the harness' (see [`prefix`](Self::prefix)).
    pub fn configure_client(
        mut self,
        f: impl Fn(ClientBuilder) -> ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        self.client_setups.push(Arc::new(f));
        self
    }

    /// Uses this Redis instead of starting one with [`TestRedis::start`]. The harness keeps
    /// to its own key prefix there, so tests can share a server.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// The key prefix (default `stevedore-test-` and 16 random hex digits, so harnesses on
    /// one server never see each other's jobs).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Gets a Redis ([`TestRedis::start`]: a container when an engine answers, else a
    /// local `redis-server`, or `STEVEDORE_TEST_REDIS_URL`), connects, and starts the
    /// workers.
    pub async fn start(self) -> Result<Harness, KitError> {
        let (redis, url) = match self.redis_url {
            Some(url) => (None, url),
            None => {
                let redis = TestRedis::start().await?;
                let url = redis.url().to_owned();
                (Some(redis), url)
            }
        };
        let prefix = self
            .prefix
            .unwrap_or_else(|| format!("stevedore-test-{:016x}", rand::random::<u64>()));
        let client_builder = self
            .client_setups
            .iter()
            .fold(Client::builder(&url), |b, setup| setup(b))
            .prefix(&prefix);
        let client = client_builder.clone().connect().await?;
        let raw = fred::prelude::Builder::from_config(
            fred::prelude::Config::from_url(&url).map_err(redis_error)?,
        )
        .build()
        .map_err(redis_error)?;
        raw.init().await.map_err(redis_error)?;

        let (lease, retry, drain) = (self.lease, self.retry_policy, self.drain_timeout);
        let defaults: Setup = Arc::new(move |w: WorkerBuilder| {
            w.lease(lease).retry_policy(retry).drain_timeout(drain)
        });
        let setups = std::iter::once(defaults)
            .chain(self.handlers)
            .chain(self.worker_setups)
            .collect();
        let harness = Harness {
            client,
            raw,
            prefix,
            source: redis.as_ref().map(TestRedis::source),
            recipe: Arc::new(Recipe {
                client: client_builder,
                setups,
            }),
            workers: Mutex::new(VecDeque::new()),
            started: AtomicUsize::new(0),
            redis,
        };
        for _ in 0..self.workers {
            harness.start_worker().await?;
        }
        Ok(harness)
    }
}

/// An application's handlers running against a real Redis, for one test.
///
/// Start one with [`Harness::builder`]; see the [crate docs](crate#testing-your-handlers)
/// for a complete test. Dropping it kills its workers (like [`crash_worker`]) and stops the
/// Redis it started; [`shutdown`](Self::shutdown) stops the workers gracefully instead and
/// removes the harness' keys from a shared server.
///
/// [`crash_worker`]: Self::crash_worker
pub struct Harness {
    client: Client,
    /// For what the stevedore API does not offer: pending counts and cleanup.
    raw: fred::prelude::Client,
    prefix: String,
    /// Where the Redis came from; `None` for a URL given to the builder.
    source: Option<RedisSource>,
    recipe: Arc<Recipe>,
    /// Running workers, oldest first.
    workers: Mutex<VecDeque<InProcessWorker>>,
    /// Workers started so far, for their names.
    started: AtomicUsize,
    /// Declared last: the server goes after everything that talks to it.
    redis: Option<TestRedis>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("prefix", &self.prefix)
            .field("source", &self.source)
            .field("workers", &self.running_workers())
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A builder: register handlers, then [`start`](HarnessBuilder::start).
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            redis_url: None,
            prefix: None,
            workers: 1,
            lease: DEFAULT_LEASE,
            retry_policy: DEFAULT_RETRY_POLICY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            handlers: Vec::new(),
            worker_setups: Vec::new(),
            client_setups: Vec::new(),
        }
    }

    /// The harness' client, for everything else the stevedore API offers (bulk enqueue,
    /// replaying dead letters, ...). It uses the harness' key prefix.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The key prefix of this harness.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the Redis came from, `None` when the builder was given a URL.
    pub fn redis_source(&self) -> Option<RedisSource> {
        self.source
    }

    /// Enqueues a job (`send_email::job(payload)`, or a `RawJob`) and returns its id.
    pub async fn enqueue(&self, job: impl IntoJob) -> Result<JobId, KitError> {
        Ok(self.client.enqueue(job).await?)
    }

    /// Waits until job `id` succeeds or dies and returns its status; fails with
    /// [`KitError::JobTimeout`] (naming its last state) when `timeout` passes first.
    pub async fn wait_for(
        &self,
        id: impl AsRef<str>,
        timeout: Duration,
    ) -> Result<JobStatus, KitError> {
        self.wait(id.as_ref(), timeout, None).await
    }

    /// Waits until job `id` is in `state` (e.g. [`JobState::Running`], to crash its worker
    /// mid-job). Fails with [`KitError::JobEnded`] when the job ends in another state, and
    /// with [`KitError::JobTimeout`] when `timeout` passes first.
    pub async fn wait_for_state(
        &self,
        id: impl AsRef<str>,
        state: JobState,
        timeout: Duration,
    ) -> Result<JobStatus, KitError> {
        self.wait(id.as_ref(), timeout, Some(state)).await
    }

    async fn wait(
        &self,
        id: &str,
        timeout: Duration,
        awaited: Option<JobState>,
    ) -> Result<JobStatus, KitError> {
        let started = Instant::now();
        let mut poll = Duration::from_millis(5);
        let mut last: Option<JobStatus> = None;
        loop {
            let status = match &last {
                Some(s) => self.client.status_in(&s.queue, id).await?,
                None => self.client.status(id).await?,
            };
            if let Some(s) = status {
                match awaited {
                    None if s.state.is_final() => return Ok(s),
                    Some(want) if s.state == want => return Ok(s),
                    Some(want) if s.state.is_final() => {
                        return Err(KitError::JobEnded {
                            awaited: want.to_string(),
                            status: Box::new(s),
                        });
                    }
                    _ => last = Some(s),
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(KitError::JobTimeout {
                    id: id.to_owned(),
                    awaited: awaited.map_or_else(|| "final".to_owned(), |s| s.to_string()),
                    waited,
                    last: last.map(Box::new),
                    workers: self.lock_workers().len(),
                });
            }
            tokio::time::sleep(poll.min(timeout - waited)).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    /// Every dead letter of `queue`, newest first.
    pub async fn dead_letters(&self, queue: &str) -> Result<Vec<DeadJob>, KitError> {
        let dlq = self.client.dead_letters(queue)?;
        let mut all = Vec::new();
        let mut query = DeadLetterQuery {
            limit: 1000,
            ..Default::default()
        };
        loop {
            let page = dlq.list(&query).await?;
            all.extend(page.jobs);
            match page.next {
                Some(next) => query.before = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The newest dead letter of job `id` (in the queue its status names), if it has one.
    pub async fn dead_letter(&self, id: impl AsRef<str>) -> Result<Option<DeadJob>, KitError> {
        let id = id.as_ref();
        let Some(status) = self.client.status(id).await? else {
            return Ok(None);
        };
        let letters = self.dead_letters(&status.queue).await?;
        Ok(letters
            .into_iter()
            .find(|d| d.job_id.as_deref() == Some(id)))
    }

    /// Entries of `queue` delivered to a worker and not acknowledged yet, all priorities:
    /// running jobs, and those a crashed worker left behind until they are taken over.
    pub async fn pending(&self, queue: &str) -> Result<u64, KitError> {
        let mut n = 0;
        for priority in ["high", "normal", "low"] {
            // Key names as the README's data model spells them.
            let stream = format!("{}:{{{queue}}}:{priority}", self.prefix);
            let summary: Result<Value, _> = self.raw.xpending(stream, GROUP, ()).await;
            match summary {
                Ok(Value::Array(parts)) => {
                    n += parts.first().and_then(Value::as_u64).unwrap_or(0);
                }
                Ok(_) => {}
                Err(e) if e.details().starts_with("NOGROUP") => {}
                Err(e) => return Err(redis_error(e).into()),
            }
        }
        Ok(n)
    }

    /// Starts one more worker with the harness' handlers and settings, and returns its
    /// consumer name (`harness-worker-<n>`).
    pub async fn start_worker(&self) -> Result<String, KitError> {
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let worker =
            InProcessWorker::start(self.recipe.clone(), format!("harness-worker-{n}")).await?;
        let name = worker.name().to_owned();
        self.lock_workers().push_back(worker);
        Ok(name)
    }

    /// Kills the oldest running worker as if its process died: its running handlers are
    /// dropped mid-flight, nothing is acknowledged, its heartbeat is not withdrawn. Its
    /// jobs stay pending until their lease expires and a live worker (start one with
    /// [`start_worker`](Self::start_worker)) takes them over, as a new delivery of the
    /// same attempt. Returns the crashed worker's name.
    pub async fn crash_worker(&self) -> Result<String, KitError> {
        let worker = self
            .lock_workers()
            .pop_front()
            .ok_or(KitError::NoWorkerRunning)?;
        let name = worker.name().to_owned();
        worker.crash().await;
        Ok(name)
    }

    /// Stops the oldest running worker gracefully: it fetches nothing more, lets running
    /// jobs finish within the drain timeout, and leaves the rest pending for others.
    /// Returns its name, or the error its run ended with (e.g. the drain timeout passed).
    pub async fn stop_worker(&self) -> Result<String, KitError> {
        let worker = self
            .lock_workers()
            .pop_front()
            .ok_or(KitError::NoWorkerRunning)?;
        let name = worker.name().to_owned();
        worker.stop().await?;
        Ok(name)
    }

    /// The consumer names of the running workers, oldest first.
    pub fn running_workers(&self) -> Vec<String> {
        self.lock_workers()
            .iter()
            .map(|w| w.name().to_owned())
            .collect()
    }

    /// Stops every worker gracefully, removes the harness' keys when the Redis is shared
    /// (`STEVEDORE_TEST_REDIS_URL` or [`HarnessBuilder::redis_url`]), and stops the Redis
    /// the harness started. Returns the first error a worker's run ended with.
    pub async fn shutdown(self) -> Result<(), KitError> {
        let mut first_error = None;
        loop {
            let next = self.lock_workers().pop_front();
            let Some(worker) = next else { break };
            if let Err(e) = worker.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if matches!(self.source, None | Some(RedisSource::Env)) {
            self.remove_keys().await?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes every key under the harness' prefix.
    async fn remove_keys(&self) -> Result<(), KitError> {
        let pattern = format!("{}:*", self.prefix);
        let keys: Vec<fred::types::Key> = if self.raw.is_clustered() {
            self.raw
                .scan_cluster_buffered(pattern, Some(500), None)
                .try_collect()
                .await
        } else {
            self.raw
                .scan_buffered(pattern, Some(500), None)
                .try_collect()
                .await
        }
        .map_err(redis_error)?;
        // One key per command: keys of different queues live in different cluster slots.
        for key in keys {
            let _: i64 = self.raw.del(key).await.map_err(redis_error)?;
        }
        Ok(())
    }

    fn lock_workers(&self) -> MutexGuard<'_, VecDeque<InProcessWorker>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A client library error as the library reports Redis failures.
fn redis_error(e: fred::error::Error) -> stevedore::Error {
    use fred::error::ErrorKind;
    match e.kind() {
        ErrorKind::IO | ErrorKind::Canceled => stevedore::Error::Connection(e.to_string()),
        ErrorKind::Timeout => stevedore::Error::Timeout(e.to_string()),
        _ => stevedore::Error::Redis(e.to_string()),
    }
}
