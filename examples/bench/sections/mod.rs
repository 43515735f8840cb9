//! The run: a Redis, then each section (enqueue, drain, latency, memory) measured through
//! stevedore, raw commands and BullMQ in turn, then the report. The `cluster` section
//! starts a Redis Cluster of its own and measures there (stevedore and raw only).

mod bounded;
mod cluster;
mod drain;
mod enqueue;
mod flows;
mod latency;
mod limits;
mod memory;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use fred::prelude::*;
use stevedore::{Client, Metrics};
use stevedore_testcontainers::{KitError, RedisServer, TestRedis};

use crate::bullmq::Bullmq;
use crate::info::Own;
use crate::report::{Report, num};
use crate::{RunArgs, Sizes};

/// A part of the benchmark that can run on its own (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Section {
    Enqueue,
    Drain,
    Latency,
    Memory,
    /// On a Redis Cluster of three primaries started for the section.
    Cluster,
    /// Rate limits: an idle one's cost, a hit one's accuracy.
    Limits,
    /// Bounded queues: what a capacity costs enqueues and drains.
    Bounded,
    /// Dependencies and webhooks in use: what they cost a drain.
    Flows,
}

/// The sections a run without `--only` does, in order.
const ALL: [Section; 8] = [
    Section::Enqueue,
    Section::Drain,
    Section::Latency,
    Section::Memory,
    Section::Cluster,
    Section::Limits,
    Section::Bounded,
    Section::Flows,
];

/// What every section needs.
pub(crate) struct Ctx {
    pub(crate) url: String,
    pub(crate) prefix: String,
    /// True when this run started the server (FLUSHALL is then fine).
    own_server: bool,
    /// A plain connection for INFO, polling and cleanup (on a cluster, a clustered client
    /// for polling).
    pub(crate) admin: fred::prelude::Client,
    /// A connection to each server whose INFO a drain reads and sums, and that cleanup
    /// flushes: `admin` alone on one server, each primary on a cluster.
    pub(crate) nodes: Vec<fred::prelude::Client>,
    /// A plain connection for the raw workloads.
    pub(crate) raw: fred::prelude::Client,
    /// A stevedore client in the default configuration, with metrics attached.
    pub(crate) client: Client,
    pub(crate) sizes: Sizes,
    pub(crate) exe: PathBuf,
    pub(crate) logs: tempfile::TempDir,
    pub(crate) bullmq: Option<Bullmq>,
    pub(crate) json: bool,
    /// Drain runs to do, (concurrency, processes); empty for all.
    pub(crate) drain_runs: Vec<(usize, usize)>,
    /// The runtime flavor of worker processes.
    pub(crate) worker_runtime: crate::Flavor,
}

/// The URL of this run's Redis, and what keeps a server it started alive.
async fn redis(url: Option<String>) -> anyhow::Result<(String, Option<Box<dyn std::any::Any>>)> {
    if let Some(url) = url {
        return Ok((url, None));
    }
    // A local process first: a container's port forwarding would be measured too.
    match RedisServer::builder().start().await {
        Ok(s) => Ok((s.url(), Some(Box::new(s)))),
        Err(KitError::RedisServerNotFound { .. }) => {
            let r = TestRedis::start().await?;
            Ok((r.url().to_string(), Some(Box::new(r))))
        }
        Err(e) => Err(e.into()),
    }
}

impl Ctx {
    /// `<prefix>:{<queue>}:<priority>`, as stevedore spells a stream key.
    pub(crate) fn stream(&self, queue: &str, priority: &str) -> String {
        format!("{}:{{{queue}}}:{priority}", self.prefix)
    }

