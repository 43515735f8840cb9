//! `enqueue`: one job through the admin layer, checked as `POST /api/v1/jobs` checks JSON jobs,
//! or many with `Client::enqueue_bulk`, a thousand per round trip.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::time::Duration;
use stevedore::{Client, RawJob};

use crate::args::Global;
use crate::output;

/// Jobs per `enqueue_bulk` call: one round trip each, and one step of the progress bar.
const BATCH: u64 = 1000;

/// Enqueues `count` copies of `raw`, a job of `job_type` on `queue`. A job its bounded
/// queue has no room for waits up to `wait` for room when given, else ends the command
/// with [`stevedore::Error::QueueFull`] (exit 75), saying how many went in.
pub(crate) async fn run(
    client: &Client,
    g: &Global,
    raw: RawJob,
    (job_type, queue): (&str, &str),
    count: u64,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    if count == 1 {
        return one(client, g, raw, wait).await;
    }
    let bar = progress(count);
    let (mut first, mut last) = (None, None);
    let mut sent = 0u64;
    let before = |sent: u64| {
        if sent == 0 {
            "nothing was enqueued".to_string()
        } else {
            format!("{sent} of {count} jobs were enqueued before this failure")
        }
    };
    while sent < count {
        let n = BATCH.min(count - sent);
        let batch = std::iter::repeat_n(raw.clone(), usize::try_from(n)?);
        let outcomes = match client.enqueue_bulk_partial(batch).await {
            Ok(o) => o,
            Err(e) => {
                bar.abandon();
                return Err(anyhow::Error::new(e).context(before(sent)));
            }
        };
        for outcome in outcomes {
            let id = match (outcome, wait) {
                (Ok(id), _) => id,
                (Err(stevedore::Error::QueueFull { .. }), Some(wait)) => {
                    match client.enqueue_wait(raw.clone(), wait).await {
                        Ok(id) => id,
                        Err(e) => {
                            bar.abandon();
                            return Err(anyhow::Error::new(e).context(before(sent)));
                        }
                    }
                }
                (Err(e), _) => {
                    bar.abandon();
                    return Err(anyhow::Error::new(e).context(before(sent)));
                }
            };
            if first.is_none() {
                first = Some(id.clone());
            }
            last = Some(id);
            sent += 1;
        }
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
async fn one(
    client: &Client,
    g: &Global,
    job: RawJob,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let admin = client.admin();
    let done = match wait {
        None => admin.enqueue_raw(job).await?,
        Some(wait) => admin.enqueue_raw_waiting(job, wait).await?,
    };
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
