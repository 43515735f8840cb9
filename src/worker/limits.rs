//! Rate and concurrency limits on the worker's side: which are in force (read from Redis
//! each control round), and which jobs of a fetched batch may start now (`admit`, one
//! script call per batch); the places a started job takes are held in `places`. See
//! docs/architecture.md, "Rate limits" and "Concurrency limits".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::Runtime;
use super::dispatch::Prepared;
use super::places::SlotGuard;
use crate::limit::{LimitScope, RateLimit, concurrency_field};
use crate::redis::{Again, Bucket, Class, SlotSet, Taken};

/// A wait up to this long is spent holding the job's slot; a longer one sends the job back
/// to the scheduled set, freeing the slot, with its tokens reserved for its due time.
pub(crate) const SLEEP_MAX: Duration = Duration::from_millis(250);
/// How long a job waits when its limits could not be read (Redis failing): it is not run
/// unchecked.
const UNCHECKED_WAIT_MS: u64 = 1_000;
/// A job that finds a concurrency limit full waits a quarter of how long it has waited
/// since it was enqueued, within these bounds: a fresh job asks again soon, one that has
/// waited long asks less often.
const FULL_WAIT_MIN_MS: u64 = 100;
const FULL_WAIT_MAX_MS: u64 = 2_000;

/// The limits in force, by what they count.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Limits {
    queues: HashMap<String, RateLimit>,
    types: HashMap<String, RateLimit>,
    keys: HashMap<String, RateLimit>,
    running_queues: HashMap<String, u32>,
    running_types: HashMap<String, u32>,
    running_keys: HashMap<String, u32>,
    /// Bounded queues (README, "Bounded queues") and their capacities: a worker that takes
    /// jobs from one tells producers waiting for room.
    capacities: HashMap<String, u64>,
}

impl Limits {
    /// Reads `<prefix>:limits` (field → limit as written). A field or value that does not
    /// read is skipped with a warning: one bad limit does not lift the others.
    pub(crate) fn from_fields(fields: &HashMap<String, String>) -> Limits {
        let mut limits = Limits::default();
        for (field, value) in fields {
            if let Some(queue) = field.strip_prefix("capacity:") {
                match value.trim().parse::<u64>() {
                    Ok(n) if n > 0 => {
                        limits.capacities.insert(queue.to_string(), n);
                    }
                    _ => {
                        tracing::warn!(field = %field, value = %value, "ignoring a capacity that does not read")
                    }
                }
                continue;
            }
            if let Some(rest) = field.strip_prefix("concurrency:") {
                let scope = LimitScope::from_field(rest);
                match (scope, value.trim().parse::<u32>()) {
                    (Some(scope), Ok(n)) if n > 0 => limits.insert_running(scope, n),
                    _ => {
                        tracing::warn!(field = %field, value = %value, "ignoring a concurrency limit that does not read")
                    }
                }
                continue;
            }
            let scope = LimitScope::from_field(field);
            let limit = value.parse::<RateLimit>();
            match (scope, limit) {
                (Some(scope), Ok(limit)) => limits.insert(scope, limit),
                (None, _) => {
                    tracing::warn!(field = %field, "ignoring a rate limit of unknown scope")
                }
                (_, Err(e)) => tracing::warn!(field = %field, error = %e, "ignoring a rate limit"),
            }
        }
        limits
    }

    fn insert(&mut self, scope: LimitScope, limit: RateLimit) {
        match scope {
            LimitScope::Queue(q) => self.queues.insert(q, limit),
            LimitScope::Type(t) => self.types.insert(t, limit),
            LimitScope::Key(t) => self.keys.insert(t, limit),
        };
    }

    fn insert_running(&mut self, scope: LimitScope, n: u32) {
        match scope {
            LimitScope::Queue(q) => self.running_queues.insert(q, n),
            LimitScope::Type(t) => self.running_types.insert(t, n),
            LimitScope::Key(t) => self.running_keys.insert(t, n),
        };
    }

    /// Whether `queue` (a queue or a partition's name) is bounded.
    pub(crate) fn is_bounded(&self, queue: &str) -> bool {
        !self.capacities.is_empty() && self.capacities.contains_key(crate::names::queue_of(queue))
    }

    /// Whether no rate or concurrency limit is in force (capacities aside: they do not
    /// hold jobs back).
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty()
            && self.types.is_empty()
            && self.keys.is_empty()
            && self.running_queues.is_empty()
            && self.running_types.is_empty()
            && self.running_keys.is_empty()
    }
}

