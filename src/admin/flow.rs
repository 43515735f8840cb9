//! Rate and concurrency limits and queue capacities as operators see and change them:
//! every limit with what it holds now on each queue (tokens left, jobs running, jobs
//! waiting in a bounded queue), and changes checked against the live workers' job types.
//! The HTTP API and the CLI call these.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Admin;
use crate::limit::{LimitScope, RateLimit, check_running, concurrency_field};
use crate::{Error, Result};

/// One scope's limits, as [`Admin::limits`] lists them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LimitInfo {
    /// `queue`, `type` or `key` (each key of a job type, counted apart).
    pub scope: &'static str,
    /// The queue or job type.
    pub name: String,
    /// The rate limit, as written (`50/1s burst 10`).
    pub rate: Option<String>,
    /// Jobs per second at the rate limit's steady rate.
    pub rate_per_second: Option<f64>,
    /// The rate limit's burst.
    pub burst: Option<u32>,
    /// The concurrency limit: jobs running at once at most.
    pub max_running: Option<u32>,
    /// A queue's capacity: jobs it may hold waiting (README, "Bounded queues").
    pub capacity: Option<u64>,
    /// Per queue the limit applies to (for a type: the queues its live workers consume,
    /// and any other whose jobs used it lately): its tokens and places now. Not for
    /// per-key limits, which have a bucket and a set per key.
    pub queues: Vec<LimitOnQueue>,
}

/// What one limit holds now on one queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LimitOnQueue {
    /// The queue.
    pub queue: String,
    /// Tokens that would let jobs start now (up to the burst), when it has a rate limit.
    pub tokens: Option<f64>,
    /// Jobs running under the concurrency limit now, when it has one.
    pub running: Option<u64>,
    /// Jobs waiting in the queue now (ready and scheduled, over its partitions), when it
    /// has a capacity.
    pub waiting: Option<u64>,
    /// Jobs the queue refused for want of room, over its life, when it has a capacity.
    pub refused: Option<u64>,
}

/// A change to one scope's limits: `None` leaves a limit as it is, `Some(None)` removes it,
/// `Some(Some(_))` sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitChange {
    /// The rate limit.
    pub rate: Option<Option<RateLimit>>,
    /// The concurrency limit.
    pub max_running: Option<Option<u32>>,
    /// The capacity (a `queue` scope only).
    pub capacity: Option<Option<u64>>,
}

impl LimitChange {
    /// Sets or removes the rate limit.
    pub fn rate(mut self, rate: Option<RateLimit>) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets or removes the concurrency limit.
    pub fn max_running(mut self, n: Option<u32>) -> Self {
        self.max_running = Some(n);
        self
    }

    /// Sets or removes the capacity of a queue.
    pub fn capacity(mut self, n: Option<u64>) -> Self {
        self.capacity = Some(n);
        self
    }
}

