//! Drain throughput on a Redis Cluster of three primaries (no replicas) that the section
//! starts through the test kit: the same jobs in one queue (one primary does all the work)
//! and spread over three queues whose hash tags map to the three primaries, drained by the
//! drain section's worker processes at concurrency 128, with the raw ceiling for the same
//! shapes. Per case: jobs/s, each primary's CPU, and the rate the busiest primary could
//! sustain at the CPU it spent per job (the ceiling when the workers, not the shards, are
//! what limits this machine).
//!
//! A row is a [`Shape`]: a name, the queues the jobs are spread over, and their partitions:
//! one queue, one queue of three partitions (which land on the three primaries), and three
//! queues.

use std::collections::BTreeMap;

use anyhow::Context;
use fred::prelude::ClientLike;
use stevedore::{Client, Metrics};
use stevedore_testcontainers::{KitError, RedisCluster};

use super::Ctx;
use super::drain::{Drained, fill, raw_consumers_of, stevedore_queues};
use crate::raw;
use crate::report::{Report, Table, num};

const PRIMARIES: usize = 3;
const CONCURRENCY: usize = 128;
const PROCESSES: [usize; 2] = [1, 2];
/// Queue names tried, `cluster-<i>`, to find one on each primary.
const CANDIDATES: usize = 1_000;

/// One way of spreading the jobs over the cluster: a row of the section.
struct Shape {
    /// In figure keys: `cluster_<key>_p<processes>`.
    key: &'static str,
    label: &'static str,
    queues: Vec<String>,
    /// Partitions of each queue (1: plain queues).
    partitions: u16,
}

/// One shape drained by one process count, both sides.
struct Case {
    shape: usize,
    procs: usize,
    stevedore: Drained,
    raw: Drained,
}

/// Jobs a second the busiest primary could serve at the CPU it spent per job.
fn ceiling(d: &Drained) -> Option<f64> {
    let busiest = d.node_cpu_s.iter().copied().fold(0.0, f64::max);
    (busiest > 0.0).then(|| d.jobs as f64 / busiest)
}

