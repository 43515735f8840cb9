//! Acknowledging finished jobs in batches.
//!
//! A finished job's entry is acknowledged and deleted with a plain XACK + XDEL: whoever holds
//! its lease now, the job is done, and entry ids are never reused. Handlers hand their
//! entries to one acker task, which takes whatever has piled up since its last round trip
//! and sends it all at once: one script call per stream (`lua/ack.lua`) acknowledges,
//! deletes and records the success of every job of the batch, so the cost per job shrinks as load
//! grows while an idle worker still acknowledges at once. A script rather than a pipeline
//! of XACK, XDEL and two status commands per job: the client builds, sends and parses one
//! command per batch instead of two per job.
//!
//! A queue whose fetch loop is waiting for a free slot takes its finished entries along
//! instead ([`Handoff`]): the job that frees the slot is acknowledged by the very call that
//! fetches the next one (`lua/fetch.lua`), so a worker running one job at a time pays one
//! command and one round trip per job, not two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Runtime;
use crate::Client;
use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::handler::JobContext;
use crate::redis::{StreamAcks, Succeeded};

/// Entries acknowledged per round trip at most.
const MAX_BATCH: usize = 1024;
/// Round trips tried for one batch before it is left pending (it then runs again later).
const MAX_TRIES: u32 = 10;

/// One finished entry.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) stream: Arc<str>,
    pub(crate) entry_id: String,
    /// How the job's success is kept, if it is.
    pub(crate) record: Option<Succeeded>,
}

