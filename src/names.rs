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

/// Longest job id a worker accepts in an entry; a stevedore id (a UUID) has 36 characters.
pub const MAX_JOB_ID_LEN: usize = 128;

/// Checks a job id read from an entry: 1 to [`MAX_JOB_ID_LEN`] characters from
/// `A-Z a-z 0-9 _ . : -`, so a hand-written entry cannot make a huge status key or put a
/// line break into a log.
pub(crate) fn validate_job_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_JOB_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field `id` {} is not a job id: use 1 to {MAX_JOB_ID_LEN} characters from A-Z a-z 0-9 _ . : -",
            crate::error::excerpt(id)
        ))
    }
}

/// A job's id: a UUIDv7 as text, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub(crate) fn generate() -> Self {
        JobId(uuid::Uuid::now_v7().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
    fn job_ids_sort_by_creation() {
        let a = JobId::generate();
        std::thread::sleep(Duration::from_millis(2));
        let b = JobId::generate();
        assert!(a < b);
    }
}
