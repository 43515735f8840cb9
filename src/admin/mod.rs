//! Operating queues: what the HTTP API, the web dashboard and the `stevedore` CLI all use,
//! so the three never disagree.
//!
//! [`Admin`] (from [`Client::admin`]) lists queues with their counts, pause state and
//! lifetime totals, lists live workers, enqueues jobs given as JSON, and pauses and resumes
//! queues. Job status is [`Client::status`], dead letters are [`Client::dead_letters`].
//! With the cargo feature `admin`, `stevedore::admin::router` serves all of it over
//! HTTP along with the web dashboard.
//!
//! ```no_run
//! # async fn run() -> stevedore::Result<()> {
//! let client = stevedore::Client::connect("redis://127.0.0.1:6379").await?;
//! let admin = client.admin();
//! for q in admin.queues().await? {
//!     println!("{}: {} ready, {} dead, paused: {}", q.name, q.stats.ready.total(), q.stats.dead, q.paused);
//! }
//! admin.pause("emails").await?;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "admin")]
mod api;
#[cfg(feature = "admin")]
mod errors;
mod flow;
#[cfg(feature = "admin")]
mod limits;
#[cfg(feature = "admin")]
mod openapi;
#[cfg(feature = "admin")]
mod security;

#[cfg(feature = "admin")]
pub use api::{router, serve};
pub use flow::{LimitChange, LimitInfo, LimitOnQueue};
#[cfg(feature = "admin")]
pub use limits::{
    DEFAULT_BODY_LIMIT, DEFAULT_REQUEST_TIMEOUT, HEADER_READ_TIMEOUT, LIST_PAGE_BYTES,
    LIST_PAYLOAD_LIMIT, REDIS_DEADLINE,
};
#[cfg(feature = "admin")]
pub use security::AdminConfig;

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::dlq::{DeadLetterFilter, DeadLetterQuery};
use crate::names::validate_queue_ref;
use crate::redis::LIVE_WORKER_WINDOW_MS;
use crate::status::QueueStats;
use crate::worker::control::TOTALS;
use crate::{Client, Error, JobId, Priority, RawJob, Result};

impl Client {
    /// Queue and worker administration: see [`Admin`].
    pub fn admin(&self) -> Admin {
        Admin {
            client: self.clone(),
        }
    }
}

/// Queue and worker administration on one client's Redis and prefix. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

/// Lifetime counts of one queue, kept in Redis by its workers (flushed about once a
/// second, so a worker that crashes loses at most its last second of counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Totals {
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (error, panic, timeout).
    pub failed: u64,
    /// Failed attempts scheduled to run again.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Entries the janitor took back from workers that were gone.
    pub reclaimed: u64,
    /// Jobs refused at enqueue because the queue was full (counted by the enqueue itself,
    /// at once).
    pub refused: u64,
    /// Jobs cancelled (waiting ones by the cancel itself, running ones when their worker
    /// stopped them): counted at once, like those below.
    pub cancelled: u64,
    /// Jobs deleted one by one.
    pub deleted: u64,
    /// Waiting jobs purged.
    pub purged: u64,
    /// Scheduled or retrying jobs made due now.
    pub retried_now: u64,
}

impl Totals {
    fn from_hash(h: &HashMap<String, u64>) -> Self {
        let get = |k: &str| h.get(k).copied().unwrap_or(0);
        Totals {
            succeeded: get(TOTALS[0]),
            failed: get(TOTALS[1]),
            retried: get(TOTALS[2]),
            dead: get(TOTALS[3]),
            reclaimed: get(TOTALS[4]),
            refused: get("refused"),
            cancelled: get("cancelled"),
            deleted: get("deleted"),
            purged: get("purged"),
            retried_now: get("retried_now"),
        }
    }

    fn add(&mut self, o: &Totals) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.retried += o.retried;
        self.dead += o.dead;
        self.reclaimed += o.reclaimed;
        self.refused += o.refused;
        self.cancelled += o.cancelled;
        self.deleted += o.deleted;
        self.purged += o.purged;
        self.retried_now += o.retried_now;
    }
}