    /// Removes every key this run wrote (BullMQ's too).
    pub(crate) async fn cleanup(&self) -> anyhow::Result<()> {
        if self.own_server {
            // SYNC: a plain FLUSHALL frees in the background on Valkey 8
            // (`lazyfree-lazy-user-flush yes`), and memory read right after it would still
            // count the flushed keys.
            for node in &self.nodes {
                let _: () = node
                    .custom(
                        fred::types::CustomCommand::new_static(
                            "FLUSHALL",
                            fred::types::ClusterHash::FirstKey,
                            false,
                        ),
                        vec!["SYNC"],
                    )
                    .await?;
            }
            return Ok(());
        }
        let mut cursor = "0".to_string();
        loop {
            let (next, keys): (String, Vec<String>) = self
                .admin
                .custom(
                    fred::types::CustomCommand::new_static(
                        "SCAN",
                        fred::types::ClusterHash::Random,
                        false,
                    ),
                    vec![
                        cursor.clone(),
                        "MATCH".into(),
                        format!("{}[:-]*", self.prefix),
                        "COUNT".into(),
                        "1000".into(),
                    ],
                )
                .await?;
            if !keys.is_empty() {
                let _: u64 = self.admin.unlink(keys).await?;
            }
            if next == "0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Waits until the streams are empty (every job acknowledged and deleted), polling every
    /// 2 ms; counts its own commands into `own`.
    /// Waits until every stream of `streams` is empty (and every `...:scheduled` set
    /// among them: jobs that wait for their time).
    pub(crate) async fn wait_empty(
        &self,
        streams: &[String],
        own: &mut Own,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let give_up = Instant::now() + deadline;
        loop {
            let p = self.admin.pipeline();
            let mut sets = 0;
            for s in streams {
                if s.ends_with(":scheduled") {
                    sets += 1;
                    let _: () = p.zcard(s.as_str()).await?;
                } else {
                    let _: () = p.xlen(s.as_str()).await?;
                }
            }
            let lens: Vec<u64> = p.all().await?;
            own.add("xlen", (streams.len() - sets) as u64);
            if sets > 0 {
                own.add("zcard", sets as u64);
            }
            own.reads += 1;
            if lens.iter().all(|n| *n == 0) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "jobs still waiting after {deadline:?}: {lens:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(crate) fn progress(&self, what: &str) {
        if !self.json {
            eprintln!("bench: {what}");
        }
    }
}

/// Runs the benchmark.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::child::init_tracing("warn,fred=error");
    let sizes = Sizes::new(args.quick);
    let shared = args.redis_url.is_some();
    let (url, _server) = redis(args.redis_url.clone()).await?;
    let admin = crate::raw::connect(&url).await?;
    let prefix = if shared {
        format!("bench-{}", std::process::id())
    } else {
        "bench".to_string()
    };
    let logs = tempfile::Builder::new()
        .prefix("stevedore-bench-")
        .tempdir()?;
    let mut report = Report {
        sizes: Some(sizes),
        ..Report::default()
    };
    let bullmq = if args.no_bullmq {
        report
            .notes
            .push("BullMQ side skipped (--no-bullmq).".into());
        None
    } else {
        match Bullmq::find(&args.node, &url, &prefix, logs.path()) {
            Ok(b) => Some(b),
            Err(why) => {
                eprintln!("bench: BullMQ side skipped: {why}");
                report.notes.push(format!("BullMQ side skipped: {why}"));
                None
            }
        }
    };
    let client = Client::builder(&url)
        .prefix(&prefix)
        .metrics(&Metrics::new())
        .connect()
        .await?;
    let ctx = Ctx {
        raw: crate::raw::connect(&url).await?,
        client,
        url,
        prefix,
        own_server: !shared,
        nodes: vec![admin.clone()],
        admin,
        sizes,
        exe: std::env::current_exe().context("locating this program")?,
        logs,
        bullmq,
        json: args.json,
        drain_runs: args.drain.clone(),
        worker_runtime: args.worker_runtime,
    };
    machine(&ctx, &mut report, args.quick).await?;
    ctx.cleanup().await?;
    let sections = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        args.only.clone()
    };
    for s in sections {
        match s {
            Section::Enqueue => enqueue::run(&ctx, &mut report).await?,
            Section::Drain => drain::run(&ctx, &mut report).await?,
            Section::Latency => latency::run(&ctx, &mut report).await?,
            Section::Memory => memory::run(&ctx, &mut report).await?,
            Section::Cluster => cluster::run(&ctx, &mut report).await?,
            Section::Limits => limits::run(&ctx, &mut report).await?,
            Section::Bounded => bounded::run(&ctx, &mut report).await?,
            Section::Flows => flows::run(&ctx, &mut report).await?,
        }
        ctx.cleanup().await?;
    }
    report
        .machine
        .insert("load average at end".into(), load_average().into());
    targets(&mut report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.table());
    }
    let _: Result<(), _> = ctx.admin.quit().await;
    let _: Result<(), _> = ctx.raw.quit().await;
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// What the figures were taken on.
async fn machine(ctx: &Ctx, report: &mut Report, quick: bool) -> anyhow::Result<()> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_default();
    let info: String = ctx.admin.info(Some(fred::types::InfoKind::Server)).await?;
    // Valkey answers redis_version 7.2.4 (what it is compatible with) and its own version
    // apart.
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::to_string)
    };
    let redis_version = match field("valkey_version:") {
        Some(v) => format!("valkey {v}"),
        None => field("redis_version:").unwrap_or_else(|| "?".into()),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let m = &mut report.machine;
    m.insert("cpu".into(), format!("{cores} × {model}").into());
    m.insert(
        "memory".into(),
        format!("{} GiB", num(Some(mem_kb as f64 / 1048576.0))).into(),
    );
    m.insert("os".into(), os.into());
    m.insert("redis".into(), redis_version.into());
    m.insert(
        "build".into(),
        if cfg!(debug_assertions) {
            "debug (figures are not representative: use --release)"
        } else {
            "release"
        }
        .into(),
    );
    m.insert("mode".into(), if quick { "quick" } else { "full" }.into());
    m.insert(
        "worker runtime".into(),
        format!("tokio {}", ctx.worker_runtime.as_str()).into(),
    );
    if let Some(b) = &ctx.bullmq {
        m.insert(
            "bullmq".into(),
            format!("bullmq {} on node {}", b.version, b.node_version).into(),
        );
    }
    m.insert("load average at start".into(), load_average().into());
    Ok(())
}

