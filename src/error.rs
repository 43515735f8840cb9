//! The one error type of the library.
//!
//! Every fallible call returns [`Error`]; each variant says what went wrong and what the
//! caller can do about it. A handler's own failure is not an `Error`: it is a
//! [`JobError`](crate::JobError), which tells the worker whether to retry.

use std::time::Duration;

/// The result type of every fallible library call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a stevedore call can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached, or the connection broke while a command was in flight.
    /// The client reconnects on its own: retry the call later, and check that the server
    /// runs and the URL is right if this persists.
    #[error("redis connection failed: {0}")]
    Connection(String),

    /// Redis did not answer within the command timeout
    /// ([`ClientBuilder::command_timeout`](crate::ClientBuilder::command_timeout)): it is
    /// paused, overloaded, or cut off without the connection noticing. The command may or
    /// may not have run; retry later (every stevedore write is safe to repeat, except that an
    /// enqueue without a unique key may then enqueue the job twice).
    #[error("redis did not answer in time: {0}")]
    Timeout(String),

    /// Redis answered a command with an error (wrong key type, out of memory, a script
    /// error...). Retrying rarely helps: the message says what Redis refused.
    #[error("redis refused a command: {0}")]
    Redis(String),

    /// The Redis URL could not be parsed. The password, if any, is not shown.
    #[error("invalid redis url {url}: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// A builder was given a value it cannot work with (zero concurrency, no handler...).
    /// Fix the configuration; the message names the setting.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A queue name, job type or key prefix does not match `^[A-Za-z0-9_.-]{1,64}$`
    /// (prefixes may also contain `:`; a name of dots only, such as `.` or `..`, is
    /// refused), or a unique or partition key is empty, longer than 256 bytes or holds a
    /// control character. Pick a name that follows the rule the message quotes.
    #[error("invalid {kind} {}: {}", excerpt(name), name_rule(kind))]
    InvalidName {
        /// What the name was for: `queue`, `job type`, `prefix`, `unique key` or
        /// `partition key`.
        kind: &'static str,
        /// The name as given, cut to its first 64 characters when longer.
        name: String,
    },

    /// The encoded payload is larger than the client's payload limit. Store large data
    /// elsewhere (object storage, a database) and enqueue a reference to it, or raise the
    /// limit with [`ClientBuilder::payload_limit`](crate::ClientBuilder::payload_limit).
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The encoded size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// The payload could not be encoded as MessagePack (a map with non-string keys in a
    /// format that refuses them, a `Serialize` impl that failed...). Fix the payload type.
    #[error("payload could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),

    /// Data read from Redis could not be decoded: an entry or a status that was not
    /// written by stevedore, or by an incompatible version.
    #[error("data in redis could not be decoded: {0}")]
    Decode(String),

    /// A value given by a user (a JSON job, a duration, a priority, a filter) was refused;
    /// the message names the field and what it accepts. Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// No queue of this name is known under this prefix: no job was ever enqueued to it
    /// and no worker consumed it. Check the name and the prefix.
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),

    /// No job of this id is known: never enqueued under this prefix, ended longer ago than
    /// its status retention, deleted, or (for an id that is not an entry's, such as a
    /// delayed job's) enqueued with status off. Check the id; nothing was changed.
    #[error("unknown job {0:?}")]
    UnknownJob(String),

    /// A queue's partition count cannot change while it holds jobs (waiting, running,
    /// scheduled or dead): they would be left in partitions no worker reads. Drain it first:
    /// stop its producers, let its workers finish, replay or purge its dead letters, then
    /// retry (README, "Partitioned queues").
    #[error("queue {queue:?} still holds {jobs} jobs: drain it before changing its partitions")]
    QueueNotEmpty {
        /// The queue.
        queue: String,
        /// The jobs found in it, over its partitions.
        jobs: u64,
    },

    /// The bounded queue holds as many jobs waiting as its capacity (README, "Bounded
    /// queues"), so the job was refused and nothing was written. Try again later (over
    /// HTTP: after `Retry-After`), enqueue with a wait for room
    /// ([`Client::enqueue_wait`](crate::Client::enqueue_wait)), add workers, or raise the
    /// capacity ([`Client::set_queue_capacity`](crate::Client::set_queue_capacity)).
    #[error(
        "queue {queue:?} is full ({capacity} jobs waiting): retry later, wait for room, or raise its capacity"
    )]
    QueueFull {
        /// The queue, as the job named it.
        queue: String,
        /// Its capacity (of a partitioned queue, the share of the partition the job went
        /// to).
        capacity: u64,
    },

    /// The worker did not finish its in-flight jobs within the drain deadline; the
    /// unfinished ones were left unacknowledged and will run again.
    #[error("shutdown deadline of {0:?} passed with jobs still running")]
    DrainTimeout(Duration),
}

