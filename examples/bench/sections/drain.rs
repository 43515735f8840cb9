//! Drain throughput: a queue filled with no-op jobs, emptied by one or two worker
//! processes at concurrency 1, 16 and 128; worker memory.

use std::time::{Duration, Instant};

use super::Ctx;
use super::enqueue::work_figures;
use crate::child::{Child, ChildReport, Probe, noop};
use crate::info::{Own, PerJob, Snapshot, per_job};
use crate::raw;
use crate::report::Report;
use futures::future::try_join_all;

const CONCURRENCY: [usize; 3] = [1, 16, 128];
const PROCESSES: [usize; 2] = [1, 2];

/// One drain: its rate, work per job and the children's reports.
pub(crate) struct Drained {
    pub(crate) rate: f64,
    pub(crate) per_job: PerJob,
    pub(crate) children: Vec<ChildReport>,
    /// Server CPU (user + system) each of `Ctx::nodes` used during the drain, seconds.
    pub(crate) node_cpu_s: Vec<f64>,
    /// Jobs drained.
    pub(crate) jobs: usize,
}

impl Drained {
    /// The largest peak RSS among the children, MB.
    pub(crate) fn peak_rss_mb(&self) -> f64 {
        self.children
            .iter()
            .map(|c| c.peak_rss_kb)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }
}

/// Starts `procs` children with `args(i)`, lets them go, runs `during` (a producer adding
/// jobs, returning how many), waits until `streams` are empty, and stops them. `jobs` were
/// waiting before.
pub(crate) async fn drain_with(
    ctx: &Ctx,
    name: &str,
    procs: usize,
    jobs: usize,
    streams: &[String],
    args: impl Fn(usize) -> Vec<String>,
    during: impl Future<Output = anyhow::Result<u64>>,
) -> anyhow::Result<Drained> {
    let mut children = Vec::new();
    for i in 0..procs {
        children
            .push(Child::start(&format!("{name}-{i}"), &ctx.exe, &args(i), ctx.logs.path()).await?);
    }
    let mut own = Own::default();
    let before = snapshots(ctx).await?;
    let started = Instant::now();
    for c in &mut children {
        c.send("go").await?;
    }
    let jobs = jobs + during.await? as usize;
    ctx.wait_empty(streams, &mut own, Duration::from_secs(600))
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let after = snapshots(ctx).await?;
    let mut reports = Vec::new();
    for c in children {
        reports.push(c.stop().await?);
    }
    let ran: u64 = reports.iter().map(|r| r.ran).sum();
    anyhow::ensure!(ran as usize >= jobs, "{name}: {ran} of {jobs} jobs ran");
    let node_cpu_s = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.cpu - b.cpu).max(0.0))
        .collect();
    let mut per_job = per_job(&Snapshot::sum(&before), &Snapshot::sum(&after), &own, jobs);
    per_job.client_cpu_us =
        reports.iter().map(|r| r.cpu_us).sum::<u64>() as f64 / jobs.max(1) as f64;
    Ok(Drained {
        rate: jobs as f64 / secs,
        per_job,
        children: reports,
        node_cpu_s,
        jobs,
    })
}

/// An INFO snapshot of each of `ctx.nodes`, taken at once.
async fn snapshots(ctx: &Ctx) -> anyhow::Result<Vec<Snapshot>> {
    try_join_all(ctx.nodes.iter().map(Snapshot::take)).await
}

/// Fills `queue` with `jobs` no-op jobs through stevedore.
pub(crate) async fn fill(
    ctx: &Ctx,
    queue: &str,
    jobs: usize,
) -> anyhow::Result<Option<stevedore::JobId>> {
    let client = &ctx.client;
    let mut left = jobs;
    let mut last = None;
    while left > 0 {
        let k = left.min(10_000);
        last = client
            .enqueue_bulk((0..k).map(|_| noop::job(Probe::default()).queue(queue)))
            .await?
            .pop();
        left -= k;
    }
    Ok(last)
}

/// Drains `jobs` stevedore jobs with `procs` worker processes of `concurrency` each.
pub(crate) async fn stevedore(
    ctx: &Ctx,
    queue: &str,
    concurrency: usize,
    procs: usize,
    jobs: usize,
    during: impl Future<Output = anyhow::Result<u64>>,
) -> anyhow::Result<Drained> {
    stevedore_queues(ctx, &[queue.to_string()], concurrency, procs, jobs, during).await
}

/// Drains `jobs` stevedore jobs waiting in `queues` with `procs` worker processes of
/// `concurrency` each, every process consuming every queue.
pub(crate) async fn stevedore_queues(
    ctx: &Ctx,
    queues: &[String],
    concurrency: usize,
    procs: usize,
    jobs: usize,
    during: impl Future<Output = anyhow::Result<u64>>,
) -> anyhow::Result<Drained> {
    stevedore_drain(ctx, queues, concurrency, procs, jobs, during, false).await
}

/// As [`stevedore`], and the drain lasts until the queue's scheduled set is empty too:
/// jobs a rate limit sent to wait there are part of it.
pub(crate) async fn stevedore_limited(
    ctx: &Ctx,
    queue: &str,
    concurrency: usize,
    procs: usize,
    jobs: usize,
) -> anyhow::Result<Drained> {
    let queues = [queue.to_string()];
    stevedore_drain(
        ctx,
        &queues,
        concurrency,
        procs,
        jobs,
        async { Ok(0) },
        true,
    )
    .await
}

