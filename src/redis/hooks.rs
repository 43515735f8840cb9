//! Webhooks (`src/webhook.rs`): the hooks hash `<prefix>:webhooks` (scope → JSON) and each
//! queue's copy of which events fire, `{q}:hooks`, which the settling scripts read.

use std::collections::{BTreeMap, HashMap};

use fred::prelude::*;

use super::Store;

impl Store {
    /// Sets the hook of `field` (`queue:<q>` or `type:<t>`).
    pub(crate) async fn set_webhook(&self, field: &str, json: &str) -> crate::Result<()> {
        let key = self.keys.webhooks();
        let conn = self.node(&key).await?;
        conn.hset::<(), _, _>(key, (field, json))
            .await
            .map_err(|e| self.fail(e))
    }

    /// Removes the hook of `field`; whether there was one.
    pub(crate) async fn remove_webhook(&self, field: &str) -> crate::Result<bool> {
        let key = self.keys.webhooks();
        let conn = self.node(&key).await?;
        let n: i64 = conn.hdel(key, field).await.map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    /// Every hook: field → JSON.
    pub(crate) async fn webhooks(&self) -> crate::Result<HashMap<String, String>> {
        let key = self.keys.webhooks();
        let conn = self.node(&key).await?;
        conn.hgetall(key).await.map_err(|e| self.fail(e))
    }

    /// The hook of `field`, if any.
    pub(crate) async fn webhook(&self, field: &str) -> crate::Result<Option<String>> {
        let key = self.keys.webhooks();
        let conn = self.node(&key).await?;
        conn.hget(key, field).await.map_err(|e| self.fail(e))
    }

    /// Makes `{queue}:hooks` hold exactly `desired` (deleted when empty).
    pub(crate) async fn sync_queue_hooks(
        &self,
        queue: &str,
        desired: &BTreeMap<String, String>,
    ) -> crate::Result<()> {
        let key = self.keys.hooks(queue);
        let conn = self.node(&key).await?;
        let current: HashMap<String, String> =
            conn.hgetall(&key).await.map_err(|e| self.fail(e))?;
        let stale: Vec<&String> = current
            .keys()
            .filter(|f| !desired.contains_key(*f))
            .collect();
        if !stale.is_empty() {
            let fields: Vec<String> = stale.into_iter().cloned().collect();
            conn.hdel::<(), _, _>(&key, fields)
                .await
                .map_err(|e| self.fail(e))?;
        }
        let changed: Vec<(String, String)> = desired
            .iter()
            .filter(|(f, v)| current.get(*f) != Some(*v))
            .map(|(f, v)| (f.clone(), v.clone()))
            .collect();
        if !changed.is_empty() {
            conn.hset::<(), _, _>(&key, changed)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}
