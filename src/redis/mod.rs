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
//!   queue registry, health probes), `periodic`, `stats`, `status`.
//!
//! Errors leave this layer as [`crate::Error`]: [`Error::Connection`](crate::Error),
//! `Timeout`, `Redis` (refused), or `Decode` for a reply that does not read as expected.

mod conn;
mod control;
mod dead;
mod enqueue;
mod entry;
pub(crate) mod keys;
mod leases;
mod periodic;
mod promote;
mod reclaim;
mod scripts;
mod settle;
mod stats;
mod status;

mod fetch;
#[cfg(test)]
mod tests;

pub(crate) use conn::{Connector, TlsFiles};
pub(crate) use dead::DeadEntry;
pub(crate) use enqueue::JobWrite;
pub(crate) use entry::{Entry, Fields, envelope_of};
pub(crate) use fetch::Reader;
pub(crate) use leases::WorkerDetails;
pub(crate) use periodic::{CronClaim, CronState};
pub(crate) use promote::{Promoted, Subscription, WakeMessage};
pub(crate) use reclaim::ReclaimScan;
pub(crate) use settle::{DeadLetter, Fenced, Retry, StreamAcks, Succeeded, status_about};
pub(crate) use stats::LIVE_WORKER_WINDOW_MS;
pub(crate) use status::Found;

use fred::prelude::{Client, Pool};

use crate::Priority;
use keys::Keys;
use scripts::Scripts;

/// The pool, the key names and the scripts of one client; shared by its workers.
pub(crate) struct Store {
    pool: Pool,
    connector: Connector,
    keys: Keys,
    scripts: Scripts,
}

impl Store {
    /// Connects a pool of `pool_size` connections through `connector`.
    pub(crate) async fn connect(
        connector: Connector,
        pool_size: usize,
        prefix: &str,
    ) -> crate::Result<Store> {
        let pool = connector.pool(pool_size).await?;
        Ok(Store {
            pool,
            connector,
            keys: Keys::new(prefix),
            scripts: Scripts::new(),
        })
    }

    /// The key names under this store's prefix.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The next connection of the pool (multiplexed: any command may use any of them).
    fn conn(&self) -> &Client {
        self.pool.next()
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

/// Sends a pipeline of commands whose replies are not read; fails with the first error
/// any of them met.
async fn all_ok(p: fred::clients::Pipeline<Client>) -> crate::Result<()> {
    let results: Vec<Result<fred::types::Value, fred::error::Error>> = p.try_all().await;
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(fail(e)),
        None => Ok(()),
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
