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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Client;
use crate::backoff::Backoff;
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
