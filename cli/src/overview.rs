//! `stats`, `queues`, `workers`, `job`, `pause` and `resume`: one admin call each.

use serde_json::json;
use stevedore::Client;

use crate::args::Global;
use crate::output::{self, Align, Table};

pub(crate) async fn stats(client: &Client, g: &Global) -> anyhow::Result<()> {
    let o = client.admin().stats().await?;
    if g.json {
        return output::print_json(&o);
    }
    let t = &o.totals;
    output::print(&output::fields(&[
        ("queues", format!("{} ({} paused)", o.queues, o.paused)),
        (
            "workers",
            format!(
                "{} (running {} of {} slots)",
                o.workers, o.in_flight, o.concurrency
            ),
        ),
        ("ready", o.ready.to_string()),
        ("pending", o.pending.to_string()),
        ("scheduled", o.scheduled.to_string()),
        ("dead", o.dead.to_string()),
        ("succeeded (total)", t.succeeded.to_string()),
        ("failed (total)", t.failed.to_string()),
        ("retried (total)", t.retried.to_string()),
        ("dead-lettered (total)", t.dead.to_string()),
        ("reclaimed (total)", t.reclaimed.to_string()),
        ("cancelled (total)", t.cancelled.to_string()),
        ("deleted (total)", t.deleted.to_string()),
        ("purged (total)", t.purged.to_string()),
    ]))
}

pub(crate) async fn queues(client: &Client, g: &Global) -> anyhow::Result<()> {
    let queues = client.admin().queues().await?;
    if g.json {
        return output::print_json(&queues);
    }
    if queues.is_empty() {
        return output::print(&format!("no queues under prefix {:?}\n", g.prefix));
    }
    let mut t = Table::new(&[
        ("QUEUE", Align::Left),
        ("STATE", Align::Left),
        ("READY", Align::Right),
        ("PENDING", Align::Right),
        ("SCHEDULED", Align::Right),
        ("DEAD", Align::Right),
        ("WORKERS", Align::Right),
        ("OLDEST WAITING", Align::Right),
        ("SUCCEEDED", Align::Right),
        ("FAILED", Align::Right),
    ]);
    for q in &queues {
        let s = &q.stats;
        t.row(vec![
            if s.partitions > 1 {
                format!("{} ({} partitions)", q.name, s.partitions)
            } else {
                q.name.clone()
            },
            if q.paused { "paused" } else { "active" }.to_string(),
            s.ready.total().to_string(),
            s.pending.total().to_string(),
            s.scheduled.to_string(),
            s.dead.to_string(),
            q.workers.to_string(),
            if s.oldest_waiting.is_zero() {
                "-".to_string()
            } else {
                output::age(s.oldest_waiting)
            },
            q.totals.succeeded.to_string(),
            q.totals.failed.to_string(),
        ]);
    }
    output::print(&t.render())
}

pub(crate) async fn workers(client: &Client, g: &Global) -> anyhow::Result<()> {
    let workers = client.admin().workers().await?;
    if g.json {
        return output::print_json(&workers);
    }
    if workers.is_empty() {
        return output::print(&format!("no live workers under prefix {:?}\n", g.prefix));
    }
    let mut t = Table::new(&[
        ("WORKER", Align::Left),
        ("QUEUES", Align::Left),
        ("BUSY", Align::Right),
        ("STARTED", Align::Right),
        ("HEARTBEAT", Align::Right),
        ("PID", Align::Right),
    ]);
    for w in &workers {
        t.row(vec![
            w.id.clone(),
            w.queues.join(","),
            format!("{}/{}", w.in_flight, w.concurrency),
            output::ago_ms(w.started_at_ms),
            output::ago_ms(w.last_heartbeat_ms),
            w.pid.to_string(),
        ]);
    }
    output::print(&t.render())
}

pub(crate) async fn job(client: &Client, g: &Global, id: &str) -> anyhow::Result<()> {
    let Some(s) = client.status(id).await? else {
        return Err(anyhow::anyhow!(
            "no job {id:?} under prefix {:?} (never enqueued there, or its status expired)",
            g.prefix
        ));
    };
    if g.json {
        return output::print_json(&s);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    output::print(&output::fields(&[
        ("id", s.id.clone()),
        ("state", s.state.to_string()),
        ("type", s.job_type.clone()),
        ("queue", s.queue.clone()),
        (
            "attempts",
            if s.max_attempts == 0 {
                format!("{} of the handler's limit", s.attempts)
            } else {
                format!("{} of {}", s.attempts, s.max_attempts)
            },
        ),
        ("enqueued at", output::time(s.enqueued_at)),
        ("started at", output::time(s.started_at)),
        ("finished at", output::time(s.finished_at)),
        ("next at", output::time(s.next_at)),
        ("error", opt(&s.error)),
        ("reason", opt(&s.reason)),
        ("cancelled by", opt(&s.cancelled_by)),
        ("result", opt(&s.result)),
    ]))
}

/// Pauses (or resumes) `queue`; fails with the library's unknown-queue error for a queue
/// it never saw.
pub(crate) async fn partitions(
    client: &Client,
    g: &Global,
    queue: &str,
    count: Option<u16>,
) -> anyhow::Result<()> {
    let before = client.partitions(queue).await?;
    if let Some(n) = count {
        client.set_partitions(queue, n).await?;
    }
    let names = client.partition_names(queue).await?;
    let changed = count.is_some_and(|n| n != before);
    if g.json {
        return output::print_json(&json!({
            "queue": queue,
            "partitions": names.len(),
            "names": names,
            "changed": changed,
        }));
    }
    let was = if changed {
        format!(" (was {before}; restart its workers)")
    } else {
        String::new()
    };
    output::print(&format!(
        "{queue}: {} partition{}{was}: {}\n",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(" ")
    ))
}

pub(crate) async fn pause(
    client: &Client,
    g: &Global,
    queue: &str,
    paused: bool,
) -> anyhow::Result<()> {
    let admin = client.admin();
    let changed = if paused {
        admin.pause(queue).await?
    } else {
        admin.resume(queue).await?
    };
    if g.json {
        return output::print_json(
            &json!({ "queue": queue, "paused": paused, "changed": changed }),
        );
    }
    let state = if paused { "paused" } else { "resumed" };
    output::print(&if changed {
        format!("{queue}: {state}\n")
    } else {
        format!("{queue}: already {state}\n")
    })
}
