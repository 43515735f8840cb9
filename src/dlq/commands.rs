//! The Redis commands behind the dead-letter operations, kept together in one place.
//!
//! Like `crate::redis`, this is the only part of its module that speaks Redis; the rest
//! works on parsed entries and stream ids.

use fred::prelude::{Client as RedisClient, StreamsInterface};
use fred::types::Value;
use fred::types::scripts::Script;
use futures::future::join_all;

use super::entry::{StreamId, text};
use crate::Result;
use crate::redis::scripts;

/// One stream entry: its id and its fields in stream order.
pub(super) type RawEntry = (String, Vec<(String, Value)>);

/// XLEN.
pub(super) async fn len(client: &RedisClient, key: &str) -> Result<u64> {
    Ok(client.xlen(key).await?)
}

/// Up to `count` entries with ids from `start` to `end` (both included), oldest first, or
/// newest first when `newest_first`.
pub(super) async fn range(
    client: &RedisClient,
    key: &str,
    start: StreamId,
    end: StreamId,
    count: u64,
    newest_first: bool,
) -> Result<Vec<RawEntry>> {
    let (start, end) = (start.to_string(), end.to_string());
    let reply: Value = if newest_first {
        client.xrevrange(key, end, start, Some(count)).await?
    } else {
        client.xrange(key, start, end, Some(count)).await?
    };
    Ok(entries(reply))
}

/// One entry by id.
pub(super) async fn get(client: &RedisClient, key: &str, id: StreamId) -> Result<Option<RawEntry>> {
    Ok(range(client, key, id, id, 1, false)
        .await?
        .into_iter()
        .next())
}

/// The newest entry's id, `None` for an empty or missing stream.
pub(super) async fn newest(client: &RedisClient, key: &str) -> Result<Option<StreamId>> {
    let newest = range(client, key, StreamId::MIN, StreamId::MAX, 1, true).await?;
    Ok(newest.first().and_then(|(id, _)| StreamId::parse(id)))
}

/// XDEL; returns how many of `ids` existed.
pub(super) async fn delete(client: &RedisClient, key: &str, ids: Vec<String>) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(client.xdel(key, ids).await?)
}

/// Deletes every entry (XTRIM MAXLEN = 0, one atomic command); returns how many.
pub(super) async fn delete_all(client: &RedisClient, key: &str) -> Result<u64> {
    Ok(client.xtrim(key, ("MAXLEN", "=", 0)).await?)
}

/// Deletes the entries older than `age_ms` on Redis' clock (lua/purge_older.lua).
pub(super) async fn delete_older(
    client: &RedisClient,
    script: &Script,
    key: &str,
    age_ms: u64,
) -> Result<u64> {
    let deleted: u64 = scripts::run(
        client,
        script,
        vec![key.to_string()],
        vec![age_ms.to_string().into()],
    )
    .await?;
    Ok(deleted)
}

/// Replays the dead letters `ids` (lua/replay.lua, once per entry); `keys` are the dlq
/// stream and the ready streams high, normal, low; `status` the job status key prefix and
/// retention (the replayed job's status starts over as `queued`). Returns, per id, the job id when it
/// was replayed and `None` when the entry was already gone.
///
/// The first call runs alone (it loads the script if the server lacks it); the rest are
/// sent together and share round trips on the multiplexed connection.
pub(super) async fn replay(
    client: &RedisClient,
    script: &Script,
    keys: &[String; 4],
    status: (&str, u64),
    ids: &[String],
) -> Result<Vec<Option<String>>> {
    let (status_prefix, retention_ms) = status;
    let call = |id: &String| {
        scripts::run::<Value>(
            client,
            script,
            keys.to_vec(),
            vec![
                id.as_str().into(),
                status_prefix.into(),
                Value::from(retention_ms as i64),
            ],
        )
    };
    let Some((first, rest)) = ids.split_first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(ids.len());
    out.push(replayed(call(first).await?));
    for reply in join_all(rest.iter().map(call)).await {
        out.push(replayed(reply?));
    }
    Ok(out)
}

/// Reads lua/replay.lua's reply: `{new entry id, job id}` or 0.
fn replayed(reply: Value) -> Option<String> {
    match reply {
        Value::Array(parts) => Some(parts.get(1).map(text).unwrap_or_default()),
        _ => None,
    }
}

/// Reads an XRANGE / XREVRANGE reply, skipping anything that is not an entry.
fn entries(reply: Value) -> Vec<RawEntry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let mut parts = parts.into_iter();
            let id = parts.next().map(|v| text(&v))?;
            Some((id, fields(parts.next().unwrap_or(Value::Null))))
        })
        .collect()
}

/// An entry's fields, from a flat array (RESP2) or a map (RESP3).
fn fields(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Array(flat) => {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let Some(name) = it.next() {
                out.push((text(&name), it.next().unwrap_or(Value::Null)));
            }
            out
        }
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.as_bytes()).into_owned(),
                    v.clone(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}
