//! Reading one dead letter: its reason, its fields, and the stream ids that order them.
//!
//! Dead letters are read leniently because some of them exist precisely because they were
//! malformed: a missing or garbled field becomes `None` or lands in
//! [`DeadJob::fields`], never an error that would hide the rest of a page.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::Priority;
use crate::codec::decode_payload;
use crate::redis::{Fields, priority_of};

/// Why a job was dead-lettered: the `reason` field of its dead letter.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The handler failed on its last attempt, or said the failure is permanent
    /// (`failed`).
    Failed,
    /// The entry was delivered more often than allowed without finishing: its workers kept
    /// dying on it (`poison`).
    Poison,
    /// No handler knew the job type (`unknown_type`).
    UnknownType,
    /// The entry or its payload could not be decoded (`bad_entry`).
    BadEntry,
    /// The last attempt ran past its timeout (`timeout`).
    Timeout,
    /// A reason this version does not know, as written (empty when the field is missing).
    Other(String),
}

impl DeadReason {
    /// The reasons stevedore writes itself.
    pub const ALL: [DeadReason; 5] = [
        DeadReason::Failed,
        DeadReason::Poison,
        DeadReason::UnknownType,
        DeadReason::BadEntry,
        DeadReason::Timeout,
    ];

    /// The name written in the `reason` field.
    pub fn as_str(&self) -> &str {
        match self {
            DeadReason::Failed => "failed",
            DeadReason::Poison => "poison",
            DeadReason::UnknownType => "unknown_type",
            DeadReason::BadEntry => "bad_entry",
            DeadReason::Timeout => "timeout",
            DeadReason::Other(s) => s,
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadReason {
    type Err = Infallible;

    /// Never fails: a name this version does not know becomes [`DeadReason::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "failed" => DeadReason::Failed,
            "poison" => DeadReason::Poison,
            "unknown_type" => DeadReason::UnknownType,
            "bad_entry" => DeadReason::BadEntry,
            "timeout" => DeadReason::Timeout,
            other => DeadReason::Other(other.to_string()),
        })
    }
}

/// One dead letter as read from the queue's dead-letter stream.
///
/// Everything but the entry id, the queue, the reason and the error may be missing on an
/// entry that was written by hand; such fields are `None` (or empty), and fields with
/// unexpected names or values are kept as text in [`fields`](DeadJob::fields).
#[derive(Clone)]
pub struct DeadJob {
    /// The dead letter's stream entry id: the handle for `get`, `replay` and `purge`.
    pub entry_id: String,
    /// The job id (`id`), stable across attempts and replays.
    pub job_id: Option<String>,
    /// The job type (`type`).
    pub job_type: Option<String>,
    /// The queue whose dead-letter stream holds the entry.
    pub queue: String,
    /// The priority the job had, from the stream named in `origin`.
    pub priority: Option<Priority>,
    /// Why it died (`reason`).
    pub reason: DeadReason,
    /// The last error (`error`), empty when none was recorded.
    pub error: String,
    /// The attempt it died on (`attempt`).
    pub attempts: Option<u32>,
    /// Its attempt budget (`max_attempts`), as the enqueuer set it; `None` when the enqueuer
    /// left it to the handler (`0` in the entry).
    pub max_attempts: Option<u32>,
    /// How often Redis delivered its last entry (`deliveries`).
    pub deliveries: Option<u64>,
    /// When it was dead-lettered (`failed_at`, or the entry id's time when that field is
    /// missing or garbled), on Redis' clock.
    pub failed_at: Option<SystemTime>,
    /// When it was first enqueued (`enqueued_at`).
    pub enqueued_at: Option<SystemTime>,
    /// The stream and entry id it was taken from (`origin`).
    pub origin: Option<String>,
    /// The dead letter this job was replayed from before it died again (`replayed_from`).
    pub replayed_from: Option<String>,
    /// The payload as stored: MessagePack for entries stevedore wrote, anything for others.
    pub payload: Bytes,
    /// Every other field (`timeout`, `unique`, `traceparent`, `truncated`, hand-written
    /// ones...) as text, invalid UTF-8 replaced, in stream order.
    pub fields: Vec<(String, String)>,
}

