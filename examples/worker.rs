//! A long-running worker with demo job types on queue `demo`, for trying things out and
//! for the multi-process tests.
//!
//! Run with `cargo run --example worker -- --redis-url redis://127.0.0.1:6379`, then
//! enqueue with the `producer` example. Job types:
//! `demo.noop`; `demo.sleep` `{"ms": u64}`; `demo.fail` (always errors); `demo.flaky`
//! `{"p": f64}` (fails with probability p); `demo.panic`; `demo.count` `{"ms": u64}`
//! (optional sleep, then `HINCRBY <prefix>-demo:executions <job id> 1`, so a run can be
//! audited for lost and duplicated jobs, and `HINCRBY <prefix>-demo:executions-by-worker
//! <consumer name> 1`, so it shows how the work was shared); `demo.abort` (records its
//! execution like `demo.count`, then aborts the whole process: a poison job).

use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;
use fred::prelude::{ClientLike, HashesInterface, ListInterface};
use serde::{Deserialize, Serialize};
use stevedore::{Client, JobContext, JobError, Metrics, Worker, job_handler, shutdown_signal};

#[derive(Parser, Debug)]
#[command(about = "Runs a stevedore worker with the demo job types")]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Queues to consume, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "demo")]
    queues: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Key prefix.
    #[arg(long, default_value = "stevedore")]
    prefix: String,
    /// How long an unrenewed job stays leased before another worker takes it, e.g. "30s".
    #[arg(long, default_value = "30s")]
    lease: humantime::Duration,
    /// Deliveries after which a job whose worker keeps dying is dead-lettered as poison.
    #[arg(long, default_value_t = 3)]
    max_deliveries: u32,
    /// How long shutdown waits for running jobs, e.g. "10s".
    #[arg(long, default_value = "30s")]
    drain_timeout: humantime::Duration,
    /// Serve /metrics, /healthz and /readyz on this address, e.g. "127.0.0.1:9464".
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Where `demo.count` and `demo.abort` record executions.
struct Audit {
    redis: fred::prelude::Client,
    /// `<prefix>-demo:executions`: job id → executions.
    by_job: String,
    /// `<prefix>-demo:executions-by-worker`: consumer name → executions.
    by_worker: String,
    /// This worker's consumer name.
    worker: String,
}

static AUDIT: OnceLock<Audit> = OnceLock::new();

#[derive(Debug, Default, Serialize, Deserialize)]
struct Empty {}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Sleep {
    #[serde(default)]
    ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Flaky {
    p: f64,
}

#[job_handler(name = "demo.noop", queue = "demo")]
async fn noop(_job: Empty, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(name = "demo.sleep", queue = "demo")]
async fn sleep(job: Sleep, _ctx: JobContext) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(job.ms)).await;
    Ok(())
}

#[job_handler(name = "demo.fail", queue = "demo", max_attempts = 3)]
async fn fail(_job: Empty, ctx: JobContext) -> Result<(), JobError> {
    Err(JobError::retry(format!(
        "demo.fail always fails (attempt {})",
        ctx.attempt()
    )))
}

#[job_handler(name = "demo.flaky", queue = "demo")]
async fn flaky(job: Flaky, _ctx: JobContext) -> Result<(), JobError> {
    if rand::random::<f64>() < job.p {
        return Err(JobError::retry("demo.flaky failed this time"));
    }
    Ok(())
}

#[job_handler(name = "demo.panic", queue = "demo", max_attempts = 2)]
async fn panic(_job: Empty, _ctx: JobContext) -> Result<(), JobError> {
    panic!("demo.panic panics on purpose");
}

/// `HINCRBY <prefix>-demo:executions <job id> 1` and `HINCRBY
/// <prefix>-demo:executions-by-worker <consumer> 1`: the audit trail of `demo.count` and
/// `demo.abort`.
async fn record_execution(ctx: &JobContext) -> Result<(), JobError> {
    let audit = AUDIT
        .get()
        .ok_or_else(|| JobError::retry("audit connection not ready"))?;
    let p = audit.redis.pipeline();
    let _: () = p.hincrby(audit.by_job.as_str(), ctx.id(), 1).await?;
    let _: () = p
        .hincrby(audit.by_worker.as_str(), audit.worker.as_str(), 1)
        .await?;
    let _: Vec<i64> = p.all().await?;
    Ok(())
}

#[job_handler(name = "demo.count", queue = "demo")]
async fn count(job: Sleep, ctx: JobContext) -> Result<(), JobError> {
    if job.ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.ms)).await;
    }
    record_execution(&ctx).await?;
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Keyed {
    #[serde(default)]
    key: String,
    #[serde(default)]
    ms: u64,
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[job_handler(name = "demo.limited", queue = "demo", limit_key = "key")]
async fn limited(job: Keyed, ctx: JobContext) -> Result<(), JobError> {
    let audit = AUDIT
        .get()
        .ok_or_else(|| JobError::retry("audit connection not ready"))?;
    let events = format!("{}:starts", audit.by_job.trim_end_matches(":executions"));
    let event = |what: &str| {
        format!(
            "{what} {} {} {} {}",
            unix_ms(),
            job.key,
            ctx.id(),
            audit.worker
        )
    };
    let _: () = audit.redis.rpush(events.as_str(), event("start")).await?;
    if job.ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.ms)).await;
    }
    let _: () = audit.redis.rpush(events.as_str(), event("end")).await?;
    record_execution(&ctx).await
}

#[job_handler(name = "demo.abort", queue = "demo")]
async fn abort(_job: Empty, ctx: JobContext) -> Result<(), JobError> {
    record_execution(&ctx).await?;
    eprintln!(
        "demo.abort: aborting the worker process on purpose (job {})",
        ctx.id()
    );
    std::process::abort();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fred=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in files and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let metrics = Metrics::new();
    let client = Client::builder(&args.redis_url)
        .prefix(&args.prefix)
        .metrics(&metrics)
        .connect()
        .await?;

    // The audit connection must ride out Redis restarts like the worker's own.
    let mut audit =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&args.redis_url)?);
    audit
        .set_policy(fred::prelude::ReconnectPolicy::new_exponential(
            0, 100, 2_000, 2,
        ))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(10));
    let audit = audit.build()?;
    audit.init().await?;

    let worker = Worker::builder(client)
        .queues(args.queues)
        .concurrency(args.concurrency)
        .drain_timeout(args.drain_timeout.into())
        .lease(args.lease.into())
        .max_deliveries(args.max_deliveries)
        .handler(noop::handler())
        .handler(sleep::handler())
        .handler(fail::handler())
        .handler(flaky::handler())
        .handler(panic::handler())
        .handler(count::handler())
        .handler(abort::handler())
        .handler(limited::handler())
        .build()?;
    let _ = AUDIT.set(Audit {
        redis: audit,
        by_job: format!("{}-demo:executions", args.prefix),
        by_worker: format!("{}-demo:executions-by-worker", args.prefix),
        worker: worker.consumer_name().to_owned(),
    });
    eprintln!(
        "worker {} consuming {:?}",
        worker.consumer_name(),
        worker.queues()
    );
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
        let ops = stevedore::http::router(metrics.clone(), worker.health());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, ops).await {
                eprintln!("metrics server stopped: {e}");
            }
        });
    }
    worker.run_until(shutdown_signal()).await?;
    Ok(())
}