/// Finished entries of one queue on their way to its fetch loop's next read.
///
/// While the loop waits for a free slot ([`Handoff::wait`]), a finishing job leaves its
/// entry here before it frees its slot; the loop, woken by that slot, takes the entries
/// with it into its fetch. At any other time (the loop is reading, blocked on an empty
/// queue, or stopped) entries go to the acker, so nothing waits on a read that may take
/// seconds. Entries are left only while the loop is the one task waiting for a slot
/// ([`SlotWaiters`]), so the slot their job frees wakes it; should another task take that
/// slot all the same (one that grabs a free slot without waiting), they go to the acker
/// after [`HANDOFF_WAIT`]. Entries left behind when the loop stops waiting without
/// fetching (it stopped, its task ended) go to the acker then.
#[derive(Debug)]
pub(crate) struct Handoff {
    state: Mutex<Waiting>,
    acker: mpsc::Sender<Ack>,
    /// Tasks of the worker waiting for a slot ([`SlotWaiters`]).
    waiters: Arc<SlotWaiters>,
    /// Told when a first entry is left while the loop waits.
    filled: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Waiting {
    /// The fetch loop waits for a slot and will take what is left here.
    open: bool,
    acks: Vec<Ack>,
}

/// How long entries wait for the fetch loop before they go to the acker. The loop is woken
/// by the slot their job frees, within microseconds unless another queue's loop (or the
/// janitor) was queued for slots first.
const HANDOFF_WAIT: Duration = Duration::from_millis(2);

/// How many tasks of a worker wait for a free slot: fetch loops, and batches of fetched or
/// taken-over entries not started yet. A finished entry is left for its fetch loop only
/// when that loop is the one waiter, so the slot its job frees is sure to wake that loop;
/// with others waiting, the slot may go to one of them (slots are given in turn), so the
/// entry goes to the acker at once, as it would without a waiting loop.
#[derive(Debug, Default)]
pub(crate) struct SlotWaiters(AtomicUsize);

impl SlotWaiters {
    /// Counts the caller as waiting until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> SlotWait {
        self.0.fetch_add(1, Ordering::SeqCst);
        SlotWait(self.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One task waiting for a slot, while it lives.
#[derive(Debug)]
pub(crate) struct SlotWait(Arc<SlotWaiters>);

impl Drop for SlotWait {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Handoff {
    pub(crate) fn new(acker: mpsc::Sender<Ack>, waiters: Arc<SlotWaiters>) -> Self {
        Handoff {
            state: Mutex::default(),
            acker,
            waiters,
            filled: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // The state is a flag and a list, valid whatever a panicking holder left.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Settles a finished entry: left for the fetch loop when it is the one task waiting
    /// for a slot, else sent to the acker.
    pub(crate) async fn settle(&self, ack: Ack) {
        let ack = {
            let mut w = self.lock();
            if w.open && self.waiters.count() == 1 {
                w.acks.push(ack);
                if w.acks.len() == 1 {
                    self.filled.notify_one();
                }
                return;
            }
            ack
        };
        let _ = self.acker.send(ack).await;
    }

    /// Sends entries to the acker: ones the loop took but could not send (its read failed,
    /// or it reads another way).
    pub(crate) async fn to_acker(&self, acks: Vec<Ack>) {
        for ack in acks {
            let _ = self.acker.send(ack).await;
        }
    }

    /// Sends the entries left for the loop so far to the acker (they waited
    /// [`HANDOFF_WAIT`] for a loop their slot did not wake); the loop goes on waiting.
    pub(crate) async fn flush(&self) {
        let acks = {
            let mut w = self.lock();
            if w.acks.is_empty() {
                return;
            }
            std::mem::take(&mut w.acks)
        };
        self.to_acker(acks).await;
    }

    /// Marks the fetch loop as waiting for a slot, until the returned guard takes the
    /// entries left meanwhile or is dropped (which sends them to the acker).
    pub(crate) fn wait(&self) -> HandoffGuard<'_> {
        let counted = self.waiters.enter();
        self.lock().open = true;
        HandoffGuard {
            handoff: self,
            _counted: counted,
        }
    }
}

/// The fetch loop's side of a [`Handoff`] while it waits for a slot.
pub(crate) struct HandoffGuard<'a> {
    handoff: &'a Handoff,
    _counted: SlotWait,
}

impl HandoffGuard<'_> {
    /// Resolves once entries have waited here [`HANDOFF_WAIT`]: the loop was not woken by
    /// their slots. The loop then sends them to the acker ([`Handoff::flush`]) and goes on
    /// waiting.
    pub(crate) async fn overdue(&self) {
        self.handoff.filled.notified().await;
        tokio::time::sleep(HANDOFF_WAIT).await;
    }

    /// Stops waiting and takes the entries left meanwhile.
    pub(crate) fn take(self) -> Vec<Ack> {
        self.close()
    }

    fn close(&self) -> Vec<Ack> {
        let mut w = self.handoff.lock();
        w.open = false;
        std::mem::take(&mut w.acks)
    }
}

impl Drop for HandoffGuard<'_> {
    fn drop(&mut self) {
        let acks = self.close();
        if acks.is_empty() {
            return;
        }
        // Dropped without taking them (the loop stopped, or its task was cancelled):
        // nothing here can wait, so a task sends them.
        let acker = self.handoff.acker.clone();
        tokio::spawn(async move {
            for ack in acks {
                let _ = acker.send(ack).await;
            }
        });
    }
}

/// Finished entries of one queue grouped by their stream, most urgent first (`streams`:
/// the queue's high, normal and low streams), for a fetch to acknowledge; with the entries
/// of any other stream (none is expected), which go to the acker.
pub(crate) fn by_stream(acks: Vec<Ack>, streams: &[Arc<str>; 3]) -> ([StreamAcks; 3], Vec<Ack>) {
    let mut out: [StreamAcks; 3] = Default::default();
    let mut other = Vec::new();
    for ack in acks {
        match streams.iter().position(|s| *s == ack.stream) {
            Some(i) => {
                out[i].ids.push(ack.entry_id);
                out[i].records.extend(ack.record);
            }
            None => other.push(ack),
        }
    }
    (out, other)
}

/// The entries of [`by_stream`] back as single acknowledgements, for the acker. Which
/// record rides with which entry does not matter: a call takes its stream's entries and
/// records together.
pub(crate) fn unbatch(grouped: [StreamAcks; 3], streams: &[Arc<str>; 3]) -> Vec<Ack> {
    let mut out = Vec::new();
    for (acks, stream) in grouped.into_iter().zip(streams) {
        let mut records = acks.records.into_iter();
        for entry_id in acks.ids {
            out.push(Ack {
                stream: stream.clone(),
                entry_id,
                record: records.next(),
            });
        }
    }
    out
}

/// How a succeeded job's success is kept, if it is (`keep_ms` 0: not at all): its status
/// hash (`status_key`) marked succeeded, or a field of its queue's done bucket.
pub(crate) fn success_record(
    rt: &Runtime,
    queue: &str,
    status_key: Option<String>,
    env: &Envelope,
    keep_ms: u64,
    ctx: &JobContext,
) -> Option<Succeeded> {
    match status_key {
        Some(key) => Some(Succeeded::Record {
            key,
            result: ctx.take_result(),
            keep_ms,
        }),
        // A job with an `id` field and status off: a record that keeps nothing, so the
        // acknowledgement knows the job's id (its dependents: docs/architecture.md).
        None if env.recorded => Some(Succeeded::Record {
            key: rt.client.keys().job(queue, &env.id),
            result: None,
            keep_ms: 0,
        }),
        None if keep_ms > 0 => rt
            .client
            .keys()
            .done_of(&env.id)
            .map(|bucket| Succeeded::Done {
                bucket,
                value: Succeeded::done_value(
                    crate::clock::now_ms(),
                    env.attempt,
                    env.max_attempts,
                    &env.job_type,
                    ctx.take_result().as_deref(),
                ),
                job_id: env.id.clone(),
                keep_ms,
            }),
        None => None,
    }
}

/// Starts the acker; it ends once every sender is dropped and the last batch is sent.
pub(crate) fn spawn(client: Client, mut rx: mpsc::Receiver<Ack>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
            let mut by_stream: HashMap<Arc<str>, StreamAcks> = HashMap::new();
            for ack in buf.drain(..) {
                let acks = by_stream.entry(ack.stream).or_default();
                acks.ids.push(ack.entry_id);
                acks.records.extend(ack.record);
            }
            send(&client, &by_stream).await;
        }
    })
}

