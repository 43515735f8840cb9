//! The fetch loop: one per queue, each on a connection of its own.
//!
//! A loop waits for a free slot, then reads as many entries as there are free slots,
//! split between the three priority streams by weight (COUNT applies per stream, so each
//! stream gets its own COUNT). A stream that returns less than its share gives the rest
//! to the others: in the same call when a few slots are free (one script call), in a
//! further pipelined round otherwise. When all three are empty, the loop
//! blocks on all three at once with a finite BLOCK, so a new job of any priority starts
//! within milliseconds. A full worker stops reading. What a read returns is started as a
//! batch (`started`): prepared, recorded as running in one call, then a task per delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::ack;
use super::dispatch::Delivery;
use super::started;
use crate::Priority;
use crate::backoff::Backoff;
use crate::priority::SlotSplitter;
use crate::redis::{self, Entry, Reader, StreamAcks};

/// How long one blocking read waits before it is sent again.
pub(super) const BLOCK: Duration = Duration::from_secs(2);
/// Free slots up to which a fetch is one script call (`lua/fetch.lua`); above, pipelined
/// XREADGROUPs. The script copies every entry it reads through Lua, which costs Redis
/// more per entry than XREADGROUP itself; for a handful that is cheaper than the extra
/// round trip a share given to an empty stream costs a pipelined read.
const SCRIPTED_FETCH_MAX: u32 = 4;
/// Entries read per fetch at most, whatever the concurrency.
pub(super) const MAX_FETCH: u32 = 256;
/// Finished entries a scripted fetch acknowledges at most; more go to the acker.
const MAX_RIDING: usize = 64;
/// How long a read may go unanswered (beyond its BLOCK time) before the loop counts it as
/// failed: a server that is paused, or cut off without the connection noticing, never
/// answers, and the loop must say so rather than wait in silence.
pub(super) const READ_DEADLINE: Duration = Duration::from_secs(10);
/// How often a stall that goes on is reported again.
const STALL_REPEAT: Duration = Duration::from_secs(60);

/// A run of failed reads of one queue: reported to the observers (log line, metric) once it
/// passes [`STALL_REPORT_AFTER`](crate::observe::STALL_REPORT_AFTER), then every minute,
/// and its end reported when a read works again.
#[derive(Debug, Default)]
pub(super) struct Stall {
    /// When the first failed read of the run was sent.
    since: Option<Instant>,
    /// When the run was last reported.
    reported: Option<Instant>,
}

impl Stall {
    pub(super) fn failed(&mut self, rt: &Runtime, queue: &str, read_sent: Instant, error: &str) {
        rt.observers.each(|o| o.read_failed(queue, error));
        let now = Instant::now();
        let since = *self.since.get_or_insert(read_sent);
        let due = match self.reported {
            None => now - since >= crate::observe::STALL_REPORT_AFTER,
            Some(last) => now - last >= STALL_REPEAT,
        };
        if due {
            self.reported = Some(now);
            rt.observers.each(|o| o.stalled(queue, now - since, error));
        }
    }

    pub(super) fn ended(&mut self, rt: &Runtime, queue: &str) {
        let Some(since) = self.since.take() else {
            return;
        };
        if self.reported.take().is_some() {
            rt.observers.each(|o| o.recovered(queue, since.elapsed()));
        } else {
            // Too short to count as a stall (a failover, a restart), but every failed read
            // was logged as a warning: say that it is over.
            tracing::info!(
                queue,
                failing_for = ?Duration::from_millis(since.elapsed().as_millis() as u64),
                "reading jobs works again"
            );
        }
    }
}

/// The pause between failed attempts to reach Redis: 100 ms doubling to 5 s.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// `read`, or a timeout error once it has gone unanswered for `deadline`.
pub(super) async fn within<T>(
    deadline: Duration,
    read: impl Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| {
            Err(crate::Error::Timeout(format!(
                "redis did not answer a read within {}",
                humantime::format_duration(deadline)
            )))
        })
}

/// Returns at once when the queue is not paused; while it is, fetches nothing and waits to
/// be resumed. False when `stop` fires (or the flag is gone) first.
pub(super) async fn unpaused(
    paused: &mut Option<tokio::sync::watch::Receiver<bool>>,
    stop: &CancellationToken,
) -> bool {
    let Some(p) = paused.as_mut() else {
        return true;
    };
    if !*p.borrow_and_update() {
        return true;
    }
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        r = p.wait_for(|paused| !*paused) => r.is_ok(),
    }
}

