//! `dlq list | show | replay | purge`: a queue's dead letters, through
//! [`stevedore::DeadLetters`].
//!
//! A queue name the prefix never saw is an error rather than an empty list, so a typo does
//! not read as "nothing is dead". A purge needs an entry id, a filter or `--all`: deleting
//! every dead letter of a queue is never what a forgotten argument should do. `--dry-run`
//! counts what a replay or purge would touch and changes nothing.

use std::time::{Duration, SystemTime};

use serde_json::json;
use stevedore::{Client, DeadJob, DeadLetterFilter, DeadLetterQuery, DeadLetters};

use crate::args::{DlqCommand, FilterArgs, Global};
use crate::failure::Usage;
use crate::output::{self, Align, Table};

/// What one `dlq` command does, settled before connecting.
pub(crate) struct Plan {
    queue: String,
    action: Action,
}

enum Action {
    List {
        filter: DeadLetterFilter,
        limit: usize,
        before: Option<String>,
    },
    Show(String),
    Replay(Target, bool),
    Purge(Target, bool),
}

/// Which dead letters a replay or purge touches.
enum Target {
    One(String),
    Matching(DeadLetterFilter),
    /// Dead longer than this, on Redis' clock (only `--older-than` was given).
    OlderThan(Duration),
}

impl Plan {
    pub(crate) fn from_args(cmd: DlqCommand) -> anyhow::Result<Plan> {
        let (queue, action) = match cmd {
            DlqCommand::List {
                queue,
                filter,
                limit,
                before,
            } => (
                queue,
                Action::List {
                    filter: filter.to_filter(),
                    limit: usize::try_from(limit)?,
                    before,
                },
            ),
            DlqCommand::Show { queue, entry_id } => (queue, Action::Show(entry_id)),
            DlqCommand::Replay {
                queue,
                entry_id,
                filter,
                dry_run,
            } => {
                let target = match entry_id {
                    Some(id) => Target::One(id),
                    None => Target::Matching(filter.to_filter()),
                };
                (queue, Action::Replay(target, dry_run))
            }
            DlqCommand::Purge {
                queue,
                entry_id,
                filter,
                older_than,
                all,
                dry_run,
            } => (
                queue,
                Action::Purge(purge_target(entry_id, filter, older_than, all)?, dry_run),
            ),
        };
        Ok(Plan { queue, action })
    }

    pub(crate) async fn run(self, client: &Client, g: &Global) -> anyhow::Result<()> {
        let dlq = client.dead_letters(&self.queue)?;
        if !client.admin().queue_exists(&self.queue).await? {
            return Err(stevedore::Error::UnknownQueue(self.queue).into());
        }
        match self.action {
            Action::List {
                filter,
                limit,
                before,
            } => list(&dlq, g, filter, limit, before).await,
            Action::Show(entry) => show(&dlq, g, &entry).await,
            Action::Replay(target, dry_run) => change(client, &dlq, g, target, dry_run, true).await,
            Action::Purge(target, dry_run) => change(client, &dlq, g, target, dry_run, false).await,
        }
    }
}

fn purge_target(
    entry_id: Option<String>,
    filter: FilterArgs,
    older_than: Option<Duration>,
    all: bool,
) -> anyhow::Result<Target> {
    if let Some(id) = entry_id {
        return Ok(Target::One(id));
    }
    match older_than {
        Some(age) if filter.is_empty() => Ok(Target::OlderThan(age)),
        Some(age) => {
            let mut f = filter.to_filter();
            f.until = Some(before_now(age)?);
            Ok(Target::Matching(f))
        }
        None if filter.is_empty() && !all => Err(Usage(
            "purge needs an entry id, a filter (--type, --reason, --since, --until, \
             --older-than) or --all"
                .into(),
        )
        .into()),
        None => Ok(Target::Matching(filter.to_filter())),
    }
}

fn before_now(age: Duration) -> anyhow::Result<SystemTime> {
    SystemTime::now()
        .checked_sub(age)
        .ok_or_else(|| Usage(format!("--older-than {age:?} reaches before any time")).into())
}

