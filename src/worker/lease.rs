//! Leases: keeping the entries this worker holds, and telling others it is alive.
//!
//! Every entry a worker has fetched is in its lease table until it is settled or dropped.
//! A renewer extends all of them every lease/3 through a fenced script (owner checked,
//! idle time reset, no delivery counted), so a long job is never reclaimed while its worker
//! lives; an entry found owned by someone else has its job's cancellation token fired. A
//! heartbeat on Redis' clock marks the worker alive, so janitors leave its entries alone
//! even when a Redis pause made every lease look expired.
//!
//! An operator's cancel request for a held entry arrives on the queue's wake channel (the
//! promoter passes it on) and, should that message be missed, with the next renewal: both
//! fire the job's `cancel` token as well as its stop token. A request for an entry not held
//! yet (published while its fetch's reply was on the way) is kept a minute, and fires the
//! tokens when the entry is held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Runtime, Ticker};
use crate::redis::WorkerDetails;

/// A held job's tokens: `stop` fires for any reason its attempt should end (drain
/// deadline, lease lost, cancel request), `cancel` for a cancel request only.
#[derive(Clone)]
struct Signals {
    stop: CancellationToken,
    cancel: CancellationToken,
}

impl Signals {
    fn cancel(&self) {
        self.cancel.cancel();
        self.stop.cancel();
    }
}

/// Held entries of one stream: entry id → the job's tokens.
type Held = HashMap<String, Signals>;

/// How long a cancel request for an entry not held is remembered.
const EARLY_CANCEL_KEPT: Duration = Duration::from_secs(60);

/// Entries this worker holds, by stream and entry id, with their jobs' cancellation tokens.
#[derive(Default)]
pub(crate) struct LeaseTable {
    held: Mutex<HashMap<Arc<str>, Held>>,
    /// Cancel requests for entries not held when they came: (stream, entry id) → when.
    early: Mutex<HashMap<(String, String), Instant>>,
}

/// Removes its entry from the table when dropped.
pub(crate) struct LeaseGuard {
    table: Arc<LeaseTable>,
    stream: Arc<str>,
    entry_id: String,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(held) = self.table.lock().get_mut(&*self.stream) {
            held.remove(&self.entry_id);
        }
    }
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaseGuard").field(&self.entry_id).finish()
    }
}

impl LeaseTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts renewing `entry_id` of `stream`. Returns the guard that holds it, the job's
    /// stop token (a child of `parent`; fires when its lease is lost or it is cancelled)
    /// and its cancel token (fires when an operator cancels it).
    pub(crate) fn hold(
        self: &Arc<Self>,
        stream: &Arc<str>,
        entry_id: &str,
        parent: &CancellationToken,
    ) -> (LeaseGuard, CancellationToken, CancellationToken) {
        let signals = Signals {
            stop: parent.child_token(),
            cancel: CancellationToken::new(),
        };
        let mut table = self.lock();
        let held = match table.get_mut(&**stream) {
            Some(held) => held,
            None => table.entry(stream.clone()).or_default(),
        };
        held.insert(entry_id.to_string(), signals.clone());
        drop(table);
        if self.take_early(stream, entry_id) {
            signals.cancel();
        }
        let guard = LeaseGuard {
            table: self.clone(),
            stream: stream.clone(),
            entry_id: entry_id.to_string(),
        };
        (guard, signals.stop, signals.cancel)
    }

    fn early(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.early.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_early(&self, stream: &str, entry_id: &str) -> bool {
        let mut early = self.early();
        if early.is_empty() {
            return false;
        }
        early
            .remove(&(stream.to_string(), entry_id.to_string()))
            .is_some()
    }

    /// An operator asked to cancel the job of `entry_id` of `stream`: its tokens fire now
    /// if it is held, else when it is (within a minute). Returns whether it was held.
    pub(crate) fn cancel_requested(&self, stream: &str, entry_id: &str) -> bool {
        let signals = self
            .lock()
            .get(stream)
            .and_then(|held| held.get(entry_id))
            .cloned();
        match signals {
            Some(s) => {
                s.cancel();
                true
            }
            None => {
                let now = Instant::now();
                let mut early = self.early();
                early.retain(|_, at| now.duration_since(*at) < EARLY_CANCEL_KEPT);
                early.insert((stream.to_string(), entry_id.to_string()), now);
                false
            }
        }
    }

    /// True while `entry_id` of `stream` is held.
    pub(crate) fn holds(&self, stream: &str, entry_id: &str) -> bool {
        self.lock()
            .get(stream)
            .is_some_and(|held| held.contains_key(entry_id))
    }

    /// How many entries are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    fn by_stream(&self) -> HashMap<String, Vec<String>> {
        self.lock()
            .iter()
            .filter(|(_, held)| !held.is_empty())
            .map(|(stream, held)| (stream.to_string(), held.keys().cloned().collect()))
            .collect()
    }

    fn lost(&self, stream: &str, id: &str) {
        if let Some(s) = self.lock().get(stream).and_then(|held| held.get(id)) {
            s.stop.cancel();
        }
    }
}