/// The limits in force on this worker, swapped whole when Redis says otherwise.
#[derive(Debug, Default)]
pub(crate) struct LimitTable {
    current: RwLock<Arc<Limits>>,
}

impl LimitTable {
    pub(crate) fn current(&self) -> Arc<Limits> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `limits` in force; true when they differ from those in force.
    pub(crate) fn set(&self, limits: Limits) -> bool {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if **cur == limits {
            return false;
        }
        *cur = Arc::new(limits);
        true
    }
}

/// The limits a worker declares: its builder's, then its handlers' (a type's own wins
/// over the builder's for the same scope), as `<prefix>:limits` fields and values.
pub(crate) fn declared(
    settings: &super::Settings,
    registry: &crate::handler::Registry,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |field: String, value: String| {
        out.retain(|(f, _)| *f != field);
        out.push((field, value));
    };
    for (scope, limit) in &settings.rate_limits {
        put(scope.field(), limit.to_string());
    }
    for (scope, n) in &settings.concurrency_limits {
        put(concurrency_field(scope), n.to_string());
    }
    for (name, options) in registry.options() {
        let name = name.to_string();
        if let Some(l) = options.rate_limit {
            put(LimitScope::Type(name.clone()).field(), l.to_string());
        }
        if let Some(l) = options.key_rate_limit {
            put(LimitScope::Key(name.clone()).field(), l.to_string());
        }
        if let Some(n) = options.concurrency_limit {
            put(
                concurrency_field(&LimitScope::Type(name.clone())),
                n.to_string(),
            );
        }
        if let Some(n) = options.key_concurrency_limit {
            put(concurrency_field(&LimitScope::Key(name)), n.to_string());
        }
    }
    out
}

/// What becomes of one delivery of a fetched batch.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Start now, holding these places.
    Run(Option<SlotGuard>),
    /// Its tokens are taken for a moment from now: start then, holding the slot (and the
    /// places) meanwhile.
    RunIn(Duration, Option<SlotGuard>),
    /// Back to the scheduled set, due in `wait_ms`; `why` names the limit.
    Defer {
        wait_ms: u64,
        again: Again,
        why: String,
    },
}

/// Every delivery of a batch of `len` starts at once.
pub(crate) fn all_run(len: usize) -> Vec<Verdict> {
    std::iter::repeat_with(|| Verdict::Run(None))
        .take(len)
        .collect()
}

fn bucket_of(
    rt: &Runtime,
    queue: &str,
    scope: &LimitScope,
    key: Option<&str>,
    limit: &RateLimit,
) -> (Bucket, String) {
    let interval_ms = limit.interval_ms();
    (
        Bucket {
            key: rt.client.keys().bucket(queue, &scope.field(), key),
            interval_ms,
            tolerance_ms: interval_ms * f64::from(limit.burst().saturating_sub(1)),
        },
        format!("rate limit of {scope} ({limit})"),
    )
}

fn set_of(
    rt: &Runtime,
    queue: &str,
    scope: &LimitScope,
    key: Option<&str>,
    n: u32,
) -> (SlotSet, String) {
    (
        SlotSet {
            key: rt.client.keys().running(queue, &scope.field(), key),
            capacity: n,
        },
        format!("concurrency limit of {scope} ({n} running)"),
    )
}

/// Jobs of a batch that need the same buckets and sets.
struct PlanClass {
    buckets: Vec<usize>,
    sets: Vec<usize>,
    /// Indexes into the batch.
    jobs: Vec<usize>,
    /// Per job: its member in the sets, and when it was enqueued (ms).
    members: Vec<String>,
    enqueued: Vec<u64>,
}

/// What a fetched batch asks of its limits.
pub(crate) struct Plan {
    len: usize,
    buckets: Vec<(Bucket, String)>,
    sets: Vec<(SlotSet, String)>,
    classes: Vec<PlanClass>,
}

/// Registers `item` (by its key) among `list`, once; its index.
fn index_of<T>(
    list: &mut Vec<(T, String)>,
    by_key: &mut HashMap<String, usize>,
    key: &str,
    make: impl FnOnce() -> (T, String),
) -> usize {
    if let Some(i) = by_key.get(key) {
        return *i;
    }
    list.push(make());
    by_key.insert(key.to_string(), list.len() - 1);
    list.len() - 1
}

