//! The defaults a handler gives its jobs.

use std::time::Duration;

use crate::Priority;
use crate::limit::RateLimit;
use crate::retry::RetryPolicy;

/// Attempts a job gets when neither the handler nor the enqueue call says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// How long one attempt may run when neither the handler nor the enqueue call says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Defaults a handler gives its jobs; the `#[job_handler]` options end up here.
///
/// Built with `const fn`s so the macro can emit it as a constant. Options given at enqueue
/// time win over these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerOptions {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: Option<Priority>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) keep_succeeded: Option<Duration>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) key_rate_limit: Option<RateLimit>,
    pub(crate) limit_key: Option<&'static str>,
    pub(crate) concurrency_limit: Option<u32>,
    pub(crate) key_concurrency_limit: Option<u32>,
}

impl HandlerOptions {
    /// No defaults of its own: the library's (and the worker's) apply.
    pub const fn new() -> Self {
        HandlerOptions {
            max_attempts: None,
            timeout: None,
            priority: None,
            retry: None,
            keep_succeeded: None,
            rate_limit: None,
            key_rate_limit: None,
            limit_key: None,
            concurrency_limit: None,
            key_concurrency_limit: None,
        }
    }

    /// At most `running` jobs of this type run at once, across every worker
    /// (`#[job_handler(concurrency_limit = 2)]`). A job that finds the limit full waits,
    /// its attempt count unchanged. Recorded in Redis when a worker starts, like
    /// [`rate_limit`](Self::rate_limit).
    pub const fn concurrency_limit(mut self, running: u32) -> Self {
        self.concurrency_limit = Some(running);
        self
    }

    /// At most `running` jobs of this type per key run at once, each key counted apart
    /// (`#[job_handler(limit_key = "tenant", concurrency_limit_per_key = 1)]`); `field`
    /// names the key, as for [`rate_limit_per_key`](Self::rate_limit_per_key).
    pub const fn concurrency_limit_per_key(mut self, field: &'static str, running: u32) -> Self {
        self.limit_key = Some(field);
        self.key_concurrency_limit = Some(running);
        self
    }

    /// At most this many jobs of this type start per period, across every worker
    /// (`#[job_handler(rate_limit = "50/s")]`). A job that finds no token waits, its
    /// attempt count unchanged. The worker records it in Redis when it starts; an
    /// operator's change there wins until a worker declaring another one starts.
    pub const fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// At most this many jobs of this type per key start per period, each key counted
    /// apart (`#[job_handler(limit_key = "customer_id", rate_limit_per_key = "5/s")]`).
    /// The key is what [`JobHandler::limit_key`](crate::JobHandler::limit_key) derives
    /// from the payload; `field` names it (for errors and the dashboard).
    pub const fn rate_limit_per_key(mut self, field: &'static str, limit: RateLimit) -> Self {
        self.limit_key = Some(field);
        self.key_rate_limit = Some(limit);
        self
    }

    /// How long a succeeded job of this type keeps its success record, so its status
    /// answers `succeeded` (default: the worker's setting for the queue, else the client's
    /// job status retention, 24 h unless set). `Duration::ZERO` writes nothing on success:
    /// the cheapest setting for jobs nobody looks up once done.
    pub const fn keep_succeeded(mut self, retention: Duration) -> Self {
        self.keep_succeeded = Some(retention);
        self
    }

    /// How long failed jobs wait before their next attempt (default: the worker's policy,
    /// itself exponential from 1 s to 10 min with jitter unless set).
    pub const fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Attempts before a failing job is dead-lettered, at least 1. Jobs enqueued without
    /// their own `max_attempts` get this, whoever enqueued them.
    ///
    /// # Panics
    ///
    /// When `n` is 0 (in a constant, as `#[job_handler]` makes, that is a compile error):
    /// 0 is never a budget. In a stream entry and a job's status, `max_attempts` 0 means
    /// that none was set, and the handler's applies.
    pub const fn max_attempts(mut self, n: u32) -> Self {
        assert!(n > 0, "max_attempts must be at least 1");
        self.max_attempts = Some(n);
        self
    }

    /// How long one attempt may run before it is cancelled and counted as failed.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The priority jobs get unless the enqueue call sets one.
    pub const fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The attempts in effect: this handler's, or [`DEFAULT_MAX_ATTEMPTS`].
    pub fn effective_max_attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }

    /// The timeout in effect: this handler's, or [`DEFAULT_TIMEOUT`].
    pub fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::HandlerOptions;

    #[test]
    #[should_panic(expected = "max_attempts must be at least 1")]
    fn zero_attempts_is_not_a_budget() {
        let n = std::hint::black_box(0);
        let _ = HandlerOptions::new().max_attempts(n);
    }

    #[test]
    fn a_budget_is_kept() {
        assert_eq!(
            HandlerOptions::new()
                .max_attempts(3)
                .effective_max_attempts(),
            3
        );
    }
}
