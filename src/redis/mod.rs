//! The storage layer: the only module that speaks Redis.
//!
//! [`Store`] holds the connection pool, the key names and the script registry; every Redis
//! operation of the library is one method of it (or of [`Reader`], the blocking read
//! connection of one fetch loop, or of [`Subscription`]), named for what it does, with
//! typed arguments and a typed result. Worker, janitor, promoter, dead letters, admin,
//! status, metrics and client call these and never build a command themselves, so the data
//! model (docs/architecture.md, "Data model") lives in this one module:
//!
//! - `keys`: every key name; `entry`: what a stream entry holds;
//! - `scripts`: the Lua registry, with the shared prelude;
//! - `conn`: URL, TLS, timeouts, reconnects;
//! - one file per part of a job's life: `enqueue`, `fetch`, `settle` (started, acknowledged,
//!   retried, dead-lettered), `leases` (renewals, heartbeats, hand-off), `reclaim` (the
//!   janitor's takeover), `promote`, `dead` (dead-letter streams), `control` (pause, totals,
//!   queue registry, health probes), `jobctl` (cancel, delete, retry now, purge), `deps` (dependencies and batches), `limits` (rate limits and their buckets), `partitions` (how many a queue has), `periodic`,
//!   `stats`, `status`.
//!
//! Errors leave this layer as [`crate::Error`]: [`Error::Connection`](crate::Error),
//! `Timeout`, `Redis` (refused), or `Decode` for a reply that does not read as expected.

mod cluster;
mod conn;
mod control;
mod dead;
mod deps;
mod enqueue;
mod entry;
pub(crate) mod keys;
mod leases;
mod limits;
mod partitions;
mod periodic;
mod promote;
mod reclaim;
mod room;
mod scripts;
mod settle;
mod stats;
mod status;

mod fetch;
mod hooks;
mod jobctl;
#[cfg(test)]
mod tests;

pub(crate) use conn::{Connector, TlsFiles};
pub(crate) use dead::DeadEntry;
pub(crate) use deps::{Depended, Heard, HeldJob, TargetKind};
pub(crate) use enqueue::{JobWrite, Written};
pub(crate) use entry::{Entry, Fields, envelope_of};
pub(crate) use fetch::Reader;
pub(crate) use jobctl::{Asked, Control, Controlled, PurgeFilter, PurgePlace};
pub(crate) use keys::partition_names;
pub(crate) use leases::WorkerDetails;
pub(crate) use limits::{Bucket, Class, SlotSet, Taken};
pub(crate) use partitions::Declared;
pub(crate) use periodic::{CronClaim, CronState};
pub(crate) use promote::{Promoted, Subscription, WakeMessage};
pub(crate) use reclaim::ReclaimScan;
pub(crate) use room::capacity_field;
pub(crate) use settle::{Again, DeadLetter, Fenced, Retry, StreamAcks, Succeeded, status_about};
pub(crate) use stats::{LIVE_WORKER_WINDOW_MS, QueueCounts};
pub(crate) use status::Found;

use std::sync::Arc;

use fred::prelude::{Client, FromValue, Pool, Value};
use fred::types::scripts::Script;

use crate::Priority;
use cluster::{Batch, Cluster, Node, slot_of};
use keys::Keys;
use scripts::Scripts;

/// The pool, the key names and the scripts of one client; shared by its workers.
pub(crate) struct Store {
    route: Route,
    connector: Connector,
    keys: Keys,
    scripts: Scripts,
    /// Producers' waits for room in bounded queues (`room`).
    rooms: room::Rooms,
}

/// Where commands go.
enum Route {
    /// A single server, or the primary a sentinel names: one pool for everything.
    Pool(Pool),
    /// A Redis Cluster: each command to the primary of its key's slot, over a pool per
    /// primary (`cluster`), so a dead primary stops only its own slots' commands.
    Cluster(Arc<Cluster>),
}

/// A connection for one command: borrowed from the pool, or a node's (a cheap clone).
pub(super) enum Conn<'a> {
    Pooled(&'a Client),
    Node(Client),
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self {
            Conn::Pooled(c) => c,
            Conn::Node(c) => c,
        }
    }
}