/// What `batch` asks of the limits: every job under a rate limit needs a token of each of
/// them (its queue's, its type's, its key's) unless its tokens were reserved before it was
/// scheduled (`reserved`), and every job under a concurrency limit a place in each. A
/// delivery that is not a job to run, or a job no limit applies to, asks nothing. `None`
/// when nothing is asked.
pub(crate) fn plan(rt: &Runtime, batch: &[(Prepared, OwnedSemaphorePermit)]) -> Option<Plan> {
    let limits = rt.limits.current();
    if limits.is_empty() {
        return None;
    }
    let mut buckets: Vec<(Bucket, String)> = Vec::new();
    let mut sets: Vec<(SlotSet, String)> = Vec::new();
    let mut bucket_ix: HashMap<String, usize> = HashMap::new();
    let mut set_ix: HashMap<String, usize> = HashMap::new();
    let mut classes: Vec<PlanClass> = Vec::new();
    let mut class_of: HashMap<(Vec<usize>, Vec<usize>), usize> = HashMap::new();
    // Jobs of one queue, type and key (and reservation) need the same buckets and sets:
    // found once per batch.
    let mut seen: HashMap<(&str, &str, Option<&str>, bool), Option<usize>> = HashMap::new();
    for (i, (p, _)) in batch.iter().enumerate() {
        let Prepared::Run(a) = p else { continue };
        let queue = crate::names::queue_of(&a.d.queue);
        let job_type = a.env.job_type.as_str();
        let key = a.limit_key.as_deref();
        let seen_as = (queue, job_type, key, a.env.reserved);
        let c = match seen.get(&seen_as) {
            Some(c) => *c,
            None => {
                let mut b: Vec<usize> = Vec::new();
                let mut s: Vec<usize> = Vec::new();
                let mut rate = |scope: LimitScope, k: Option<&str>, l: &RateLimit| {
                    let (bucket, about) = bucket_of(rt, queue, &scope, k, l);
                    let key = bucket.key.clone();
                    b.push(index_of(&mut buckets, &mut bucket_ix, &key, || {
                        (bucket, about)
                    }));
                };
                if !a.env.reserved {
                    if let Some(l) = limits.queues.get(queue) {
                        rate(LimitScope::Queue(queue.to_string()), None, l);
                    }
                    if let Some(l) = limits.types.get(job_type) {
                        rate(LimitScope::Type(job_type.to_string()), None, l);
                    }
                    if let (Some(l), Some(k)) = (limits.keys.get(job_type), key) {
                        rate(LimitScope::Key(job_type.to_string()), Some(k), l);
                    }
                }
                let mut running = |scope: LimitScope, k: Option<&str>, n: u32| {
                    let (set, about) = set_of(rt, queue, &scope, k, n);
                    let key = set.key.clone();
                    s.push(index_of(&mut sets, &mut set_ix, &key, || (set, about)));
                };
                if let Some(n) = limits.running_queues.get(queue) {
                    running(LimitScope::Queue(queue.to_string()), None, *n);
                }
                if let Some(n) = limits.running_types.get(job_type) {
                    running(LimitScope::Type(job_type.to_string()), None, *n);
                }
                if let (Some(n), Some(k)) = (limits.running_keys.get(job_type), key) {
                    running(LimitScope::Key(job_type.to_string()), Some(k), *n);
                }
                let c = if b.is_empty() && s.is_empty() {
                    None
                } else {
                    b.sort_unstable();
                    s.sort_unstable();
                    let c = *class_of.entry((b.clone(), s.clone())).or_insert_with(|| {
                        classes.push(PlanClass {
                            buckets: b,
                            sets: s,
                            jobs: Vec::new(),
                            members: Vec::new(),
                            enqueued: Vec::new(),
                        });
                        classes.len() - 1
                    });
                    Some(c)
                };
                seen.insert(seen_as, c);
                c
            }
        };
        let Some(c) = c else { continue };
        let class = &mut classes[c];
        class.jobs.push(i);
        class.enqueued.push(a.env.enqueued_at);
        if !class.sets.is_empty() {
            let job = crate::names::locator(&a.d.queue, a.d.priority, &a.d.entry_id);
            class
                .members
                .push(format!("{job} {}", rt.settings.consumer));
        }
    }
    if classes.is_empty() {
        return None;
    }
    Some(Plan {
        len: batch.len(),
        buckets,
        sets,
        classes,
    })
}