impl fmt::Debug for DeadJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload is left out, as for jobs: it may hold personal data.
        f.debug_struct("DeadJob")
            .field("entry_id", &self.entry_id)
            .field("job_id", &self.job_id)
            .field("job_type", &self.job_type)
            .field("queue", &self.queue)
            .field("priority", &self.priority)
            .field("reason", &self.reason)
            .field("error", &self.error)
            .field("attempts", &self.attempts)
            .field("max_attempts", &self.max_attempts)
            .field("deliveries", &self.deliveries)
            .field("failed_at", &self.failed_at)
            .field("enqueued_at", &self.enqueued_at)
            .field("origin", &self.origin)
            .field("replayed_from", &self.replayed_from)
            .field("payload_bytes", &self.payload.len())
            .field("fields", &self.fields)
            .finish()
    }
}

/// As JSON (the shape `GET /api/v1/queues/{queue}/dlq/{entry}` answers with): times become
/// Unix ms fields, the payload is decoded to JSON (`null` when it is not MessagePack) and
/// its size given as `payload_bytes`; the other raw fields are left out.
impl serde::Serialize for DeadJob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let ms = crate::status::unix_ms;
        let mut st = s.serialize_struct("DeadJob", 16)?;
        st.serialize_field("entry_id", &self.entry_id)?;
        st.serialize_field("job_id", &self.job_id)?;
        st.serialize_field("type", &self.job_type)?;
        st.serialize_field("queue", &self.queue)?;
        st.serialize_field("priority", &self.priority.map(Priority::as_str))?;
        st.serialize_field("reason", self.reason.as_str())?;
        st.serialize_field("error", &self.error)?;
        st.serialize_field("attempts", &self.attempts)?;
        st.serialize_field("max_attempts", &self.max_attempts)?;
        st.serialize_field("deliveries", &self.deliveries)?;
        st.serialize_field("failed_at_ms", &ms(self.failed_at))?;
        st.serialize_field("enqueued_at_ms", &ms(self.enqueued_at))?;
        st.serialize_field("origin", &self.origin)?;
        st.serialize_field("replayed_from", &self.replayed_from)?;
        st.serialize_field("payload", &self.payload_json())?;
        st.serialize_field("payload_bytes", &self.payload.len())?;
        st.end()
    }
}

impl DeadJob {
    /// The payload decoded from MessagePack into JSON (binary strings become arrays of
    /// numbers), or `None` when it is not MessagePack, is nested too deeply, or has map
    /// keys JSON cannot hold.
    pub fn payload_json(&self) -> Option<serde_json::Value> {
        decode_payload(&self.payload).ok()
    }

    /// Reads a dead letter from its entry id and raw fields; never fails.
    pub(crate) fn from_entry(queue: &str, entry_id: String, raw: Fields) -> Self {
        let mut job = DeadJob {
            failed_at: StreamId::parse(&entry_id).and_then(|id| time_of_ms(id.ms)),
            entry_id,
            job_id: None,
            job_type: None,
            queue: queue.to_string(),
            priority: None,
            reason: DeadReason::Other(String::new()),
            error: String::new(),
            attempts: None,
            max_attempts: None,
            deliveries: None,
            enqueued_at: None,
            origin: None,
            replayed_from: None,
            payload: Bytes::new(),
            fields: Vec::new(),
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for (name, value) in raw.iter() {
            let known = KNOWN
                .iter()
                .copied()
                .find(|k| k.as_bytes() == name.as_ref());
            match known {
                Some(k) if !seen.contains(&k) => {
                    seen.push(k);
                    job.set(k, value);
                }
                _ => job.fields.push((text(name), text(value))),
            }
        }
        job.priority = job
            .origin
            .as_deref()
            .and_then(|o| o.rsplit_once(' '))
            .and_then(|(stream, _)| priority_of(stream));
        job
    }

    fn set(&mut self, name: &'static str, value: &Bytes) {
        let t = text(value);
        match name {
            "id" => self.job_id = Some(t),
            "type" => self.job_type = Some(t),
            "reason" => {
                let Ok(reason) = t.parse::<DeadReason>();
                self.reason = reason;
            }
            "error" => self.error = t,
            "attempt" => self.attempts = t.parse().ok(),
            // 0: the enqueuer left it to the handler.
            "max_attempts" => self.max_attempts = t.parse().ok().filter(|&n: &u32| n > 0),
            "deliveries" => self.deliveries = t.parse().ok(),
            "failed_at" => {
                if let Some(at) = t.parse().ok().and_then(time_of_ms) {
                    self.failed_at = Some(at);
                }
            }
            "enqueued_at" => self.enqueued_at = t.parse().ok().and_then(time_of_ms),
            "origin" => self.origin = Some(t),
            "replayed_from" => self.replayed_from = Some(t),
            _ => self.payload = value.clone(),
        }
    }
}

/// The fields [`DeadJob`] has a place for; the first of each name wins.
const KNOWN: [&str; 12] = [
    "id",
    "type",
    "reason",
    "error",
    "attempt",
    "max_attempts",
    "deliveries",
    "failed_at",
    "enqueued_at",
    "origin",
    "replayed_from",
    "payload",
];

/// A field name or value as text, invalid UTF-8 replaced.
fn text(v: &Bytes) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn time_of_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl StreamId {
    pub(crate) const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub(crate) const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Parses `<ms>-<seq>`, or `<ms>` alone (meaning `<ms>-0`).
    pub(crate) fn parse(s: &str) -> Option<StreamId> {
        let digits = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten()
        };
        match s.split_once('-') {
            Some((ms, seq)) => Some(StreamId {
                ms: digits(ms)?,
                seq: digits(seq)?,
            }),
            None => Some(StreamId {
                ms: digits(s)?,
                seq: 0,
            }),
        }
    }

