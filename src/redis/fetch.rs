//! Fetching: the blocking read connection of one fetch loop, and its consumer group.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;

use super::cluster::{Cluster, Node, slot_of, stale_map};
use super::entry::{Entry, entries_of, list_of, read_reply, text_of};
use super::keys::GROUP;
use super::scripts::run;
use super::settle::{StreamAcks, push_acks};
use super::{Route, Store, fail};

/// A connection of its own for one fetch loop's reads, which may block: they must never
/// share a connection, or every other command on it would wait for the read.
pub(crate) struct Reader {
    conn: ReadConn,
    consumer: String,
    fetch: fred::types::scripts::Script,
    oldest: fred::types::scripts::Script,
}

/// The connection of a [`Reader`].
enum ReadConn {
    /// A single server (or a sentinel's primary): one client, which reconnects by itself.
    Fixed(Client),
    /// A cluster: a client of the primary serving the streams' slot (all of a queue's keys
    /// share one), connected on first use, and again, to the primary the slot map names
    /// then, after the connection was lost or a command was redirected. A lost connection
    /// ends a call at once (within [`WATCH_EVERY`]) instead of waiting for the node.
    Routed {
        cluster: Arc<Cluster>,
        current: Mutex<Option<(Arc<Node>, Client)>>,
    },
}

/// How often a cluster read checks that its connection is still up.
const WATCH_EVERY: Duration = Duration::from_millis(200);

impl Store {
    /// A read connection for `consumer`: connected, or on a cluster connected at the first
    /// call, to the primary of the streams it is given.
    pub(crate) async fn reader(&self, consumer: &str) -> crate::Result<Reader> {
        let conn = match &self.route {
            Route::Pool(_) => ReadConn::Fixed(self.connector.dedicated().await?),
            Route::Cluster(c) => ReadConn::Routed {
                cluster: c.clone(),
                current: Mutex::new(None),
            },
        };
        Ok(Reader {
            conn,
            consumer: consumer.to_string(),
            fetch: self.scripts.fetch.clone(),
            oldest: self.scripts.oldest.clone(),
        })
    }
}

