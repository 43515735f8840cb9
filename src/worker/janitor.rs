//! The janitor: takes back entries whose worker died, and dead-letters poison.
//!
//! Every worker runs one. Each lease/2 it scans the pending entries of its queues' streams
//! idle for longer than the lease (`XPENDING ... IDLE`, paged until the scan is done) and,
//! for each whose owner has no fresh heartbeat, either dead-letters it with reason
//! `poison` when it was already delivered `max_deliveries` times, or claims it (a new
//! delivery) and runs it here. Both happen inside one script per page, so many janitors can
//! race safely. The scan uses XPENDING rather than XAUTOCLAIM because the owner and the
//! delivery count must be checked before taking an entry, and XAUTOCLAIM reports neither.
//! Entries deleted while pending are acknowledged, logged and counted, never dropped
//! silently. With nothing pending, a round is one cheap call per stream.
//!
//! A worker that stops gracefully withdraws its heartbeat and adds its consumer name to
//! each queue's `handoff` set, then publishes `handoff` on the queues' wake channels; the
//! promoters of the other workers wake their janitors, which take that consumer's entries
//! at once (idle 0, only that consumer's, inside the same script), instead of after the
//! lease. A worker that dies without stopping leaves no hand-off: its entries wait for
//! the lease.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dispatch::Delivery;
use super::{Runtime, Ticker, started};
use crate::Priority;
use crate::backoff::Backoff;
use crate::dlq::DeadReason;
use crate::observe::DeadJobEvent;
use crate::redis::{self, ReclaimScan};

/// Janitor rounds (lease/2 each) between prunings of idle consumers.
const PRUNE_EVERY: u64 = 20;

/// Pending entries examined per script call.
const PAGE: u32 = 100;

/// Scans `queues` every lease/2 until `stop` fires.
pub(crate) async fn run(rt: Arc<Runtime>, stop: CancellationToken) {
    let queues = &rt.settings.queues;
    let mut ticker = Ticker::new(
        (rt.settings.lease / 2).max(Duration::from_millis(20)),
        stop.clone(),
    );
    let mut round: u64 = 0;
    // After a failed round, the next waits longer (up to 5 s more): an unreachable Redis is
    // not asked every lease/2, nor logged about each time.
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        // A round each lease/2, or at once when a stopping worker hands entries back.
        tokio::select! {
            biased;
            more = ticker.tick() => if !more { break },
            _ = rt.janitor_wake.notified() => {}
        }
        round += 1;
        // Every tenth lease, forget consumers of past worker runs.
        let prune = round.is_multiple_of(PRUNE_EVERY);
        match sweep(&rt, queues, &stop, prune).await {
            Ok(()) => backoff.reset(),
            // At a worker's first start the fetch loops may not have created the groups
            // yet (or a restarted Redis lost them and the loops are recreating them).
            Err(e) if redis::is_nogroup(&e) => {
                tracing::debug!(error = %e, "janitor round skipped: consumer group not there yet");
            }
            Err(e) => {
                tracing::warn!(error = %e, "janitor round failed; retrying");
                if !backoff.wait(&stop).await {
                    break;
                }
            }
        }
    }
}

async fn sweep(
    rt: &Arc<Runtime>,
    queues: &[String],
    stop: &CancellationToken,
    prune: bool,
) -> crate::Result<()> {
    let keys = rt.client.keys();
    let store = rt.client.store();
    let alive = store
        .alive_workers(rt.settings.lease.as_millis() as u64)
        .await?;
    if !alive.iter().any(|a| a == &rt.settings.consumer) {
        // Our own heartbeat is stale: Redis (or this process) was paused, and every other
        // heartbeat looks stale too. Wait for a round after fresh heartbeats.
        tracing::debug!("janitor skips a round: this worker's heartbeat is not fresh yet");
        return Ok(());
    }
    let others: Vec<&String> = alive
        .iter()
        .filter(|a| *a != &rt.settings.consumer)
        .collect();
    for queue in queues {
        // Dependents of ended jobs whose wake-up was missed, or whose resolver died.
        match crate::flow::drain_outbox(&rt.client, &rt.observers, queue).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(queue = %queue, jobs = n, "dependents told at a janitor round")
            }
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "telling dependents of ended jobs failed; retrying next round")
            }
        }
        // Flows whose client stopped half-way through writing them.
        match crate::flow::repair_flows(
            &rt.client,
            &rt.observers,
            queue,
            rt.settings.flow_repair_after,
        )
        .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "finishing flows left half-written failed; retrying next round")
            }
        }
        if let Some(retention) = rt.settings.dlq_retention {
            match store.dead_delete_older(queue, retention).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(queue = %queue, purged = n, "dead letters past their retention purged")
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "purging old dead letters failed")
                }
            }
        }
        if let Some(&budget) = rt
            .settings
            .succeeded_budget
            .get(crate::names::queue_of(queue))
        {
            match store.done_trim(queue, budget).await {
                Ok(t) if t.buckets > 0 => {
                    tracing::info!(queue = %queue, buckets = t.buckets, freed_bytes = t.freed, kept_bytes = t.kept, budget, "success records past the memory budget deleted, oldest first")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "trimming success records to the budget failed")
                }
            }
        }
        for priority in Priority::ALL {
            let stream = keys.stream(queue, priority);
            if prune {
                prune_consumers(rt, &stream, &alive).await;
            }
            let scan = Scan {
                queue,
                priority,
                stream: &stream,
                idle: rt.settings.lease,
                only: None,
            };
            if !scan.run(rt, &others, stop).await? {
                return Ok(());
            }
        }
        // Stopped workers that handed entries back: taken now, not after their lease.
        let handed = store.handed_off(queue).await?;
        for gone in handed {
            if gone != rt.settings.consumer && !alive.contains(&gone) {
                for priority in Priority::ALL {
                    let stream = keys.stream(queue, priority);
                    let scan = Scan {
                        queue,
                        priority,
                        stream: &stream,
                        idle: Duration::ZERO,
                        only: Some(&gone),
                    };
                    if !scan.run(rt, &others, stop).await? {
                        return Ok(());
                    }
                }
            }
            // Every entry it left is taken (or it runs again under that name, and owns
            // its entries).
            store.forget_handoff(queue, &gone).await?;
        }
    }
    Ok(())
}

