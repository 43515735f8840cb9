//! `cancel`, `delete`, `retry`, `purge`, `batch` and `webhooks`: one library call each, and
//! `enqueue --after`.

use serde_json::json;
use stevedore::Client;
use stevedore::control::{CancelOutcome, Purge, RetryNowOutcome};
use stevedore::flow::{Dependency, OnParentFailure};
use stevedore::webhook::{Webhook, WebhookEvent, WebhookScope};

use crate::args::{Global, OnFailureArg, PriorityArg, WebhooksCommand};
use crate::failure::Usage;
use crate::output::{self, Align, Table};

/// What a control call did: `{"outcome", "state"}` with `--json`, else `line`.
fn print_outcome(g: &Global, outcome: &str, state: &str, line: &str) -> anyhow::Result<()> {
    if g.json {
        return output::print_json(&json!({ "outcome": outcome, "state": state }));
    }
    output::print(line)
}

pub(crate) async fn cancel(
    client: &Client,
    g: &Global,
    id: &str,
    by: Option<String>,
    reason: &str,
) -> anyhow::Result<()> {
    let by = by
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "cli".to_string());
    let (outcome, state, line) = match client.cancel(id, &by, reason).await? {
        CancelOutcome::Cancelled { was } => (
            "cancelled",
            was.to_string(),
            format!("{id}: cancelled while {was}; it will not run\n"),
        ),
        CancelOutcome::Requested => (
            "requested",
            "cancelling".to_string(),
            format!("{id}: running; its worker was asked to stop it\n"),
        ),
        CancelOutcome::AlreadyEnded(s) => (
            "already_ended",
            s.to_string(),
            format!("{id}: already {s}; nothing changed\n"),
        ),
        other => (
            "unknown",
            format!("{other:?}"),
            format!("{id}: {other:?}\n"),
        ),
    };
    print_outcome(g, outcome, &state, &line)
}

/// `delete` without `--yes`: refused before connecting.
pub(crate) fn delete_refused(id: &str) -> anyhow::Result<()> {
    Err(Usage(format!("deleting {id} cannot be undone: add --yes")).into())
}

/// `purge` without `--yes`: refused before connecting.
pub(crate) fn purge_refused(queue: &str) -> anyhow::Result<()> {
    Err(Usage(format!(
        "purging {queue} deletes its waiting jobs for good: add --yes"
    ))
    .into())
}

pub(crate) async fn delete(client: &Client, g: &Global, id: &str, yes: bool) -> anyhow::Result<()> {
    if !yes {
        return delete_refused(id);
    }
    let was = client.delete(id).await?;
    if g.json {
        return output::print_json(&json!({ "deleted": true, "was": was.as_str() }));
    }
    output::print(&format!("{id}: deleted (it was {was})\n"))
}

pub(crate) async fn retry(client: &Client, g: &Global, id: &str) -> anyhow::Result<()> {
    let (outcome, state, line) = match client.retry_now(id).await? {
        RetryNowOutcome::Due { was } => (
            "due",
            was.to_string(),
            format!("{id}: due now (it was {was})\n"),
        ),
        RetryNowOutcome::NotScheduled(s) => (
            "not_scheduled",
            s.to_string(),
            format!("{id}: {s}, not waiting for a time; nothing changed\n"),
        ),
        other => (
            "unknown",
            format!("{other:?}"),
            format!("{id}: {other:?}\n"),
        ),
    };
    print_outcome(g, outcome, &state, &line)
}

/// What `purge` selects.
pub(crate) struct PurgeArgs<'a> {
    pub(crate) queue: &'a str,
    pub(crate) priority: Option<PriorityArg>,
    pub(crate) job_type: Option<String>,
    pub(crate) ready_only: bool,
    pub(crate) scheduled_only: bool,
    pub(crate) yes: bool,
}

pub(crate) async fn purge(client: &Client, g: &Global, a: PurgeArgs<'_>) -> anyhow::Result<()> {
    if !a.yes {
        return purge_refused(a.queue);
    }
    let mut what = Purge::all();
    if let Some(p) = a.priority {
        what = what.priority(p.as_str().parse()?);
    }
    if let Some(t) = a.job_type {
        what = what.job_type(t);
    }
    if a.ready_only {
        what = what.ready_only();
    }
    if a.scheduled_only {
        what = what.scheduled_only();
    }
    let purged = client.purge(a.queue, what).await?;
    if g.json {
        return output::print_json(
            &json!({ "queue": a.queue, "ready": purged.ready, "scheduled": purged.scheduled }),
        );
    }
    output::print(&format!(
        "{}: purged {} ready and {} scheduled jobs\n",
        a.queue, purged.ready, purged.scheduled
    ))
}

