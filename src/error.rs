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
    Connection(#[source] fred::error::Error),

    /// Redis answered a command with an error (wrong key type, out of memory, a script
    /// error...). Retrying rarely helps: the message says what Redis refused.
    #[error("redis refused a command: {0}")]
    Redis(#[source] fred::error::Error),

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
    /// (prefixes may also contain `:`). Pick a name made of those characters.
    #[error("invalid {kind} {name:?}: use 1 to 64 characters from A-Z a-z 0-9 _ . -")]
    InvalidName {
        /// What the name was for: `queue`, `job type` or `prefix`.
        kind: &'static str,
        /// The name as given.
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

    /// The worker did not finish its in-flight jobs within the drain deadline; the
    /// unfinished ones were left unacknowledged and will run again.
    #[error("shutdown deadline of {0:?} passed with jobs still running")]
    DrainTimeout(Duration),
}

impl Error {
    /// Sorts a fred error into [`Error::Connection`] or [`Error::Redis`].
    pub(crate) fn from_redis(e: fred::error::Error) -> Self {
        use fred::error::ErrorKind;
        match e.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled => Error::Connection(e),
            _ => Error::Redis(e),
        }
    }

    /// True when the error is a lost connection the caller may simply retry.
    pub fn is_connection(&self) -> bool {
        matches!(self, Error::Connection(_))
    }
}

impl From<fred::error::Error> for Error {
    fn from(e: fred::error::Error) -> Self {
        Error::from_redis(e)
    }
}

/// Hides the password of a `redis://user:password@host` URL, for messages and logs.
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
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None if !userinfo.is_empty() => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

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
    }
}
