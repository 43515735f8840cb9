//! Redis memory per waiting job: `used_memory` before and after enqueueing jobs into an
//! otherwise empty Redis, scaled to a million jobs.

use super::Ctx;
use super::drain::fill;
use crate::info::Snapshot;
use crate::raw;
use crate::report::Report;

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.sizes.memory;
    let mb_per_million = |bytes: f64| bytes * 1e6 / n as f64 / (1024.0 * 1024.0);

    ctx.progress("memory: stevedore");
    let before = Snapshot::take(&ctx.admin).await?;
    let last = fill(ctx, "memory", n).await?;
    let after = Snapshot::take(&ctx.admin).await?;
    let sd = mb_per_million(after.used_memory.saturating_sub(before.used_memory) as f64);
    // A waiting job still has a status, read from its entry.
    let state = match &last {
        Some(id) => ctx
            .client
            .status(id.as_str())
            .await?
            .map(|s| s.state.to_string()),
        None => None,
    };
    anyhow::ensure!(
        state.as_deref() == Some("queued"),
        "a waiting job's status is {state:?}, not queued"
    );
    ctx.cleanup().await?;

    ctx.progress("memory: raw");
    let redis = &ctx.raw;
    let before = Snapshot::take(&ctx.admin).await?;
    raw::add_bulk(redis, &ctx.stream("raw-memory", "normal"), n, 1000).await?;
    let after = Snapshot::take(&ctx.admin).await?;
    let rw = mb_per_million(after.used_memory.saturating_sub(before.used_memory) as f64);
    ctx.cleanup().await?;

    let bl = match &ctx.bullmq {
        Some(b) => {
            ctx.progress("memory: BullMQ");
            let r = b.memory(n, ctx.sizes.bulk_chunk).await?;
            Some(r.bytes_per_job * 1e6 / (1024.0 * 1024.0))
        }
        None => None,
    };
    report.figure(
        "memory_per_million",
        "Redis memory per 1M waiting jobs",
        "MiB",
        true,
        [Some(sd), Some(rw), bl],
    );
    report.detail(
        "memory",
        serde_json::json!({ "jobs": n, "status_of_last_waiting_job": state }),
    );
    Ok(())
}
