//! Stream entries: the fields of one entry, how a job becomes an entry, and how an entry
//! reads back as a job.
//!
//! A job travels as one stream entry whose fields a person can read with `XRANGE` (`type`,
//! `attempt`, `max_attempts`, `enqueued_at`, optional `id`, `timeout`, `unique`,
//! `traceparent`) plus one binary field, `payload`, in MessagePack
//! (docs/architecture.md, "Data model"). An entry without `id` is a job enqueued to run
//! now, whose id is made of its priority and entry id (`names::locator`); an entry with
//! one is a job that has a status hash (delayed, retried, replayed, or written by an older
//! version).

use bytes::Bytes;
use fred::types::Value;

use crate::envelope::Envelope;
use crate::names::{validate_job_id, validate_name};

/// One entry read from a stream: its id and fields (`None` for an entry whose data was
/// deleted while it was pending).
pub(crate) type Entry = (String, Option<Fields>);

/// An entry's fields and values, in the order Redis returned them. An entry has a handful
/// of fields, so a scan finds one faster than a hash map is built.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fields(Vec<(Bytes, Bytes)>);

impl Fields {
    /// The value of field `name` (the last, should it repeat: what a map of the entry holds).
    pub(crate) fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// Every field and value, in entry order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Reads a flat `[field, value, ...]` array (RESP2) or a map (RESP3). A value that is
    /// not a string (a number from a hand-written reply) is kept as its text.
    pub(super) fn from_value(value: Value) -> Fields {
        match value {
            Value::Array(flat) => {
                let mut out = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let Some(name) = it.next() {
                    out.push((bytes_of(name), bytes_of(it.next().unwrap_or(Value::Null))));
                }
                Fields(out)
            }
            Value::Map(map) => Fields(
                map.inner()
                    .into_iter()
                    .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), bytes_of(v)))
                    .collect(),
            ),
            _ => Fields::default(),
        }
    }
}

impl<K: Into<Bytes>, V: Into<Bytes>> FromIterator<(K, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Fields(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A reply value as bytes: strings as they are, numbers as their text, nil as nothing.
pub(super) fn bytes_of(v: Value) -> Bytes {
    match v {
        Value::Bytes(b) => b,
        Value::String(s) => s.inner().clone(),
        Value::Null => Bytes::new(),
        other => Bytes::from(other.as_string().unwrap_or_default()),
    }
}

/// A reply value as a list: nil is an empty one, anything else not a list a list of itself.
pub(super) fn list_of(v: Value) -> Vec<Value> {
    match v {
        Value::Null => Vec::new(),
        other => other.into_array(),
    }
}

/// A reply value as text, invalid UTF-8 replaced.
pub(super) fn text_of(v: &Value) -> String {
    match v.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => v.as_string().unwrap_or_default(),
    }
}

/// The entry's fields for `env`, text first and `payload` last, as XADD takes them.
pub(crate) fn fields_of(env: &Envelope) -> Vec<(&'static str, Value)> {
    let mut f: Vec<(&'static str, Value)> = Vec::with_capacity(9);
    if env.recorded {
        f.push(("id", Value::from(env.id.as_str())));
    }
    f.push(("type", Value::from(env.job_type.as_str())));
    f.push(("attempt", Value::from(i64::from(env.attempt))));
    f.push(("max_attempts", Value::from(i64::from(env.max_attempts))));
    f.push(("enqueued_at", Value::from(env.enqueued_at as i64)));
    if let Some(t) = env.timeout {
        f.push(("timeout", Value::from(crate::clock::clamped_ms(t) as i64)));
    }
    if let Some(u) = &env.unique {
        f.push(("unique", Value::from(u.as_str())));
    }
    if let Some(t) = &env.traceparent {
        f.push(("traceparent", Value::from(t.as_str())));
    }
    if env.reserved {
        f.push(("reserved", Value::from("1")));
    }
    if let Some(p) = &env.parents {
        f.push(("parents", Value::from(p.as_str())));
    }
    f.push(("payload", Value::Bytes(env.payload.clone())));
    f
}

/// Reads a job back from entry `entry_id` of `queue`'s `priority` stream; the error says
/// which field is missing or malformed, and ends up as the `error` of a `bad_entry` dead
/// letter.
pub(crate) fn envelope_of(
    fields: &Fields,
    queue: &str,
    priority: crate::Priority,
    entry_id: &str,
    payload_limit: usize,
) -> Result<Envelope, String> {
    let str_of = |name: &str| -> Result<&str, String> {
        match fields.get(name) {
            Some(v) => std::str::from_utf8(v).map_err(|_| format!("field `{name}` is not text")),
            None => Err(format!("field `{name}` is missing")),
        }
    };
    let text = |name: &str| str_of(name).map(str::to_string);
    let number = |name: &str| -> Result<u64, String> {
        str_of(name)?
            .parse::<u64>()
            .map_err(|_| format!("field `{name}` is not a number"))
    };
    let optional = |name: &str| fields.get(name).is_some();

    let recorded = optional("id");
    let id = if recorded {
        text("id")?
    } else {
        crate::names::locator(queue, priority, entry_id)
    };
    validate_job_id(&id)?;
    let job_type = text("type")?;
    validate_name("job type", &job_type).map_err(|e| e.to_string())?;
    let attempt =
        u32::try_from(number("attempt")?).map_err(|_| "field `attempt` is out of range")?;
    let max_attempts = u32::try_from(number("max_attempts")?)
        .map_err(|_| "field `max_attempts` is out of range")?;
    let enqueued_at = number("enqueued_at")?;
    let timeout = if optional("timeout") {
        Some(std::time::Duration::from_millis(number("timeout")?))
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
        Some(b) => b.clone(),
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
        recorded,
        job_type,
        attempt,
        max_attempts,
        enqueued_at,
        timeout,
        unique,
        traceparent,
        reserved: optional("reserved"),
        parents: if optional("parents") {
            Some(text("parents")?)
        } else {
            None
        },
        payload,
    })
}

/// The entries of one stream's part of an XREADGROUP reply, or of an XRANGE reply:
/// `[[id, [field, value, ...] or nil], ...]`.
pub(super) fn entries_of(reply: Value) -> crate::Result<Vec<Entry>> {
    list_of(reply)
        .into_iter()
        .map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts
                .next()
                .and_then(Value::into_string)
                .ok_or_else(|| unexpected("an entry without an id"))?;
            let fields = match parts.next() {
                None | Some(Value::Null) => None,
                Some(fields) => Some(Fields::from_value(fields)),
            };
            Ok((id, fields))
        })
        .collect()
}

