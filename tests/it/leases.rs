use std::collections::HashMap;
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, RawJob, Worker, job_handler};

use crate::support::{self, TestEnv, WorkerProcess, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Long {
    ms: u64,
}

#[job_handler(name = "lease.long", queue = "long")]
async fn long(job: Long, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), "started");
    tokio::time::sleep(Duration::from_millis(job.ms)).await;
    support::record(
        ctx.id(),
        if ctx.is_cancelled() {
            "lost"
        } else {
            "finished"
        },
    );
    Ok(())
}

#[tokio::test]
async fn jobs_running_three_leases_long_finish_once_without_reclaim() {
    let env = TestEnv::start().await;
    let lease = Duration::from_millis(300);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            support::spawn(
                Worker::builder(env.client.clone())
                    .lease(lease)
                    .handler(long::handler())
                    .build()
                    .expect("worker"),
            )
        })
        .collect();
    let ids = env
        .client
        .enqueue_bulk((0..4).map(|_| long::job(Long { ms: 1000 })))
        .await
        .expect("enqueue");
    // Midway, every running entry is still on its first delivery: renewal never counts one.
    // Checked once all four are running and a lease and a renewal round more have passed
    // (so an entry whose lease was not renewed would show idle >= 300 ms), well before the
    // 1 s jobs finish. That time must pass, so it is waited out, counted from when all four
    // were running.
    eventually(Duration::from_secs(10), "all four jobs running", || async {
        ids.iter().all(|id| support::runs(id.as_str()) >= 1)
    })
    .await;
    tokio::time::sleep(lease + lease / 3).await;
    let pending: Vec<(String, String, u64, u64)> = env
        .raw
        .xpending(env.stream("long", "normal"), "stevedore", ("-", "+", 10))
        .await
        .expect("xpending");
    assert_eq!(pending.len(), 4);
    for (_, _, idle, deliveries) in &pending {
        assert_eq!(*deliveries, 1, "renewal must not count deliveries");
        assert!(*idle < 300, "idle {idle} ms: the lease was renewed");
    }
    eventually(Duration::from_secs(10), "all finished", || async {
        ids.iter()
            .all(|id| support::values::<&'static str>(id.as_str()).contains(&"finished"))
    })
    .await;
    eventually(Duration::from_secs(5), "drained", || async {
        env.ready("long").await == 0 && env.pending("long").await == 0
    })
    .await;
    for w in workers {
        w.shutdown().await.expect("clean shutdown");
    }
    for id in &ids {
        assert_eq!(
            support::values::<&'static str>(id.as_str()),
            vec!["started", "finished"],
            "ran once, lease never lost"
        );
    }
}

