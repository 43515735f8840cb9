//! A job's way through the storage layer: enqueued, fetched, started, acknowledged,
//! retried, dead-lettered, promoted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;

use super::*;

#[tokio::test]
async fn enqueue_fetch_and_ack_a_batch_status_from_the_entry_then_the_done_bucket() {
    let (s, raw, _redis) = store("t-ack").await;
    let ids = enqueue(&s, "q", 3).await;
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.starts_with("q:n-")), "{ids:?}");
    assert!(
        s.known_queues()
            .await
            .expect("queues")
            .contains(&"q".to_string())
    );
    let waiting = s.job_status("q", &ids[0]).await.expect("status");
    assert!(
        matches!(&waiting, Found::Entry { fields, running: None, .. } if fields.get("type").is_some()),
        "{waiting:?}"
    );
    let keys: u64 = raw.dbsize().await.expect("dbsize");
    assert_eq!(keys, 2, "the queue set and one stream: no key per job");

    let got = fetch(&s, "q", "c1").await;
    assert_eq!(got.len(), 3);
    let envs: Vec<_> = got
        .iter()
        .map(|(_, id, f)| {
            envelope_of(f, "q", crate::Priority::Normal, id, 1 << 20).expect("envelope")
        })
        .collect();
    assert_eq!(envs.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    assert!(envs.iter().all(|e| !e.recorded));
    match s.job_status("q", &ids[1]).await.expect("status") {
        Found::Entry {
            running: Some((owner, _, deliveries)),
            ..
        } => assert_eq!((owner.as_str(), deliveries), ("c1", 1)),
        other => panic!("not running: {other:?}"),
    }

    let mut by_stream: HashMap<Arc<str>, StreamAcks> = HashMap::new();
    for ((stream, entry, _), env) in got.iter().zip(&envs) {
        let acks = by_stream.entry(Arc::from(stream.as_str())).or_default();
        acks.ids.push(entry.clone());
        acks.records.push(Succeeded::Done {
            bucket: s.keys().done_of(&env.id).expect("a locator"),
            job_id: env.id.clone(),
            value: Succeeded::done_value(1_000, 1, 4, "t.job", Some("{\"ok\":1}")),
            keep_ms: 60_000,
        });
    }
    assert_eq!(s.ack_batch(&by_stream).await.expect("ack"), 3);
    assert_eq!(
        s.ack_batch(&by_stream).await.expect("again"),
        0,
        "safe to repeat"
    );
    let found = s
        .find_job_status(&["other".into(), "q".into()], &ids[2])
        .await
        .expect("find");
    assert_eq!(
        found,
        Some(("q".into(), Found::Done("1000 1 4 t.job {\"ok\":1}".into())))
    );
    let bucket = s.keys().done_of(&ids[0]).expect("a locator");
    let ttl: i64 = raw.pttl(&bucket).await.expect("pttl");
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "bucket kept for the retention: {ttl}"
    );
    let len: u64 = raw
        .xlen(s.keys().stream("q", crate::Priority::Normal))
        .await
        .expect("xlen");
    assert_eq!(len, 0, "acknowledged entries are deleted");
    let c = s.queue_counts("q").await.expect("counts");
    assert_eq!((c.ready, c.pending), ([0; 3], [0; 3]));
    assert_eq!(
        s.job_status("q", "q:n-1-0").await.expect("status"),
        Found::Nothing
    );
    assert_eq!(
        s.job_status("q", "0190a5c8-6f1e-7c3a-9b1e-2f4d5e6a7b8c")
            .await
            .expect("status"),
        Found::Nothing
    );
}