async fn send(client: &Client, by_stream: &HashMap<Arc<str>, StreamAcks>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    for attempt in 1..=MAX_TRIES {
        match client.store().ack_batch(by_stream).await {
            Ok(_) => return,
            Err(e) if attempt < MAX_TRIES => {
                tracing::warn!(error = %e, attempt, "acknowledging finished jobs failed; retrying");
                backoff.sleep().await;
            }
            Err(e) => {
                let n: usize = by_stream.values().map(|a| a.ids.len()).sum();
                tracing::error!(error = %e, jobs = n, "could not acknowledge finished jobs; they stay pending and will run again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str) -> Ack {
        Ack {
            stream: Arc::from("s"),
            entry_id: id.to_string(),
            record: None,
        }
    }

    fn ids(acks: &[Ack]) -> Vec<&str> {
        acks.iter().map(|a| a.entry_id.as_str()).collect()
    }

    #[tokio::test]
    async fn entries_ride_with_a_waiting_loop_and_go_to_the_acker_otherwise() {
        let (tx, mut rx) = mpsc::channel(16);
        let h = Handoff::new(tx, Arc::default());
        // Not waiting: straight to the acker.
        h.settle(ack("1-0")).await;
        assert_eq!(
            rx.try_recv().map(|a| a.entry_id).ok().as_deref(),
            Some("1-0")
        );

        // Waiting: left for the loop, which takes them.
        let waiting = h.wait();
        h.settle(ack("2-0")).await;
        h.settle(ack("3-0")).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(ids(&waiting.take()), ["2-0", "3-0"]);

        // Taken: the loop reads now, so the next goes to the acker.
        h.settle(ack("4-0")).await;
        assert_eq!(
            rx.try_recv().map(|a| a.entry_id).ok().as_deref(),
            Some("4-0")
        );
    }

    #[tokio::test]
    async fn a_loop_that_stops_waiting_without_taking_hands_them_to_the_acker() {
        let (tx, mut rx) = mpsc::channel(16);
        let h = Handoff::new(tx, Arc::default());
        let waiting = h.wait();
        h.settle(ack("1-0")).await;
        drop(waiting);
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("sent on drop");
        assert_eq!(got.map(|a| a.entry_id).as_deref(), Some("1-0"));
        h.settle(ack("2-0")).await;
        assert_eq!(
            rx.try_recv().map(|a| a.entry_id).ok().as_deref(),
            Some("2-0")
        );
    }

    #[tokio::test]
    async fn entries_the_loop_does_not_take_soon_go_to_the_acker() {
        let (tx, mut rx) = mpsc::channel(16);
        let h = Handoff::new(tx, Arc::default());
        let waiting = h.wait();
        h.settle(ack("1-0")).await;
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), waiting.overdue())
            .await
            .expect("overdue");
        h.flush().await;
        assert!(started.elapsed() >= HANDOFF_WAIT);
        assert_eq!(
            rx.try_recv().map(|a| a.entry_id).ok().as_deref(),
            Some("1-0")
        );
        // Still waiting: the next one is left for the loop again.
        h.settle(ack("2-0")).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(ids(&waiting.take()), ["2-0"]);
    }

    #[tokio::test]
    async fn with_another_task_waiting_for_a_slot_entries_go_to_the_acker() {
        let (tx, mut rx) = mpsc::channel(16);
        let waiters = Arc::<SlotWaiters>::default();
        let h = Handoff::new(tx, waiters.clone());
        let waiting = h.wait();
        let janitor = waiters.enter();
        h.settle(ack("1-0")).await;
        assert_eq!(
            rx.try_recv().map(|a| a.entry_id).ok().as_deref(),
            Some("1-0")
        );
        drop(janitor);
        h.settle(ack("2-0")).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(ids(&waiting.take()), ["2-0"]);
    }

    #[test]
    fn entries_group_by_stream_and_come_back_whole() {
        let streams: [Arc<str>; 3] = [Arc::from("h"), Arc::from("n"), Arc::from("l")];
        let mut acks = vec![ack("1-0"), ack("2-0")];
        acks[0].stream = streams[2].clone();
        acks[1].stream = streams[0].clone();
        acks.push(ack("3-0"));
        let (grouped, other) = by_stream(acks, &streams);
        assert_eq!(ids(&other), ["3-0"], "of no stream of the queue");
        assert_eq!(grouped[0].ids, ["2-0"]);
        assert_eq!(grouped[2].ids, ["1-0"]);
        let back = unbatch(grouped, &streams);
        let mut pairs: Vec<(&str, &str)> = back
            .iter()
            .map(|a| (&*a.stream, a.entry_id.as_str()))
            .collect();
        pairs.sort();
        assert_eq!(pairs, [("h", "2-0"), ("l", "1-0")]);
    }
}
