use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use fred::types::CustomCommand;
use serde::{Deserialize, Serialize};
use stevedore::{
    DeadJob, DeadLetterFilter, DeadLetterQuery, DeadReason, Error, JobContext, JobError, Priority,
    Worker, job_handler,
};

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Parcel {
    n: u64,
}

/// Set while `flaky` should fail; only the replay test uses that handler.
static FLAKY_FAILS: AtomicBool = AtomicBool::new(true);

#[job_handler(name = "dlq.flaky", queue = "dlq-replay", max_attempts = 3)]
async fn flaky(p: Parcel, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    if FLAKY_FAILS.load(Ordering::SeqCst) {
        Err(JobError::permanent(format!(
            "warehouse closed for parcel {}",
            p.n
        )))
    } else {
        Ok(())
    }
}

#[job_handler(name = "dlq.refuse", queue = "dlq-mixed")]
async fn refuse(_p: Parcel, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Err(JobError::permanent("refused"))
}

/// The fields of a dead letter as the worker writes them.
pub(crate) fn dead(
    env: &TestEnv,
    queue: &str,
    job_id: &str,
    job_type: &str,
    reason: &str,
    priority: &str,
) -> Vec<(String, Value)> {
    let payload = rmp_serde::to_vec_named(&Parcel { n: 7 }).unwrap_or_default();
    [
        ("id", job_id.into()),
        ("type", job_type.into()),
        ("attempt", "3".into()),
        ("max_attempts", "3".into()),
        ("enqueued_at", "1700000000000".into()),
        ("timeout", "30000".into()),
        ("payload", Value::Bytes(payload.into())),
        ("reason", reason.into()),
        ("error", "it broke".into()),
        ("failed_at", "1700000000500".into()),
        ("deliveries", "1".into()),
        (
            "origin",
            format!("{} 1700000000000-0", env.stream(queue, priority)).into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// XADDs a dead letter by hand; `id` `"*"` lets Redis pick it.
pub(crate) async fn add(
    env: &TestEnv,
    queue: &str,
    id: &str,
    fields: Vec<(String, Value)>,
) -> String {
    env.raw
        .xadd(env.dlq(queue), false, None, id, fields)
        .await
        .expect("XADD dlq")
}

/// Redis' clock in ms.
async fn redis_now_ms(env: &TestEnv) -> u64 {
    let t: Vec<String> = env
        .raw
        .custom(
            CustomCommand::new_static("TIME", None::<u16>, false),
            Vec::<String>::new(),
        )
        .await
        .expect("TIME");
    let secs: u64 = t[0].parse().expect("seconds");
    let micros: u64 = t[1].parse().expect("microseconds");
    secs * 1000 + micros / 1000
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The entries of a ready stream with their fields as text.
async fn ready_entries(env: &TestEnv, queue: &str, priority: &str) -> Vec<HashMap<String, String>> {
    let entries: Vec<(String, HashMap<String, Value>)> = env
        .raw
        .xrange_values(env.stream(queue, priority), "-", "+", None)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, f)| {
            f.into_iter()
                .map(|(k, v)| (k, v.as_string().unwrap_or_default()))
                .collect()
        })
        .collect()
}

fn ids(jobs: &[DeadJob]) -> Vec<String> {
    jobs.iter().map(|j| j.entry_id.clone()).collect()
}

fn query(filter: DeadLetterFilter, limit: usize, before: Option<String>) -> DeadLetterQuery {
    DeadLetterQuery {
        filter,
        limit,
        before,
    }
}

#[tokio::test]
async fn count_and_pages_of_newest_first_with_cursors() {
    let env = TestEnv::start().await;
    let dl = env.client.dead_letters("pages").expect("valid queue");
    assert_eq!(dl.count().await.expect("count"), 0);
    assert!(
        dl.list(&DeadLetterQuery::default())
            .await
            .expect("list")
            .jobs
            .is_empty()
    );
    let mut added = Vec::new();
    for i in 0..25 {
        let f = dead(
            &env,
            "pages",
            &format!("job-{i}"),
            "t.a",
            "failed",
            "normal",
        );
        added.push(add(&env, "pages", "*", f).await);
    }
    assert_eq!(dl.count().await.expect("count"), 25);

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut before = None;
    loop {
        let page = dl
            .list(&query(DeadLetterFilter::default(), 10, before))
            .await
            .expect("list");
        sizes.push(page.jobs.len());
        seen.extend(ids(&page.jobs));
        match page.next {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    seen.last(),
                    "the cursor is the page's last entry"
                );
                before = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    let newest_first: Vec<String> = added.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // Limits: 0 is the default (50); a page that ends exactly at the end has no next.
    let all = dl.list(&DeadLetterQuery::default()).await.expect("list");
    assert_eq!((all.jobs.len(), all.next), (25, None));
    let exact = dl
        .list(&query(DeadLetterFilter::default(), 25, None))
        .await
        .expect("list");
    assert_eq!((exact.jobs.len(), exact.next), (25, None));
    let one_short = dl
        .list(&query(DeadLetterFilter::default(), 24, None))
        .await
        .expect("list");
    assert_eq!(one_short.next.as_deref(), Some(added[1].as_str()));

    let bad_cursor = dl
        .list(&query(
            DeadLetterFilter::default(),
            10,
            Some("yesterday".into()),
        ))
        .await;
    assert!(
        matches!(bad_cursor, Err(Error::InvalidConfig(_))),
        "{bad_cursor:?}"
    );
}

#[tokio::test]
async fn filters_by_type_reason_and_time_find_sparse_matches() {
    let env = TestEnv::start().await;
    let q = "filters";
    let dl = env.client.dead_letters(q).expect("valid queue");
    let base = 1_700_000_000_000u64;
    // 260 entries one ms apart; every 100th is a rare poison job, among failed noise.
    let mut rare = Vec::new();
    for i in 0..260u64 {
        let (ty, reason) = if i % 100 == 50 {
            ("t.rare", "poison")
        } else {
            ("t.noise", "failed")
        };
        let id = add(
            &env,
            q,
            &format!("{}-0", base + i),
            dead(&env, q, &format!("j{i}"), ty, reason, "low"),
        )
        .await;
        if ty == "t.rare" {
            rare.push(id);
        }
    }
    rare.reverse();

    let by_type = DeadLetterFilter {
        job_type: Some("t.rare".into()),
        ..Default::default()
    };
    let first = dl
        .list(&query(by_type.clone(), 2, None))
        .await
        .expect("list");
    assert_eq!(
        ids(&first.jobs),
        rare[..2].to_vec(),
        "found across 100 others"
    );
    assert!(
        first
            .jobs
            .iter()
            .all(|j| j.job_type.as_deref() == Some("t.rare"))
    );
    let second = dl
        .list(&query(by_type, 2, first.next.clone()))
        .await
        .expect("list");
    assert_eq!(ids(&second.jobs), rare[2..].to_vec());
    assert_eq!(second.next, None);

    let by_reason = DeadLetterFilter {
        reason: Some(DeadReason::Poison),
        ..Default::default()
    };
    let page = dl.list(&query(by_reason, 0, None)).await.expect("list");
    assert_eq!(ids(&page.jobs), rare);
    let failed = DeadLetterFilter {
        reason: Some(DeadReason::Failed),
        ..Default::default()
    };
    let page = dl.list(&query(failed, 1000, None)).await.expect("list");
    assert_eq!(page.jobs.len(), 257);
    assert!(page.jobs.iter().all(|j| j.reason == DeadReason::Failed));

    // since is inclusive, until exclusive, both on the entry id's time.
    let window = DeadLetterFilter {
        since: Some(at_ms(base + 10)),
        until: Some(at_ms(base + 20)),
        ..Default::default()
    };
    let page = dl
        .list(&query(window.clone(), 3, None))
        .await
        .expect("list");
    let expect: Vec<String> = (17..20).rev().map(|i| format!("{}-0", base + i)).collect();
    assert_eq!(ids(&page.jobs), expect);
    let mut all = ids(&page.jobs);
    let mut next = page.next;
    while let Some(cursor) = next {
        let p = dl
            .list(&query(window.clone(), 3, Some(cursor)))
            .await
            .expect("list");
        all.extend(ids(&p.jobs));
        next = p.next;
    }
    let expect: Vec<String> = (10..20).rev().map(|i| format!("{}-0", base + i)).collect();
    assert_eq!(all, expect);
    let combined = DeadLetterFilter {
        job_type: Some("t.rare".into()),
        since: Some(at_ms(base + 100)),
        ..Default::default()
    };
    let page = dl.list(&query(combined, 10, None)).await.expect("list");
    assert_eq!(ids(&page.jobs), rare[..2].to_vec());
    let empty = DeadLetterFilter {
        since: Some(at_ms(base + 20)),
        until: Some(at_ms(base + 20)),
        ..Default::default()
    };
    assert!(
        dl.list(&query(empty, 10, None))
            .await
            .expect("list")
            .jobs
            .is_empty()
    );
}

#[tokio::test]
async fn get_reads_every_field_and_a_missing_id_is_none() {
    let env = TestEnv::start().await;
    let q = "get";
    let dl = env.client.dead_letters(q).expect("valid queue");
    let mut f = dead(&env, q, "job-1", "t.get", "timeout", "high");
    f.push(("replayed_from".into(), "1-0".into()));
    f.push(("note".into(), "kept".into()));
    let id = add(&env, q, "*", f).await;

    let job = dl.get(&id).await.expect("get").expect("present");
    assert_eq!(job.entry_id, id);
    assert_eq!(job.job_id.as_deref(), Some("job-1"));
    assert_eq!(job.job_type.as_deref(), Some("t.get"));
    assert_eq!(job.queue, q);
    assert_eq!(job.priority, Some(Priority::High));
    assert_eq!(job.reason, DeadReason::Timeout);
    assert_eq!(job.error, "it broke");
    assert_eq!(
        (job.attempts, job.max_attempts, job.deliveries),
        (Some(3), Some(3), Some(1))
    );
    assert_eq!(job.failed_at, Some(at_ms(1_700_000_000_500)));
    assert_eq!(job.enqueued_at, Some(at_ms(1_700_000_000_000)));
    assert!(
        job.origin
            .as_deref()
            .is_some_and(|o| o.ends_with(":high 1700000000000-0"))
    );
    assert_eq!(job.replayed_from.as_deref(), Some("1-0"));
    assert_eq!(job.payload_json(), Some(serde_json::json!({ "n": 7 })));
    assert_eq!(
        job.fields,
        vec![
            ("timeout".to_string(), "30000".to_string()),
            ("note".to_string(), "kept".to_string())
        ]
    );
    assert!(
        !format!("{job:?}").contains("payload:"),
        "Debug leaves the payload out"
    );

    assert!(dl.get("1-0").await.expect("get").is_none());
    assert!(dl.get("not an id").await.expect("get").is_none());
}

#[tokio::test]
async fn malformed_dead_letters_list_without_breaking_the_page() {
    let env = TestEnv::start().await;
    let q = "odd";
    let dl = env.client.dead_letters(q).expect("valid queue");
    add(
        &env,
        q,
        "*",
        dead(&env, q, "good-1", "t.ok", "failed", "normal"),
    )
    .await;
    let odd: Vec<(String, Value)> = vec![
        ("hello".into(), "world".into()),
        ("attempt".into(), "first".into()),
        ("deliveries".into(), "-3".into()),
        ("failed_at".into(), "tomorrow".into()),
        ("origin".into(), "nowhere".into()),
        ("reason".into(), "cosmic_ray".into()),
        ("error".into(), Value::Bytes(vec![0xff, 0xfe, b'x'].into())),
        ("payload".into(), Value::Bytes(vec![0xc1, 0x00].into())),
    ];
    let odd_id = add(&env, q, "*", odd).await;
    let bare_id = add(&env, q, "*", vec![("x".to_string(), Value::from("y"))]).await;
    add(
        &env,
        q,
        "*",
        dead(&env, q, "good-2", "t.ok", "failed", "normal"),
    )
    .await;

    let page = dl.list(&DeadLetterQuery::default()).await.expect("list");
    assert_eq!(page.jobs.len(), 4);
    let odd = page
        .jobs
        .iter()
        .find(|j| j.entry_id == odd_id)
        .expect("odd listed");
    assert_eq!(odd.reason, DeadReason::Other("cosmic_ray".into()));
    assert_eq!(odd.reason.to_string(), "cosmic_ray");
    assert_eq!(
        (odd.job_id.as_deref(), odd.attempts, odd.deliveries),
        (None, None, None)
    );
    assert_eq!(odd.priority, None);
    assert!(odd.error.ends_with('x'), "lossy text: {:?}", odd.error);
    assert!(odd.failed_at.is_some(), "falls back to the entry id's time");
    assert_eq!(odd.payload_json(), None);
    assert_eq!(odd.fields, vec![("hello".to_string(), "world".to_string())]);
    let bare = page
        .jobs
        .iter()
        .find(|j| j.entry_id == bare_id)
        .expect("bare listed");
    assert_eq!(bare.reason, DeadReason::Other(String::new()));
    assert!(bare.payload.is_empty());
    // A reason filter skips them without failing.
    let failed = DeadLetterFilter {
        reason: Some(DeadReason::Failed),
        ..Default::default()
    };
    assert_eq!(
        dl.list(&query(failed, 0, None))
            .await
            .expect("list")
            .jobs
            .len(),
        2
    );
}

#[tokio::test]
async fn a_replayed_job_runs_again_from_attempt_one_with_the_same_id() {
    let env = TestEnv::start().await;
    let q = "dlq-replay";
    let dl = env.client.dead_letters(q).expect("valid queue");
    // One worker throughout: today a stopped worker's blocking XREADGROUP can outlive it
    // on the server and take the replayed entry, leaving it pending to a gone consumer.
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(flaky::handler())
            .build()
            .expect("worker"),
    );
    let job_id = env
        .client
        .enqueue(flaky::job(Parcel { n: 42 }).priority(Priority::High))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "the job is dead-lettered",
        || async { dl.count().await.expect("count") == 1 },
    )
    .await;

    let page = dl.list(&DeadLetterQuery::default()).await.expect("list");
    let dead = page.jobs.first().expect("one dead letter").clone();
    assert_eq!(dead.job_id.as_deref(), Some(job_id.as_str()));
    assert_eq!(dead.job_type.as_deref(), Some("dlq.flaky"));
    assert_eq!(dead.reason, DeadReason::Failed);
    assert_eq!(dead.error, "warehouse closed for parcel 42");
    assert_eq!(dead.priority, Some(Priority::High));
    assert_eq!((dead.attempts, dead.max_attempts), (Some(1), Some(3)));
    assert_eq!(dead.deliveries, Some(1));
    assert!(dead.failed_at.is_some() && dead.enqueued_at.is_some());
    assert_eq!(dead.payload_json(), Some(serde_json::json!({ "n": 42 })));

    FLAKY_FAILS.store(false, Ordering::SeqCst);
    let replayed = dl.replay(&dead.entry_id).await.expect("replay");
    assert_eq!(replayed.as_ref(), Some(&job_id));
    let again = dl.replay(&dead.entry_id).await.expect("replay again");
    assert_eq!(again, None, "already gone");
    assert!(dl.get(&dead.entry_id).await.expect("get").is_none());
    eventually(Duration::from_secs(10), "the replayed job ran", || async {
        support::runs(job_id.as_str()) == 2
    })
    .await;
    eventually(Duration::from_secs(5), "and was acknowledged", || async {
        env.ready(q).await == 0 && env.pending(q).await == 0
    })
    .await;
    running.shutdown().await.expect("worker stops");
    assert_eq!(
        support::values::<u32>(job_id.as_str()),
        vec![1, 1],
        "a fresh attempt budget"
    );
    // Its status started over at the replay: no trace of the death it came back from.
    let status = env
        .client
        .status(job_id.as_str())
        .await
        .expect("status")
        .expect("known job");
    assert_eq!(status.state, stevedore::JobState::Succeeded);
    assert_eq!(
        (
            status.attempts,
            status.error.as_deref(),
            status.reason.as_deref()
        ),
        (1, None, None)
    );
    assert_eq!(dl.count().await.expect("count"), 0);
}

#[tokio::test]
async fn replay_copies_the_job_to_its_priority_without_the_dead_letter_fields() {
    let env = TestEnv::start().await;
    let q = "copy";
    let dl = env.client.dead_letters(q).expect("valid queue");
    let mut f = dead(&env, q, "job-high", "t.copy", "failed", "high");
    f.push(("unique".into(), "u-1".into()));
    f.push(("replayed_from".into(), "1-0".into()));
    f.push(("truncated".into(), "3".into()));
    let high = add(&env, q, "*", f).await;
    let low = add(
        &env,
        q,
        "*",
        dead(&env, q, "job-low", "t.copy", "failed", "low"),
    )
    .await;
    let mut f = dead(&env, q, "job-nowhere", "t.copy", "failed", "normal");
    f.retain(|(k, _)| k != "origin" && k != "attempt");
    let nowhere = add(&env, q, "*", f).await;
    let anonymous = add(
        &env,
        q,
        "*",
        vec![("hello".to_string(), Value::from("world"))],
    )
    .await;

    let replay = |id: String| {
        let dl = dl.clone();
        async move { dl.replay(&id).await.expect("replay").map(|j| j.to_string()) }
    };
    assert_eq!(replay(high.clone()).await.as_deref(), Some("job-high"));
    // Its status had expired (here: never existed): it is written whole again.
    let status = env
        .client
        .status_in(q, "job-high")
        .await
        .expect("status")
        .expect("a status after the replay");
    assert_eq!(status.state, stevedore::JobState::Queued);
    assert_eq!(
        (status.job_type.as_str(), status.queue.as_str()),
        ("t.copy", q)
    );
    assert_eq!((status.attempts, status.max_attempts), (0, 3));
    assert!(status.enqueued_at.is_some());
    assert_eq!(replay(low.clone()).await.as_deref(), Some("job-low"));
    assert_eq!(
        replay(nowhere.clone()).await.as_deref(),
        Some("job-nowhere")
    );
    assert_eq!(
        replay(anonymous.clone()).await.as_deref(),
        Some(""),
        "no id field"
    );
    assert_eq!(dl.count().await.expect("count"), 0);

    let high_entries = ready_entries(&env, q, "high").await;
    assert_eq!(high_entries.len(), 1);
    let e = &high_entries[0];
    let expect = [
        ("id", "job-high"),
        ("type", "t.copy"),
        ("attempt", "1"),
        ("max_attempts", "3"),
        ("enqueued_at", "1700000000000"),
        ("timeout", "30000"),
        ("unique", "u-1"),
        ("replayed_from", high.as_str()),
    ];
    for (k, v) in expect {
        assert_eq!(e.get(k).map(String::as_str), Some(v), "{k}: {e:?}");
    }
    for gone in [
        "reason",
        "error",
        "failed_at",
        "deliveries",
        "origin",
        "truncated",
    ] {
        assert!(!e.contains_key(gone), "{gone} dropped: {e:?}");
    }
    // The payload's bytes are copied unchanged.
    let raw: Vec<(String, HashMap<String, Value>)> = env
        .raw
        .xrange_values(env.stream(q, "high"), "-", "+", None)
        .await
        .expect("XRANGE");
    let payload = raw[0].1.get("payload").cloned().expect("payload");
    let payload: Vec<u8> = payload.convert().expect("bytes");
    assert_eq!(
        payload,
        rmp_serde::to_vec_named(&Parcel { n: 7 }).unwrap_or_default()
    );

    let low_entries = ready_entries(&env, q, "low").await;
    assert_eq!(low_entries.len(), 1);
    assert_eq!(low_entries[0].get("replayed_from"), Some(&low));
    let normal = ready_entries(&env, q, "normal").await;
    assert_eq!(normal.len(), 2, "unknown origin goes to normal: {normal:?}");
    assert_eq!(normal[0].get("id").map(String::as_str), Some("job-nowhere"));
    assert_eq!(
        normal[0].get("attempt").map(String::as_str),
        Some("1"),
        "added when missing"
    );
    assert_eq!(normal[1].get("hello").map(String::as_str), Some("world"));
    assert_eq!(normal[1].get("replayed_from"), Some(&anonymous));
}

#[tokio::test]
async fn worker_dead_letters_filter_by_reason_and_replay_or_purge_only_matches() {
    let env = TestEnv::start().await;
    let q = "dlq-mixed";
    let dl = env.client.dead_letters(q).expect("valid queue");
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(refuse::handler())
            .build()
            .expect("worker"),
    );
    for n in 0..3 {
        env.client
            .enqueue(refuse::job(Parcel { n }))
            .await
            .expect("enqueue");
    }
    let stream = env.stream(q, "normal");
    let _: String = env
        .raw
        .xadd(stream.as_str(), false, None, "*", vec![("not", "a job")])
        .await
        .expect("xadd");
    let payload = rmp_serde::to_vec_named(&Parcel { n: 9 }).unwrap_or_default();
    let unknown: Vec<(&str, Value)> = vec![
        ("id", "unknown-1".into()),
        ("type", "dlq.nobody".into()),
        // The last attempt: unknown types are retried before they are dead-lettered.
        ("attempt", "3".into()),
        ("max_attempts", "3".into()),
        ("enqueued_at", "1700000000000".into()),
        ("payload", Value::Bytes(payload.into())),
    ];
    let _: String = env
        .raw
        .xadd(stream.as_str(), false, None, "*", unknown)
        .await
        .expect("xadd");
    eventually(Duration::from_secs(10), "five dead letters", || async {
        dl.count().await.expect("count") == 5
    })
    .await;
    running.shutdown().await.expect("worker stops");

    let with = |reason: DeadReason| DeadLetterFilter {
        reason: Some(reason),
        ..Default::default()
    };
    let count = |f: DeadLetterFilter| {
        let dl = dl.clone();
        async move { dl.list(&query(f, 0, None)).await.expect("list").jobs.len() }
    };
    assert_eq!(count(with(DeadReason::Failed)).await, 3);
    assert_eq!(count(with(DeadReason::BadEntry)).await, 1);
    assert_eq!(count(with(DeadReason::UnknownType)).await, 1);
    let refused = DeadLetterFilter {
        job_type: Some("dlq.refuse".into()),
        ..Default::default()
    };
    assert_eq!(count(refused.clone()).await, 3);

    assert_eq!(
        dl.purge_matching(&with(DeadReason::BadEntry))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(dl.count().await.expect("count"), 4);
    assert_eq!(
        dl.replay_matching(&with(DeadReason::UnknownType))
            .await
            .expect("replay"),
        1
    );
    assert_eq!(dl.count().await.expect("count"), 3);
    let ready = ready_entries(&env, q, "normal").await;
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(ready[0].get("id").map(String::as_str), Some("unknown-1"));
    assert_eq!(ready[0].get("attempt").map(String::as_str), Some("1"));
    assert!(ready[0].contains_key("replayed_from"), "{ready:?}");
    assert_eq!(count(refused).await, 3, "the others stay dead");
    assert_eq!(
        dl.replay_matching(&with(DeadReason::Poison))
            .await
            .expect("replay"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_all_twice_at_once_reenqueues_each_job_exactly_once() {
    let env = TestEnv::start().await;
    let q = "race";
    let priorities = ["high", "normal", "low"];
    for i in 0..200 {
        let p = priorities[i % 3];
        add(
            &env,
            q,
            "*",
            dead(&env, q, &format!("job-{i}"), "t.race", "failed", p),
        )
        .await;
    }
    let a = env.client.dead_letters(q).expect("valid queue");
    let other = env.client_with(|b| b).await;
    let b = other.dead_letters(q).expect("valid queue");
    let (ra, rb) = tokio::join!(a.replay_all(), b.replay_all());
    let (ra, rb) = (ra.expect("replay_all"), rb.expect("replay_all"));
    assert_eq!(ra + rb, 200, "each counted once: {ra} + {rb}");
    assert_eq!(a.count().await.expect("count"), 0);
    assert_eq!(env.ready(q).await, 200);
    let mut job_ids = HashSet::new();
    for (i, p) in priorities.iter().enumerate() {
        let entries = ready_entries(&env, q, p).await;
        assert_eq!(entries.len(), [67, 67, 66][i], "{p}");
        for e in entries {
            assert_eq!(e.get("attempt").map(String::as_str), Some("1"));
            job_ids.insert(e.get("id").cloned().unwrap_or_default());
        }
    }
    assert_eq!(job_ids.len(), 200, "no job twice");
    assert_eq!(a.replay_all().await.expect("replay_all"), 0);
}

#[tokio::test]
async fn purge_one_all_older_than_and_matching() {
    let env = TestEnv::start().await;
    let q = "purge";
    let dl = env.client.dead_letters(q).expect("valid queue");
    let now = redis_now_ms(&env).await;
    let hour = 3_600_000;
    let old_a = add(
        &env,
        q,
        &format!("{}-0", now - 2 * hour),
        dead(&env, q, "a", "t.old", "failed", "normal"),
    )
    .await;
    let old_b = add(
        &env,
        q,
        &format!("{}-0", now - hour - 1000),
        dead(&env, q, "b", "t.old", "failed", "normal"),
    )
    .await;
    let mut fresh = Vec::new();
    for i in 0..4 {
        let ty = if i % 2 == 0 { "t.even" } else { "t.odd" };
        fresh.push(
            add(
                &env,
                q,
                "*",
                dead(&env, q, &format!("f{i}"), ty, "failed", "normal"),
            )
            .await,
        );
    }
    assert_eq!(dl.count().await.expect("count"), 6);

    assert_eq!(
        dl.purge_older_than(Duration::from_secs(30 * 60))
            .await
            .expect("purge"),
        2
    );
    assert!(dl.get(&old_a).await.expect("get").is_none());
    assert!(dl.get(&old_b).await.expect("get").is_none());
    assert_eq!(dl.count().await.expect("count"), 4, "newer ones kept");
    assert_eq!(
        dl.purge_older_than(Duration::from_secs(30 * 60))
            .await
            .expect("purge"),
        0
    );
    assert_eq!(
        dl.purge_older_than(Duration::from_secs(1 << 40))
            .await
            .expect("purge"),
        0
    );

    assert!(dl.purge(&fresh[0]).await.expect("purge"));
    assert!(
        !dl.purge(&fresh[0]).await.expect("purge again"),
        "already gone"
    );
    assert!(!dl.purge("garbage").await.expect("purge"));
    let odd = DeadLetterFilter {
        job_type: Some("t.odd".into()),
        ..Default::default()
    };
    assert_eq!(dl.purge_matching(&odd).await.expect("purge"), 2);
    let left = dl.list(&DeadLetterQuery::default()).await.expect("list");
    assert_eq!(ids(&left.jobs), vec![fresh[2].clone()]);
    assert_eq!(dl.purge_all().await.expect("purge_all"), 1);
    assert_eq!(dl.count().await.expect("count"), 0);
    assert_eq!(dl.purge_all().await.expect("purge_all"), 0);
    assert_eq!(dl.replay("1-0").await.expect("replay"), None);
}

#[tokio::test]
async fn invalid_queue_names_are_refused() {
    let env = TestEnv::start().await;
    for bad in ["", "a b", "a{b}", "q:dlq", "é"] {
        let r = env.client.dead_letters(bad);
        assert!(
            matches!(r, Err(Error::InvalidName { kind: "queue", .. })),
            "{bad:?}: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_worker_with_dlq_retention_purges_old_dead_letters() {
    let env = TestEnv::start().await;
    let now = redis_now_ms(&env).await;
    let two_hours_ago = format!("{}-0", now - 2 * 3600 * 1000);
    add(
        &env,
        "dlq-mixed",
        &two_hours_ago,
        dead(&env, "dlq-mixed", "old", "dlq.refuse", "failed", "normal"),
    )
    .await;
    add(
        &env,
        "dlq-mixed",
        "*",
        dead(&env, "dlq-mixed", "new", "dlq.refuse", "failed", "normal"),
    )
    .await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .lease(Duration::from_millis(100))
            .dlq_retention(Duration::from_secs(3600))
            .handler(refuse::handler())
            .build()
            .expect("worker"),
    );
    eventually(
        Duration::from_secs(10),
        "the old dead letter was purged",
        || async { env.xlen(&env.dlq("dlq-mixed")).await == 1 },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
    let left = env.dead_letters("dlq-mixed").await;
    assert_eq!(
        left[0].get("id").map(String::as_str),
        Some("new"),
        "the recent one is kept"
    );
}
