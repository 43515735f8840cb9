//! Running one delivery: decode, find the handler, run it with its timeout, and settle the
//! outcome. The fetch loop prepares a batch (`prepare`) and records the attempts as running
//! (`started`) before it spawns a task per delivery here.
//!
//! Success goes to the batched acker. Every other outcome changes the entry through a
//! fenced Lua script that first checks this worker still owns it: a failed attempt with
//! attempts left is re-queued as a new entry, anything else is dead-lettered with its
//! reason. Nothing here can crash the worker: a bad entry, an unknown type, an undecodable
//! payload and a panicking handler all end as a dead letter or a retry.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Runtime;
use super::ack::{self, Ack, Handoff};
use super::lease::LeaseGuard;
use crate::Priority;
use crate::dlq::DeadReason;
use crate::envelope::Envelope;
use crate::handler::{
    Called, ContextFacts, ErasedHandler, JobContext, JobError, Retry, UndecodablePayload,
};
use crate::observe::{DeadJobEvent, Failure, FailureKind, JobEvent};
use crate::redis::{self, Again, Fenced, Fields};

/// One entry handed to this worker.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) queue: Arc<str>,
    pub(crate) priority: Priority,
    pub(crate) stream: Arc<str>,
    pub(crate) entry_id: String,
    pub(crate) fields: Option<Fields>,
    /// Fires when the drain deadline passes, the lease is lost, or an operator cancels the
    /// job.
    pub(crate) token: CancellationToken,
    /// Fires when an operator cancels (or deletes) the job.
    pub(crate) cancel: CancellationToken,
    /// Keeps the entry's lease renewed until the delivery is settled.
    pub(crate) _lease: LeaseGuard,
    /// Where its entry goes once finished: the queue's fetch loop or the acker.
    pub(crate) handoff: Arc<Handoff>,
}

enum Outcome {
    Succeeded,
    Failed {
        error: String,
        retry: Retry,
        kind: FailureKind,
    },
    /// The worker gave up waiting (drain deadline): leave the entry pending.
    Abandoned,
    /// An operator cancelled the job: it ends `cancelled`, not retried.
    Cancelled,
}

/// A delivery ready to run: its entry decoded, its handler found, its payload decoded into
/// the handler's future (not polled yet).
pub(crate) struct Attempt {
    pub(crate) d: Delivery,
    pub(crate) env: Envelope,
    handler: Arc<dyn ErasedHandler>,
    fut: BoxFuture<'static, Result<(), JobError>>,
    ctx: JobContext,
    /// The job's status hash, when it has one (and status is tracked): it is marked
    /// running when the attempt starts. Other jobs' status is read from their entry.
    pub(crate) status_key: Option<String>,
    /// The key a per-key rate limit counts the job under (its handler's `limit_key`).
    pub(crate) limit_key: Option<String>,
}

/// What a delivery comes to before anything runs.
pub(crate) enum Prepared {
    /// Runs its handler.
    Run(Box<Attempt>),
    /// Deleted while pending: nothing to run, nothing to keep.
    Deleted(Delivery),
    /// The entry does not read as a job.
    BadEntry(Delivery, String),
    /// No handler on this worker for the job's type.
    UnknownType(Delivery, Envelope),
    /// The payload does not decode for the handler.
    BadPayload(Delivery, Envelope, String),
}

