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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::dispatch::Delivery;
use super::{Runtime, Ticker, started};
use crate::Priority;
use crate::dlq::DeadReason;
use crate::observe::DeadJobEvent;
use crate::redis::{keys::GROUP, scripts};

/// Janitor rounds (lease/2 each) between prunings of idle consumers.
const PRUNE_EVERY: u64 = 20;

/// Pending entries examined per script call.
const PAGE: i64 = 100;

/// Scans `queues` every lease/2 until `stop` fires.
pub(crate) async fn run(rt: Arc<Runtime>, queues: Vec<String>, stop: CancellationToken) {
    let mut ticker = Ticker::new((rt.lease / 2).max(Duration::from_millis(20)), stop.clone());
    let mut round: u64 = 0;
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
        match sweep(&rt, &queues, &stop, prune).await {
            Ok(()) => {}
            // At a worker's first start the fetch loops may not have created the groups
            // yet (or a restarted Redis lost them and the loops are recreating them).
            Err(e) if crate::redis::is_nogroup(&e) => {
                tracing::debug!(error = %e, "janitor round skipped: consumer group not there yet");
            }
            Err(e) => tracing::warn!(error = %e, "janitor round failed; retrying next round"),
        }
    }
}

async fn sweep(
    rt: &Arc<Runtime>,
    queues: &[String],
    stop: &CancellationToken,
    prune: bool,
) -> Result<(), fred::error::Error> {
    let keys = rt.client.keys();
    let alive: Vec<String> = scripts::run(
        rt.client.redis(),
        &rt.client.scripts().alive,
        vec![keys.workers()],
        vec![Value::from(rt.lease.as_millis() as i64)],
    )
    .await?;
    if !alive.iter().any(|a| a == &rt.consumer) {
        // Our own heartbeat is stale: Redis (or this process) was paused, and every other
        // heartbeat looks stale too. Wait for a round after fresh heartbeats.
        tracing::debug!("janitor skips a round: this worker's heartbeat is not fresh yet");
        return Ok(());
    }
    let others: Vec<&String> = alive.iter().filter(|a| *a != &rt.consumer).collect();
    for queue in queues {
        if let Some(retention) = rt.dlq_retention {
            match rt.client.dead_letters(queue) {
                Ok(dlq) => match dlq.purge_older_than(retention).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(queue = %queue, purged = n, "dead letters past their retention purged")
                    }
                    Err(e) => {
                        tracing::warn!(queue = %queue, error = %e, "purging old dead letters failed")
                    }
                },
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "purging old dead letters failed")
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
                idle: rt.lease,
                only: None,
            };
            if !scan.run(rt, &others, stop).await? {
                return Ok(());
            }
        }
        // Stopped workers that handed entries back: taken now, not after their lease.
        let handed: Vec<String> = rt.client.redis().smembers(keys.handoff(queue)).await?;
        for gone in handed {
            if gone != rt.consumer && !alive.contains(&gone) {
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
            let _: i64 = rt.client.redis().srem(keys.handoff(queue), gone).await?;
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
    ) -> Result<bool, fred::error::Error> {
        let (queue, priority, stream) = (self.queue, self.priority, self.stream);
        let keys = rt.client.keys();
        let mut start = "-".to_string();
        loop {
            if stop.is_cancelled() {
                return Ok(false);
            }
            let mut args: Vec<Value> = vec![
                GROUP.into(),
                rt.consumer.as_str().into(),
                Value::from(self.idle.as_millis() as i64),
                Value::from(i64::from(rt.max_deliveries)),
                Value::from(PAGE),
                start.as_str().into(),
                keys.job_prefix(queue).into(),
                self.only.unwrap_or_default().into(),
            ];
            args.extend(others.iter().map(|a| Value::from(a.as_str())));
            let reply: Value = scripts::run(
                rt.client.redis(),
                &rt.client.scripts().reclaim,
                vec![stream.to_string(), keys.dlq(queue)],
                args,
            )
            .await?;
            let page = Page::parse(reply);
            for (entry, job_id, job_type) in &page.poisoned {
                let known = rt.registry.get(job_type).is_some();
                let error = format!("delivered {} times without finishing", rt.max_deliveries);
                // Read from the entry by the script, unchecked: only well-formed ones
                // reach logs and observers.
                let event = DeadJobEvent {
                    job_id: Some(job_id.as_str())
                        .filter(|s| crate::job::validate_job_id(s).is_ok()),
                    job_type: Some(job_type.as_str())
                        .filter(|s| crate::job::validate_name("job type", s).is_ok()),
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
                claimed.extend(take_back(rt, stream, lost).await?);
            }
            if !claimed.is_empty() {
                let n = claimed.len() as u64;
                rt.observers.each(|o| o.reclaimed(queue, n));
            }
            let stream_name: std::sync::Arc<str> = std::sync::Arc::from(stream);
            let queue_name: std::sync::Arc<str> = std::sync::Arc::from(queue);
            // Leased from now on, started as slots free up. Claimed but not started
            // when the worker stops: stays pending under this worker, whose heartbeat
            // stops with it, so another janitor takes it.
            let deliveries = claimed
                .into_iter()
                .map(|(entry_id, fields)| {
                    let token = rt.hard_stop.child_token();
                    let lease = rt.leases.hold(&stream_name, &entry_id, token.clone());
                    Delivery {
                        queue: queue_name.clone(),
                        priority,
                        stream: stream_name.clone(),
                        entry_id,
                        fields: Some(fields.into_iter().collect()),
                        token,
                        _lease: lease,
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

/// Claims this worker's own entries `ids` again (a new delivery), with their fields.
async fn take_back(
    rt: &Runtime,
    stream: &str,
    ids: Vec<String>,
) -> Result<Vec<(String, HashMap<String, Value>)>, fred::error::Error> {
    let lease_ms = rt.lease.as_millis() as u64;
    let entries: Vec<(String, Option<HashMap<String, Value>>)> = rt
        .client
        .redis()
        .xclaim(
            stream,
            GROUP,
            rt.consumer.as_str(),
            lease_ms,
            ids,
            None,
            None,
            None,
            false,
            false,
        )
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| fields.map(|f| (id, f)))
        .collect())
}

/// Removes consumers of `stream` that own nothing, idle for ten leases, of no live worker.
async fn prune_consumers(rt: &Runtime, stream: &str, alive: &[String]) {
    let mut args: Vec<Value> = vec![
        GROUP.into(),
        Value::from((rt.lease * 10).as_millis() as i64),
    ];
    args.extend(alive.iter().map(|a| Value::from(a.as_str())));
    let removed: Result<Vec<String>, _> = scripts::run(
        rt.client.redis(),
        &rt.client.scripts().prune_consumers,
        vec![stream.to_string()],
        args,
    )
    .await;
    match removed {
        Ok(names) if !names.is_empty() => {
            tracing::info!(stream, removed = ?names, "forgot idle consumers of past worker runs")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(stream, error = %e, "pruning idle consumers failed"),
    }
}

struct Page {
    next: Option<String>,
    claimed: Vec<(String, HashMap<String, Value>)>,
    /// Entry id, job id and job type of each poison entry ('' when missing).
    poisoned: Vec<(String, String, String)>,
    deleted: Vec<String>,
    mine: Vec<String>,
}

impl Page {
    fn parse(reply: Value) -> Page {
        let mut parts = match reply {
            Value::Array(a) => a.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let next = parts
            .next()
            .and_then(|v| v.as_string())
            .filter(|s| !s.is_empty());
        let claimed = match parts.next() {
            Some(Value::Array(entries)) => entries.into_iter().filter_map(entry).collect(),
            _ => Vec::new(),
        };
        let ids = |v: Option<Value>| match v {
            Some(Value::Array(a)) => a.into_iter().filter_map(|v| v.as_string()).collect(),
            _ => Vec::new(),
        };
        let poisoned = match parts.next() {
            Some(Value::Array(a)) => a
                .into_iter()
                .filter_map(|v| match v {
                    Value::Array(t) => {
                        let mut t = t.into_iter().map(|v| v.as_string().unwrap_or_default());
                        Some((
                            t.next()?,
                            t.next().unwrap_or_default(),
                            t.next().unwrap_or_default(),
                        ))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let deleted = ids(parts.next());
        let mine = ids(parts.next());
        Page {
            next,
            claimed,
            poisoned,
            deleted,
            mine,
        }
    }
}

/// `[id, [field, value, ...]]` as XCLAIM returns it.
fn entry(v: Value) -> Option<(String, HashMap<String, Value>)> {
    let Value::Array(mut pair) = v else {
        return None;
    };
    if pair.len() != 2 {
        return None;
    }
    let fields = pair.pop()?;
    let id = pair.pop()?.as_string()?;
    let Value::Array(flat) = fields else {
        return Some((id, HashMap::new()));
    };
    let mut map = HashMap::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let Some(k) = k.as_string() {
            map.insert(k, v);
        }
    }
    Some((id, map))
}
