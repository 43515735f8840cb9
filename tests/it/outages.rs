//! Outages made visible and short: a stalled Redis is reported (log, observer, metric) and
//! so is its end; calls fail within the default command timeout instead of waiting in
//! silence; the drain deadline holds while Redis does not answer; readiness sees a Redis
//! that answers but refuses writes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::observe::Observer;
use stevedore::{Health, JobContext, JobError, Metrics, Worker, job_handler};
use stevedore_testcontainers::RedisServer;

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    hold_ms: u64,
}

#[job_handler(name = "outage.tick", queue = "outage")]
async fn tick(t: Tick, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ());
    tokio::time::sleep(Duration::from_millis(t.hold_ms)).await;
    Ok(())
}

/// Stops (SIGSTOP) the redis-server on `port` until dropped, as a hung or paused server
/// looks to its clients: connections stay open, nothing answers.
struct Frozen(u16);

impl Frozen {
    fn new(port: u16) -> Frozen {
        support::signal_redis(port, "STOP");
        Frozen(port)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        support::signal_redis(self.0, "CONT");
    }
}

/// Stall reports, as `stalled <queue>` and `recovered <queue>`.
#[derive(Clone, Default)]
struct Stalls(Arc<Mutex<Vec<String>>>);

impl Stalls {
    fn seen(&self, what: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s == what)
    }
}

impl Observer for Stalls {
    fn stalled(&self, queue: &str, for_how_long: Duration, error: &str) {
        assert!(for_how_long >= stevedore::observe::STALL_REPORT_AFTER);
        assert!(!error.is_empty());
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.push(format!("stalled {queue}"));
    }

    fn recovered(&self, queue: &str, _lasted: Duration) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.push(format!("recovered {queue}"));
    }
}

