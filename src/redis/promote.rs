//! Promotion: due delayed jobs and retries moved into their ready streams, and the wake
//! channels that tell promoters when the next one is due.

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use tokio::sync::broadcast;

use super::leases::HANDOFF;
use super::{Store, fail};
use crate::Priority;

/// What one promotion call did (`lua/promote.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Promoted {
    /// Jobs moved into their ready streams.
    pub(crate) moved: u64,
    /// When the next scheduled job is due (ms, Redis' clock); `None` when none is.
    pub(crate) next_due_ms: Option<i64>,
    /// Redis' clock, in ms.
    pub(crate) now_ms: i64,
}

/// A message on a queue's wake channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WakeMessage {
    /// A job of the channel's queue is due at this time (ms, Redis' clock).
    Due { channel: String, due_ms: i64 },
    /// A stopping worker handed its entries back (see `Store::withdraw`).
    Handoff,
    /// An operator asked to cancel (or deleted) the running job of this entry
    /// (`lua/job_control.lua`).
    Cancel { stream: String, entry_id: String },
    /// A job of the channel's queue ended with dependents to tell (its outbox).
    Deps { channel: String },
    /// Anything else (written by hand): ignored.
    Other,
}

/// A connection listening on wake channels; resubscribes by itself after a reconnect.
pub(crate) struct Subscription {
    client: SubscriberClient,
    messages: broadcast::Receiver<Message>,
}

impl Store {
    /// Moves up to `batch` due jobs of `queue` into their ready streams.
    pub(crate) async fn promote_due(&self, queue: &str, batch: u64) -> crate::Result<Promoted> {
        let keys = &self.keys;
        let mut script_keys = vec![keys.scheduled(queue)];
        script_keys.extend(Priority::ALL.map(|p| keys.stream(queue, p)));
        script_keys.push(keys.dlq(queue));
        let (moved, next_due, now_ms): (i64, i64, i64) = self
            .run(
                &self.scripts.promote,
                script_keys,
                vec![Value::from(batch as i64), keys.job_prefix(queue).into()],
            )
            .await?;
        Ok(Promoted {
            moved: moved.max(0) as u64,
            next_due_ms: (next_due >= 0).then_some(next_due),
            now_ms,
        })
    }

    /// A subscription to the wake channels of `queues`. On a cluster it stays a clustered
    /// pub/sub client (a message published on any node reaches every node): while a primary
    /// fails over it may stall, which only delays a wake, since the promoter also polls.
    pub(crate) async fn subscribe_wake(&self, queues: &[String]) -> crate::Result<Subscription> {
        let client = self.connector.subscriber().await?;
        let channels: Vec<String> = queues.iter().map(|q| self.keys.wake(q)).collect();
        client.subscribe(channels).await.map_err(fail)?;
        let messages = client.message_rx();
        Ok(Subscription { client, messages })
    }
}

impl Subscription {
    /// The next message; `None` when some were missed (the receiver lagged) or the
    /// connection is gone: then the caller checks everything.
    pub(crate) async fn recv(&mut self) -> Option<WakeMessage> {
        let m = self.messages.recv().await.ok()?;
        let text = m.value.as_string().unwrap_or_default();
        Some(if text == HANDOFF {
            WakeMessage::Handoff
        } else if text == "deps" {
            WakeMessage::Deps {
                channel: m.channel.to_string(),
            }
        } else if let Some((stream, entry_id)) = text
            .strip_prefix("cancel ")
            .and_then(|rest| rest.rsplit_once(' '))
        {
            WakeMessage::Cancel {
                stream: stream.to_string(),
                entry_id: entry_id.to_string(),
            }
        } else if let Ok(due_ms) = text.parse() {
            WakeMessage::Due {
                channel: m.channel.to_string(),
                due_ms,
            }
        } else {
            WakeMessage::Other
        })
    }

    /// Unsubscribes and closes the connection.
    pub(crate) async fn close(self) {
        let _ = self.client.quit().await;
    }
}
