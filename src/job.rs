//! Jobs on their way in: names, ids, options, and the envelope a stream entry holds.
//!
//! A job travels as one stream entry whose fields a person can read with `XRANGE`
//! (`id`, `type`, `attempt`, `max_attempts`, `enqueued_at`, optional `timeout`, `unique`,
//! `traceparent`) plus one binary field, `payload`, in MessagePack. Named MessagePack maps
//! are used for payloads, so adding or reordering fields of a payload struct stays
//! compatible with jobs already queued.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::types::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::handler::JobHandler;
use crate::redis::Fields;
use crate::retry::RetryPolicy;
use crate::{Error, Priority, Result};

/// The default payload limit: 1 MiB of encoded MessagePack.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 1024 * 1024;
/// Attempts a job gets when neither the handler nor the enqueue call says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// How long one attempt may run when neither the handler nor the enqueue call says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Deepest MessagePack nesting a worker decodes; deeper payloads are dead-lettered
/// instead of risking a task's stack.
pub(crate) const MAX_PAYLOAD_DEPTH: usize = 128;

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

/// Defaults a handler gives its jobs; the `#[job_handler]` options end up here.
///
/// Built with `const fn`s so the macro can emit it as a constant. Options given at enqueue
/// time win over these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerOptions {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: Option<Priority>,
    pub(crate) retry: Option<RetryPolicy>,
}

impl HandlerOptions {
    /// No defaults of its own: the library's (and the worker's) apply.
    pub const fn new() -> Self {
        HandlerOptions {
            max_attempts: None,
            timeout: None,
            priority: None,
            retry: None,
        }
    }

    /// How long failed jobs wait before their next attempt (default: the worker's policy,
    /// itself exponential from 1 s to 10 min with jitter unless set).
    pub const fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Attempts before a failing job is dead-lettered (at least 1: 0 counts as 1). Jobs
    /// enqueued without their own `max_attempts` get this, whoever enqueued them.
    pub const fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(if n == 0 { 1 } else { n });
        self
    }

    /// How long one attempt may run before it is cancelled and counted as failed.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The priority jobs get unless the enqueue call sets one.
    pub const fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The attempts in effect: this handler's, or [`DEFAULT_MAX_ATTEMPTS`].
    pub fn effective_max_attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }

    /// The timeout in effect: this handler's, or [`DEFAULT_TIMEOUT`].
    pub fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// Per-job options set at enqueue time.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobOptions {
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<Priority>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) unique: Option<(UniqueBy, Duration)>,
    pub(crate) traceparent: Option<String>,
}

/// What makes two jobs duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UniqueBy {
    /// A key the caller chose.
    Key(String),
    /// The job type and the encoded payload.
    Payload,
}

/// Longest caller-chosen unique key.
const MAX_UNIQUE_KEY: usize = 256;

/// When a delayed job becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schedule {
    /// This long after Redis receives it (measured on Redis' clock).
    In(Duration),
    /// At this wall-clock time.
    At(SystemTime),
}

macro_rules! job_option_setters {
    () => {
        /// Puts the job on this priority's stream.
        pub fn priority(mut self, priority: Priority) -> Self {
            self.options.priority = Some(priority);
            self
        }

        /// Attempts before the job is dead-lettered (at least 1: 0 counts as 1). Without
        /// it, the job gets its handler's `max_attempts` (5 when the handler sets none),
        /// decided by the worker that runs it.
        pub fn max_attempts(mut self, n: u32) -> Self {
            self.options.max_attempts = Some(n.max(1));
            self
        }

        /// How long one attempt may run before it is cancelled and counted as failed.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.options.timeout = Some(timeout);
            self
        }

        /// Runs the job no sooner than `delay` after Redis receives it (Redis' clock).
        pub fn delay(mut self, delay: Duration) -> Self {
            self.options.schedule = Some(Schedule::In(delay));
            self
        }

        /// De-duplicates on `key` for `ttl`: while the key lives, enqueueing another job with
        /// it enqueues nothing and returns the first job's id. The key is scoped to the
        /// queue; at most 256 bytes.
        pub fn unique(mut self, key: impl Into<String>, ttl: Duration) -> Self {
            self.options.unique = Some((UniqueBy::Key(key.into()), ttl));
            self
        }

        /// De-duplicates on the job type and payload for `ttl`, as [`unique`](Self::unique)
        /// does with a key.
        pub fn unique_by_payload(mut self, ttl: Duration) -> Self {
            self.options.unique = Some((UniqueBy::Payload, ttl));
            self
        }

        /// Carries this W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) so the job's
        /// span continues that trace, e.g. one received in an HTTP request. Without it, the
        /// current span's context is used when the `opentelemetry` feature is on. A malformed
        /// value is refused at enqueue.
        pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
            self.options.traceparent = Some(traceparent.into());
            self
        }

        /// Runs the job no sooner than `at`. A time in the past means now.
        pub fn run_at(mut self, at: SystemTime) -> Self {
            self.options.schedule = Some(Schedule::At(at));
            self
        }
    };
}