/// `n` split over `parts`: equal shares, the remainder to the first ones.
fn shares(n: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .collect()
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    ctx.progress("cluster: starting 3 primaries");
    let cluster = match RedisCluster::builder()
        .primaries(PRIMARIES)
        .replicas(0)
        .start()
        .await
    {
        Ok(c) => c,
        Err(KitError::RedisServerNotFound { .. }) => {
            report
                .notes
                .push("cluster section skipped: no redis-server to start a cluster with.".into());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let primaries = cluster.primaries().await?;
    anyhow::ensure!(
        primaries.len() == PRIMARIES,
        "the cluster has {} primaries, not {PRIMARIES}",
        primaries.len()
    );
    // A queue on each primary, in the order of `primaries`.
    let mut by_primary: BTreeMap<u16, (String, u16)> = BTreeMap::new();
    for i in 0..CANDIDATES {
        let queue = format!("cluster-{i}");
        let slot = cluster.slot_of(ctx.stream(&queue, "normal"));
        let port = cluster.primary_of_slot(slot).await?;
        by_primary.entry(port).or_insert((queue, slot));
        if by_primary.len() == PRIMARIES {
            break;
        }
    }
    let placed: Vec<(String, u16, u16)> = primaries
        .iter()
        .map(|port| {
            by_primary
                .get(port)
                .map(|(q, slot)| (q.clone(), *slot, *port))
                .with_context(|| format!("no queue name of {CANDIDATES} maps to primary {port}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let queues: Vec<String> = placed.iter().map(|(q, _, _)| q.clone()).collect();
    let shapes = [
        Shape {
            key: "1q",
            label: "1 queue",
            queues: queues[..1].to_vec(),
            partitions: 1,
        },
        Shape {
            key: "1q3p",
            label: "1 queue of 3 partitions",
            queues: vec!["cluster-parted".to_string()],
            partitions: 3,
        },
        Shape {
            key: "3q",
            label: "3 queues, one per primary",
            queues: queues.clone(),
            partitions: 1,
        },
    ];

    let url = cluster.url();
    let mut nodes = Vec::new();
    for port in &primaries {
        nodes.push(raw::connect(&format!("redis://127.0.0.1:{port}")).await?);
    }
    let cctx = Ctx {
        admin: raw::connect(&url).await?,
        raw: raw::connect(&url).await?,
        client: Client::builder(&url)
            .prefix(&ctx.prefix)
            .metrics(&Metrics::new())
            .connect()
            .await?,
        url,
        prefix: ctx.prefix.clone(),
        own_server: true,
        nodes,
        sizes: ctx.sizes,
        exe: ctx.exe.clone(),
        logs: tempfile::Builder::new()
            .prefix("stevedore-bench-cluster-")
            .tempdir()?,
        bullmq: None,
        json: ctx.json,
        drain_runs: Vec::new(),
        worker_runtime: ctx.worker_runtime,
    };
    let procs_list: Vec<usize> = if ctx.drain_runs.iter().any(|(c, _)| *c == CONCURRENCY) {
        PROCESSES
            .into_iter()
            .filter(|p| ctx.drain_runs.contains(&(CONCURRENCY, *p)))
            .collect()
    } else {
        PROCESSES.to_vec()
    };
    let jobs = ctx.sizes.drain;
    let mut cases = Vec::new();
    for (si, shape) in shapes.iter().enumerate() {
        let split = shares(jobs, shape.queues.len());
        for &procs in &procs_list {
            ctx.progress(&format!(
                "cluster: raw, {}, {procs} process(es)",
                shape.label
            ));
            // The raw side of a partitioned queue: a stream per partition, as many jobs in
            // each as stevedore places there in turn.
            let mut raw_names = Vec::new();
            for q in &shape.queues {
                cctx.client.declare_partitions(q, shape.partitions).await?;
                raw_names.extend(cctx.client.partition_names(q).await?);
            }
            cctx.cleanup().await?;
            let raw_split = shares(jobs, raw_names.len());
            let streams: Vec<String> = raw_names.iter().map(|q| cctx.stream(q, "raw")).collect();
            for (stream, n) in streams.iter().zip(&raw_split) {
                raw::create_group(&cctx.raw, stream).await?;
                raw::add_bulk(&cctx.raw, stream, *n, 1000).await?;
            }
            let raw = raw_consumers_of(&cctx, &streams, procs, jobs, async { Ok(0) }).await?;
            cctx.cleanup().await?;

            ctx.progress(&format!(
                "cluster: stevedore, {}, concurrency {CONCURRENCY}, {procs} process(es)",
                shape.label
            ));
            for (queue, n) in shape.queues.iter().zip(&split) {
                if shape.partitions > 1 {
                    // Recorded before the jobs and the workers (a cleanup removes it).
                    cctx.client
                        .declare_partitions(queue, shape.partitions)
                        .await?;
                }
                fill(&cctx, queue, *n).await?;
            }
            let sd = stevedore_queues(&cctx, &shape.queues, CONCURRENCY, procs, jobs, async {
                Ok(0)
            })
            .await?;
            cctx.cleanup().await?;
            cases.push(Case {
                shape: si,
                procs,
                stevedore: sd,
                raw,
            });
        }
    }
    let _: Result<(), _> = cctx.admin.quit().await;
    let _: Result<(), _> = cctx.raw.quit().await;
    for n in &cctx.nodes {
        let _: Result<(), _> = n.quit().await;
    }

    figures(report, &shapes, &cases);
    table(report, &shapes, &cases);
    report.detail(
        "cluster",
        serde_json::json!({
            "primaries": primaries,
            "concurrency": CONCURRENCY,
            "jobs": jobs,
            "queues": placed.iter().map(|(q, slot, port)| serde_json::json!({ "queue": q, "slot": slot, "primary": port })).collect::<Vec<_>>(),
            "cases": cases.iter().map(|c| serde_json::json!({
                "shape": shapes[c.shape].key,
                "queues": shapes[c.shape].queues,
                "processes": c.procs,
                "stevedore": side_json(&c.stevedore),
                "raw": side_json(&c.raw),
            })).collect::<Vec<_>>(),
        }),
    );
    report.notes.push(
        "cluster: stevedore and raw only (no BullMQ); the raw consumers there read each \
         stream with a loop and connection of its own; Redis CPU per primary includes the \
         benchmark's polling (XLEN every 2 ms) and INFO calls."
            .into(),
    );
    Ok(())
}

fn side_json(d: &Drained) -> serde_json::Value {
    serde_json::json!({
        "rate": d.rate,
        "redis_cpu_s_per_primary": d.node_cpu_s,
        "projected_ceiling": ceiling(d),
        "per_job": d.per_job,
    })
}

/// Jobs/s of each case against the raw ceiling, the projected ceilings, and each shape's
/// figures divided by the first shape's.
fn figures(report: &mut Report, shapes: &[Shape], cases: &[Case]) {
    for c in cases {
        let shape = &shapes[c.shape];
        let p = c.procs;
        let procs = format!("{p} worker process{}", if p == 1 { "" } else { "es" });
        report.figure(
            format!("cluster_{}_p{p}", shape.key),
            format!(
                "cluster, {}, concurrency {CONCURRENCY}, {procs}",
                shape.label
            ),
            "jobs/s",
            false,
            [Some(c.stevedore.rate), Some(c.raw.rate), None],
        );
        report.figure(
            format!("cluster_{}_p{p}_ceiling", shape.key),
            format!(
                "cluster, {}, {procs}: projected ceiling (jobs ÷ busiest primary's CPU s)",
                shape.label
            ),
            "jobs/s",
            false,
            [ceiling(&c.stevedore), ceiling(&c.raw), None],
        );
    }
    for c in cases.iter().filter(|c| c.shape > 0) {
        let Some(base) = cases.iter().find(|b| b.shape == 0 && b.procs == c.procs) else {
            continue;
        };
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let shape = &shapes[c.shape];
        let p = c.procs;
        report.figure(
            format!("cluster_{}_vs_{}_p{p}", shape.key, shapes[0].key),
            format!(
                "cluster, {} ÷ {}, {p} process{}: jobs/s",
                shape.label,
                shapes[0].label,
                if p == 1 { "" } else { "es" }
            ),
            "×",
            false,
            [
                div(Some(c.stevedore.rate), Some(base.stevedore.rate)),
                div(Some(c.raw.rate), Some(base.raw.rate)),
                None,
            ],
        );
        report.figure(
            format!("cluster_{}_vs_{}_p{p}_ceiling", shape.key, shapes[0].key),
            format!(
                "cluster, {} ÷ {}, {p} process{}: projected ceiling",
                shape.label,
                shapes[0].label,
                if p == 1 { "" } else { "es" }
            ),
            "×",
            false,
            [
                div(ceiling(&c.stevedore), ceiling(&base.stevedore)),
                div(ceiling(&c.raw), ceiling(&base.raw)),
                None,
            ],
        );
    }
}

/// Redis CPU per primary: seconds, and the share of the drain's wall time.
fn table(report: &mut Report, shapes: &[Shape], cases: &[Case]) {
    let names = ["A", "B", "C"];
    let mut columns = vec!["case".to_string(), "side".into(), "jobs/s".into()];
    for (i, q) in shapes[shapes.len() - 1].queues.iter().enumerate() {
        let name = names.get(i).copied().unwrap_or("?");
        columns.push(format!("primary {name} ({q}): CPU s (busy)"));
    }
    columns.push("busiest primary: CPU µs per job".into());
    columns.push("projected ceiling, jobs/s".into());
    let mut rows = Vec::new();
    for c in cases {
        for (side, d) in [("stevedore", &c.stevedore), ("raw", &c.raw)] {
            let secs = d.jobs as f64 / d.rate.max(f64::MIN_POSITIVE);
            let mut row = vec![
                format!("{}, {} process(es)", shapes[c.shape].label, c.procs),
                side.to_string(),
                num(Some(d.rate)),
            ];
            for cpu in &d.node_cpu_s {
                row.push(format!("{} ({:.0}%)", num(Some(*cpu)), cpu / secs * 100.0));
            }
            let busiest = d.node_cpu_s.iter().copied().fold(0.0, f64::max);
            row.push(num(Some(busiest * 1e6 / d.jobs.max(1) as f64)));
            row.push(num(ceiling(d)));
            rows.push(row);
        }
    }
    report.tables.push(Table {
        title: format!(
            "Cluster: Redis CPU per primary ({PRIMARIES} primaries, no replicas; concurrency \
             {CONCURRENCY}; busy = CPU ÷ the drain's wall time)"
        ),
        columns,
        rows,
    });
}