#[tokio::test]
async fn unique_and_delayed_jobs_then_promotion() {
    let (s, _, _redis) = store("t-promote").await;
    let mut first = write(job("q"));
    first.unique = Some(("k".into(), 60_000));
    let mut dup = write(job("q"));
    dup.unique = Some(("k".into(), 60_000));
    let mut delayed = write(job("q"));
    delayed.when = Some(("in", 0));
    let ids: Vec<(String, bool)> = s
        .enqueue_batch(vec![], vec![first, dup, delayed], 60_000)
        .await
        .expect("enqueue")
        .into_iter()
        .map(crate::redis::Written::into_pair)
        .collect();
    assert!(ids[0].0.starts_with("q:n-") && ids[0].1);
    assert_eq!(
        ids[1],
        (ids[0].0.clone(), false),
        "a duplicate gets the first job's id"
    );
    assert!(
        ids[2].1 && !ids[2].0.starts_with("q:"),
        "a delayed job: a UUID"
    );
    assert_eq!(
        state(&s.job_status("q", &ids[2].0).await.expect("status")),
        Some("scheduled".into())
    );
    let c = s.queue_counts("q").await.expect("counts");
    assert_eq!((c.ready[1], c.scheduled), (1, 1));

    let p = s.promote_due("q", 10).await.expect("promote");
    assert_eq!((p.moved, p.next_due_ms), (1, None));
    assert!(p.now_ms > 1_600_000_000_000, "Redis' clock in ms");
    assert_eq!(s.queue_counts("q").await.expect("counts").ready[1], 2);
    assert_eq!(
        state(&s.job_status("q", &ids[2].0).await.expect("status")),
        Some("queued".into())
    );

    // The promoted job carries its id in its entry, and is marked running by id.
    let got = fetch(&s, "q", "c1").await;
    let mut envs: Vec<_> = got
        .iter()
        .map(|(_, id, f)| {
            envelope_of(f, "q", crate::Priority::Normal, id, 1 << 20).expect("envelope")
        })
        .collect();
    let promoted = envs
        .iter_mut()
        .find(|e| e.id == ids[2].0)
        .expect("the promoted job");
    assert!(promoted.recorded);
    promoted.resolve_max_attempts(4);
    let key = s.keys().job("q", &promoted.id);
    assert!(
        s.mark_started(&[(&key, &*promoted)], 1_000)
            .await
            .is_empty()
    );
    let found = s.job_status("q", &ids[2].0).await.expect("status");
    assert_eq!(state(&found), Some("running".into()));
    assert!(matches!(&found, Found::Record(h) if h["max_attempts"] == "4"));
}

/// The `state` of a status hash.
fn state(found: &Found) -> Option<String> {
    match found {
        Found::Record(h) => h.get("state").cloned(),
        _ => None,
    }
}

#[tokio::test]
async fn retry_and_dead_letter_are_fenced_by_the_owner() {
    let (s, _, _redis) = store("t-fenced").await;
    let ids = enqueue(&s, "q", 2).await;
    let got = fetch(&s, "q", "owner").await;
    let (stream, entry, _) = &got[0];
    let about = [("type", "t.job".to_string()), ("queue", "q".to_string())];
    let retry = |consumer| Retry {
        again: crate::redis::Again::Retry,
        queue: "q",
        priority: crate::Priority::Normal,
        stream,
        entry_id: entry,
        consumer,
        job_id: &ids[0],
        delay_ms: 60_000,
        retention_ms: 60_000,
        error: "boom",
        about: &about,
    };
    assert_eq!(
        s.retry_later(&retry("intruder")).await.expect("retry"),
        Fenced::LeaseLost
    );
    assert_eq!(
        s.retry_later(&retry("owner")).await.expect("retry"),
        Fenced::Done
    );
    assert_eq!(
        s.retry_later(&retry("owner")).await.expect("again"),
        Fenced::LeaseLost
    );
    let Found::Record(h) = s.job_status("q", &ids[0]).await.expect("status") else {
        panic!("a retried job gets a status hash");
    };
    assert_eq!(
        (h["state"].as_str(), h["error"].as_str(), h["type"].as_str()),
        ("retrying", "boom", "t.job")
    );
    let p = s.promote_due("q", 10).await.expect("promote");
    assert!(p.moved == 0 && p.next_due_ms.is_some_and(|d| d > p.now_ms));

    let (stream, entry, _) = &got[1];
    let long_error = "x".repeat(10_000);
    let letter = |consumer| DeadLetter {
        queue: "q",
        stream,
        entry_id: entry,
        consumer,
        job_id: Some(&ids[1]),
        retention_ms: 60_000,
        reason: "failed",
        error: &long_error,
        about: &about,
    };
    assert_eq!(
        s.dead_letter(&letter("intruder")).await.expect("dead"),
        Fenced::LeaseLost
    );
    assert_eq!(
        s.dead_letter(&letter("owner")).await.expect("dead"),
        Fenced::Done
    );
    assert_eq!(s.dead_count("q").await.expect("count"), 1);
    let dead = s.dead_range("q", "-", "+", 10, false).await.expect("range");
    let error = dead[0].1.get("error").expect("error field");
    assert_eq!(error.len(), 4096, "errors are cut to 4 KiB");
    assert_eq!(
        dead[0].1.get("id").map(|v| v.as_ref()),
        Some(ids[1].as_bytes()),
        "the dead letter names its job"
    );
    assert_eq!(
        state(&s.job_status("q", &ids[1]).await.expect("status")),
        Some("dead".into())
    );
}

