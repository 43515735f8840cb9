//! Handlers: the trait the `#[job_handler]` macro implements, the context a job runs with,
//! and the error that tells the worker what to do next.
//!
//! A handler is an `async fn(payload, JobContext) -> Result<(), E>`; the macro wraps it in a
//! [`JobHandler`] impl that carries its wire name, queue and defaults. The worker keeps
//! handlers type-erased in a registry keyed by job type, and decodes each payload into the
//! handler's own type just before calling it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Priority;
use crate::codec::decode_payload;

mod options;

pub use options::{DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, HandlerOptions};

/// A job handler: a payload type, a wire name, a default queue and an async function.
///
/// Implemented by the `#[job_handler]` attribute; writing it by hand works too.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a job handler",
    note = "annotate an `async fn(payload: T, ctx: JobContext) -> Result<(), E>` with `#[stevedore::job_handler]` and register it with `name::handler()`"
)]
pub trait JobHandler: Send + Sync + 'static {
    /// The payload, encoded as MessagePack on the wire.
    type Payload: Serialize + DeserializeOwned + Send + 'static;
    /// The job type: the stable wire name workers dispatch on (`"email.send"`).
    const NAME: &'static str;
    /// The queue jobs go to unless the enqueue call says otherwise.
    const QUEUE: &'static str;
    /// Defaults for attempts, timeout and priority.
    const OPTIONS: HandlerOptions = HandlerOptions::new();

    /// The key a per-key rate limit counts this job under (a customer, a tenant), derived
    /// from its payload; `None` (the default) for a job no per-key limit applies to.
    /// `#[job_handler(limit_key = "customer_id")]` writes it as the field's `to_string()`.
    fn limit_key(payload: &Self::Payload) -> Option<String> {
        let _ = payload;
        None
    }

    /// Runs one attempt.
    fn handle(
        &self,
        payload: Self::Payload,
        ctx: JobContext,
    ) -> BoxFuture<'static, Result<(), JobError>>;
}

/// What a job knows about itself while it runs.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
    token: CancellationToken,
    cancel: CancellationToken,
}

struct ContextInner {
    id: String,
    job_type: String,
    queue: String,
    priority: Priority,
    attempt: u32,
    max_attempts: u32,
    enqueued_at: u64,
    /// What the handler chose to report, as JSON.
    result: std::sync::Mutex<Option<String>>,
    /// The entry's `parents` field: JSON of what the jobs it waited for came to.
    parents: Option<String>,
}

/// What one job a job waited for came to ([`JobContext::parents`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct ParentOutcome {
    /// How it ended: `succeeded`, or, for a dependency that runs its dependent anyway,
    /// `dead`, `cancelled` or `deleted`.
    pub state: String,
    /// What its handler stored with [`JobContext::set_result`] (JSON; empty when none),
    /// or, for one that did not succeed, its error.
    pub result: String,
}

impl ParentOutcome {
    /// The result decoded into `T`; `None` when there is none.
    pub fn result_as<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T, JobError>> {
        (!self.result.is_empty()).then(|| {
            serde_json::from_str(&self.result)
                .map_err(|e| JobError::permanent(format!("a parent's result does not decode: {e}")))
        })
    }
}

/// Largest result a handler may store with its job's status.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.inner.id)
            .field("type", &self.inner.job_type)
            .field("queue", &self.inner.queue)
            .field("priority", &self.inner.priority)
            .field("attempt", &self.inner.attempt)
            .field("max_attempts", &self.inner.max_attempts)
            .finish()
    }
}

/// The facts a worker fills a [`JobContext`] with.
pub(crate) struct ContextFacts<'a> {
    pub(crate) id: &'a str,
    pub(crate) job_type: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) priority: Priority,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) enqueued_at: u64,
    pub(crate) parents: Option<&'a str>,
}

impl JobContext {
    pub(crate) fn new(
        facts: ContextFacts<'_>,
        token: CancellationToken,
        cancel: CancellationToken,
    ) -> Self {
        JobContext {
            inner: Arc::new(ContextInner {
                id: facts.id.to_string(),
                job_type: facts.job_type.to_string(),
                queue: facts.queue.to_string(),
                priority: facts.priority,
                attempt: facts.attempt,
                max_attempts: facts.max_attempts,
                enqueued_at: facts.enqueued_at,
                result: std::sync::Mutex::new(None),
                parents: facts.parents.map(str::to_string),
            }),
            token,
            cancel,
        }
    }

    /// A context for calling a handler directly in a unit test: a fresh id, attempt 1 of 1,
    /// queue `test`, never cancelled.
    pub fn for_tests(job_type: &str) -> Self {
        let id = crate::names::JobId::generate();
        JobContext::new(
            ContextFacts {
                id: id.as_str(),
                job_type,
                queue: "test",
                priority: Priority::Normal,
                attempt: 1,
                max_attempts: 1,
                enqueued_at: crate::clock::now_ms(),
                parents: None,
            },
            CancellationToken::new(),
            CancellationToken::new(),
        )
    }

