//! The client: one cheap-to-clone handle for enqueueing jobs and for admin calls.
//!
//! It holds a small pool of multiplexed connections that reconnect on their own; clones
//! share it. Workers take their blocking connections from the same configuration but never
//! from this pool (a blocking read would stall every command queued behind it).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::codec::DEFAULT_PAYLOAD_LIMIT;
use crate::job::{IntoJob, JobId, PreparedJob};
use crate::metrics::Metrics;
use crate::names::validate_name;
use crate::observe::{EnqueuedEvent, Observer, Observers, RefusedEvent};
use crate::redis::keys::{DEFAULT_PREFIX, Keys};
use crate::redis::{self, Connector, JobWrite, Store, Written};
use crate::{Error, Result};

/// How long a job's status is kept after its last change unless set otherwise.
pub const DEFAULT_STATUS_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How long a command may go unanswered before it fails with [`Error::Connection`], unless
/// set otherwise with [`ClientBuilder::command_timeout`].
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Jobs sent per round trip by [`Client::enqueue_bulk`].
const BULK_BATCH: usize = 1000;

/// Longest a producer waiting for room goes without trying again, should a room notice
/// be lost (a reconnect of its subscription).
const ROOM_RECHECK: Duration = Duration::from_secs(1);

/// A handle to one Redis for enqueueing jobs and admin calls. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    payload_limit: usize,
    job_status: Option<Duration>,
    /// Queues this client already recorded in `<prefix>:queues`.
    registered: Mutex<HashSet<String>>,
    /// Partition counts of queues read lately, and the turn of round-robin placement.
    layouts: crate::partition::Layouts,
    /// Told about every job event of this client and of the workers built on it.
    observers: Observers,
    metrics: Option<Metrics>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("prefix", &self.inner.store.keys().prefix())
            .field("payload_limit", &self.inner.payload_limit)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`Client`].
#[derive(Clone)]
#[must_use = "call connect() to get a client"]
pub struct ClientBuilder {
    url: String,
    prefix: String,
    pool_size: usize,
    payload_limit: usize,
    job_status: Option<Duration>,
    command_timeout: Option<Duration>,
    tls: redis::TlsFiles,
    observers: Vec<Arc<dyn Observer>>,
    metrics: Option<Metrics>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &crate::error::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("payload_limit", &self.payload_limit)
            .field("observers", &self.observers.len())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl ClientBuilder {
    /// Prefix of every key (default `stevedore`). Two applications sharing one Redis keep
    /// apart by prefix; allowed characters are those of queue names plus `:`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Connections in the pool (default 2). Each is multiplexed, so a few go a long way.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Largest encoded payload accepted at enqueue and decoded by workers (default 1 MiB).
    pub fn payload_limit(mut self, bytes: usize) -> Self {
        self.payload_limit = bytes;
        self
    }

    /// Job status by id: records are kept for `retention` after a job's last change
    /// (default 24 h; workers may keep succeeded jobs for another time, per queue or job
    /// type). `None` writes no status records: `status` then still finds a job that waits
    /// or runs (read from its entry), and nothing once it is done or if it was delayed.
    pub fn job_status(mut self, retention: Option<Duration>) -> Self {
        self.job_status = retention;
        self
    }

    /// Fails a command of this client and of its workers (enqueue, status, admin calls,
    /// acknowledgements, retries, lease renewals) with [`Error::Connection`] when Redis has
    /// not answered it within `timeout` (default [`DEFAULT_COMMAND_TIMEOUT`], 10 s), so a
    /// worker cut off from Redis logs and counts its errors instead of waiting in silence.
    /// `Duration::ZERO` waits without a deadline (for a reconnect, however long it takes).
    /// Workers' blocking reads have a deadline of their own. A timed-out enqueue may still
    /// have been written: use a unique key to retry it safely.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// Trusts the PEM certificates in `path` (a private CA) besides the system's roots when
    /// connecting to a `rediss://` URL. The URL must use TLS: with `redis://` this is an
    /// [`Error::InvalidConfig`] at [`connect`](Self::connect), as is a file that cannot be
    /// read or holds no certificate. A `rediss://` URL never falls back to plain TCP.
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Presents this PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1) to a
    /// server that asks for client certificates (`tls-auth-clients yes`). Same rules as
    /// [`tls_ca_file`](Self::tls_ca_file).
    pub fn tls_client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Reports every job event of this client (enqueues) and of the workers built on it to
    /// `observer`, after those added before. See [`observe`](crate::observe).
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Counts enqueues in `metrics`, and every job event of the workers built on this
    /// client (see [`Metrics`]).
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Connects. Fails fast when the URL is invalid or the server does not answer; once
    /// connected, lost connections are re-established in the background.
    pub async fn connect(self) -> Result<Client> {
        validate_name("prefix", &self.prefix)?;
        if self.pool_size == 0 {
            return Err(Error::InvalidConfig("pool_size must be at least 1".into()));
        }
        let connector = Connector::new(&self.url, &self.tls)?
            .with_command_timeout(self.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT));
        let store = Store::connect(connector, self.pool_size, &self.prefix).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                store,
                payload_limit: self.payload_limit,
                job_status: self.job_status.filter(|d| !d.is_zero()),
                registered: Mutex::new(HashSet::new()),
                layouts: Default::default(),
                observers: Observers::new(
                    self.metrics
                        .iter()
                        .map(|m| Arc::new(m.clone()) as Arc<dyn Observer>)
                        .chain(self.observers)
                        .collect(),
                ),
                metrics: self.metrics,
            }),
        })
    }
}

