//! Rate limits on the worker's side: which are in force (read from Redis each control
//! round), and which jobs of a fetched batch may start now (`admit`, one script call per
//! batch). See docs/architecture.md, "Rate limits".

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::Runtime;
use super::dispatch::Prepared;
use crate::limit::{LimitScope, RateLimit};
use crate::redis::{Again, Bucket, Class};

/// A wait up to this long is spent holding the job's slot; a longer one sends the job back
/// to the scheduled set, freeing the slot, with its tokens reserved for its due time.
pub(crate) const SLEEP_MAX: Duration = Duration::from_millis(250);
/// How long a job waits when its limits could not be read (Redis failing): it is not run
/// unchecked.
const UNCHECKED_WAIT_MS: u64 = 1_000;

/// The limits in force, by what they count.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Limits {
    queues: HashMap<String, RateLimit>,
    types: HashMap<String, RateLimit>,
    keys: HashMap<String, RateLimit>,
}

impl Limits {
    /// Reads `<prefix>:limits` (field → limit as written). A field or value that does not
    /// read is skipped with a warning: one bad limit does not lift the others.
    pub(crate) fn from_fields(fields: &HashMap<String, String>) -> Limits {
        let mut limits = Limits::default();
        for (field, value) in fields {
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

    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.types.is_empty() && self.keys.is_empty()
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
    rt_settings: &super::Settings,
    registry: &crate::handler::Registry,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |scope: LimitScope, limit: RateLimit| {
        let field = scope.field();
        out.retain(|(f, _)| *f != field);
        out.push((field, limit.to_string()));
    };
    for (scope, limit) in &rt_settings.rate_limits {
        put(scope.clone(), *limit);
    }
    for (name, options) in registry.options() {
        if let Some(l) = options.rate_limit {
            put(LimitScope::Type(name.to_string()), l);
        }
        if let Some(l) = options.key_rate_limit {
            put(LimitScope::Key(name.to_string()), l);
        }
    }
    out
}

/// What becomes of one delivery of a fetched batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Start now.
    Run,
    /// Its tokens are taken for a moment from now: start then, holding the slot meanwhile.
    RunIn(Duration),
    /// Back to the scheduled set, due in `wait_ms`; `why` names the limit.
    Defer {
        wait_ms: u64,
        again: Again,
        why: String,
    },
}

/// One bucket of the batch and the limit it stands for.
struct Wanted {
    bucket: Bucket,
    about: String,
}

fn bucket_of(
    rt: &Runtime,
    queue: &str,
    scope: &LimitScope,
    key: Option<&str>,
    limit: &RateLimit,
) -> Wanted {
    let interval_ms = limit.interval_ms();
    Wanted {
        bucket: Bucket {
            key: rt.client.keys().bucket(queue, &scope.field(), key),
            interval_ms,
            tolerance_ms: interval_ms * f64::from(limit.burst().saturating_sub(1)),
        },
        about: format!("rate limit of {scope} ({limit})"),
    }
}

/// The token asks of a fetched batch: its buckets and, per class of jobs that need the
/// same buckets, those jobs (indexes into the batch).
pub(crate) struct Plan {
    len: usize,
    wanted: Vec<Wanted>,
    classes: Vec<(Vec<usize>, Vec<usize>)>,
}

/// What `batch` asks of the rate limits: every job under a limit needs a token of each of
/// its limits (its queue's, its type's, its key's). A delivery that is not a job to run, a
/// job no limit applies to, or one whose tokens were reserved before it was scheduled
/// (`reserved`) asks nothing. `None` when nothing is asked.
pub(crate) fn plan(rt: &Runtime, batch: &[(Prepared, OwnedSemaphorePermit)]) -> Option<Plan> {
    let limits = rt.limits.current();
    if limits.is_empty() {
        return None;
    }
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut classes: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    let mut class_of: HashMap<Vec<usize>, usize> = HashMap::new();
    let mut seen: HashMap<(&str, &str, Option<&str>), Option<usize>> = HashMap::new();
    for (i, (p, _)) in batch.iter().enumerate() {
        let Prepared::Run(a) = p else { continue };
        if a.env.reserved {
            continue;
        }
        let queue = crate::names::queue_of(&a.d.queue);
        let job_type = a.env.job_type.as_str();
        // Jobs of one queue, type and key need the same buckets: found once per batch.
        let seen_as = (queue, job_type, a.limit_key.as_deref());
        match seen.get(&seen_as) {
            Some(Some(c)) => {
                classes[*c].1.push(i);
                continue;
            }
            Some(None) => continue,
            None => {}
        }
        let mut mine: Vec<Wanted> = Vec::new();
        if let Some(l) = limits.queues.get(queue) {
            mine.push(bucket_of(
                rt,
                queue,
                &LimitScope::Queue(queue.to_string()),
                None,
                l,
            ));
        }
        if let Some(l) = limits.types.get(job_type) {
            mine.push(bucket_of(
                rt,
                queue,
                &LimitScope::Type(job_type.to_string()),
                None,
                l,
            ));
        }
        if let (Some(l), Some(k)) = (limits.keys.get(job_type), a.limit_key.as_deref()) {
            mine.push(bucket_of(
                rt,
                queue,
                &LimitScope::Key(job_type.to_string()),
                Some(k),
                l,
            ));
        }
        if mine.is_empty() {
            seen.insert(seen_as, None);
            continue;
        }
        let mut idx: Vec<usize> = mine
            .into_iter()
            .map(|w| match by_key.get(&w.bucket.key) {
                Some(i) => *i,
                None => {
                    by_key.insert(w.bucket.key.clone(), wanted.len());
                    wanted.push(w);
                    wanted.len() - 1
                }
            })
            .collect();
        idx.sort_unstable();
        let c = *class_of.entry(idx.clone()).or_insert_with(|| {
            classes.push((idx, Vec::new()));
            classes.len() - 1
        });
        classes[c].1.push(i);
        seen.insert(seen_as, Some(c));
    }
    if classes.is_empty() {
        return None;
    }
    Some(Plan {
        len: batch.len(),
        wanted,
        classes,
    })
}

/// Which deliveries of a batch may start now, in one script call for the whole batch;
/// `plan` is what the batch asks (`None`: every delivery starts, `len` of them).
pub(crate) async fn admit(rt: &Runtime, len: usize, plan: Option<Plan>) -> Vec<Verdict> {
    let Some(Plan {
        len,
        wanted,
        classes,
    }) = plan
    else {
        return vec![Verdict::Run; len];
    };
    let mut verdicts = vec![Verdict::Run; len];

    let buckets: Vec<Bucket> = wanted.iter().map(|w| w.bucket.clone()).collect();
    let asked: Vec<Class> = classes
        .iter()
        .map(|(b, jobs)| Class {
            buckets: b.clone(),
            jobs: jobs.len() as u32,
        })
        .collect();
    let taken = super::consume::within(
        super::consume::READ_DEADLINE,
        rt.client.store().take_tokens(&buckets, &asked),
    )
    .await;
    match taken {
        Ok(waits) => {
            for ((b, jobs), waits) in classes.iter().zip(waits) {
                let why = b
                    .iter()
                    .map(|i| wanted[*i].about.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ");
                for (job, wait_ms) in jobs.iter().zip(waits) {
                    let wait = Duration::from_millis(wait_ms);
                    verdicts[*job] = if wait_ms == 0 {
                        Verdict::Run
                    } else if wait <= SLEEP_MAX {
                        Verdict::RunIn(wait)
                    } else {
                        Verdict::Defer {
                            wait_ms,
                            again: Again::Reserve,
                            why: why.clone(),
                        }
                    };
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not take rate-limit tokens; the limited jobs wait a second");
            let why = format!("its rate limit, which could not be read ({e})");
            for (_, jobs) in &classes {
                for job in jobs {
                    verdicts[*job] = Verdict::Defer {
                        wait_ms: UNCHECKED_WAIT_MS,
                        again: Again::Defer,
                        why: why.clone(),
                    };
                }
            }
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
        out.push(bucket_of(rt, queue, &LimitScope::Type(job_type.to_string()), None, l).bucket);
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
            .bucket,
        );
    }
    out
}

/// Writes the limits this worker declares, then reads every limit in force.
pub(crate) async fn refresh(rt: &Runtime, declare: &mut Option<Vec<(String, String)>>) {
    let store = rt.client.store();
    if let Some(d) = declare.as_ref() {
        match store.set_rate_limits(d).await {
            Ok(()) => *declare = None,
            Err(e) => {
                tracing::debug!(error = %e, "recording the declared rate limits failed; retrying");
                return;
            }
        }
    }
    match store.rate_limits().await {
        Ok(fields) => {
            let limits = Limits::from_fields(&fields);
            if rt.limits.set(limits) {
                tracing::info!(limits = ?fields, "rate limits in force");
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading rate limits failed"),
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
        assert!(!l.is_empty());
        assert!(Limits::from_fields(&HashMap::new()).is_empty());
    }
}
