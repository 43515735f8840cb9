//! Liveness and readiness: is Redis reachable, and is the worker consuming.
//!
//! A [`Health`] comes from a worker ([`Worker::health`](crate::Worker::health)), taken
//! before it runs, or from a client alone ([`Health::for_client`]) for processes that only
//! produce or administer. The [`http`](crate::http) router serves it as `/healthz` and
//! `/readyz`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::{Client, Result};

/// How long a health check waits for Redis to answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle for health checks. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    client: Client,
    state: Option<Arc<ConsumeState>>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("consume_loops", &self.consuming())
            .finish()
    }
}

/// Which of a worker's consume loops are running: one per queue, or per partition of a
/// partitioned queue once the worker has read its layout.
#[derive(Debug)]
pub(crate) struct ConsumeState {
    running: AtomicBool,
    queues: std::sync::Mutex<Vec<(String, bool)>>,
}

impl ConsumeState {
    pub(crate) fn new(queues: &[String]) -> Self {
        ConsumeState {
            running: AtomicBool::new(false),
            queues: std::sync::Mutex::new(queues.iter().map(|q| (q.clone(), false)).collect()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, bool)>> {
        // Flags only: valid whatever a panicking holder left.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the worker's queues by the loops it runs (a partitioned queue's partitions).
    pub(crate) fn set_loops(&self, loops: &[String]) {
        *self.lock() = loops.iter().map(|q| (q.clone(), false)).collect();
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
        if !running {
            for (_, c) in self.lock().iter_mut() {
                *c = false;
            }
        }
    }

    /// Records whether `queue`'s loop is reading (false while it retries a failed read).
    pub(crate) fn set_consuming(&self, queue: &str, consuming: bool) {
        if let Some((_, c)) = self.lock().iter_mut().find(|(q, _)| q == queue) {
            *c = consuming;
        }
    }

    fn not_consuming(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, c)| !c)
            .map(|(q, _)| q.clone())
            .collect()
    }
}

/// A worker's readiness, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// True when the worker runs, every queue's consume loop is reading, and Redis answers
    /// and accepts writes.
    pub ready: bool,
    /// Whether Redis answered a PING within [`PING_TIMEOUT`].
    pub redis: bool,
    /// Whether Redis accepted a small write (`SET <prefix>:health`, expiring in 10 s)
    /// within [`PING_TIMEOUT`]: false when it refuses writes (out of memory at `maxmemory`,
    /// a read-only replica, a cluster that is down) though it still answers.
    pub redis_writable: bool,
    /// Why Redis is not ready, as Redis or the connection said it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_error: Option<String>,
    /// Whether the worker runs (started and not stopping). Always true for a client-only
    /// health handle.
    pub running: bool,
    /// The queues whose consume loop is not reading right now.
    pub not_consuming: Vec<String>,
}

impl Health {
    /// Health for a process without a worker: ready whenever Redis answers.
    pub fn for_client(client: Client) -> Self {
        Health {
            client,
            state: None,
        }
    }

    pub(crate) fn for_worker(client: Client, state: Arc<ConsumeState>) -> Self {
        Health {
            client,
            state: Some(state),
        }
    }

    /// Pings Redis within [`PING_TIMEOUT`] and returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration> {
        let start = std::time::Instant::now();
        self.client.store().ping(PING_TIMEOUT).await?;
        Ok(start.elapsed())
    }

    /// Whether the worker runs, its consume loops all read, and Redis answers and accepts
    /// a write (a client-only handle only checks Redis). A lost connection can stay
    /// invisible to a loop blocked in a read for a while; the PING makes it visible at
    /// once, and the write shows a server that answers but refuses jobs.
    pub async fn readiness(&self) -> Readiness {
        let mut r = self.consuming();
        match self.ping().await {
            Ok(_) => {
                r.redis = true;
                match self.probe_write().await {
                    Ok(()) => r.redis_writable = true,
                    Err(e) => {
                        r.redis_writable = false;
                        r.redis_error = Some(e.to_string());
                    }
                }
            }
            Err(e) => {
                r.redis = false;
                r.redis_writable = false;
                r.redis_error = Some(e.to_string());
            }
        }
        r.ready &= r.redis && r.redis_writable;
        r
    }

    /// Writes the readiness probe key, within [`PING_TIMEOUT`].
    async fn probe_write(&self) -> Result<()> {
        self.client.store().probe_write(PING_TIMEOUT).await
    }

    /// The consume loops' part of [`readiness`](Self::readiness), without asking Redis.
    fn consuming(&self) -> Readiness {
        match &self.state {
            None => Readiness {
                ready: true,
                redis: true,
                redis_writable: true,
                redis_error: None,
                running: true,
                not_consuming: Vec::new(),
            },
            Some(s) => {
                let running = s.running.load(Ordering::Acquire);
                let not_consuming = s.not_consuming();
                Readiness {
                    ready: running && not_consuming.is_empty(),
                    redis: true,
                    redis_writable: true,
                    redis_error: None,
                    running,
                    not_consuming,
                }
            }
        }
    }
}