/// One queue, as [`Admin::queues`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// Whether workers stop fetching from it (enqueueing still works).
    pub paused: bool,
    /// Where its jobs are now.
    pub stats: QueueStats,
    /// Lifetime counts.
    pub totals: Totals,
    /// Live workers consuming it.
    pub workers: u64,
}

/// One live worker, as [`Admin::workers`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its consumer name.
    pub id: String,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// The job types it has handlers for, sorted.
    pub job_types: Vec<String>,
    /// Handlers it runs at once at most.
    pub concurrency: u64,
    /// Entries it holds now (running, or fetched and about to run).
    pub in_flight: u64,
    /// When it started (Unix ms).
    pub started_at_ms: u64,
    /// Its last heartbeat (Unix ms, Redis' clock).
    pub last_heartbeat_ms: u64,
    /// Its process id.
    pub pid: u64,
}

/// Everything at a glance, as [`Admin::stats`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Overview {
    /// Known queues.
    pub queues: u64,
    /// Paused queues.
    pub paused: u64,
    /// Ready jobs over all queues.
    pub ready: u64,
    /// Pending (delivered, unacknowledged) entries over all queues.
    pub pending: u64,
    /// Scheduled jobs over all queues.
    pub scheduled: u64,
    /// Dead letters over all queues.
    pub dead: u64,
    /// Live workers.
    pub workers: u64,
    /// Entries the live workers hold now.
    pub in_flight: u64,
    /// Summed concurrency of the live workers.
    pub concurrency: u64,
    /// Lifetime counts over all queues.
    pub totals: Totals,
}

/// A job given as JSON, for [`Admin::enqueue_json`]: what `POST /api/v1/jobs` and
/// `stevedore enqueue` take.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JsonJob {
    /// The job type (the handler's name).
    #[serde(rename = "type")]
    pub job_type: String,
    /// The queue (default `default`).
    #[serde(default = "default_queue")]
    pub queue: String,
    /// The payload, converted to the MessagePack the handler decodes.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// `high`, `normal` or `low` (default `normal`).
    #[serde(default)]
    pub priority: Option<String>,
    /// Run no sooner than this long from now: `"30s"`, `"5m"`, `"1h 30m"`.
    #[serde(default)]
    pub delay: Option<String>,
    /// Attempts before the DLQ (default: the handler's `max_attempts`, 5 when it sets none).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// A unique key: a second job with the same key within `unique_ttl` is not enqueued.
    #[serde(default)]
    pub unique: Option<String>,
    /// How long the unique key holds (default 1 h).
    #[serde(default)]
    pub unique_ttl: Option<String>,
    /// A W3C trace context the job's span continues.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Places the job by this key in a partitioned queue (every job of a key in one
    /// partition, in order); see [`Job::partition_key`](crate::Job::partition_key).
    #[serde(default)]
    pub partition_key: Option<String>,
    /// Into a full bounded queue, wait up to this long for room (`"2s"`) instead of
    /// failing at once with [`Error::QueueFull`].
    #[serde(default)]
    pub wait_for_room: Option<String>,
    /// Job ids this job waits for (README, "Chains, dependencies, batches"): it runs once
    /// they all ended, as `on_failure` says for one that did not succeed.
    #[serde(default)]
    pub after: Option<Vec<String>>,
    /// With `after`: `cancel` (default), `run` or `dead_letter`.
    #[serde(default)]
    pub on_failure: Option<String>,
}

fn default_queue() -> String {
    "default".to_string()
}

impl JsonJob {
    /// A job of `job_type` on `queue` with `payload` and default options.
    pub fn new(job_type: &str, queue: &str, payload: serde_json::Value) -> Self {
        JsonJob {
            job_type: job_type.to_string(),
            queue: queue.to_string(),
            payload,
            priority: None,
            delay: None,
            max_attempts: None,
            unique: None,
            unique_ttl: None,
            traceparent: None,
            partition_key: None,
            wait_for_room: None,
            after: None,
            on_failure: None,
        }
    }

