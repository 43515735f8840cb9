//! The janitor's takeover: pending entries of dead workers claimed, poison dead-lettered,
//! idle consumers of past runs forgotten.

use std::time::Duration;

use fred::prelude::*;

use super::Store;
use super::entry::{Fields, list_of, text_of};
use super::keys::GROUP;

/// One page of a scan of a ready stream's pending entries (`lua/reclaim.lua`).
#[derive(Debug, Clone)]
pub(crate) struct ReclaimScan<'a> {
    pub(crate) queue: &'a str,
    pub(crate) stream: &'a str,
    /// The scanning worker: it takes the entries over.
    pub(crate) consumer: &'a str,
    /// Entries idle for less are left alone (zero for entries handed back at a stop).
    pub(crate) idle: Duration,
    /// Deliveries after which an entry is poison.
    pub(crate) max_deliveries: u32,
    pub(crate) page: u32,
    /// `-` for the first page, then the previous page's `next`.
    pub(crate) start: &'a str,
    /// Only entries of this consumer (a stopped worker's hand-off), or of any.
    pub(crate) only: Option<&'a str>,
    /// Other consumers that are alive: their entries are left alone.
    pub(crate) alive: &'a [&'a String],
    /// How long a poison job's `dead` status is kept (0: none is written).
    pub(crate) retention_ms: u64,
}

/// A poison entry moved to the dead-letter stream by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Poisoned {
    pub(crate) entry_id: String,
    /// The job id and type the entry held ('' when missing), unchecked.
    pub(crate) job_id: String,
    pub(crate) job_type: String,
}

/// What one page of a scan did.
#[derive(Debug, Default)]
pub(crate) struct ReclaimPage {
    /// Where the next page starts; `None` when the scan is done.
    pub(crate) next: Option<String>,
    /// Entries now owned by the scanning worker (a delivery counted), with their fields.
    pub(crate) claimed: Vec<(String, Fields)>,
    pub(crate) poisoned: Vec<Poisoned>,
    /// Pending entries whose data was gone: acknowledged.
    pub(crate) deleted: Vec<String>,
    /// The scanning worker's own entries idle past the lease (left as they are).
    pub(crate) mine: Vec<String>,
    /// Entries of dead workers an operator had asked to cancel: their jobs are marked
    /// cancelled instead of taken over (job id and type as in `poisoned`).
    pub(crate) cancelled: Vec<Poisoned>,
}

impl Store {
    /// Scans one page (`lua/reclaim.lua`).
    pub(crate) async fn reclaim_page(&self, s: &ReclaimScan<'_>) -> crate::Result<ReclaimPage> {
        let mut args: Vec<Value> = vec![
            GROUP.into(),
            s.consumer.into(),
            Value::from(s.idle.as_millis() as i64),
            Value::from(i64::from(s.max_deliveries)),
            Value::from(i64::from(s.page)),
            s.start.into(),
            self.keys.job_prefix(s.queue).into(),
            s.only.unwrap_or_default().into(),
            Value::from(s.retention_ms as i64),
        ];
        args.extend(s.alive.iter().map(|a| Value::from(a.as_str())));
        let reply = self
            .run::<Value>(
                &self.scripts.reclaim,
                vec![
                    s.stream.to_string(),
                    self.keys.dlq(s.queue),
                    self.keys.cancel(s.queue),
                    self.keys.totals(s.queue),
                ],
                args,
            )
            .await?;
        ReclaimPage::parse(reply)
    }