/// Consumes `queue` until `stop` fires.
pub(crate) async fn run(rt: Arc<Runtime>, queue: String, stop: CancellationToken) {
    let streams = rt.client.keys().streams(&queue);
    // Shared by every delivery of this loop, instead of a copy each.
    let queue_name: Arc<str> = Arc::from(queue.as_str());
    let stream_names: [Arc<str>; 3] = streams.clone().map(Arc::from);
    let mut backoff = reconnect_backoff();
    let mut stall = Stall::default();
    let conn = loop {
        let sent = Instant::now();
        let connecting = async {
            let reader = rt.client.store().reader(&rt.settings.consumer).await?;
            reader.ensure_groups(&streams).await?;
            Ok::<_, crate::Error>(reader)
        };
        let connected = tokio::time::timeout(READ_DEADLINE, connecting)
            .await
            .unwrap_or_else(|_| {
                Err(crate::Error::Timeout(
                    "redis did not answer while connecting".into(),
                ))
            });
        match connected {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(queue, error = %e, "cannot start consuming; retrying");
                stall.failed(&rt, &queue, sent, &e.to_string());
                if !backoff.wait(&stop).await {
                    return;
                }
            }
        }
    };
    tracing::debug!(queue, consumer = %rt.settings.consumer, "consuming");
    rt.consume_state.set_consuming(&queue, true);
    let mut splitter = SlotSplitter::new(rt.settings.weights);
    let mut aging = rt.settings.priority_aging.map(Aging::new);
    let mut paused = rt.pause.subscribe(&queue);
    let handoff = rt.handoff(&queue);

    'fetch: loop {
        if !unpaused(&mut paused, &stop).await {
            break;
        }
        // Waiting for a slot: a job of this queue that frees one leaves its finished entry
        // for this loop, and the fetch below acknowledges it (ack.rs, `Handoff`).
        let waiting = handoff.wait();
        let first = {
            let acquire = rt.slots.clone().acquire_owned();
            tokio::pin!(acquire);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break 'fetch,
                    p = &mut acquire => match p {
                        Ok(p) => break p,
                        Err(_) => break 'fetch,
                    },
                    _ = waiting.overdue() => handoff.flush().await,
                }
            }
        };
        let finished = waiting.take();
        let free = (1 + rt.slots.available_permits() as u32).min(MAX_FETCH);
        let aged = match aging.as_mut() {
            Some(a) => a.aged(&conn, &streams).await,
            None => Vec::new(),
        };
        let riding =
            if aged.is_empty() && free <= SCRIPTED_FETCH_MAX && finished.len() <= MAX_RIDING {
                let (riding, other) = ack::by_stream(finished, &stream_names);
                handoff.to_acker(other).await;
                riding
            } else {
                handoff.to_acker(finished).await;
                Default::default()
            };
        let mut first = Some(first);
        let mut sent = Instant::now();
        let mut fetched = if aged.is_empty() {
            within(
                READ_DEADLINE,
                fetch_ready(&conn, &streams, free, &mut splitter, &riding),
            )
            .await
        } else {
            within(
                READ_DEADLINE,
                fetch_aged(&conn, &streams, free, &mut splitter, &aged),
            )
            .await
        };
        if fetched.is_err() {
            // Maybe acknowledged, maybe not (the reply was lost): acknowledging again is
            // harmless, never acknowledging would run the jobs again.
            handoff.to_acker(ack::unbatch(riding, &stream_names)).await;
        }
        if matches!(&fetched, Ok(b) if b.is_empty()) {
            // Nothing waiting: block on all three streams without holding a slot, so other
            // queues of this worker can use it meanwhile.
            first = None;
            sent = Instant::now();
            fetched = within(
                BLOCK + READ_DEADLINE,
                fetch_blocking(&conn, &streams, &stop),
            )
            .await;
        }
        let batch = match fetched {
            Ok(b) => {
                backoff.reset();
                stall.ended(&rt, &queue);
                rt.consume_state.set_consuming(&queue, true);
                b
            }
            Err(e) if redis::is_nogroup(&e) => {
                tracing::warn!(
                    queue,
                    "consumer group missing (server restarted without persistence, or destroyed); recreating it"
                );
                drop(first);
                if let Err(e) = conn.ensure_groups(&streams).await {
                    tracing::warn!(queue, error = %e, "recreating the consumer group failed");
                    if !backoff.wait(&stop).await {
                        break;
                    }
                }
                continue;
            }
            Err(e) => {
                rt.consume_state.set_consuming(&queue, false);
                tracing::warn!(queue, error = %e, "reading jobs failed; retrying");
                stall.failed(&rt, &queue, sent, &e.to_string());
                drop(first);
                if !backoff.wait(&stop).await {
                    break;
                }
                continue;
            }
        };

        if !batch.is_empty() {
            super::limits::room_made(&rt, &queue);
        }
        // Every fetched entry is leased (renewed) from now on, started or not; an entry
        // dropped at shutdown leaves the table and is reclaimed elsewhere.
        let held: Vec<_> = batch
            .into_iter()
            .map(|(priority, (entry_id, fields))| {
                let stream = &stream_names[priority.index()];
                let (lease, token, cancel) = rt.leases.hold(stream, &entry_id, &rt.hard_stop);
                Delivery {
                    queue: queue_name.clone(),
                    priority,
                    stream: stream.clone(),
                    entry_id,
                    fields,
                    token,
                    cancel,
                    _lease: lease,
                    handoff: handoff.clone(),
                }
            })
            .collect();
        if !started::start_as_slots_free(&rt, held, first.take(), &stop).await {
            break 'fetch;
        }
    }
    // The connection may still be inside a blocking read: closing interrupts it first, so
    // an entry arriving now stays undelivered for the workers still running.
    if tokio::time::timeout(Duration::from_secs(2), conn.close())
        .await
        .is_err()
    {
        tracing::debug!(queue, "closing the read connection timed out");
    }
    rt.consume_state.set_consuming(&queue, false);
    tracing::debug!(queue, "stopped consuming");
}

