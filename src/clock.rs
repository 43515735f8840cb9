//! Time as jobs carry it: milliseconds since the Unix epoch, and the longest duration a
//! job may carry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// Longest delay, unique key TTL, attempt timeout or retry delay a job may carry: 100
/// years. Longer ones are refused at enqueue ([`Error::InvalidInput`]) rather than wrapped
/// round into the past, and a handler's longer retry delay is cut to this.
pub const MAX_JOB_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Refuses a duration over [`MAX_JOB_DURATION`]; `what` names the option.
pub(crate) fn check_duration(what: &str, d: Duration) -> Result<()> {
    if d > MAX_JOB_DURATION {
        return Err(Error::InvalidInput(format!(
            "{what} of {} is longer than the longest allowed, 100 years",
            humantime::format_duration(Duration::from_secs(d.as_secs()))
        )));
    }
    Ok(())
}

/// `d` in whole milliseconds, at most [`MAX_JOB_DURATION`]'s: for durations that come from
/// code (a retry delay) rather than from a caller who can be told.
pub(crate) fn clamped_ms(d: Duration) -> u64 {
    d.min(MAX_JOB_DURATION).as_millis() as u64
}

/// Milliseconds since the Unix epoch on this machine's clock (0 before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
