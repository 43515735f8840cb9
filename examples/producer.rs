//! Bulk-enqueues jobs of any type from JSON, and reports the rate.
//!
//! Run with `cargo run --example producer -- --type demo.sleep --payload '{"ms": 10}' --count 1000`.
//! The payload is converted to the MessagePack the handler decodes, so any job type works
//! without linking its handler.

use std::time::Instant;

use clap::Parser;
use stevedore::{Client, Priority, RawJob};

#[derive(Parser, Debug)]
#[command(about = "Enqueues demo jobs in bulk")]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Job type, e.g. demo.noop.
    #[arg(long = "type")]
    job_type: String,
    /// Payload as JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// How many jobs.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// high, normal or low.
    #[arg(long, default_value = "normal")]
    priority: Priority,
    /// Queue.
    #[arg(long, default_value = "demo")]
    queue: String,
    /// Key prefix.
    #[arg(long, default_value = "stevedore")]
    prefix: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let payload: serde_json::Value = serde_json::from_str(&args.payload)?;
    let client = Client::builder(&args.redis_url)
        .prefix(&args.prefix)
        .connect()
        .await?;
    let job = RawJob::new(&args.job_type, &args.queue, &payload)?.priority(args.priority);
    let started = Instant::now();
    let ids = client
        .enqueue_bulk(std::iter::repeat_n(job, args.count))
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "enqueued {} {} jobs on {} in {:.3} s ({:.0} jobs/s)",
        ids.len(),
        args.job_type,
        args.queue,
        secs,
        ids.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}
