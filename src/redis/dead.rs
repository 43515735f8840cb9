//! Dead-letter streams (`<prefix>:{<queue>}:dlq`): reading, replaying and deleting entries.

use std::time::Duration;

use fred::prelude::*;
use futures::future::join_all;

use super::Store;
use super::entry::{Fields, entries_of, text_of};

/// One dead letter: its entry id and fields in stream order.
pub(crate) type DeadEntry = (String, Fields);

impl Store {
    /// How many dead letters `queue` holds (XLEN).
    pub(crate) async fn dead_count(&self, queue: &str) -> crate::Result<u64> {
        let key = self.keys.dlq(queue);
        let conn = self.node(&key).await?;
        conn.xlen(key).await.map_err(|e| self.fail(e))
    }

    /// Up to `count` dead letters of `queue` with ids from `start` to `end` (both included,
    /// `-` and `+` for the ends), oldest first, or newest first when `newest_first`.
    pub(crate) async fn dead_range(
        &self,
        queue: &str,
        start: &str,
        end: &str,
        count: u64,
        newest_first: bool,
    ) -> crate::Result<Vec<DeadEntry>> {
        let key = self.keys.dlq(queue);
        let conn = self.node(&key).await?;
        let reply: Value = if newest_first {
            conn.xrevrange(key, end, start, Some(count)).await
        } else {
            conn.xrange(key, start, end, Some(count)).await
        }
        .map_err(|e| self.fail(e))?;
        Ok(entries_of(reply)?
            .into_iter()
            .map(|(id, fields)| (id, fields.unwrap_or_default()))
            .collect())
    }

    /// Deletes the dead letters `ids` of `queue` (XDEL); returns how many existed.
    pub(crate) async fn dead_delete(&self, queue: &str, ids: Vec<String>) -> crate::Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let key = self.keys.dlq(queue);
        let conn = self.node(&key).await?;
        conn.xdel(key, ids).await.map_err(|e| self.fail(e))
    }

    /// Deletes every dead letter of `queue` in one atomic step (XTRIM MAXLEN = 0); returns
    /// how many.
    pub(crate) async fn dead_delete_all(&self, queue: &str) -> crate::Result<u64> {
        let key = self.keys.dlq(queue);
        let conn = self.node(&key).await?;
        conn.xtrim(key, ("MAXLEN", "=", 0))
            .await
            .map_err(|e| self.fail(e))
    }

    /// Deletes the dead letters of `queue` older than `age` on Redis' clock
    /// (`lua/purge_older.lua`); returns how many.
    pub(crate) async fn dead_delete_older(&self, queue: &str, age: Duration) -> crate::Result<u64> {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self.run(
            &self.scripts.purge_older,
            vec![self.keys.dlq(queue)],
            vec![age_ms.to_string().into()],
        )
        .await
    }

    /// Replays the dead letters `ids` of `queue` (`lua/replay.lua`, once per entry): each
    /// goes back to the ready stream of its priority as a fresh job and its dead letter is
    /// deleted, atomically; its status starts over as `queued`, kept `retention_ms`.
    /// Returns, per id, the job id when it was replayed and `None` when the entry was gone.
    ///
    /// The first call runs alone (it loads the script if the server lacks it); the rest are
    /// sent together and share round trips on the multiplexed connection.
    pub(crate) async fn dead_replay(
        &self,
        queue: &str,
        ids: &[String],
        retention_ms: u64,
    ) -> crate::Result<Vec<Option<String>>> {
        let [high, normal, low] = self.keys.streams(queue);
        let keys = vec![self.keys.dlq(queue), high, normal, low];
        let status_prefix = self.keys.job_prefix(queue);
        let call = |id: &String| {
            self.run::<Value>(
                &self.scripts.replay,
                keys.clone(),
                vec![
                    id.as_str().into(),
                    status_prefix.as_str().into(),
                    Value::from(retention_ms as i64),
                ],
            )
        };
        let Some((first, rest)) = ids.split_first() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(ids.len());
        out.push(replayed(call(first).await?)?);
        for reply in join_all(rest.iter().map(call)).await {
            out.push(replayed(reply?)?);
        }
        Ok(out)
    }
}

/// Reads `lua/replay.lua`'s reply: `{new entry id, job id}`, or 0 when the entry was gone.
fn replayed(reply: Value) -> crate::Result<Option<String>> {
    match reply {
        Value::Array(parts) if parts.len() == 2 => Ok(Some(text_of(&parts[1]))),
        Value::Integer(0) => Ok(None),
        other => Err(crate::Error::Decode(format!(
            "replay: unexpected reply {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use fred::types::Value;

    use super::replayed;

    #[test]
    fn replay_replies_read_as_a_job_id_none_or_a_decode_error() {
        let ok = Value::Array(vec![Value::from("5-0"), Value::from("j1")]);
        assert_eq!(replayed(ok).ok(), Some(Some("j1".to_string())));
        assert_eq!(replayed(Value::Integer(0)).ok(), Some(None));
        for bad in [Value::from("what"), Value::Array(vec![Value::from("5-0")])] {
            assert!(matches!(replayed(bad), Err(crate::Error::Decode(_))));
        }
    }
}