impl Reader {
    /// The client for a call on `stream`: on a cluster, of the primary serving its slot,
    /// connecting (again) when there is none yet, it is lost, or the slot moved.
    async fn client(&self, stream: &str) -> crate::Result<Client> {
        let (cluster, current) = match &self.conn {
            ReadConn::Fixed(c) => return Ok(c.clone()),
            ReadConn::Routed { cluster, current } => (cluster, current),
        };
        let node = cluster.primary(slot_of(stream.as_bytes())).await?;
        let old = {
            let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
            match &*current {
                Some((n, c)) if Arc::ptr_eq(n, &node) && c.is_connected() => {
                    return Ok(c.clone());
                }
                _ => current.take(),
            }
        };
        if let Some((_, c)) = old {
            close_later(c);
        }
        let client = match cluster
            .connector()
            .dedicated_at(node.host(), node.port())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                cluster.note(&e);
                return Err(e);
            }
        };
        let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = current.replace((node, client.clone())) {
            close_later(c);
        }
        Ok(client)
    }

    /// `call`'s outcome on `client`. On a cluster, a lost connection ends it at once, and
    /// an error that says the slot map may be stale drops the connection (the next call
    /// connects to the primary the map names then) and has the map read again.
    async fn guarded<T>(
        &self,
        client: &Client,
        call: impl Future<Output = crate::Result<T>>,
    ) -> crate::Result<T> {
        let (cluster, current) = match &self.conn {
            ReadConn::Fixed(_) => return call.await,
            ReadConn::Routed { cluster, current } => (cluster, current),
        };
        let lost = async {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                if !client.is_connected() {
                    break;
                }
            }
        };
        let r = tokio::select! {
            r = call => r,
            _ = lost => Err(crate::Error::Connection(
                "the connection to the cluster node was lost".into(),
            )),
        };
        if let Err(e) = &r
            && stale_map(e)
        {
            let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|(_, c)| c.id() == client.id())
                && let Some((_, c)) = current.take()
            {
                close_later(c);
            }
            cluster.note(e);
        }
        r
    }

    /// Creates the consumer group on each stream (creating the streams too), reading from
    /// the start so entries added before the group existed are not skipped. An existing
    /// group is fine.
    pub(crate) async fn ensure_groups(&self, streams: &[String]) -> crate::Result<()> {
        let Some(first) = streams.first() else {
            return Ok(());
        };
        let client = self.client(first).await?;
        let p = client.pipeline();
        for s in streams {
            let _: () = p
                .xgroup_create(s.as_str(), GROUP, "0", true)
                .await
                .map_err(fail)?;
        }
        self.guarded(&client, async {
            for r in p.try_all::<Value>().await {
                match r {
                    Err(e) if !e.details().starts_with("BUSYGROUP") => return Err(fail(e)),
                    _ => {}
                }
            }
            Ok(())
        })
        .await
    }

    /// Reads up to `count` new entries from each of `streams`, blocking up to `block` when
    /// none is there. Streams with nothing new are left out of the reply.
    pub(crate) async fn read_blocking(
        &self,
        count: u64,
        block: Duration,
        streams: Vec<String>,
    ) -> crate::Result<Vec<(String, Vec<Entry>)>> {
        let Some(first) = streams.first() else {
            return Ok(Vec::new());
        };
        let client = self.client(first).await?;
        let ids = vec![">"; streams.len()];
        let read = client.xreadgroup::<Value, _, _, _, _>(
            GROUP,
            self.consumer.as_str(),
            Some(count),
            Some(block.as_millis() as u64),
            false,
            streams,
            ids,
        );
        let reply = self
            .guarded(&client, async { read.await.map_err(fail) })
            .await?;
        read_reply(reply)
    }

    /// Reads from several streams with a different COUNT each, in one round trip, without
    /// blocking. Returns the entries (or the error) per requested stream, in request order:
    /// one stream's error does not hide what the others delivered.
    pub(crate) async fn read_shares(
        &self,
        requests: &[(String, u64)],
    ) -> crate::Result<Vec<crate::Result<Vec<Entry>>>> {
        let Some((first, _)) = requests.first() else {
            return Ok(Vec::new());
        };
        let client = self.client(first).await?;
        let p = client.pipeline();
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
        let replies = self
            .guarded(&client, async { Ok(p.try_all::<Value>().await) })
            .await?;
        if let Some(e) = replies.iter().find_map(|r| r.as_ref().err()) {
            // A lost connection or a redirection fails every read of the round trip.
            let e = fail(e.clone());
            if stale_map(&e) {
                return self.guarded(&client, async { Err(e) }).await;
            }
        }
        for r in replies {
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
        let client = self.client(&streams[0]).await?;
        let reply: Value = self
            .guarded(&client, run(&client, &self.fetch, keys, args))
            .await?;
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

    /// How long the oldest undelivered entry of each of `streams` (high, normal, low) has
    /// waited, in ms on Redis' clock (`lua/oldest.lua`); `None` for a stream with nothing
    /// waiting.
    pub(crate) async fn oldest_waiting(
        &self,
        streams: &[String; 3],
    ) -> crate::Result<[Option<u64>; 3]> {
        let client = self.client(&streams[0]).await?;
        let ages: Vec<i64> = self
            .guarded(
                &client,
                run(
                    &client,
                    &self.oldest,
                    streams.to_vec(),
                    vec![Value::from(GROUP)],
                ),
            )
            .await?;
        let age = |i: usize| ages.get(i).and_then(|a| u64::try_from(*a).ok());
        Ok([age(0), age(1), age(2)])
    }

    /// Closes the connection. It may still be inside a blocking read: that is interrupted
    /// first (a command on a blocked client makes the client library send CLIENT UNBLOCK; a
    /// PING does, QUIT does not), so an entry arriving now stays undelivered for the
    /// workers still running.
    pub(crate) async fn close(&self) {
        let client = match &self.conn {
            ReadConn::Fixed(c) => c.clone(),
            ReadConn::Routed { current, .. } => {
                let taken = current.lock().unwrap_or_else(|e| e.into_inner()).take();
                match taken {
                    Some((_, c)) => c,
                    None => return,
                }
            }
        };
        let _: Result<(), _> = client.ping(None).await;
        let _ = client.quit().await;
    }
}

/// Closes a cluster read connection no longer used, in the background (its node may be
/// gone: the QUIT waits a second at most). A read blocked on it is interrupted first.
fn close_later(client: Client) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if client.is_connected() {
                let _: Result<(), _> = client.ping(None).await;
            }
            let _ = client.quit().await;
        })
        .await;
    });
}
