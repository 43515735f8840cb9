//! The fetch loop of a partitioned queue on a single server (or behind Sentinel): one loop,
//! one connection and one blocking read for all its partitions, where a Redis Cluster
//! needs one each (a read across hash slots is refused there).
//!
//! It works as the loop of one queue does (`consume`), over `3 × N` streams: a free slot
//! is shared between the priorities by weight, each priority's share between the
//! partitions in turn, all read in one pipelined round trip; when every stream is empty
//! the loop blocks on all of them at once. It leaves out what only pays for one stream per
//! priority: finished entries go to the acker, never ride with the next fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::consume::{
    Aging, BLOCK, MAX_FETCH, READ_DEADLINE, Stall, aged_order, reconnect_backoff, unpaused, within,
};
use super::dispatch::Delivery;
use super::started;
use crate::Priority;
use crate::priority::SlotSplitter;
use crate::redis::{self, Entry, Reader};

/// One partition: its name, its streams (high, normal, low) and their shared names.
struct Part {
    queue: Arc<str>,
    streams: [String; 3],
    names: [Arc<str>; 3],
}

/// Consumes the partitions `parts` (of one queue) until `stop` fires.
pub(crate) async fn run(rt: Arc<Runtime>, parts: Vec<String>, stop: CancellationToken) {
    let parts: Vec<Part> = parts
        .iter()
        .map(|q| {
            let streams = rt.client.keys().streams(q);
            Part {
                queue: Arc::from(q.as_str()),
                names: streams.clone().map(Arc::from),
                streams,
            }
        })
        .collect();
    let all: Vec<String> = parts.iter().flat_map(|p| p.streams.clone()).collect();
    // Which partition and priority a stream is.
    let owner: HashMap<&str, (usize, Priority)> = parts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            Priority::ALL
                .into_iter()
                .map(move |pr| (p.streams[pr.index()].as_str(), (i, pr)))
        })
        .collect();
    let mut backoff = reconnect_backoff();
    let mut stalls: Vec<Stall> = parts.iter().map(|_| Stall::default()).collect();
    let failed = |stalls: &mut Vec<Stall>, sent: Instant, e: &crate::Error| {
        for (p, stall) in parts.iter().zip(stalls.iter_mut()) {
            rt.consume_state.set_consuming(&p.queue, false);
            stall.failed(&rt, &p.queue, sent, &e.to_string());
        }
    };
    let conn = loop {
        let sent = Instant::now();
        let connecting = async {
            let reader = rt.client.store().reader(&rt.settings.consumer).await?;
            reader.ensure_groups(&all).await?;
            Ok::<_, crate::Error>(reader)
        };
        match within(READ_DEADLINE, connecting).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(queue = %parts[0].queue, error = %e, "cannot start consuming; retrying");
                failed(&mut stalls, sent, &e);
                if !backoff.wait(&stop).await {
                    return;
                }
            }
        }
    };
    tracing::debug!(partitions = ?parts.iter().map(|p| &p.queue).collect::<Vec<_>>(), "consuming");
    for p in &parts {
        rt.consume_state.set_consuming(&p.queue, true);
    }
    let mut splitter = SlotSplitter::new(rt.settings.weights);
    let mut aging = rt.settings.priority_aging.map(Aging::new);
    // With aging: the lower streams past the bound, oldest first, and their ages.
    let mut aged: Vec<(usize, Priority, u64)> = Vec::new();
    // Partitions are paused with their queue: one flag serves them all.
    let mut paused = rt.pause.subscribe(&parts[0].queue);
    let mut turn = 0usize;
    'fetch: loop {
        if !unpaused(&mut paused, &stop).await {
            break;
        }
        let first = {
            let _counted = rt.slot_waiters.enter();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break 'fetch,
                p = rt.slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'fetch,
                },
            }
        };
        let free = (1 + rt.slots.available_permits() as u32).min(MAX_FETCH);
        if let Some(a) = aging.as_mut()
            && a.due()
        {
            match aged_streams(&conn, &parts, a.bound_ms).await {
                Ok(now) => aged = now,
                Err(e) => tracing::debug!(error = %e, "checking waiting ages failed"),
            }
        }
        // Aged streams first, each for what is left of the free slots.
        let mut early: Vec<(String, Entry)> = Vec::new();
        for (i, pr, _) in &aged {
            let left = free.saturating_sub(early.len() as u32);
            if left == 0 {
                break;
            }
            let stream = &parts[*i].streams[pr.index()];
            if let Ok(got) = read(&conn, &[(stream.clone(), u64::from(left))]).await {
                early.extend(got);
            }
        }
        let free = free.saturating_sub(early.len() as u32);
        let shares = splitter.split(free, [true; 3]);
        // Each priority's share over the partitions, starting one further each time.
        turn = turn.wrapping_add(1);
        let mut requests: Vec<(String, u64)> = Vec::new();
        for pr in Priority::ALL {
            let share = shares[pr.index()] as usize;
            let n = parts.len();
            for k in 0..n {
                let count = share / n + usize::from(k < share % n);
                if count > 0 {
                    let part = &parts[(turn + k) % n];
                    requests.push((part.streams[pr.index()].clone(), count as u64));
                }
            }
        }
        let mut first = Some(first);
        let mut sent = Instant::now();
        let mut fetched = if requests.is_empty() {
            Ok(Vec::new())
        } else {
            within(READ_DEADLINE, read(&conn, &requests)).await
        };
        if !early.is_empty() {
            // The aged streams' entries are this consumer's now: they run even when the
            // rest of the read failed (which shows again at the next one).
            fetched = Ok(match fetched {
                Ok(mut b) => {
                    early.append(&mut b);
                    early
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading the rest after aged streams failed");
                    early
                }
            });
        }
        if matches!(&fetched, Ok(b) if b.is_empty()) {
            // Nothing waiting anywhere: block on every stream without holding a slot.
            first = None;
            sent = Instant::now();
            let blocking = conn.read_blocking(1, BLOCK, all.clone());
            fetched = within(BLOCK + READ_DEADLINE, async {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => Ok(Vec::new()),
                    r = blocking => r.map(|reply| {
                        reply
                            .into_iter()
                            .flat_map(|(stream, entries)| entries.into_iter().map(move |e| (stream.clone(), e)))
                            .collect()
                    }),
                }
            })
            .await;
        }
        let batch = match fetched {
            Ok(b) => {
                backoff.reset();
                for (p, stall) in parts.iter().zip(stalls.iter_mut()) {
                    stall.ended(&rt, &p.queue);
                    rt.consume_state.set_consuming(&p.queue, true);
                }
                b
            }
            Err(e) => {
                if redis::is_nogroup(&e) {
                    tracing::warn!(
                        queue = %parts[0].queue,
                        "consumer group missing (server restarted without persistence, or destroyed); recreating it"
                    );
                    if let Err(e) = conn.ensure_groups(&all).await {
                        tracing::warn!(error = %e, "recreating the consumer group failed");
                    }
                } else {
                    tracing::warn!(queue = %parts[0].queue, error = %e, "reading jobs failed; retrying");
                    failed(&mut stalls, sent, &e);
                }
                drop(first);
                if !backoff.wait(&stop).await {
                    break;
                }
                continue;
            }
        };
        let mut held: Vec<(Priority, Delivery)> = batch
            .into_iter()
            .filter_map(|(stream, (entry_id, fields))| {
                let (i, priority) = *owner.get(stream.as_str())?;
                let part = &parts[i];
                let stream = part.names[priority.index()].clone();
                let (lease, token, cancel) = rt.leases.hold(&stream, &entry_id, &rt.hard_stop);
                Some((
                    priority,
                    Delivery {
                        queue: part.queue.clone(),
                        priority,
                        stream,
                        entry_id,
                        fields,
                        token,
                        cancel,
                        _lease: lease,
                        handoff: rt.handoff(&part.queue),
                    },
                ))
            })
            .collect();
        let mut took: Vec<&str> = held.iter().map(|(_, d)| &*d.queue).collect();
        took.dedup();
        for q in took {
            super::limits::room_made(&rt, q);
        }
        // Most urgent first, as one queue's loop starts them.
        held.sort_by_key(|(p, _)| *p);
        let held = held.into_iter().map(|(_, d)| d).collect();
        if !started::start_as_slots_free(&rt, held, first.take(), &stop).await {
            break 'fetch;
        }
    }
    if tokio::time::timeout(std::time::Duration::from_secs(2), conn.close())
        .await
        .is_err()
    {
        tracing::debug!("closing the read connection timed out");
    }
    for p in &parts {
        rt.consume_state.set_consuming(&p.queue, false);
    }
}

/// The normal and low streams of `parts` whose oldest waiting job is `bound_ms` old or
/// older (partition index, priority, age), oldest first: one script call per partition.
async fn aged_streams(
    conn: &Reader,
    parts: &[Part],
    bound_ms: u64,
) -> crate::Result<Vec<(usize, Priority, u64)>> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let ages = conn.oldest_waiting(&p.streams).await?;
        for s in aged_order(ages, bound_ms) {
            out.push((i, Priority::ALL[s], ages[s].unwrap_or(0)));
        }
    }
    out.sort_by_key(|(_, _, age)| std::cmp::Reverse(*age));
    Ok(out)
}

/// Reads `requests` (stream, COUNT) in one pipelined round trip; the entries with their
/// stream. A stream that failed while others delivered is left for the next read.
async fn read(conn: &Reader, requests: &[(String, u64)]) -> crate::Result<Vec<(String, Entry)>> {
    let replies = conn.read_shares(requests).await?;
    let mut out = Vec::new();
    let mut failed = None;
    for ((stream, _), reply) in requests.iter().zip(replies) {
        match reply {
            Ok(entries) => out.extend(entries.into_iter().map(|e| (stream.clone(), e))),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}
