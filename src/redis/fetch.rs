//! Fetching: the blocking read connection of one fetch loop, and its consumer group.

use std::time::Duration;

use fred::prelude::*;

use super::entry::{Entry, entries_of, list_of, read_reply, text_of};
use super::keys::GROUP;
use super::scripts::run;
use super::settle::{StreamAcks, push_acks};
use super::{Store, fail};

/// A connection of its own for one fetch loop's reads, which may block: they must never
/// share a connection, or every other command on it would wait for the read.
pub(crate) struct Reader {
    conn: Client,
    consumer: String,
    fetch: fred::types::scripts::Script,
}

impl Store {
    /// A read connection for `consumer`, connected.
    pub(crate) async fn reader(&self, consumer: &str) -> crate::Result<Reader> {
        Ok(Reader {
            conn: self.connector.dedicated().await?,
            consumer: consumer.to_string(),
            fetch: self.scripts.fetch.clone(),
        })
    }
}

impl Reader {
    /// Creates the consumer group on each stream (creating the streams too), reading from
    /// the start so entries added before the group existed are not skipped. An existing
    /// group is fine.
    pub(crate) async fn ensure_groups(&self, streams: &[String]) -> crate::Result<()> {
        let p = self.conn.pipeline();
        for s in streams {
            let _: () = p
                .xgroup_create(s.as_str(), GROUP, "0", true)
                .await
                .map_err(fail)?;
        }
        for r in p.try_all::<Value>().await {
            match r {
                Err(e) if !e.details().starts_with("BUSYGROUP") => return Err(fail(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads up to `count` new entries from each of `streams`, blocking up to `block` when
    /// none is there. Streams with nothing new are left out of the reply.
    pub(crate) async fn read_blocking(
        &self,
        count: u64,
        block: Duration,
        streams: Vec<String>,
    ) -> crate::Result<Vec<(String, Vec<Entry>)>> {
        let ids = vec![">"; streams.len()];
        let reply: Value = self
            .conn
            .xreadgroup(
                GROUP,
                self.consumer.as_str(),
                Some(count),
                Some(block.as_millis() as u64),
                false,
                streams,
                ids,
            )
            .await
            .map_err(fail)?;
        read_reply(reply)
    }

    /// Reads from several streams with a different COUNT each, in one round trip, without
    /// blocking. Returns the entries (or the error) per requested stream, in request order:
    /// one stream's error does not hide what the others delivered.
    pub(crate) async fn read_shares(
        &self,
        requests: &[(String, u64)],
    ) -> crate::Result<Vec<crate::Result<Vec<Entry>>>> {
        let p = self.conn.pipeline();
        for (stream, count) in requests {
            let _: () = p
                .xreadgroup(
                    GROUP,
                    self.consumer.as_str(),
                    Some(*count),
                    None,
                    false,
                    stream.as_str(),
                    ">",
                )
                .await
                .map_err(fail)?;
        }
        let mut out = Vec::with_capacity(requests.len());
        for r in p.try_all::<Value>().await {
            out.push(r.map_err(fail).and_then(read_reply).map(|streams| {
                streams
                    .into_iter()
                    .next()
                    .map(|(_, e)| e)
                    .unwrap_or_default()
            }));
        }
        Ok(out)
    }

    /// Reads up to `shares[i]` new entries from `streams[i]` (high, normal, low) without
    /// blocking, in one script call (`lua/fetch.lua`): what one stream cannot fill goes
    /// to the others, most urgent first, and never more than the shares' sum in all.
    /// First, in the same call, acknowledges `finished[i]`, finished entries of
    /// `streams[i]`, and records their success as [`Store::ack_batch`] does.
    /// Returns the entries (or the error) per stream: one stream's error does not hide
    /// what the others delivered.
    pub(crate) async fn read_ready(
        &self,
        streams: &[String; 3],
        shares: [u32; 3],
        finished: &[StreamAcks; 3],
    ) -> crate::Result<[crate::Result<Vec<Entry>>; 3]> {
        let mut keys = streams.to_vec();
        let mut args: Vec<Value> = vec![GROUP.into(), self.consumer.as_str().into()];
        args.extend(shares.iter().map(|n| Value::from(i64::from(*n))));
        args.push(Value::from(crate::clock::now_ms() as i64));
        let sections = finished.iter().filter(|f| !f.ids.is_empty()).count();
        args.push(Value::from(sections as i64));
        for (i, f) in finished.iter().enumerate() {
            if !f.ids.is_empty() {
                args.push(Value::from(i as i64 + 1));
                push_acks(&mut keys, &mut args, &f.ids, &f.records);
            }
        }
        let reply: Value = run(&self.conn, &self.fetch, keys, args).await?;
        let mut parts = list_of(reply).into_iter();
        let mut entries: Vec<crate::Result<Vec<Entry>>> = Vec::with_capacity(3);
        for _ in 0..3 {
            entries.push(entries_of(parts.next().unwrap_or(Value::Null)));
        }
        let errors = list_of(parts.next().unwrap_or(Value::Null));
        for (e, error) in entries.iter_mut().zip(errors) {
            let error = text_of(&error);
            if !error.is_empty() {
                // As the read itself would have failed: a lost group reads as one.
                *e = Err(crate::Error::Redis(error));
            }
        }
        let [h, n, l]: [crate::Result<Vec<Entry>>; 3] = entries
            .try_into()
            .map_err(|_| crate::Error::Decode("fetch script: three streams".into()))?;
        Ok([h, n, l])
    }

    /// Closes the connection. It may still be inside a blocking read: that is interrupted
    /// first (a command on a blocked client makes the client library send CLIENT UNBLOCK; a
    /// PING does, QUIT does not), so an entry arriving now stays undelivered for the
    /// workers still running.
    pub(crate) async fn close(&self) {
        let _: Result<(), _> = self.conn.ping(None).await;
        let _ = self.conn.quit().await;
    }
}