/// How long a job enqueued at `enqueued_ms` waits after finding a concurrency limit full.
fn full_wait_ms(enqueued_ms: u64) -> u64 {
    let waited = crate::clock::now_ms().saturating_sub(enqueued_ms);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    ((waited / 4) as f64 * jitter).clamp(FULL_WAIT_MIN_MS as f64, FULL_WAIT_MAX_MS as f64) as u64
}

/// Which deliveries of a batch may start now, in one script call for the whole batch;
/// `plan` is what the batch asks (`None`: every delivery starts, `len` of them).
pub(crate) async fn admit(rt: &Runtime, len: usize, plan: Option<Plan>) -> Vec<Verdict> {
    let Some(Plan {
        len,
        buckets,
        sets,
        classes,
    }) = plan
    else {
        return all_run(len);
    };
    let mut verdicts = all_run(len);
    let asked: Vec<Class> = classes
        .iter()
        .map(|c| Class {
            buckets: c.buckets.clone(),
            sets: c.sets.clone(),
            jobs: c.jobs.len() as u32,
            members: c.members.clone(),
        })
        .collect();
    let bucket_list: Vec<Bucket> = buckets.iter().map(|(b, _)| b.clone()).collect();
    let set_list: Vec<SlotSet> = sets.iter().map(|(s, _)| s.clone()).collect();
    let taken = super::consume::within(
        super::consume::READ_DEADLINE,
        rt.client.store().take_tokens(
            &bucket_list,
            &set_list,
            &asked,
            crate::clock::clamped_ms(rt.settings.lease),
            crate::clock::clamped_ms(SLEEP_MAX),
        ),
    )
    .await;
    let taken = match taken {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "could not ask the limits; the limited jobs wait a second");
            let why = format!("its limits, which could not be read ({e})");
            for c in &classes {
                for job in &c.jobs {
                    verdicts[*job] = Verdict::Defer {
                        wait_ms: UNCHECKED_WAIT_MS,
                        again: Again::Defer,
                        why: why.clone(),
                    };
                }
            }
            return verdicts;
        }
    };
    for (c, got) in classes.iter().zip(taken) {
        let about = |ix: &[usize], of: &dyn Fn(usize) -> String| {
            ix.iter().map(|i| of(*i)).collect::<Vec<_>>().join(" and ")
        };
        let rate_why = about(&c.buckets, &|i| buckets[i].1.clone());
        let full_why = about(&c.sets, &|i| sets[i].1.clone());
        for (n, (job, got)) in c.jobs.iter().zip(got).enumerate() {
            let places = || {
                (!c.sets.is_empty()).then(|| {
                    let member = c.members.get(n).cloned().unwrap_or_default();
                    SlotGuard::new(
                        rt,
                        c.sets
                            .iter()
                            .map(|s| (sets[*s].0.key.clone(), member.clone()))
                            .collect(),
                    )
                })
            };
            verdicts[*job] = match got {
                Taken::After(0) => Verdict::Run(places()),
                Taken::After(ms) if Duration::from_millis(ms) <= SLEEP_MAX => {
                    Verdict::RunIn(Duration::from_millis(ms), places())
                }
                Taken::After(ms) => Verdict::Defer {
                    wait_ms: ms,
                    again: Again::Reserve,
                    why: rate_why.clone(),
                },
                Taken::Full => Verdict::Defer {
                    wait_ms: full_wait_ms(c.enqueued.get(n).copied().unwrap_or(0)),
                    again: Again::Defer,
                    why: full_why.clone(),
                },
            };
        }
    }
    verdicts
}

/// The buckets a downstream's "slow down" pauses for a job of `job_type` on `queue`: its
/// type's limit and, under a per-key limit, its key's.
pub(crate) fn slow_down_buckets(
    rt: &Runtime,
    queue: &str,
    job_type: &str,
    key: Option<&str>,
) -> Vec<Bucket> {
    let limits = rt.limits.current();
    let queue = crate::names::queue_of(queue);
    let mut out = Vec::new();
    if let Some(l) = limits.types.get(job_type) {
        out.push(bucket_of(rt, queue, &LimitScope::Type(job_type.to_string()), None, l).0);
    }
    if let (Some(l), Some(k)) = (limits.keys.get(job_type), key) {
        out.push(
            bucket_of(
                rt,
                queue,
                &LimitScope::Key(job_type.to_string()),
                Some(k),
                l,
            )
            .0,
        );
    }
    out
}

