use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use serde::{Deserialize, Serialize};
use stevedore::{Error, JobContext, JobError, Priority, Worker, job_handler};

use crate::support::{self, TestEnv, blocked_readers, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nap {
    ms: u64,
}

#[job_handler(name = "nap", queue = "naps")]
async fn nap(n: Nap, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), "started");
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(n.ms)) => {}
        _ = ctx.cancelled() => {
            support::record(ctx.id(), "cancelled");
            return Err(JobError::retry("cancelled"));
        }
    }
    support::record(ctx.id(), "finished");
    Ok(())
}

fn events(id: &stevedore::JobId) -> Vec<&'static str> {
    support::values::<&'static str>(id.as_str())
}

#[tokio::test]
async fn shutdown_waits_for_the_running_job_and_acknowledges_it() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(nap::handler())
            .build()
            .expect("worker"),
    );
    let id = env
        .client
        .enqueue(nap::job(Nap { ms: 800 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "job started", || async {
        support::runs(id.as_str()) == 1
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
    assert_eq!(
        events(&id),
        vec!["started", "finished"],
        "shutdown returned only after the job finished"
    );
    assert_eq!(env.ready("naps").await, 0, "finished job removed");
    assert_eq!(
        env.pending("naps").await,
        0,
        "finished job acknowledged before shutdown returned"
    );
}

#[tokio::test]
async fn shutdown_leaves_a_fetched_but_unstarted_job_pending() {
    let env = TestEnv::start().await;
    // One slot, two queues: each queue's read loop is blocked waiting for work.
    let worker = Worker::builder(env.client.clone())
        .queues(["naps", "naps2"])
        .concurrency(1)
        .handler(nap::handler())
        .build()
        .expect("worker");
    let consumer = worker.consumer_name().to_string();
    let running = support::spawn(worker);
    eventually(
        Duration::from_secs(10),
        "both read loops blocked",
        || async { blocked_readers(&env).await == 2 },
    )
    .await;

    // The first job takes the only slot; the second arrives on the other queue, whose
    // loop was already reading, so it is fetched but must wait for the slot.
    let first = env
        .client
        .enqueue(nap::job(Nap { ms: 800 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "first job started", || async {
        support::runs(first.as_str()) == 1
    })
    .await;
    let second = env
        .client
        .enqueue(nap::job(Nap { ms: 10 }).queue("naps2"))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "second job delivered to the worker",
        || async { env.pending("naps2").await == 1 },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");

    assert_eq!(events(&first), vec!["started", "finished"]);
    assert_eq!(
        support::runs(second.as_str()),
        0,
        "the second job never started"
    );
    assert_eq!(
        env.ready("naps").await + env.pending("naps").await,
        0,
        "first job acknowledged and removed"
    );
    assert_eq!(
        env.ready("naps2").await,
        1,
        "second job still in its stream"
    );
    let pending: Vec<(String, String, u64, u64)> = env
        .raw
        .xpending(env.stream("naps2", "normal"), "stevedore", ("-", "+", 10))
        .await
        .expect("xpending");
    assert_eq!(
        pending.len(),
        1,
        "second job delivered but not acknowledged"
    );
    assert_eq!(
        pending[0].1, consumer,
        "owned by the stopped worker, to be reclaimed"
    );
}

#[tokio::test]
async fn drain_deadline_cancels_running_jobs_and_leaves_them_pending() {
    let env = TestEnv::start().await;
    let worker = Worker::builder(env.client.clone())
        .drain_timeout(Duration::from_millis(300))
        .handler(nap::handler())
        .build()
        .expect("worker");
    let running = support::spawn(worker);
    let id = env
        .client
        .enqueue(nap::job(Nap { ms: 60_000 }).priority(Priority::Low))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "job started", || async {
        support::runs(id.as_str()) == 1
    })
    .await;
    let err = running.shutdown().await.expect_err("deadline passed");
    assert!(
        matches!(err, Error::DrainTimeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(
        events(&id),
        vec!["started", "cancelled"],
        "the handler saw the cancellation"
    );
    assert_eq!(env.ready("naps").await, 1, "entry kept");
    assert_eq!(
        env.pending("naps").await,
        1,
        "entry left unacknowledged, to run again"
    );
    assert_eq!(env.xlen(&env.dlq("naps")).await, 0, "not dead-lettered");
}

#[tokio::test]
async fn after_shutdown_no_read_is_left_blocked_to_swallow_new_jobs() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(nap::handler())
            .build()
            .expect("worker"),
    );
    eventually(
        Duration::from_secs(10),
        "worker blocked in its read",
        || async { blocked_readers(&env).await == 1 },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
    assert_eq!(blocked_readers(&env).await, 0, "no read left blocked");
    // Interrupted with CLIENT UNBLOCK rather than waited out.
    let stats: String = env
        .raw
        .custom(
            CustomCommand::new_static("INFO", ClusterHash::Random, false),
            vec!["commandstats"],
        )
        .await
        .expect("info");
    assert!(
        stats.contains("cmdstat_client|unblock:calls="),
        "no CLIENT UNBLOCK seen:\n{stats}"
    );
    env.client
        .enqueue(nap::job(Nap { ms: 1 }))
        .await
        .expect("enqueue");
    assert_eq!(env.ready("naps").await, 1);
    assert_eq!(
        env.pending("naps").await,
        0,
        "nobody took the job after the worker stopped"
    );
}
