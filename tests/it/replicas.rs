//! Horizontal scale through a container engine: replicas of the worker image share a batch,
//! one is killed mid-run, and no job is lost.
//!
//! Runs only when `STEVEDORE_TEST_WORKER_IMAGE` names a worker image, and says so on
//! stderr when it skips. With Docker and a registry:
//! `docker build --target worker -t stevedore-worker:dev .`, then
//! `STEVEDORE_TEST_WORKER_IMAGE=stevedore-worker:dev cargo test --test it replicas`; without
//! a registry `deploy/build-local-images.sh` builds the image (CI does, and sets
//! `STEVEDORE_TEST_ENGINE=podman`: the engine's CLI, default `docker`). The replicas use the
//! host's network to reach the test's Redis, so the engine must run containers on this
//! (Linux) host.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;
use stevedore::{JobState, RawJob};

use crate::support::TestEnv;

const IMAGE_ENV: &str = "STEVEDORE_TEST_WORKER_IMAGE";
const ENGINE_ENV: &str = "STEVEDORE_TEST_ENGINE";
const REPLICAS: usize = 3;
const JOBS: usize = 3000;
/// Killed once this many jobs ran, so the kill lands mid-run.
const KILL_AFTER: u64 = 1000;

/// Writes past libtest's output capture, so CI logs show it for a passing test too.
fn report(line: &str) {
    let _ = std::io::stderr().write_all(format!("replicas: {line}\n").as_bytes());
}

/// One worker container; removed when dropped.
struct Replica {
    engine: String,
    name: String,
    hostname: String,
}

impl Replica {
    fn start(engine: &str, image: &str, env: &TestEnv, n: usize) -> Replica {
        let hostname = format!("replica-{n}");
        let name = format!("stevedore-{}-{hostname}", env.prefix);
        let out = Command::new(engine)
            .args(["run", "--detach", "--network", "host"])
            .args(["--name", &name, "--hostname", &hostname])
            .args(["--env", "RUST_LOG=warn", image])
            .args(["--redis-url", &env.url, "--prefix", &env.prefix])
            .args(["--queues", "demo", "--concurrency", "4", "--lease", "1s"])
            .output()
            .unwrap_or_else(|e| panic!("running {engine}: {e}"));
        assert!(
            out.status.success(),
            "{engine} run {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Replica {
            engine: engine.to_owned(),
            name,
            hostname,
        }
    }

