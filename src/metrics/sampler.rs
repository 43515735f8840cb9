//! The queue sampler: one task per [`Metrics`] value (so one per process) refreshes the
//! queue gauges from Redis on an interval, whatever the number of scrapes or workers.
//!
//! Workers register their queues while they run ([`Metrics::watch`]); the task starts with
//! the first registration and ends when the last is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::labels::{LimitLabel, LimitQueueLabel};
use super::{Metrics, QueueLabel, QueuePriority};
use crate::redis::LIVE_WORKER_WINDOW_MS;
use crate::{Client, Priority};

pub(crate) struct Sampler {
    interval: Mutex<Duration>,
    state: Mutex<State>,
    /// The limit series set in the last round, so those of removed limits go.
    limit_series: Mutex<(HashSet<LimitLabel>, HashSet<LimitQueueLabel>)>,
}

#[derive(Default)]
struct State {
    /// (key prefix, queue) -> the client to ask and how many registrations hold it.
    watched: BTreeMap<(String, String), (Client, usize)>,
    /// Clients whose every known queue is sampled (admin servers), by key prefix.
    everything: BTreeMap<String, Client>,
    running: bool,
}

/// Keeps a set of queues sampled while it lives.
#[must_use = "the queues are sampled while the guard lives"]
pub(crate) struct WatchGuard {
    metrics: Metrics,
    keys: Vec<(String, String)>,
}

impl Sampler {
    pub(super) fn new(interval: Duration) -> Self {
        Sampler {
            interval: Mutex::new(interval),
            state: Mutex::new(State::default()),
            limit_series: Mutex::default(),
        }
    }

    pub(super) fn set_interval(&self, interval: Duration) {
        *self.interval.lock().unwrap_or_else(|p| p.into_inner()) = interval;
    }

