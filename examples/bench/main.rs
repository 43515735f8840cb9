//! The benchmark: stevedore against the raw Redis commands it is built on, and against
//! BullMQ, on the same Redis in the same run.
//!
//! Run with `cargo run --release --example bench` (about five minutes), `-- --quick` (under
//! a minute, small sizes) and `-- --json` (one JSON object on stdout instead of the table).
//! It uses the Redis at `REDIS_URL` when set (keys under a prefix of its own, removed
//! afterwards), else starts a `redis-server` of its own through the test kit. The BullMQ
//! side runs when `node` is on the `PATH` and `benches/bullmq/node_modules` is installed
//! (`npm ci --prefix benches/bullmq`). BENCHMARKS.md explains every figure and keeps the
//! results.
//!
//! Each workload is measured three ways: through stevedore in its default configuration
//! (job status, metrics, tracing and lease fencing on), through the plain Redis commands
//! that do the same work with nothing around them (the ceiling), and through BullMQ.
//! Workers run as child processes of this program (`bench worker`, `bench raw-consumer`),
//! so their memory can be read and two of them can share a queue.

mod bullmq;
mod child;
mod info;
mod raw;
mod report;
mod sections;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks stevedore against raw Redis and BullMQ")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

/// Settings of a benchmark run.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// Small sizes: the whole run takes under a minute (figures are noisier).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Redis to use; without it a `redis-server` is started for the run.
    #[arg(long, env = "REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// Skip the BullMQ side even when Node is available.
    #[arg(long)]
    pub(crate) no_bullmq: bool,
    /// Run only these sections (comma-separated): enqueue, drain, latency, memory, cluster,
    /// limits, bounded, flows
    /// (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<sections::Section>,
    /// Drain only these concurrency×processes runs, e.g. `128x1,16x2` (default: all six).
    #[arg(long, value_delimiter = ',', value_parser = parse_drain_run)]
    pub(crate) drain: Vec<(usize, usize)>,
    /// The Tokio runtime of the worker processes (stevedore's and the raw consumers'):
    /// `multi-thread`, what `#[tokio::main]` gives, or `current-thread`.
    #[arg(long, value_enum, default_value_t = Flavor::MultiThread)]
    pub(crate) worker_runtime: Flavor,
    /// The `node` binary for the BullMQ side.
    #[arg(long, default_value = "node")]
    pub(crate) node: String,
}

/// A Tokio runtime flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Flavor {
    MultiThread,
    CurrentThread,
}

impl Flavor {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Flavor::MultiThread => "multi-thread",
            Flavor::CurrentThread => "current-thread",
        }
    }

    fn runtime(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        }
        .enable_all()
        .build()
    }
}

#[derive(Subcommand, Debug)]
enum Role {
    /// A stevedore worker process (started by the benchmark itself).
    #[command(hide = true)]
    Worker(child::WorkerArgs),
    /// A raw XREADGROUP + XACK + XDEL consumer process (started by the benchmark itself).
    #[command(hide = true)]
    RawConsumer(raw::ConsumerArgs),
}

/// How much work each section does.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Sizes {
    /// Jobs enqueued one await at a time.
    pub(crate) single: usize,
    /// Jobs enqueued in bulk.
    pub(crate) bulk: usize,
    /// Jobs per bulk call.
    pub(crate) bulk_chunk: usize,
    /// Jobs drained per run at concurrency 16 and 128.
    pub(crate) drain: usize,
    /// Jobs drained per run at concurrency 1.
    pub(crate) drain_c1: usize,
    /// Seconds each steady rate is held for the latency figures.
    pub(crate) latency_secs: f64,
    /// Jobs enqueued for the memory figure (scaled to a million).
    pub(crate) memory: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                single: 2_000,
                bulk: 20_000,
                bulk_chunk: 1_000,
                drain: 10_000,
                drain_c1: 2_000,
                latency_secs: 1.0,
                memory: 20_000,
            }
        } else {
            Sizes {
                single: 20_000,
                bulk: 200_000,
                bulk_chunk: 1_000,
                drain: 200_000,
                drain_c1: 20_000,
                latency_secs: 10.0,
                memory: 200_000,
            }
        }
    }
}

fn parse_drain_run(s: &str) -> Result<(usize, usize), String> {
    let (c, p) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected <concurrency>x<processes>, e.g. 128x1"))?;
    let run = (
        c.parse().map_err(|e| format!("{c:?}: {e}"))?,
        p.parse().map_err(|e| format!("{p:?}: {e}"))?,
    );
    match run {
        (1 | 16 | 128, 1 | 2) => Ok(run),
        _ => Err(format!(
            "{s:?}: the drain runs are 1, 16 or 128 concurrency × 1 or 2 processes"
        )),
    }
}

/// A steady rate is held this long before its samples count.
pub(crate) const WARMUP: Duration = Duration::from_millis(300);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.role {
        Some(Role::Worker(a)) => a.runtime.runtime()?.block_on(child::worker_main(a)),
        Some(Role::RawConsumer(a)) => a.runtime.runtime()?.block_on(raw::consumer_main(a)),
        None => Flavor::MultiThread
            .runtime()?
            .block_on(sections::run(args.run)),
    }
}
