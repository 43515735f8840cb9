//! The storage layer against a real Redis: every operation of [`Store`], one test per part
//! of a job's life, each on a prefix of its own. Replies that do not read as expected must
//! end as a clear error, never a panic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use stevedore_testcontainers::TestRedis;

use super::*;
use crate::job::{IntoJob, PreparedJob, RawJob};

/// A store on a Redis of its own (kept while the test holds it), and a plain client to
/// look at what the store wrote.
async fn store(prefix: &str) -> (Store, Client, TestRedis) {
    let redis = match TestRedis::start().await {
        Ok(r) => r,
        Err(e) => panic!("no Redis for the storage tests: {e}"),
    };
    let url = redis.url().to_string();
    let connector = Connector::from_url(&url).expect("url");
    let store = Store::connect(connector, 1, prefix).await.expect("connect");
    let raw = Builder::from_config(Config::from_url(&url).expect("url"))
        .build()
        .expect("client");
    raw.init().await.expect("init");
    (store, raw, redis)
}

fn job(queue: &str) -> PreparedJob {
    RawJob::new("t.job", queue, &("payload", 1))
        .expect("job")
        .prepare()
        .expect("prepared")
}

fn write(j: PreparedJob) -> JobWrite {
    JobWrite {
        queue: j.queue,
        priority: j.priority,
        when: None,
        unique: None,
        envelope: j.envelope,
    }
}

/// Enqueues `n` ready jobs on `queue` and returns their ids.
async fn enqueue(s: &Store, queue: &str, n: usize) -> Vec<String> {
    let writes = (0..n).map(|_| write(job(queue))).collect();
    s.enqueue_batch(vec![queue.into()], writes, 60_000)
        .await
        .expect("enqueue")
}

/// Reads everything waiting on `queue` as `consumer`: (stream, entry id, fields).
async fn fetch(s: &Store, queue: &str, consumer: &str) -> Vec<(String, String, Fields)> {
    let reader = s.reader(consumer).await.expect("reader");
    let streams = s.keys().streams(queue);
    reader.ensure_groups(&streams).await.expect("groups");
    let requests: Vec<(String, u64)> = streams.iter().map(|st| (st.clone(), 100)).collect();
    let mut out = Vec::new();
    for (stream, reply) in streams
        .iter()
        .zip(reader.read_ready(&requests).await.expect("read"))
    {
        for (id, fields) in reply.expect("stream read") {
            out.push((stream.clone(), id, fields.expect("fields")));
        }
    }
    reader.close().await;
    out
}

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
    let rows: Vec<(&str, u32, u32)> = keys.iter().map(|k| (k.as_str(), 1, 4)).collect();
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
async fn dead_letters_replay_and_purge() {
    let (s, raw, _redis) = store("t-dead").await;
    let dlq = s.keys().dlq("q");
    for i in 0..4 {
        let _: String = raw
            .xadd(
                &dlq,
                false,
                None,
                "*",
                vec![
                    ("id", format!("j{i}")),
                    ("type", "t.job".into()),
                    ("origin", "s:{q}:high 1-0".into()),
                ],
            )
            .await
            .expect("xadd");
    }
    let all = s.dead_range("q", "-", "+", 10, true).await.expect("range");
    assert_eq!(all.len(), 4);
    assert!(all[0].0 > all[3].0, "newest first");
    let ids: Vec<String> = all.iter().map(|(id, _)| id.clone()).collect();
    let replayed = s.dead_replay("q", &ids[..2], 60_000).await.expect("replay");
    assert_eq!(
        replayed,
        vec![Some("j3".to_string()), Some("j2".to_string())]
    );
    assert_eq!(
        s.dead_replay("q", &ids[..1], 60_000).await.expect("again"),
        vec![None]
    );
    assert_eq!(
        s.queue_counts("q").await.expect("counts").ready[0],
        2,
        "back on high"
    );
    assert_eq!(
        s.dead_delete("q", vec![ids[2].clone(), "1-1".into()])
            .await
            .expect("del"),
        1
    );
    assert_eq!(s.dead_delete_older("q", 3_600_000).await.expect("older"), 0);
    assert_eq!(s.dead_delete_older("q", 0).await.expect("older"), 1);
    assert_eq!(s.dead_delete_all("q").await.expect("all"), 0);
    assert_eq!(s.dead_count("q").await.expect("count"), 0);
}