    /// The dependencies `after` and `on_failure` name (none when `after` is absent or
    /// empty). Fails with [`Error::InvalidInput`] for an unknown policy, or `on_failure`
    /// without `after`.
    pub fn dependencies(&self) -> Result<Vec<crate::flow::Dependency>> {
        use crate::flow::{Dependency, OnParentFailure};
        let policy = match self.on_failure.as_deref() {
            None | Some("cancel") => OnParentFailure::Cancel,
            Some("run") => OnParentFailure::Run,
            Some("dead_letter") => OnParentFailure::DeadLetter,
            Some(other) => {
                return Err(Error::InvalidInput(format!(
                    "on_failure {}: use cancel, run or dead_letter",
                    crate::error::excerpt(other)
                )));
            }
        };
        let after = self.after.clone().unwrap_or_default();
        if after.is_empty() && self.on_failure.is_some() {
            return Err(Error::InvalidInput("on_failure needs after".into()));
        }
        Ok(after
            .iter()
            .map(|id| Dependency::on(id).on_failure(policy))
            .collect())
    }

    /// How long to wait for room in a full bounded queue (`wait_for_room`), if at all.
    pub fn room_wait(&self) -> Result<Option<Duration>> {
        self.wait_for_room
            .as_deref()
            .map(|w| parse_duration("wait_for_room", w))
            .transpose()
    }

    /// Checks the options and builds the job. Fails with [`Error::InvalidInput`] naming the
    /// field, or [`Error::InvalidName`].
    pub fn into_raw(self) -> Result<RawJob> {
        let mut job = RawJob::new(&self.job_type, &self.queue, &self.payload)?;
        if let Some(p) = &self.priority {
            let p: Priority = p.parse().map_err(|_| {
                Error::InvalidInput(format!(
                    "priority {}: use high, normal or low",
                    crate::error::excerpt(p)
                ))
            })?;
            job = job.priority(p);
        }
        if let Some(d) = &self.delay {
            job = job.delay(parse_duration("delay", d)?);
        }
        if let Some(n) = self.max_attempts {
            // 0 is refused by the job itself when it is prepared.
            job = job.max_attempts(n);
        }
        if let Some(key) = self.unique {
            let ttl = match &self.unique_ttl {
                Some(t) => parse_duration("unique_ttl", t)?,
                None => Duration::from_secs(3600),
            };
            job = job.unique(key, ttl);
        } else if self.unique_ttl.is_some() {
            return Err(Error::InvalidInput("unique_ttl needs unique".into()));
        }
        if let Some(tp) = self.traceparent {
            job = job.traceparent(tp);
        }
        if let Some(key) = self.partition_key {
            job = job.partition_key(key);
        }
        Ok(job)
    }
}

fn parse_duration(field: &str, s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        Error::InvalidInput(format!(
            "{field} {}: {e} (e.g. \"30s\", \"5m\")",
            crate::error::excerpt(s)
        ))
    })?;
    crate::clock::check_duration(field, d)?;
    Ok(d)
}

/// What [`Admin::enqueue_json`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Enqueued {
    /// The job's id (for a duplicate, the id of the job already enqueued).
    pub id: JobId,
    /// True when a job with the same unique key existed and nothing was written.
    pub duplicate: bool,
}

impl Admin {
    /// The client this admin handle uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The known queues' names (every queue a job was enqueued to, or a worker consumed),
    /// sorted. A partitioned queue is listed once, by its own name; a partition outside its
    /// queue's current layout (left from before a change of count) is listed by its own.
    pub async fn queue_names(&self) -> Result<Vec<String>> {
        let store = self.client.store();
        let (known, partitioned) =
            tokio::try_join!(store.known_queues(), store.all_partition_counts())?;
        let in_layout: std::collections::HashSet<String> = partitioned
            .iter()
            .flat_map(|(q, n)| crate::redis::partition_names(q, *n))
            .collect();
        let mut names: Vec<String> = known
            .into_iter()
            .filter(|q| !in_layout.contains(q))
            .chain(partitioned.into_keys())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Every known queue with its counts, pause state, lifetime totals and live workers.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        Ok(self.queues_and_workers().await?.0)
    }