    /// The first id of millisecond `ms`.
    pub(crate) fn at_ms(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    /// The id just before this one, if any.
    pub(crate) fn prev(self) -> Option<StreamId> {
        match (self.ms, self.seq) {
            (0, 0) => None,
            (ms, 0) => Some(StreamId {
                ms: ms - 1,
                seq: u64::MAX,
            }),
            (ms, seq) => Some(StreamId { ms, seq: seq - 1 }),
        }
    }

    /// The id just after this one, if any.
    pub(crate) fn next(self) -> Option<StreamId> {
        match (self.ms, self.seq) {
            (u64::MAX, u64::MAX) => None,
            (ms, u64::MAX) => Some(StreamId { ms: ms + 1, seq: 0 }),
            (ms, seq) => Some(StreamId { ms, seq: seq + 1 }),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_order_and_step() {
        assert_eq!(StreamId::parse("5-3"), Some(StreamId { ms: 5, seq: 3 }));
        assert_eq!(StreamId::parse("5"), Some(StreamId::at_ms(5)));
        for bad in [
            "",
            "-",
            "a-1",
            "1-",
            "-1",
            "1-2-3",
            "+5",
            " 5",
            "99999999999999999999",
        ] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
        assert!(StreamId::at_ms(5) < StreamId { ms: 5, seq: 1 });
        assert_eq!(
            StreamId::at_ms(5).prev(),
            Some(StreamId {
                ms: 4,
                seq: u64::MAX
            })
        );
        assert_eq!(StreamId::MIN.prev(), None);
        assert_eq!(
            StreamId {
                ms: 4,
                seq: u64::MAX
            }
            .next(),
            Some(StreamId::at_ms(5))
        );
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId { ms: 7, seq: 2 }.to_string(), "7-2");
    }

    #[test]
    fn reasons_round_trip_through_their_names() {
        for r in [
            "failed",
            "poison",
            "unknown_type",
            "bad_entry",
            "timeout",
            "weird",
        ] {
            let parsed: DeadReason = r.parse().unwrap_or(DeadReason::Other(String::new()));
            assert_eq!(parsed.to_string(), r);
        }
        assert_eq!(
            "weird".parse::<DeadReason>().ok(),
            Some(DeadReason::Other("weird".into()))
        );
    }

    #[test]
    fn odd_entries_read_without_failing() {
        let raw: Fields = [
            ("hello", Bytes::from("world")),
            ("attempt", Bytes::from("first")),
            ("attempt", Bytes::from("2")),
            ("failed_at", Bytes::from("soon")),
            ("origin", Bytes::from("p:{q}:high 1-0")),
            ("payload", Bytes::from_static(&[0xc1])),
        ]
        .into_iter()
        .collect();
        let job = DeadJob::from_entry("q", "1700000000000-0".into(), raw);
        assert_eq!(job.attempts, None, "the first `attempt` wins, garbled");
        assert_eq!(job.reason, DeadReason::Other(String::new()));
        assert_eq!(job.priority, Some(Priority::High));
        assert_eq!(
            job.failed_at,
            time_of_ms(1_700_000_000_000),
            "from the entry id"
        );
        assert_eq!(job.payload_json(), None);
        assert_eq!(
            job.fields,
            vec![
                ("hello".to_string(), "world".to_string()),
                ("attempt".to_string(), "2".to_string())
            ]
        );
    }
}
