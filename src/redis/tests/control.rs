//! Queue registry, pause, totals, probes, periodic claims, and failures: replies that do
//! not read, keys of the wrong type, an unreachable server.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::*;

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

    s.ping(Duration::from_secs(2)).await.expect("ping");
    s.probe_write(Duration::from_secs(2)).await.expect("write");
    // Writes paused: PING still answers, the probe write does not, within its deadline.
    let pause = |mode: &'static str| {
        let raw = raw.clone();
        async move {
            let cmd = CustomCommand::new_static("CLIENT", ClusterHash::Random, false);
            let _: () = raw
                .custom(cmd, vec!["PAUSE", "1500", mode])
                .await
                .expect("client pause");
        }
    };
    pause("WRITE").await;
    s.ping(Duration::from_millis(300))
        .await
        .expect("ping while writes pause");
    match s.probe_write(Duration::from_millis(300)).await {
        Err(crate::Error::Timeout(m)) => assert!(m.contains("accept a write"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    pause("ALL").await;
    match s.ping(Duration::from_millis(300)).await {
        Err(crate::Error::Timeout(m)) => assert!(m.contains("answer PING"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let _: () = raw
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["UNPAUSE"],
        )
        .await
        .expect("unpause");
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
    let streams = s.keys().streams("q");
    let r = reader
        .read_ready(&streams, [1, 0, 0], &Default::default())
        .await
        .expect("read");
    assert!(r[0].as_ref().is_err_and(is_nogroup), "{r:?}");
    let r = reader
        .read_shares(&[(streams[0].clone(), 1)])
        .await
        .expect("pipeline");
    assert!(r[0].as_ref().is_err_and(is_nogroup), "{r:?}");
    reader.close().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_connection_error() {
    let port = stevedore_testcontainers::free_port().expect("port");
    let connector =
        Connector::new(&format!("redis://127.0.0.1:{port}"), &TlsFiles::default()).expect("url");
    match Store::connect(connector, 1, "t-down").await {
        Err(e) => assert!(e.is_connection(), "{e:?}"),
        Ok(_) => panic!("nothing listens on port {port}"),
    }
}

#[tokio::test]
async fn rate_limit_buckets_grant_reserve_and_pause() {
    use crate::redis::{Bucket, Class, Taken};
    let (s, raw, _redis) = store("t-limits").await;
    let bucket = |name: &str, interval_ms: f64, burst: u32| Bucket {
        key: s.keys().bucket("q", name, None),
        interval_ms,
        tolerance_ms: interval_ms * f64::from(burst - 1),
    };
    let class = |buckets: Vec<usize>, jobs: u32| Class {
        buckets,
        sets: Vec::new(),
        jobs,
        members: Vec::new(),
    };
    let take = |buckets: Vec<Bucket>, classes: Vec<Class>| {
        let s = &s;
        async move { s.take_tokens(&buckets, &[], &classes, 30_000, 250).await }
    };
    let after = |w: &Taken| match w {
        Taken::After(ms) => *ms,
        Taken::Full => u64::MAX,
    };
    // 10/s burst 2 for the queue, 2/s burst 1 for a key: a job of the key needs both.
    let queue = bucket("queue:q", 100.0, 2);
    let key = bucket("key:t", 500.0, 1);
    let waits = take(
        vec![queue.clone(), key.clone()],
        vec![class(vec![0], 3), class(vec![0, 1], 2)],
    )
    .await
    .expect("take");
    let waits: Vec<Vec<u64>> = waits
        .iter()
        .map(|c| c.iter().map(after).collect())
        .collect();
    // The queue's burst of 2 goes to the first two jobs, the third waits one interval;
    // the key's jobs come after them on the queue's bucket, one interval apart, and the
    // second also waits for the key's next token.
    assert_eq!(waits[0][..2], [0, 0]);
    assert!((99..=101).contains(&waits[0][2]), "{waits:?}");
    assert!((199..=201).contains(&waits[1][0]), "{waits:?}");
    assert!((699..=701).contains(&waits[1][1]), "{waits:?}");
    // The buckets expire once idle: the key's next free time (1.2 s) and one interval.
    let ttl: i64 = raw.pttl(&key.key).await.expect("pttl");
    assert!((1_500..=1_700).contains(&ttl), "{ttl}");

    // A pause: nothing of the key starts for 5 s, whatever its burst.
    s.pause_buckets(std::slice::from_ref(&key), 5_000)
        .await
        .expect("pause");
    let waits = take(vec![key.clone()], vec![class(vec![0], 1)])
        .await
        .expect("take");
    assert!((4_900..=5_000).contains(&after(&waits[0][0])), "{waits:?}");

    // A bucket that is not a number reads as idle rather than failing the batch; one of
    // another type is a clear error.
    let _: () = raw
        .set(&queue.key, "x", None, None, false)
        .await
        .expect("set");
    let waits = take(vec![queue.clone()], vec![class(vec![0], 1)])
        .await
        .expect("take");
    assert_eq!(waits, vec![vec![Taken::After(0)]]);
    let _: () = raw.del(&queue.key).await.expect("del");
    let _: () = raw.lpush(&queue.key, "x").await.expect("lpush");
    let e = take(vec![queue.clone()], vec![class(vec![0], 1)])
        .await
        .expect_err("wrong type");
    assert!(matches!(e, crate::Error::Redis(_)), "{e}");
}

#[tokio::test]
async fn running_sets_count_renew_expire_and_release() {
    use crate::redis::{Bucket, Class, SlotSet, Taken};
    let (s, raw, _redis) = store("t-running").await;
    let set = SlotSet {
        key: s.keys().running("q", "type:t", None),
        capacity: 2,
    };
    let ask = |members: &[&str]| Class {
        buckets: Vec::new(),
        sets: vec![0],
        jobs: members.len() as u32,
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    // Three jobs, two places: the third finds the set full and takes nothing.
    let got = s
        .take_tokens(
            &[],
            std::slice::from_ref(&set),
            &[ask(&["j1 w", "j2 w", "j3 w"])],
            300,
            250,
        )
        .await
        .expect("take");
    assert_eq!(
        got,
        vec![vec![Taken::After(0), Taken::After(0), Taken::Full]]
    );
    let members: Vec<String> = raw
        .zrange(&set.key, 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    assert_eq!(members, vec!["j1 w".to_string(), "j2 w".to_string()]);
    // Released: a place is free again.
    s.release_slots(&set.key, &["j1 w".to_string()])
        .await
        .expect("release");
    // Renewed: j2 outlives its first lease; never renewed, j4's runs out (its worker died).
    let got = s
        .take_tokens(&[], std::slice::from_ref(&set), &[ask(&["j4 w"])], 300, 250)
        .await
        .expect("take");
    assert_eq!(got, vec![vec![Taken::After(0)]]);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.renew_slots(&set.key, &["j2 w".to_string(), "gone w".to_string()], 300)
        .await
        .expect("renew");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let got = s
        .take_tokens(
            &[],
            std::slice::from_ref(&set),
            &[ask(&["j5 w", "j6 w"])],
            300,
            250,
        )
        .await
        .expect("take");
    assert_eq!(got, vec![vec![Taken::After(0), Taken::Full]]);
    let members: Vec<String> = raw
        .zrange(&set.key, 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    assert_eq!(
        members,
        vec!["j2 w".to_string(), "j5 w".to_string()],
        "a renewal adds no member"
    );
    // A job that must wait for a rate token longer than it may hold its slot takes no
    // place; one that waits less does.
    let bucket = Bucket {
        key: s.keys().bucket("q", "type:u", None),
        interval_ms: 100.0,
        tolerance_ms: 0.0,
    };
    let other = SlotSet {
        key: s.keys().running("q", "type:u", None),
        capacity: 5,
    };
    let got = s
        .take_tokens(
            std::slice::from_ref(&bucket),
            std::slice::from_ref(&other),
            &[Class {
                buckets: vec![0],
                sets: vec![0],
                jobs: 4,
                members: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            }],
            30_000,
            150,
        )
        .await
        .expect("take");
    assert_eq!(got[0][0], Taken::After(0));
    assert!(matches!(got[0][1], Taken::After(99..=101)), "{got:?}");
    assert!(matches!(got[0][3], Taken::After(299..=301)), "{got:?}");
    let n: u64 = raw.zcard(&other.key).await.expect("zcard");
    assert_eq!(n, 2, "places for the jobs that start within 150 ms only");
}
