//! Dependencies and webhooks: what they cost a queue's drain where they are in use but the
//! drained jobs themselves have no dependents and fire no hook.
//!
//! A queue that ever had dependents (`{q}:has_deps`), or has a webhook for another job
//! type (`{q}:hooks`), makes each acknowledgement read every acknowledged entry (its job id
//! and type) instead of one EXISTS per call. The drain section's worker process at
//! concurrency 128 empties a plain queue, one with dependents in use and one with hooks, in
//! turns (plain, deps, hooks, hooks, deps, plain) after an unmeasured warm-up drain:
//! jobs/s and Redis CPU per job, each ÷ plain.

use fred::prelude::*;
use stevedore::webhook::{Webhook, WebhookScope};

use super::Ctx;
use super::drain::{Drained, fill, stevedore};
use crate::report::{Report, num};

const CONCURRENCY: usize = 128;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Deps,
    Hooks,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let s = ctx.sizes;
    ctx.progress("flows: drain, warming up");
    fill(ctx, "flows-warm", s.drain / 4).await?;
    stevedore(ctx, "flows-warm", CONCURRENCY, 1, s.drain / 4, async {
        Ok(0)
    })
    .await?;
    ctx.cleanup().await?;
    let turns = [
        Kind::Plain,
        Kind::Deps,
        Kind::Hooks,
        Kind::Hooks,
        Kind::Deps,
        Kind::Plain,
    ];
    let mut runs: Vec<(Kind, Drained)> = Vec::new();
    for (i, kind) in turns.into_iter().enumerate() {
        let queue = format!("flows-{i}");
        let name = match kind {
            Kind::Plain => "plain",
            Kind::Deps => "dependents in use",
            Kind::Hooks => "a hook for another type",
        };
        ctx.progress(&format!("flows: drain, concurrency {CONCURRENCY}, {name}"));
        fill(ctx, &queue, s.drain).await?;
        let base = format!("{}:{{{queue}}}:", ctx.prefix);
        match kind {
            Kind::Plain => {}
            Kind::Deps => {
                let _: () = ctx
                    .admin
                    .set(format!("{base}has_deps"), "1", None, None, false)
                    .await?;
            }
            Kind::Hooks => {
                // A hook for another type: the worker writes the queue's copy when it
                // starts, and no delivery is made.
                ctx.client
                    .set_webhook(
                        WebhookScope::Type("bench.other".into()),
                        Webhook::new("http://127.0.0.1:9/", "bench"),
                    )
                    .await?;
            }
        }
        let d = stevedore(ctx, &queue, CONCURRENCY, 1, s.drain, async { Ok(0) }).await?;
        if kind == Kind::Hooks {
            let copy: u64 = ctx.admin.exists(format!("{base}hooks")).await?;
            anyhow::ensure!(copy == 1, "the worker did not write the queue's hooks");
            ctx.client
                .remove_webhook(WebhookScope::Type("bench.other".into()))
                .await?;
        }
        ctx.cleanup().await?;
        runs.push((kind, d));
    }
    let of = |k: Kind, f: &dyn Fn(&Drained) -> f64| {
        mean(
            &runs
                .iter()
                .filter(|(kind, _)| *kind == k)
                .map(|(_, d)| f(d))
                .collect::<Vec<_>>(),
        )
    };
    let rate = |d: &Drained| d.rate;
    let cpu = |d: &Drained| d.per_job.redis_cpu_us;
    for (kind, key, what) in [
        (Kind::Deps, "deps", "a queue with dependents in use"),
        (Kind::Hooks, "hooks", "a queue with a hook for another type"),
    ] {
        report.figure(
            format!("flows_{key}_drain_rate"),
            format!("drain, concurrency {CONCURRENCY}, {what} ÷ a plain one: jobs/s"),
            "×",
            false,
            [Some(of(kind, &rate) / of(Kind::Plain, &rate)), None, None],
        );
        report.figure(
            format!("flows_{key}_drain_redis_cpu"),
            format!("drain, concurrency {CONCURRENCY}, {what} ÷ a plain one: Redis CPU per job"),
            "×",
            true,
            [Some(of(kind, &cpu) / of(Kind::Plain, &cpu)), None, None],
        );
    }
    report.detail(
        "flows",
        serde_json::json!({
            "drain": runs.iter().map(|(k, d)| serde_json::json!({
                "kind": match k { Kind::Plain => "plain", Kind::Deps => "deps", Kind::Hooks => "hooks" },
                "rate": d.rate,
                "per_job": d.per_job,
            })).collect::<Vec<_>>(),
        }),
    );
    ctx.progress(&format!(
        "flows: drain plain {} jobs/s, deps {}, hooks {}",
        num(Some(of(Kind::Plain, &rate))),
        num(Some(of(Kind::Deps, &rate))),
        num(Some(of(Kind::Hooks, &rate))),
    ));
    Ok(())
}
