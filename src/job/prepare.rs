//! Settling a job's options into what its entry will hold.

use std::time::SystemTime;

use bytes::Bytes;

use super::{JobOptions, MAX_UNIQUE_KEY, PreparedJob, Schedule, UniqueBy};
use crate::clock::{check_duration, now_ms};
use crate::envelope::{Envelope, UNSET_MAX_ATTEMPTS};
use crate::handler::HandlerOptions;
use crate::names::{JobId, validate_name};
use crate::{Error, Result};

pub(super) fn prepare(
    job_type: &str,
    default_queue: &str,
    payload: Vec<u8>,
    options: JobOptions,
    defaults: &HandlerOptions,
) -> Result<PreparedJob> {
    let queue = options.queue.unwrap_or_else(|| default_queue.to_string());
    validate_name("queue", &queue)?;
    validate_name("job type", job_type)?;
    if options.max_attempts == Some(0) {
        return Err(Error::InvalidInput(
            "max_attempts must be at least 1 (leave it out to use the handler's)".into(),
        ));
    }
    // 0 on the wire: not set here, so the worker applies the handler's (see `Envelope`).
    let max_attempts = options
        .max_attempts
        .or(defaults.max_attempts)
        .unwrap_or(UNSET_MAX_ATTEMPTS);
    if let Some(t) = options.timeout {
        check_duration("timeout", t)?;
    }
    let delayed = options.schedule.is_some();
    match options.schedule {
        Some(Schedule::In(d)) => check_duration("delay", d)?,
        Some(Schedule::At(t)) => {
            if let Ok(ahead) = t.duration_since(SystemTime::now()) {
                check_duration("run_at (from now)", ahead)?;
            }
        }
        None => {}
    }
    let traceparent = match options.traceparent {
        Some(tp) if !crate::trace_context::is_valid(&tp) => {
            return Err(Error::InvalidConfig(format!(
                "traceparent {} is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
                crate::error::excerpt(&tp)
            )));
        }
        Some(tp) => Some(tp),
        None => crate::trace_context::current(),
    };
    let unique = match options.unique {
        None => None,
        Some((UniqueBy::Key(key), ttl)) => {
            if key.is_empty() || key.len() > MAX_UNIQUE_KEY || key.chars().any(char::is_control) {
                return Err(Error::InvalidName {
                    kind: "unique key",
                    name: crate::error::shorten(&key),
                });
            }
            check_duration("unique ttl", ttl)?;
            Some((key, ttl))
        }
        Some((UniqueBy::Payload, ttl)) => {
            check_duration("unique ttl", ttl)?;
            Some((payload_digest(job_type, &payload), ttl))
        }
    };
    if let Some(key) = &options.partition_key
        && (key.is_empty() || key.len() > MAX_UNIQUE_KEY || key.chars().any(char::is_control))
    {
        return Err(Error::InvalidName {
            kind: "partition key",
            name: crate::error::shorten(key),
        });
    }
    let partition_key = options
        .partition_key
        .or_else(|| unique.as_ref().map(|(k, _)| k.clone()));
    Ok(PreparedJob {
        queue,
        partition_key,
        priority: options.priority.or(defaults.priority).unwrap_or_default(),
        schedule: options.schedule,
        envelope: Envelope {
            // A job to run now gets its id from its entry; a delayed one has no entry yet.
            id: if delayed {
                JobId::generate().to_string()
            } else {
                String::new()
            },
            recorded: delayed,
            job_type: job_type.to_string(),
            attempt: 1,
            max_attempts,
            enqueued_at: now_ms(),
            timeout: options.timeout,
            unique: unique.as_ref().map(|(k, _)| k.clone()),
            traceparent,
            reserved: false,
            parents: None,
            payload: Bytes::from(payload),
        },
        unique,
    })
}

/// `payload:<sha1 of type and payload>`: the unique key of `unique_by_payload`.
fn payload_digest(job_type: &str, payload: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(job_type.as_bytes());
    h.update([0u8]);
    h.update(payload);
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("payload:{hex}")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use crate::Error;
    use crate::clock::{MAX_JOB_DURATION, clamped_ms};
    use crate::envelope::UNSET_MAX_ATTEMPTS;
    use crate::job::{IntoJob, RawJob};

    #[test]
    fn durations_past_a_century_are_refused_not_wrapped() {
        let century = MAX_JOB_DURATION;
        let too_long = century + Duration::from_secs(1);
        let job = || RawJob::new("a.b", "q", &1);
        let refused = |j: RawJob| match j.prepare() {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected InvalidInput, got {other:?}"),
        };
        assert!(refused(job().expect("job").delay(too_long)).contains("delay"));
        let far = SystemTime::now() + century + Duration::from_secs(3600);
        assert!(refused(job().expect("job").run_at(far)).contains("run_at"));
        assert!(refused(job().expect("job").timeout(too_long)).contains("timeout"));
        assert!(refused(job().expect("job").unique("k", too_long)).contains("unique ttl"));
        assert!(refused(job().expect("job").unique_by_payload(too_long)).contains("unique ttl"));
        // 1,000,000,000 years, as a user typed it: refused, not wrapped to "now".
        let huge = humantime::parse_duration("1000000000y").expect("parses");
        assert!(refused(job().expect("job").delay(huge)).contains("100 years"));
        assert!(job().expect("job").delay(century).prepare().is_ok());
        assert_eq!(clamped_ms(Duration::MAX), century.as_millis() as u64);
    }

    #[test]
    fn unset_max_attempts_is_left_to_the_worker() {
        let raw = RawJob::new("a.b", "q", &1)
            .expect("job")
            .prepare()
            .expect("prepared");
        assert_eq!(raw.envelope.max_attempts, UNSET_MAX_ATTEMPTS);
        let set = RawJob::new("a.b", "q", &1)
            .expect("job")
            .max_attempts(2)
            .prepare()
            .expect("prepared");
        assert_eq!(set.envelope.max_attempts, 2);
        let zero = RawJob::new("a.b", "q", &1).expect("job").max_attempts(0);
        assert!(
            matches!(zero.prepare(), Err(Error::InvalidInput(m)) if m.contains("at least 1")),
            "0 is never a budget"
        );
        let mut env = raw.envelope;
        env.resolve_max_attempts(3);
        assert_eq!(env.max_attempts, 3);
        env.resolve_max_attempts(9);
        assert_eq!(env.max_attempts, 3, "a set value is kept");
    }
}