    /// Claims `consumer`'s own entries `ids` of `stream` again (a new delivery), with their
    /// fields; entries whose data is gone are left out.
    pub(crate) async fn take_back(
        &self,
        stream: &str,
        consumer: &str,
        min_idle: Duration,
        ids: Vec<String>,
    ) -> crate::Result<Vec<(String, Fields)>> {
        let conn = self.node(stream).await?;
        let reply: Value = conn
            .xclaim(
                stream,
                GROUP,
                consumer,
                min_idle.as_millis() as u64,
                ids,
                None,
                None,
                None,
                false,
                false,
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(super::entry::entries_of(reply)?
            .into_iter()
            .filter_map(|(id, fields)| fields.map(|f| (id, f)))
            .collect())
    }

    /// Removes consumers of `stream` that own nothing, idle for `idle`, of no live worker
    /// (`lua/prune_consumers.lua`); returns their names.
    pub(crate) async fn prune_consumers(
        &self,
        stream: &str,
        idle: Duration,
        alive: &[String],
    ) -> crate::Result<Vec<String>> {
        let mut args: Vec<Value> = vec![GROUP.into(), Value::from(idle.as_millis() as i64)];
        args.extend(alive.iter().map(|a| Value::from(a.as_str())));
        let reply = self
            .run::<Value>(
                &self.scripts.prune_consumers,
                vec![stream.to_string()],
                args,
            )
            .await?;
        Ok(strings(reply))
    }
}

impl ReclaimPage {
    /// Reads `{next start or '', claimed, poisoned, deleted, mine, cancelled}`.
    fn parse(reply: Value) -> crate::Result<ReclaimPage> {
        let Value::Array(parts) = reply else {
            return Err(crate::Error::Decode(
                "reclaim: expected a list of six parts".into(),
            ));
        };
        if parts.len() != 6 {
            return Err(crate::Error::Decode(format!(
                "reclaim: expected six parts, got {}",
                parts.len()
            )));
        }
        let mut parts = parts.into_iter();
        let mut next_part = || parts.next().unwrap_or(Value::Null);
        let next = Some(text_of(&next_part())).filter(|s| !s.is_empty());
        let claimed = super::entry::entries_of(next_part())?
            .into_iter()
            .filter_map(|(id, fields)| fields.map(|f| (id, f)))
            .collect();
        let poisoned = triples(next_part());
        let deleted = strings(next_part());
        let mine = strings(next_part());
        let cancelled = triples(next_part());
        Ok(ReclaimPage {
            next,
            claimed,
            poisoned,
            deleted,
            mine,
            cancelled,
        })
    }
}

/// A list of {entry id, job id, job type}.
fn triples(v: Value) -> Vec<Poisoned> {
    list_of(v)
        .into_iter()
        .filter_map(|v| {
            let mut t = list_of(v).into_iter().map(|v| text_of(&v));
            Some(Poisoned {
                entry_id: t.next()?,
                job_id: t.next().unwrap_or_default(),
                job_type: t.next().unwrap_or_default(),
            })
        })
        .collect()
}

/// A list of strings; anything else reads as none.
fn strings(v: Value) -> Vec<String> {
    list_of(v).into_iter().map(|v| text_of(&v)).collect()
}

#[cfg(test)]
mod tests {
    use fred::types::Value;

    use super::ReclaimPage;

    #[test]
    fn a_page_reads_its_six_parts_and_anything_else_is_a_decode_error() {
        let entry = Value::Array(vec![
            Value::from("1-0"),
            Value::Array(vec![Value::from("id"), Value::from("j1")]),
        ]);
        let reply = Value::Array(vec![
            Value::from("(1-0"),
            Value::Array(vec![entry]),
            Value::Array(vec![Value::Array(vec![
                Value::from("2-0"),
                Value::from("j2"),
                Value::from("t.job"),
            ])]),
            Value::Array(vec![Value::from("3-0")]),
            Value::Array(vec![]),
            Value::Array(vec![Value::Array(vec![
                Value::from("4-0"),
                Value::from("j4"),
                Value::from("t.other"),
            ])]),
        ]);
        let page = ReclaimPage::parse(reply).expect("a page");
        assert_eq!(page.next.as_deref(), Some("(1-0"));
        assert_eq!(page.claimed.len(), 1);
        assert_eq!(page.poisoned[0].job_type, "t.job");
        assert_eq!(page.deleted, vec!["3-0".to_string()]);
        assert!(page.mine.is_empty());
        assert_eq!(page.cancelled[0].job_id, "j4");
        for bad in [
            Value::Integer(1),
            Value::Null,
            Value::Array(vec![Value::from(""), Value::Array(vec![])]),
        ] {
            assert!(
                matches!(ReclaimPage::parse(bad), Err(crate::Error::Decode(_))),
                "a malformed page is an error, not a panic"
            );
        }
        let done = ReclaimPage::parse(Value::Array(vec![
            Value::from(""),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![]),
        ]))
        .expect("an empty page");
        assert!(done.next.is_none() && done.claimed.is_empty());
    }
}
