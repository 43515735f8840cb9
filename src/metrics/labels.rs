//! The label sets of stevedore's metric families, and the label values that stand for job
//! types not reported under their own name.

use prometheus_client::encoding::EncodeLabelSet;

use crate::Priority;

/// The `type` of jobs whose type a worker has no handler for.
pub(super) const UNKNOWN_TYPE: &str = "(unknown)";
/// The `type` of entries too damaged to read.
pub(super) const INVALID_TYPE: &str = "(invalid)";
/// The `type` of job types past the first [`MAX_TYPES`](super::series::MAX_TYPES).
pub(super) const OTHER_TYPE: &str = "(other)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueTypePriority {
    pub(super) queue: String,
    pub(super) r#type: String,
    pub(super) priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueType {
    pub(super) queue: String,
    pub(super) r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueTypeReason {
    pub(super) queue: String,
    pub(super) r#type: String,
    pub(super) reason: String,
}

/// A queue and how a waiting job (or batch) was resolved.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueOutcome {
    pub(super) queue: String,
    pub(super) outcome: String,
}

/// A queue and an operator's action (`cancelled`, `deleted`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueAction {
    pub(super) queue: String,
    pub(super) action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabel {
    pub(super) queue: String,
}

/// A limit: what it counts (`queue`, `type`, `key`) and the queue or type it names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabel {
    pub(super) scope: String,
    pub(super) name: String,
}

/// A limit on one queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitQueueLabel {
    pub(super) scope: String,
    pub(super) name: String,
    pub(super) queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueuePriority {
    pub(super) queue: String,
    pub(super) priority: String,
}

impl QueuePriority {
    pub(crate) fn new(queue: &str, priority: Priority) -> Self {
        QueuePriority {
            queue: queue.to_string(),
            priority: priority.as_str().to_string(),
        }
    }
}

impl QueueLabel {
    pub(crate) fn new(queue: &str) -> Self {
        QueueLabel {
            queue: queue.to_string(),
        }
    }
}
