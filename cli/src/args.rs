//! Every subcommand and option, as clap parses them.
//!
//! Values that can be checked without Redis (JSON, priorities, durations, times) are
//! parsed here, so a bad one is a usage error (exit 2) before anything is sent.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use stevedore::DeadReason;

use crate::failure::Usage;

#[derive(Parser, Debug)]
#[command(
    name = "stevedore",
    version,
    about = "Inspect and operate stevedore queues, dead letters and workers",
    long_about = "Inspect and operate stevedore queues, dead letters and workers, and serve \
        the admin HTTP API with the web dashboard.\n\n\
        Output is a table by default, or one JSON document on stdout with --json. A failure \
        prints one `error: ...` line on stderr and exits 1 when something went wrong out \
        there (Redis unreachable, no such queue, job or dead letter), 2 when the command line \
        was wrong.",
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every subcommand takes.
#[derive(Args, Debug)]
pub(crate) struct Global {
    /// Redis to connect to: redis://[user:password@]host:port[/db], a cluster as
    /// redis-cluster://host:port?node=host2:port2&node=host3:port3 (rediss:// and
    /// rediss-cluster:// for TLS)
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true,
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) redis_url: String,
    /// Prefix of every key, as the workers and producers use it.
    #[arg(
        long,
        env = "STEVEDORE_PREFIX",
        default_value = "stevedore",
        hide_env_values = true,
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) prefix: String,
    /// Print one JSON document on stdout instead of a table.
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) json: bool,
    /// PEM certificates to trust besides the system's roots, for a rediss:// URL.
    #[arg(
        long,
        env = "STEVEDORE_TLS_CA_FILE",
        value_name = "PATH",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) tls_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate for a server that asks for one (with --tls-key).
    #[arg(
        long,
        env = "STEVEDORE_TLS_CERT",
        value_name = "PATH",
        global = true,
        requires = "tls_key",
        help_heading = "Global options"
    )]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "STEVEDORE_TLS_KEY",
        value_name = "PATH",
        global = true,
        requires = "tls_cert",
        help_heading = "Global options"
    )]
    pub(crate) tls_key: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Totals over every queue and live worker.
    Stats,
    /// Every known queue: counts by state, pause state, live workers, lifetime totals.
    Queues,
    /// The live workers (a heartbeat in the last 15 s).
    Workers,
    /// Enqueue a job of any type (or --count of them), its payload given as JSON.
    Enqueue(EnqueueArgs),
    /// A job's status by id.
    Job {
        /// The job id enqueue printed.
        id: String,
    },
    /// The dead letters of a queue: list, show, replay, purge.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Stop workers fetching from a queue (running jobs finish; enqueueing still works).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Let workers fetch from a paused queue again.
    Resume {
        /// The queue.
        queue: String,
    },
    /// A queue's partitions; with a count, change it (only while the queue holds no job:
    /// drain it, change, restart its workers).
    Partitions {
        /// The queue.
        queue: String,
        /// The new number of partitions, 1 to 128 (1: a plain queue).
        count: Option<u16>,
    },
    /// Rate and concurrency limits: list them (tokens left and jobs running on each
    /// queue), set or remove one. Workers follow within about a second.
    Limits {
        #[command(subcommand)]
        change: Option<LimitsCommand>,
    },
    /// Cancel a job: a waiting one never runs; a running one is stopped by its worker
    /// within about a second. Nothing changes for a job that ended.
    Cancel {
        /// The job id.
        id: String,
        /// Who cancels, as the job's status will say (default: $USER, else `cli`).
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
        /// Why, as the job's status will say.
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Delete a job in any state: its entry, schedule, status and dead letter. A running
    /// job is also asked to stop.
    Delete {
        /// The job id.
        id: String,
        /// Really delete (required).
        #[arg(long)]
        yes: bool,
    },
    /// Make a scheduled or retrying job due now (its attempt count unchanged).
    Retry {
        /// The job id.
        id: String,
    },
    /// Delete a queue's waiting jobs: ready and scheduled, or those the options select.
    /// Running jobs are never touched.
    Purge {
        /// The queue (every partition of a partitioned queue).
        queue: String,
        /// Only jobs of this priority.
        #[arg(long, value_enum)]
        priority: Option<PriorityArg>,
        /// Only jobs of this type.
        #[arg(long = "type", value_name = "TYPE")]
        job_type: Option<String>,
        /// Only ready jobs (in the streams), not scheduled ones.
        #[arg(long, conflicts_with = "scheduled_only")]
        ready_only: bool,
        /// Only scheduled jobs (delayed or retrying), not ready ones.
        #[arg(long)]
        scheduled_only: bool,
        /// Really purge (required).
        #[arg(long)]
        yes: bool,
    },
    /// A batch's counts by id (what enqueue_batch returned).
    Batch {
        /// The batch id (`<queue>:b-<uuid>`).
        id: String,
    },
    /// Webhooks: list them (secrets left out), set or remove one.
    Webhooks {
        #[command(subcommand)]
        change: Option<WebhooksCommand>,
    },
    /// Serve the admin HTTP API (/api/v1) and the web dashboard (/).
    #[command(long_about = SERVE_ABOUT)]
    Serve(ServeArgs),
}

