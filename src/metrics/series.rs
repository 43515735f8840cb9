//! The series a job touches, looked up once per (queue, type) pair and cached, so the hot
//! path skips the families' label lookups; and the bound on distinct `type` labels.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::Metrics;
use super::labels::{OTHER_TYPE, QueueType, QueueTypePriority, UNKNOWN_TYPE};
use crate::Priority;

/// Distinct job types one process reports before further ones become `(other)`.
pub(super) const MAX_TYPES: usize = 500;

/// One (queue, type) pair's enqueue counters, by priority, each created on first use.
pub(super) type EnqueuedCounters = [Option<Counter>; 3];

/// The series one (queue, type) pair's attempts update.
pub(super) struct JobHandles {
    pub(super) started: [Counter; 3],
    pub(super) wait: [Histogram; 3],
    pub(super) succeeded: Counter,
    pub(super) failed: Counter,
    pub(super) retried: Counter,
    pub(super) limited: Counter,
    pub(super) duration: Histogram,
}

impl Metrics {
    /// The label value for `job_type`: itself while fewer than [`MAX_TYPES`] are known.
    pub(super) fn type_label(&self, job_type: &str, known: bool) -> String {
        if !known {
            return UNKNOWN_TYPE.to_string();
        }
        let mut types = self.inner.types.lock().unwrap_or_else(|p| p.into_inner());
        if types.contains(job_type) {
            return job_type.to_string();
        }
        if types.len() >= MAX_TYPES {
            return OTHER_TYPE.to_string();
        }
        types.insert(job_type.to_string());
        job_type.to_string()
    }

    pub(super) fn handles(&self, queue: &str, job_type: &str, known: bool) -> Arc<JobHandles> {
        let type_key = if known { job_type } else { UNKNOWN_TYPE };
        {
            let map = self.inner.handles.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = map.get(queue).and_then(|m| m.get(type_key)) {
                return h.clone();
            }
        }
        let label = self.type_label(job_type, known);
        let f = &self.inner.families;
        let qt = QueueType {
            queue: queue.to_string(),
            r#type: label.clone(),
        };
        let qtp = |p: Priority| QueueTypePriority {
            queue: queue.to_string(),
            r#type: label.clone(),
            priority: p.as_str().to_string(),
        };
        let handles = Arc::new(JobHandles {
            started: Priority::ALL.map(|p| f.started.get_or_create_owned(&qtp(p))),
            wait: Priority::ALL.map(|p| f.wait.get_or_create_owned(&qtp(p))),
            succeeded: f.succeeded.get_or_create_owned(&qt),
            failed: f.failed.get_or_create_owned(&qt),
            retried: f.retried.get_or_create_owned(&qt),
            limited: f.limited.get_or_create_owned(&qt),
            duration: f.duration.get_or_create_owned(&qt),
        });
        let mut map = self
            .inner
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if label == OTHER_TYPE {
            // Not cached under its own name: the map stays bounded too.
            return handles;
        }
        map.entry(queue.to_string())
            .or_default()
            .entry(type_key.to_string())
            .or_insert(handles)
            .clone()
    }

    /// The counter of jobs `queue` refused for want of room.
    pub(super) fn refused_counter(&self, queue: &str, job_type: &str) -> Counter {
        self.inner.families.refused.get_or_create_owned(&QueueType {
            queue: queue.to_string(),
            r#type: self.type_label(job_type, true),
        })
    }

    /// The enqueue counter of `queue`, `job_type` and `priority`, created on first use.
    pub(super) fn enqueued_counter(
        &self,
        queue: &str,
        job_type: &str,
        priority: Priority,
    ) -> Counter {
        let i = priority.index();
        {
            let map = self
                .inner
                .enqueued
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(Some(c)) = map.get(queue).and_then(|m| m.get(job_type)).map(|c| &c[i]) {
                return c.clone();
            }
        }
        let label = self.type_label(job_type, true);
        let counter = self
            .inner
            .families
            .enqueued
            .get_or_create_owned(&QueueTypePriority {
                queue: queue.to_string(),
                r#type: label.clone(),
                priority: priority.as_str().to_string(),
            });
        if label == OTHER_TYPE {
            // Not cached under its own name: the map stays bounded too.
            return counter;
        }
        let mut map = self
            .inner
            .enqueued
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(queue.to_string())
            .or_default()
            .entry(job_type.to_string())
            .or_default()[i]
            .get_or_insert(counter)
            .clone()
    }
}
