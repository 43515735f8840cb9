//! The BullMQ side: runs `benches/bullmq/bench.mjs` with Node for one workload at a time, on
//! the same Redis, and reads the one JSON object it prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::info::PerJob;

/// The script and the Node that runs it.
pub(crate) struct Bullmq {
    node: String,
    dir: PathBuf,
    url: String,
    prefix: String,
    log_dir: PathBuf,
    pub(crate) version: String,
    pub(crate) node_version: String,
}

/// Where the script lives: `benches/bullmq` of this repository.
fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq")
}

impl Bullmq {
    /// The runner, or why the BullMQ side cannot run (and how to fix that).
    pub(crate) fn find(
        node: &str,
        url: &str,
        prefix: &str,
        log_dir: &Path,
    ) -> Result<Bullmq, String> {
        let dir = script_dir();
        let node_version = std::process::Command::new(node)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .ok_or_else(|| format!("`{node}` is not on the PATH: install Node 20 or newer"))?;
        let manifest = dir.join("node_modules/bullmq/package.json");
        let version = std::fs::read_to_string(&manifest)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["version"].as_str().map(str::to_string))
            .ok_or_else(|| {
                format!(
                    "BullMQ is not installed: run `npm ci --prefix {}`",
                    dir.display()
                )
            })?;
        Ok(Bullmq {
            node: node.to_string(),
            dir,
            url: url.to_string(),
            prefix: format!("{prefix}-bullmq"),
            log_dir: log_dir.to_path_buf(),
            version,
            node_version,
        })
    }

    /// Runs `bench.mjs <command> <args>` and parses its JSON.
    async fn run<T: for<'de> Deserialize<'de>>(
        &self,
        command: &str,
        args: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let log = self.log_dir.join(format!("bullmq-{command}.log"));
        let mut cmd = tokio::process::Command::new(&self.node);
        cmd.arg(self.dir.join("bench.mjs")).arg(command).args([
            "--url",
            &self.url,
            "--prefix",
            &self.prefix,
        ]);
        for (k, v) in args {
            cmd.arg(format!("--{k}")).arg(v);
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true)
            .output()
            .await
            .context("running node")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        if !out.status.success() || last.is_empty() {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("bench.mjs {command} failed ({}): {err}", out.status);
        }
        serde_json::from_str(last).with_context(|| format!("bench.mjs {command} printed {last:?}"))
    }

    pub(crate) async fn enqueue(
        &self,
        single: usize,
        bulk: usize,
        chunk: usize,
    ) -> anyhow::Result<EnqueueResult> {
        self.run(
            "enqueue",
            &[
                ("single", single.to_string()),
                ("bulk", bulk.to_string()),
                ("chunk", chunk.to_string()),
            ],
        )
        .await
    }

    pub(crate) async fn drain(
        &self,
        jobs: usize,
        concurrency: usize,
        procs: usize,
    ) -> anyhow::Result<DrainResult> {
        self.run(
            "drain",
            &[
                ("jobs", jobs.to_string()),
                ("concurrency", concurrency.to_string()),
                ("procs", procs.to_string()),
            ],
        )
        .await
    }

    pub(crate) async fn latency(
        &self,
        rate: u32,
        seconds: f64,
        concurrency: usize,
    ) -> anyhow::Result<LatencyResult> {
        self.run(
            "latency",
            &[
                ("rate", rate.to_string()),
                ("seconds", seconds.to_string()),
                ("warmup-ms", crate::WARMUP.as_millis().to_string()),
                ("concurrency", concurrency.to_string()),
            ],
        )
        .await
    }

    pub(crate) async fn memory(&self, jobs: usize, chunk: usize) -> anyhow::Result<MemoryResult> {
        self.run(
            "memory",
            &[("jobs", jobs.to_string()), ("chunk", chunk.to_string())],
        )
        .await
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Rate {
    pub(crate) rate: f64,
    pub(crate) per_job: PerJob,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EnqueueResult {
    pub(crate) single: Rate,
    pub(crate) bulk: Rate,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DrainResult {
    pub(crate) rate: f64,
    pub(crate) per_job: PerJob,
    pub(crate) peak_rss_kb: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LatencyResult {
    pub(crate) latencies_us: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MemoryResult {
    pub(crate) bytes_per_job: f64,
}
