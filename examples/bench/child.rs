//! Worker processes: the stevedore worker the benchmark starts as a child, and the
//! parent's handle on any child.
//!
//! A child connects, prints `ready`, waits for `go` on stdin, works until `stop` (or the end
//! of stdin), then prints one JSON line: how many jobs it ran, the enqueue→start latencies
//! it saw, and its memory. Its log goes to a file the parent names.

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use stevedore::{Client, JobContext, JobError, Metrics, Worker, job_handler};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

/// The payload of every benchmark job. `t` is the enqueue time in microseconds since the
/// epoch when the job's latency is measured, 1 for a warm-up job, 0 otherwise.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Probe {
    #[serde(default)]
    pub(crate) t: u64,
}

static RAN: AtomicU64 = AtomicU64::new(0);
/// CPU time used when `go` arrived, microseconds.
static CPU_AT_GO: AtomicU64 = AtomicU64::new(0);
static LATENCIES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Records one job's enqueue→start latency when its probe carries a time.
pub(crate) fn observe(t: u64) {
    RAN.fetch_add(1, Ordering::Relaxed);
    if t > 1 {
        let us = now_us().saturating_sub(t).min(u64::from(u32::MAX)) as u32;
        LATENCIES.lock().unwrap_or_else(|p| p.into_inner()).push(us);
    }
}

#[job_handler(name = "bench.noop", queue = "bench")]
pub(crate) async fn noop(job: Probe, _ctx: JobContext) -> Result<(), JobError> {
    observe(job.t);
    Ok(())
}

/// What a child reports when it stops.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ChildReport {
    pub(crate) ran: u64,
    /// Enqueue→start latencies, microseconds, unsorted.
    pub(crate) latencies_us: Vec<u32>,
    /// Resident memory now and at its peak, kB.
    pub(crate) rss_kb: u64,
    pub(crate) peak_rss_kb: u64,
    /// CPU time (user + system, all threads) from `go` to `stop`, microseconds.
    pub(crate) cpu_us: u64,
}

impl ChildReport {
    pub(crate) fn collect() -> ChildReport {
        let (rss_kb, peak_rss_kb) = memory_kb();
        ChildReport {
            ran: RAN.load(Ordering::Relaxed),
            latencies_us: std::mem::take(&mut *LATENCIES.lock().unwrap_or_else(|p| p.into_inner())),
            rss_kb,
            peak_rss_kb,
            cpu_us: cpu_us().saturating_sub(CPU_AT_GO.load(Ordering::Relaxed)),
        }
    }
}

/// CPU time this process used so far (user + system, all threads), microseconds, at the
/// kernel's tick resolution (10 ms here).
pub(crate) fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Clock ticks of 10 ms: Linux's USER_HZ is 100.
    f.iter().sum::<u64>() * 10_000
}

/// This process's VmRSS and VmHWM in kB (0 where /proc is missing).
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(clap::Args, Debug)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    redis_url: String,
    #[arg(long)]
    prefix: String,
    /// The queues to consume, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    queue: Vec<String>,
    #[arg(long)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = crate::Flavor::MultiThread)]
    pub(crate) runtime: crate::Flavor,
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise.
pub(crate) fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in files and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Waits for `go` on stdin, then returns the rest of stdin.
pub(crate) async fn handshake() -> anyhow::Result<Lines<BufReader<tokio::io::Stdin>>> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    println!("ready");
    match lines.next_line().await? {
        Some(l) if l == "go" => {
            CPU_AT_GO.store(cpu_us(), Ordering::Relaxed);
            Ok(lines)
        }
        other => bail!("expected go, got {other:?}"),
    }
}

/// Resolves at `stop` or the end of stdin.
pub(crate) async fn until_stop(mut lines: Lines<BufReader<tokio::io::Stdin>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "stop" {
            break;
        }
    }
}

/// The `worker` role: a stevedore worker in its default configuration, with metrics.
pub(crate) async fn worker_main(args: WorkerArgs) -> anyhow::Result<()> {
    // Like a service would log: info and up, fred's warnings.
    init_tracing("info,fred=warn");
    let metrics = Metrics::new();
    let client = Client::builder(&args.redis_url)
        .prefix(&args.prefix)
        .metrics(&metrics)
        .connect()
        .await?;
    let worker = Worker::builder(client)
        .queues(args.queue)
        .concurrency(args.concurrency)
        .handler(noop::handler())
        .build()?;
    let lines = handshake().await?;
    worker.run_until(until_stop(lines)).await?;
    println!("{}", serde_json::to_string(&ChildReport::collect())?);
    Ok(())
}

/// A child process seen from the benchmark.
pub(crate) struct Child {
    name: String,
    child: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    log: std::path::PathBuf,
}

impl Child {
    /// Starts `program args` and waits until it says `ready`. With `BENCH_CHILD_WRAPPER`
    /// set (say, `valgrind --tool=callgrind`), the child runs under that command.
    pub(crate) async fn start(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> anyhow::Result<Child> {
        let log = log_dir.join(format!("{name}.log"));
        let wrapper = std::env::var("BENCH_CHILD_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(w) => {
                let mut c = tokio::process::Command::new(w);
                c.args(words).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let mut c = Child {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            log,
        };
        match c.stdout.next_line().await? {
            Some(l) if l == "ready" => Ok(c),
            other => bail!("{} did not start ({other:?}): {}", c.name, c.log_tail()),
        }
    }

    pub(crate) async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Sends `stop` and reads the child's report.
    pub(crate) async fn stop(mut self) -> anyhow::Result<ChildReport> {
        self.send("stop").await?;
        let line = self.stdout.next_line().await?;
        let status = self.child.wait().await?;
        match line {
            Some(l) if status.success() => Ok(serde_json::from_str(&l)?),
            _ => bail!("{} failed ({status}): {}", self.name, self.log_tail()),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}
