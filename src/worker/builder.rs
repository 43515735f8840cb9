//! The worker's builder: collects handlers and settings, and checks them at `build`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Settings, Worker, periodic};
use crate::handler::{JobHandler, Registry};
use crate::health::ConsumeState;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::priority::PriorityWeights;
use crate::retry::RetryPolicy;
use crate::{Client, Error, Result};

/// Settings for a [`Worker`].
#[must_use = "call build() to get a worker"]
pub struct WorkerBuilder {
    pub(super) client: Client,
    pub(super) registry: Registry,
    pub(super) errors: Vec<String>,
    /// The queues to consume when set; else the handlers' own.
    pub(super) queues: Option<Vec<String>>,
    /// The consumer name when set; else one made up at build time.
    consumer: Option<String>,
    /// The other settings; queues and consumer are filled in by `build`.
    settings: Settings,
    /// Cron schedules this worker runs (see `periodic`).
    pub(super) periodic: Vec<periodic::CronSchedule>,
    observers: Vec<Arc<dyn Observer>>,
    metrics: Option<Metrics>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.queues)
            .field("concurrency", &self.settings.concurrency)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Registers a handler (`send_email::handler()` for a `#[job_handler] fn send_email`).
    /// Its queue is consumed unless [`queues`](Self::queues) says otherwise.
    pub fn handler<H: JobHandler>(mut self, handler: H) -> Self {
        if let Err(e) = self.registry.insert(handler) {
            self.errors.push(e);
        }
        self
    }

    /// The queues to consume, replacing the handlers' own. Every registered handler runs
    /// for its job type on every one of these queues.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Declares that `queue` has `n` partitions (1 to 128), as
    /// [`Client::declare_partitions`](crate::Client::declare_partitions) does, when the
    /// worker starts; its run fails with [`Error::InvalidConfig`] if another count is
    /// recorded. A worker that declares nothing consumes whatever count is recorded.
    pub fn partitions(mut self, queue: impl Into<String>, n: u16) -> Self {
        self.settings.partitions.push((queue.into(), n));
        self
    }

    /// Declares a rate limit, fleet-wide: at most `limit` jobs of `scope` (a queue, a job
    /// type, or each key of a job type) start per period, across every worker. The worker
    /// records it in Redis when it starts, where every worker reads it; a handler's own
    /// `rate_limit` for the same type wins. A job that finds no token is not run and not
    /// failed: it waits, its attempt count unchanged. See [`RateLimit`](crate::RateLimit).
    ///
    /// ```no_run
    /// # async fn run(client: stevedore::Client, w: stevedore::WorkerBuilder) {
    /// use stevedore::{LimitScope, RateLimit};
    /// let w = w.rate_limit(LimitScope::Queue("emails".into()), RateLimit::per_second(100));
    /// # }
    /// ```
    pub fn rate_limit(mut self, scope: crate::LimitScope, limit: crate::RateLimit) -> Self {
        self.settings.rate_limits.push((scope, limit));
        self
    }

    /// Declares a concurrency limit, fleet-wide: at most `running` jobs of `scope` (a queue,
    /// a job type, or each key of a job type) run at once across every worker. Recorded in
    /// Redis when the worker starts, like [`rate_limit`](Self::rate_limit); a handler's own
    /// `concurrency_limit` for the same type wins. A place is held while its job runs,
    /// renewed with its lease, so a killed worker's places free up once the lease runs out.
    pub fn concurrency_limit(mut self, scope: crate::LimitScope, running: u32) -> Self {
        self.settings.concurrency_limits.push((scope, running));
        self
    }

    /// Handlers running at once, across all queues (default 10). A full worker stops
    /// fetching until a slot frees up.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n;
        self
    }

    /// How free slots are split between priorities (default 6 : 3 : 1).
    pub fn priority_weights(mut self, weights: PriorityWeights) -> Self {
        self.settings.weights = weights;
        self
    }

    /// Bounds how long a `normal` or `low` job waits behind higher priorities (off by
    /// default): once the oldest job waiting in a lower stream has waited `bound`, this
    /// worker's fetches serve that stream first, oldest first, until its oldest waiting
    /// job is younger than `bound`. So under a steady flood of `high` jobs a `low` one
    /// starts after about `bound`, plus the check interval (a tenth of `bound`, 20 ms to
    /// 1 s) and the time to run the aged jobs queued before it. The wait counts from when
    /// the job entered its stream (a delayed or retried job: when it became due); a
    /// partitioned queue ages per partition (README, "Priority aging"). At least 10 ms
    /// (`InvalidConfig` at `build`).
    pub fn priority_aging(mut self, bound: Duration) -> Self {
        self.settings.priority_aging = Some(bound);
        self
    }

    /// How long the handler of a job cancelled while it runs may take to stop (default
    /// 5 s). The worker learns of the cancel within about a second and fires the job's
    /// [`JobContext::cancelled`](crate::JobContext::cancelled); a handler still running
    /// `grace` later is dropped. Either way the job ends `cancelled`, neither retried nor
    /// dead-lettered (README, "Cancel, delete, purge"). Zero drops it at once.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.settings.cancel_grace = grace;
        self
    }

    /// How long after a chain, a job with dependencies or a batch was written, unfinished,
    /// the janitor finishes writing it (default [`FLOW_REPAIR_AFTER`], 60 s; at least 1 s,
    /// `InvalidConfig` at `build`). A client that stops half-way through
    /// [`Client::enqueue_after`], [`enqueue_chain`] or [`enqueue_batch`] (a crash, a lost
    /// connection) leaves jobs that would wait for ever: the janitor registers them with
    /// what they wait for, releases those that wait for nothing and seals the batch, or,
    /// when part of the flow was never written, cancels what depends on it (README,
    /// "Chains, dependencies, batches"). Keep it well above the time your largest flow
    /// takes to enqueue.
    ///
    /// [`Client::enqueue_after`]: crate::Client::enqueue_after
    /// [`enqueue_chain`]: crate::Client::enqueue_chain
    /// [`enqueue_batch`]: crate::Client::enqueue_batch
    /// [`FLOW_REPAIR_AFTER`]: crate::flow::FLOW_REPAIR_AFTER
    pub fn flow_repair_after(mut self, after: Duration) -> Self {
        self.settings.flow_repair_after = after;
        self
    }

    /// Retry policy for handlers that do not set their own, and for job types this worker
    /// does not know (default: exponential from 1 s to 10 min, with jitter).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry_policy = policy;
        self
    }

    /// How long an entry may stay pending without its worker renewing it before a janitor
    /// takes it back (default 30 s). Running jobs renew every lease/3, so this bounds how
    /// long a crashed worker's jobs wait, not how long a job may run.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// Keeps dead letters of this worker's queues for `retention` (by failure time, on
    /// Redis' clock); the janitor purges older ones. Unset by default: dead letters stay
    /// until replayed or purged.
    pub fn dlq_retention(mut self, retention: Duration) -> Self {
        self.settings.dlq_retention = Some(retention);
        self
    }

    /// Keeps the success record of `queue`'s jobs for `retention` after they finish
    /// (`Duration::ZERO`: none is written, and their status is unknown once they are done).
    /// Default: the client's job status retention (24 h unless set); a handler's own
    /// [`HandlerOptions::keep_succeeded`](crate::HandlerOptions::keep_succeeded) wins.
    pub fn keep_succeeded(mut self, queue: impl Into<String>, retention: Duration) -> Self {
        self.settings.keep_succeeded.insert(queue.into(), retention);
        self
    }

    /// Bounds the memory of `queue`'s success records (its done buckets) to about `bytes`,
    /// besides their retention: each janitor round (lease/2) sums them newest first, by
    /// Redis' estimate (`MEMORY USAGE`), and deletes the oldest minutes of records past the
    /// budget, whole. A job whose record was deleted reads as unknown, like an expired one.
    /// Between rounds the records may pass the budget by what a round writes. Default: no
    /// budget, records are bounded by their retention only. Records in status hashes (jobs
    /// that were delayed, retried or replayed) are not counted: their retention bounds them.
    pub fn succeeded_budget(mut self, queue: impl Into<String>, bytes: u64) -> Self {
        self.settings.succeeded_budget.insert(queue.into(), bytes);
        self
    }

    /// Deliveries after which an entry whose workers keep dying is dead-lettered as
    /// `poison` (default 3). Separate from `max_attempts`, which counts handler failures.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.settings.max_deliveries = n;
        self
    }

    /// How long shutdown waits for running jobs before leaving them pending (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.settings.drain_timeout = timeout;
        self
    }

    /// The consumer name in the queues' groups (default: host name, process id and a random
    /// suffix, unique per run).
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Reports this worker's job events to `observer` too, after the client's observers.
    /// See [`observe`](crate::observe).
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Records this worker in `metrics`: its job events (unless the client already reports
    /// to the same `metrics`), its concurrency and in-flight gauges, and its queues' depths,
    /// sampled from Redis while it runs. See [`Metrics`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Worker> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(Error::InvalidConfig(e));
        }
        if self.registry.is_empty() {
            return Err(Error::InvalidConfig(
                "a worker needs at least one handler".into(),
            ));
        }
        check_limits(
            &self.settings.rate_limits,
            &self.settings.concurrency_limits,
            &self.registry,
        )?;
        let mut settings = self.settings;
        settings.queues = distinct(
            self.queues
                .unwrap_or_else(|| self.registry.queues().to_vec()),
        );
        // Every worker delivers the webhooks of its queues (README, "Webhooks").
        let mut registry = self.registry;
        registry.insert_builtin(crate::webhook::Deliver::new(self.client.clone()));
        settings.consumer = self.consumer.unwrap_or_else(default_consumer_name);
        settings.check()?;
        Ok(Worker {
            client: self.client,
            registry,
            periodic: self.periodic,
            observers: self.observers,
            metrics: self.metrics,
            consume_state: Arc::new(ConsumeState::new(&settings.queues)),
            settings,
        })
    }
}

