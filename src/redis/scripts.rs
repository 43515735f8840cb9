//! The Lua scripts in `lua/`, one per atomic multi-key operation, loaded once per server.
//!
//! Each script is sent by SHA and reloaded on `NOSCRIPT` (a restarted or flushed server),
//! so callers never see a missing script.

use fred::prelude::*;
use fred::types::scripts::Script;

/// The scripts, hashed once per process.
pub(crate) struct Scripts {
    pub(crate) dead_letter: Script,
    pub(crate) retry: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            dead_letter: Script::from_lua(include_str!("../../lua/dead_letter.lua")),
            retry: Script::from_lua(include_str!("../../lua/retry.lua")),
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
