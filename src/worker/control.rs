//! The worker's control loop: once a second it reads which queues are paused (so consume
//! loops stop and resume fetching) and which rate limits are in force, and adds the jobs it finished since the last round to
//! each queue's lifetime totals.
//!
//! Totals are counted in memory by an observer and flushed in one pipeline per round, so
//! the success path carries no extra Redis command; a worker that crashes loses at most its
//! last second of counts (they are statistics, not records: each job's own status and the
//! DLQ stay exact).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Runtime, Ticker};
use crate::observe::{DeadJobEvent, Failure, JobEvent, Observer};

/// How often pause flags are read and totals flushed.
pub(crate) const CONTROL_INTERVAL: Duration = Duration::from_secs(1);

/// Names of the lifetime totals, in the order [`Counts`] keeps them.
pub(crate) const TOTALS: [&str; 5] = ["succeeded", "failed", "retried", "dead", "reclaimed"];

type Counts = [u64; 5];

/// Counts finished jobs per queue until the next flush.
#[derive(Debug, Default)]
pub(crate) struct TotalsCounter {
    pending: Mutex<HashMap<String, Counts>>,
}

impl TotalsCounter {
    fn add(&self, queue: &str, which: usize, n: u64) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(queue) {
            Some(c) => c[which] += n,
            None => {
                let mut c = Counts::default();
                c[which] = n;
                map.insert(queue.to_string(), c);
            }
        }
    }

    fn take(&self) -> HashMap<String, Counts> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts counts that could not be flushed back, to go with the next round.
    fn restore(&self, counts: HashMap<String, Counts>) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (q, c) in counts {
            let e = map.entry(q).or_default();
            for (a, b) in e.iter_mut().zip(c) {
                *a += b;
            }
        }
    }
}

impl Observer for Arc<TotalsCounter> {
    fn succeeded(&self, job: &JobEvent<'_>, _took: Duration) {
        self.add(job.queue, 0, 1);
    }
    fn failed(&self, job: &JobEvent<'_>, _failure: &Failure<'_>) {
        self.add(job.queue, 1, 1);
    }
    fn retried(&self, job: &JobEvent<'_>, _delay: Duration, _error: &str) {
        self.add(job.queue, 2, 1);
    }
    fn dead(&self, job: &DeadJobEvent<'_>) {
        self.add(job.queue, 3, 1);
    }
    fn reclaimed(&self, queue: &str, entries: u64) {
        self.add(queue, 4, entries);
    }
}

/// Per queue, whether it is paused; consume loops wait while it is.
#[derive(Debug)]
pub(crate) struct PauseFlags {
    flags: HashMap<String, watch::Sender<bool>>,
}

impl PauseFlags {
    pub(crate) fn new(queues: &[String]) -> Self {
        PauseFlags {
            flags: queues
                .iter()
                .map(|q| (q.clone(), watch::Sender::new(false)))
                .collect(),
        }
    }

    pub(crate) fn subscribe(&self, queue: &str) -> Option<watch::Receiver<bool>> {
        self.flags.get(queue).map(watch::Sender::subscribe)
    }

    fn set(&self, paused: &[String]) {
        for (q, tx) in &self.flags {
            let now = is_paused(paused, q);
            tx.send_if_modified(|v| {
                let changed = *v != now;
                *v = now;
                changed
            });
        }
    }
}

/// Whether `queue` is paused: named in `paused`, or a partition of a queue named there.
fn is_paused(paused: &[String], queue: &str) -> bool {
    let of = crate::names::queue_of(queue);
    paused.iter().any(|p| p == queue || p == of)
}

/// Runs until `stop` fires, then flushes the last totals. `declare`: rate limits this
/// worker declares that are not recorded in Redis yet.
pub(crate) async fn run(
    rt: Arc<Runtime>,
    mut declare: Option<Vec<(String, String)>>,
    stop: CancellationToken,
) {
    let queues = &rt.settings.queues;
    // A worker's queues are known queues, even before their first job.
    if let Err(e) = rt.client.store().register_queues(queues).await {
        tracing::debug!(error = %e, "recording the worker's queues failed");
    }
    let mut ticker = Ticker::new(CONTROL_INTERVAL, stop);
    // The hooks as last written to this worker's queues' copies (None: not yet).
    let mut hooks: Option<std::collections::HashMap<String, String>> = None;
    while ticker.tick().await {
        sync_hooks(&rt, &mut hooks).await;
        match rt.client.store().paused_queues().await {
            Ok(paused) => {
                for q in queues {
                    let was = rt.pause.subscribe(q).is_some_and(|r| *r.borrow());
                    let is = is_paused(paused.as_slice(), q);
                    if was != is {
                        tracing::info!(queue = %q, paused = is, "queue {}", if is { "paused" } else { "resumed" });
                    }
                }
                rt.pause.set(&paused);
            }
            Err(e) => tracing::debug!(error = %e, "reading paused queues failed"),
        }
        super::limits::refresh(&rt, &mut declare).await;
        flush(&rt).await;
    }
    flush(&rt).await;
}

/// Keeps this worker's queues' copies of the webhooks current (`{q}:hooks`), writing only
/// when the hooks changed since the last round.
async fn sync_hooks(rt: &Runtime, last: &mut Option<std::collections::HashMap<String, String>>) {
    let store = rt.client.store();
    let all = match store.webhooks().await {
        Ok(all) => all,
        Err(e) => {
            tracing::debug!(error = %e, "reading webhooks failed");
            return;
        }
    };
    if last.as_ref() == Some(&all) {
        return;
    }
    for q in &rt.settings.queues {
        if let Err(e) = store
            .sync_queue_hooks(q, &crate::webhook::queue_hooks(&all, q))
            .await
        {
            tracing::debug!(queue = %q, error = %e, "writing the queue's webhooks failed");
            return;
        }
    }
    *last = Some(all);
}

async fn flush(rt: &Runtime) {
    let counts = rt.totals.take();
    if counts.is_empty() {
        return;
    }
    if let Err(e) = rt.client.store().add_totals(&TOTALS, &counts).await {
        tracing::debug!(error = %e, "flushing job totals failed; retrying next round");
        rt.totals.restore(counts);
    }
}