fn audit_key(env: &TestEnv) -> String {
    format!("{}-demo:executions", env.prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_its_worker_is_poison_after_exactly_max_deliveries() {
    let env = TestEnv::start().await;
    // One slot, so the poison job never takes other running jobs down with it.
    let args = [
        "--lease",
        "500ms",
        "--max-deliveries",
        "3",
        "--concurrency",
        "1",
    ];
    let abort = env
        .client
        .enqueue(RawJob::new("demo.abort", "demo", &serde_json::json!({})).expect("job"))
        .await
        .expect("enqueue");
    let counts = env
        .client
        .enqueue_bulk((0..50).map(|_| {
            RawJob::new("demo.count", "demo", &serde_json::json!({"ms": 20})).expect("job")
        }))
        .await
        .expect("enqueue");

    // A supervisor: restart the worker whenever the poison job took it down.
    let mut worker = WorkerProcess::start(&env, &args);
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.xlen(&env.dlq("demo")).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no dead letter after {restarts} restarts"
        );
        if worker.exited() {
            restarts += 1;
            worker = WorkerProcess::start(&env, &args);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let audit: HashMap<String, u64> = env.raw.hgetall(audit_key(&env)).await.expect("hgetall");
    eventually(
        Duration::from_secs(30),
        "other jobs kept flowing",
        || async {
            let audit: HashMap<String, u64> =
                env.raw.hgetall(audit_key(&env)).await.unwrap_or_default();
            counts.iter().all(|id| audit.contains_key(id.as_str()))
        },
    )
    .await;
    assert!(worker.terminate().success());

    assert_eq!(
        audit.get(abort.as_str()),
        Some(&3),
        "the poison job ran exactly three times"
    );
    assert_eq!(restarts, 3, "it took its worker down three times");
    let dead = env.dead_letters("demo").await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.get("id").map(String::as_str), Some(abort.as_str()));
    assert_eq!(d.get("reason").map(String::as_str), Some("poison"));
    assert_eq!(d.get("deliveries").map(String::as_str), Some("3"));
    assert!(
        d.get("error")
            .is_some_and(|e| e.contains("delivered 3 times")),
        "{d:?}"
    );
    assert_eq!(env.ready("demo").await + env.pending("demo").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_storm_loses_nothing() {
    let env = TestEnv::start().await;
    // The storm is about loss, not poison: on a loaded machine a job can be held by the
    // victim at three kills in a row, which the default budget would rightly call poison
    // (the poison test covers that), so the crash budget is raised here.
    let args = [
        "--lease",
        "1s",
        "--concurrency",
        "16",
        "--max-deliveries",
        "50",
    ];
    let job = RawJob::new("demo.count", "demo", &serde_json::json!({"ms": 20})).expect("job");
    let ids = env
        .client
        .enqueue_bulk(std::iter::repeat_n(job, 10_000))
        .await
        .expect("enqueue");
    let audit = audit_key(&env);

    let mut steady = WorkerProcess::start(&env, &args);
    let mut victim = WorkerProcess::start(&env, &args);
    let mut kills = 0u64;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last_kill = Instant::now();
    loop {
        let done: u64 = env.raw.hlen(audit.as_str()).await.unwrap_or(0);
        // The storm lasts until every job has run at least once; then the queue must drain.
        if done == 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 10,000 jobs ran after {kills} kills"
        );
        if last_kill.elapsed() >= Duration::from_secs(2) {
            victim.kill();
            kills += 1;
            victim = WorkerProcess::start(&env, &args);
            last_kill = Instant::now();
        }
        assert!(!steady.exited(), "the steady worker must not crash");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then the queue drains: what the killed victims held is reclaimed once their lease
    // passes. A loaded machine (the whole suite runs in parallel) slows heartbeats and
    // janitor rounds, so this waits up to a minute and says what is left.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scheduled: u64 = env
            .raw
            .zcard(format!("{}:{{demo}}:scheduled", env.prefix))
            .await
            .unwrap_or(1);
        let (ready, pending) = (env.ready("demo").await, env.pending("demo").await);
        if ready == 0 && pending == 0 && scheduled == 0 {
            break;
        }
        assert!(
            Instant::now() < drain_deadline,
            "the queue did not drain: {ready} ready, {pending} pending, {scheduled} scheduled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(steady.terminate().success());
    assert!(victim.terminate().success());

    let counts: HashMap<String, u64> = env.raw.hgetall(audit.as_str()).await.expect("hgetall");
    let missing = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let duplicates: u64 = counts.values().map(|n| n - 1).sum();
    eprintln!("kill storm: {kills} kills, {duplicates} duplicate executions, {missing} missing");
    assert!(
        kills >= 2,
        "the storm should hit the run more than once ({kills} kills)"
    );
    assert_eq!(missing, 0, "every job ran at least once");
    // Only what a killed worker held (in flight, at most its concurrency) can run twice.
    assert!(
        duplicates <= kills * 16,
        "{duplicates} duplicates for {kills} kills"
    );
    assert_eq!(
        env.xlen(&env.dlq("demo")).await,
        0,
        "no job was dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_and_repeats_nothing() {
    let env = TestEnv::start().await;
    let args = [
        "--lease",
        "1s",
        "--concurrency",
        "16",
        "--drain-timeout",
        "20s",
    ];
    let job = RawJob::new("demo.count", "demo", &serde_json::json!({"ms": 10})).expect("job");
    let ids = env
        .client
        .enqueue_bulk(std::iter::repeat_n(job, 4_000))
        .await
        .expect("enqueue");
    let audit = audit_key(&env);
    let progress = |n: u64| {
        let raw = env.raw.clone();
        let audit = audit.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while raw.hlen::<u64, _>(audit.as_str()).await.unwrap_or(0) < n {
                assert!(Instant::now() < deadline, "stalled below {n}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let a = WorkerProcess::start(&env, &args);
    let b = WorkerProcess::start(&env, &args);
    progress(800).await;
    // Replace a, then b, each with a graceful stop while jobs are running.
    assert!(a.terminate().success(), "a drains and exits cleanly");
    let a2 = WorkerProcess::start(&env, &args);
    progress(2_000).await;
    assert!(b.terminate().success(), "b drains and exits cleanly");
    let b2 = WorkerProcess::start(&env, &args);
    eventually(
        Duration::from_secs(120),
        "all jobs ran and the streams drained",
        || async {
            env.raw.hlen::<u64, _>(audit.as_str()).await.unwrap_or(0) == 4_000
                && env.ready("demo").await == 0
                && env.pending("demo").await == 0
        },
    )
    .await;
    assert!(a2.terminate().success());
    assert!(b2.terminate().success());
    let counts: HashMap<String, u64> = env.raw.hgetall(audit.as_str()).await.expect("hgetall");
    let missing = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let repeated = counts.values().filter(|n| **n > 1).count();
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "a graceful restart neither loses nor repeats a job"
    );
}

#[tokio::test]
async fn the_prune_script_never_removes_a_consumer_that_owns_entries() {
    let env = TestEnv::start().await;
    let stream = env.stream("long", "low");
    let _: () = env
        .raw
        .xgroup_create(stream.as_str(), "stevedore", "0", true)
        .await
        .expect("group");
    for _ in 0..2 {
        let _: String = env
            .raw
            .xadd(stream.as_str(), false, None, "*", vec![("x", "1")])
            .await
            .expect("xadd");
    }
    for name in ["holder", "empty"] {
        let got: Value = env
            .raw
            .xreadgroup(
                "stevedore",
                name,
                Some(1),
                None,
                false,
                stream.as_str(),
                ">",
            )
            .await
            .expect("xreadgroup");
        if name == "empty" {
            let id = format!("{got:?}");
            let pending: Vec<(String, String, u64, u64)> = env
                .raw
                .xpending(stream.as_str(), "stevedore", ("-", "+", 10, "empty"))
                .await
                .expect("xpending");
            let _: u64 = env
                .raw
                .xack(stream.as_str(), "stevedore", pending[0].0.as_str())
                .await
                .expect(&id);
        }
    }
    // The script removes only consumers idle longer than its threshold (5 ms).
    eventually(
        Duration::from_secs(5),
        "both consumers idle past the threshold",
        || async {
            let consumers: Vec<HashMap<String, Value>> = env
                .raw
                .xinfo_consumers(stream.as_str(), "stevedore")
                .await
                .expect("xinfo consumers");
            consumers.len() == 2
                && consumers
                    .iter()
                    .all(|c| c.get("idle").and_then(Value::as_u64).is_some_and(|i| i > 5))
        },
    )
    .await;
    let removed: Vec<String> = env
        .raw
        .eval(
            include_str!("../../lua/prune_consumers.lua"),
            vec![stream.clone()],
            vec!["stevedore", "5"],
        )
        .await
        .expect("prune");
    assert_eq!(
        removed,
        vec!["empty".to_string()],
        "only the consumer owning nothing goes"
    );
}

#[tokio::test]
async fn consumers_of_past_worker_runs_are_forgotten() {
    let env = TestEnv::start().await;
    let stream = env.stream("long", "normal");
    let _: () = env
        .raw
        .xgroup_create(stream.as_str(), "stevedore", "0", true)
        .await
        .expect("group");
    // A consumer left by a past run, owning nothing: it read an entry and acknowledged it
    // (consumers exist only once they have read something).
    let id: String = env
        .raw
        .xadd(stream.as_str(), false, None, "*", vec![("x", "1")])
        .await
        .expect("xadd");
    let _: Value = env
        .raw
        .xreadgroup(
            "stevedore",
            "past-run",
            Some(1),
            None,
            false,
            stream.as_str(),
            ">",
        )
        .await
        .expect("xreadgroup");
    let _: u64 = env
        .raw
        .xack(stream.as_str(), "stevedore", id.as_str())
        .await
        .expect("xack");
    let _: u64 = env
        .raw
        .xdel(stream.as_str(), id.as_str())
        .await
        .expect("xdel");
    let worker = Worker::builder(env.client.clone())
        .lease(Duration::from_millis(50))
        .handler(long::handler())
        .build()
        .expect("worker");
    let me = worker.consumer_name().to_string();
    let running = support::spawn(worker);
    let job = env
        .client
        .enqueue(long::job(Long { ms: 1 }))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "the live worker ran a job",
        || async { support::runs(job.as_str()) == 2 },
    )
    .await;
    let names = || async {
        let consumers: Vec<HashMap<String, Value>> = env
            .raw
            .xinfo_consumers(env.stream("long", "normal"), "stevedore")
            .await
            .expect("xinfo consumers");
        consumers
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_string))
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(10),
        "the past run's consumer is gone",
        || async { !names().await.contains(&"past-run".to_string()) },
    )
    .await;
    let left = names().await;
    assert!(
        left.contains(&me),
        "the live worker's consumer stays: {left:?}, {me}"
    );
    running.shutdown().await.expect("clean shutdown");
}