/// One scan of a ready stream's pending entries idle for `idle` or more (of `only` that
/// consumer, or of any), page by page: poison dead-lettered, the rest claimed and started.
struct Scan<'a> {
    queue: &'a str,
    priority: Priority,
    stream: &'a str,
    idle: Duration,
    only: Option<&'a str>,
}

impl Scan<'_> {
    /// False when `stop` fired meanwhile.
    async fn run(
        &self,
        rt: &Arc<Runtime>,
        others: &[&String],
        stop: &CancellationToken,
    ) -> crate::Result<bool> {
        let (queue, priority, stream) = (self.queue, self.priority, self.stream);
        let mut start = "-".to_string();
        loop {
            if stop.is_cancelled() {
                return Ok(false);
            }
            let scan = ReclaimScan {
                queue,
                stream,
                consumer: &rt.settings.consumer,
                idle: self.idle,
                max_deliveries: rt.settings.max_deliveries,
                page: PAGE,
                start: &start,
                only: self.only,
                alive: others,
                retention_ms: rt.client.status_retention_ms(),
            };
            let page = rt.client.store().reclaim_page(&scan).await?;
            for p in &page.poisoned {
                let (entry, job_id, job_type) = (&p.entry_id, &p.job_id, &p.job_type);
                let known = rt.registry.get(job_type).is_some();
                let error = format!(
                    "delivered {} times without finishing",
                    rt.settings.max_deliveries
                );
                // Read from the entry by the script, unchecked: only well-formed ones
                // reach logs and observers.
                let event = DeadJobEvent {
                    job_id: Some(job_id.as_str())
                        .filter(|s| crate::names::validate_job_id(s).is_ok()),
                    job_type: Some(job_type.as_str())
                        .filter(|s| crate::names::validate_name("job type", s).is_ok()),
                    known_type: known,
                    queue,
                    priority,
                    reason: DeadReason::Poison,
                    error: &error,
                    attempt: None,
                };
                tracing::debug!(stream = %stream, entry = %entry, "poison entry");
                rt.observers.each(|o| o.dead(&event));
            }
            for c in &page.cancelled {
                tracing::info!(queue = %queue, entry = %c.entry_id, "job of a dead worker was cancelled, not taken over");
                let event = crate::observe::ControlEvent {
                    action: crate::observe::ControlAction::Cancelled,
                    queue,
                    job_id: Some(c.job_id.as_str())
                        .filter(|s| crate::names::validate_job_id(s).is_ok()),
                    job_type: Some(c.job_type.as_str())
                        .filter(|s| crate::names::validate_name("job type", s).is_ok()),
                    jobs: 1,
                };
                rt.observers.each(|o| o.controlled(&event));
            }
            for id in &page.deleted {
                tracing::warn!(queue = %queue, stream = %stream, entry = %id, "pending entry was deleted from its stream; acknowledged");
            }
            let mut claimed = page.claimed;
            // Our own entries past the lease that we do not hold: deliveries whose reply
            // was lost. Entries we are running merely had a late renewal: left alone.
            let lost: Vec<String> = page
                .mine
                .into_iter()
                .filter(|id| !rt.leases.holds(stream, id))
                .collect();
            if !lost.is_empty() {
                claimed.extend(
                    rt.client
                        .store()
                        .take_back(stream, &rt.settings.consumer, rt.settings.lease, lost)
                        .await?,
                );
            }
            if !claimed.is_empty() {
                let n = claimed.len() as u64;
                rt.observers.each(|o| o.reclaimed(queue, n));
            }
            let stream_name: std::sync::Arc<str> = std::sync::Arc::from(stream);
            let queue_name: std::sync::Arc<str> = std::sync::Arc::from(queue);
            let handoff = rt.handoff(queue);
            // Leased from now on, started as slots free up. Claimed but not started
            // when the worker stops: stays pending under this worker, whose heartbeat
            // stops with it, so another janitor takes it.
            let deliveries = claimed
                .into_iter()
                .map(|(entry_id, fields)| {
                    let (lease, token, cancel) =
                        rt.leases.hold(&stream_name, &entry_id, &rt.hard_stop);
                    Delivery {
                        queue: queue_name.clone(),
                        priority,
                        stream: stream_name.clone(),
                        entry_id,
                        fields: Some(fields),
                        token,
                        cancel,
                        _lease: lease,
                        handoff: handoff.clone(),
                    }
                })
                .collect();
            if !started::start_as_slots_free(rt, deliveries, None, stop).await {
                return Ok(false);
            }
            match page.next {
                Some(next) => start = next,
                None => return Ok(true),
            }
        }
    }
}

/// Removes consumers of `stream` that own nothing, idle for ten leases, of no live worker.
async fn prune_consumers(rt: &Runtime, stream: &str, alive: &[String]) {
    match rt
        .client
        .store()
        .prune_consumers(stream, rt.settings.lease * 10, alive)
        .await
    {
        Ok(names) if !names.is_empty() => {
            tracing::info!(stream, removed = ?names, "forgot idle consumers of past worker runs")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(stream, error = %e, "pruning idle consumers failed"),
    }
}
