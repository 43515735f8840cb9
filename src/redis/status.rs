//! Job status by id, read from whatever holds the job (`lua/status.lua`;
//! docs/architecture.md, "Data model"): its status hash `<prefix>:{<queue>}:job:<id>` when
//! it has one; else, for an id that names an entry, that entry and the group's pending
//! list while it waits or runs, and the queue's done bucket once it succeeded.

use std::collections::HashMap;

use fred::prelude::*;

use super::Store;
use super::entry::{Fields, list_of, text_of};
use super::keys::GROUP;

/// What Redis holds about one job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found {
    /// Its status hash.
    Record(HashMap<String, String>),
    /// Its entry, waiting or (with an owner) running.
    Entry {
        fields: Fields,
        /// The consumer running it, with how long ago its lease was last renewed (ms) and
        /// how many times it was delivered; `None` while it waits.
        running: Option<(String, u64, u64)>,
        /// A cancel request for it, running (`who`, `why`).
        cancel: Option<(String, String)>,
    },
    /// Its done-bucket record (see `Succeeded::done_value`).
    Done(String),
    /// Nothing: never enqueued here, or its record expired.
    Nothing,
}

impl Store {
    /// Where job `id` of `queue` is, in one script call.
    pub(crate) async fn job_status(&self, queue: &str, id: &str) -> crate::Result<Found> {
        let (keys, args) = self.status_call(queue, id);
        let reply: Value = self.run(&self.scripts.status, keys, args).await?;
        found(reply)
    }

    /// Where job `id` is, in the first of `queues` that knows it, the queues asked all at
    /// once.
    pub(crate) async fn find_job_status(
        &self,
        queues: &[String],
        id: &str,
    ) -> crate::Result<Option<(String, Found)>> {
        let calls = queues.iter().map(|q| {
            let (keys, args) = self.status_call(q, id);
            self.run::<Value>(&self.scripts.status, keys, args)
        });
        let replies = futures::future::join_all(calls).await;
        for (q, reply) in queues.iter().zip(replies) {
            match found(reply?)? {
                Found::Nothing => {}
                f => return Ok(Some((q.clone(), f))),
            }
        }
        Ok(None)
    }

    fn status_call(&self, queue: &str, id: &str) -> (Vec<String>, Vec<Value>) {
        let record = self.keys.job(queue, id);
        match (crate::names::parse_locator(id), self.keys.done_of(id)) {
            (Some((q, priority, entry)), Some(done)) if q == queue => (
                vec![
                    record,
                    self.keys.stream(queue, priority),
                    done,
                    self.keys.cancel(queue),
                ],
                vec![GROUP.into(), entry.into(), id.into()],
            ),
            _ => (
                vec![record.clone(), record.clone(), record.clone(), record],
                vec![GROUP.into(), "".into(), id.into()],
            ),
        }
    }
}

/// Reads a reply of `lua/status.lua`.
fn found(reply: Value) -> crate::Result<Found> {
    let bad = || crate::Error::Decode("unexpected reply of the status script".into());
    let mut parts = list_of(reply).into_iter();
    let kind = parts.next().map(|k| text_of(&k)).ok_or_else(bad)?;
    Ok(match kind.as_str() {
        "record" => {
            let flat = list_of(parts.next().ok_or_else(bad)?);
            let mut h = HashMap::with_capacity(flat.len() / 2);
            let mut it = flat.iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                h.insert(text_of(k), text_of(v));
            }
            Found::Record(h)
        }
        "entry" => {
            let fields = Fields::from_value(parts.next().ok_or_else(bad)?);
            let owner = parts.next().map(|o| text_of(&o)).unwrap_or_default();
            let num = |v: Option<Value>| v.and_then(|v| v.as_u64()).unwrap_or(0);
            let idle = num(parts.next());
            let deliveries = num(parts.next());
            let request = parts.next().map(|v| text_of(&v)).unwrap_or_default();
            let cancel = (!request.is_empty()).then(|| match request.split_once('\n') {
                Some((who, why)) => (who.to_string(), why.to_string()),
                None => (String::new(), request.clone()),
            });
            Found::Entry {
                fields,
                running: (!owner.is_empty()).then_some((owner, idle, deliveries)),
                cancel,
            }
        }
        "done" => Found::Done(parts.next().map(|v| text_of(&v)).ok_or_else(bad)?),
        "none" => Found::Nothing,
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_that_do_not_read_are_decode_errors() {
        for reply in [
            Value::Null,
            Value::Array(vec![]),
            Value::Array(vec!["what".into()]),
            Value::Array(vec!["done".into()]),
            Value::Array(vec!["record".into()]),
        ] {
            assert!(
                matches!(found(reply.clone()), Err(crate::Error::Decode(_))),
                "{reply:?}"
            );
        }
        assert_eq!(
            found(Value::Array(vec!["none".into()])).ok(),
            Some(Found::Nothing)
        );
    }
}