/// Decodes a delivery and, when it can run, builds its handler's future.
pub(crate) fn prepare(rt: &Runtime, d: Delivery) -> Prepared {
    let Some(fields) = d.fields.as_ref() else {
        return Prepared::Deleted(d);
    };
    let mut env = match redis::envelope_of(
        fields,
        &d.queue,
        d.priority,
        &d.entry_id,
        rt.client.payload_limit(),
    ) {
        Ok(env) => env,
        Err(why) => return Prepared::BadEntry(d, why),
    };
    let Some(handler) = rt.registry.get(&env.job_type).cloned() else {
        env.resolve_max_attempts(crate::job::DEFAULT_MAX_ATTEMPTS);
        return Prepared::UnknownType(d, env);
    };
    // A job enqueued without `max_attempts` (a raw job, the CLI, the HTTP API) follows its
    // handler's setting.
    env.resolve_max_attempts(handler.options().effective_max_attempts());
    let ctx = JobContext::new(
        ContextFacts {
            id: &env.id,
            job_type: &env.job_type,
            queue: &d.queue,
            priority: d.priority,
            attempt: env.attempt,
            max_attempts: env.max_attempts,
            enqueued_at: env.enqueued_at,
            parents: env.parents.as_deref(),
        },
        d.token.clone(),
        d.cancel.clone(),
    );
    // Decoding and `handle` run user code (Deserialize impls, a hand-written handler) on
    // the fetch loop's task: a panic there becomes the attempt's outcome, like a panic in
    // the handler's future, instead of taking the loop down.
    let called =
        std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(&env.payload, ctx.clone())))
            .unwrap_or_else(|panic| {
                Ok(Called {
                    fut: Box::pin(async move { std::panic::resume_unwind(panic) }),
                    limit_key: None,
                })
            });
    match called {
        Ok(Called { fut, limit_key }) => {
            let status_key = (env.recorded && rt.client.status_retention_ms() > 0)
                .then(|| rt.client.keys().job(&d.queue, &env.id));
            Prepared::Run(Box::new(Attempt {
                d,
                env,
                handler,
                fut,
                ctx,
                status_key,
                limit_key,
            }))
        }
        Err(UndecodablePayload(why)) => {
            // The decoder's message may quote the payload: one line, and short.
            let why = format!(
                "payload does not decode for {:?}: {}",
                env.job_type,
                crate::error::one_line(&why, 512)
            );
            Prepared::BadPayload(d, env, why)
        }
    }
}

/// The job span an attempt (or its failure to start) is reported in.
fn job_span(d: &Delivery, env: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "job",
        job_id = %env.id,
        job_type = %env.job_type,
        queue = %d.queue,
        attempt = env.attempt,
        traceparent = env.traceparent.as_deref(),
    );
    crate::trace_context::continue_in(&span, env.traceparent.as_deref());
    span
}

pub(crate) fn job_event<'a>(d: &'a Delivery, env: &'a Envelope, known_type: bool) -> JobEvent<'a> {
    JobEvent {
        job_id: &env.id,
        job_type: &env.job_type,
        known_type,
        queue: &d.queue,
        priority: d.priority,
        attempt: env.attempt,
        max_attempts: env.max_attempts,
        waited: waited_since(&d.entry_id),
    }
}

/// Runs one prepared delivery to its end, holding `permit` (a concurrency slot)
/// throughout. An attempt's `running` status is already recorded (see `started`).
pub(crate) async fn run(rt: Arc<Runtime>, prepared: Prepared, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    match prepared {
        Prepared::Run(attempt) => {
            // One span for the whole attempt, entered on each poll (never held across an
            // await, where it would cover other tasks' events on this thread).
            let span = job_span(&attempt.d, &attempt.env);
            run_attempt(&rt, *attempt).instrument(span).await
        }
        Prepared::Deleted(d) => {
            d.handoff
                .settle(Ack {
                    stream: d.stream.clone(),
                    entry_id: d.entry_id.clone(),
                    record: None,
                })
                .await;
        }
        Prepared::BadEntry(d, why) => {
            tracing::debug!(queue = %d.queue, entry = %d.entry_id, error = why.as_str(), "malformed entry");
            if Box::pin(dead_letter(&rt, &d, None, DeadReason::BadEntry, &why)).await {
                let event = DeadJobEvent {
                    job_id: None,
                    job_type: None,
                    known_type: false,
                    queue: &d.queue,
                    priority: d.priority,
                    reason: DeadReason::BadEntry,
                    error: &why,
                    attempt: None,
                };
                rt.observers.each(|o| o.dead(&event));
            }
        }
        Prepared::UnknownType(d, env) => {
            let span = job_span(&d, &env);
            Box::pin(unknown_type(&rt, &d, &env).instrument(span)).await;
        }
        Prepared::BadPayload(d, env, why) => {
            let span = job_span(&d, &env);
            Box::pin(bad_payload(&rt, &d, &env, &why).instrument(span)).await;
        }
    }
}