#[tokio::test]
async fn a_fetch_gives_an_empty_streams_share_to_the_others_and_never_takes_more() {
    let (s, _, _redis) = store("t-fetch").await;
    let mut writes = Vec::new();
    for p in [
        crate::Priority::Low,
        crate::Priority::Low,
        crate::Priority::Normal,
    ] {
        let mut w = write(job("q"));
        w.priority = p;
        writes.push(w);
    }
    s.enqueue_batch(vec![], writes, 0).await.expect("enqueue");
    let streams = s.keys().streams("q");
    let reader = s.reader("c").await.expect("reader");
    reader.ensure_groups(&streams).await.expect("groups");
    let counts = |r: &[crate::Result<Vec<crate::redis::Entry>>; 3]| {
        r.iter()
            .map(|e| e.as_ref().map(Vec::len).unwrap_or(99))
            .collect::<Vec<_>>()
    };
    // One slot, given to the empty high stream: the normal job comes instead.
    let r = reader
        .read_ready(&streams, [1, 0, 0], &Default::default())
        .await
        .expect("read");
    assert_eq!(counts(&r), [0, 1, 0]);
    // Two slots, given to high: the two low jobs (normal is empty now), and no more.
    let r = reader
        .read_ready(&streams, [2, 0, 0], &Default::default())
        .await
        .expect("read");
    assert_eq!(counts(&r), [0, 0, 2]);
    let r = reader
        .read_ready(&streams, [5, 5, 5], &Default::default())
        .await
        .expect("read");
    assert_eq!(counts(&r), [0, 0, 0]);
    reader.close().await;
}

#[tokio::test]
async fn blocking_reads_wake_on_a_new_entry() {
    let (s, _, _redis) = store("t-block").await;
    let streams = s.keys().streams("q");
    let reader = s.reader("c").await.expect("reader");
    reader.ensure_groups(&streams).await.expect("groups");
    reader
        .ensure_groups(&streams)
        .await
        .expect("an existing group is fine");
    let empty = reader
        .read_blocking(1, Duration::from_millis(50), streams.to_vec())
        .await
        .expect("read");
    assert!(empty.is_empty());
    let read = reader.read_blocking(1, Duration::from_secs(5), streams.to_vec());
    let started = Instant::now();
    let (got, _) = tokio::join!(read, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        enqueue(&s, "q", 1).await
    });
    let got = got.expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(priority_of(&got[0].0), Some(crate::Priority::Normal));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken, not timed out"
    );
    reader.close().await;
}

/// A fetch acknowledges the entries the worker finished since its last one, with their
/// success records, before it reads: one call for both.
#[tokio::test]
async fn a_fetch_acknowledges_finished_entries_and_reads_the_next() {
    let (s, raw, _redis) = store("t-ride").await;
    let mut writes = Vec::new();
    for p in [
        crate::Priority::High,
        crate::Priority::Normal,
        crate::Priority::Normal,
    ] {
        let mut w = write(job("q"));
        w.priority = p;
        writes.push(w);
    }
    let ids: Vec<String> = s
        .enqueue_batch(vec![], writes, 0)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|w| w.into_pair().0)
        .collect();
    let streams = s.keys().streams("q");
    let reader = s.reader("c").await.expect("reader");
    reader.ensure_groups(&streams).await.expect("groups");
    let nothing: [StreamAcks; 3] = Default::default();
    let r = reader
        .read_ready(&streams, [2, 0, 0], &nothing)
        .await
        .expect("read");
    let high = r[0].as_ref().expect("high").clone();
    let normal = r[1].as_ref().expect("normal").clone();
    assert_eq!((high.len(), normal.len()), (1, 1));

    // Both finished: the high one keeps a success record, the normal one none.
    let mut finished: [StreamAcks; 3] = Default::default();
    finished[0].ids.push(high[0].0.clone());
    finished[0].records.push(Succeeded::Done {
        bucket: s.keys().done_of(&ids[0]).expect("a locator"),
        job_id: ids[0].clone(),
        value: Succeeded::done_value(2_000, 1, 3, "t.job", None),
        keep_ms: 60_000,
    });
    finished[1].ids.push(normal[0].0.clone());
    let r = reader
        .read_ready(&streams, [1, 0, 0], &finished)
        .await
        .expect("read");
    assert_eq!(r[1].as_ref().expect("normal").len(), 1, "the next job");
    let pending = |stream: String| {
        let raw = raw.clone();
        async move {
            let p: Value = raw
                .xpending(stream.as_str(), crate::redis::keys::GROUP, ())
                .await
                .expect("xpending");
            p.into_array()
                .first()
                .and_then(|v| v.as_i64())
                .unwrap_or(-1)
        }
    };
    assert_eq!(pending(streams[0].clone()).await, 0, "high acknowledged");
    assert_eq!(
        pending(streams[1].clone()).await,
        1,
        "only the new one pending"
    );
    let high_len: u64 = raw.xlen(&streams[0]).await.expect("xlen");
    assert_eq!(high_len, 0, "and deleted");
    assert_eq!(
        s.job_status("q", &ids[0]).await.expect("status"),
        Found::Done("2000 1 3 t.job".into())
    );
    assert_eq!(
        s.job_status("q", &ids[1]).await.expect("status"),
        Found::Nothing
    );
    reader.close().await;
}

