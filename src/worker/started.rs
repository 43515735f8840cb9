//! Recording attempts as running, in batches.
//!
//! A job's status says `running` before its handler starts, and that write must land
//! before any later one (`retrying`, `dead`, `succeeded`), so every attempt waits for it.
//! Attempts hand their writes to one recorder task, which sends whatever has piled up since
//! its last round trip as one script call per queue (`lua/started.lua`) and then lets those
//! attempts start: one command per batch instead of one per job, while a job on an idle
//! worker still starts after a single round trip.

use std::collections::HashMap;
use std::sync::Arc;

use fred::error::Error;
use fred::types::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::Client;
use crate::redis::scripts;

/// Writes taken from the queue per round trip at most.
const MAX_BATCH: usize = 1024;
/// Writes per script call at most: a script holds the server while it runs.
const SCRIPT_BATCH: usize = 256;

/// One attempt about to start.
struct Started {
    queue: Arc<str>,
    status_key: String,
    attempt: u32,
    at_ms: u64,
    done: oneshot::Sender<Result<(), Error>>,
}

/// The handle attempts record themselves through.
#[derive(Clone)]
pub(crate) struct Recorder(mpsc::Sender<Started>);

impl Recorder {
    /// Records the attempt `attempt` of the job whose status is `status_key` (on `queue`)
    /// as running since now, and returns once Redis has it.
    pub(crate) async fn record(
        &self,
        queue: &Arc<str>,
        status_key: String,
        attempt: u32,
    ) -> Result<(), Error> {
        let (done, result) = oneshot::channel();
        let write = Started {
            queue: queue.clone(),
            status_key,
            attempt,
            at_ms: crate::job::now_ms(),
            done,
        };
        if self.0.send(write).await.is_err() {
            return Err(Error::new_canceled());
        }
        result.await.unwrap_or_else(|_| Err(Error::new_canceled()))
    }
}

/// Starts the recorder; it ends once every [`Recorder`] is dropped.
pub(crate) fn spawn(client: Client) -> (Recorder, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Started>(4096);
    let task = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
            let mut by_queue: HashMap<Arc<str>, Vec<Started>> = HashMap::new();
            for w in buf.drain(..) {
                let writes = by_queue.entry(w.queue.clone()).or_default();
                writes.push(w);
            }
            let mut calls = Vec::new();
            for mut writes in by_queue.into_values() {
                while writes.len() > SCRIPT_BATCH {
                    let rest = writes.split_off(SCRIPT_BATCH);
                    calls.push(send(&client, writes));
                    writes = rest;
                }
                calls.push(send(&client, writes));
            }
            futures::future::join_all(calls).await;
        }
    });
    (Recorder(tx), task)
}

/// Sends one queue's writes and tells each attempt how it went.
async fn send(client: &Client, writes: Vec<Started>) {
    let mut keys = Vec::with_capacity(writes.len());
    let mut args = Vec::with_capacity(2 * writes.len());
    let mut waiting = Vec::with_capacity(writes.len());
    for w in writes {
        keys.push(w.status_key);
        args.push(Value::from(i64::from(w.attempt)));
        args.push(Value::from(w.at_ms as i64));
        waiting.push(w.done);
    }
    let r: Result<Value, Error> =
        scripts::run(client.redis(), &client.scripts().started, keys, args).await;
    for done in waiting {
        let _ = done.send(r.clone().map(|_| ()));
    }
}