    fn engine(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.engine)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.engine))
    }

    /// SIGKILL: the worker dies mid-job and acknowledges nothing.
    fn kill(&self) {
        let out = self.engine(&["kill", &self.name]);
        assert!(out.status.success(), "{} kill failed", self.engine);
    }

    /// SIGTERM, wait for the worker to drain and exit; returns its exit code.
    fn stop(&self) -> String {
        self.engine(&["stop", "--time", "30", &self.name]);
        let out = self.engine(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn logs(&self) -> String {
        let out = self.engine(&["logs", "--tail", "20", &self.name]);
        format!(
            "--- {} ---\n{}{}",
            self.hostname,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.engine(&["rm", "--force", &self.name]);
    }
}

/// Polls `check` every 20 ms until it is true; panics with `what` and the replicas' logs
/// after `timeout`.
async fn wait_until<F, Fut>(replicas: &[Replica], timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            let logs: Vec<String> = replicas.iter().map(Replica::logs).collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pending entries of queue `demo` owned by consumers whose name starts with `owner`.
async fn pending_of(env: &TestEnv, owner: &str) -> u64 {
    let mut n = 0;
    for priority in ["high", "normal", "low"] {
        // XPENDING key group: [count, first id, last id, [[consumer, count], ...]]
        let summary: Value = env
            .raw
            .xpending(env.stream("demo", priority), "stevedore", ())
            .await
            .unwrap_or(Value::Null);
        let Value::Array(parts) = summary else {
            continue;
        };
        let Some(Value::Array(consumers)) = parts.get(3) else {
            continue;
        };
        for c in consumers {
            if let Value::Array(pair) = c
                && let [name, count] = pair.as_slice()
                && name.as_str().is_some_and(|s| s.starts_with(owner))
            {
                n += count.as_u64().unwrap_or(0);
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_a_batch_and_lose_nothing_when_one_is_killed() {
    let Some(image) = std::env::var(IMAGE_ENV).ok().filter(|v| !v.is_empty()) else {
        report(&format!(
            "SKIPPED: {IMAGE_ENV} is not set (build an image with deploy/build-local-images.sh)"
        ));
        return;
    };
    let engine = std::env::var(ENGINE_ENV).unwrap_or_else(|_| "docker".to_owned());
    let env = TestEnv::start().await;
    let started = Instant::now();
    let replicas: Vec<Replica> = (1..=REPLICAS)
        .map(|n| Replica::start(&engine, &image, &env, n))
        .collect();
    let workers_key = format!("{}:workers", env.prefix);
    wait_until(
        &replicas,
        Duration::from_secs(60),
        "3 heartbeats",
        || async {
            env.raw
                .zcard::<u64, _>(workers_key.as_str())
                .await
                .unwrap_or(0)
                == REPLICAS as u64
        },
    )
    .await;

    let job = RawJob::new("demo.count", "demo", &serde_json::json!({"ms": 20})).expect("job");
    let ids = env
        .client
        .enqueue_bulk(std::iter::repeat_n(job, JOBS))
        .await
        .expect("enqueue");
    let by_job = format!("{}-demo:executions", env.prefix);
    let by_worker = format!("{}-demo:executions-by-worker", env.prefix);
    let executed = || async { env.raw.hlen::<u64, _>(by_job.as_str()).await.unwrap_or(0) };

    wait_until(
        &replicas,
        Duration::from_secs(60),
        "a third of the batch",
        || async { executed().await >= KILL_AFTER },
    )
    .await;
    let victim = &replicas[1];
    victim.kill();
    let at_kill = executed().await;
    let orphans = pending_of(&env, &format!("{}-", victim.hostname)).await;
    report(&format!(
        "killed {} ({}) after {at_kill} of {JOBS} jobs ran, holding {orphans} unacknowledged jobs",
        victim.hostname, victim.name
    ));
    assert!(
        orphans > 0,
        "the kill landed between jobs; nothing to take over"
    );

    wait_until(
        &replicas,
        Duration::from_secs(120),
        "every job to run",
        || async { executed().await == JOBS as u64 },
    )
    .await;
    wait_until(
        &replicas,
        Duration::from_secs(30),
        "nothing ready or pending",
        || async { env.ready("demo").await == 0 && env.pending("demo").await == 0 },
    )
    .await;
    let took = started.elapsed();

    let runs: HashMap<String, u64> = env.raw.hgetall(by_job.as_str()).await.expect("hgetall");
    let lost: Vec<_> = ids
        .iter()
        .filter(|id| !runs.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} jobs never ran, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let mut not_succeeded = 0;
    for id in &ids {
        let status = env
            .client
            .status_in("demo", id.as_str())
            .await
            .expect("status");
        if status.map(|s| s.state) != Some(JobState::Succeeded) {
            not_succeeded += 1;
        }
    }
    assert_eq!(not_succeeded, 0, "jobs whose status is not succeeded");

    // Consumer names start with the container's host name: replica-<n>-<pid>-<random>.
    let per_worker: HashMap<String, u64> =
        env.raw.hgetall(by_worker.as_str()).await.expect("hgetall");
    let mut per_replica: BTreeMap<String, u64> = BTreeMap::new();
    for (consumer, n) in per_worker {
        let replica = replicas
            .iter()
            .find(|r| consumer.starts_with(&format!("{}-", r.hostname)))
            .map_or(consumer.clone(), |r| r.hostname.clone());
        *per_replica.entry(replica).or_default() += n;
    }
    let total: u64 = per_replica.values().sum();
    report(&format!(
        "{JOBS} jobs over {REPLICAS} replicas in {:.1} s: executions per replica {per_replica:?}; \
         lost 0; ran twice {} (the killed replica's unacknowledged jobs)",
        took.as_secs_f64(),
        total - JOBS as u64
    ));
    for r in &replicas {
        assert!(
            per_replica.get(&r.hostname).is_some_and(|n| *n > 0),
            "{} took no share: {per_replica:?}",
            r.hostname
        );
    }

    for r in [&replicas[0], &replicas[2]] {
        assert_eq!(r.stop(), "0", "{} exits cleanly on SIGTERM", r.hostname);
    }
}