/// A queue's success records past its memory budget go, oldest minute first; buckets that
/// expired leave the index.
#[tokio::test]
async fn success_records_past_a_memory_budget_are_deleted_oldest_minute_first() {
    let (s, raw, _redis) = store("t-budget").await;
    let streams = s.keys().streams("q");
    let reader = s.reader("c").await.expect("reader");
    reader.ensure_groups(&streams).await.expect("groups");
    reader.close().await;
    let stream: Arc<str> = Arc::from(streams[1].as_str());
    let result = format!("{{\"text\":\"{}\"}}", "x".repeat(100));
    for minute in [100u64, 101, 102] {
        let ms = minute * 60_000;
        let mut acks = StreamAcks::default();
        for i in 0..20 {
            acks.ids.push(format!("{ms}-{i}"));
            acks.records.push(Succeeded::Done {
                bucket: s.keys().done("q", ms),
                job_id: format!("q:n-{ms}-{i}"),
                value: Succeeded::done_value(ms + 5, 1, 3, "t.job", Some(&result)),
                keep_ms: 3_600_000,
            });
        }
        let by_stream = HashMap::from([(stream.clone(), acks)]);
        s.ack_batch(&by_stream).await.expect("ack");
    }
    let index = s.keys().done_index("q");
    let listed: Vec<String> = raw
        .zrange(&index, 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    assert_eq!(listed, ["100", "101", "102"]);
    let ttl: i64 = raw.pttl(&index).await.expect("pttl");
    assert!(ttl > 3_000_000, "the index expires with its buckets: {ttl}");
    let mut sizes = Vec::new();
    for minute in [100u64, 101, 102] {
        let size: u64 = raw
            .custom(
                fred::cmd!("MEMORY"),
                vec!["USAGE".to_string(), s.keys().done("q", minute * 60_000)],
            )
            .await
            .expect("memory usage");
        sizes.push(size);
    }

    // Room for the two newest and half the oldest: the oldest goes, whole.
    let budget = sizes[2] + sizes[1] + sizes[0] / 2;
    let t = s.done_trim("q", budget).await.expect("trim");
    assert_eq!(
        (t.buckets, t.freed, t.kept),
        (1, sizes[0], sizes[1] + sizes[2])
    );
    assert_eq!(
        s.job_status("q", "q:n-6000000-3").await.expect("status"),
        Found::Nothing
    );
    assert!(matches!(
        s.job_status("q", "q:n-6060000-3").await.expect("status"),
        Found::Done(_)
    ));
    let again = s.done_trim("q", budget).await.expect("trim");
    assert_eq!(again.buckets, 0, "within the budget now");

    // An expired bucket leaves the index; a budget of nothing deletes the rest.
    let _: i64 = raw
        .del(s.keys().done("q", 101 * 60_000))
        .await
        .expect("del");
    let t = s.done_trim("q", 0).await.expect("trim");
    assert_eq!((t.buckets, t.freed, t.kept), (1, sizes[2], 0));
    let listed: Vec<String> = raw
        .zrange(&index, 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    assert!(listed.is_empty(), "{listed:?}");
}