impl Admin {
    /// Every rate and concurrency limit in Redis, one row per scope, with the tokens and
    /// running jobs each holds now on each known queue.
    pub async fn limits(&self) -> Result<Vec<LimitInfo>> {
        let mut rows: BTreeMap<LimitScope, LimitInfo> = BTreeMap::new();
        let row = |rows: &mut BTreeMap<LimitScope, LimitInfo>, scope: &LimitScope| {
            rows.entry(scope.clone())
                .or_insert_with(|| LimitInfo {
                    scope: scope.kind(),
                    name: scope.name().to_string(),
                    rate: None,
                    rate_per_second: None,
                    burst: None,
                    max_running: None,
                    capacity: None,
                    queues: Vec::new(),
                })
                .clone()
        };
        let rates = self.client.rate_limits().await?;
        let running = self.client.concurrency_limits().await?;
        for (scope, l) in &rates {
            let mut r = row(&mut rows, scope);
            r.rate = Some(l.to_string());
            r.rate_per_second = Some(f64::from(l.count()) / l.per().as_secs_f64());
            r.burst = Some(l.burst());
            rows.insert(scope.clone(), r);
        }
        for (scope, n) in &running {
            let mut r = row(&mut rows, scope);
            r.max_running = Some(*n);
            rows.insert(scope.clone(), r);
        }
        for (queue, n) in self.client.queue_capacities().await? {
            let scope = LimitScope::Queue(queue);
            let mut r = row(&mut rows, &scope);
            r.capacity = Some(n);
            rows.insert(scope, r);
        }
        let queues = self.queue_names().await?;
        // The queues each job type is consumed from, by the live workers that handle it.
        let mut served: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if rows.keys().any(|s| matches!(s, LimitScope::Type(_))) {
            for w in self.workers().await? {
                for t in &w.job_types {
                    let list = served.entry(t.clone()).or_default();
                    for q in &w.queues {
                        let q = crate::names::queue_of(q).to_string();
                        if !list.contains(&q) {
                            list.push(q);
                        }
                    }
                }
            }
        }
        let keys = self.client.keys();
        let now = crate::clock::now_ms();
        for (scope, r) in rows.iter_mut() {
            let candidates: Vec<String> = match scope {
                LimitScope::Queue(q) => vec![q.clone()],
                LimitScope::Type(_) => queues.clone(),
                LimitScope::Key(_) => continue,
            };
            let (waiting, refused) = match (scope, r.capacity) {
                (LimitScope::Queue(q), Some(_)) => {
                    let (w, r) = self.waiting(q).await?;
                    (Some(w), Some(r))
                }
                _ => (None, None),
            };
            let rate = rates.iter().find(|(s, _)| s == scope).map(|(_, l)| *l);
            let has_running = r.max_running.is_some();
            let buckets: Vec<String> = match rate {
                Some(_) => candidates
                    .iter()
                    .map(|q| keys.bucket(q, &scope.field(), None))
                    .collect(),
                None => Vec::new(),
            };
            let sets: Vec<String> = if has_running {
                candidates
                    .iter()
                    .map(|q| keys.running(q, &scope.field(), None))
                    .collect()
            } else {
                Vec::new()
            };
            let (tats, counts) = self
                .client
                .store()
                .limit_state(&buckets, &sets, now)
                .await?;
            for (i, q) in candidates.iter().enumerate() {
                let tokens = rate.map(|l| {
                    let tat = tats.get(i).copied().flatten();
                    tokens_now(&l, tat, now as f64)
                });
                let running = has_running.then(|| counts.get(i).copied().unwrap_or(0));
                // A type's limit shows on the queues its live workers consume, and on any
                // other that used it lately (a bucket or a place).
                let used = match scope {
                    LimitScope::Type(t) => served.get(t).is_some_and(|qs| qs.contains(q)),
                    _ => true,
                } || tats.get(i).copied().flatten().is_some()
                    || running.is_some_and(|n| n > 0);
                if used {
                    r.queues.push(LimitOnQueue {
                        queue: q.clone(),
                        tokens,
                        running,
                        waiting,
                        refused,
                    });
                }
            }
        }
        Ok(rows.into_values().collect())
    }