    /// Every known queue (their calls sent together) and the live workers.
    async fn queues_and_workers(&self) -> Result<(Vec<QueueInfo>, Vec<WorkerInfo>)> {
        let (names, live, paused) =
            tokio::try_join!(self.queue_names(), self.live(), self.paused_set())?;
        let queues =
            futures::future::try_join_all(names.iter().map(|n| self.info(n, &live, &paused)))
                .await?;
        Ok((queues, live))
    }

    /// One queue; [`Error::UnknownQueue`] when no job was ever enqueued to it and no worker
    /// consumed it.
    pub async fn queue(&self, name: &str) -> Result<QueueInfo> {
        validate_queue_ref(name)?;
        let ((), live, paused) =
            tokio::try_join!(self.ensure_known(name), self.live(), self.paused_set())?;
        self.info(name, &live, &paused).await
    }

    async fn info(&self, name: &str, live: &[WorkerInfo], paused: &[String]) -> Result<QueueInfo> {
        let stats = self.client.queue_stats(name).await?;
        // A partitioned queue's totals are its partitions' sums.
        let parts = if stats.partitions > 1 {
            crate::redis::partition_names(name, stats.partitions)
        } else {
            vec![name.to_string()]
        };
        let hashes =
            futures::future::try_join_all(parts.iter().map(|q| self.client.store().totals(q)))
                .await?;
        let mut totals = Totals::default();
        for h in &hashes {
            totals.add(&Totals::from_hash(h));
        }
        let of = crate::names::queue_of(name);
        Ok(QueueInfo {
            name: name.to_string(),
            paused: paused.iter().any(|p| p == name || p == of),
            stats,
            totals,
            workers: live
                .iter()
                .filter(|w| w.queues.iter().any(|q| parts.contains(q)))
                .count() as u64,
        })
    }

