use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, RawJob, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

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

/// The `worker` example, built by `cargo test` next to the test binaries.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", name])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building example {name} failed");
    }
    bin
}

pub(crate) struct WorkerProcess(Child);

impl WorkerProcess {
    pub(crate) fn start(env: &TestEnv, extra: &[&str]) -> WorkerProcess {
        let child = Command::new(example_binary("worker"))
            .args([
                "--redis-url",
                &env.url,
                "--prefix",
                &env.prefix,
                "--queues",
                "demo",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start worker process");
        WorkerProcess(child)
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker {pid} did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
