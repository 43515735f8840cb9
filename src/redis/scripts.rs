//! The Lua scripts in `lua/`, one per atomic multi-key operation, loaded once per server.
//!
//! Each script is sent by SHA and reloaded on `NOSCRIPT` (a restarted or flushed server),
//! so callers never see a missing script.

use std::sync::atomic::{AtomicBool, Ordering};

use fred::prelude::*;
pub(crate) use fred::types::scripts::Script;

/// The scripts, hashed once per process.
pub(crate) struct Scripts {
    pub(crate) ack: Script,
    pub(crate) started: Script,
    pub(crate) enqueue_ready: Script,
    pub(crate) enqueue: Script,
    /// Whether both enqueue scripts were loaded on this client's server (see
    /// `redis::write_jobs`).
    pub(crate) enqueue_loaded: AtomicBool,
    pub(crate) dead_letter: Script,
    pub(crate) replay: Script,
    pub(crate) purge_older: Script,
    pub(crate) retry: Script,
    pub(crate) promote: Script,
    pub(crate) renew: Script,
    pub(crate) reclaim: Script,
    pub(crate) heartbeat: Script,
    pub(crate) alive: Script,
    pub(crate) prune_consumers: Script,
    pub(crate) cron_claim: Script,
    pub(crate) queue_stats: Script,
}

impl Scripts {
    /// Loads both enqueue scripts, which every enqueue sends by SHA, together.
    pub(crate) async fn load_enqueue(&self, client: &Client) -> Result<(), Error> {
        self.enqueue_ready.load(client).await?;
        self.enqueue.load(client).await?;
        self.enqueue_loaded.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn new() -> Self {
        Scripts {
            ack: Script::from_lua(include_str!("../../lua/ack.lua")),
            started: Script::from_lua(include_str!("../../lua/started.lua")),
            enqueue_ready: Script::from_lua(include_str!("../../lua/enqueue_ready.lua")),
            enqueue: Script::from_lua(include_str!("../../lua/enqueue.lua")),
            enqueue_loaded: AtomicBool::new(false),
            dead_letter: Script::from_lua(include_str!("../../lua/dead_letter.lua")),
            replay: Script::from_lua(include_str!("../../lua/replay.lua")),
            purge_older: Script::from_lua(include_str!("../../lua/purge_older.lua")),
            retry: Script::from_lua(include_str!("../../lua/retry.lua")),
            promote: Script::from_lua(include_str!("../../lua/promote.lua")),
            renew: Script::from_lua(include_str!("../../lua/renew.lua")),
            reclaim: Script::from_lua(include_str!("../../lua/reclaim.lua")),
            heartbeat: Script::from_lua(include_str!("../../lua/heartbeat.lua")),
            alive: Script::from_lua(include_str!("../../lua/alive.lua")),
            prune_consumers: Script::from_lua(include_str!("../../lua/prune_consumers.lua")),
            cron_claim: Script::from_lua(include_str!("../../lua/cron_claim.lua")),
            queue_stats: Script::from_lua(include_str!("../../lua/queue_stats.lua")),
        }
    }
}

/// Runs `script` by SHA, loading it first if the server does not know it.
pub(crate) async fn run<R: FromValue>(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<R, Error> {
    script.evalsha_with_reload(client, keys, args).await
}