#[tokio::test]
async fn leases_heartbeats_and_hand_off() {
    let (s, raw, _redis) = store("t-lease").await;
    enqueue(&s, "q", 1).await;
    let got = fetch(&s, "q", "w1").await;
    let (stream, entry, _) = &got[0];
    let ids = vec![entry.clone()];
    assert!(
        s.renew_leases(stream, "w1", &ids)
            .await
            .expect("renew")
            .is_empty()
    );
    assert_eq!(
        s.renew_leases(stream, "w2", &ids).await.expect("renew"),
        ids,
        "owned by w1"
    );

    let now = s
        .heartbeat("w1", Duration::from_secs(300))
        .await
        .expect("beat");
    let details = WorkerDetails {
        queues: &["q".to_string()],
        concurrency: 8,
        in_flight: 1,
        started_at_ms: 5,
        pid: 42,
    };
    s.publish_worker("w1", &details, now, Duration::from_secs(60))
        .await
        .expect("publish");
    assert_eq!(
        s.alive_workers(15_000).await.expect("alive"),
        vec!["w1".to_string()]
    );
    let live = s.live_workers(15_000).await.expect("live");
    assert_eq!(
        (live[0].1["queues"].as_str(), live[0].1["pid"].as_str()),
        ("q", "42")
    );

    let mut sub = s
        .subscribe_wake(&["q".to_string()])
        .await
        .expect("subscribe");
    let _: i64 = raw
        .publish(s.keys().wake("q"), "12345")
        .await
        .expect("publish");
    assert_eq!(
        sub.recv().await,
        Some(WakeMessage::Due {
            channel: s.keys().wake("q"),
            due_ms: 12345
        })
    );
    s.withdraw("w1", &["q".to_string()], Duration::from_secs(60))
        .await
        .expect("withdraw");
    assert_eq!(sub.recv().await, Some(WakeMessage::Handoff));
    sub.close().await;
    assert!(s.alive_workers(15_000).await.expect("alive").is_empty());
    assert_eq!(
        s.handed_off("q").await.expect("handoff"),
        vec!["w1".to_string()]
    );
    s.forget_handoff("q", "w1").await.expect("forget");
    assert!(s.handed_off("q").await.expect("handoff").is_empty());
}

