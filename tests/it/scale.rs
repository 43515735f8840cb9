use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, RawJob, Worker, job_handler};

use crate::support::{self, TestEnv, WorkerProcess, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    n: u32,
}

#[job_handler(name = "scale.tick", queue = "scale")]
async fn tick(_t: Tick, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_over_four_workers_run_once_each() {
    let env = TestEnv::start().await;
    let jobs: Vec<_> = (0..10_000).map(|n| tick::job(Tick { n })).collect();
    let ids = env.client.enqueue_bulk(jobs).await.expect("bulk enqueue");
    assert_eq!(ids.len(), 10_000);

    let workers: Vec<_> = (0..4)
        .map(|_| {
            support::spawn(
                Worker::builder(env.client.clone())
                    .concurrency(16)
                    .handler(tick::handler())
                    .build()
                    .expect("worker"),
            )
        })
        .collect();

    eventually(Duration::from_secs(120), "10,000 jobs ran", || async {
        ids.iter().all(|id| support::runs(id.as_str()) >= 1)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "all acknowledged and removed",
        || async { env.ready("scale").await == 0 && env.pending("scale").await == 0 },
    )
    .await;
    for w in workers {
        w.shutdown().await.expect("clean shutdown");
    }
    let twice: Vec<_> = ids
        .iter()
        .filter(|id| support::runs(id.as_str()) != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{} jobs ran more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );

    // Every worker was a consumer of the group and took a share.
    let consumers: Vec<HashMap<String, Value>> = env
        .raw
        .xinfo_consumers(env.stream("scale", "normal"), "stevedore")
        .await
        .expect("xinfo consumers");
    assert_eq!(consumers.len(), 4, "{consumers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_over_two_worker_processes_run_once_each() {
    let env = TestEnv::start().await;
    let a = WorkerProcess::start(&env, &["--concurrency", "16"]);
    let b = WorkerProcess::start(&env, &["--concurrency", "16"]);

    let job = RawJob::new("demo.count", "demo", &serde_json::json!({})).expect("raw job");
    let ids = env
        .client
        .enqueue_bulk(std::iter::repeat_n(job, 10_000))
        .await
        .expect("bulk enqueue");
    let audit = format!("{}-demo:executions", env.prefix);

    eventually(
        Duration::from_secs(120),
        "10,000 executions recorded",
        || async { env.raw.hlen::<u64, _>(audit.as_str()).await.unwrap_or(0) == 10_000 },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "all acknowledged and removed",
        || async { env.ready("demo").await == 0 && env.pending("demo").await == 0 },
    )
    .await;

    let counts: HashMap<String, u64> = env.raw.hgetall(audit.as_str()).await.expect("hgetall");
    for id in &ids {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "job {id} ran {:?} times",
            counts.get(id.as_str())
        );
    }
    let consumers: Vec<HashMap<String, Value>> = env
        .raw
        .xinfo_consumers(env.stream("demo", "normal"), "stevedore")
        .await
        .expect("xinfo consumers");
    assert_eq!(
        consumers.len(),
        2,
        "two processes, two consumers: {consumers:?}"
    );

    assert!(a.terminate().success(), "worker a exits cleanly on SIGTERM");
    assert!(b.terminate().success(), "worker b exits cleanly on SIGTERM");
}