pub(crate) async fn batch(client: &Client, g: &Global, id: &str) -> anyhow::Result<()> {
    let Some(b) = client.batch(id).await? else {
        return Err(anyhow::anyhow!(
            "no batch {id:?} under prefix {:?} (never created there, or it expired)",
            g.prefix
        ));
    };
    if g.json {
        return output::print_json(&b);
    }
    output::print(&output::fields(&[
        ("id", b.id.clone()),
        ("state", format!("{:?}", b.state).to_lowercase()),
        ("total", b.total.to_string()),
        ("pending", b.pending.to_string()),
        ("succeeded", b.succeeded.to_string()),
        ("failed", b.failed.to_string()),
    ]))
}

fn scope(kind: &str, name: &str) -> anyhow::Result<WebhookScope> {
    match kind {
        "queue" => Ok(WebhookScope::Queue(name.to_string())),
        "type" => Ok(WebhookScope::Type(name.to_string())),
        other => Err(Usage(format!("webhook scope {other:?}: use queue or type")).into()),
    }
}

pub(crate) async fn webhooks(
    client: &Client,
    g: &Global,
    change: Option<WebhooksCommand>,
) -> anyhow::Result<()> {
    match change {
        None => {}
        Some(WebhooksCommand::Set {
            scope: kind,
            name,
            url,
            secret,
            events,
            timeout,
        }) => {
            let scope = scope(&kind, &name)?;
            let mut hook = Webhook::new(url, secret);
            if !events.is_empty() {
                let mut parsed = Vec::new();
                for e in &events {
                    parsed.push(match e.as_str() {
                        "succeeded" => WebhookEvent::Succeeded,
                        "dead" => WebhookEvent::Dead,
                        other => {
                            return Err(Usage(format!(
                                "webhook event {other:?}: use succeeded or dead"
                            ))
                            .into());
                        }
                    });
                }
                hook = hook.events(&parsed);
            }
            if let Some(t) = timeout {
                hook = hook.timeout(humantime::parse_duration(&t)?);
            }
            client.set_webhook(scope, hook).await?;
        }
        Some(WebhooksCommand::Remove { scope: kind, name }) => {
            let removed = client.remove_webhook(scope(&kind, &name)?).await?;
            if !removed {
                return Err(anyhow::anyhow!("no webhook for {kind} {name:?}"));
            }
        }
    }
    let hooks = client.webhooks().await?;
    if g.json {
        return output::print_json(&json!({ "webhooks": hooks }));
    }
    if hooks.is_empty() {
        return output::print("no webhooks\n");
    }
    let mut t = Table::new(&[
        ("SCOPE", Align::Left),
        ("NAME", Align::Left),
        ("EVENTS", Align::Left),
        ("TIMEOUT", Align::Right),
        ("URL", Align::Left),
    ]);
    for h in &hooks {
        let (kind, name) = match &h.scope {
            WebhookScope::Queue(q) => ("queue", q.clone()),
            WebhookScope::Type(t) => ("type", t.clone()),
            other => ("?", format!("{other:?}")),
        };
        t.row(vec![
            kind.to_string(),
            name,
            h.events
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(","),
            format!("{} ms", h.timeout_ms),
            h.url.clone(),
        ]);
    }
    output::print(&t.render())
}

/// `enqueue --after`: the job waits for those ids.
pub(crate) async fn enqueue_after(
    client: &Client,
    g: &Global,
    job: stevedore::RawJob,
    after: &[String],
    on_failure: Option<OnFailureArg>,
) -> anyhow::Result<()> {
    let policy = match on_failure {
        None | Some(OnFailureArg::Cancel) => OnParentFailure::Cancel,
        Some(OnFailureArg::Run) => OnParentFailure::Run,
        Some(OnFailureArg::DeadLetter) => OnParentFailure::DeadLetter,
    };
    let deps: Vec<Dependency> = after
        .iter()
        .map(|id| Dependency::on(id).on_failure(policy))
        .collect();
    let id = client.enqueue_after(job, deps).await?;
    if g.json {
        return output::print_json(&json!({ "id": id, "state": "blocked" }));
    }
    output::print(&format!("{id}\n"))
}
