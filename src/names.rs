//! Names and ids: what a queue name, job type, key prefix or job id may be.
//!
//! Every name ends up inside Redis keys, hash tags, metric labels and URL paths, so each is
//! checked where it enters (enqueue, builder, HTTP API) and where it is read back from an
//! entry a person may have written by hand.

use std::fmt;

use serde::Serialize;

use crate::{Error, Result};

/// Checks a queue name, job type or prefix against `^[A-Za-z0-9_.-]{1,64}$` (prefixes may
/// also contain `:`), so no name can break out of its keys, hash slot or metric label. A
/// name of dots only (`.`, `..`) is refused too: in a URL path it means a directory.
pub(crate) fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let extra_colon = kind == "prefix";
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().any(|b| b != b'.')
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'.' | b'-')
                || (extra_colon && b == b':')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind,
            name: crate::error::shorten(name),
        })
    }
}

/// FNV-1a, 64 bits: a stable hash (the same on every process and release), for partition
/// keys (all jobs of one key go to one partition) and long rate-limit keys.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Marks a partition of a queue: partition names read `<queue>~<salt>` (`emails~3`).
pub(crate) const PARTITION_MARK: char = '~';

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: u16 = 128;

/// Checks a name that refers to an existing queue: a queue name, or the name of one of a
/// queue's partitions (`emails~3`).
pub(crate) fn validate_queue_ref(name: &str) -> Result<()> {
    match split_partition(name) {
        Some((queue, _)) => validate_name("queue", queue),
        None => validate_name("queue", name),
    }
}

/// The queue and salt of a partition name (`emails~3` → `emails`, 3); `None` for a name
/// that names no partition.
fn split_partition(name: &str) -> Option<(&str, u32)> {
    let (queue, salt) = name.rsplit_once(PARTITION_MARK)?;
    let digits = !salt.is_empty() && salt.len() <= 6 && salt.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| salt.parse().ok().map(|s| (queue, s)))?
}

/// The queue a queue or partition name belongs to: `emails~3` → `emails`, `emails` →
/// `emails`.
pub(crate) fn queue_of(name: &str) -> &str {
    split_partition(name).map_or(name, |(queue, _)| queue)
}

/// Whether `name` names a partition of a queue (`emails~3`).
pub(crate) fn is_partition(name: &str) -> bool {
    split_partition(name).is_some()
}

/// Longest job id a worker accepts in an entry; a stevedore id has at most 44 characters.
pub const MAX_JOB_ID_LEN: usize = 128;

/// Checks a job id read from an entry: 1 to [`MAX_JOB_ID_LEN`] characters from
/// `A-Z a-z 0-9 _ . : - ~`, so a hand-written entry cannot make a huge status key or put a
/// line break into a log.
pub(crate) fn validate_job_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_JOB_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field `id` {} is not a job id: use 1 to {MAX_JOB_ID_LEN} characters from A-Z a-z 0-9 _ . : - ~",
            crate::error::excerpt(id)
        ))
    }
}

/// A job's id.
///
/// A job enqueued to run now gets its queue and the id of the stream entry Redis gave it,
/// with its priority: `emails:n-1733300000000-0` is entry `1733300000000-0` of the
/// `normal` stream of queue `emails`. The id is where the job is: its status is read from
/// that entry while it waits or runs, and nothing else is stored for it
/// (docs/architecture.md, "Data model"). A delayed job gets a UUIDv7 (it has no entry until
/// it is due) and keeps a status record. Ids are unique under one key prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub(crate) fn generate() -> Self {
        JobId(uuid::Uuid::now_v7().to_string())
    }

    /// An id read back from storage or built by the library.
    pub(crate) fn from_string(id: String) -> Self {
        JobId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `<queue>:<p>-<entry id>`: the job id of the job first enqueued as `entry_id` in the
/// `priority` stream of `queue` (`p` is `h`, `n` or `l`; `queue` may be a partition,
/// `emails~3`). A queue name has no `:`, so the
/// id reads back unambiguously.
pub(crate) fn locator(queue: &str, priority: crate::Priority, entry_id: &str) -> String {
    let mut id = String::with_capacity(queue.len() + entry_id.len() + 3);
    id.push_str(queue);
    id.push(':');
    id.push(match priority {
        crate::Priority::High => 'h',
        crate::Priority::Normal => 'n',
        crate::Priority::Low => 'l',
    });
    id.push('-');
    id.push_str(entry_id);
    id
}

/// The queue, priority stream and entry id a job id names, when it is one of the form
/// [`locator`] makes (`emails:n-1733300000000-0`); `None` for any other id (a UUID, an id
/// from a hand-written entry).
pub(crate) fn parse_locator(id: &str) -> Option<(&str, crate::Priority, &str)> {
    let (queue, rest) = id.split_once(':')?;
    validate_queue_ref(queue).ok()?;
    let (p, entry) = rest.split_at_checked(2)?;
    let priority = match p {
        "h-" => crate::Priority::High,
        "n-" => crate::Priority::Normal,
        "l-" => crate::Priority::Low,
        _ => return None,
    };
    let (ms, seq) = entry.split_once('-')?;
    let number = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok()
    };
    (number(ms) && number(seq)).then_some((queue, priority, entry))
}

