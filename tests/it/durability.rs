use std::collections::HashMap;
use std::time::{Duration, Instant};

use fred::prelude::*;
use stevedore::{Client, RawJob};
use stevedore_testcontainers::RedisServer;

use crate::support::{self, WorkerProcess, eventually};

const JOBS: usize = 20_000;

async fn enqueue_counted(client: &Client) -> Vec<stevedore::JobId> {
    let job = RawJob::new("demo.count", "demo", &serde_json::json!({})).expect("job");
    client
        .enqueue_bulk(std::iter::repeat_n(job, JOBS))
        .await
        .expect("enqueue")
}

async fn executed(raw: &fred::prelude::Client) -> u64 {
    raw.hlen("dur-demo:executions").await.unwrap_or(0)
}

/// SIGKILLs Redis three times while three workers drain 20,000 jobs, restarting it on the
/// same directory each time.
async fn storm(server: &mut RedisServer, raw: &fred::prelude::Client) {
    let mut last = 0;
    for round in 1..=3 {
        let target = last + 2_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        while executed(raw).await < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: progress stalled below {target}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill().expect("kill redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.restart().await.expect("restart redis");
        last = executed(raw).await;
        eprintln!("redis restart {round}: {last} jobs executed so far");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_three_times_with_aof_loses_no_job() {
    let mut server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .expect("redis-server with AOF");
    let url = server.url();
    let client = Client::builder(&url)
        .prefix("dur")
        .connect()
        .await
        .expect("client");
    let raw = support::raw_client(&url).await;
    let ids = enqueue_counted(&client).await;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            WorkerProcess::start_on(&url, "dur", &["--lease", "1s", "--concurrency", "16"], None)
        })
        .collect();

    storm(&mut server, &raw).await;

    let env_ready = |raw: fred::prelude::Client| async move {
        let mut n = 0u64;
        for p in ["high", "normal", "low"] {
            n += raw
                .xlen::<u64, _>(format!("dur:{{demo}}:{p}"))
                .await
                .unwrap_or(1);
        }
        n
    };
    eventually(
        Duration::from_secs(120),
        "every job executed and the streams drained",
        || {
            let raw = raw.clone();
            async move { executed(&raw).await as usize == JOBS && env_ready(raw).await == 0 }
        },
    )
    .await;
    // The group survived every restart, and nothing is left pending.
    let groups: Vec<HashMap<String, Value>> = raw
        .xinfo_groups("dur:{demo}:normal")
        .await
        .expect("xinfo groups");
    assert_eq!(groups.len(), 1);
    eventually(Duration::from_secs(30), "nothing pending", || {
        let raw = raw.clone();
        async move {
            let summary: Value = raw.xpending("dur:{demo}:normal", "stevedore", ()).await.unwrap_or(Value::Null);
            matches!(summary, Value::Array(ref parts) if parts.first().and_then(Value::as_u64) == Some(0))
        }
    })
    .await;
    for w in workers {
        assert!(
            w.terminate().success(),
            "workers rode out the restarts and exit cleanly"
        );
    }
    let counts: HashMap<String, u64> = raw.hgetall("dur-demo:executions").await.expect("audit");
    let missing = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let duplicates: u64 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "redis killed 3 times with AOF: {missing} missing, {duplicates} duplicate executions of {JOBS}"
    );
    assert_eq!(missing, 0, "no job lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_aof_the_audit_reports_losses_and_the_worker_warns() {
    let mut server = RedisServer::start()
        .await
        .expect("redis-server without persistence");
    let url = server.url();
    let client = Client::builder(&url)
        .prefix("dur")
        .connect()
        .await
        .expect("client");
    let raw = support::raw_client(&url).await;
    let ids = enqueue_counted(&client).await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let worker = WorkerProcess::start_on(
        &url,
        "dur",
        &["--lease", "1s", "--concurrency", "16"],
        Some(log.path()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while executed(&raw).await < 2_000 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().expect("kill redis");
    server.restart().await.expect("restart redis");
    // Whatever the worker still finds runs; the rest is gone with the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(worker.terminate().success());
    let counts: HashMap<String, u64> = raw.hgetall("dur-demo:executions").await.unwrap_or_default();
    let missing = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    eprintln!(
        "redis restarted without AOF: the audit finds {missing} of {JOBS} jobs never executed"
    );
    assert!(missing > 0, "the audit must notice lost jobs");
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(
        text.contains("without AOF"),
        "worker log lacks the durability warning:\n{text}"
    );
}
