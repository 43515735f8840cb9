//! The storage layer on a real Redis Cluster (3 primaries, 3 replicas: the test kit's
//! `RedisCluster`, `redis-server` processes): commands reach the primary of their slot,
//! batches across slots are split by node, and a dead primary stops only its own slots'
//! commands.
//!
//! The cluster runs with `cluster-require-full-coverage no`: with the default (`yes`)
//! every node refuses every command (CLUSTERDOWN) from the moment the dead primary is
//! flagged as failed until its replica takes over, whatever the client does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stevedore_testcontainers::RedisCluster;

use super::*;
use crate::redis::cluster::slot_of;

/// Whether a cluster can be made here (`redis-server` on `PATH`, or another binary named by
/// `STEVEDORE_REDIS_SERVER`); a missing binary fails the test when
/// `STEVEDORE_REQUIRE_CLUSTER` is set, else skips it with a line saying so.
fn cluster_wanted() -> bool {
    let named = std::env::var_os("STEVEDORE_REDIS_SERVER").is_some_and(|v| !v.is_empty());
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("redis-server").is_file())
    });
    if named || on_path {
        return true;
    }
    let required =
        std::env::var_os("STEVEDORE_REQUIRE_CLUSTER").is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "STEVEDORE_REQUIRE_CLUSTER is set but no redis-server was found"
    );
    eprintln!("no redis-server: cluster test skipped");
    false
}

/// Three primaries with a replica each. With the default `cluster-require-full-coverage
/// yes`, every node would refuse every command from when a dead primary is flagged failed
/// until its replica takes over, whatever the client does.
async fn start_cluster() -> RedisCluster {
    RedisCluster::builder()
        .primaries(3)
        .replicas(1)
        .node_timeout(Duration::from_secs(1))
        .arg("--cluster-require-full-coverage")
        .arg("no")
        .start()
        .await
        .expect("a cluster starts")
}

/// The primary serving `key`.
async fn primary_of(c: &RedisCluster, key: &str) -> u16 {
    c.primary_of_slot(slot_of(key.as_bytes()))
        .await
        .expect("the primary of a slot")
}

/// `XLEN key` asked of the node on `port` itself.
async fn xlen_on(port: u16, key: &str) -> u64 {
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}")).expect("url");
    let node = Builder::from_config(config).build().expect("client");
    node.init().await.expect("connect");
    let n = node.xlen(key).await.expect("XLEN");
    let _ = node.quit().await;
    n
}

/// Two queue names whose slots are served by different primaries.
async fn queues_on_two_primaries(c: &RedisCluster) -> (String, String) {
    let a = "q0".to_string();
    let pa = primary_of(c, &format!("{{{a}}}")).await;
    for i in 1..50 {
        let b = format!("q{i}");
        if primary_of(c, &format!("{{{b}}}")).await != pa {
            return (a, b);
        }
    }
    panic!("no queue on another primary");
}

async fn cluster_store(c: &RedisCluster, prefix: &str) -> Store {
    let connector = Connector::new(&c.url(), &TlsFiles::default())
        .expect("url")
        .with_command_timeout(Duration::from_secs(2));
    Store::connect(connector, 1, prefix).await.expect("connect")
}

