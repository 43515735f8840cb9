//! Job status by id: where a job is in its life, kept for a while after it ends.
//!
//! A job pays for its status only where Redis does not hold it already
//! (docs/architecture.md, "Data model"). A job enqueued to run now has an id that names its
//! stream entry: while it waits its status is read from the entry (`queued`), while it runs
//! from the consumer group's pending list (`running`), and once it succeeds from one field
//! of its queue's done bucket, kept for the retention. A job that is delayed, retried,
//! replayed or dead has a hash `<prefix>:{<queue>}:job:<id>` written in the same scripts as
//! its moves (`scheduled`, `queued`, `running`, `retrying` with the error and next due
//! time, `succeeded` with the handler's result, `dead` with the reason), expiring after
//! the client's retention (24 h by default) counted from the last change.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::names::validate_job_id;
use crate::redis::Found;
use crate::{Client, Error, Result};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// In a ready stream, waiting for a worker.
    Queued,
    /// Waiting for its run-at time.
    Scheduled,
    /// An attempt is running.
    Running,
    /// An attempt failed; the next one waits for its backoff.
    Retrying,
    /// Finished successfully.
    Succeeded,
    /// In the dead-letter stream.
    Dead,
    /// Waiting for the jobs it depends on (README, "Chains, dependencies, batches").
    Blocked,
    /// Running, and an operator asked to cancel it: its worker is stopping it.
    Cancelling,
    /// Cancelled by an operator: it never ran, or was stopped (`cancelled_by`, `reason`).
    Cancelled,
}

impl JobState {
    /// The name stored in Redis.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Blocked => "blocked",
            JobState::Cancelling => "cancelling",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True for states a job never leaves: succeeded, dead and cancelled (a dead job can
    /// still be replayed, which starts it over).
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => JobState::Queued,
            "scheduled" => JobState::Scheduled,
            "running" => JobState::Running,
            "retrying" => JobState::Retrying,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            "blocked" => JobState::Blocked,
            "cancelling" => JobState::Cancelling,
            "cancelled" => JobState::Cancelled,
            other => return Err(Error::Decode(format!("unknown job state {other:?}"))),
        })
    }
}

/// A job's status.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// Where it is.
    pub state: JobState,
    /// Its job type.
    pub job_type: String,
    /// Its queue.
    pub queue: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts it gets. `0` while it waits for its first attempt when the enqueuer left it
    /// to the handler (a raw job, the CLI, the HTTP API without `max_attempts`): the worker
    /// that starts it writes the handler's setting.
    pub max_attempts: u32,
    /// When it was enqueued.
    pub enqueued_at: Option<SystemTime>,
    /// When its latest attempt started.
    pub started_at: Option<SystemTime>,
    /// When it succeeded or died.
    pub finished_at: Option<SystemTime>,
    /// When it is due next (scheduled or retrying).
    pub next_at: Option<SystemTime>,
    /// The last error, if an attempt failed.
    pub error: Option<String>,
    /// Why it died (`failed`, `poison`, `timeout`, `unknown_type`, `bad_entry`), or, for a
    /// cancelled (or cancelling) job, the reason its canceller gave.
    pub reason: Option<String>,
    /// Who cancelled it (cancelled or cancelling), as the canceller said; empty when not
    /// said.
    pub cancelled_by: Option<String>,
    /// What the handler stored with `JobContext::set_result`, as JSON.
    pub result: Option<String>,
    /// What a scheduled job waits for besides its time: the rate limit that had no token
    /// for it (`rate limit of job type "email.send" (50/1s)`).
    pub waiting_for: Option<String>,
}

/// Unix milliseconds of `t`, for JSON.
pub(crate) fn unix_ms(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// As JSON (the shape `GET /api/v1/jobs/{id}` answers with): times become Unix ms fields
/// (`enqueued_at_ms`, ...), the type is `type`.
impl serde::Serialize for JobStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("JobStatus", 15)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("state", self.state.as_str())?;
        st.serialize_field("type", &self.job_type)?;
        st.serialize_field("queue", &self.queue)?;
        st.serialize_field("attempts", &self.attempts)?;
        st.serialize_field("max_attempts", &self.max_attempts)?;
        st.serialize_field("enqueued_at_ms", &unix_ms(self.enqueued_at))?;
        st.serialize_field("started_at_ms", &unix_ms(self.started_at))?;
        st.serialize_field("finished_at_ms", &unix_ms(self.finished_at))?;
        st.serialize_field("next_at_ms", &unix_ms(self.next_at))?;
        st.serialize_field("error", &self.error)?;
        st.serialize_field("reason", &self.reason)?;
        st.serialize_field("cancelled_by", &self.cancelled_by)?;
        st.serialize_field("result", &self.result)?;
        st.serialize_field("waiting_for", &self.waiting_for)?;
        st.end()
    }
}

