//! A job's way through the storage layer: enqueued, fetched, started, acknowledged,
//! retried, dead-lettered, promoted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;

use super::*;

#[tokio::test]
async fn enqueue_fetch_start_and_ack_a_batch() {
    let (s, raw, _redis) = store("t-ack").await;
    let ids = enqueue(&s, "q", 3).await;
    assert_eq!(ids.len(), 3);
    assert!(
        s.known_queues()
            .await
            .expect("queues")
            .contains(&"q".to_string())
    );
    assert_eq!(
        s.job_status("q", &ids[0]).await.expect("status")["state"],
        "queued"
    );

    let got = fetch(&s, "q", "c1").await;
    assert_eq!(got.len(), 3);
    let envs: Vec<_> = got
        .iter()
        .map(|(_, _, f)| envelope_of(f, 1 << 20).expect("envelope"))
        .collect();
    assert_eq!(envs.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);

    let keys: Vec<String> = ids.iter().map(|id| s.keys().job("q", id)).collect();
    let mut envs = envs;
    envs.iter_mut().for_each(|e| e.resolve_max_attempts(4));
    let rows: Vec<(&str, &crate::envelope::Envelope)> =
        keys.iter().map(String::as_str).zip(&envs).collect();
    assert!(s.mark_started(&rows, 1_000).await.is_empty());
    let h = s.job_status("q", &ids[1]).await.expect("status");
    assert_eq!(
        (h["state"].as_str(), h["max_attempts"].as_str()),
        ("running", "4")
    );

    let mut by_stream: HashMap<Arc<str>, StreamAcks> = HashMap::new();
    for ((stream, id, _), key) in got.iter().zip(&keys) {
        let acks = by_stream.entry(Arc::from(stream.as_str())).or_default();
        acks.ids.push(id.clone());
        acks.statuses.push((key.clone(), Some("{\"ok\":1}".into())));
    }
    assert_eq!(s.ack_batch(&by_stream, 60_000).await.expect("ack"), 3);
    assert_eq!(
        s.ack_batch(&by_stream, 60_000).await.expect("again"),
        0,
        "safe to repeat"
    );
    let h = s
        .find_job_status(&["other".into(), "q".into()], &ids[2])
        .await
        .expect("find");
    assert_eq!(
        (h["state"].as_str(), h["result"].as_str()),
        ("succeeded", "{\"ok\":1}")
    );
    let len: u64 = raw
        .xlen(s.keys().stream("q", crate::Priority::Normal))
        .await
        .expect("xlen");
    assert_eq!(len, 0, "acknowledged entries are deleted");
    let c = s.queue_counts("q").await.expect("counts");
    assert_eq!((c.ready, c.pending), ([0; 3], [0; 3]));
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
    let first_id = first.envelope.id.clone();
    let ids = s
        .enqueue_batch(vec![], vec![first, dup, delayed], 60_000)
        .await
        .expect("enqueue");
    assert_eq!(ids[1], first_id, "a duplicate gets the first job's id");
    let c = s.queue_counts("q").await.expect("counts");
    assert_eq!((c.ready[1], c.scheduled), (1, 1));

    let p = s.promote_due("q", 10).await.expect("promote");
    assert_eq!((p.moved, p.next_due_ms), (1, None));
    assert!(p.now_ms > 1_600_000_000_000, "Redis' clock in ms");
    assert_eq!(s.queue_counts("q").await.expect("counts").ready[1], 2);
    assert_eq!(
        s.job_status("q", &ids[2]).await.expect("status")["state"],
        "queued"
    );
}

#[tokio::test]
async fn retry_and_dead_letter_are_fenced_by_the_owner() {
    let (s, _, _redis) = store("t-fenced").await;
    let ids = enqueue(&s, "q", 2).await;
    let got = fetch(&s, "q", "owner").await;
    let (stream, entry, _) = &got[0];
    let retry = |consumer| Retry {
        queue: "q",
        priority: crate::Priority::Normal,
        stream,
        entry_id: entry,
        consumer,
        job_id: &ids[0],
        delay_ms: 60_000,
        retention_ms: 60_000,
        error: "boom",
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
    let h = s.job_status("q", &ids[0]).await.expect("status");
    assert_eq!(
        (h["state"].as_str(), h["error"].as_str()),
        ("retrying", "boom")
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
        s.job_status("q", &ids[1]).await.expect("status")["state"],
        "dead"
    );
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
