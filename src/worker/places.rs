//! The places this worker holds under concurrency limits: one `SlotGuard` per started
//! job, renewed with the worker's leases and given back when the job's task ends. See
//! docs/architecture.md, "Concurrency limits".

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::Runtime;

/// The places in running sets this worker holds: set key → members.
#[derive(Debug, Default)]
pub(crate) struct SlotTable {
    held: Mutex<HashMap<String, HashSet<String>>>,
}

impl SlotTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn by_set(&self) -> Vec<(String, Vec<String>)> {
        self.lock()
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, m)| (k.clone(), m.iter().cloned().collect()))
            .collect()
    }
}

/// One job's places in running sets: renewed while held, given back when dropped (the job
/// ended, whatever its outcome). A place whose release does not reach Redis runs out with
/// its lease.
pub(crate) struct SlotGuard {
    table: Arc<SlotTable>,
    client: crate::Client,
    held: Vec<(String, String)>,
}

impl SlotGuard {
    pub(super) fn new(rt: &Runtime, held: Vec<(String, String)>) -> SlotGuard {
        let mut table = rt.running.lock();
        for (key, member) in &held {
            table.entry(key.clone()).or_default().insert(member.clone());
        }
        drop(table);
        SlotGuard {
            table: rt.running.clone(),
            client: rt.client.clone(),
            held,
        }
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SlotGuard").field(&self.held).finish()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        for (key, member) in &self.held {
            if let Some(m) = table.get_mut(key) {
                m.remove(member);
                if m.is_empty() {
                    table.remove(key);
                }
            }
        }
        drop(table);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let held = std::mem::take(&mut self.held);
        let client = self.client.clone();
        handle.spawn(async move {
            for (key, member) in held {
                if let Err(e) = client
                    .store()
                    .release_slots(&key, std::slice::from_ref(&member))
                    .await
                {
                    tracing::debug!(key = %key, error = %e, "giving back a concurrency place failed; it runs out with its lease");
                }
            }
        });
    }
}

/// Renews every place this worker holds (with its leases, each lease/3).
pub(crate) async fn renew(rt: &Runtime) {
    let lease_ms = crate::clock::clamped_ms(rt.settings.lease);
    for (key, members) in rt.running.by_set() {
        if let Err(e) = rt
            .client
            .store()
            .renew_slots(&key, &members, lease_ms)
            .await
        {
            tracing::warn!(key = %key, error = %e, "renewing concurrency places failed; retrying next round");
        }
    }
}