/// The milliseconds of the entry id a job id names (when it was enqueued, on Redis' clock).
pub(crate) fn locator_ms(id: &str) -> Option<u64> {
    let (_, _, entry) = parse_locator(id)?;
    entry.split_once('-')?.0.parse().ok()
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        JobId(s)
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn locators_round_trip_and_other_ids_are_not_locators() {
        let id = locator("mail.out", crate::Priority::Low, "1733300000000-7");
        assert_eq!(id, "mail.out:l-1733300000000-7");
        assert_eq!(
            parse_locator(&id),
            Some(("mail.out", crate::Priority::Low, "1733300000000-7"))
        );
        assert_eq!(locator_ms(&id), Some(1_733_300_000_000));
        assert!(validate_job_id(&id).is_ok());
        for other in [
            "0190a5c8-6f1e-7c3a-9b1e-2f4d5e6a7b8c",
            "q:n-",
            "q:n-1",
            "q:n-1-",
            "q:n--1",
            "q:x-1-2",
            "q:n-1-2-3",
            "q:n-99999999999999999999999-0",
            "n-1-0",
            ":n-1-0",
            "a{b}:n-1-0",
            "order-17:retry.2_x",
            "",
        ] {
            assert_eq!(parse_locator(other), None, "{other}");
        }
        assert_eq!(
            parse_locator("q:h-0-0"),
            Some(("q", crate::Priority::High, "0-0"))
        );
    }

    #[test]
    fn names_are_validated() {
        for ok in ["emails", "email.send", "a_b-c.d", "A9"] {
            assert!(validate_name("queue", ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "a b",
            "a{b}",
            "a:b",
            "é",
            long.as_str(),
            "a\nb",
            ".",
            "..",
            "...",
        ] {
            assert!(validate_name("queue", bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("prefix", "app:stevedore").is_ok());
        assert!(validate_name("queue", ".hidden").is_ok());
        assert!(validate_name("prefix", "..").is_err());
        let e = validate_name("queue", &"é".repeat(5000))
            .err()
            .map(|e| e.to_string());
        assert!(e.as_ref().is_some_and(|e| e.len() < 300), "{e:?}");
    }

    #[test]
    fn partition_names_read_back() {
        for name in ["emails~0", "emails~17", "a.b-c~123456"] {
            assert!(is_partition(name), "{name}");
            assert!(validate_queue_ref(name).is_ok());
            let id = locator(name, crate::Priority::Normal, "1-0");
            assert_eq!(parse_locator(&id).map(|l| l.0), Some(name));
            assert!(validate_job_id(&id).is_ok());
        }
        assert_eq!(queue_of("emails~17"), "emails");
        assert_eq!(queue_of("emails"), "emails");
        for bad in ["emails~", "emails~x", "~3", "a b~3", "emails~1234567"] {
            assert!(validate_queue_ref(bad).is_err(), "{bad}");
        }
        assert!(validate_name("queue", "emails~3").is_err());
    }

    #[test]
    fn job_ids_sort_by_creation() {
        let a = JobId::generate();
        std::thread::sleep(Duration::from_millis(2));
        let b = JobId::generate();
        assert!(a < b);
    }
}
