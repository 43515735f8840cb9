//! What workers do for flows: tell the dependents of ended jobs (each queue's outbox), and
//! finish, or undo, the flows whose client stopped half-way through writing them.

use super::{dependent, report};
use crate::observe::Observers;
use crate::redis::{Depended, Heard, TargetKind};
use crate::{Client, Result};

/// Tells the dependents of every job of `queue` that ended since the last look
/// (`<queue>`'s outbox), then clears what was told. Any worker of the queue may run it at
/// any time: every step is idempotent. Returns how many ended jobs were resolved.
pub(crate) async fn drain_outbox(
    client: &Client,
    observers: &Observers,
    queue: &str,
) -> Result<usize> {
    let store = client.store();
    let mut resolved = 0;
    for (id, value) in store.outbox(queue).await? {
        let (outcome, result) = value.split_once('\n').unwrap_or((value.as_str(), ""));
        for member in store.dependents_of(queue, &id).await? {
            let mut parts = member.splitn(3, ' ');
            let (Some(q), Some(target), Some(policy)) = (parts.next(), parts.next(), parts.next())
            else {
                tracing::warn!(queue, job_id = %id, member, "malformed dependent record; skipped");
                continue;
            };
            let kind = if policy == "batch" {
                TargetKind::Batch
            } else {
                TargetKind::Job
            };
            let heard = Heard {
                job_id: &id,
                outcome,
                result,
                policy,
            };
            let word = store
                .resolve(kind, q, target, Some(heard), client.status_retention_ms())
                .await?;
            report(observers, q, target, &word);
        }
        if store.outbox_done(queue, &id, &value).await? {
            resolved += 1;
        }
    }
    Ok(resolved)
}

/// What a held job hears of a job or batch of its flow that was never written.
fn unwritten(what: &str) -> Heard<'_> {
    Heard {
        job_id: what,
        outcome: "unwritten",
        result: "",
        policy: "cancel",
    }
}

/// Finishes, or undoes, the flows of `queue` whose client stopped half-way (a crash, a
/// lost connection): every job and batch written `grace` ago or more and not marked
/// written to the end (`<queue>`'s `held` set). Each step is one the client takes, and
/// idempotent, so a client still at work is not disturbed:
/// - a job that waits for others registers with each again: one that ended is heard now,
///   one that was never written (or is gone) cancels it;
/// - a job that waits for nothing (a chain's first, a batch's) is released, unless its
///   batch was never written: then it is cancelled;
/// - a batch is sealed.
///
/// Returns how many were finished or undone.
pub(crate) async fn repair_flows(
    client: &Client,
    observers: &Observers,
    queue: &str,
    grace: std::time::Duration,
) -> Result<usize> {
    let store = client.store();
    let retention = client.status_retention_ms();
    let due = store.held_due(queue, grace, 100).await?;
    for (is_batch, id) in &due {
        if *is_batch {
            let word = store
                .resolve(TargetKind::Batch, queue, id, None, retention)
                .await?;
            report(observers, queue, id, &word);
        } else if let Some((state, waits)) = store.held_job(queue, id).await?
            && state == "blocked"
        {
            let mut words = Vec::new();
            if waits.is_empty() {
                // Released, unless the batch it belongs to was never written.
                let mut missing = None;
                for d in store.dependents_of(queue, id).await? {
                    let mut parts = d.splitn(3, ' ');
                    if let (Some(q), Some(b), Some("batch")) =
                        (parts.next(), parts.next(), parts.next())
                        && store.batch_info(q, b).await?.is_empty()
                    {
                        missing = Some(b.to_string());
                    }
                }
                let heard = missing.as_deref().map(unwritten);
                words.push(
                    store
                        .resolve(TargetKind::Job, queue, id, heard, retention)
                        .await?,
                );
            }
            for w in &waits {
                let mut parts = w.splitn(4, ' ');
                let (Some(kind), Some(q), Some(parent), Some(policy)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    tracing::warn!(queue, job_id = %id, record = %w, "malformed record of what a held job waits for; skipped");
                    continue;
                };
                // What it hears of this parent now: nothing (it is registered and will be
                // told), the parent's end, or that the parent was never written. A batch
                // written registered its callbacks as it was written.
                let heard = match kind {
                    "batch" if store.batch_info(q, parent).await?.is_empty() => {
                        Some(("unwritten".to_string(), String::new()))
                    }
                    "batch" => None,
                    _ => match store
                        .depend(q, parent, &dependent(queue, id, policy))
                        .await?
                    {
                        Depended::Registered => None,
                        Depended::Ended(outcome, result) => Some((outcome, result)),
                        Depended::Unknown => Some(("unwritten".to_string(), String::new())),
                    },
                };
                if let Some((outcome, result)) = heard {
                    let heard = Heard {
                        job_id: parent,
                        outcome: &outcome,
                        result: &result,
                        policy,
                    };
                    words.push(
                        store
                            .resolve(TargetKind::Job, queue, id, Some(heard), retention)
                            .await?,
                    );
                }
            }
            for word in &words {
                report(observers, queue, id, word);
            }
            tracing::info!(queue, job_id = %id, outcome = ?words, "finished writing a flow whose client stopped half-way");
        }
        store.unhold(queue, &[(*is_batch, id)]).await?;
    }
    Ok(due.len())
}