/// How often a worker tells producers of room in one queue at most. Fetches come far more
/// often than this under load (one per finished job at high concurrency); a call per
/// fetch would cost a busy bounded queue a script call per job.
const ROOM_EVERY: Duration = Duration::from_millis(10);

/// When this worker last told producers of room in each bounded queue, and whether a call
/// waits for the end of the current window.
#[derive(Debug, Default)]
pub(crate) struct RoomNotices {
    queues: Mutex<HashMap<String, (Instant, bool)>>,
}

/// After this worker took jobs from `queue` (a queue or a partition): when it is bounded,
/// tells producers waiting for room (`Store::room_made`), off the fetch loop, at most once
/// per [`ROOM_EVERY`]; a fetch inside the window leaves one call for its end, so no room
/// made goes untold.
pub(crate) fn room_made(rt: &Arc<Runtime>, queue: &str) {
    if !rt.limits.current().is_bounded(queue) {
        return;
    }
    let now = Instant::now();
    let wait = {
        let mut queues = rt.room.queues.lock().unwrap_or_else(|p| p.into_inner());
        match queues.get_mut(queue) {
            None => {
                queues.insert(queue.to_string(), (now, false));
                Duration::ZERO
            }
            // One call already waits for the window's end: it will tell of this room too.
            Some((_, true)) => return,
            Some((last, deferred)) => {
                let next = *last + ROOM_EVERY;
                if now >= next {
                    *last = now;
                    Duration::ZERO
                } else {
                    *last = next;
                    *deferred = true;
                    next - now
                }
            }
        }
    };
    let rt = rt.clone();
    let queue = queue.to_string();
    tokio::spawn(async move {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            let mut queues = rt.room.queues.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, deferred)) = queues.get_mut(&queue) {
                *deferred = false;
            }
        }
        if let Err(e) = rt.client.store().room_made(&queue).await {
            tracing::debug!(queue = %queue, error = %e, "telling producers of room failed");
        }
    });
}

/// Writes the limits this worker declares, then reads every limit in force.
pub(crate) async fn refresh(rt: &Runtime, declare: &mut Option<Vec<(String, String)>>) {
    let store = rt.client.store();
    if let Some(d) = declare.as_ref() {
        match store.set_limit_fields(d).await {
            Ok(()) => *declare = None,
            Err(e) => {
                tracing::debug!(error = %e, "recording the declared limits failed; retrying");
                return;
            }
        }
    }
    match store.limit_fields().await {
        Ok(fields) => {
            let limits = Limits::from_fields(&fields);
            if rt.limits.set(limits) {
                tracing::info!(limits = ?fields, "limits in force");
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading limits failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_from_their_fields_and_skip_bad_ones() {
        let fields: HashMap<String, String> = [
            ("queue:emails", "50/1s"),
            ("type:email.send", "10/1m burst 1"),
            ("key:email.send", "5/1s"),
            ("type:broken", "0/1s"),
            ("other:x", "5/1s"),
            ("concurrency:type:email.send", "2"),
            ("concurrency:key:email.send", "1"),
            ("concurrency:queue:emails", "0"),
            ("concurrency:type:other", "many"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let l = Limits::from_fields(&fields);
        assert_eq!(l.queues.get("emails"), Some(&RateLimit::per_second(50)));
        assert_eq!(
            l.types.get("email.send"),
            Some(&RateLimit::new(10, Duration::from_secs(60)).with_burst(1))
        );
        assert_eq!(l.keys.get("email.send"), Some(&RateLimit::per_second(5)));
        assert!(!l.types.contains_key("broken"));
        assert_eq!(l.running_types.get("email.send"), Some(&2));
        assert_eq!(l.running_keys.get("email.send"), Some(&1));
        assert!(l.running_queues.is_empty());
        assert!(!l.running_types.contains_key("other"));
        assert!(!l.is_empty());
        assert!(Limits::from_fields(&HashMap::new()).is_empty());
    }

    #[test]
    fn a_full_limit_is_asked_again_sooner_by_fresh_jobs() {
        let now = crate::clock::now_ms();
        assert_eq!(full_wait_ms(now), FULL_WAIT_MIN_MS);
        assert_eq!(full_wait_ms(now - 3_600_000), FULL_WAIT_MAX_MS);
        let mid = full_wait_ms(now - 2_000);
        assert!((400..=600).contains(&mid), "{mid}");
    }
}