impl JobStatus {
    fn from_hash(id: &str, h: HashMap<String, String>) -> Result<JobStatus> {
        let time = |k: &str| {
            h.get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
        };
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        let state = h
            .get("state")
            .ok_or_else(|| Error::Decode(format!("status of job {id} has no state")))?
            .parse()?;
        Ok(JobStatus {
            id: id.to_string(),
            state,
            job_type: h.get("type").cloned().unwrap_or_default(),
            queue: h.get("queue").cloned().unwrap_or_default(),
            attempts: num("attempts"),
            max_attempts: num("max_attempts"),
            enqueued_at: time("enqueued_at"),
            started_at: time("started_at"),
            finished_at: time("finished_at"),
            next_at: time("next_at"),
            error: h.get("error").cloned(),
            reason: h.get("reason").cloned(),
            cancelled_by: h.get("cancelled_by").cloned(),
            result: h.get("result").cloned(),
            waiting_for: h.get("waiting_for").cloned(),
        })
    }

    /// The handler's result decoded into `T`, if it stored one.
    pub fn result_as<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T>> {
        self.result
            .as_deref()
            .map(|r| serde_json::from_str(r).map_err(|e| Error::Decode(e.to_string())))
    }
}

impl JobStatus {
    /// The status of job `id` of `queue` from what Redis holds about it.
    fn from_found(id: &str, queue: &str, found: Found) -> Result<Option<JobStatus>> {
        let at = |ms: u64| Some(UNIX_EPOCH + Duration::from_millis(ms));
        // A job whose id names its entry was enqueued when Redis gave the entry its id.
        let entry_ms = crate::names::locator_ms(id);
        let blank = |state| JobStatus {
            id: id.to_string(),
            state,
            job_type: String::new(),
            queue: queue.to_string(),
            attempts: 0,
            max_attempts: 0,
            enqueued_at: entry_ms.and_then(at),
            started_at: None,
            finished_at: None,
            next_at: None,
            error: None,
            reason: None,
            cancelled_by: None,
            result: None,
            waiting_for: None,
        };
        Ok(match found {
            Found::Nothing => None,
            Found::Record(h) => {
                let mut s = JobStatus::from_hash(id, h)?;
                if s.queue.is_empty() {
                    s.queue = queue.to_string();
                }
                Some(s)
            }
            Found::Entry {
                fields,
                running,
                cancel,
            } => {
                let text = |name: &str| {
                    fields
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let num = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
                let attempt = num("attempt").unwrap_or(1) as u32;
                let mut s = blank(if running.is_some() {
                    JobState::Running
                } else {
                    JobState::Queued
                });
                s.job_type = text("type").unwrap_or_default();
                // Attempts started so far: the entry's attempt once it runs.
                s.attempts = if running.is_some() {
                    attempt
                } else {
                    attempt.saturating_sub(1)
                };
                s.max_attempts = num("max_attempts").unwrap_or(0) as u32;
                s.enqueued_at = num("enqueued_at").and_then(at).or(s.enqueued_at);
                if let (Some((who, why)), Some(_)) = (cancel, &running) {
                    s.state = JobState::Cancelling;
                    s.cancelled_by = Some(who);
                    s.reason = Some(why);
                }
                Some(s)
            }
            Found::Done(value) => {
                // `<finished ms> <attempt> <max attempts> <type>[ <result>]`.
                let mut parts = value.splitn(5, ' ');
                let mut num = || parts.next().and_then(|v| v.parse::<u64>().ok());
                let (finished, attempt, max_attempts) = (num(), num(), num());
                let mut s = blank(JobState::Succeeded);
                s.job_type = parts.next().unwrap_or_default().to_string();
                s.result = parts.next().map(str::to_string);
                s.attempts = attempt.unwrap_or(1) as u32;
                s.max_attempts = max_attempts.unwrap_or(0) as u32;
                s.finished_at = finished.and_then(at);
                Some(s)
            }
        })
    }
}

impl Client {
    /// The status of job `id` on `queue` (one round trip), or `None` when it is unknown:
    /// never enqueued here, or finished longer ago than its retention (or with status off).
    /// An id that is no job id at all is unknown too, never an error.
    pub async fn status_in(&self, queue: &str, id: &str) -> Result<Option<JobStatus>> {
        crate::names::validate_queue_ref(queue)?;
        if validate_job_id(id).is_err() {
            return Ok(None);
        }
        let found = self.store().job_status(queue, id).await?;
        JobStatus::from_found(id, queue, found)
    }