impl Error {
    /// True when the call may simply be retried later: Redis was unreachable
    /// ([`Error::Connection`]) or did not answer in time ([`Error::Timeout`]).
    pub fn is_connection(&self) -> bool {
        matches!(self, Error::Connection(_) | Error::Timeout(_))
    }

    /// True for a failure of Redis itself (unreachable, too slow, or refusing a command),
    /// as opposed to bad input or configuration.
    pub fn is_redis(&self) -> bool {
        matches!(
            self,
            Error::Connection(_) | Error::Timeout(_) | Error::Redis(_)
        )
    }
}

/// The rule a name of this kind must follow, as error messages quote it.
fn name_rule(kind: &str) -> &'static str {
    match kind {
        "unique key" | "partition key" => "use 1 to 256 bytes without control characters",
        "prefix" => "use 1 to 64 characters from A-Z a-z 0-9 _ . - :, not only dots",
        _ => "use 1 to 64 characters from A-Z a-z 0-9 _ . -, not only dots",
    }
}

/// Longest excerpt of a user's input that an error message or a log line quotes.
pub(crate) const EXCERPT_CHARS: usize = 64;

/// `text` as an error message or a log line may quote it: in quotes with control characters
/// escaped (no forged log lines), and cut to its first [`EXCERPT_CHARS`] characters with its
/// full length said, so a 10 KB input is not echoed back whole.
pub(crate) fn excerpt(text: &str) -> String {
    let mut chars = text.char_indices();
    match chars.nth(EXCERPT_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes in all)", &text[..end], text.len()),
    }
}

/// `text` cut to its first [`EXCERPT_CHARS`] characters (unquoted), to keep in an error.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.to_string(),
        Some((end, _)) => text[..end].to_string(),
    }
}

/// `text` on one line, at most `max` bytes: control characters (line breaks among them)
/// written as escapes, so text that came from a stream entry cannot forge a log line.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            out.push_str("...");
            break;
        }
    }
    out
}

/// Hides the password of a `redis://user:password@host` URL, for messages and logs: the
/// one redactor of the library, its CLI and its test kit. Only the authority (before the
/// first `/`) is read, so an `@` in the path or query stays as it is.
///
/// ```
/// use stevedore::error::redact_url;
/// assert_eq!(redact_url("redis://app:hunter2@db:6379/0"), "redis://app:***@db:6379/0");
/// assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None if !userinfo.is_empty() => format!("{scheme}://***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, excerpt, redact_url};

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("emails"), "\"emails\"");
        assert_eq!(excerpt("a\nforged line"), "\"a\\nforged line\"");
        let long = "x".repeat(10_000);
        let e = excerpt(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.ends_with("... (10000 bytes in all)"), "{e}");
    }

    #[test]
    fn one_line_escapes_and_cuts() {
        assert_eq!(super::one_line("a\nb", 100), "a\\nb");
        assert_eq!(super::one_line("abcdef", 3), "abc...");
        assert_eq!(super::one_line("é", 1), "...");
    }

    #[test]
    fn name_errors_quote_the_rule_of_their_kind() {
        let e = Error::InvalidName {
            kind: "unique key",
            name: String::new(),
        };
        assert!(e.to_string().contains("1 to 256 bytes"), "{e}");
        let e = Error::InvalidName {
            kind: "queue",
            name: "a b".into(),
        };
        assert!(e.to_string().contains("1 to 64 characters"), "{e}");
    }

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://secret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("nonsense"), "nonsense");
        assert_eq!(
            redact_url("rediss://u:pw@h:1/0?note=a@b"),
            "rediss://u:***@h:1/0?note=a@b",
            "an @ after the authority is not a password's end"
        );
    }
}
