//! Jobs on their way in: typed and raw jobs, their options, their ids and limits.
//!
//! A job travels as one stream entry whose fields a person can read with `XRANGE`
//! (`id`, `type`, `attempt`, `max_attempts`, `enqueued_at`, optional `timeout`, `unique`,
//! `traceparent`) plus one binary field, `payload`, in MessagePack. Named MessagePack maps
//! are used for payloads, so adding or reordering fields of a payload struct stays
//! compatible with jobs already queued.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::codec::encode_payload;
use crate::envelope::Envelope;
use crate::handler::JobHandler;
use crate::names::validate_name;
use crate::{Priority, Result};

mod prepare;

pub use crate::clock::MAX_JOB_DURATION;
pub use crate::codec::DEFAULT_PAYLOAD_LIMIT;
pub use crate::handler::{DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, HandlerOptions};
pub use crate::names::MAX_PARTITIONS;
pub use crate::names::{JobId, MAX_JOB_ID_LEN};

use prepare::prepare;

/// Per-job options set at enqueue time.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobOptions {
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<Priority>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) unique: Option<(UniqueBy, Duration)>,
    pub(crate) traceparent: Option<String>,
    pub(crate) partition_key: Option<String>,
}

/// What makes two jobs duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UniqueBy {
    /// A key the caller chose.
    Key(String),
    /// The job type and the encoded payload.
    Payload,
}

/// Longest caller-chosen unique key.
const MAX_UNIQUE_KEY: usize = 256;

/// When a delayed job becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schedule {
    /// This long after Redis receives it (measured on Redis' clock).
    In(Duration),
    /// At this wall-clock time.
    At(SystemTime),
}

macro_rules! job_option_setters {
    () => {
        /// Puts the job on this priority's stream.
        pub fn priority(mut self, priority: Priority) -> Self {
            self.options.priority = Some(priority);
            self
        }

        /// Attempts before the job is dead-lettered, at least 1 (0 is refused at enqueue
        /// with [`Error::InvalidInput`](crate::Error::InvalidInput)). Without it, the job gets
        /// its handler's `max_attempts` (5 when the handler sets none), decided by the worker
        /// that runs it; the entry then holds `max_attempts` 0, which means "not set".
        pub fn max_attempts(mut self, n: u32) -> Self {
            self.options.max_attempts = Some(n);
            self
        }

        /// How long one attempt may run before it is cancelled and counted as failed.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.options.timeout = Some(timeout);
            self
        }

        /// Runs the job no sooner than `delay` after Redis receives it (Redis' clock).
        pub fn delay(mut self, delay: Duration) -> Self {
            self.options.schedule = Some(Schedule::In(delay));
            self
        }

        /// De-duplicates on `key` for `ttl`: while the key lives, enqueueing another job with
        /// it enqueues nothing and returns the first job's id. The key is scoped to the
        /// queue; at most 256 bytes.
        pub fn unique(mut self, key: impl Into<String>, ttl: Duration) -> Self {
            self.options.unique = Some((UniqueBy::Key(key.into()), ttl));
            self
        }

        /// De-duplicates on the job type and payload for `ttl`, as [`unique`](Self::unique)
        /// does with a key.
        pub fn unique_by_payload(mut self, ttl: Duration) -> Self {
            self.options.unique = Some((UniqueBy::Payload, ttl));
            self
        }

        /// Carries this W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) so the job's
        /// span continues that trace, e.g. one received in an HTTP request. Without it, the
        /// current span's context is used when the `opentelemetry` feature is on. A malformed
        /// value is refused at enqueue.
        pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
            self.options.traceparent = Some(traceparent.into());
            self
        }

        /// Places the job by `key` in a partitioned queue: every job with the same key
        /// goes to the same partition, so jobs of one key keep their order (one customer's,
        /// one tenant's). Without it, a unique job is placed by its unique key and any other
        /// job in turn. At most 256 bytes; no effect on a queue with one partition.
        pub fn partition_key(mut self, key: impl Into<String>) -> Self {
            self.options.partition_key = Some(key.into());
            self
        }

        /// Runs the job no sooner than `at`. A time in the past means now.
        pub fn run_at(mut self, at: SystemTime) -> Self {
            self.options.schedule = Some(Schedule::At(at));
            self
        }
    };
}

