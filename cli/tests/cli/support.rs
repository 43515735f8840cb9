use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use serde_json::Value;
use stevedore_testcontainers::TestRedis;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_stevedore");

/// Numbers the tests of this process, so that prefixes differ even on a shared Redis.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// One test's Redis, its prefix, and a plain connection for looking at keys.
pub(crate) struct Env {
    pub(crate) url: String,
    pub(crate) prefix: String,
    raw: fred::prelude::Client,
    _redis: TestRedis,
}

/// What one run of the binary did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Env {
    pub(crate) async fn start() -> Env {
        let redis = TestRedis::start().await.expect("a test redis");
        let url = redis.url().to_string();
        let raw =
            fred::prelude::Client::new(Config::from_url(&url).expect("url"), None, None, None);
        raw.init().await.expect("raw client connects");
        Env {
            prefix: format!(
                "cli-{}-{}-{:08x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                nanos()
            ),
            url,
            raw,
            _redis: redis,
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        if !args.contains(&"--redis-url") {
            cmd.args(["--redis-url", &self.url]);
        }
        cmd.args(["--prefix", &self.prefix])
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("STEVEDORE_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("stevedore {args:?} did not finish"))
            .expect("the binary runs");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, Some(0), "stevedore {args:?} failed: {run:?}");
        run.stdout
    }

    /// Runs a command with `--json` that must succeed; returns its one JSON document.
    pub(crate) async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    }

    /// Runs a command that must fail with `code`, one `error:` line on stderr mentioning
    /// `says`, nothing on stdout, and no change in Redis.
    pub(crate) async fn fails(&self, args: &[&str], code: i32, says: &str) {
        let before = self.snapshot().await;
        let run = self.run(args).await;
        assert_eq!(run.code, Some(code), "exit code of {args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?} printed on stdout: {run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?} wrote more than one line: {run:?}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {run:?}");
        assert!(
            lines[0].contains(says),
            "{args:?} should say {says:?}: {}",
            lines[0]
        );
        assert_eq!(self.snapshot().await, before, "{args:?} changed Redis");
    }

    /// Every key under the prefix with its serialized value.
    pub(crate) async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let keys: Vec<String> = self
            .raw
            .custom(
                CustomCommand::new_static("KEYS", ClusterHash::Random, false),
                vec![format!("{}:*", self.prefix)],
            )
            .await
            .expect("KEYS");
        let mut out = BTreeMap::new();
        for k in keys {
            let v: fred::types::Value = self.raw.dump(&k).await.expect("DUMP");
            out.insert(k, v.as_bytes().map(<[u8]>::to_vec).unwrap_or_default());
        }
        out
    }

    pub(crate) async fn client(&self) -> stevedore::Client {
        stevedore::Client::builder(&self.url)
            .prefix(&self.prefix)
            .connect()
            .await
            .expect("client connects")
    }

    /// Dead letters of `queue`, as `queues --json` counts them.
    pub(crate) async fn dead(&self, queue: &str) -> u64 {
        let queues = self.json(&["queues"]).await;
        queue_info(&queues, queue)["stats"]["dead"]
            .as_u64()
            .expect("dead count")
    }
}

pub(crate) fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

pub(crate) fn queue_info<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == name))
        .unwrap_or_else(|| panic!("queue {name} not listed: {queues}"))
}

/// Polls `check` until it holds; panics after `timeout`.
pub(crate) async fn eventually<F: AsyncFnMut() -> bool>(
    timeout: Duration,
    what: &str,
    mut check: F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