async fn list(
    dlq: &DeadLetters,
    g: &Global,
    filter: DeadLetterFilter,
    limit: usize,
    before: Option<String>,
) -> anyhow::Result<()> {
    let filtered = !filter.is_empty();
    let page = dlq
        .list(&DeadLetterQuery {
            filter,
            limit,
            before,
        })
        .await?;
    let total = dlq.count().await?;
    if g.json {
        let jobs = &page.jobs;
        return output::print_json(&json!({
            "queue": dlq.queue(),
            "total": total,
            "jobs": jobs,
            "next": page.next,
        }));
    }
    if page.jobs.is_empty() {
        let what = if filtered { "matching " } else { "" };
        return output::print(&format!(
            "no {what}dead letters in {} ({total} in all)\n",
            dlq.queue()
        ));
    }
    let mut t = Table::new(&[
        ("ENTRY", Align::Left),
        ("JOB", Align::Left),
        ("TYPE", Align::Left),
        ("REASON", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("FAILED AT", Align::Left),
        ("ERROR", Align::Left),
    ]);
    for j in &page.jobs {
        t.row(vec![
            j.entry_id.clone(),
            j.job_id.clone().unwrap_or_else(|| "-".into()),
            j.job_type.clone().unwrap_or_else(|| "-".into()),
            j.reason.to_string(),
            attempts(j),
            output::time(j.failed_at),
            output::clip(&j.error, 60),
        ]);
    }
    let mut text = t.render();
    text.push_str(&format!(
        "{} shown, {total} dead in {}\n",
        page.jobs.len(),
        dlq.queue()
    ));
    if let Some(next) = &page.next {
        text.push_str(&format!("older: --before {next}\n"));
    }
    output::print(&text)
}

async fn show(dlq: &DeadLetters, g: &Global, entry: &str) -> anyhow::Result<()> {
    let Some(j) = dlq.get(entry).await? else {
        return Err(missing(dlq, entry));
    };
    if g.json {
        return output::print_json(&j);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let mut pairs = vec![
        ("entry", j.entry_id.clone()),
        ("job", opt(&j.job_id)),
        ("type", opt(&j.job_type)),
        ("queue", j.queue.clone()),
        (
            "priority",
            j.priority.map_or("-", |p| p.as_str()).to_string(),
        ),
        ("reason", j.reason.to_string()),
        ("error", j.error.clone()),
        ("attempts", attempts(&j)),
        (
            "deliveries",
            j.deliveries.map_or("-".into(), |d| d.to_string()),
        ),
        ("failed at", output::time(j.failed_at)),
        ("enqueued at", output::time(j.enqueued_at)),
        ("origin", opt(&j.origin)),
        ("replayed from", opt(&j.replayed_from)),
    ];
    for (k, v) in &j.fields {
        pairs.push((k.as_str(), v.clone()));
    }
    let mut text = output::fields(&pairs);
    match j.payload_json() {
        Some(p) => {
            text.push_str("payload:\n");
            text.push_str(&serde_json::to_string_pretty(&p)?);
            text.push('\n');
        }
        None => text.push_str(&format!(
            "payload: {} bytes that do not decode as MessagePack\n",
            j.payload.len()
        )),
    }
    output::print(&text)
}

/// Replays (`replay`) or purges the target; with `dry_run`, only counts it.
async fn change(
    client: &Client,
    dlq: &DeadLetters,
    g: &Global,
    target: Target,
    dry_run: bool,
    replay: bool,
) -> anyhow::Result<()> {
    let (verb, done) = if replay {
        ("replay", "replayed")
    } else {
        ("purge", "purged")
    };
    let queue = dlq.queue();
    if dry_run {
        let n = match &target {
            Target::One(entry) => match dlq.get(entry).await? {
                Some(_) => 1,
                None => return Err(missing(dlq, entry)),
            },
            Target::Matching(filter) => client.admin().count_dead(queue, filter).await?,
            Target::OlderThan(age) => {
                let filter = DeadLetterFilter {
                    until: Some(before_now(*age)?),
                    ..DeadLetterFilter::default()
                };
                client.admin().count_dead(queue, &filter).await?
            }
        };
        if g.json {
            return output::print_json(&json!({ "dry_run": true, "matching": n }));
        }
        return output::print(&format!(
            "would {verb} {n} dead letter{} of {queue} (dry run: nothing changed)\n",
            plural(n)
        ));
    }
    let (n, id) = match &target {
        Target::One(entry) if replay => match dlq.replay(entry).await? {
            Some(id) => (1, Some(id)),
            None => return Err(missing(dlq, entry)),
        },
        Target::One(entry) => match dlq.purge(entry).await? {
            true => (1, None),
            false => return Err(missing(dlq, entry)),
        },
        Target::Matching(filter) if replay => (dlq.replay_matching(filter).await?, None),
        Target::Matching(filter) => (dlq.purge_matching(filter).await?, None),
        Target::OlderThan(age) => (dlq.purge_older_than(*age).await?, None),
    };
    if g.json {
        let mut out = json!({ done: n });
        if let (Some(id), Some(map)) = (&id, out.as_object_mut()) {
            map.insert("id".into(), json!(id));
        }
        return output::print_json(&out);
    }
    let mut text = format!("{done} {n} dead letter{} of {queue}", plural(n));
    if let Some(id) = id {
        text.push_str(&format!(" (job {id})"));
    }
    text.push('\n');
    output::print(&text)
}

fn missing(dlq: &DeadLetters, entry: &str) -> anyhow::Error {
    anyhow::anyhow!("no dead letter {entry:?} in queue {:?}", dlq.queue())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn attempts(j: &DeadJob) -> String {
    match (j.attempts, j.max_attempts) {
        (Some(a), Some(m)) => format!("{a}/{m}"),
        (Some(a), None) => a.to_string(),
        _ => "-".to_string(),
    }
}