    /// The live workers (a heartbeat in the last 15 s), sorted by id.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.live().await
    }

    async fn live(&self) -> Result<Vec<WorkerInfo>> {
        let raw = self
            .client
            .store()
            .live_workers(LIVE_WORKER_WINDOW_MS)
            .await?;
        let mut out: Vec<WorkerInfo> = raw
            .into_iter()
            .map(|(id, d)| {
                let n = |k: &str| d.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                let list = |k: &str| -> Vec<String> {
                    d.get(k)
                        .map(|q| {
                            q.split(',')
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                WorkerInfo {
                    queues: list("queues"),
                    job_types: list("types"),
                    concurrency: n("concurrency"),
                    in_flight: n("in_flight"),
                    started_at_ms: n("started_at"),
                    last_heartbeat_ms: n("last_heartbeat"),
                    pid: n("pid"),
                    id,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Totals over every queue and worker.
    pub async fn stats(&self) -> Result<Overview> {
        let (queues, workers) = self.queues_and_workers().await?;
        let mut o = Overview {
            queues: queues.len() as u64,
            paused: queues.iter().filter(|q| q.paused).count() as u64,
            ready: 0,
            pending: 0,
            scheduled: 0,
            dead: 0,
            workers: workers.len() as u64,
            in_flight: workers.iter().map(|w| w.in_flight).sum(),
            concurrency: workers.iter().map(|w| w.concurrency).sum(),
            totals: Totals::default(),
        };
        for q in &queues {
            o.ready += q.stats.ready.total();
            o.pending += q.stats.pending.total();
            o.scheduled += q.stats.scheduled;
            o.dead += q.stats.dead;
            o.totals.add(&q.totals);
        }
        Ok(o)
    }

    /// Pauses `queue`: workers stop fetching from it within about three seconds (jobs
    /// already running finish); enqueueing still works. Survives restarts of workers and of
    /// Redis (with persistence). Returns false when it was already paused.
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        validate_queue_ref(queue)?;
        self.ensure_known(queue).await?;
        self.client.store().pause(queue).await
    }

    /// Resumes a paused `queue`. Returns false when it was not paused.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        validate_queue_ref(queue)?;
        self.ensure_known(queue).await?;
        self.client.store().resume(queue).await
    }

    /// Whether `queue` is paused.
    pub async fn is_paused(&self, queue: &str) -> Result<bool> {
        validate_queue_ref(queue)?;
        self.client.store().is_paused(queue).await
    }

    async fn paused_set(&self) -> Result<Vec<String>> {
        self.client.store().paused_queues().await
    }

    /// Whether `queue` is known: a job was enqueued to it or a worker consumed it.
    pub async fn queue_exists(&self, queue: &str) -> Result<bool> {
        validate_queue_ref(queue)?;
        if self.client.store().is_known_queue(queue).await? {
            return Ok(true);
        }
        // A partitioned queue is known by its partitions.
        Ok(!crate::names::is_partition(queue) && self.client.partitions(queue).await? > 1)
    }

    async fn ensure_known(&self, queue: &str) -> Result<()> {
        if self.queue_exists(queue).await? {
            Ok(())
        } else {
            Err(Error::UnknownQueue(queue.to_string()))
        }
    }

    /// How many dead letters of `queue` match `filter` (what a replay or purge with it
    /// would touch): one `XLEN` for an empty filter, else a scan of the matching range.
    pub async fn count_dead(&self, queue: &str, filter: &DeadLetterFilter) -> Result<u64> {
        let dlq = self.client.dead_letters(queue)?;
        if filter.is_empty() {
            return dlq.count().await;
        }
        let mut query = DeadLetterQuery {
            filter: filter.clone(),
            limit: 1000,
            before: None,
        };
        let mut n = 0u64;
        loop {
            let page = dlq.list(&query).await?;
            n += page.jobs.len() as u64;
            match page.next {
                Some(next) => query.before = Some(next),
                None => return Ok(n),
            }
        }
    }

    /// Enqueues a job given as JSON; its payload becomes the MessagePack the handler
    /// decodes, so a handler taking `struct SendEmail { to: String }` accepts
    /// `{"to": "ada@example.com"}`.
    pub async fn enqueue_json(&self, job: JsonJob) -> Result<Enqueued> {
        let deps = job.dependencies()?;
        if !deps.is_empty() {
            if job.wait_for_room.is_some() {
                return Err(Error::InvalidInput(
                    "wait_for_room does not apply to a job with after: it waits for its jobs, not for room".into(),
                ));
            }
            let id = self.client.enqueue_after(job.into_raw()?, deps).await?;
            return Ok(Enqueued {
                id,
                duplicate: false,
            });
        }
        match job.room_wait()? {
            None => self.enqueue_raw(job.into_raw()?).await,
            Some(wait) => self.enqueue_raw_waiting(job.into_raw()?, wait).await,
        }
    }

    /// [`enqueue_raw`](Self::enqueue_raw), waiting up to `wait` for room when the job's
    /// bounded queue is full ([`Client::enqueue_wait`]).
    pub async fn enqueue_raw_waiting(&self, job: RawJob, wait: Duration) -> Result<Enqueued> {
        let (id, written) = self.client.enqueue_wait_checked(job, wait).await?;
        Ok(Enqueued {
            id,
            duplicate: !written,
        })
    }

    /// Enqueues `job` and says whether it was a duplicate of a unique job already there
    /// (then the id is that job's).
    pub async fn enqueue_raw(&self, job: RawJob) -> Result<Enqueued> {
        let (id, written) = self.client.enqueue_checked(job).await?;
        Ok(Enqueued {
            id,
            duplicate: !written,
        })
    }
}
