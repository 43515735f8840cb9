use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{Client, JobContext, JobError, Worker, job_handler};
use stevedore_testcontainers::RedisServer;

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Beat {
    n: u32,
}

#[job_handler(name = "beat", queue = "beats")]
async fn beat(_b: Beat, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ());
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Paced {
    ms: u64,
}

#[job_handler(name = "paced", queue = "paced")]
async fn paced(p: Paced, ctx: JobContext) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(p.ms)).await;
    support::record(ctx.id(), ());
    Ok(())
}

/// A worker running `beat`, once a first job has run on it.
async fn beating(env: &TestEnv) -> support::Running {
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(beat::handler())
            .build()
            .expect("worker"),
    );
    let first = env
        .client
        .enqueue(beat::job(Beat { n: 1 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "first job ran", || async {
        support::runs(first.as_str()) == 1
    })
    .await;
    running
}

#[tokio::test]
async fn a_destroyed_consumer_group_is_recreated() {
    let env = TestEnv::start().await;
    let running = beating(&env).await;

    for p in ["high", "normal", "low"] {
        let destroyed: i64 = env
            .raw
            .xgroup_destroy(env.stream("beats", p), "stevedore")
            .await
            .expect("xgroup destroy");
        assert_eq!(destroyed, 1, "group existed on {p}");
    }
    let second = env
        .client
        .enqueue(beat::job(Beat { n: 2 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(15), "job after NOGROUP ran", || async {
        support::runs(second.as_str()) == 1
    })
    .await;
    let groups: Vec<std::collections::HashMap<String, Value>> = env
        .raw
        .xinfo_groups(env.stream("beats", "normal"))
        .await
        .expect("xinfo groups");
    assert_eq!(groups.len(), 1, "group recreated");
    running.shutdown().await.expect("clean shutdown");
}

/// The group lost on one priority's stream while a busy worker fetches from several at
/// once: entries the same fetch delivered from the other streams still run at once, not
/// after the lease (30 s here).
#[tokio::test]
async fn a_group_lost_on_one_priority_delays_no_job_of_another() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(paced::handler())
            .concurrency(10)
            .lease(Duration::from_secs(30))
            .build()
            .expect("worker"),
    );
    let ids = env
        .client
        .enqueue_bulk((0..300).map(|_| paced::job(Paced { ms: 100 })))
        .await
        .expect("enqueue");
    let ran = || {
        ids.iter()
            .filter(|id| support::runs(id.as_str()) > 0)
            .count()
    };
    eventually(Duration::from_secs(20), "jobs run", || async {
        ran() >= 30
    })
    .await;
    let destroyed: i64 = env
        .raw
        .xgroup_destroy(env.stream("paced", "high"), "stevedore")
        .await
        .expect("xgroup destroy");
    assert_eq!(destroyed, 1);
    // 300 jobs of 100 ms on 10 slots take about 3 s; a fetched entry left behind would wait
    // for the lease.
    eventually(Duration::from_secs(20), "every job ran", || async {
        ran() == ids.len()
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn workers_and_clients_survive_a_redis_restart() {
    // A server we can kill: no persistence, so the restart also loses the groups.
    let mut server = RedisServer::start().await.expect("redis-server");
    let url = server.url();
    let client = Client::builder(&url)
        .prefix("restart")
        .connect()
        .await
        .expect("client");
    let running = support::spawn(
        Worker::builder(client.clone())
            .handler(beat::handler())
            .build()
            .expect("worker"),
    );
    let before = client
        .enqueue(beat::job(Beat { n: 1 }))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "job before restart ran",
        || async { support::runs(before.as_str()) == 1 },
    )
    .await;

    server.kill().expect("kill redis");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await.expect("restart redis");

    // The client reconnects on its own; the worker recreates its group.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match client.enqueue(beat::job(Beat { n: 2 })).await {
            Ok(id) => break id,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "enqueue never recovered: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eventually(Duration::from_secs(20), "job after restart ran", || async {
        support::runs(after.as_str()) == 1
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_command_timeout_bounds_calls_to_a_stalled_redis() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let client = env
        .client_with(|b| b.command_timeout(Duration::from_millis(300)))
        .await;
    client
        .queue_stats("q")
        .await
        .expect("stats while redis answers");

    support::signal_redis(server.port(), "STOP");
    let started = std::time::Instant::now();
    let err = client.queue_stats("q").await.expect_err("a stalled redis");
    let took = started.elapsed();
    support::signal_redis(server.port(), "CONT");
    assert!(err.is_connection(), "{err}");
    assert!(took < Duration::from_secs(3), "gave up after {took:?}");
    eventually(Duration::from_secs(10), "calls work again", || async {
        client.queue_stats("q").await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn jobs_are_enqueued_and_acknowledged_after_the_server_lost_its_scripts() {
    let env = TestEnv::start().await;
    let running = beating(&env).await;

    // Enqueue, start and acknowledge all run scripts by SHA; each must load them again.
    let _: () = env.raw.script_flush(false).await.expect("script flush");
    let single = env
        .client
        .enqueue(beat::job(Beat { n: 2 }))
        .await
        .expect("enqueue after SCRIPT FLUSH");
    let _: () = env.raw.script_flush(false).await.expect("script flush");
    let bulk = env
        .client
        .enqueue_bulk((3..253).map(|n| beat::job(Beat { n })))
        .await
        .expect("bulk enqueue after SCRIPT FLUSH");
    eventually(Duration::from_secs(20), "every job ran", || async {
        support::runs(single.as_str()) == 1 && bulk.iter().all(|id| support::runs(id.as_str()) == 1)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "all acknowledged and succeeded",
        || async {
            let done = env
                .client
                .status(single.as_str())
                .await
                .expect("status")
                .is_some_and(|s| s.state == stevedore::JobState::Succeeded);
            done && env.ready("beats").await == 0 && env.pending("beats").await == 0
        },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
}