/// An XREADGROUP reply, `nil` or `[[stream, entries], ...]`: entries per stream, in the
/// order the streams were asked for. Read straight from the reply, without building a map
/// per entry.
pub(super) fn read_reply(reply: Value) -> crate::Result<Vec<(String, Vec<Entry>)>> {
    if reply.is_null() {
        return Ok(Vec::new());
    }
    reply
        .into_array()
        .into_iter()
        .map(|stream| {
            let mut parts = stream.into_array().into_iter();
            let name = parts
                .next()
                .and_then(Value::into_string)
                .ok_or_else(|| unexpected("a stream without a name"))?;
            Ok((name, entries_of(parts.next().unwrap_or(Value::Null))?))
        })
        .collect()
}

fn unexpected(what: &str) -> crate::Error {
    crate::Error::Decode(format!("unexpected stream reply: {what}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::job::DEFAULT_PAYLOAD_LIMIT;

    fn sample() -> Envelope {
        Envelope {
            id: crate::names::JobId::generate().to_string(),
            recorded: true,
            job_type: "email.send".into(),
            attempt: 2,
            max_attempts: 5,
            enqueued_at: 1_700_000_000_000,
            timeout: Some(Duration::from_secs(30)),
            unique: Some("u-1".into()),
            traceparent: None,
            reserved: false,
            parents: None,
            payload: Bytes::from(crate::codec::encode_payload(&("a", 1)).unwrap_or_default()),
        }
    }

    fn read(fields: &Fields, limit: usize) -> Result<Envelope, String> {
        envelope_of(
            fields,
            "q",
            crate::Priority::Normal,
            "1700000000000-3",
            limit,
        )
    }

    #[test]
    fn an_entry_without_an_id_is_a_job_named_by_its_entry() {
        let mut env = sample();
        env.recorded = false;
        let fields = read_back(fields_of(&env));
        assert_eq!(fields.get("id"), None, "no id field is written");
        let back = envelope_of(
            &fields,
            "q",
            crate::Priority::High,
            "1700000000000-3",
            1 << 20,
        )
        .expect("reads");
        assert_eq!(back.id, "q:h-1700000000000-3");
        assert!(!back.recorded);
    }

    /// `env`'s fields as Redis returns them: bulk strings.
    fn read_back(f: Vec<(&'static str, Value)>) -> Fields {
        f.into_iter().map(|(k, v)| (k, bytes_of(v))).collect()
    }

    /// `env`'s fields with `name` changed to `value`, or left out when `value` is `None`.
    fn with_field(env: &Envelope, name: &str, value: Option<&str>) -> Fields {
        read_back(
            fields_of(env)
                .into_iter()
                .filter_map(|(k, v)| match (k == name, value) {
                    (false, _) => Some((k, v)),
                    (true, Some(new)) => Some((k, Value::from(new))),
                    (true, None) => None,
                })
                .collect(),
        )
    }

    #[test]
    fn envelope_survives_its_fields() {
        let env = sample();
        assert_eq!(
            read(&read_back(fields_of(&env)), DEFAULT_PAYLOAD_LIMIT),
            Ok(env)
        );
    }

    #[test]
    fn missing_or_malformed_fields_are_named() {
        let env = sample();
        let f = with_field(&env, "type", None);
        assert_eq!(
            read(&f, DEFAULT_PAYLOAD_LIMIT),
            Err("field `type` is missing".into())
        );
        let f = with_field(&env, "attempt", Some("two"));
        assert_eq!(
            read(&f, DEFAULT_PAYLOAD_LIMIT),
            Err("field `attempt` is not a number".into())
        );
        let f = with_field(&env, "type", Some("{other}:x"));
        assert!(read(&f, DEFAULT_PAYLOAD_LIMIT).is_err());
    }

    #[test]
    fn hostile_job_ids_are_refused_on_read() {
        let env = sample();
        let huge = "x".repeat(1_000_000);
        for bad in ["", "a\nforged log line", "a b", "{q}", huge.as_str()] {
            let f = with_field(&env, "id", Some(bad));
            let err = read(&f, DEFAULT_PAYLOAD_LIMIT).err().unwrap_or_default();
            assert!(err.starts_with("field `id`"), "{bad:.20?}: {err}");
            assert!(err.len() < 300 && !err.contains('\n'), "{err}");
        }
        let f = with_field(&env, "id", Some("order-17:retry.2_x"));
        assert!(read(&f, DEFAULT_PAYLOAD_LIMIT).is_ok());
    }

    #[test]
    fn oversized_payloads_are_refused_on_read() {
        let env = sample();
        let err = read(&read_back(fields_of(&env)), 3)
            .err()
            .unwrap_or_default();
        assert!(err.contains("exceeds the limit"), "{err}");
    }

    #[test]
    fn fields_are_found_by_name_and_a_repeated_name_keeps_its_last_value() {
        let f: Fields = [("id", "a"), ("type", "t"), ("id", "b")]
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v)))
            .collect();
        assert_eq!(f.get("type").map(|b| b.as_ref()), Some(&b"t"[..]));
        assert_eq!(f.get("id").map(|b| b.as_ref()), Some(&b"b"[..]));
        assert_eq!(f.get("payload"), None);
    }

    #[test]
    fn xreadgroup_replies_are_read_with_deleted_entries_and_timeouts() {
        assert!(read_reply(Value::Null).unwrap_or_default().is_empty());
        let reply = Value::Array(vec![Value::Array(vec![
            Value::from("s:{q}:normal"),
            Value::Array(vec![
                Value::Array(vec![
                    Value::from("1-0"),
                    Value::Array(vec![Value::from("id"), Value::from("j1")]),
                ]),
                Value::Array(vec![Value::from("2-0"), Value::Null]),
            ]),
        ])]);
        let streams = read_reply(reply).unwrap_or_default();
        assert_eq!(streams.len(), 1);
        let (name, entries) = &streams[0];
        assert_eq!(name, "s:{q}:normal");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "1-0");
        assert_eq!(
            entries[0].1.as_ref().and_then(|f| f.get("id")).cloned(),
            Some(Bytes::from("j1"))
        );
        assert_eq!(entries[1], ("2-0".to_string(), None));
        assert!(read_reply(Value::Array(vec![Value::Array(vec![])])).is_err());
    }
}