    /// Changes the limits of `scope`, for every worker within about a second. A job type
    /// (for a `type` or `key` scope) must be one that a live worker has a handler for:
    /// otherwise [`Error::InvalidInput`] says so, since a limit on a mistyped name would
    /// limit nothing. A limit that is none (0 jobs, 0 running) is `InvalidInput` too.
    pub async fn set_limits(&self, scope: &LimitScope, change: &LimitChange) -> Result<()> {
        scope.check()?;
        if let Some(Some(l)) = &change.rate {
            l.check()
                .map_err(|why| Error::InvalidInput(format!("rate limit of {scope}: {why}")))?;
        }
        if let Some(Some(n)) = &change.max_running {
            check_running(scope, *n).map_err(Error::InvalidInput)?;
        }
        if let Some(capacity) = change.capacity {
            let LimitScope::Queue(queue) = scope else {
                return Err(Error::InvalidInput(format!(
                    "a capacity bounds a queue, not {scope}: use the queue scope"
                )));
            };
            match capacity {
                Some(n) => {
                    crate::bounded::check_capacity(n)?;
                    self.client.set_queue_capacity(queue, n).await?;
                }
                None => {
                    self.client.remove_queue_capacity(queue).await?;
                }
            }
        }
        if let LimitScope::Type(t) | LimitScope::Key(t) = scope {
            let known = self
                .workers()
                .await?
                .iter()
                .any(|w| w.job_types.iter().any(|k| k == t));
            let removing_only = change.rate.is_none_or(|r| r.is_none())
                && change.max_running.is_none_or(|r| r.is_none());
            if !known && !removing_only {
                return Err(Error::InvalidInput(format!(
                    "unknown job type {t:?}: no live worker has a handler for it (a limit on it would limit nothing; check the name, or start a worker first)"
                )));
            }
        }
        let store = self.client.store();
        let mut set: Vec<(String, String)> = Vec::new();
        if let Some(rate) = &change.rate {
            match rate {
                Some(l) => set.push((scope.field(), l.to_string())),
                None => {
                    store.remove_limit_field(&scope.field()).await?;
                }
            }
        }
        if let Some(running) = &change.max_running {
            match running {
                Some(n) => set.push((concurrency_field(scope), n.to_string())),
                None => {
                    store.remove_limit_field(&concurrency_field(scope)).await?;
                }
            }
        }
        store.set_limit_fields(&set).await
    }
}

impl Admin {
    /// Jobs waiting in `queue` (ready and scheduled) and jobs it refused, over its
    /// partitions.
    async fn waiting(&self, queue: &str) -> Result<(u64, u64)> {
        let parts = self.client.partition_names(queue).await?;
        let store = self.client.store();
        let counts =
            futures::future::try_join_all(parts.iter().map(|q| store.queue_counts(q))).await?;
        let totals = futures::future::try_join_all(parts.iter().map(|q| store.totals(q))).await?;
        let waiting = counts
            .iter()
            .map(|c| c.ready.iter().sum::<u64>() + c.scheduled)
            .sum();
        let refused = totals
            .iter()
            .map(|t| t.get("refused").copied().unwrap_or(0))
            .sum();
        Ok((waiting, refused))
    }
}

/// Tokens a bucket whose next free time is `tat` (`None`: idle) holds at `now`, up to the
/// burst.
fn tokens_now(l: &RateLimit, tat: Option<f64>, now: f64) -> f64 {
    let burst = f64::from(l.burst());
    let Some(tat) = tat else { return burst };
    let interval = l.interval_ms();
    let tolerance = interval * (burst - 1.0);
    // A job conforms while tat - tolerance <= now; each one moves tat on by an interval.
    (((now - (tat - tolerance)) / interval).floor() + 1.0).clamp(0.0, burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_bucket() {
        let l = RateLimit::per_second(10).with_burst(5);
        assert_eq!(tokens_now(&l, None, 1000.0), 5.0);
        // Just used: tat = now + one interval per job taken.
        assert_eq!(tokens_now(&l, Some(1000.0 + 500.0), 1000.0), 0.0);
        assert_eq!(tokens_now(&l, Some(1000.0 + 100.0), 1000.0), 4.0);
        assert_eq!(tokens_now(&l, Some(0.0), 1000.0), 5.0);
    }

    #[test]
    fn scopes_are_named_queue_type_or_key() {
        assert_eq!(
            LimitScope::parse("type", "email.send").ok(),
            Some(LimitScope::Type("email.send".into()))
        );
        assert!(matches!(
            LimitScope::parse("tenant", "x"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            LimitScope::parse("queue", "no spaces"),
            Err(Error::InvalidName { .. })
        ));
    }
}
