//! One in-process worker of a harness, on a Tokio runtime of its own.
//!
//! A worker gets its own runtime (one thread) so that a crash can be simulated faithfully:
//! shutting that runtime down drops every task the worker started at once (fetch loops,
//! running handlers, the acknowledging task, lease renewal, heartbeat and its Redis
//! connections), so nothing is acknowledged and the worker's entries stay pending in
//! Redis, exactly as when a process is killed. Aborting the task that runs
//! `Worker::run_until` would not do that: the handler tasks it spawned would run on and
//! acknowledge their jobs.

use std::sync::Arc;
use std::time::Duration;

use stevedore::{Client, ClientBuilder, Worker, WorkerBuilder};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::KitError;

/// Applies one setting (a handler, a lease, the user's own) to a worker builder.
pub(crate) type Setup = Arc<dyn Fn(WorkerBuilder) -> WorkerBuilder + Send + Sync>;

/// How a harness builds each of its workers.
pub(crate) struct Recipe {
    /// Redis URL and key prefix (and any client settings), shared with the harness' client.
    pub(crate) client: ClientBuilder,
    /// Applied in order: the harness' defaults, the handlers, the test's own settings.
    pub(crate) setups: Vec<Setup>,
}

impl Recipe {
    fn builder(&self, client: Client, name: &str) -> WorkerBuilder {
        self.setups
            .iter()
            .fold(Worker::builder(client).consumer_name(name), |b, setup| {
                setup(b)
            })
    }
}

/// How long a crash waits for the worker's threads to stop.
const CRASH_DEADLINE: Duration = Duration::from_secs(5);

/// A running worker and the runtime it runs on.
pub(crate) struct InProcessWorker {
    name: String,
    /// `None` once crashed or stopped.
    runtime: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<stevedore::Result<()>>>,
}

impl InProcessWorker {
    /// Connects a client of its own, builds the worker and starts it. Returns once the
    /// worker was built (or failed to be).
    pub(crate) async fn start(recipe: Arc<Recipe>, name: String) -> Result<Self, KitError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name.clone())
            .enable_all()
            .build()?;
        let (ready_tx, ready_rx) = oneshot::channel::<stevedore::Result<()>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let consumer = name.clone();
        // The client is connected on the worker's runtime, so its connections die with it.
        let run = runtime.spawn(async move {
            let built = match recipe.client.clone().connect().await {
                Ok(client) => recipe.builder(client, &consumer).build(),
                Err(e) => Err(e),
            };
            let worker = match built {
                Ok(worker) => worker,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = ready_tx.send(Ok(()));
            // A dropped sender (the harness went away) stops the worker too.
            worker
                .run_until(async move {
                    let _ = stop_rx.await;
                })
                .await
        });
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| KitError::Worker {
            name: name.clone(),
            source,
        };
        let result = match ready_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(failed(Box::new(e))),
            Err(_) => Err(failed(
                "the worker task ended before the worker was built".into(),
            )),
        };
        match result {
            Ok(()) => Ok(InProcessWorker {
                name,
                runtime: Some(runtime),
                stop: Some(stop_tx),
                run: Some(run),
            }),
            Err(e) => {
                runtime.shutdown_background();
                Err(e)
            }
        }
    }

    /// The worker's consumer name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Kills the worker like a crashed process: every task is dropped where it stands,
    /// nothing is acknowledged, the heartbeat is not withdrawn. Returns once its threads
    /// stopped (at most a few seconds for blocking work a handler started).
    pub(crate) async fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks, which an async context must not do.
            let _ =
                tokio::task::spawn_blocking(move || runtime.shutdown_timeout(CRASH_DEADLINE)).await;
        }
    }

    /// Stops the worker gracefully (running jobs finish within the drain timeout) and
    /// returns how its run ended.
    pub(crate) async fn stop(mut self) -> Result<(), KitError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = match self.run.take() {
            Some(run) => run.await,
            None => Ok(Ok(())),
        };
        let name = self.name.clone();
        self.crash().await;
        match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(KitError::Worker {
                name,
                source: Box::new(e),
            }),
            Err(join) => Err(KitError::Worker {
                name,
                source: Box::new(join),
            }),
        }
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