/// A change to the webhooks.
#[derive(Subcommand, Debug)]
pub(crate) enum WebhooksCommand {
    /// Set (or replace) the hook of a queue or job type.
    Set {
        /// `queue` or `type`.
        scope: String,
        /// The queue or job type.
        name: String,
        /// Where to POST (http or https).
        #[arg(long)]
        url: String,
        /// Signs each delivery (HMAC-SHA256); read from STEVEDORE_WEBHOOK_SECRET when not
        /// given, so it stays out of the shell history.
        #[arg(long, env = "STEVEDORE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// When it fires: succeeded, dead, or both (comma-separated; default both).
        #[arg(long, value_delimiter = ',', value_name = "EVENTS")]
        events: Vec<String>,
        /// How long one request may take, e.g. 5s.
        #[arg(long, value_name = "DURATION", value_parser = duration_text)]
        timeout: Option<String>,
    },
    /// Remove the hook of a queue or job type.
    Remove {
        /// `queue` or `type`.
        scope: String,
        /// The queue or job type.
        name: String,
    },
}

/// A change to the limits of one scope.
#[derive(Subcommand, Debug)]
pub(crate) enum LimitsCommand {
    /// Set a scope's rate limit, concurrency limit and/or a queue's capacity (the others
    /// stay as they are).
    Set {
        /// What the limit counts: `queue`, `type` (a job type) or `key` (each key of a job
        /// type apart).
        scope: String,
        /// The queue or job type.
        name: String,
        /// At most this many jobs start per period: `50/s`, `100/1m`, `10/500ms burst 1`.
        #[arg(long, value_name = "RATE")]
        rate: Option<String>,
        /// At most this many jobs run at once.
        #[arg(long, value_name = "N")]
        max_running: Option<u32>,
        /// A queue holds at most this many jobs waiting: enqueues beyond it are refused
        /// (exit 75) or wait for room (`enqueue --wait-for-room`).
        #[arg(long, value_name = "N")]
        capacity: Option<u64>,
    },
    /// Remove a scope's limits: all of them, or the one named.
    Remove {
        /// `queue`, `type` or `key`.
        scope: String,
        /// The queue or job type.
        name: String,
        /// Only the rate limit.
        #[arg(long, conflicts_with_all = ["max_running", "capacity"])]
        rate: bool,
        /// Only the concurrency limit.
        #[arg(long, conflicts_with = "capacity")]
        max_running: bool,
        /// Only a queue's capacity.
        #[arg(long)]
        capacity: bool,
    },
}

const SERVE_ABOUT: &str = "Serve the admin HTTP API (/api/v1), the web dashboard (/), and \
    /metrics, /healthz, /readyz, until Ctrl-C or SIGTERM.\n\n\
    Reads are open to whoever reaches the address; requests that change data (enqueue, \
    pause, resume, replay, purge) need `Authorization: Bearer <token>` when a token is set. \
    So the server binds 127.0.0.1:8080 by default, and refuses to bind any address other \
    than a loopback one without --token (or STEVEDORE_TOKEN): anyone on the network could \
    otherwise replay or purge dead letters. --allow-no-token binds anyway, for a network you \
    trust or a proxy that authenticates, and logs a warning at every start.";

