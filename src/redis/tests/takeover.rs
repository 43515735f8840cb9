//! Leases, heartbeats, hand-off, the janitor's takeover and dead letters.

use std::time::Duration;

use fred::prelude::*;

use super::*;

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
    assert_eq!(
        s.dead_delete_older("q", Duration::from_secs(3600))
            .await
            .expect("older"),
        0
    );
    assert_eq!(
        s.dead_delete_older("q", Duration::ZERO)
            .await
            .expect("older"),
        1
    );
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
            .lost
            .is_empty()
    );
    assert_eq!(
        s.renew_leases(stream, "w2", &ids)
            .await
            .expect("renew")
            .lost,
        ids,
        "owned by w1"
    );

    let now = s
        .heartbeat("w1", Duration::from_secs(300))
        .await
        .expect("beat");
    let details = WorkerDetails {
        types: "t.job",
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
        retention_ms: 60_000,
    };
    // One page of one entry: claimed (delivered once, below the limit of 3).
    let page = s.reclaim_page(&scan(3)).await.expect("page");
    assert_eq!(page.claimed.len(), 1);
    assert!(
        page.next.is_some(),
        "a full page says where the next starts"
    );
    let claimed_id = page.claimed[0].0.clone();
    assert!(
        envelope_of(
            &page.claimed[0].1,
            "q",
            crate::Priority::Normal,
            &page.claimed[0].0,
            1 << 20
        )
        .is_ok()
    );
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