/// The goals of the lean data model, checked against this run's figures (BENCHMARKS.md,
/// "Targets").
fn targets(report: &mut Report) {
    let figures = report.figures.clone();
    let fig = |key: &str| figures.iter().find(|f| f.key == key).cloned();
    let mut add = |goal: &str, reached: String, met: Option<bool>| {
        report.target(goal, reached, met);
    };
    let ratio = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.2}×"));
    for p in [1, 2] {
        if let Some(f) = fig(&format!("drain_c128_p{p}")) {
            add(
                &format!(
                    "drain (concurrency 128, {p} process{}) ≥ 70% of raw",
                    if p == 1 { "" } else { "es" }
                ),
                f.vs_raw
                    .map_or("–".into(), |r| format!("{:.0}%", r * 100.0)),
                f.vs_raw.map(|r| r >= 0.7),
            );
        }
    }
    for (key, goal, limit) in [
        (
            "drain_c128_p1_redis_cpu",
            "Redis CPU per drained job ≤ 2× raw",
            2.0,
        ),
        (
            "drain_c128_p1_client_cpu",
            "worker CPU per drained job ≤ 2× raw",
            2.0,
        ),
        (
            "memory_per_million",
            "Redis memory per waiting job ≤ 1.5× raw",
            1.5,
        ),
    ] {
        if let Some(f) = fig(key) {
            add(goal, ratio(f.vs_raw), f.vs_raw.map(|r| r <= limit));
        }
    }
    if let Some(f) = fig("drain_c128_p1_commands") {
        add(
            "Redis commands per drained job ≤ 1.5",
            f.stevedore.map_or("–".into(), |v| format!("{v:.2}")),
            f.stevedore.map(|v| v <= 1.5),
        );
    }
    for (key, goal, limit) in [
        ("drain_c1_p1", "drain at concurrency 1 ≥ 1.5× BullMQ", 1.5),
        ("drain_c16_p1", "drain at concurrency 16 ≥ 2× BullMQ", 2.0),
    ] {
        if let Some(f) = fig(key) {
            add(goal, ratio(f.vs_bullmq), f.vs_bullmq.map(|r| r >= limit));
        }
    }
    if let Some(f) = fig("enqueue_bulk") {
        add(
            "bulk enqueue ≥ 0.9× raw pipelines",
            ratio(f.vs_raw),
            f.vs_raw.map(|r| r >= 0.9),
        );
    }
    if let Some(f) = fig("latency_10000_p99") {
        add(
            "p99 enqueue→start at 10,000 jobs/s ≤ 1 ms",
            f.stevedore.map_or("–".into(), |v| format!("{v:.2} ms")),
            f.stevedore.map(|v| v <= 1.0),
        );
    }
    if let Some(f) = fig("worker_rss_c128") {
        add(
            "worker RSS at concurrency 128 ≤ 20 MiB",
            f.stevedore.map_or("–".into(), |v| format!("{v:.1} MiB")),
            f.stevedore.map(|mib| mib <= 20.0),
        );
    }
}