/// Retries a job of a type this worker has no handler for, like a failure, so a rolling
/// deploy that adds a type loses nothing: a worker that knows the type picks it up on a
/// later attempt. Dead-letters it once its attempts are spent.
async fn unknown_type(rt: &Runtime, d: &Delivery, env: &Envelope) {
    let job = job_event(d, env, false);
    let why = format!("no handler for job type {:?} on this worker", env.job_type);
    if env.attempt < env.max_attempts {
        let delay = rt.settings.retry_policy.delay(env.attempt);
        if retry_later(rt, d, env, delay, Again::Retry, &why).await {
            rt.observers.each(|o| o.retried(&job, delay, &why));
        }
    } else if dead_letter(rt, d, Some(env), DeadReason::UnknownType, &why).await {
        let event = dead_event(&job, DeadReason::UnknownType, &why);
        rt.observers.each(|o| o.dead(&event));
    }
}

/// Dead-letters a job whose payload does not decode for its handler.
async fn bad_payload(rt: &Runtime, d: &Delivery, env: &Envelope, why: &str) {
    let job = job_event(d, env, true);
    if dead_letter(rt, d, Some(env), DeadReason::BadEntry, why).await {
        let event = dead_event(&job, DeadReason::BadEntry, why);
        rt.observers.each(|o| o.dead(&event));
    }
}