/// How often leases are renewed and heartbeats sent: a third of the lease.
pub(crate) fn renew_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(10))
}

/// Renews every held lease each `lease / 3` until `stop` fires.
pub(crate) async fn renew(rt: Arc<Runtime>, stop: CancellationToken) {
    let mut ticker = Ticker::new(renew_interval(rt.settings.lease), stop.clone());
    while ticker.tick().await {
        for (stream, ids) in rt.leases.by_stream() {
            match rt
                .client
                .store()
                .renew_leases(&stream, &rt.settings.consumer, &ids)
                .await
            {
                Ok(renewed) => {
                    for id in renewed.lost {
                        tracing::warn!(stream = %stream, entry = %id, "lease lost: another worker owns the entry now; cancelling the job");
                        rt.leases.lost(&stream, &id);
                    }
                    for id in renewed.cancelled {
                        rt.leases.cancel_requested(&stream, &id);
                    }
                }
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "renewing leases failed; retrying next round")
                }
            }
        }
        super::places::renew(&rt).await;
    }
}

/// Sends a heartbeat each `lease / 3` until `stop` fires, then withdraws it so janitors
/// reclaim whatever this worker left pending without waiting.
pub(crate) async fn heartbeat(rt: Arc<Runtime>, stop: CancellationToken) {
    let (queues, concurrency) = (&rt.settings.queues, rt.settings.concurrency);
    let store = rt.client.store();
    let interval = renew_interval(rt.settings.lease).min(Duration::from_secs(5));
    let forget_after = (rt.settings.lease * 10).max(Duration::from_secs(300));
    let details_ttl = (rt.settings.lease * 3).max(Duration::from_secs(60));
    let started_at_ms = crate::clock::now_ms();
    // The job types this worker's handlers run (the built-in webhook deliveries, which
    // every worker runs, left out).
    let mut types: Vec<&str> = rt
        .registry
        .names()
        .filter(|t| *t != crate::webhook::DELIVERY_TYPE)
        .collect();
    types.sort_unstable();
    let types = types.join(",");
    let mut ticker = Ticker::new(interval, stop.clone());
    while ticker.tick().await {
        match store.heartbeat(&rt.settings.consumer, forget_after).await {
            Ok(now_ms) => {
                let details = WorkerDetails {
                    queues,
                    types: &types,
                    concurrency,
                    in_flight: rt.leases.len(),
                    started_at_ms,
                    pid: std::process::id(),
                };
                if let Err(e) = store
                    .publish_worker(&rt.settings.consumer, &details, now_ms, details_ttl)
                    .await
                {
                    tracing::debug!(error = %e, "publishing the worker's details failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
        }
    }
    // Withdraw the heartbeat, then hand back whatever is still pending under this
    // consumer: janitors take it at once (see the janitor's module docs).
    if let Err(e) = store
        .withdraw(&rt.settings.consumer, queues, forget_after)
        .await
    {
        tracing::debug!(error = %e, "withdrawing the heartbeat failed; janitors wait for the lease");
    }
}
