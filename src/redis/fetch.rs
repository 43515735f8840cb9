//! Fetching: the blocking read connection of one fetch loop, and its consumer group.

use std::time::Duration;

use fred::prelude::*;

use super::entry::{Entry, read_reply};
use super::keys::GROUP;
use super::{Store, fail};

/// A connection of its own for one fetch loop's reads, which may block: they must never
/// share a connection, or every other command on it would wait for the read.
pub(crate) struct Reader {
    conn: Client,
    consumer: String,
}

impl Store {
    /// A read connection for `consumer`, connected.
    pub(crate) async fn reader(&self, consumer: &str) -> crate::Result<Reader> {
        Ok(Reader {
            conn: self.connector.dedicated().await?,
            consumer: consumer.to_string(),
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
    pub(crate) async fn read_ready(
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

    /// Closes the connection. It may still be inside a blocking read: that is interrupted
    /// first (a command on a blocked client makes the client library send CLIENT UNBLOCK; a
    /// PING does, QUIT does not), so an entry arriving now stays undelivered for the
    /// workers still running.
    pub(crate) async fn close(&self) {
        let _: Result<(), _> = self.conn.ping(None).await;
        let _ = self.conn.quit().await;
    }
}