#[tokio::test]
async fn the_janitor_takes_over_poisons_and_prunes() {
    let (s, _, _redis) = store("t-reclaim").await;
    enqueue(&s, "q", 2).await;
    let got = fetch(&s, "q", "dead-worker").await;
    let stream = got[0].0.clone();
    let none: Vec<&String> = Vec::new();
    let scan = |max_deliveries| ReclaimScan {
        queue: "q",
        stream: &stream,
        consumer: "janitor",
        idle: Duration::ZERO,
        max_deliveries,
        page: 1,
        start: "-",
        only: Some("dead-worker"),
        alive: &none,
    };
    // One page of one entry: claimed (delivered once, below the limit of 3).
    let page = s.reclaim_page(&scan(3)).await.expect("page");
    assert_eq!(page.claimed.len(), 1);
    assert!(
        page.next.is_some(),
        "a full page says where the next starts"
    );
    let claimed_id = page.claimed[0].0.clone();
    assert!(envelope_of(&page.claimed[0].1, 1 << 20).is_ok());
    // The next page: the other entry, poison at a limit of 1.
    let next = page.next.clone().unwrap_or_default();
    let page = s
        .reclaim_page(&ReclaimScan {
            start: &next,
            ..scan(1)
        })
        .await
        .expect("page");
    assert_eq!(page.poisoned.len(), 1);
    assert_eq!(page.poisoned[0].job_type, "t.job");
    assert_eq!(s.dead_count("q").await.expect("count"), 1);

    let back = s
        .take_back(&stream, "janitor", Duration::ZERO, vec![claimed_id.clone()])
        .await
        .expect("take back");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, claimed_id);
    // The dead worker owns nothing now and is idle: pruned unless alive.
    let kept = s
        .prune_consumers(&stream, Duration::ZERO, &["dead-worker".into()])
        .await
        .expect("prune");
    assert!(kept.is_empty());
    let removed = s
        .prune_consumers(&stream, Duration::ZERO, &[])
        .await
        .expect("prune");
    assert_eq!(
        removed,
        vec!["dead-worker".to_string()],
        "janitor owns an entry: kept"
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

#[tokio::test]
async fn control_totals_probes_and_periodic_claims() {
    let (s, raw, _redis) = store("t-control").await;
    s.register_queues(&["a".into(), "b".into()])
        .await
        .expect("register");
    assert!(s.is_known_queue("a").await.expect("known"));
    assert!(!s.is_known_queue("zz").await.expect("known"));
    assert!(s.pause("a").await.expect("pause"));
    assert!(!s.pause("a").await.expect("pause again"));
    assert!(s.is_paused("a").await.expect("paused"));
    assert_eq!(
        s.paused_queues().await.expect("paused"),
        vec!["a".to_string()]
    );
    assert!(s.resume("a").await.expect("resume"));
    assert!(!s.resume("a").await.expect("resume again"));

    let counts = HashMap::from([("a".to_string(), [2, 0, 1])]);
    s.add_totals(&["succeeded", "failed", "dead"], &counts)
        .await
        .expect("totals");
    s.add_totals(&["succeeded", "failed", "dead"], &counts)
        .await
        .expect("totals");
    let t = s.totals("a").await.expect("totals");
    assert_eq!((t["succeeded"], t["dead"], t.get("failed")), (4, 2, None));

    assert_eq!(
        s.ping(Duration::from_secs(2)).await.expect("ping"),
        Probe::Ok
    );
    assert_eq!(
        s.probe_write(Duration::from_secs(2)).await.expect("write"),
        Probe::Ok
    );
    let d = s.durability().await.expect("config");
    assert!(
        d.appendonly.is_some() && d.maxmemory_policy.is_some(),
        "{d:?}"
    );

    let read = s.cron_claim("a", "nightly", None, "w").await.expect("read");
    assert_eq!((read.claim, read.last), (CronClaim::Read, None));
    let tick = read.now_ms - 1_000;
    let claim = s
        .cron_claim("a", "nightly", Some(tick), "w")
        .await
        .expect("claim");
    assert_eq!((claim.claim, claim.last), (CronClaim::Claimed, Some(tick)));
    let again = s
        .cron_claim("a", "nightly", Some(tick), "v")
        .await
        .expect("claim");
    assert_eq!(again.claim, CronClaim::Taken);
    let future = s
        .cron_claim("a", "nightly", Some(tick + 3_600_000), "w")
        .await
        .expect("claim");
    assert_eq!(future.claim, CronClaim::NotDue);
    let _: () = raw.del(s.keys().cron("a")).await.expect("del");
}

#[tokio::test]
async fn replies_that_do_not_read_are_clear_errors() {
    let (s, raw, _redis) = store("t-bad").await;
    // A totals counter that is not a number: the reply does not decode.
    let _: () = raw
        .hset(s.keys().totals("q"), ("succeeded", "many"))
        .await
        .expect("hset");
    match s.totals("q").await {
        Err(crate::Error::Decode(m)) => assert!(m.contains("unexpected reply"), "{m}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // A key of the wrong type: Redis refuses, and says so.
    let _: () = raw
        .set(s.keys().dlq("q"), "not a stream", None, None, false)
        .await
        .expect("set");
    match s.dead_range("q", "-", "+", 10, false).await {
        Err(crate::Error::Redis(m)) => assert!(m.contains("WRONGTYPE"), "{m}"),
        other => panic!("expected WRONGTYPE, got {other:?}"),
    }
    let _: () = raw
        .set(s.keys().job("q", "j"), "x", None, None, false)
        .await
        .expect("set");
    assert!(matches!(
        s.job_status("q", "j").await,
        Err(crate::Error::Redis(_))
    ));
    // A consumer group that is gone reads as NOGROUP, which the fetch loop recreates.
    let reader = s.reader("c").await.expect("reader");
    let stream = s.keys().stream("q", crate::Priority::High);
    let r = reader.read_ready(&[(stream, 1)]).await.expect("pipeline");
    assert!(r[0].as_ref().is_err_and(is_nogroup), "{r:?}");
    reader.close().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_connection_error() {
    let port = stevedore_testcontainers::free_port().expect("port");
    let connector = Connector::from_url(&format!("redis://127.0.0.1:{port}")).expect("url");
    match Store::connect(connector, 1, "t-down").await {
        Err(e) => assert!(e.is_connection(), "{e:?}"),
        Ok(_) => panic!("nothing listens on port {port}"),
    }
}
