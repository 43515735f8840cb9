//! `enqueue`: one job through the admin layer, checked as `POST /api/v1/jobs` checks JSON jobs,
//! or many with `Client::enqueue_bulk`, a thousand per round trip.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use stevedore::{Client, RawJob};

use crate::args::Global;
use crate::output;

/// Jobs per `enqueue_bulk` call: one round trip each, and one step of the progress bar.
const BATCH: u64 = 1000;

/// Enqueues `count` copies of `raw`, a job of `job_type` on `queue`.
pub(crate) async fn run(
    client: &Client,
    g: &Global,
    raw: RawJob,
    (job_type, queue): (&str, &str),
    count: u64,
) -> anyhow::Result<()> {
    if count == 1 {
        return one(client, g, raw).await;
    }
    let bar = progress(count);
    let (mut first, mut last) = (None, None);
    let mut sent = 0u64;
    while sent < count {
        let n = BATCH.min(count - sent);
        let batch = std::iter::repeat_n(raw.clone(), usize::try_from(n)?);
        let ids = client.enqueue_bulk(batch).await.with_context(|| {
            if sent == 0 {
                "nothing was enqueued".to_string()
            } else {
                format!("{sent} of {count} jobs were enqueued before this failure")
            }
        });
        let ids = match ids {
            Ok(ids) => ids,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        if first.is_none() {
            first = ids.first().cloned();
        }
        last = ids.last().cloned().or(last);
        sent += n;
        bar.set_position(sent);
    }
    bar.finish_and_clear();
    let (first, last) = (
        first.map(|id| id.to_string()).unwrap_or_default(),
        last.map(|id| id.to_string()).unwrap_or_default(),
    );
    if g.json {
        return output::print_json(&json!({
            "count": count,
            "type": job_type,
            "queue": queue,
            "first": first,
            "last": last,
        }));
    }
    output::print(&format!(
        "enqueued {count} {job_type} jobs on {queue}: first {first}, last {last}\n"
    ))
}

/// One job; for a duplicate of a unique job, the id of the job already there.
async fn one(client: &Client, g: &Global, job: RawJob) -> anyhow::Result<()> {
    let done = client.admin().enqueue_raw(job).await?;
    if g.json {
        return output::print_json(&json!({ "id": done.id, "duplicate": done.duplicate }));
    }
    if done.duplicate {
        eprintln!("note: a job with this unique key exists; nothing was enqueued (its id follows)");
    }
    output::print(&format!("{}\n", done.id))
}

/// A progress bar on stderr when a person watches it and there is more than one batch.
fn progress(count: u64) -> ProgressBar {
    if count <= BATCH || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(count);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} jobs, {eta} left")
    {
        bar.set_style(style);
    }
    bar
}
