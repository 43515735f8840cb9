//! Typed background jobs for Rust on Redis Streams.
//!
//! Write handlers as `#[job_handler]` async functions taking a serde payload, enqueue typed
//! jobs with a [`Client`], and run [`Worker`]s that form a Redis consumer group. A job is
//! one stream entry a person can read with `redis-cli`; delivery is at least once, and
//! failed, malformed or unknown jobs end up in a dead-letter stream with their reason.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use stevedore::{Client, JobContext, JobError, Priority, Worker, job_handler, shutdown_signal};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail {
//!     to: String,
//!     subject: String,
//! }
//!
//! #[job_handler(name = "email.send", queue = "emails", max_attempts = 5, timeout = "30s")]
//! async fn send_email(job: SendEmail, ctx: JobContext) -> Result<(), JobError> {
//!     println!("attempt {} of {}: mail to {}", ctx.attempt(), ctx.max_attempts(), job.to);
//!     Ok(())
//! }
//!
//! # async fn run() -> stevedore::Result<()> {
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! let id = client
//!     .enqueue(send_email::job(SendEmail { to: "ada@example.com".into(), subject: "hi".into() }).priority(Priority::High))
//!     .await?;
//! println!("enqueued {id}");
//! Worker::builder(client.clone())
//!     .concurrency(32)
//!     .handler(send_email::handler())
//!     .build()?
//!     .run_until(shutdown_signal())
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! The modules follow a job's life:
//! - [`job`]: names, ids, options and the envelope a stream entry holds;
//! - [`client`]: connecting and enqueueing;
//! - [`handler`]: the handler trait, the job context, and the error that decides retries;
//! - [`priority`]: priorities and how a worker splits its slots between them;
//! - [`retry`]: how long a failed job waits before its next attempt;
//! - [`limit`]: rate limits, fleet-wide, per queue, job type or payload key;
//! - [`status`]: job status by id;
//! - [`worker`]: consuming, dispatching, acknowledging and shutting down;
//! - [`dlq`]: listing, replaying and purging dead letters;
//! - [`observe`]: job lifecycle events and observers that react to them;
//! - [`metrics`]: Prometheus metrics, fed by those events and sampled from Redis;
//! - [`health`] and [`http`] (feature `http`): `/metrics`, `/healthz` and `/readyz`;
//! - `redis` (internal): the only module that speaks Redis; key names and Lua scripts.

extern crate self as stevedore;

pub mod admin;
pub(crate) mod backoff;
mod bounded;
pub mod client;
pub(crate) mod clock;
pub(crate) mod codec;
pub mod control;
pub mod dlq;
pub(crate) mod envelope;
pub mod error;
pub mod flow;
pub mod handler;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod job;
pub mod limit;
pub mod metrics;
pub(crate) mod names;
pub mod observe;
mod partition;
pub mod priority;
pub(crate) mod redis;
pub mod retry;
pub mod status;
pub(crate) mod trace_context;
pub mod webhook;
pub mod worker;

pub use admin::Admin;
pub use client::{Client, ClientBuilder};
pub use dlq::{
    DeadJob, DeadLetterFilter, DeadLetterPage, DeadLetterQuery, DeadLetters, DeadReason,
};
pub use error::{Error, Result};
pub use handler::{JobContext, JobError, JobHandler, ParentOutcome, Retry};
pub use health::Health;
pub use job::{HandlerOptions, IntoJob, Job, JobId, RawJob};
pub use limit::{LimitScope, RateLimit};
pub use metrics::Metrics;
pub use observe::Observer;
pub use priority::{Priority, PriorityWeights};
pub use retry::{Backoff, RetryPolicy};
pub use status::{ByPriority, JobState, JobStatus, QueueStats};
pub use stevedore_macros::job_handler;
pub use tokio_util::sync::CancellationToken;
pub use worker::periodic::Periodic;
pub use worker::shutdown::shutdown_signal;
pub use worker::{Worker, WorkerBuilder};

/// What the `#[job_handler]` expansion refers to. Not public API: it may change in any
/// release.
#[doc(hidden)]
pub mod __private {
    pub use futures::future::BoxFuture;
    pub use std::boxed::Box;
    pub use std::time::Duration;

    /// Converts a handler's own error type into the job error.
    pub fn into_job_error<E: crate::handler::IntoJobError>(
        result: Result<(), E>,
    ) -> Result<(), crate::JobError> {
        result.map_err(crate::handler::IntoJobError::into_job_error)
    }
}

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