#[derive(Args, Debug)]
pub(crate) struct EnqueueArgs {
    /// The job type (the handler's name), e.g. email.send.
    #[arg(value_name = "TYPE")]
    pub(crate) job_type: String,
    /// The queue.
    #[arg(long, short, default_value = "default")]
    pub(crate) queue: String,
    /// The payload as JSON; the worker receives it as the MessagePack its handler decodes.
    #[arg(long, short, value_name = "JSON", default_value = "{}", value_parser = json)]
    pub(crate) payload: serde_json::Value,
    /// Read the JSON payload from this file instead (`-` for standard input), for payloads
    /// too large for a command line.
    #[arg(long, value_name = "PATH", conflicts_with = "payload")]
    pub(crate) payload_file: Option<std::path::PathBuf>,
    /// The priority stream it goes to.
    #[arg(long, value_enum)]
    pub(crate) priority: Option<PriorityArg>,
    /// Run no sooner than this long from now, e.g. 30s, 5m, 1h30m.
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub(crate) delay: Option<String>,
    /// Attempts before the job is dead-lettered (default: the handler's setting, 5 when it
    /// has none).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_attempts: Option<u32>,
    /// A unique key: another job with this key on the queue is not enqueued while the key
    /// lives, and its id is the first job's.
    #[arg(long, value_name = "KEY", conflicts_with = "count")]
    pub(crate) unique: Option<String>,
    /// How long the unique key holds.
    #[arg(long, value_name = "DURATION", requires = "unique", value_parser = duration_text)]
    pub(crate) unique_ttl: Option<String>,
    /// Place the job by this key in a partitioned queue: every job with the key goes to the
    /// same partition, in order.
    #[arg(long, value_name = "KEY")]
    pub(crate) partition_key: Option<String>,
    /// Into a full bounded queue, wait up to this long for room (per job) instead of
    /// exiting 75 at once, e.g. 30s.
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub(crate) wait_for_room: Option<String>,
    /// How many jobs to enqueue (a thousand per round trip).
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: u64,
    /// A job id this job waits for (repeat for several): it runs once they all ended.
    #[arg(long, value_name = "ID", conflicts_with_all = ["count", "unique", "wait_for_room"])]
    pub(crate) after: Vec<String>,
    /// With --after: what the job does if one of them does not succeed.
    #[arg(long, value_enum, requires = "after")]
    pub(crate) on_failure: Option<OnFailureArg>,
}

/// `--on-failure`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum OnFailureArg {
    /// It is cancelled too.
    Cancel,
    /// It runs anyway.
    Run,
    /// It is dead-lettered (reason parent_failed).
    DeadLetter,
}

impl EnqueueArgs {
    /// `--wait-for-room`, read.
    pub(crate) fn room_wait(&self) -> anyhow::Result<Option<std::time::Duration>> {
        Ok(self
            .wait_for_room
            .as_deref()
            .map(humantime::parse_duration)
            .transpose()?)
    }

