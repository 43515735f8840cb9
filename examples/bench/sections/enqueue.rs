//! Enqueue rates: one await per job, and in bulk.

use std::time::Instant;

use stevedore::Client;

use super::Ctx;
use crate::child::{Probe, cpu_us, noop};
use crate::info::{Own, PerJob, Snapshot, per_job};
use crate::raw;
use crate::report::Report;

/// Jobs enqueued before measuring, so connections and code paths are warm.
const WARM: usize = 200;

/// Rate (jobs/s) and work per job of one measured loop.
pub(super) struct Measured {
    pub(super) rate: f64,
    pub(super) per_job: PerJob,
}

pub(super) async fn measure<F, Fut>(ctx: &Ctx, jobs: usize, work: F) -> anyhow::Result<Measured>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let before = Snapshot::take(&ctx.admin).await?;
    let cpu = cpu_us();
    let started = Instant::now();
    work().await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_us() - cpu;
    let after = Snapshot::take(&ctx.admin).await?;
    let mut per_job = per_job(&before, &after, &Own::default(), jobs);
    per_job.client_cpu_us = cpu as f64 / jobs as f64;
    Ok(Measured {
        rate: jobs as f64 / secs,
        per_job,
    })
}

async fn single(client: &Client, queue: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        client
            .enqueue(noop::job(Probe::default()).queue(queue))
            .await?;
    }
    Ok(())
}

pub(super) async fn bulk(
    client: &Client,
    queue: &str,
    n: usize,
    chunk: usize,
) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk);
        client
            .enqueue_bulk((0..k).map(|_| noop::job(Probe::default()).queue(queue)))
            .await?;
        left -= k;
    }
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let s = ctx.sizes;
    let client = &ctx.client;
    let redis = &ctx.raw;
    let raw_stream = ctx.stream("raw", "normal");

    ctx.progress("enqueue: one await per job");
    single(client, "warm", WARM).await?;
    for _ in 0..WARM {
        raw::add(redis, &raw_stream, Probe::default()).await?;
    }
    let raw_single = measure(ctx, s.single, || async {
        for _ in 0..s.single {
            raw::add(redis, &raw_stream, Probe::default()).await?;
        }
        Ok(())
    })
    .await?;
    let sd_single = measure(ctx, s.single, || single(client, "single", s.single)).await?;

    ctx.progress("enqueue: bulk");
    let raw_bulk = measure(ctx, s.bulk, || {
        raw::add_bulk(redis, &raw_stream, s.bulk, s.bulk_chunk)
    })
    .await?;
    let sd_bulk = measure(ctx, s.bulk, || bulk(client, "bulk", s.bulk, s.bulk_chunk)).await?;
    ctx.cleanup().await?;

    let bull = match &ctx.bullmq {
        Some(b) => {
            ctx.progress("enqueue: BullMQ");
            Some(b.enqueue(s.single, s.bulk, s.bulk_chunk).await?)
        }
        None => None,
    };

    let us = |rate: f64| 1e6 / rate;
    report.figure(
        "enqueue_single",
        "enqueue, one await per job",
        "jobs/s",
        false,
        [
            Some(sd_single.rate),
            Some(raw_single.rate),
            bull.as_ref().map(|b| b.single.rate),
        ],
    );
    report.figure(
        "enqueue_single_us",
        "enqueue, one await per job: time per job",
        "µs",
        true,
        [
            Some(us(sd_single.rate)),
            Some(us(raw_single.rate)),
            bull.as_ref().map(|b| us(b.single.rate)),
        ],
    );
    report.figure(
        "enqueue_bulk",
        format!("enqueue in bulk, {} per call", s.bulk_chunk),
        "jobs/s",
        false,
        [
            Some(sd_bulk.rate),
            Some(raw_bulk.rate),
            bull.as_ref().map(|b| b.bulk.rate),
        ],
    );
    for (key, label, sd, rw, bl) in [
        (
            "single",
            "enqueue, one await per job",
            &sd_single.per_job,
            &raw_single.per_job,
            bull.as_ref().map(|b| &b.single.per_job),
        ),
        (
            "bulk",
            "enqueue in bulk",
            &sd_bulk.per_job,
            &raw_bulk.per_job,
            bull.as_ref().map(|b| &b.bulk.per_job),
        ),
    ] {
        work_figures(
            report,
            &format!("enqueue_{key}"),
            label,
            "producer",
            sd,
            rw,
            bl,
        );
    }
    report.detail(
        "enqueue",
        serde_json::json!({
            "single": { "stevedore": sd_single.per_job, "raw": raw_single.per_job,
                        "bullmq": bull.as_ref().map(|b| &b.single.per_job) },
            "bulk": { "stevedore": sd_bulk.per_job, "raw": raw_bulk.per_job,
                      "bullmq": bull.as_ref().map(|b| &b.bulk.per_job) },
        }),
    );
    Ok(())
}

/// Commands, round trips, Redis CPU and the client's (`who`) CPU per job, as figures.
pub(crate) fn work_figures(
    report: &mut Report,
    key: &str,
    label: &str,
    who: &str,
    sd: &PerJob,
    raw: &PerJob,
    bull: Option<&PerJob>,
) {
    report.figure(
        format!("{key}_commands"),
        format!("{label}: Redis commands per job"),
        "commands",
        true,
        [
            Some(sd.commands),
            Some(raw.commands),
            bull.map(|b| b.commands),
        ],
    );
    report.figure(
        format!("{key}_round_trips"),
        format!("{label}: round trips per job"),
        "reads",
        true,
        [
            Some(sd.round_trips),
            Some(raw.round_trips),
            bull.map(|b| b.round_trips),
        ],
    );
    report.figure(
        format!("{key}_redis_cpu"),
        format!("{label}: Redis CPU per job"),
        "µs",
        true,
        [
            Some(sd.redis_cpu_us),
            Some(raw.redis_cpu_us),
            bull.map(|b| b.redis_cpu_us),
        ],
    );
    report.figure(
        format!("{key}_client_cpu"),
        format!("{label}: {who} CPU per job"),
        "µs",
        true,
        [
            Some(sd.client_cpu_us),
            Some(raw.client_cpu_us),
            bull.map(|b| b.client_cpu_us),
        ],
    );
}
