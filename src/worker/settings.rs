//! A worker's settings as one value: made by the builder, checked once at `build`, then
//! shared by every task of the running worker through its `Runtime`.

use std::time::Duration;

use super::{DEFAULT_CONCURRENCY, DEFAULT_DRAIN_TIMEOUT, DEFAULT_LEASE, DEFAULT_MAX_DELIVERIES};
use crate::names::validate_name;
use crate::priority::PriorityWeights;
use crate::retry::RetryPolicy;
use crate::{Error, Result};

/// What a worker runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The queues consumed, each once, in the order given.
    pub(crate) queues: Vec<String>,
    /// This worker's consumer name in its queues' groups.
    pub(crate) consumer: String,
    /// Handlers running at once, across all queues.
    pub(crate) concurrency: usize,
    /// How free slots are split between priorities.
    pub(crate) weights: PriorityWeights,
    /// Retry policy for handlers without their own, and for unknown job types.
    pub(crate) retry_policy: RetryPolicy,
    /// How long an entry may stay pending unrenewed before a janitor takes it back.
    pub(crate) lease: Duration,
    /// Deliveries after which an unfinished entry is poison.
    pub(crate) max_deliveries: u32,
    /// Dead letters older than this are purged by the janitor.
    pub(crate) dlq_retention: Option<Duration>,
    /// How long shutdown waits for running jobs.
    pub(crate) drain_timeout: Duration,
    /// How long succeeded jobs of a queue keep their success record, where the worker sets
    /// it (handlers may set their own).
    pub(crate) keep_succeeded: std::collections::HashMap<String, Duration>,
    /// Per queue, the most memory its success records may take (bytes).
    pub(crate) succeeded_budget: std::collections::HashMap<String, u64>,
    /// Partition counts this worker declares, per queue.
    pub(crate) partitions: Vec<(String, u16)>,
    /// Rate limits this worker declares through its builder (its handlers' come on top).
    pub(crate) rate_limits: Vec<(crate::LimitScope, crate::RateLimit)>,
    /// Concurrency limits this worker declares through its builder.
    pub(crate) concurrency_limits: Vec<(crate::LimitScope, u32)>,
    /// How long a normal or low job may wait behind higher ones before it is served first.
    pub(crate) priority_aging: Option<Duration>,
    /// How long a cancelled job's handler may take to stop before it is dropped.
    pub(crate) cancel_grace: Duration,
    /// How long after a flow was written, unfinished, the janitor finishes or undoes it.
    pub(crate) flow_repair_after: Duration,
}

/// How long a cancelled job's handler may take to stop, by default.
pub(crate) const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queues: Vec::new(),
            consumer: String::new(),
            concurrency: DEFAULT_CONCURRENCY,
            weights: PriorityWeights::default(),
            retry_policy: RetryPolicy::default(),
            lease: DEFAULT_LEASE,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            dlq_retention: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            keep_succeeded: std::collections::HashMap::new(),
            succeeded_budget: std::collections::HashMap::new(),
            partitions: Vec::new(),
            rate_limits: Vec::new(),
            concurrency_limits: Vec::new(),
            priority_aging: None,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            flow_repair_after: crate::flow::FLOW_REPAIR_AFTER,
        }
    }
}

impl Settings {
    /// Refuses settings a worker cannot run with; the message names the setting.
    pub(crate) fn check(&self) -> Result<()> {
        let refuse = |why: &str| Err(Error::InvalidConfig(why.into()));
        if self.concurrency == 0 {
            return refuse("concurrency must be at least 1");
        }
        if self.lease < Duration::from_millis(30) {
            return refuse("lease must be at least 30 ms");
        }
        if self.max_deliveries == 0 {
            return refuse("max_deliveries must be at least 1");
        }
        if self
            .priority_aging
            .is_some_and(|b| b < Duration::from_millis(10))
        {
            return refuse("priority_aging must be at least 10 ms");
        }
        if self.flow_repair_after < Duration::from_secs(1) {
            return refuse("flow_repair_after must be at least 1 s");
        }
        if self.weights.all_zero() {
            return refuse("at least one priority weight must be above 0");
        }
        if self.queues.is_empty() {
            return refuse("a worker needs at least one queue");
        }
        for q in &self.queues {
            validate_name("queue", q)?;
        }
        for (q, n) in &self.partitions {
            validate_name("queue", q)?;
            if !(1..=crate::names::MAX_PARTITIONS).contains(n) {
                return refuse(&format!(
                    "queue {q:?}: a queue has 1 to {} partitions, not {n}",
                    crate::names::MAX_PARTITIONS
                ));
            }
        }
        if self.consumer.is_empty() || self.consumer.len() > 200 {
            return refuse("consumer name must have 1 to 200 characters");
        }
        Ok(())
    }
}
