//! Rate limits: what a configured but idle limit costs a drain, and how closely a limit
//! that is hit holds its rate.
//!
//! - Idle: the drain section's worker process at concurrency 128 empties a queue with no
//!   limit and a queue with a limit of 10,000,000 jobs/s that no drain reaches, in turns
//!   (none, limit, limit, none) so drift cancels; jobs/s and Redis CPU per job, with ÷ none.
//! - Hit: two worker processes at concurrency 128 drain a queue limited to `limit`/s with
//!   a burst of a tenth of it: at the limit, the run takes `(jobs − burst) ÷ limit`, so the
//!   expected rate over it is `jobs ÷ that`; the figure is the measured rate ÷ the expected.

use stevedore::{LimitScope, RateLimit};

use super::Ctx;
use super::drain::{Drained, fill, stevedore, stevedore_limited};
use crate::report::{Report, num};

const CONCURRENCY: usize = 128;
const IDLE_LIMIT: u32 = 10_000_000;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let jobs = ctx.sizes.drain;
    let mut none: Vec<Drained> = Vec::new();
    let mut idle: Vec<Drained> = Vec::new();
    for (i, limited) in [false, true, true, false].into_iter().enumerate() {
        let queue = format!("limits-idle-{i}");
        ctx.progress(&format!(
            "limits: drain, concurrency {CONCURRENCY}, {}",
            if limited { "an idle limit" } else { "no limit" }
        ));
        if limited {
            ctx.client
                .set_rate_limit(
                    LimitScope::Queue(queue.clone()),
                    RateLimit::per_second(IDLE_LIMIT),
                )
                .await?;
        }
        fill(ctx, &queue, jobs).await?;
        let d = stevedore(ctx, &queue, CONCURRENCY, 1, jobs, async { Ok(0) }).await?;
        ctx.cleanup().await?;
        if limited { &mut idle } else { &mut none }.push(d);
    }
    let rate = |v: &[Drained]| mean(&v.iter().map(|d| d.rate).collect::<Vec<_>>());
    let cpu = |v: &[Drained]| mean(&v.iter().map(|d| d.per_job.redis_cpu_us).collect::<Vec<_>>());
    let trips = |v: &[Drained]| mean(&v.iter().map(|d| d.per_job.round_trips).collect::<Vec<_>>());
    let ratio = rate(&idle) / rate(&none);
    report.figure(
        "limits_idle_rate",
        format!("drain, concurrency {CONCURRENCY}, an idle rate limit ÷ none: jobs/s"),
        "×",
        false,
        [Some(ratio), None, None],
    );
    report.figure(
        "limits_idle_redis_cpu",
        format!("drain, concurrency {CONCURRENCY}, an idle rate limit ÷ none: Redis CPU per job"),
        "×",
        true,
        [Some(cpu(&idle) / cpu(&none)), None, None],
    );
    report.target(
        "an idle rate limit costs at most 10% of drain throughput",
        format!(
            "{} jobs/s with the limit, {} without ({:+.1}%); Redis CPU {} µs against {} µs per job, round trips {} against {}",
            num(Some(rate(&idle))),
            num(Some(rate(&none))),
            (ratio - 1.0) * 100.0,
            num(Some(cpu(&idle))),
            num(Some(cpu(&none))),
            num(Some(trips(&idle))),
            num(Some(trips(&none))),
        ),
        Some(ratio >= 0.9),
    );

    let limit: u32 = if ctx.sizes.drain < 100_000 {
        1_000
    } else {
        2_000
    };
    let burst = limit / 10;
    let hit_jobs = limit as usize * if ctx.sizes.drain < 100_000 { 3 } else { 10 };
    let queue = "limits-hit";
    ctx.progress(&format!("limits: {hit_jobs} jobs at a limit of {limit}/s"));
    ctx.client
        .set_rate_limit(
            LimitScope::Queue(queue.into()),
            RateLimit::per_second(limit).with_burst(burst),
        )
        .await?;
    fill(ctx, queue, hit_jobs).await?;
    let hit = stevedore_limited(ctx, queue, CONCURRENCY, 2, hit_jobs).await?;
    ctx.cleanup().await?;
    let expected = hit_jobs as f64 * f64::from(limit) / (hit_jobs - burst as usize) as f64;
    report.figure(
        "limits_hit_rate",
        format!(
            "{hit_jobs} jobs at a limit of {limit}/s burst {burst}, 2 processes: jobs/s ÷ the limit's"
        ),
        "×",
        false,
        [Some(hit.rate / expected), None, None],
    );
    report.detail(
        "limits",
        serde_json::json!({
            "idle": {
                "limit_per_s": IDLE_LIMIT,
                "with": idle.iter().map(|d| serde_json::json!({"rate": d.rate, "per_job": d.per_job})).collect::<Vec<_>>(),
                "without": none.iter().map(|d| serde_json::json!({"rate": d.rate, "per_job": d.per_job})).collect::<Vec<_>>(),
            },
            "hit": {
                "limit_per_s": limit,
                "burst": burst,
                "jobs": hit_jobs,
                "rate": hit.rate,
                "expected_rate": expected,
                "per_job": hit.per_job,
            },
        }),
    );
    Ok(())
}
