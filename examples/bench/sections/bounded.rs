//! Bounded queues: what a capacity costs when the queue has room.
//!
//! - Enqueue: bulk enqueues (the enqueue section's chunks) into a queue without a capacity
//!   and into one whose capacity is never reached, in turns (none, bounded, bounded, none)
//!   so drift cancels: jobs/s and Redis CPU per job, bounded ÷ none. The enqueue script
//!   counts the queue once per call of up to a hundred jobs.
//! - Drain: the drain section's worker process at concurrency 128 empties each kind of
//!   queue, in turns after an unmeasured warm-up drain: jobs/s, bounded ÷ none (a worker
//!   of a bounded queue clears its full mark at most every 10 ms).

use super::Ctx;
use super::drain::{Drained, fill, stevedore};
use super::enqueue::{Measured, bulk, measure};
use crate::report::{Report, num};

const CONCURRENCY: usize = 128;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let s = ctx.sizes;
    let turns = [false, true, true, false];
    let (mut enq_none, mut enq_bounded): (Vec<Measured>, Vec<Measured>) = (vec![], vec![]);
    for (i, bounded) in turns.into_iter().enumerate() {
        let queue = format!("bounded-enqueue-{i}");
        ctx.progress(&format!(
            "bounded: bulk enqueue, {}",
            if bounded { "a capacity" } else { "no capacity" }
        ));
        if bounded {
            ctx.client
                .set_queue_capacity(&queue, 10 * s.bulk as u64)
                .await?;
        }
        // Warm: the queue registered, the scripts loaded.
        bulk(&ctx.client, &queue, s.bulk_chunk, s.bulk_chunk).await?;
        let m = measure(ctx, s.bulk, || {
            bulk(&ctx.client, &queue, s.bulk, s.bulk_chunk)
        })
        .await?;
        ctx.cleanup().await?;
        if bounded {
            &mut enq_bounded
        } else {
            &mut enq_none
        }
        .push(m);
    }
    // The first drain of a run is slower whatever it drains (a fresh server and worker
    // process): one unmeasured, so it does not count against the first turn.
    ctx.progress("bounded: drain, warming up");
    fill(ctx, "bounded-warm", s.drain / 4).await?;
    stevedore(ctx, "bounded-warm", CONCURRENCY, 1, s.drain / 4, async {
        Ok(0)
    })
    .await?;
    ctx.cleanup().await?;
    let (mut drain_none, mut drain_bounded): (Vec<Drained>, Vec<Drained>) = (vec![], vec![]);
    for (i, bounded) in turns.into_iter().enumerate() {
        let queue = format!("bounded-drain-{i}");
        ctx.progress(&format!(
            "bounded: drain, concurrency {CONCURRENCY}, {}",
            if bounded { "a capacity" } else { "no capacity" }
        ));
        if bounded {
            ctx.client
                .set_queue_capacity(&queue, 10 * s.drain as u64)
                .await?;
        }
        fill(ctx, &queue, s.drain).await?;
        let d = stevedore(ctx, &queue, CONCURRENCY, 1, s.drain, async { Ok(0) }).await?;
        ctx.cleanup().await?;
        if bounded {
            &mut drain_bounded
        } else {
            &mut drain_none
        }
        .push(d);
    }
    let rate = |v: &[Measured]| mean(&v.iter().map(|m| m.rate).collect::<Vec<_>>());
    let cpu = |v: &[Measured]| mean(&v.iter().map(|m| m.per_job.redis_cpu_us).collect::<Vec<_>>());
    let drained = |v: &[Drained]| mean(&v.iter().map(|d| d.rate).collect::<Vec<_>>());
    let drain_cpu =
        |v: &[Drained]| mean(&v.iter().map(|d| d.per_job.redis_cpu_us).collect::<Vec<_>>());
    report.figure(
        "bounded_enqueue_rate",
        "bulk enqueue into a bounded queue with room ÷ an unbounded one: jobs/s".to_string(),
        "×",
        false,
        [Some(rate(&enq_bounded) / rate(&enq_none)), None, None],
    );
    report.figure(
        "bounded_enqueue_redis_cpu",
        "bulk enqueue into a bounded queue with room ÷ an unbounded one: Redis CPU per job"
            .to_string(),
        "×",
        true,
        [Some(cpu(&enq_bounded) / cpu(&enq_none)), None, None],
    );
    report.figure(
        "bounded_drain_rate",
        format!("drain, concurrency {CONCURRENCY}, a bounded queue ÷ an unbounded one: jobs/s"),
        "×",
        false,
        [
            Some(drained(&drain_bounded) / drained(&drain_none)),
            None,
            None,
        ],
    );
    report.detail(
        "bounded",
        serde_json::json!({
            "enqueue": {
                "bounded": enq_bounded.iter().map(|m| serde_json::json!({"rate": m.rate, "per_job": m.per_job})).collect::<Vec<_>>(),
                "none": enq_none.iter().map(|m| serde_json::json!({"rate": m.rate, "per_job": m.per_job})).collect::<Vec<_>>(),
            },
            "drain": {
                "bounded": drain_bounded.iter().map(|d| serde_json::json!({"rate": d.rate, "per_job": d.per_job})).collect::<Vec<_>>(),
                "none": drain_none.iter().map(|d| serde_json::json!({"rate": d.rate, "per_job": d.per_job})).collect::<Vec<_>>(),
                "redis_cpu_us_per_job": {"bounded": drain_cpu(&drain_bounded), "none": drain_cpu(&drain_none)},
            },
        }),
    );
    ctx.progress(&format!(
        "bounded: enqueue {} against {} jobs/s, drain {} against {} jobs/s",
        num(Some(rate(&enq_bounded))),
        num(Some(rate(&enq_none))),
        num(Some(drained(&drain_bounded))),
        num(Some(drained(&drain_none))),
    ));
    Ok(())
}