/// A typed job for handler `H`, ready to enqueue.
///
/// Made by the `job` function the `#[job_handler]` macro generates (`send_email::job(..)`),
/// so a payload of the wrong type does not compile.
#[must_use = "a job does nothing until it is enqueued"]
pub struct Job<H: JobHandler> {
    payload: H::Payload,
    options: JobOptions,
    _handler: PhantomData<fn() -> H>,
}

impl<H: JobHandler> fmt::Debug for Job<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload is deliberately left out: it may hold personal data.
        f.debug_struct("Job")
            .field("type", &H::NAME)
            .field("options", &self.options)
            .finish()
    }
}

impl<H: JobHandler> Clone for Job<H>
where
    H::Payload: Clone,
{
    fn clone(&self) -> Self {
        Job {
            payload: self.payload.clone(),
            options: self.options.clone(),
            _handler: PhantomData,
        }
    }
}

impl<H: JobHandler> Job<H> {
    /// A job for `H` with this payload and the handler's default options.
    pub fn new(payload: H::Payload) -> Self {
        Job {
            payload,
            options: JobOptions::default(),
            _handler: PhantomData,
        }
    }

    /// Puts the job on another queue than the handler's default. A worker must consume that
    /// queue for it to run.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }

    job_option_setters!();
}

/// An untyped job: a job type, a queue and an already encodable payload. For producers
/// that do not link the handler's crate (the CLI, an HTTP API, other services).
#[derive(Clone)]
#[must_use = "a job does nothing until it is enqueued"]
pub struct RawJob {
    job_type: String,
    payload: Vec<u8>,
    options: JobOptions,
}

impl fmt::Debug for RawJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawJob")
            .field("type", &self.job_type)
            .field("payload_bytes", &self.payload.len())
            .field("options", &self.options)
            .finish()
    }
}

impl RawJob {
    /// A job of `job_type` on `queue`, with `payload` encoded as MessagePack (a
    /// `serde_json::Value` works too). Fails on an invalid name or an unencodable payload.
    pub fn new<T: Serialize + ?Sized>(job_type: &str, queue: &str, payload: &T) -> Result<Self> {
        Self::from_msgpack(job_type, queue, encode_payload(payload)?)
    }

    /// A job whose payload is already MessagePack.
    pub fn from_msgpack(job_type: &str, queue: &str, payload: Vec<u8>) -> Result<Self> {
        validate_name("job type", job_type)?;
        validate_name("queue", queue)?;
        Ok(RawJob {
            job_type: job_type.to_string(),
            payload,
            options: JobOptions {
                queue: Some(queue.to_string()),
                ..JobOptions::default()
            },
        })
    }

    job_option_setters!();
}

/// A job ready to become a stream entry, whatever way it was built.
#[derive(Debug)]
pub struct PreparedJob {
    pub(crate) queue: String,
    pub(crate) priority: Priority,
    pub(crate) schedule: Option<Schedule>,
    /// The unique key (without prefix) and how long it holds.
    pub(crate) unique: Option<(String, Duration)>,
    pub(crate) envelope: Envelope,
}

/// Anything [`Client::enqueue`](crate::Client::enqueue) accepts: a typed [`Job`] or a
/// [`RawJob`].
pub trait IntoJob {
    /// Encodes the payload and settles the options. Fails on an invalid name or an
    /// unencodable payload.
    fn prepare(self) -> Result<PreparedJob>;
}

impl<H: JobHandler> IntoJob for Job<H> {
    fn prepare(self) -> Result<PreparedJob> {
        let payload = encode_payload(&self.payload)?;
        prepare(H::NAME, H::QUEUE, payload, self.options, &H::OPTIONS)
    }
}

impl IntoJob for PreparedJob {
    fn prepare(self) -> Result<PreparedJob> {
        Ok(self)
    }
}

impl PreparedJob {
    /// The id this job gets when it is enqueued (a duplicate of a unique job gets the
    /// existing job's id instead).
    pub fn id(&self) -> &str {
        &self.envelope.id
    }
}

impl IntoJob for RawJob {
    fn prepare(self) -> Result<PreparedJob> {
        prepare(
            &self.job_type,
            "",
            self.payload,
            self.options,
            &HandlerOptions::new(),
        )
    }
}