/// Reads up to `free` entries that are already waiting, without blocking, most urgent
/// first. A few free slots are filled in one round trip by a script that gives an empty
/// stream's share to the others (`Reader::read_ready`), so a worker of concurrency 1 pays
/// one round trip per job whichever stream holds it; more are read with pipelined
/// XREADGROUPs (`fetch_in_rounds`), which Redis serves without copying every entry through
/// a script.
async fn fetch_ready(
    conn: &Reader,
    streams: &[String; 3],
    free: u32,
    splitter: &mut SlotSplitter,
    finished: &[StreamAcks; 3],
) -> crate::Result<Vec<(Priority, Entry)>> {
    if free > SCRIPTED_FETCH_MAX {
        return fetch_in_rounds(conn, streams, free, splitter).await;
    }
    let shares = splitter.split(free, [true; 3]);
    let replies = conn.read_ready(streams, shares, finished).await?;
    let mut out: Vec<(Priority, Entry)> = Vec::new();
    let mut failed = None;
    for (priority, reply) in Priority::ALL.into_iter().zip(replies) {
        match reply {
            Ok(entries) => out.extend(entries.into_iter().map(|e| (priority, e))),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        one_stream_failed(conn, streams, !out.is_empty(), e).await?;
    }
    Ok(out)
}

/// After a read in which some stream failed with `e`: the error itself when no stream
/// delivered anything. Otherwise what the others delivered is pending under this worker
/// now, so it runs, rather than wait to be taken back after the lease: a lost group is
/// recreated here, and any other error shows again at the next fetch.
async fn one_stream_failed(
    conn: &Reader,
    streams: &[String; 3],
    delivered: bool,
    e: crate::Error,
) -> crate::Result<()> {
    if !delivered {
        return Err(e);
    }
    if redis::is_nogroup(&e) {
        tracing::warn!(
            ?streams,
            "consumer group missing on one stream; recreating it"
        );
        if let Err(e) = conn.ensure_groups(streams).await {
            tracing::warn!(error = %e, "recreating the consumer group failed");
        }
    }
    Ok(())
}

/// Reads up to `free` entries that are already waiting, without blocking, most urgent
/// first, in pipelined XREADGROUPs: a round trip per round, a further round only when a
/// stream returned less than its share.
async fn fetch_in_rounds(
    conn: &Reader,
    streams: &[String; 3],
    free: u32,
    splitter: &mut SlotSplitter,
) -> crate::Result<Vec<(Priority, Entry)>> {
    let mut out: Vec<(Priority, Entry)> = Vec::new();
    let mut open = [true; 3];
    let mut remaining = free;
    for _ in 0..3 {
        let shares = splitter.split(remaining, open);
        let asked: Vec<(Priority, u32)> = Priority::ALL
            .into_iter()
            .map(|p| (p, shares[p.index()]))
            .filter(|(_, n)| *n > 0)
            .collect();
        if asked.is_empty() {
            break;
        }
        let requests: Vec<(String, u64)> = asked
            .iter()
            .map(|(p, n)| (streams[p.index()].clone(), u64::from(*n)))
            .collect();
        let replies = conn.read_shares(&requests).await?;
        let mut got = 0u32;
        let mut failed = None;
        for ((priority, share), reply) in asked.into_iter().zip(replies) {
            let entries = match reply {
                Ok(entries) => entries,
                Err(e) => {
                    open[priority.index()] = false;
                    failed.get_or_insert(e);
                    continue;
                }
            };
            let n = entries.len() as u32;
            if n < share {
                open[priority.index()] = false;
            }
            got += n;
            out.extend(entries.into_iter().map(|e| (priority, e)));
        }
        if let Some(e) = failed {
            one_stream_failed(conn, streams, !out.is_empty(), e).await?;
            break;
        }
        remaining = remaining.saturating_sub(got);
        if remaining == 0 || got == 0 {
            break;
        }
    }
    out.sort_by_key(|(p, _)| *p);
    Ok(out)
}

/// Priority aging (`WorkerBuilder::priority_aging`) for one fetch loop: which lower
/// streams hold a job that has waited past the bound, checked at most every tenth of it.
pub(super) struct Aging {
    pub(super) bound_ms: u64,
    every: Duration,
    checked: Option<Instant>,
    /// Aged streams (1 normal, 2 low), oldest first.
    aged: Vec<usize>,
}

impl Aging {
    pub(super) fn new(bound: Duration) -> Self {
        Aging {
            bound_ms: bound.as_millis() as u64,
            every: (bound / 10).clamp(Duration::from_millis(20), Duration::from_secs(1)),
            checked: None,
            aged: Vec::new(),
        }
    }

    /// Whether a check is due (the last is older than `every`); if so, it counts as made.
    pub(super) fn due(&mut self) -> bool {
        if self.checked.is_none_or(|t| t.elapsed() >= self.every) {
            self.checked = Some(Instant::now());
            return true;
        }
        false
    }

    /// The streams to serve first, oldest first: read again from Redis when the last
    /// check is older than `every` (a failed check keeps the last answer).
    async fn aged(&mut self, conn: &Reader, streams: &[String; 3]) -> Vec<usize> {
        if self.due() {
            match conn.oldest_waiting(streams).await {
                Ok(ages) => self.aged = aged_order(ages, self.bound_ms),
                Err(e) => tracing::debug!(error = %e, "checking waiting ages failed"),
            }
        }
        self.aged.clone()
    }
}

/// The lower streams (1 normal, 2 low) whose oldest waiting job is `bound_ms` old or
/// older, oldest first. `high` never ages: it is served first anyway.
pub(super) fn aged_order(ages: [Option<u64>; 3], bound_ms: u64) -> Vec<usize> {
    let mut aged: Vec<(usize, u64)> = (1..3)
        .filter_map(|i| ages[i].filter(|a| *a >= bound_ms).map(|a| (i, a)))
        .collect();
    aged.sort_by_key(|(_, a)| std::cmp::Reverse(*a));
    aged.into_iter().map(|(i, _)| i).collect()
}

/// Reads up to `free` entries with the `aged` streams served first (in order, each as
/// many as it has), then the rest as [`fetch_in_rounds`] does.
async fn fetch_aged(
    conn: &Reader,
    streams: &[String; 3],
    free: u32,
    splitter: &mut SlotSplitter,
    aged: &[usize],
) -> crate::Result<Vec<(Priority, Entry)>> {
    let mut out: Vec<(Priority, Entry)> = Vec::new();
    let mut remaining = free;
    for &i in aged {
        if remaining == 0 {
            break;
        }
        let reply = conn
            .read_shares(&[(streams[i].clone(), u64::from(remaining))])
            .await?;
        let entries = match reply.into_iter().next() {
            Some(Ok(entries)) => entries,
            Some(Err(e)) => {
                one_stream_failed(conn, streams, !out.is_empty(), e).await?;
                continue;
            }
            None => Vec::new(),
        };
        remaining = remaining.saturating_sub(entries.len() as u32);
        out.extend(entries.into_iter().map(|e| (Priority::ALL[i], e)));
    }
    if remaining > 0 {
        out.extend(fetch_in_rounds(conn, streams, remaining, splitter).await?);
    }
    Ok(out)
}

/// Blocks until an entry arrives on any of the three streams (or the BLOCK time passes,
/// or `stop` fires) and returns what arrived, one entry per stream at most.
async fn fetch_blocking(
    conn: &Reader,
    streams: &[String; 3],
    stop: &CancellationToken,
) -> crate::Result<Vec<(Priority, Entry)>> {
    let read = conn.read_blocking(1, BLOCK, streams.to_vec());
    let reply = tokio::select! {
        biased;
        _ = stop.cancelled() => return Ok(Vec::new()),
        r = read => r?,
    };
    let mut out: Vec<(Priority, Entry)> = Vec::new();
    for (stream, entries) in reply {
        let priority = redis::priority_of(&stream).unwrap_or_default();
        out.extend(entries.into_iter().map(|e| (priority, e)));
    }
    out.sort_by_key(|(p, _)| *p);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::aged_order;

    #[test]
    fn lower_streams_past_the_bound_are_served_oldest_first() {
        assert!(aged_order([Some(9_000), Some(10), None], 300).is_empty());
        assert_eq!(
            aged_order([Some(9_000), Some(400), Some(900)], 300),
            vec![2, 1]
        );
        assert_eq!(aged_order([None, Some(300), Some(299)], 300), vec![1]);
        assert!(aged_order([None, None, None], 300).is_empty());
    }
}