async fn stevedore_drain(
    ctx: &Ctx,
    queues: &[String],
    concurrency: usize,
    procs: usize,
    jobs: usize,
    during: impl Future<Output = anyhow::Result<u64>>,
    waiting_too: bool,
) -> anyhow::Result<Drained> {
    // A partitioned queue's jobs are in its partitions' streams.
    let mut parts = Vec::new();
    for q in queues {
        parts.extend(ctx.client.partition_names(q).await?);
    }
    let mut streams: Vec<String> = parts
        .iter()
        .flat_map(|q| ["high", "normal", "low"].map(|p| ctx.stream(q, p)))
        .collect();
    if waiting_too {
        streams.extend(parts.iter().map(|q| ctx.stream(q, "scheduled")));
    }
    drain_with(
        ctx,
        &queues.join("+"),
        procs,
        jobs,
        &streams,
        |_| {
            vec![
                "worker".into(),
                "--redis-url".into(),
                ctx.url.clone(),
                "--prefix".into(),
                ctx.prefix.clone(),
                "--queue".into(),
                queues.join(","),
                "--concurrency".into(),
                concurrency.to_string(),
            ]
        },
        during,
    )
    .await
}

/// Drains `jobs` raw entries of `stream` with `procs` raw consumers.
pub(crate) async fn raw_consumers(
    ctx: &Ctx,
    stream: &str,
    procs: usize,
    jobs: usize,
    during: impl Future<Output = anyhow::Result<u64>>,
) -> anyhow::Result<Drained> {
    raw_consumers_of(ctx, &[stream.to_string()], procs, jobs, during).await
}

/// Drains `jobs` raw entries waiting in `streams` with `procs` raw consumers, each reading
/// every stream (one loop per stream).
pub(crate) async fn raw_consumers_of(
    ctx: &Ctx,
    streams: &[String],
    procs: usize,
    jobs: usize,
    during: impl Future<Output = anyhow::Result<u64>>,
) -> anyhow::Result<Drained> {
    drain_with(
        ctx,
        "raw",
        procs,
        jobs,
        streams,
        |i| {
            vec![
                "raw-consumer".into(),
                "--redis-url".into(),
                ctx.url.clone(),
                "--stream".into(),
                streams.join(","),
                "--consumer".into(),
                format!("raw-{i}"),
            ]
        },
        during,
    )
    .await
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let s = ctx.sizes;
    let redis = &ctx.raw;
    let mut raw_by_procs = Vec::new();
    for procs in PROCESSES {
        ctx.progress(&format!("drain: raw, {procs} process(es)"));
        let stream = ctx.stream(&format!("raw-p{procs}"), "normal");
        raw::create_group(redis, &stream).await?;
        raw::add_bulk(redis, &stream, s.drain, 1000).await?;
        raw_by_procs.push(raw_consumers(ctx, &stream, procs, s.drain, async { Ok(0) }).await?);
        ctx.cleanup().await?;
    }
    let mut details = serde_json::Map::new();
    for concurrency in CONCURRENCY {
        for (pi, procs) in PROCESSES.into_iter().enumerate() {
            if !ctx.drain_runs.is_empty() && !ctx.drain_runs.contains(&(concurrency, procs)) {
                continue;
            }
            let jobs = if concurrency == 1 {
                s.drain_c1
            } else {
                s.drain
            };
            let key = format!("drain_c{concurrency}_p{procs}");
            ctx.progress(&format!(
                "drain: stevedore, concurrency {concurrency}, {procs} process(es)"
            ));
            let queue = format!("drain-c{concurrency}-p{procs}");
            fill(ctx, &queue, jobs).await?;
            let sd = stevedore(ctx, &queue, concurrency, procs, jobs, async { Ok(0) }).await?;
            ctx.cleanup().await?;
            let bull = match &ctx.bullmq {
                Some(b) => {
                    ctx.progress(&format!(
                        "drain: BullMQ, concurrency {concurrency}, {procs} process(es)"
                    ));
                    let r = b.drain(jobs, concurrency, procs).await?;
                    ctx.cleanup().await?;
                    Some(r)
                }
                None => None,
            };
            let raw = &raw_by_procs[pi];
            report.figure(
                &key,
                format!(
                    "drain, concurrency {concurrency}, {procs} worker process{}",
                    if procs == 1 { "" } else { "es" }
                ),
                "jobs/s",
                false,
                [Some(sd.rate), Some(raw.rate), bull.as_ref().map(|b| b.rate)],
            );
            if concurrency == 128 && procs == 1 {
                work_figures(
                    report,
                    "drain_c128_p1",
                    "drain, concurrency 128",
                    "worker",
                    &sd.per_job,
                    &raw.per_job,
                    bull.as_ref().map(|b| &b.per_job),
                );
                report.figure(
                    "worker_rss_c128",
                    "worker peak RSS, concurrency 128",
                    "MiB",
                    true,
                    [
                        Some(sd.peak_rss_mb()),
                        Some(raw.peak_rss_mb()),
                        bull.as_ref().map(|b| b.peak_rss_kb as f64 / 1024.0),
                    ],
                );
            }
            details.insert(
                key,
                serde_json::json!({
                    "jobs": jobs,
                    "stevedore": { "per_job": sd.per_job, "peak_rss_mb": sd.peak_rss_mb() },
                    "bullmq": bull.as_ref().map(|b| serde_json::json!({ "per_job": b.per_job, "peak_rss_kb": b.peak_rss_kb })),
                }),
            );
        }
    }
    for (procs, raw) in PROCESSES.into_iter().zip(&raw_by_procs) {
        details.insert(
            format!("raw_p{procs}"),
            serde_json::json!({ "rate": raw.rate, "per_job": raw.per_job, "peak_rss_mb": raw.peak_rss_mb() }),
        );
    }
    report.detail("drain", details);
    Ok(())
}