fn prepare(
    job_type: &str,
    default_queue: &str,
    payload: Vec<u8>,
    options: JobOptions,
    defaults: &HandlerOptions,
) -> Result<PreparedJob> {
    let queue = options.queue.unwrap_or_else(|| default_queue.to_string());
    validate_name("queue", &queue)?;
    validate_name("job type", job_type)?;
    // 0 on the wire: not set here, so the worker applies the handler's (see `Envelope`).
    let max_attempts = options
        .max_attempts
        .or(defaults.max_attempts)
        .unwrap_or(UNSET_MAX_ATTEMPTS);
    if let Some(t) = options.timeout {
        check_duration("timeout", t)?;
    }
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
    Ok(PreparedJob {
        queue,
        priority: options.priority.or(defaults.priority).unwrap_or_default(),
        schedule: options.schedule,
        envelope: Envelope {
            id: JobId::generate().0,
            job_type: job_type.to_string(),
            attempt: 1,
            max_attempts,
            enqueued_at: now_ms(),
            timeout: options.timeout,
            unique: unique.as_ref().map(|(k, _)| k.clone()),
            traceparent,
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

/// Encodes a payload as named MessagePack.
pub(crate) fn encode_payload<T: Serialize + ?Sized>(payload: &T) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(payload)?)
}

/// Decodes a payload with the nesting depth capped.
pub(crate) fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    T::deserialize(&mut de).map_err(|e| e.to_string())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `max_attempts` in an entry when the enqueuer set none: the worker running the job
/// applies its handler's (or [`DEFAULT_MAX_ATTEMPTS`] for a type it has no handler for).
pub(crate) const UNSET_MAX_ATTEMPTS: u32 = 0;

/// What one ready-stream entry holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) id: String,
    pub(crate) job_type: String,
    pub(crate) attempt: u32,
    /// [`UNSET_MAX_ATTEMPTS`] until a worker resolves it with
    /// [`resolve_max_attempts`](Self::resolve_max_attempts).
    pub(crate) max_attempts: u32,
    pub(crate) enqueued_at: u64,
    pub(crate) timeout: Option<Duration>,
    pub(crate) unique: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) payload: Bytes,
}

impl Envelope {
    /// Settles an unset `max_attempts` on `limit` (the handler's, or the default).
    pub(crate) fn resolve_max_attempts(&mut self, limit: u32) {
        if self.max_attempts == UNSET_MAX_ATTEMPTS {
            self.max_attempts = limit.max(1);
        }
    }

    /// The entry's fields, text first and `payload` last, as XADD takes them.
    pub(crate) fn to_fields(&self) -> Vec<(&'static str, Value)> {
        let mut f: Vec<(&'static str, Value)> = Vec::with_capacity(9);
        f.push(("id", Value::from(self.id.as_str())));
        f.push(("type", Value::from(self.job_type.as_str())));
        f.push(("attempt", Value::from(i64::from(self.attempt))));
        f.push(("max_attempts", Value::from(i64::from(self.max_attempts))));
        f.push(("enqueued_at", Value::from(self.enqueued_at as i64)));
        if let Some(t) = self.timeout {
            f.push(("timeout", Value::from(clamped_ms(t) as i64)));
        }
        if let Some(u) = &self.unique {
            f.push(("unique", Value::from(u.as_str())));
        }
        if let Some(t) = &self.traceparent {
            f.push(("traceparent", Value::from(t.as_str())));
        }
        f.push(("payload", Value::Bytes(self.payload.clone())));
        f
    }

    /// Reads an entry back; the error says which field is missing or malformed, and ends up
    /// as the `error` of a `bad_entry` dead letter.
    pub(crate) fn from_fields(
        fields: &Fields,
        payload_limit: usize,
    ) -> std::result::Result<Envelope, String> {
        let str_of = |name: &str| -> std::result::Result<std::borrow::Cow<'_, str>, String> {
            match fields.get(name) {
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| format!("field `{name}` is not text")),
                None => Err(format!("field `{name}` is missing")),
            }
        };
        let text = |name: &str| str_of(name).map(|s| s.into_owned());
        let number = |name: &str| -> std::result::Result<u64, String> {
            str_of(name)?
                .parse::<u64>()
                .map_err(|_| format!("field `{name}` is not a number"))
        };
        let optional = |name: &str| fields.get(name).is_some();