    /// The job, checked and encoded as the admin layer does a JSON job, so nothing
    /// connects for a job that is refused.
    pub(crate) fn job(&self) -> anyhow::Result<stevedore::RawJob> {
        let payload = match &self.payload_file {
            Some(path) => read_payload(path)?,
            None => self.payload.clone(),
        };
        let mut job = stevedore::admin::JsonJob::new(&self.job_type, &self.queue, payload);
        job.priority = self.priority.map(|p| p.as_str().to_string());
        job.delay.clone_from(&self.delay);
        job.max_attempts = self.max_attempts;
        job.unique.clone_from(&self.unique);
        job.unique_ttl.clone_from(&self.unique_ttl);
        job.partition_key.clone_from(&self.partition_key);
        Ok(job.into_raw()?)
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum PriorityArg {
    High,
    Normal,
    Low,
}

impl PriorityArg {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PriorityArg::High => "high",
            PriorityArg::Normal => "normal",
            PriorityArg::Low => "low",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum DlqCommand {
    /// List dead letters, newest first, a page at a time.
    List {
        /// The queue.
        queue: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Most entries to show (at most 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Show entries older than this entry id (the cursor the previous page printed).
        #[arg(long, value_name = "CURSOR")]
        before: Option<String>,
    },
    /// Show one dead letter with its payload.
    Show {
        /// The queue.
        queue: String,
        /// The dead letter's entry id (from dlq list).
        entry_id: String,
    },
    /// Put dead jobs back on their queue: one by entry id, or every one matching the
    /// filters (all without filters). A job keeps its id and starts over at attempt 1.
    Replay {
        /// The queue.
        queue: String,
        /// Replay only this dead letter.
        #[arg(conflicts_with = "FilterArgs")]
        entry_id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Only say how many would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters: one by entry id, those matching the filters, or --all.
    Purge {
        /// The queue.
        queue: String,
        /// Delete only this dead letter.
        #[arg(conflicts_with_all = ["FilterArgs", "older_than", "all"])]
        entry_id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Only those that died more than this long ago, e.g. 7d.
        #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "until")]
        older_than: Option<Duration>,
        /// Every dead letter of the queue (needed when no entry id or filter is given).
        #[arg(long, conflicts_with_all = ["FilterArgs", "older_than"])]
        all: bool,
        /// Only say how many would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters a command applies to; every filter given must match.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct FilterArgs {
    /// Only jobs of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) job_type: Option<String>,
    /// Only jobs that died for this reason.
    #[arg(long, value_enum)]
    pub(crate) reason: Option<ReasonArg>,
    /// Only jobs that died at or after this time: RFC 3339 (2026-05-01T12:00:00Z) or a
    /// duration ago (1h).
    #[arg(long, value_name = "WHEN", value_parser = when)]
    pub(crate) since: Option<SystemTime>,
    /// Only jobs that died before this time: RFC 3339 or a duration ago.
    #[arg(long, value_name = "WHEN", value_parser = when)]
    pub(crate) until: Option<SystemTime>,
}

impl FilterArgs {
    pub(crate) fn is_empty(&self) -> bool {
        self.job_type.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    pub(crate) fn to_filter(&self) -> stevedore::DeadLetterFilter {
        stevedore::DeadLetterFilter {
            job_type: self.job_type.clone(),
            reason: self.reason.map(ReasonArg::reason),
            since: self.since,
            until: self.until,
        }
    }
}

/// The reasons a job is dead-lettered for.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum ReasonArg {
    Failed,
    Timeout,
    Poison,
    #[value(name = "unknown_type")]
    UnknownType,
    #[value(name = "bad_entry")]
    BadEntry,
}

impl ReasonArg {
    fn reason(self) -> DeadReason {
        match self {
            ReasonArg::Failed => DeadReason::Failed,
            ReasonArg::Timeout => DeadReason::Timeout,
            ReasonArg::Poison => DeadReason::Poison,
            ReasonArg::UnknownType => DeadReason::UnknownType,
            ReasonArg::BadEntry => DeadReason::BadEntry,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) addr: SocketAddr,
    /// Require `Authorization: Bearer <TOKEN>` on every API call, reads included.
    #[arg(long, env = "STEVEDORE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Also accept this token for reads only (dashboards and scripts that must not change
    /// anything).
    #[arg(
        long,
        env = "STEVEDORE_READ_TOKEN",
        hide_env_values = true,
        requires = "token"
    )]
    pub(crate) read_token: Option<String>,
    /// Bind a non-loopback address without a token (anyone who reaches it can enqueue,
    /// pause, replay and purge).
    #[arg(long)]
    pub(crate) allow_no_token: bool,
    /// A host name the server answers for besides IP addresses and localhost (repeat it for
    /// several), e.g. the name a proxy forwards; other Host headers get 403.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub(crate) allowed_hosts: Vec<String>,
}

/// Largest payload file read: JSON text is bigger than the MessagePack it becomes, which
/// the payload limit (1 MiB by default) then checks.
const MAX_PAYLOAD_FILE: u64 = 64 * 1024 * 1024;

/// Reads a JSON payload from `path`, or from standard input for `-`.
fn read_payload(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    use std::io::Read;
    let shown = path.display();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(path).map_err(|e| Usage(format!("--payload-file {shown}: {e}")))?,
        )
    };
    let mut text = Vec::new();
    reader
        .take(MAX_PAYLOAD_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| Usage(format!("--payload-file {shown}: {e}")))?;
    if text.len() as u64 > MAX_PAYLOAD_FILE {
        return Err(Usage(format!(
            "--payload-file {shown}: larger than {} MiB",
            MAX_PAYLOAD_FILE / 1024 / 1024
        ))
        .into());
    }
    serde_json::from_slice(&text)
        .map_err(|e| Usage(format!("--payload-file {shown}: not JSON: {e}")).into())
}

fn json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 30s, 5m, 1h30m, 7d)"))
}

/// A duration checked here and handed on as written (the admin layer's JSON job takes
/// durations as text).
fn duration_text(s: &str) -> Result<String, String> {
    duration(s).map(|_| s.to_string())
}

/// An RFC 3339 time, or a duration before now (this machine's clock).
fn when(s: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{s} ago is before any time this machine can represent"));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(SystemTime::from)
        .map_err(|_| {
            "use an RFC 3339 time (2026-05-01T12:00:00Z) or a duration ago (1h, 30m, 7d)"
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let t = when("2026-05-01T12:00:00+02:00").expect("rfc3339");
        assert_eq!(
            t,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_777_629_600)
        );
        let hour_ago = when("1h").expect("duration");
        let age = SystemTime::now()
            .duration_since(hour_ago)
            .expect("in the past");
        assert!(age >= Duration::from_secs(3600) && age < Duration::from_secs(3660));
        assert!(when("yesterday").is_err());
    }
}