    fn interval(&self) -> Duration {
        *self.interval.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Metrics {
    /// Samples `queues` (through `client`) until the guard is dropped. Must be called inside
    /// a Tokio runtime.
    pub(crate) fn watch(&self, client: &Client, queues: &[String]) -> WatchGuard {
        let prefix = client.keys().prefix().to_string();
        let keys: Vec<(String, String)> =
            queues.iter().map(|q| (prefix.clone(), q.clone())).collect();
        let start = {
            let mut st = self.sampler().state();
            for k in &keys {
                st.watched
                    .entry(k.clone())
                    .or_insert_with(|| (client.clone(), 0))
                    .1 += 1;
            }
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            tokio::spawn(run(self.clone()));
        }
        WatchGuard {
            metrics: self.clone(),
            keys,
        }
    }
}

impl Metrics {
    /// Samples every known queue of `client`'s prefix (as listed in `<prefix>:queues`,
    /// read again each round) for as long as these metrics live. Must be called inside a
    /// Tokio runtime.
    pub fn watch_all_queues(&self, client: &Client) {
        let start = {
            let mut st = self.sampler().state();
            st.everything
                .insert(client.keys().prefix().to_string(), client.clone());
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            tokio::spawn(run(self.clone()));
        }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut st = self.metrics.sampler().state();
        for k in &self.keys {
            if let Some(w) = st.watched.get_mut(k) {
                w.1 -= 1;
                if w.1 == 0 {
                    st.watched.remove(k);
                }
            }
        }
    }
}

async fn run(metrics: Metrics) {
    loop {
        let watched: Vec<(String, String, Client)> = {
            let mut st = metrics.sampler().state();
            if st.watched.is_empty() {
                st.running = false;
                return;
            }
            st.watched
                .iter()
                .map(|((prefix, queue), (client, _))| {
                    (prefix.clone(), queue.clone(), client.clone())
                })
                .collect()
        };
        sample(&metrics, &watched).await;
        tokio::time::sleep(metrics.sampler().interval()).await;
    }
}

/// One round: every watched queue's counts, and the live workers of each key prefix.
async fn sample(metrics: &Metrics, watched: &[(String, String, Client)]) {
    let f = metrics.families();
    let mut by_prefix: HashMap<&str, (&Client, Vec<&str>)> = HashMap::new();
    for (prefix, queue, client) in watched {
        by_prefix
            .entry(prefix.as_str())
            .or_insert_with(|| (client, Vec::new()))
            .1
            .push(queue.as_str());
        match client.store().queue_counts(queue).await {
            Ok(c) => {
                for p in Priority::ALL {
                    let qp = QueuePriority::new(queue, p);
                    f.ready.get_or_create(&qp).set(c.ready[p.index()] as i64);
                    f.pending
                        .get_or_create(&qp)
                        .set(c.pending[p.index()] as i64);
                }
                let ql = QueueLabel::new(queue);
                f.scheduled.get_or_create(&ql).set(c.scheduled as i64);
                f.dead_depth.get_or_create(&ql).set(c.dead as i64);
                f.oldest_waiting
                    .get_or_create(&ql)
                    .set(c.oldest_waiting_ms as f64 / 1000.0);
            }
            // The gauges keep their last values; the next round tries again.
            Err(e) => tracing::debug!(queue = %queue, error = %e, "sampling queue depths failed"),
        }
    }
    for (client, _) in by_prefix.values() {
        sample_limits(metrics, client).await;
    }
    for (client, queues) in by_prefix.values() {
        let live = match client.store().live_workers(LIVE_WORKER_WINDOW_MS).await {
            Ok(live) => live,
            Err(e) => {
                tracing::debug!(error = %e, "sampling live workers failed");
                continue;
            }
        };
        for queue in queues {
            let n = live
                .iter()
                .filter(|(_, details)| {
                    details
                        .get("queues")
                        .is_some_and(|qs| qs.split(',').any(|q| q == *queue))
                })
                .count();
            f.workers
                .get_or_create(&QueueLabel::new(queue))
                .set(n as i64);
        }
    }
}

/// Every limit of `client`'s prefix: its shape, and what it holds on each queue. The
/// series of a limit removed since the last round are removed.
async fn sample_limits(metrics: &Metrics, client: &Client) {
    let limits = match client.admin().limits().await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "sampling limits failed");
            return;
        }
    };
    let f = metrics.families();
    let mut shapes: HashSet<LimitLabel> = HashSet::new();
    let mut states: HashSet<LimitQueueLabel> = HashSet::new();
    for l in &limits {
        let label = LimitLabel {
            scope: l.scope.to_string(),
            name: l.name.clone(),
        };
        if let Some(r) = l.rate_per_second {
            f.limit_rate.get_or_create(&label).set(r);
        }
        if let Some(n) = l.max_running {
            f.limit_max_running.get_or_create(&label).set(i64::from(n));
        }
        for q in &l.queues {
            let on = LimitQueueLabel {
                scope: l.scope.to_string(),
                name: l.name.clone(),
                queue: q.queue.clone(),
            };
            if let Some(t) = q.tokens {
                f.limit_tokens.get_or_create(&on).set(t);
            } else {
                f.limit_tokens.remove(&on);
            }
            if let Some(n) = q.running {
                f.limit_running.get_or_create(&on).set(n as i64);
            } else {
                f.limit_running.remove(&on);
            }
            states.insert(on);
        }
        shapes.insert(label);
    }
    let mut last = metrics
        .sampler()
        .limit_series
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for gone in last.0.difference(&shapes) {
        f.limit_rate.remove(gone);
        f.limit_max_running.remove(gone);
        if gone.scope == "queue" {
            f.capacity.remove(&QueueLabel::new(&gone.name));
        }
    }
    for gone in last.1.difference(&states) {
        f.limit_tokens.remove(gone);
        f.limit_running.remove(gone);
    }
    // A limit that lost only its rate (or its concurrency) part keeps the other series.
    for l in &limits {
        let label = LimitLabel {
            scope: l.scope.to_string(),
            name: l.name.clone(),
        };
        if l.rate_per_second.is_none() {
            f.limit_rate.remove(&label);
        }
        if l.max_running.is_none() {
            f.limit_max_running.remove(&label);
        }
        if l.scope == "queue" {
            let queue = QueueLabel::new(&l.name);
            match l.capacity {
                Some(n) => {
                    f.capacity.get_or_create(&queue).set(n as i64);
                }
                None => {
                    f.capacity.remove(&queue);
                }
            }
        }
    }
    *last = (shapes, states);
}
