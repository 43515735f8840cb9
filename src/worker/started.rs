//! Starting deliveries, a fetched batch at a time.
//!
//! A job's status says `running` before its handler starts, and that write must land before
//! any later one (`retrying`, `dead`, `succeeded`). So the loop that fetched a batch prepares
//! every delivery of it (decodes the entry, finds the handler, decodes the payload), records
//! the attempts that will run as running in one script call per batch (`lua/started.lua`),
//! and only then spawns a task per delivery. One command and one round trip per batch, made
//! by the task that already holds the batch: no command per job, and no hop through another
//! task and back before a job can start.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::dispatch::{self, Delivery, Prepared};
use futures::FutureExt;

use super::limits::{self, Verdict};
use crate::envelope::Envelope;

/// Starts `deliveries` in order as slots free up: the next one as soon as it has a slot
/// (`first`, when the caller holds one already), together with every one behind it that
/// has a slot right now, as one batch. Returns false when `stop` fires (or the slots close)
/// while a delivery waits for a slot; the deliveries not started then stay pending,
/// unacknowledged, and are handed back when the worker stops.
pub(crate) async fn start_as_slots_free(
    rt: &Arc<Runtime>,
    deliveries: Vec<Delivery>,
    mut first: Option<OwnedSemaphorePermit>,
    stop: &CancellationToken,
) -> bool {
    let mut rest = deliveries.into_iter();
    let mut next = rest.next();
    while let Some(delivery) = next.take() {
        let permit = match first.take() {
            Some(p) => p,
            None => {
                let _counted = rt.slot_waiters.enter();
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return false,
                    p = rt.slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return false,
                    },
                }
            }
        };
        let mut batch = vec![(delivery, permit)];
        next = rest.next();
        while let Some(d) = next.take() {
            match rt.slots.clone().try_acquire_owned() {
                Ok(p) => {
                    batch.push((d, p));
                    next = rest.next();
                }
                Err(_) => {
                    next = Some(d);
                    break;
                }
            }
        }
        // Deliveries that hold a slot start even when `stop` fired meanwhile: they were
        // fetched, their status says running, and the drain lets them finish. Only those
        // still waiting for a slot are left pending (handed back at the stop).
        start(rt, batch).await;
    }
    true
}

/// Prepares `batch` (deliveries of one queue, each with its concurrency slot), records the
/// attempts that will run as running, and spawns a task for each delivery. Under a rate
/// limit the batch first takes its tokens (`limits::admit`, one script call) in a task of
/// its own, so the fetch loop goes on meanwhile: the batch holds its slots, so nothing is
/// fetched that has no slot.
async fn start(rt: &Arc<Runtime>, batch: Vec<(Delivery, OwnedSemaphorePermit)>) {
    let prepared: Vec<(Prepared, OwnedSemaphorePermit)> = batch
        .into_iter()
        .map(|(d, permit)| (dispatch::prepare(rt, d), permit))
        .collect();
    match limits::plan(rt, &prepared) {
        None => {
            let verdicts = limits::all_run(prepared.len());
            launch(rt, prepared, verdicts).await;
        }
        Some(plan) => {
            let rt = rt.clone();
            rt.tracker.clone().spawn(async move {
                let verdicts = limits::admit(&rt, prepared.len(), Some(plan)).await;
                launch(&rt, prepared, verdicts).await;
            });
        }
    }
}

/// Records the attempts of `prepared` that run as running, then spawns each delivery's
/// task as its verdict says: run now, run after a moment, or go back to wait.
async fn launch(
    rt: &Arc<Runtime>,
    prepared: Vec<(Prepared, OwnedSemaphorePermit)>,
    verdicts: Vec<Verdict>,
) {
    let attempts: Vec<(&str, &Envelope)> = prepared
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| !matches!(v, Verdict::Defer { .. }))
        .filter_map(|((p, _), _)| match p {
            Prepared::Run(a) => a.status_key.as_deref().map(|key| (key, &a.env)),
            _ => None,
        })
        .collect();
    record(rt, &attempts).await;
    drop(attempts);
    for ((p, permit), verdict) in prepared.into_iter().zip(verdicts) {
        match (p, verdict) {
            (p, Verdict::Run(None)) => {
                rt.tracker.spawn(dispatch::run(rt.clone(), p, permit));
            }
            (p, Verdict::Run(Some(places))) => {
                rt.tracker
                    .spawn(dispatch::run(rt.clone(), p, permit).inspect(move |_| drop(places)));
            }
            (p, Verdict::RunIn(wait, places)) => {
                let rt = rt.clone();
                rt.tracker.clone().spawn(async move {
                    tokio::time::sleep(wait).await;
                    dispatch::run(rt, p, permit).await;
                    drop(places);
                });
            }
            (
                Prepared::Run(a),
                Verdict::Defer {
                    wait_ms,
                    again,
                    why,
                },
            ) => {
                rt.tracker
                    .spawn(dispatch::defer(rt.clone(), a, permit, wait_ms, again, why));
            }
            (p, Verdict::Defer { .. }) => {
                rt.tracker.spawn(dispatch::run(rt.clone(), p, permit));
            }
        }
    }
}

/// Records `attempts` (status key, envelope) as running, since now; awaited, so no later
/// status write of theirs can be overwritten. A failure is logged per job and the jobs run
/// anyway, as a failed status write never stopped a job.
async fn record(rt: &Runtime, attempts: &[(&str, &Envelope)]) {
    if attempts.is_empty() {
        return;
    }
    let failed = rt
        .client
        .store()
        .mark_started(attempts, crate::clock::now_ms())
        .await;
    for (e, range) in failed {
        for (_, env) in &attempts[range] {
            tracing::warn!(job_id = %env.id, error = %e, "could not record the job as running");
        }
    }
}