    /// The status of job `id`: one round trip for the id of a job enqueued to run now (it
    /// names its queue), else looked up in every known queue (two round trips).
    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>> {
        if validate_job_id(id).is_err() {
            return Ok(None);
        }
        if let Some((queue, _, _)) = crate::names::parse_locator(id) {
            return self.status_in(queue, id).await;
        }
        let queues = self.store().known_queues().await?;
        match self.store().find_job_status(&queues, id).await? {
            Some((queue, found)) => JobStatus::from_found(id, &queue, found),
            None => Ok(None),
        }
    }

    /// Waits until job `id` succeeds or dies, or `timeout` passes, and returns its last
    /// known status (`None` if it is unknown).
    pub async fn wait_for(&self, id: &str, timeout: Duration) -> Result<Option<JobStatus>> {
        let deadline = Instant::now() + timeout;
        let mut poll = Duration::from_millis(10);
        let mut queue: Option<String> = None;
        loop {
            let status = match &queue {
                Some(q) => self.status_in(q, id).await?,
                None => self.status(id).await?,
            };
            if let Some(s) = &status {
                queue = Some(s.queue.clone());
                if s.state.is_final() {
                    return Ok(status);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(status);
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }
}

/// Counts by priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ByPriority {
    /// In the `high` stream.
    pub high: u64,
    /// In the `normal` stream.
    pub normal: u64,
    /// In the `low` stream.
    pub low: u64,
}

impl ByPriority {
    /// The sum over the three priorities.
    pub fn total(&self) -> u64 {
        self.high + self.normal + self.low
    }

    /// The count for `priority`.
    pub fn get(&self, priority: crate::Priority) -> u64 {
        match priority {
            crate::Priority::High => self.high,
            crate::Priority::Normal => self.normal,
            crate::Priority::Low => self.low,
        }
    }

    fn from_array(a: [u64; 3]) -> Self {
        ByPriority {
            high: a[0],
            normal: a[1],
            low: a[2],
        }
    }
}

/// Where one queue's jobs are at one moment ([`Client::queue_stats`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Entries waiting in the streams, not yet delivered to a worker.
    pub ready: ByPriority,
    /// Entries delivered to a worker and not yet acknowledged (running, or their worker
    /// died and the janitor has not taken them back yet).
    pub pending: ByPriority,
    /// Delayed jobs and retries waiting for their time.
    pub scheduled: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
    /// The queue's partitions (1: a plain queue); the counts are their sums.
    pub partitions: u16,
    /// Age of the oldest job that could run now and has not started (the first undelivered
    /// entry of a stream, or a scheduled job already due); zero when none waits. In JSON:
    /// `oldest_waiting_ms`.
    #[serde(rename = "oldest_waiting_ms", serialize_with = "as_millis")]
    pub oldest_waiting: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Client {
    /// Counts `queue`'s jobs by where they wait, in one script call (atomic: the counts
    /// belong to one moment). Ready counts stay exact after a Redis restart, when Redis 7.0
    /// no longer knows its consumer group's lag.
    ///
    /// A partitioned queue's counts are the sums over its partitions (one call each, sent
    /// together; each partition's counts belong to one moment) and its oldest waiting job
    /// is the oldest of any; a partition's name (`emails~3`) counts that partition alone.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        crate::names::validate_queue_ref(queue)?;
        let names = if crate::names::is_partition(queue) {
            vec![queue.to_string()]
        } else {
            self.layouts_of(&[queue])
                .await?
                .remove(queue)
                .map_or_else(|| vec![queue.to_string()], |l| l.names.to_vec())
        };
        let counts =
            futures::future::try_join_all(names.iter().map(|q| self.store().queue_counts(q)))
                .await?;
        let mut sum = crate::redis::QueueCounts::default();
        for c in &counts {
            for i in 0..3 {
                sum.ready[i] += c.ready[i];
                sum.pending[i] += c.pending[i];
            }
            sum.scheduled += c.scheduled;
            sum.dead += c.dead;
            sum.oldest_waiting_ms = sum.oldest_waiting_ms.max(c.oldest_waiting_ms);
        }
        let c = sum;
        Ok(QueueStats {
            queue: queue.to_string(),
            ready: ByPriority::from_array(c.ready),
            pending: ByPriority::from_array(c.pending),
            scheduled: c.scheduled,
            dead: c.dead,
            partitions: if crate::names::is_partition(queue) {
                1
            } else {
                names.len() as u16
            },
            oldest_waiting: Duration::from_millis(c.oldest_waiting_ms),
        })
    }
}