impl Client {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) with default settings.
    pub async fn connect(url: &str) -> Result<Client> {
        Client::builder(url).connect().await
    }

    /// Settings beyond the URL: key prefix, pool size, payload limit.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            pool_size: 2,
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
            job_status: Some(DEFAULT_STATUS_RETENTION),
            command_timeout: None,
            tls: redis::TlsFiles::default(),
            observers: Vec::new(),
            metrics: None,
        }
    }

    /// Enqueues one job in one round trip and returns its id; for a duplicate of a unique
    /// job, the id of the job already enqueued (and nothing is written).
    ///
    /// Nothing is written when the job is refused (invalid name, payload too large, or
    /// [`Error::QueueFull`] for a bounded queue without room: see
    /// [`enqueue_wait`](Self::enqueue_wait) to wait for room instead).
    pub async fn enqueue(&self, job: impl IntoJob) -> Result<JobId> {
        self.enqueue_checked(job).await.map(|(id, _)| id)
    }

    /// [`enqueue`](Self::enqueue), also saying whether the job was written (`false`: a
    /// duplicate of a unique job, whose id is returned).
    pub(crate) async fn enqueue_checked(&self, job: impl IntoJob) -> Result<(JobId, bool)> {
        self.send_one(job.prepare()?).await
    }

    async fn send_one(&self, job: PreparedJob) -> Result<(JobId, bool)> {
        self.send(vec![job])
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::Decode("XADD returned no entry id".into())))
    }

    /// Enqueues one job, waiting up to `wait` for room when its queue is bounded and full
    /// (the blocking enqueue of a bounded queue): it tries again each time a worker takes
    /// jobs from the queue (a notice on the queue's room channel, not a poll; every second
    /// at the latest, should a notice be lost), and fails with [`Error::QueueFull`] once
    /// `wait` has passed without room. Into a queue with room, or without a capacity, it
    /// is [`enqueue`](Self::enqueue).
    ///
    /// ```no_run
    /// # async fn run(client: stevedore::Client) -> stevedore::Result<()> {
    /// use std::time::Duration;
    /// use stevedore::RawJob;
    ///
    /// let job = RawJob::new("report.build", "reports", &42)?;
    /// let id = client.enqueue_wait(job, Duration::from_secs(30)).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Waiters are woken together when room is made; those that find none again go back
    /// to waiting, so room is taken in no set order among them.
    pub async fn enqueue_wait(&self, job: impl IntoJob, wait: Duration) -> Result<JobId> {
        self.enqueue_wait_checked(job, wait).await.map(|(id, _)| id)
    }

    /// [`enqueue_wait`](Self::enqueue_wait), also saying whether the job was written
    /// (`false`: a duplicate of a unique job, whose id is returned).
    pub(crate) async fn enqueue_wait_checked(
        &self,
        job: impl IntoJob,
        wait: Duration,
    ) -> Result<(JobId, bool)> {
        let job = job.prepare()?;
        let deadline = tokio::time::Instant::now() + wait;
        let parts = self.partition_names(&job.queue).await?;
        // Listening before the first try: a worker that makes room after a refusal is
        // heard, however soon it comes.
        let mut notices = match self.store().room_notices(&parts).await {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(queue = %job.queue, error = %e, "cannot listen for room; trying every second");
                None
            }
        };
        loop {
            match self.send_one(job.clone()).await {
                Err(Error::QueueFull { queue, capacity }) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(Error::QueueFull { queue, capacity });
                    }
                    let recheck = deadline.min(now + ROOM_RECHECK);
                    match notices.as_mut() {
                        Some(rx) => {
                            tokio::select! {
                                r = rx.changed() => if r.is_err() { notices = None },
                                _ = tokio::time::sleep_until(recheck) => {}
                            }
                        }
                        None => tokio::time::sleep_until(recheck).await,
                    }
                }
                other => return other,
            }
        }
    }

    /// Enqueues many jobs, one round trip per thousand, and returns their ids in order.
    ///
    /// Every job is checked before the first is sent, so an invalid job means nothing was
    /// written. A connection lost midway can leave the batches before it enqueued. Into a
    /// bounded queue, the jobs that fit are written and the call fails with
    /// [`Error::QueueFull`] if any did not: use
    /// [`enqueue_bulk_partial`](Self::enqueue_bulk_partial) to learn which.
    pub async fn enqueue_bulk<J: IntoJob>(
        &self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<JobId>> {
        self.enqueue_bulk_partial(jobs)
            .await?
            .into_iter()
            .collect::<Result<Vec<_>>>()
    }

    /// Enqueues many jobs as [`enqueue_bulk`](Self::enqueue_bulk) does, and says what
    /// became of each, in order: its id, or [`Error::QueueFull`] for a job its bounded
    /// queue had no room for (nothing of it was written; the others were). The outer error
    /// is the whole call's: an invalid job (nothing written) or a lost connection.
    ///
    /// ```no_run
    /// # async fn run(client: stevedore::Client) -> stevedore::Result<()> {
    /// use stevedore::{Error, RawJob};
    ///
    /// let jobs = (0..100).map(|i| RawJob::new("thumb.make", "images", &i));
    /// let jobs = jobs.collect::<stevedore::Result<Vec<_>>>()?;
    /// for (i, outcome) in client.enqueue_bulk_partial(jobs).await?.iter().enumerate() {
    ///     if let Err(Error::QueueFull { .. }) = outcome {
    ///         println!("job {i} refused: the queue is full");
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue_bulk_partial<J: IntoJob>(
        &self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<Result<JobId>>> {
        let prepared = jobs
            .into_iter()
            .map(IntoJob::prepare)
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(prepared.len());
        let mut rest = prepared.into_iter().peekable();
        while rest.peek().is_some() {
            let batch: Vec<PreparedJob> = rest.by_ref().take(BULK_BATCH).collect();
            out.extend(
                self.send(batch)
                    .await?
                    .into_iter()
                    .map(|r| r.map(|(id, _)| id)),
            );
        }
        Ok(out)
    }

    /// Writes `jobs` and says, per job, its id and whether it was written (`false`: a
    /// duplicate of a unique job), or [`Error::QueueFull`].
    async fn send(&self, jobs: Vec<PreparedJob>) -> Result<Vec<Result<(JobId, bool)>>> {
        let limit = self.inner.payload_limit;
        if let Some(big) = jobs.iter().find(|j| j.envelope.payload.len() > limit) {
            return Err(Error::PayloadTooLarge {
                size: big.envelope.payload.len(),
                limit,
            });
        }
        // A partitioned queue's job goes to one of its partitions (`partition`).
        let mut jobs = jobs;
        // The distinct queues only: a bulk batch names one queue a thousand times.
        // With, per job, the index of the queue it named (for a refusal's error).
        let mut distinct: Vec<String> = Vec::new();
        let mut named: Vec<usize> = Vec::with_capacity(jobs.len());
        for j in &jobs {
            match distinct.iter().position(|q| *q == j.queue) {
                Some(at) => named.push(at),
                None => {
                    named.push(distinct.len());
                    distinct.push(j.queue.clone());
                }
            }
        }
        let queues: Vec<&str> = distinct.iter().map(String::as_str).collect();
        let layouts = self.layouts_of(&queues).await?;
        for j in &mut jobs {
            if let Some(layout) = layouts.get(&j.queue)
                && layout.names.len() > 1
            {
                j.queue = layout
                    .place(j.partition_key.as_deref(), &self.layouts().turn)
                    .to_string();
            }
        }
        let new_queues = self.unregistered(jobs.iter().map(|j| j.queue.as_str()));
        let events: Vec<(String, String, crate::Priority, bool)> =
            if self.inner.observers.is_empty() {
                Vec::new()
            } else {
                jobs.iter()
                    .map(|j| {
                        (
                            j.envelope.job_type.clone(),
                            j.queue.clone(),
                            j.priority,
                            j.schedule.is_some(),
                        )
                    })
                    .collect()
            };
        let writes = jobs
            .into_iter()
            .map(|j| JobWrite {
                when: j.when(),
                unique: j
                    .unique
                    .map(|(k, ttl)| (k, (ttl.as_millis() as u64).max(1))),
                priority: j.priority,
                envelope: j.envelope,
                queue: j.queue,
            })
            .collect();
        match self
            .inner
            .store
            .enqueue_batch(new_queues.clone(), writes, self.status_retention_ms())
            .await
        {
            Ok(written) => {
                for ((job_type, queue, priority, scheduled), w) in events.iter().zip(&written) {
                    match w {
                        // Duplicates of unique jobs come back with the existing job's id:
                        // not new.
                        Written::New(id) => {
                            let e = EnqueuedEvent {
                                job_id: id,
                                job_type,
                                queue,
                                priority: *priority,
                                scheduled: *scheduled,
                            };
                            self.inner.observers.each(|o| o.enqueued(&e));
                        }
                        Written::Full(capacity) => {
                            let e = RefusedEvent {
                                job_type,
                                queue,
                                priority: *priority,
                                capacity: *capacity,
                            };
                            self.inner.observers.each(|o| o.refused(&e));
                        }
                        Written::Duplicate(_) => {}
                    }
                }
                Ok(written
                    .into_iter()
                    .zip(named)
                    .map(|(w, at)| match w {
                        Written::New(id) => Ok((JobId::from(id), true)),
                        Written::Duplicate(id) => Ok((JobId::from(id), false)),
                        Written::Full(capacity) => Err(Error::QueueFull {
                            queue: distinct.get(at).cloned().unwrap_or_default(),
                            capacity,
                        }),
                    })
                    .collect())
            }
            Err(e) => {
                self.forget(&new_queues);
                Err(e)
            }
        }
    }

    /// Status retention in ms; 0 when job status is off.
    pub(crate) fn status_retention_ms(&self) -> u64 {
        self.inner
            .job_status
            .map_or(0, |d| (d.as_millis() as u64).max(1))
    }

    /// The queues among `queues` this client has not recorded yet, marked as recorded.
    fn unregistered<'a>(&self, queues: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut known = self
            .inner
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut new = Vec::new();
        for q in queues {
            if !known.contains(q) {
                known.insert(q.to_string());
                new.push(q.to_string());
            }
        }
        new
    }

    fn forget(&self, queues: &[String]) {
        let mut known = self
            .inner
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for q in queues {
            known.remove(q);
        }
    }

    pub(crate) fn observers(&self) -> &Observers {
        &self.inner.observers
    }

    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.inner.metrics.as_ref()
    }

    /// The storage layer: every Redis operation goes through it.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn layouts(&self) -> &crate::partition::Layouts {
        &self.inner.layouts
    }

    pub(crate) fn keys(&self) -> &Keys {
        self.inner.store.keys()
    }

    pub(crate) fn payload_limit(&self) -> usize {
        self.inner.payload_limit
    }
}
