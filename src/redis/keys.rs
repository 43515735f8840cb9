//! Every Redis key name stevedore uses is spelled here, and only here.
//!
//! All keys of one queue share the hash tag `{<queue>}`, so a Lua script or a multi-stream
//! XREADGROUP touching several of them runs on one Redis Cluster slot, while different
//! queues still spread across nodes.

use std::sync::Arc;

use crate::Priority;

/// The consumer group every queue stream carries.
pub(crate) const GROUP: &str = "stevedore";
/// Width of a done bucket: the success records of jobs enqueued in the same minute share
/// one hash.
pub(crate) const DONE_BUCKET_MS: u64 = 60_000;
/// The default key prefix.
pub(crate) const DEFAULT_PREFIX: &str = "stevedore";

/// Builds key names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: Arc::from(prefix),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>:queues`: the set of known queue names.
    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// `<prefix>:partitions`: queue name → its number of partitions, for partitioned
    /// queues only.
    pub(crate) fn partitions(&self) -> String {
        format!("{}:partitions", self.prefix)
    }

    /// `<prefix>:limits`: rate limits, field `queue:<q>`, `type:<t>` or `key:<t>` → the
    /// limit as written (`50/1s`, `10/1m burst 1`).
    pub(crate) fn limits(&self) -> String {
        format!("{}:limits", self.prefix)
    }

    /// `<prefix>:{<queue>}:limit:<field>[:<key>]`: the token bucket of one rate limit for
    /// the jobs of `queue` (a queue, not a partition: the partitions share it), holding its
    /// next free time in ms; gone while the limit is idle. A key longer than 64 bytes, or
    /// with bytes other than printable ASCII, is spelled by its FNV-1a hash (`#<hex>`).
    pub(crate) fn bucket(&self, queue: &str, field: &str, key: Option<&str>) -> String {
        self.limit_key(queue, "limit:", field, key)
    }

    /// `<prefix>:{<queue>}:running:<field>[:<key>]`: the jobs of `queue` running under one
    /// concurrency limit (a sorted set: job locator and consumer → lease end, Redis ms).
    /// Keys are spelled as for [`bucket`](Self::bucket).
    pub(crate) fn running(&self, queue: &str, field: &str, key: Option<&str>) -> String {
        self.limit_key(queue, "running:", field, key)
    }

    fn limit_key(&self, queue: &str, kind: &str, field: &str, key: Option<&str>) -> String {
        let mut rest = String::with_capacity(field.len() + 80);
        rest.push_str(kind);
        rest.push_str(field);
        if let Some(k) = key {
            rest.push(':');
            if k.len() <= 64 && k.bytes().all(|b| b.is_ascii_graphic()) {
                rest.push_str(k);
            } else {
                rest.push_str(&format!("#{:016x}", crate::names::fnv1a(k.as_bytes())));
            }
        }
        self.tagged(queue, &rest)
    }

    /// `<prefix>:workers`: worker id → last heartbeat (Redis ms).
    pub(crate) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// `<prefix>:health`: a short-lived key that readiness checks write, to learn whether
    /// Redis accepts writes.
    pub(crate) fn health_probe(&self) -> String {
        format!("{}:health", self.prefix)
    }

    /// `<prefix>:worker:<id>`: one worker's details, expiring when it stops beating.
    pub(crate) fn worker(&self, id: &str) -> String {
        format!("{}:worker:{id}", self.prefix)
    }

    /// `<prefix>:{<queue>}:<priority>`: ready jobs of one priority.
    pub(crate) fn stream(&self, queue: &str, priority: Priority) -> String {
        self.tagged(queue, priority.as_str())
    }

    /// The three ready streams of a queue, most urgent first.
    pub(crate) fn streams(&self, queue: &str) -> [String; 3] {
        Priority::ALL.map(|p| self.stream(queue, p))
    }

    /// `<prefix>:{<queue>}:scheduled`: delayed jobs and retries, scored by due time (ms).
    pub(crate) fn scheduled(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:scheduled", self.prefix)
    }

    /// `<prefix>:{<queue>}:wake`: the pub/sub channel that tells promoters a job was
    /// scheduled (the message is its due time in ms).
    pub(crate) fn wake(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:wake", self.prefix)
    }

    /// `<prefix>:{<queue>}:capacity`: how many jobs the queue (a partition: its share)
    /// may hold waiting; no key, no bound. Read by the enqueue scripts.
    pub(crate) fn capacity(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:capacity", self.prefix)
    }

    /// `<prefix>:{<queue>}:full`: left for a minute by an enqueue the queue refused for
    /// want of room; the next worker to take jobs from it clears it and publishes on
    /// [`room`](Self::room).
    pub(crate) fn full(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:full", self.prefix)
    }

    /// `<prefix>:{<queue>}:room`: the pub/sub channel on which producers waiting for room
    /// in a bounded queue hear that workers took jobs from it.
    pub(crate) fn room(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:room", self.prefix)
    }

    /// `<prefix>:{<queue>}:handoff`: consumers of stopped workers that left entries of the
    /// queue pending; janitors take those at once rather than after the lease.
    pub(crate) fn handoff(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:handoff", self.prefix)
    }

    /// `<prefix>:{<queue>}:job:<id>`: one job's status, expiring after the retention time.
    pub(crate) fn job(&self, queue: &str, id: &str) -> String {
        let mut key = self.tagged(queue, "job:");
        key.push_str(id);
        key
    }

    /// `<prefix>:{<queue>}:done:<minute>`: success records of the jobs whose entry id (the
    /// id they were enqueued with) falls in that minute since the epoch; field = job id.
    pub(crate) fn done(&self, queue: &str, entry_ms: u64) -> String {
        let mut key = self.tagged(queue, "done:");
        key.push_str(&(entry_ms / DONE_BUCKET_MS).to_string());
        key
    }

    /// `<prefix>:{<queue>}:done`: the minutes of the queue's done buckets (member and score),
    /// added when a bucket is created; what the optional memory budget trims from.
    pub(crate) fn done_index(&self, queue: &str) -> String {
        self.tagged(queue, "done")
    }

    /// The done bucket of job `id` when it is one whose id names its first entry.
    pub(crate) fn done_of(&self, id: &str) -> Option<String> {
        let (queue, _, _) = crate::names::parse_locator(id)?;
        Some(self.done(queue, crate::names::locator_ms(id)?))
    }

    /// `<prefix>:{<queue>}:<rest>`. Stream and status keys are built on every enqueue and
    /// attempt, so without `format!`'s machinery.
    fn tagged(&self, queue: &str, rest: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + queue.len() + rest.len() + 40);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(queue);
        key.push_str("}:");
        key.push_str(rest);
        key
    }

    /// `<prefix>:{<queue>}:job:`: what [`job`](Self::job) puts before the id, for scripts
    /// that learn job ids from entries.
    pub(crate) fn job_prefix(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:job:", self.prefix)
    }

    /// `<prefix>:{<queue>}:cancel`: cancel requests for running jobs of `queue`, field
    /// `<priority letter>-<entry id>` → `<who>\n<why>`, removed when the job stops.
    pub(crate) fn cancel(&self, queue: &str) -> String {
        self.tagged(queue, "cancel")
    }

    /// `<prefix>:{<queue>}:dependents:<id>`: the jobs (or batch) waiting for job `id`, as
    /// `<queue> <id> <policy>` members.
    pub(crate) fn dependents(&self, queue: &str, id: &str) -> String {
        self.tagged(queue, &format!("dependents:{id}"))
    }

    /// `<prefix>:{<queue>}:held`: the held jobs (`j <id>`) and batches (`b <id>`) of
    /// `queue` whose flow's client has not finished writing it, scored by when they were
    /// written (ms).
    pub(crate) fn held(&self, queue: &str) -> String {
        self.tagged(queue, "held")
    }

    /// `<prefix>:{<queue>}:parents:<id>`: what waiting job `id` heard of the jobs it waits
    /// for (job id → `<outcome>\n<result>`).
    pub(crate) fn parents(&self, queue: &str, id: &str) -> String {
        self.tagged(queue, &format!("parents:{id}"))
    }

    /// `<prefix>:webhooks`: hooks, `queue:<q>` or `type:<t>` → JSON (url, events, secret,
    /// timeout).
    pub(crate) fn webhooks(&self) -> String {
        format!("{}:webhooks", self.prefix)
    }

    /// `<prefix>:{<queue>}:hooks`: which events fire hooks for `queue`'s jobs, `queue` or
    /// `type:<t>` → `succeeded,dead`; kept from the hooks hash.
    pub(crate) fn hooks(&self, queue: &str) -> String {
        self.tagged(queue, "hooks")
    }

    /// `<prefix>:{<queue>}:has_deps`: how many jobs (or batches) of `queue` have dependents
    /// not told yet, gone at zero; while it exists, settling scripts look for dependents (a
    /// queue without pays one EXISTS per call).
    pub(crate) fn has_deps(&self, queue: &str) -> String {
        self.tagged(queue, "has_deps")
    }

    /// `<prefix>:{<queue>}:outbox`: jobs of `queue` that ended with dependents not told yet
    /// (job id → `<outcome>\n<result>`).
    pub(crate) fn outbox(&self, queue: &str) -> String {
        self.tagged(queue, "outbox")
    }

    /// `<prefix>:{<queue>}:batch:<id>`: a batch's counts and state.
    pub(crate) fn batch(&self, queue: &str, id: &str) -> String {
        self.tagged(queue, &format!("batch:{id}"))
    }

    /// `<prefix>:{<queue>}:batch:<id>:jobs`: the batch's jobs that ended (job id →
    /// outcome).
    pub(crate) fn batch_jobs(&self, queue: &str, id: &str) -> String {
        self.tagged(queue, &format!("batch:{id}:jobs"))
    }

    /// The cancel requests of the queue a ready stream's key (`<prefix>:{<queue>}:high`)
    /// belongs to.
    pub(crate) fn cancel_of_stream(stream: &str) -> String {
        match stream.rsplit_once(':') {
            Some((base, _)) => format!("{base}:cancel"),
            None => format!("{stream}:cancel"),
        }
    }

    /// `<prefix>:{<queue>}:unique:`: the prefix of `queue`'s de-duplication keys.
    pub(crate) fn unique_prefix(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:unique:", self.prefix)
    }

    /// `<prefix>:{<queue>}:unique:<key>`: a de-duplication key, holding the job id.
    pub(crate) fn unique(&self, queue: &str, key: &str) -> String {
        format!("{}:{{{queue}}}:unique:{key}", self.prefix)
    }

    /// `<prefix>:{<queue>}:dlq`: dead jobs with why they died.
    pub(crate) fn dlq(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:dlq", self.prefix)
    }

    /// `<prefix>:paused`: the set of paused queues (workers do not fetch from them).
    pub(crate) fn paused(&self) -> String {
        format!("{}:paused", self.prefix)
    }

    /// `<prefix>:{<queue>}:totals`: lifetime counts (`succeeded`, `failed`, `retried`,
    /// `dead`, `reclaimed`), added to by workers about once a second.
    pub(crate) fn totals(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:totals", self.prefix)
    }

    /// `<prefix>:{<queue>}:cron`: periodic schedule name → newest tick claimed (ms), and
    /// `<name>:by` → the worker that claimed it and when (Redis ms).
    pub(crate) fn cron(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:cron", self.prefix)
    }
}