    /// A context like [`for_tests`](Self::for_tests) whose job is cancelled when `cancel`
    /// fires, as an operator's cancel would: for testing how a handler stops.
    pub fn for_tests_with_cancel(job_type: &str, cancel: CancellationToken) -> Self {
        let mut ctx = JobContext::for_tests(job_type);
        ctx.token = cancel.clone();
        ctx.cancel = cancel;
        ctx
    }

    /// The job's id, the same across its attempts: use it to make side effects idempotent.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The job type this handler was dispatched for.
    pub fn job_type(&self) -> &str {
        &self.inner.job_type
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// The priority stream the job came from.
    pub fn priority(&self) -> Priority {
        self.inner.priority
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Attempts the job gets before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// When the job was enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.inner.enqueued_at)
    }

    /// Stores a small result (as JSON, at most 64 KiB) with the job's status when this
    /// attempt succeeds; read it back with `Client::status`. The last call wins.
    pub fn set_result<T: Serialize + ?Sized>(&self, result: &T) -> Result<(), JobError> {
        let json = serde_json::to_string(result)
            .map_err(|e| JobError::permanent(format!("result does not encode as JSON: {e}")))?;
        if json.len() > MAX_RESULT_BYTES {
            return Err(JobError::permanent(format!(
                "result of {} bytes exceeds {MAX_RESULT_BYTES} bytes: store large results elsewhere",
                json.len()
            )));
        }
        *self.inner.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(json);
        Ok(())
    }

    pub(crate) fn take_result(&self) -> Option<String> {
        self.inner
            .result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// True once the worker wants this attempt to stop: an operator cancelled (or deleted)
    /// the job ([`Client::cancel`](crate::Client::cancel); then
    /// [`is_cancel_requested`](Self::is_cancel_requested) is true too), the drain deadline
    /// of a stopping worker passed, or a lease renewal found the entry taken by another
    /// worker (a worker paused past its lease), so this attempt's outcome will not count.
    /// A handler doing long work can check it between steps, or select on
    /// [`cancelled`](Self::cancelled). An attempt's `timeout` does not fire it: the
    /// handler's future is dropped at the timeout.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the worker wants this attempt to stop (see
    /// [`is_cancelled`](Self::is_cancelled) for when).
    ///
    /// ```
    /// use stevedore::{JobContext, JobError};
    ///
    /// async fn export(ctx: JobContext, rows: Vec<u64>) -> Result<(), JobError> {
    ///     for row in rows {
    ///         tokio::select! {
    ///             _ = ctx.cancelled() => return Err(JobError::permanent("cancelled")),
    ///             _ = write_row(row) => {}
    ///         }
    ///     }
    ///     Ok(())
    /// }
    /// # async fn write_row(_: u64) {}
    /// ```
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// What the jobs this job waited for came to, by job id (README, "Chains,
    /// dependencies, batches"): their results, read from this job's entry without a call
    /// to Redis. Empty for a job that waited for none.
    pub fn parents(&self) -> std::collections::HashMap<String, ParentOutcome> {
        self.inner
            .parents
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default()
    }

    /// A token that fires when [`cancelled`](Self::cancelled) resolves, to hand to code
    /// that takes a [`CancellationToken`] (a child token is cancelled with it).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// True once an operator cancelled or deleted this job while it ran. The attempt then
    /// ends `cancelled` however the handler returns, unless it returns `Ok` (it finished
    /// its work: `succeeded`); a handler still running after the worker's
    /// [`cancel_grace`](crate::WorkerBuilder::cancel_grace) is dropped.
    pub fn is_cancel_requested(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// What the worker should do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// Run the job again if it has attempts left (the default for any error).
    Yes,
    /// Run it again after at least this long (an upstream's `Retry-After`), attempts
    /// permitting.
    After(Duration),
    /// Never again: dead-letter the job now with reason `failed`.
    No,
    /// The downstream said "slow down" (HTTP 429): run the job again after this long,
    /// without counting the attempt, and let no job of its type (of its key, under a
    /// per-key limit) start meanwhile when its type has a rate limit.
    RateLimited(Duration),
}

/// A failed attempt, and whether to try again.
///
/// Any `std::error::Error` converts into a retryable `JobError`, so `?` works in handlers;
/// use [`JobError::permanent`] for failures that no retry can fix.
pub struct JobError {
    message: String,
    retry: Retry,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retry(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            retry: Retry::Yes,
        }
    }

    /// A failure worth retrying no sooner than `delay` from now.
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> Self {
        JobError {
            message: message.to_string(),
            retry: Retry::After(delay),
        }
    }

    /// The downstream refused for now ("too many requests", `Retry-After: 30`): the job
    /// runs again after `retry_after`, without counting the attempt, and the rate limits of
    /// its type (and of its key) let no other job start before then. Without a rate limit
    /// on the type, only this job waits.
    pub fn rate_limited(message: impl fmt::Display, retry_after: Duration) -> Self {
        JobError {
            message: message.to_string(),
            retry: Retry::RateLimited(retry_after),
        }
    }

    /// A failure no retry can fix (bad input, a resource that is gone): the job goes to
    /// the dead-letter stream now.
    pub fn permanent(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            retry: Retry::No,
        }
    }

    /// What the handler asked for.
    pub fn retry_decision(&self) -> Retry {
        self.retry
    }

    /// The message, as stored with the job.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("message", &self.message)
            .field("retry", &self.retry)
            .finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::retry(chain(&e))
    }
}

