//! Acknowledging finished jobs in batches.
//!
//! A finished job's entry is acknowledged and deleted with a plain XACK + XDEL: whoever holds
//! its lease now, the job is done, and entry ids are never reused. Handlers hand their
//! entries to one acker task, which takes whatever has piled up since its last round trip
//! and sends it all in one pipeline, so the cost per job shrinks as load grows while an idle
//! worker still acknowledges at once.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Client;
use crate::redis::{self, keys::GROUP};

/// Entries acknowledged per round trip at most.
const MAX_BATCH: usize = 1024;
/// Round trips tried for one batch before it is left pending (it then runs again later).
const MAX_TRIES: u32 = 10;

/// One finished entry.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) stream: String,
    pub(crate) entry_id: String,
    /// The job's status key and the handler's result, when status is tracked.
    pub(crate) status: Option<(String, Option<String>)>,
}

/// Starts the acker; it ends once every sender is dropped and the last batch is sent.
pub(crate) fn spawn(client: Client, mut rx: mpsc::Receiver<Ack>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
            let mut by_stream: HashMap<String, Vec<String>> = HashMap::new();
            let mut statuses = Vec::new();
            for ack in buf.drain(..) {
                by_stream.entry(ack.stream).or_default().push(ack.entry_id);
                statuses.extend(ack.status);
            }
            send(&client, &by_stream, &statuses).await;
        }
    })
}

async fn send(
    client: &Client,
    by_stream: &HashMap<String, Vec<String>>,
    statuses: &[(String, Option<String>)],
) {
    let mut delay = Duration::from_millis(50);
    let retention = client.status_retention_ms();
    for attempt in 1..=MAX_TRIES {
        match redis::ack_and_delete(client.redis(), GROUP, by_stream, statuses, retention).await {
            Ok(()) => return,
            Err(e) if attempt < MAX_TRIES => {
                tracing::warn!(error = %e, attempt, "acknowledging finished jobs failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let n: usize = by_stream.values().map(Vec::len).sum();
                tracing::error!(error = %e, jobs = n, "could not acknowledge finished jobs; they stay pending and will run again");
            }
        }
    }
}
