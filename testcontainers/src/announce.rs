//! The one log line a [`TestRedis`](crate::TestRedis) writes about where it came from, and
//! what keeps secrets out of it.

use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::RedisSource;
use crate::settings::SOURCE_ENV;

/// Prefix of every log line.
pub(crate) const LOG_PREFIX: &str = "stevedore-testcontainers:";

/// Logs which path a [`TestRedis`](crate::TestRedis) took. The first line for each source
/// in a process goes straight to the process' stderr, past the output capture of the test
/// harness, so a test binary whose tests all pass still shows it; the others are printed
/// like any test output (shown for failing tests, or with `--nocapture`).
pub(crate) fn announce(source: RedisSource, line: &str) {
    static ANNOUNCED: AtomicU8 = AtomicU8::new(0);
    let bit = match source {
        RedisSource::Env => 1,
        RedisSource::Container => 2,
        RedisSource::Process => 4,
    };
    if ANNOUNCED.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        eprintln!("{line}");
        return;
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // `eprintln!` would be captured by libtest; a direct write is not. One write call, so
    // the line is not split by other output.
    let line = format!("{line} [first {source} redis of {exe}]\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The log note for a forced source.
pub(crate) fn forced_note(source: RedisSource) -> String {
    format!("forced by {SOURCE_ENV}={source}")
}

/// Hides the password of a URL for logs (the library's redactor).
pub(crate) fn redact(url: &str) -> String {
    stevedore::error::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_in_logs() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("rediss://:pw@h:1"), "rediss://:***@h:1");
    }
}