        let id = text("id")?;
        validate_job_id(&id)?;
        let job_type = text("type")?;
        validate_name("job type", &job_type).map_err(|e| e.to_string())?;
        let attempt =
            u32::try_from(number("attempt")?).map_err(|_| "field `attempt` is out of range")?;
        let max_attempts = u32::try_from(number("max_attempts")?)
            .map_err(|_| "field `max_attempts` is out of range")?;
        let enqueued_at = number("enqueued_at")?;
        let timeout = if optional("timeout") {
            Some(Duration::from_millis(number("timeout")?))
        } else {
            None
        };
        let unique = if optional("unique") {
            Some(text("unique")?)
        } else {
            None
        };
        let traceparent = if optional("traceparent") {
            Some(text("traceparent")?)
        } else {
            None
        };
        let payload = match fields.get("payload") {
            Some(Value::Bytes(b)) => b.clone(),
            Some(Value::String(s)) => s.inner().clone(),
            Some(_) => return Err("field `payload` is not a byte string".into()),
            None => return Err("field `payload` is missing".into()),
        };
        if payload.len() > payload_limit {
            return Err(format!(
                "payload of {} bytes exceeds the limit of {payload_limit} bytes",
                payload.len()
            ));
        }
        Ok(Envelope {
            id,
            job_type,
            attempt,
            max_attempts,
            enqueued_at,
            timeout,
            unique,
            traceparent,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(env: &Envelope) -> Fields {
        env.to_fields().into_iter().collect()
    }

    /// `env`'s fields with `name` changed to `value`, or left out when `value` is `None`.
    fn with_field(env: &Envelope, name: &str, value: Option<Value>) -> Fields {
        env.to_fields()
            .into_iter()
            .filter_map(|(k, v)| match (k == name, &value) {
                (false, _) => Some((k, v)),
                (true, Some(new)) => Some((k, new.clone())),
                (true, None) => None,
            })
            .collect()
    }

    fn sample() -> Envelope {
        Envelope {
            id: JobId::generate().0,
            job_type: "email.send".into(),
            attempt: 2,
            max_attempts: 5,
            enqueued_at: 1_700_000_000_000,
            timeout: Some(Duration::from_secs(30)),
            unique: Some("u-1".into()),
            traceparent: None,
            payload: Bytes::from(encode_payload(&("a", 1)).unwrap_or_default()),
        }
    }

    #[test]
    fn envelope_survives_its_fields() {
        let env = sample();
        assert_eq!(
            Envelope::from_fields(&fields_of(&env), DEFAULT_PAYLOAD_LIMIT),
            Ok(env)
        );
    }

    #[test]
    fn missing_or_malformed_fields_are_named() {
        let env = sample();
        let f = with_field(&env, "type", None);
        assert_eq!(
            Envelope::from_fields(&f, DEFAULT_PAYLOAD_LIMIT),
            Err("field `type` is missing".into())
        );
        let f = with_field(&env, "attempt", Some(Value::from("two")));
        assert_eq!(
            Envelope::from_fields(&f, DEFAULT_PAYLOAD_LIMIT),
            Err("field `attempt` is not a number".into())
        );
        let f = with_field(&env, "type", Some(Value::from("{other}:x")));
        assert!(Envelope::from_fields(&f, DEFAULT_PAYLOAD_LIMIT).is_err());
    }

    #[test]
    fn hostile_job_ids_are_refused_on_read() {
        let env = sample();
        let huge = "x".repeat(1_000_000);
        for bad in ["", "a\nforged log line", "a b", "{q}", huge.as_str()] {
            let f = with_field(&env, "id", Some(Value::from(bad)));
            let err = Envelope::from_fields(&f, DEFAULT_PAYLOAD_LIMIT)
                .err()
                .unwrap_or_default();
            assert!(err.starts_with("field `id`"), "{bad:.20?}: {err}");
            assert!(err.len() < 300 && !err.contains('\n'), "{err}");
        }
        let f = with_field(&env, "id", Some(Value::from("order-17:retry.2_x")));
        assert!(Envelope::from_fields(&f, DEFAULT_PAYLOAD_LIMIT).is_ok());
    }

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
        let mut env = raw.envelope;
        env.resolve_max_attempts(3);
        assert_eq!(env.max_attempts, 3);
        env.resolve_max_attempts(9);
        assert_eq!(env.max_attempts, 3, "a set value is kept");
    }

    #[test]
    fn oversized_payloads_are_refused_on_read() {
        let env = sample();
        let err = Envelope::from_fields(&fields_of(&env), 3)
            .err()
            .unwrap_or_default();
        assert!(err.contains("exceeds the limit"), "{err}");
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
    fn deeply_nested_payloads_are_refused_not_overflowed() {
        // 100k nested one-element arrays: 0x91 is a fixarray of length 1.
        let mut bytes = vec![0x91u8; 100_000];
        bytes.push(0xc0);
        let r: std::result::Result<serde_json::Value, String> = decode_payload(&bytes);
        assert!(r.is_err());
    }

    #[test]
    fn job_ids_sort_by_creation() {
        let a = JobId::generate();
        std::thread::sleep(Duration::from_millis(2));
        let b = JobId::generate();
        assert!(a < b);
    }
}