#[tokio::test]
async fn commands_reach_the_primary_of_their_slot_and_batches_split_by_node() {
    if !cluster_wanted() {
        return;
    }
    let c = start_cluster().await;
    let (a, b) = queues_on_two_primaries(&c).await;
    let s = cluster_store(&c, "tc").await;

    // Both queues' jobs land on their own primaries and read back.
    let ids_a = enqueue(&s, &a, 3).await;
    let ids_b = enqueue(&s, &b, 2).await;
    assert_eq!((ids_a.len(), ids_b.len()), (3, 2));
    let stream_a = s.keys().stream(&a, crate::Priority::Normal);
    let stream_b = s.keys().stream(&b, crate::Priority::Normal);
    let pa = primary_of(&c, &stream_a).await;
    let pb = primary_of(&c, &stream_b).await;
    assert_ne!(pa, pb);
    assert_eq!(xlen_on(pa, &stream_a).await, 3);
    assert_eq!(xlen_on(pb, &stream_b).await, 2);
    assert_eq!(fetch(&s, &a, "w1").await.len(), 3);
    assert_eq!(fetch(&s, &b, "w1").await.len(), 2);
    let mut known = s.known_queues().await.expect("queues");
    known.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(known, both);

    // A batch across slots: totals of both queues in one call.
    let counts: HashMap<String, [u64; 2]> =
        HashMap::from([(a.clone(), [2, 1]), (b.clone(), [5, 0])]);
    s.add_totals(&["succeeded", "failed"], &counts)
        .await
        .expect("totals");
    let ta = s.totals(&a).await.expect("totals a");
    let tb = s.totals(&b).await.expect("totals b");
    assert_eq!(
        (ta.get("succeeded"), ta.get("failed")),
        (Some(&2), Some(&1))
    );
    assert_eq!((tb.get("succeeded"), tb.get("failed")), (Some(&5), None));

    // Worker keys without a hash tag, on whatever node serves them; details of two workers
    // read back in one split batch; withdrawing touches the queues' nodes too.
    for w in ["worker-one", "worker-two"] {
        let now = s.heartbeat(w, Duration::from_secs(60)).await.expect("beat");
        let queues = [a.clone(), b.clone()];
        let d = WorkerDetails {
            types: "",
            queues: &queues,
            concurrency: 4,
            in_flight: 1,
            started_at_ms: 1,
            pid: 7,
        };
        s.publish_worker(w, &d, now, Duration::from_secs(60))
            .await
            .expect("details");
    }
    let mut live = s.live_workers(15_000).await.expect("live");
    live.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].1.get("concurrency").map(String::as_str), Some("4"));
    assert_eq!(live[1].1.get("pid").map(String::as_str), Some("7"));
    s.withdraw(
        "worker-one",
        &[a.clone(), b.clone()],
        Duration::from_secs(60),
    )
    .await
    .expect("withdraw");
    assert_eq!(s.handed_off(&a).await.expect("a"), vec!["worker-one"]);
    assert_eq!(s.handed_off(&b).await.expect("b"), vec!["worker-one"]);
    s.ping(Duration::from_secs(2))
        .await
        .expect("ping every primary");
    s.probe_write(Duration::from_secs(2)).await.expect("probe");
}

#[tokio::test]
async fn a_dead_primary_stops_only_its_own_slots_and_its_replica_takes_over() {
    if !cluster_wanted() {
        return;
    }
    let mut c = start_cluster().await;
    let (a, b) = queues_on_two_primaries(&c).await;
    let s = cluster_store(&c, "tf").await;
    enqueue(&s, &a, 1).await;
    enqueue(&s, &b, 1).await;
    // A reader of A, connected before the failover: it must follow A's slot afterwards.
    let reader = s.reader("w1").await.expect("reader");
    let streams_a = s.keys().streams(&a);
    reader.ensure_groups(&streams_a).await.expect("groups");
    c.wait_ok(Duration::from_secs(10))
        .await
        .expect("cluster ok");

    let pa = primary_of(&c, &format!("{{{a}}}")).await;
    c.kill(pa).expect("kill the primary");
    let killed = Instant::now();

    // During the failover window, B's operations answer within a second each.
    while killed.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        let write = tokio::time::timeout(Duration::from_secs(1), async {
            s.enqueue_batch(vec![], vec![write(job(&b))], 60_000).await
        })
        .await;
        assert!(
            matches!(write, Ok(Ok(_))),
            "B's enqueue at {:?} after the kill: {write:?}",
            killed.elapsed()
        );
        let count = tokio::time::timeout(Duration::from_secs(1), s.queue_counts(&b)).await;
        assert!(matches!(count, Ok(Ok(_))), "B's counts: {count:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A fails meanwhile (fast: no wait for a node that is gone), and works again once the
    // replica took over.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = Instant::now();
        let r = s.enqueue_batch(vec![], vec![write(job(&a))], 60_000).await;
        if r.is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "a failing enqueue on A took {:?}",
            t.elapsed()
        );
        assert!(Instant::now() < deadline, "A never came back: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(primary_of(&c, &format!("{{{a}}}")).await, pa);

    // The reader made before the failover reads A's new primary.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        // The group may be gone with the old primary's unreplicated writes.
        let _ = reader.ensure_groups(&streams_a).await;
        match reader
            .read_blocking(10, Duration::from_millis(200), streams_a.to_vec())
            .await
        {
            Ok(r) if !r.is_empty() => break r,
            r => {
                assert!(Instant::now() < deadline, "reader never recovered: {r:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(got.iter().map(|(_, e)| e.len()).sum::<usize>() >= 1);
    reader.close().await;
}