impl Store {
    /// Whether this store routes over a Redis Cluster's primaries.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.route, Route::Cluster(_))
    }

    /// Connects a pool of `pool_size` connections through `connector`; with a cluster URL,
    /// reads the slot map and connects a pool of that size per primary as it is first used.
    pub(crate) async fn connect(
        connector: Connector,
        pool_size: usize,
        prefix: &str,
    ) -> crate::Result<Store> {
        let route = match connector.cluster_seeds() {
            Some(seeds) => {
                Route::Cluster(Cluster::connect(connector.clone(), seeds, pool_size).await?)
            }
            None => Route::Pool(connector.pool(pool_size).await?),
        };
        Ok(Store {
            route,
            connector,
            keys: Keys::new(prefix),
            scripts: Scripts::new(),
            rooms: room::Rooms::default(),
        })
    }

    /// The key names under this store's prefix.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for a command on `key`: the next of the pool (multiplexed: any command
    /// may use any of them), or on a cluster one to the primary serving `key`'s slot.
    async fn node(&self, key: &str) -> crate::Result<Conn<'_>> {
        match &self.route {
            Route::Pool(p) => Ok(Conn::Pooled(p.next())),
            Route::Cluster(c) => match c.client(slot_of(key.as_bytes())).await {
                Ok((_, client)) => Ok(Conn::Node(client)),
                Err(e) => Err(e),
            },
        }
    }

    /// The node and a connection of it for a command on `key` in a [`Batch`]; `None` for a
    /// single server.
    async fn batch_node(&self, key: &str) -> crate::Result<Option<(Arc<Node>, Client)>> {
        match &self.route {
            Route::Pool(_) => Ok(None),
            Route::Cluster(c) => c.client(slot_of(key.as_bytes())).await.map(Some),
        }
    }

    /// A batch of commands sent in one round trip: one pipeline, or on a cluster one per
    /// primary, all sent concurrently (see [`Batch`]).
    fn batch(&self) -> Batch {
        match &self.route {
            Route::Pool(p) => Batch::single(p.next()),
            Route::Cluster(_) => Batch::routed(),
        }
    }

    /// Sends a batch whose replies are not read; fails with the first error any command met.
    async fn batch_ok(&self, b: Batch) -> crate::Result<()> {
        match b.try_all().await.into_iter().find_map(Result::err) {
            Some(e) => Err(self.fail(e)),
            None => Ok(()),
        }
    }

    /// [`fail`], and on a cluster a read of the slot map when the error says it may be
    /// stale (a redirection, a lost connection, a timeout).
    fn fail(&self, e: fred::error::Error) -> crate::Error {
        let e = fail(e);
        self.noted(e)
    }

    /// `e`, after asking for a read of the slot map if it says the map may be stale.
    fn noted(&self, e: crate::Error) -> crate::Error {
        if let Route::Cluster(c) = &self.route {
            c.note(&e);
        }
        e
    }

    /// Runs `script` by SHA (loading it on `NOSCRIPT`) on the node of its first key. On a
    /// cluster, a redirection (`MOVED`, `ASK`: the server ran nothing) reads the slot map
    /// again and sends the call to the primary it names, twice at most.
    async fn run<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> crate::Result<R> {
        let c = match &self.route {
            Route::Pool(p) => return scripts::run(p.next(), script, keys, args).await,
            Route::Cluster(c) => c,
        };
        let slot = keys.first().map(|k| slot_of(k.as_bytes())).unwrap_or(0);
        let keys: Vec<fred::types::Key> = keys.into_iter().map(Into::into).collect();
        let mut redirects = 0;
        loop {
            let seen = c.generation();
            let (_, client) = c.client(slot).await?;
            match script
                .evalsha_with_reload::<R, _, _>(&client, keys.clone(), args.clone())
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let e = fail(e);
                    let again = matches!(&e, crate::Error::Redis(m) if cluster::redirected(m));
                    if again && redirects < 2 {
                        redirects += 1;
                        let _ = c.refresh_after(seen).await;
                        continue;
                    }
                    return Err(self.noted(e));
                }
            }
        }
    }
}

/// Sorts a client error into the library's error: connection lost, timed out, a reply
/// that does not decode, or a command Redis refused.
pub(crate) fn fail(e: fred::error::Error) -> crate::Error {
    use fred::error::ErrorKind;
    let details = match e.details() {
        "" => e.to_string(),
        d => d.to_string(),
    };
    match e.kind() {
        ErrorKind::IO | ErrorKind::Canceled => crate::Error::Connection(details),
        ErrorKind::Timeout => crate::Error::Timeout(details),
        ErrorKind::Parse => crate::Error::Decode(format!("unexpected reply from redis: {details}")),
        _ => crate::Error::Redis(details),
    }
}

/// True for the server's "no such consumer group" error (a restarted server without
/// persistence, or `XGROUP DESTROY`).
pub(crate) fn is_nogroup(e: &crate::Error) -> bool {
    matches!(e, crate::Error::Redis(m) if m.starts_with("NOGROUP"))
}

/// The priority a stream key belongs to, from its suffix.
pub(crate) fn priority_of(stream: &str) -> Option<Priority> {
    Priority::ALL
        .into_iter()
        .find(|p| stream.ends_with(&format!(":{}", p.as_str())))
}
