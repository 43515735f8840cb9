//! Bounded queues: their capacities, and the room notices producers waiting for room
//! listen to (README, "Bounded queues").
//!
//! A queue's capacity is kept twice: under `<prefix>:{q}:capacity` (per partition, its
//! share), which the enqueue scripts read in the same step as they count and write, and as
//! `capacity:<queue>` in `<prefix>:limits`, which workers read each control round to know
//! which of their queues are bounded and which the admin views list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::watch;

use super::{Store, fail};

/// The field of `<prefix>:limits` holding `queue`'s capacity.
pub(crate) fn capacity_field(queue: &str) -> String {
    format!("capacity:{queue}")
}

/// The share of a capacity that each of `parts` partitions holds: rounded up, so the
/// partitions together hold at most `parts - 1` more than the capacity.
pub(crate) fn share(capacity: u64, parts: usize) -> u64 {
    capacity.div_ceil(parts.max(1) as u64).max(1)
}

impl Store {
    /// Sets (or with `None` removes) the capacity of `queue`, whose partitions are `parts`
    /// (the queue itself when it has none): each gets its [`share`]. Then says so on their
    /// room channels, so producers waiting for room try again at once. Returns whether the
    /// queue had a capacity recorded before a removal (true after a set).
    pub(crate) async fn set_capacity(
        &self,
        queue: &str,
        parts: &[String],
        capacity: Option<u64>,
    ) -> crate::Result<bool> {
        let Some(c) = capacity else {
            self.clear_capacity_keys(parts).await?;
            let had = self.remove_limit_field(&capacity_field(queue)).await?;
            self.say_room(parts).await?;
            return Ok(had);
        };
        for part in parts {
            let key = self.keys.capacity(part);
            let conn = self.node(&key).await?;
            conn.set::<(), _, _>(key, share(c, parts.len()), None, None, false)
                .await
                .map_err(|e| self.fail(e))?;
        }
        self.set_limit_fields(&[(capacity_field(queue), c.to_string())])
            .await?;
        self.say_room(parts).await?;
        Ok(true)
    }

    /// Deletes the capacity keys of `parts` (partitions no longer in use, or a queue whose
    /// bound is lifted).
    pub(crate) async fn clear_capacity_keys(&self, parts: &[String]) -> crate::Result<()> {
        for part in parts {
            let key = self.keys.capacity(part);
            let conn = self.node(&key).await?;
            conn.del::<(), _>(key).await.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Publishes on the room channels of `parts`.
    async fn say_room(&self, parts: &[String]) -> crate::Result<()> {
        for part in parts {
            let channel = self.keys.room(part);
            let conn = self.node(&self.keys.capacity(part)).await?;
            conn.publish::<(), _, _>(channel, "room")
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Clears `queue`'s full mark, and when a refused enqueue had left one, publishes on
    /// its room channel (`lua/room.lua`). Called by a worker that took jobs from a bounded
    /// queue.
    pub(crate) async fn room_made(&self, queue: &str) -> crate::Result<bool> {
        let n: i64 = self
            .run(
                &self.scripts.room,
                vec![self.keys.full(queue)],
                vec![Value::from(self.keys.room(queue))],
            )
            .await?;
        Ok(n == 1)
    }

    /// A receiver that changes each time a worker makes room in one of `parts` (the
    /// partitions of one queue), or its capacity changes. Subscribed before it returns, so
    /// an enqueue tried after this call and refused cannot miss the notice that follows.
    /// One connection serves every queue a client waits on.
    pub(crate) async fn room_notices(
        &self,
        parts: &[String],
    ) -> crate::Result<watch::Receiver<u64>> {
        let mut guard = self.rooms.conn.lock().await;
        if guard.is_none() {
            let client = self.connector.subscriber().await?;
            let channels: Arc<Mutex<HashMap<String, watch::Sender<u64>>>> = Arc::default();
            let mut messages = client.message_rx();
            let seen = channels.clone();
            tokio::spawn(async move {
                loop {
                    let channel = match messages.recv().await {
                        Ok(m) => Some(m.channel.to_string()),
                        // Messages were missed: wake every waiter.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    };
                    let channels = seen.lock().unwrap_or_else(|p| p.into_inner());
                    for (name, tx) in channels.iter() {
                        if channel.as_deref().is_none_or(|c| c == name) {
                            tx.send_modify(|n| *n += 1);
                        }
                    }
                }
            });
            *guard = Some(RoomConn { client, channels });
        }
        let Some(conn) = guard.as_ref() else {
            return Err(crate::Error::Connection("no room subscription".into()));
        };
        let (rx, new): (watch::Receiver<u64>, Vec<String>) = {
            let mut channels = conn.channels.lock().unwrap_or_else(|p| p.into_inner());
            let names: Vec<String> = parts.iter().map(|p| self.keys.room(p)).collect();
            // One sender per queue: every partition's channel wakes its waiters.
            let tx = names
                .iter()
                .find_map(|n| channels.get(n).cloned())
                .unwrap_or_else(|| watch::channel(0).0);
            let mut new = Vec::new();
            for n in names {
                if !channels.contains_key(&n) {
                    channels.insert(n.clone(), tx.clone());
                    new.push(n);
                }
            }
            (tx.subscribe(), new)
        };
        if !new.is_empty()
            && let Err(e) = conn.client.subscribe(new.clone()).await
        {
            let mut channels = conn.channels.lock().unwrap_or_else(|p| p.into_inner());
            for n in &new {
                channels.remove(n);
            }
            return Err(fail(e));
        }
        Ok(rx)
    }
}

/// The room subscription of one client, opened at its first wait for room.
#[derive(Default)]
pub(crate) struct Rooms {
    conn: tokio::sync::Mutex<Option<RoomConn>>,
}

struct RoomConn {
    client: SubscriberClient,
    /// Room channel → the notices of its queue.
    channels: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl Drop for RoomConn {
    fn drop(&mut self) {
        let client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn a_capacity_is_shared_over_partitions_rounding_up() {
        assert_eq!(share(10, 1), 10);
        assert_eq!(share(10, 4), 3);
        assert_eq!(share(8, 4), 2);
        assert_eq!(share(1, 4), 1);
    }
}
