//! Which fetch loops a worker runs: one per queue; for a partitioned queue, one per
//! partition on a Redis Cluster (it refuses a read across hash slots, and each partition
//! has its own), one for all of them on a single server (`parts`).

use std::pin::Pin;
use std::time::Duration;

use super::settings::Settings;
use crate::backoff::Backoff;
use crate::redis::partition_names;
use crate::{Client, Error, Result};

/// Declares the partition counts the worker was built with, then reads every queue's and
/// returns the fetch loops to run, each with the names it consumes: a queue's own, or its
/// partitions' (all in one loop on a single server, one loop each on a cluster). While
/// Redis cannot be reached it waits and tries again; `None` when `signal` fires first.
pub(crate) async fn loops(
    client: &Client,
    settings: &Settings,
    mut signal: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Vec<Vec<String>>>> {
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
                let one_read = !client.store().is_cluster();
                let mut loops = Vec::new();
                for (q, n) in settings.queues.iter().zip(counts) {
                    let names = partition_names(q, n);
                    if one_read {
                        loops.push(names);
                    } else {
                        loops.extend(names.into_iter().map(|name| vec![name]));
                    }
                }
                return Ok(Some(loops));
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
