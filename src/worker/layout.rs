//! Which fetch loops a worker runs: one per queue, and one per partition of a partitioned
//! queue (Redis Cluster refuses a read across hash slots, and each partition has its own).

use std::pin::Pin;
use std::time::Duration;

use super::settings::Settings;
use crate::backoff::Backoff;
use crate::redis::partition_names;
use crate::{Client, Error, Result};

/// Declares the partition counts the worker was built with, then reads every queue's and
/// returns the names to consume: a queue's own, or its partitions'. While Redis cannot be
/// reached it waits and tries again; `None` when `signal` fires first.
pub(crate) async fn loops(
    client: &Client,
    settings: &Settings,
    mut signal: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Vec<String>>> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let read = async {
            for (queue, n) in &settings.partitions {
                client.declare_partitions(queue, *n).await?;
            }
            let queues: Vec<&str> = settings.queues.iter().map(String::as_str).collect();
            client.store().partition_counts(&queues).await
        };
        let counts = tokio::select! {
            _ = signal.as_mut() => return Ok(None),
            r = read => r,
        };
        match counts {
            Ok(counts) => {
                return Ok(Some(
                    settings
                        .queues
                        .iter()
                        .zip(counts)
                        .flat_map(|(q, n)| partition_names(q, n))
                        .collect(),
                ));
            }
            // A declaration that contradicts the recorded count: the worker cannot run.
            Err(e @ Error::InvalidConfig(_)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "reading the queues' partitions failed; retrying"),
        }
        tokio::select! {
            _ = signal.as_mut() => return Ok(None),
            () = backoff.sleep() => {}
        }
    }
}