#[tokio::test]
async fn a_stalled_redis_is_reported_while_it_lasts_and_when_it_ends() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let stalls = Stalls::default();
    let metrics = Metrics::new();
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(tick::handler())
            .observer(stalls.clone())
            .metrics(&metrics)
            .build()
            .expect("worker"),
    );
    let first = env
        .client
        .enqueue(tick::job(Tick { hold_ms: 0 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "first job ran", || async {
        support::runs(first.as_str()) == 1
    })
    .await;
    let gauge = |v: u8| format!("stevedore_worker_queue_stalled{{queue=\"outage\"}} {v}");
    assert!(
        metrics.encode().contains(&gauge(0)),
        "the series exists at 0"
    );

    let frozen = Frozen::new(server.port());
    // A call with the default command timeout fails instead of waiting for ever.
    let sent = Instant::now();
    let call = tokio::time::timeout(
        Duration::from_secs(30),
        env.client.enqueue(tick::job(Tick { hold_ms: 0 })),
    )
    .await
    .expect("the call ended on its own");
    let err = call.expect_err("redis does not answer");
    assert!(err.is_connection(), "{err}");
    assert!(
        sent.elapsed() >= Duration::from_secs(9),
        "{:?}",
        sent.elapsed()
    );
    eventually(Duration::from_secs(30), "the stall reported", || async {
        stalls.seen("stalled outage")
    })
    .await;
    assert!(metrics.encode().contains(&gauge(1)), "{}", metrics.encode());
    // Each failed read is counted too.
    let failed_reads = metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("stevedore_worker_read_errors_total{queue=\"outage\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failed_reads >= 1, "{}", metrics.encode());
    assert!(!stalls.seen("recovered outage"));

    drop(frozen);
    eventually(Duration::from_secs(30), "the recovery reported", || async {
        stalls.seen("recovered outage")
    })
    .await;
    assert!(metrics.encode().contains(&gauge(0)));
    let after = env
        .client
        .enqueue(tick::job(Tick { hold_ms: 0 }))
        .await
        .expect("enqueue after");
    eventually(
        Duration::from_secs(45),
        "a job runs after the stall",
        || async { support::runs(after.as_str()) == 1 },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_drain_deadline_holds_while_redis_does_not_answer() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(tick::handler())
            .drain_timeout(Duration::from_secs(1))
            .build()
            .expect("worker"),
    );
    let long = env
        .client
        .enqueue(tick::job(Tick { hold_ms: 120_000 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "the long job runs", || async {
        support::runs(long.as_str()) == 1
    })
    .await;

    let frozen = Frozen::new(server.port());
    let asked = Instant::now();
    running.stop.cancel();
    // Drain deadline (1 s) plus the bounded tidy-up (3 s), with room for a loaded machine.
    let ended = tokio::time::timeout(Duration::from_secs(15), running.handle)
        .await
        .expect("the worker stopped although redis does not answer")
        .expect("worker task");
    let took = asked.elapsed();
    drop(frozen);
    assert!(
        matches!(ended, Err(stevedore::Error::DrainTimeout(_))),
        "{ended:?}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    // The unfinished job stays pending for another worker's janitor.
    eventually(
        Duration::from_secs(10),
        "the job is still pending",
        || async { env.pending("outage").await == 1 },
    )
    .await;
}

#[tokio::test]
async fn readiness_fails_while_redis_refuses_writes() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let health = Health::for_client(env.client.clone());
    let r = health.readiness().await;
    assert!(r.ready && r.redis && r.redis_writable, "{r:?}");

    let config = |k: &'static str, v: &'static str| {
        let raw = env.raw.clone();
        async move {
            let _: () = raw.config_set(k, v).await.expect("CONFIG SET");
        }
    };
    // Out of memory at maxmemory: PING answers, writes are refused.
    config("maxmemory-policy", "noeviction").await;
    config("maxmemory", "1").await;
    let r = health.readiness().await;
    assert!(!r.ready && r.redis && !r.redis_writable, "{r:?}");
    assert!(
        r.redis_error.as_deref().is_some_and(|e| e.contains("OOM")),
        "{r:?}"
    );
    config("maxmemory", "0").await;
    assert!(health.readiness().await.ready);

    // A read-only replica (of a primary that is not there).
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let _: () = env
        .raw
        .custom(
            fred::cmd!("REPLICAOF"),
            vec!["127.0.0.1".to_string(), nowhere.to_string()],
        )
        .await
        .expect("REPLICAOF");
    let r = health.readiness().await;
    assert!(!r.ready && r.redis && !r.redis_writable, "{r:?}");
    assert!(
        r.redis_error
            .as_deref()
            .is_some_and(|e| e.contains("READONLY")),
        "{r:?}"
    );
    let _: () = env
        .raw
        .custom(
            fred::cmd!("REPLICAOF"),
            vec!["NO".to_string(), "ONE".to_string()],
        )
        .await
        .expect("REPLICAOF NO ONE");
    assert!(health.readiness().await.ready);
}

/// A worker that stops with jobs unfinished hands them back: another live worker takes
/// them at once, not after the lease (30 s here).
#[tokio::test]
async fn entries_handed_back_at_shutdown_are_taken_over_at_once() {
    let env = TestEnv::start().await;
    let stopping = support::spawn(
        Worker::builder(env.client.clone())
            .handler(tick::handler())
            .lease(Duration::from_secs(30))
            .drain_timeout(Duration::from_millis(300))
            .build()
            .expect("worker"),
    );
    let long = env
        .client
        .enqueue(tick::job(Tick { hold_ms: 120_000 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "the long job runs", || async {
        support::runs(long.as_str()) == 1
    })
    .await;
    let other = support::spawn(
        Worker::builder(env.client.clone())
            .handler(tick::handler())
            .lease(Duration::from_secs(30))
            .drain_timeout(Duration::from_millis(300))
            .build()
            .expect("worker"),
    );
    let workers = format!("{}:workers", env.prefix);
    eventually(Duration::from_secs(10), "both workers beat", || async {
        env.raw.zcard::<u64, _>(workers.as_str()).await.unwrap_or(0) == 2
    })
    .await;

    let ended = stopping.shutdown().await;
    assert!(
        matches!(ended, Err(stevedore::Error::DrainTimeout(_))),
        "{ended:?}"
    );
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the other worker runs it",
        || async { support::runs(long.as_str()) == 2 },
    )
    .await;
    println!(
        "outages: a handed-back job started again {} ms after its worker stopped (lease 30 s)",
        stopped.elapsed().as_millis()
    );
    let handoff = format!("{}:{{outage}}:handoff", env.prefix);
    eventually(
        Duration::from_secs(5),
        "the hand-off is cleared",
        || async { env.raw.scard::<u64, _>(handoff.as_str()).await.unwrap_or(1) == 0 },
    )
    .await;
    other.stop.cancel();
    let _ = other.handle.await;
}