/// Hash slots of a Redis Cluster.
const SLOTS: u32 = 16_384;

/// The names of the `n` partitions of `queue`, in partition order: `queue` itself for one
/// partition, else `queue~<salt>` each, where partition `p`'s salt is the smallest number
/// whose name hashes into the `p`-th `n`-th of the cluster's slots. A cluster that splits
/// its slots evenly over `n` primaries (as `redis-cli --cluster create` does) so serves
/// each partition from a different primary. The names depend on `queue` and `n` only.
pub(crate) fn partition_names(queue: &str, n: u16) -> Vec<String> {
    if n <= 1 {
        return vec![queue.to_string()];
    }
    let n = u32::from(n);
    let mut names = Vec::with_capacity(n as usize);
    let mut name = String::with_capacity(queue.len() + 8);
    for p in 0..n {
        let (lo, hi) = (p * SLOTS / n, (p + 1) * SLOTS / n);
        // A slot range of 1/n of the slots is hit once in about n tries.
        for salt in 0u32.. {
            name.clear();
            name.push_str(queue);
            name.push(crate::names::PARTITION_MARK);
            name.push_str(&salt.to_string());
            let slot = u32::from(super::slot_of(name.as_bytes()));
            if (lo..hi).contains(&slot) {
                names.push(name.clone());
                break;
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_queue_share_one_hash_tag() {
        let k = Keys::new("stevedore");
        assert_eq!(
            k.stream("emails", Priority::High),
            "stevedore:{emails}:high"
        );
        assert_eq!(k.dlq("emails"), "stevedore:{emails}:dlq");
        assert_eq!(k.job("emails", "0190-1"), "stevedore:{emails}:job:0190-1");
        assert_eq!(k.queues(), "stevedore:queues");
        let slots: Vec<u16> = k
            .streams("emails")
            .iter()
            .chain([k.dlq("emails")].iter())
            .map(|key| fred::util::redis_keyslot(key.as_bytes()))
            .collect();
        assert!(slots.iter().all(|s| *s == slots[0]), "{slots:?}");
    }

    #[test]
    fn partitions_spread_over_the_slots() {
        assert_eq!(partition_names("emails", 1), ["emails"]);
        for n in [2u16, 3, 7, crate::names::MAX_PARTITIONS] {
            let names = partition_names("emails", n);
            assert_eq!(names.len(), usize::from(n));
            for (p, name) in names.iter().enumerate() {
                let slot = u32::from(fred::util::redis_keyslot(name.as_bytes()));
                assert_eq!(slot * u32::from(n) / SLOTS, p as u32, "{name} of {n}");
                assert_eq!(crate::names::queue_of(name), "emails");
            }
            assert_eq!(partition_names("emails", n), names, "stable");
        }
    }
}