/// An error's message followed by its sources', `": "` between them.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// The error types a handler may return: [`JobError`] itself (which says retry, retry
/// after a delay, or dead-letter now), and anything that converts into
/// `Box<dyn std::error::Error + Send + Sync>`, which is retried: every
/// `std::error::Error + Send + Sync + 'static`, `anyhow::Error`, `Box<dyn Error + Send +
/// Sync>` itself, `String` and `&'static str`. The message is the error's followed by its
/// sources'.
///
/// For another type of your own, implement this trait (or `std::error::Error`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a job handler",
    label = "this error type does not convert into `stevedore::JobError`",
    note = "return `Result<(), E>` where `E` is `stevedore::JobError`, any `std::error::Error + Send + Sync + 'static`, `anyhow::Error` or `Box<dyn std::error::Error + Send + Sync>`; or implement `stevedore::handler::IntoJobError` for `{Self}`"
)]
pub trait IntoJobError {
    /// The job error the worker acts on.
    fn into_job_error(self) -> JobError;
}

impl IntoJobError for JobError {
    fn into_job_error(self) -> JobError {
        self
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> IntoJobError for E {
    fn into_job_error(self) -> JobError {
        let boxed: Box<dyn std::error::Error + Send + Sync + 'static> = self.into();
        JobError::retry(chain(&*boxed))
    }
}

/// Why a delivery could not even be handed to a handler.
#[derive(Debug)]
pub(crate) struct UndecodablePayload(pub(crate) String);

/// A handler with its payload type erased, as the registry keeps it.
pub(crate) trait ErasedHandler: Send + Sync {
    fn options(&self) -> HandlerOptions;
    /// The attempt's future, and the key a per-key rate limit counts it under.
    fn call(&self, payload: &[u8], ctx: JobContext) -> Result<Called, UndecodablePayload>;
}

/// A decoded payload, handed to its handler.
pub(crate) struct Called {
    pub(crate) fut: BoxFuture<'static, Result<(), JobError>>,
    pub(crate) limit_key: Option<String>,
}

struct Erased<H>(H);

impl<H: JobHandler> ErasedHandler for Erased<H> {
    fn options(&self) -> HandlerOptions {
        H::OPTIONS
    }

    fn call(&self, payload: &[u8], ctx: JobContext) -> Result<Called, UndecodablePayload> {
        let payload: H::Payload = decode_payload(payload).map_err(UndecodablePayload)?;
        let limit_key = H::limit_key(&payload);
        Ok(Called {
            fut: self.0.handle(payload, ctx),
            limit_key,
        })
    }
}

/// Handlers by job type.
#[derive(Default, Clone)]
pub(crate) struct Registry {
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    queues: Vec<String>,
}

impl Registry {
    /// Adds a handler; a second handler for the same type is a configuration error.
    pub(crate) fn insert<H: JobHandler>(&mut self, handler: H) -> Result<(), String> {
        if self.handlers.contains_key(H::NAME) {
            return Err(format!("two handlers for job type {:?}", H::NAME));
        }
        self.handlers
            .insert(H::NAME.to_string(), Arc::new(Erased(handler)));
        if !self.queues.iter().any(|q| q == H::QUEUE) {
            self.queues.push(H::QUEUE.to_string());
        }
        Ok(())
    }

    /// Adds a handler the library brings (webhook deliveries) unless one is registered for
    /// its type already; its default queue is not a queue of the worker.
    pub(crate) fn insert_builtin<H: JobHandler>(&mut self, handler: H) {
        if !self.handlers.contains_key(H::NAME) {
            self.handlers
                .insert(H::NAME.to_string(), Arc::new(Erased(handler)));
        }
    }

    pub(crate) fn get(&self, job_type: &str) -> Option<&Arc<dyn ErasedHandler>> {
        self.handlers.get(job_type)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// The handlers' default queues, in registration order.
    pub(crate) fn queues(&self) -> &[String] {
        &self.queues
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// Each job type and its handler's options.
    pub(crate) fn options(&self) -> impl Iterator<Item = (&str, HandlerOptions)> {
        self.handlers
            .iter()
            .map(|(name, h)| (name.as_str(), h.options()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("disk full")
        }
    }
    impl std::error::Error for Inner {}

    #[derive(Debug)]
    struct Outer(Inner);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not write report")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn std_errors_become_retryable_with_their_chain() {
        let e: JobError = Outer(Inner).into();
        assert_eq!(e.message(), "could not write report: disk full");
        assert_eq!(e.retry_decision(), Retry::Yes);
        assert_eq!(JobError::permanent("gone").retry_decision(), Retry::No);
        let d = Duration::from_secs(7);
        assert_eq!(
            JobError::retry_after("429", d).retry_decision(),
            Retry::After(d)
        );
    }
}