/// Runs an attempt's handler with its timeout and settles the outcome; in the job's span
/// (the caller's `instrument`).
async fn run_attempt(rt: &Arc<Runtime>, a: Attempt) {
    let Attempt {
        d,
        env,
        handler,
        fut,
        ctx,
        status_key,
        limit_key,
    } = a;
    let job = job_event(&d, &env, true);
    let timeout = env
        .timeout
        .unwrap_or_else(|| handler.options().effective_timeout());
    if d.cancel.is_cancelled() {
        // Cancelled between its fetch and its start: it never runs.
        drop(fut);
        Box::pin(settle_cancelled(rt, &d, &env, None)).await;
        return;
    }
    rt.observers.each(|o| o.started(&job));
    let started = Instant::now();
    let attempt = async {
        match tokio::time::timeout(timeout, AssertUnwindSafe(fut).catch_unwind()).await {
            Err(_) => Outcome::Failed {
                error: format!("timed out after {}", humantime::format_duration(timeout)),
                retry: Retry::Yes,
                kind: FailureKind::Timeout,
            },
            Ok(Err(panic)) => Outcome::Failed {
                error: panic_message(&panic),
                retry: Retry::Yes,
                kind: FailureKind::Panic,
            },
            Ok(Ok(Ok(()))) => Outcome::Succeeded,
            Ok(Ok(Err(e))) => Outcome::Failed {
                error: e.message().to_string(),
                retry: e.retry_decision(),
                kind: FailureKind::Error,
            },
        }
    };
    // A cancelled job's handler is told at once (its context's token) and dropped if it
    // still runs after the grace period.
    let grace = rt.settings.cancel_grace;
    let dropped = async {
        d.cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let mut outcome = tokio::select! {
        biased;
        o = attempt => o,
        _ = rt.hard_stop.cancelled() => Outcome::Abandoned,
        _ = dropped => Outcome::Cancelled,
    };
    let took = started.elapsed();
    if d.cancel.is_cancelled() && !matches!(outcome, Outcome::Succeeded) {
        // Whatever the handler made of its cancellation (an error, a panic), the job was
        // cancelled. One that finished its work anyway succeeded.
        outcome = Outcome::Cancelled;
    } else if rt.hard_stop.is_cancelled() && matches!(outcome, Outcome::Failed { .. }) {
        // A handler that gave up because the worker is stopping did not really fail.
        outcome = Outcome::Abandoned;
    }
    match outcome {
        Outcome::Succeeded => {
            rt.observers.each(|o| o.succeeded(&job, took));
            let keep_ms = rt.keep_succeeded_ms(&d.queue, &handler.options());
            let record = ack::success_record(rt, &d.queue, status_key, &env, keep_ms, &ctx);
            d.handoff
                .settle(Ack {
                    stream: d.stream.clone(),
                    entry_id: d.entry_id.clone(),
                    record,
                })
                .await;
        }
        Outcome::Failed {
            error,
            retry: Retry::RateLimited(wait),
            kind,
        } => {
            // Observers see the attempt fail (it ran, and ended in an error) ...
            let failure = Failure {
                error: &error,
                kind,
                took,
            };
            rt.observers.each(|o| o.failed(&job, &failure));
            // Not a failure of the job: the downstream is full. Its type's limits hold
            // every job back for `wait`, and this one goes back with its attempt uncounted.
            let buckets =
                super::limits::slow_down_buckets(rt, &d.queue, &env.job_type, limit_key.as_deref());
            let wait_ms = crate::clock::clamped_ms(wait);
            if let Err(e) = rt.client.store().pause_buckets(&buckets, wait_ms).await {
                tracing::warn!(error = %e, "could not pause the job type's rate limits");
            }
            let why = format!(
                "the downstream asked to slow down: {}",
                crate::error::one_line(&error, 512)
            );
            if Box::pin(retry_later(rt, &d, &env, wait, Again::Defer, &why)).await {
                rt.observers.each(|o| o.limited(&job, wait, &why));
            }
        }
        Outcome::Failed { error, retry, kind } => {
            let failure = Failure {
                error: &error,
                kind,
                took,
            };
            rt.observers.each(|o| o.failed(&job, &failure));
            let attempts_left = env.attempt < env.max_attempts;
            if retry != Retry::No && attempts_left {
                let delay = match retry {
                    Retry::After(d) => d,
                    _ => handler
                        .options()
                        .retry
                        .unwrap_or(rt.settings.retry_policy)
                        .delay(env.attempt),
                };
                if Box::pin(retry_later(rt, &d, &env, delay, Again::Retry, &error)).await {
                    rt.observers.each(|o| o.retried(&job, delay, &error));
                }
            } else {
                let reason = if kind == FailureKind::Timeout {
                    DeadReason::Timeout
                } else {
                    DeadReason::Failed
                };
                if Box::pin(dead_letter(rt, &d, Some(&env), reason.clone(), &error)).await {
                    let event = dead_event(&job, reason, &error);
                    rt.observers.each(|o| o.dead(&event));
                }
            }
        }
        Outcome::Abandoned => {
            rt.observers.each(|o| o.abandoned(&job));
        }
        Outcome::Cancelled => {
            Box::pin(settle_cancelled(rt, &d, &env, Some((&job, took)))).await;
        }
    }
}

/// Acknowledges a cancelled job's entry and marks it cancelled, fenced; reports it (as an
/// attempt that stopped when it had started: `ran`).
async fn settle_cancelled(
    rt: &Runtime,
    d: &Delivery,
    env: &Envelope,
    ran: Option<(&JobEvent<'_>, Duration)>,
) {
    let about = redis::status_about(&d.queue, env);
    let retention = rt.client.status_retention_ms();
    let asked = redis::Asked {
        by: "",
        why: "cancelled",
    };
    let settled = with_retries(|| {
        rt.client.store().settle_cancelled(
            &d.queue,
            &d.stream,
            &rt.settings.consumer,
            &d.entry_id,
            &env.id,
            retention,
            asked,
            &about,
        )
    })
    .await;
    match settled {
        Ok(true) => {
            if let Some((job, took)) = ran {
                rt.observers.each(|o| o.cancelled(job, took));
                return;
            }
            let event = crate::observe::ControlEvent {
                action: crate::observe::ControlAction::Cancelled,
                queue: &d.queue,
                job_id: Some(&env.id),
                job_type: Some(&env.job_type),
                jobs: 1,
            };
            rt.observers.each(|o| o.controlled(&event));
        }
        Ok(false) => {
            tracing::debug!(entry = %d.entry_id, "cancelled job's entry was deleted or taken over meanwhile");
            if let Some((job, took)) = ran {
                // The attempt is over all the same (in-flight counts go down).
                rt.observers.each(|o| o.cancelled(job, took));
            }
        }
        Err(e) => {
            tracing::warn!(entry = %d.entry_id, error = %e, "could not settle a cancelled job; it is cancelled when taken over");
            if let Some((job, took)) = ran {
                rt.observers.each(|o| o.cancelled(job, took));
            }
        }
    }
}

fn dead_event<'a>(job: &JobEvent<'a>, reason: DeadReason, error: &'a str) -> DeadJobEvent<'a> {
    DeadJobEvent {
        job_id: Some(job.job_id),
        job_type: Some(job.job_type),
        known_type: job.known_type,
        queue: job.queue,
        priority: job.priority,
        reason,
        error,
        attempt: Some(job.attempt),
    }
}

/// Time since the entry was added to its stream (its id's milliseconds): since it was
/// enqueued, or since its delay or retry backoff ended and it was moved into the stream.
fn waited_since(entry_id: &str) -> Duration {
    let added = entry_id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .unwrap_or(0);
    let now = crate::clock::now_ms();
    Duration::from_millis(now.saturating_sub(added).min(now))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string value".to_string());
    format!("handler panicked: {what}")
}

/// Moves the entry to the queue's dead-letter stream, if this worker still owns it.
pub(crate) async fn dead_letter(
    rt: &Runtime,
    d: &Delivery,
    env: Option<&Envelope>,
    reason: DeadReason,
    error: &str,
) -> bool {
    let about = env
        .map(|env| redis::status_about(&d.queue, env))
        .unwrap_or_default();
    let letter = redis::DeadLetter {
        queue: &d.queue,
        stream: &d.stream,
        entry_id: &d.entry_id,
        consumer: &rt.settings.consumer,
        job_id: env.map(|env| env.id.as_str()),
        retention_ms: rt.client.status_retention_ms(),
        reason: reason.as_str(),
        error,
        about: &about,
    };
    match with_retries(|| rt.client.store().dead_letter(&letter)).await {
        Ok(Fenced::Done | Fenced::Deleted) => true,
        Ok(Fenced::LeaseLost) => {
            tracing::warn!(entry = %d.entry_id, "lease lost before dead-lettering; another worker owns the entry now");
            false
        }
        Err(e) => {
            tracing::error!(entry = %d.entry_id, error = %e, "could not dead-letter; the entry stays pending");
            false
        }
    }
}

/// Sends a job its rate limits hold back to the scheduled set, due in `wait_ms`, freeing
/// its slot (`permit`) once done; its attempt count stays.
pub(crate) async fn defer(
    rt: Arc<Runtime>,
    a: Box<Attempt>,
    permit: OwnedSemaphorePermit,
    wait_ms: u64,
    again: Again,
    why: String,
) {
    let _permit = permit;
    let wait = Duration::from_millis(wait_ms);
    let span = job_span(&a.d, &a.env);
    let job = job_event(&a.d, &a.env, true);
    let deferred = retry_later(&rt, &a.d, &a.env, wait, again, &why)
        .instrument(span)
        .await;
    if deferred {
        rt.observers.each(|o| o.limited(&job, wait, &why));
    }
}

/// Schedules the entry's next attempt `delay` from now, if this worker still owns it
/// (true when it did): a failed attempt's (`Again::Retry`), or a job a rate limit holds
/// back (its attempt count unchanged).
async fn retry_later(
    rt: &Runtime,
    d: &Delivery,
    env: &Envelope,
    delay: Duration,
    again: Again,
    error: &str,
) -> bool {
    let mut about = redis::status_about(&d.queue, env);
    if again != Again::Retry {
        // Held back before it ran: this attempt has not started.
        for (field, value) in &mut about {
            if *field == "attempts" {
                *value = env.attempt.saturating_sub(1).to_string();
            }
        }
    }
    let retry = redis::Retry {
        again,
        queue: &d.queue,
        priority: d.priority,
        stream: &d.stream,
        entry_id: &d.entry_id,
        consumer: &rt.settings.consumer,
        job_id: &env.id,
        delay_ms: crate::clock::clamped_ms(delay),
        retention_ms: rt.client.status_retention_ms(),
        error,
        about: &about,
    };
    match with_retries(|| rt.client.store().retry_later(&retry)).await {
        Ok(Fenced::LeaseLost) => {
            tracing::warn!(entry = %d.entry_id, "lease lost before retrying; another worker owns the entry now");
            false
        }
        Ok(Fenced::Done | Fenced::Deleted) => true,
        Err(e) => {
            tracing::error!(entry = %d.entry_id, error = %e, "could not schedule the retry; the entry stays pending");
            false
        }
    }
}

/// Runs a fenced script, retrying while Redis is unreachable or slow (the scripts are safe
/// to repeat: a second run finds the entry gone from this consumer and does nothing).
async fn with_retries<R, F, Fut>(mut call: F) -> crate::Result<R>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Result<R>>,
{
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if tries < 8 && e.is_connection() => {
                tries += 1;
                backoff.sleep().await;
            }
            other => return other,
        }
    }
}