/// Refuses a declared rate limit that is no limit, or whose scope names no queue or type.
fn check_limits(
    declared: &[(crate::LimitScope, crate::RateLimit)],
    running: &[(crate::LimitScope, u32)],
    registry: &Registry,
) -> Result<()> {
    use crate::LimitScope;
    let handlers = registry.options().flat_map(|(name, o)| {
        [
            o.rate_limit
                .map(|l| (LimitScope::Type(name.to_string()), l)),
            o.key_rate_limit
                .map(|l| (LimitScope::Key(name.to_string()), l)),
        ]
        .into_iter()
        .flatten()
    });
    for (scope, limit) in declared.iter().cloned().chain(handlers) {
        scope
            .check()
            .map_err(|e| Error::InvalidConfig(format!("rate limit of {scope}: {e}")))?;
        limit
            .check()
            .map_err(|why| Error::InvalidConfig(format!("rate limit of {scope}: {why}")))?;
    }
    let handlers = registry.options().flat_map(|(name, o)| {
        [
            o.concurrency_limit
                .map(|n| (LimitScope::Type(name.to_string()), n)),
            o.key_concurrency_limit
                .map(|n| (LimitScope::Key(name.to_string()), n)),
        ]
        .into_iter()
        .flatten()
    });
    for (scope, n) in running.iter().cloned().chain(handlers) {
        scope
            .check()
            .map_err(|e| Error::InvalidConfig(format!("concurrency limit of {scope}: {e}")))?;
        crate::limit::check_running(&scope, n).map_err(Error::InvalidConfig)?;
    }
    Ok(())
}

/// `queues` with repeats left out, in the order of their first mention.
fn distinct(queues: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    queues
        .into_iter()
        .filter(|q| seen.insert(q.clone()))
        .collect()
}

fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".to_string());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

impl WorkerBuilder {
    pub(super) fn new(client: Client) -> Self {
        WorkerBuilder {
            client,
            registry: Registry::default(),
            errors: Vec::new(),
            queues: None,
            consumer: None,
            settings: Settings::default(),
            periodic: Vec::new(),
            observers: Vec::new(),
            metrics: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::distinct;

    #[test]
    fn repeated_queues_are_consumed_once_in_first_mention_order() {
        let q = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(distinct(q(&["a", "b", "a", "c", "b"])), q(&["a", "b", "c"]));
    }
}