/// A typed job for handler `H`, ready to enqueue.
///
/// Made by the `job` function the `#[job_handler]` macro generates (`send_email::job(..)`),
/// so a payload of the wrong type does not compile.
#[must_use = "a job does nothing until it is enqueued"]
pub struct Job<H: JobHandler> {
    payload: H::Payload,
    options: JobOptions,
    _handler: PhantomData<fn() -> H>,
}

impl<H: JobHandler> fmt::Debug for Job<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload is deliberately left out: it may hold personal data.
        f.debug_struct("Job")
            .field("type", &H::NAME)
            .field("options", &self.options)
            .finish()
    }
}

impl<H: JobHandler> Clone for Job<H>
where
    H::Payload: Clone,
{
    fn clone(&self) -> Self {
        Job {
            payload: self.payload.clone(),
            options: self.options.clone(),
            _handler: PhantomData,
        }
    }
}

impl<H: JobHandler> Job<H> {
    /// A job for `H` with this payload and the handler's default options.
    pub fn new(payload: H::Payload) -> Self {
        Job {
            payload,
            options: JobOptions::default(),
            _handler: PhantomData,
        }
    }

    /// Puts the job on another queue than the handler's default. A worker must consume that
    /// queue for it to run.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }

    job_option_setters!();
}

/// An untyped job: a job type, a queue and an already encodable payload. For producers
/// that do not link the handler's crate (the CLI, an HTTP API, other services).
#[derive(Clone)]
#[must_use = "a job does nothing until it is enqueued"]
pub struct RawJob {
    job_type: String,
    payload: Vec<u8>,
    options: JobOptions,
}

impl fmt::Debug for RawJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawJob")
            .field("type", &self.job_type)
            .field("payload_bytes", &self.payload.len())
            .field("options", &self.options)
            .finish()
    }
}

impl RawJob {
    /// A job of `job_type` on `queue`, with `payload` encoded as MessagePack (a
    /// `serde_json::Value` works too). Fails on an invalid name or an unencodable payload.
    pub fn new<T: Serialize + ?Sized>(job_type: &str, queue: &str, payload: &T) -> Result<Self> {
        Self::from_msgpack(job_type, queue, encode_payload(payload)?)
    }

    /// A job whose payload is already MessagePack.
    pub fn from_msgpack(job_type: &str, queue: &str, payload: Vec<u8>) -> Result<Self> {
        validate_name("job type", job_type)?;
        validate_name("queue", queue)?;
        Ok(RawJob {
            job_type: job_type.to_string(),
            payload,
            options: JobOptions {
                queue: Some(queue.to_string()),
                ..JobOptions::default()
            },
        })
    }

    job_option_setters!();
}

/// A job ready to become a stream entry, whatever way it was built.
#[derive(Debug, Clone)]
pub struct PreparedJob {
    pub(crate) queue: String,
    pub(crate) priority: Priority,
    pub(crate) schedule: Option<Schedule>,
    /// The unique key (without prefix) and how long it holds.
    pub(crate) unique: Option<(String, Duration)>,
    /// What picks the partition of a partitioned queue: the partition key, else the unique
    /// key; `None`: the next partition in turn.
    pub(crate) partition_key: Option<String>,
    pub(crate) envelope: Envelope,
}

impl PreparedJob {
    /// Its schedule as the enqueue scripts take it: `("in", ms)` or `("at", Unix ms)`.
    pub(crate) fn when(&self) -> Option<(&'static str, u64)> {
        self.schedule.map(|s| match s {
            Schedule::In(d) => ("in", d.as_millis() as u64),
            Schedule::At(t) => (
                "at",
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
        })
    }
}

/// Anything [`Client::enqueue`](crate::Client::enqueue) accepts: a typed [`Job`] or a
/// [`RawJob`].
pub trait IntoJob {
    /// Encodes the payload and settles the options. Fails on an invalid name or an
    /// unencodable payload.
    fn prepare(self) -> Result<PreparedJob>;
}

impl<H: JobHandler> IntoJob for Job<H> {
    fn prepare(self) -> Result<PreparedJob> {
        let payload = encode_payload(&self.payload)?;
        prepare(H::NAME, H::QUEUE, payload, self.options, &H::OPTIONS)
    }
}

impl IntoJob for PreparedJob {
    fn prepare(self) -> Result<PreparedJob> {
        Ok(self)
    }
}

impl IntoJob for RawJob {
    fn prepare(self) -> Result<PreparedJob> {
        prepare(
            &self.job_type,
            "",
            self.payload,
            self.options,
            &HandlerOptions::new(),
        )
    }
}
