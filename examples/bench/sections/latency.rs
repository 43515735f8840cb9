//! Enqueue→start latency at a steady rate: a producer enqueues single jobs on a schedule
//! (open loop: it does not wait for one job before sending the next), a worker process
//! records, for each job, the time from just before its enqueue call to its handler's start.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::Ctx;
use super::drain::{raw_consumers, stevedore};
use crate::child::{Probe, noop, now_us};
use crate::raw;
use crate::report::{Report, quantile};

const RATES: [u32; 2] = [1_000, 10_000];
/// Worker concurrency for the latency runs.
const CONCURRENCY: usize = 16;

/// Sends jobs at `rate` per second for the warm-up and then `secs`; `send(warm)` makes one
/// job (a warm-up job's latency is not recorded). Returns how many were sent.
async fn paced<F, Fut>(rate: u32, secs: f64, send: F) -> anyhow::Result<u64>
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let total = crate::WARMUP + Duration::from_secs_f64(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        let due = (elapsed.as_secs_f64() * f64::from(rate)) as u64;
        let warm = elapsed < crate::WARMUP;
        while sent < due {
            tasks.spawn(send(warm));
            sent += 1;
        }
        while let Some(r) = tasks.try_join_next() {
            r??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(sent)
}

fn probe(warm: bool) -> Probe {
    Probe {
        t: if warm { 1 } else { now_us() },
    }
}

/// p50, p99 and p99.9 in ms.
fn percentiles(mut us: Vec<u32>) -> [Option<f64>; 3] {
    us.sort_unstable();
    [0.5, 0.99, 0.999].map(|q| quantile(&us, q).map(|v| v / 1000.0))
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let secs = ctx.sizes.latency_secs;
    for rate in RATES {
        ctx.progress(&format!("latency: stevedore at {rate} jobs/s"));
        let queue = format!("latency-{rate}");
        let client = &ctx.client;
        let producer = async {
            let q = queue.clone();
            paced(rate, secs, move |warm| {
                let c = client.clone();
                let q = q.clone();
                async move {
                    c.enqueue(noop::job(probe(warm)).queue(q)).await?;
                    Ok(())
                }
            })
            .await
        };
        let drained = stevedore(ctx, &queue, CONCURRENCY, 1, 0, producer).await?;
        let sent = drained.children.iter().map(|c| c.ran).sum::<u64>();
        let sd = percentiles(
            drained
                .children
                .into_iter()
                .flat_map(|c| c.latencies_us)
                .collect(),
        );
        ctx.cleanup().await?;

        ctx.progress(&format!("latency: raw at {rate} jobs/s"));
        let stream = ctx.stream(&format!("raw-latency-{rate}"), "normal");
        let redis = &ctx.raw;
        raw::create_group(redis, &stream).await?;
        let producer = async {
            let s = stream.clone();
            paced(rate, secs, move |warm| {
                let r = redis.clone();
                let s = s.clone();
                async move { raw::add(&r, &s, probe(warm)).await }
            })
            .await
        };
        let drained = raw_consumers(ctx, &stream, 1, 0, producer).await?;
        let raw_sent = drained.children.iter().map(|c| c.ran).sum::<u64>();
        let rw = percentiles(
            drained
                .children
                .into_iter()
                .flat_map(|c| c.latencies_us)
                .collect(),
        );
        ctx.cleanup().await?;

        let bl = match &ctx.bullmq {
            Some(b) => {
                ctx.progress(&format!("latency: BullMQ at {rate} jobs/s"));
                let r = b.latency(rate, secs, CONCURRENCY).await?;
                ctx.cleanup().await?;
                percentiles(r.latencies_us)
            }
            None => [None; 3],
        };
        for (i, name) in ["p50", "p99", "p99.9"].into_iter().enumerate() {
            report.figure(
                format!("latency_{rate}_{}", name.replace('.', "")),
                format!("enqueue→start {name} at {rate} jobs/s"),
                "ms",
                true,
                [sd[i], rw[i], bl[i]],
            );
        }
        report.detail(
            format!("latency_{rate}"),
            serde_json::json!({ "sent": sent, "raw_sent": raw_sent, "concurrency": CONCURRENCY }),
        );
    }
    Ok(())
}
