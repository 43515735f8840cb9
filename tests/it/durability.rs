use std::collections::HashMap;
use std::time::{Duration, Instant};

use fred::prelude::*;
use stevedore::{Client, RawJob};
use stevedore_testcontainers::RedisServer;

use crate::support::{TestEnv, WorkerProcess, eventually};

const JOBS: usize = 20_000;

async fn enqueue_counted(client: &Client) -> Vec<stevedore::JobId> {
    let job = RawJob::new("demo.count", "demo", &serde_json::json!({})).expect("job");
    client
        .enqueue_bulk(std::iter::repeat_n(job, JOBS))
        .await
        .expect("enqueue")
}

fn audit(env: &TestEnv) -> String {
    format!("{}-demo:executions", env.prefix)
}

async fn executed(env: &TestEnv) -> u64 {
    env.raw.hlen(audit(env)).await.unwrap_or(0)
}

/// SIGKILLs Redis three times while three workers drain 20,000 jobs, restarting it on the
/// same directory each time.
async fn storm(server: &mut RedisServer, env: &TestEnv) {
    let mut last = 0;
    for round in 1..=3 {
        let target = last + 2_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        while executed(env).await < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: progress stalled below {target}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill().expect("kill redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.restart().await.expect("restart redis");
        last = executed(env).await;
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
    let env = TestEnv::on(&server.url()).await;
    let ids = enqueue_counted(&env.client).await;
    let args = ["--lease", "1s", "--concurrency", "16"];
    let workers: Vec<_> = (0..3)
        .map(|_| WorkerProcess::start_on(&env.url, &env.prefix, &args, None))
        .collect();

    storm(&mut server, &env).await;

    eventually(
        Duration::from_secs(120),
        "every job executed and the streams drained",
        || async { executed(&env).await as usize == JOBS && env.ready("demo").await == 0 },
    )
    .await;
    // The group survived every restart, and nothing is left pending.
    let groups: Vec<HashMap<String, Value>> = env
        .raw
        .xinfo_groups(env.stream("demo", "normal"))
        .await
        .expect("xinfo groups");
    assert_eq!(groups.len(), 1);
    eventually(Duration::from_secs(30), "nothing pending", || async {
        env.pending("demo").await == 0
    })
    .await;
    for w in workers {
        assert!(
            w.terminate().success(),
            "workers rode out the restarts and exit cleanly"
        );
    }
    let counts: HashMap<String, u64> = env.raw.hgetall(audit(&env)).await.expect("audit");
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
    let env = TestEnv::on(&server.url()).await;
    let ids = enqueue_counted(&env.client).await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let args = ["--lease", "1s", "--concurrency", "16"];
    let worker = WorkerProcess::start_on(&env.url, &env.prefix, &args, Some(log.path()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while executed(&env).await < 2_000 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().expect("kill redis");
    server.restart().await.expect("restart redis");
    assert!(
        worker.terminate().success(),
        "the worker rides out the restart and exits cleanly"
    );
    let counts: HashMap<String, u64> = env.raw.hgetall(audit(&env)).await.unwrap_or_default();
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
