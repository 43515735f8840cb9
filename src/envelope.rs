//! The envelope: what one ready-stream entry holds, as the worker reads it.
//!
//! How it is written to and read from an entry is the storage layer's business
//! (`redis::entry`); this is the value both sides share.

use std::time::Duration;

use bytes::Bytes;

/// `max_attempts` in an entry when the enqueuer set none: the worker running the job
/// applies its handler's (or [`DEFAULT_MAX_ATTEMPTS`] for a type it has no handler for).
pub(crate) const UNSET_MAX_ATTEMPTS: u32 = 0;

/// What one ready-stream entry holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    /// The job's id: for a job enqueued to run now, empty until Redis gives its entry an id
    /// (the job id is made from it), then read back from the entry id.
    pub(crate) id: String,
    /// Whether the job has a status hash, and so its entry an `id` field: a delayed job, a
    /// retried or replayed one, or one written by an older version. Any other job's status
    /// is read from its entry and the queue's done bucket (docs/architecture.md, "Data
    /// model").
    pub(crate) recorded: bool,
    pub(crate) job_type: String,
    pub(crate) attempt: u32,
    /// [`UNSET_MAX_ATTEMPTS`] until a worker resolves it with
    /// [`resolve_max_attempts`](Self::resolve_max_attempts).
    pub(crate) max_attempts: u32,
    pub(crate) enqueued_at: u64,
    pub(crate) timeout: Option<Duration>,
    pub(crate) unique: Option<String>,
    pub(crate) traceparent: Option<String>,
    /// The entry's rate-limit tokens were taken before it was scheduled (field `reserved`):
    /// it starts without asking its limits again. Never written by an enqueue.
    pub(crate) reserved: bool,
    /// What the jobs it waited for left it (field `parents`, JSON, written when it was
    /// released: README, "Chains, dependencies, batches").
    pub(crate) parents: Option<String>,
    pub(crate) payload: Bytes,
}

impl Envelope {
    /// Settles an unset `max_attempts` on `limit` (the handler's, or the default).
    pub(crate) fn resolve_max_attempts(&mut self, limit: u32) {
        if self.max_attempts == UNSET_MAX_ATTEMPTS {
            self.max_attempts = limit.max(1);
        }
    }
}
