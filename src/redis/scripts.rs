//! The script registry: every Lua script of `lua/`, one per atomic multi-key operation,
//! with the shared prelude (`lua/prelude.lua`: Redis' clock, status writes) put in front.
//!
//! Each script's header states its KEYS and ARGV; the one function of this layer that calls
//! it (named for what it does) builds exactly those and reads its reply into a typed
//! outcome. Scripts are sent by SHA and reloaded on `NOSCRIPT` (a restarted or flushed
//! server), so callers never see a missing script.

use std::sync::atomic::{AtomicBool, Ordering};

use fred::prelude::*;
use fred::types::scripts::Script;

use super::fail;

/// The script `lua/<name>.lua` with the prelude in front.
macro_rules! script {
    ($name:literal) => {
        Script::from_lua(concat!(
            include_str!("../../lua/prelude.lua"),
            include_str!(concat!("../../lua/", $name, ".lua"))
        ))
    };
}

/// The scripts, hashed once per process.
pub(super) struct Scripts {
    pub(super) ack: Script,
    pub(super) started: Script,
    pub(super) enqueue_ready: Script,
    pub(super) enqueue: Script,
    /// Whether both enqueue scripts were loaded on this client's server (see
    /// `Store::enqueue_batch`).
    pub(super) enqueue_loaded: AtomicBool,
    pub(super) dead_letter: Script,
    pub(super) replay: Script,
    pub(super) purge_older: Script,
    pub(super) retry: Script,
    pub(super) promote: Script,
    pub(super) renew: Script,
    pub(super) reclaim: Script,
    pub(super) heartbeat: Script,
    pub(super) alive: Script,
    pub(super) prune_consumers: Script,
    pub(super) cron_claim: Script,
    pub(super) queue_stats: Script,
    pub(super) status: Script,
    pub(super) fetch: Script,
    pub(super) done_trim: Script,
    pub(super) limit: Script,
    pub(super) room: Script,
    pub(super) oldest: Script,
    pub(super) job_control: Script,
    pub(super) purge: Script,
    pub(super) cancelled: Script,
    pub(super) hold: Script,
    pub(super) batch: Script,
    pub(super) held_due: Script,
    pub(super) depend: Script,
    pub(super) resolve: Script,
    pub(super) outbox_done: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            ack: script!("ack"),
            started: script!("started"),
            enqueue_ready: script!("enqueue_ready"),
            enqueue: script!("enqueue"),
            enqueue_loaded: AtomicBool::new(false),
            dead_letter: script!("dead_letter"),
            replay: script!("replay"),
            purge_older: script!("purge_older"),
            retry: script!("retry"),
            promote: script!("promote"),
            renew: script!("renew"),
            reclaim: script!("reclaim"),
            heartbeat: script!("heartbeat"),
            alive: script!("alive"),
            prune_consumers: script!("prune_consumers"),
            cron_claim: script!("cron_claim"),
            queue_stats: script!("queue_stats"),
            status: script!("status"),
            fetch: script!("fetch"),
            done_trim: script!("done_trim"),
            limit: script!("limit"),
            room: script!("room"),
            oldest: script!("oldest"),
            job_control: script!("job_control"),
            purge: script!("purge"),
            cancelled: script!("cancelled"),
            hold: script!("hold"),
            batch: script!("batch"),
            held_due: script!("held_due"),
            depend: script!("depend"),
            resolve: script!("resolve"),
            outbox_done: script!("outbox_done"),
        }
    }

    /// Loads both enqueue scripts, which every enqueue sends by SHA, together.
    pub(super) async fn load_enqueue(&self, client: &Client) -> crate::Result<()> {
        self.enqueue_ready.load(client).await.map_err(fail)?;
        self.enqueue.load(client).await.map_err(fail)?;
        self.enqueue_loaded.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs `script` by SHA, loading it first if the server does not know it.
pub(super) async fn run<R: FromValue>(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<Value>,
) -> crate::Result<R> {
    script
        .evalsha_with_reload(client, keys, args)
        .await
        .map_err(fail)
}
