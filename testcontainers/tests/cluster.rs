//! `RedisCluster` against real servers: forming, slots, a cluster client, failover.
//!
//! Runs on `redis-server`, or on the binary `STEVEDORE_REDIS_SERVER` names (e.g. a
//! `valkey-server`).

use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike, Config, KeysInterface, ServerConfig, Value};
use stevedore_testcontainers::{KitError, RedisCluster};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs one command on the node on `port` alone (a centralized client: no redirection).
async fn on_node(port: u16, args: &[&str]) -> Result<Value, Box<dyn std::error::Error>> {
    let (name, rest) = args.split_first().ok_or("no command")?;
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))?;
    let client = Builder::from_config(config).build()?;
    client.init().await?;
    let reply = client
        .custom::<Value, _>(fred::cmd!(name.to_string()), rest.to_vec())
        .await;
    client.quit().await?;
    Ok(reply?)
}

/// The text of a command's reply (`INFO`, `CLUSTER INFO`).
async fn text_of(port: u16, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    Ok(on_node(port, args).await?.convert::<String>()?)
}

/// The value of `field:value` in an `INFO`-style text.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| *n == name))
        .map(|(_, v)| v.trim())
}

async fn assert_cluster_ok(port: u16, nodes: usize) -> TestResult {
    let info = text_of(port, &["CLUSTER", "INFO"]).await?;
    assert_eq!(field(&info, "cluster_state"), Some("ok"), "{port}: {info}");
    assert_eq!(
        field(&info, "cluster_slots_assigned"),
        Some("16384"),
        "{info}"
    );
    assert_eq!(field(&info, "cluster_slots_ok"), Some("16384"), "{info}");
    assert_eq!(
        field(&info, "cluster_known_nodes"),
        Some(nodes.to_string().as_str()),
        "{info}"
    );
    Ok(())
}

#[tokio::test]
async fn three_primaries_serve_every_slot() -> TestResult {
    let t = Instant::now();
    let cluster = RedisCluster::start().await?;
    eprintln!(
        "cluster of 3 primaries started in {} ms",
        t.elapsed().as_millis()
    );

    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    let server = text_of(ports[0], &["INFO", "server"]).await?;
    eprintln!(
        "server: {} {}",
        field(&server, "server_name").unwrap_or("redis"),
        field(&server, "valkey_version")
            .or(field(&server, "redis_version"))
            .unwrap_or("?")
    );
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    assert_eq!(cluster.primaries().await?, sorted);
    assert!(cluster.replicas().await?.is_empty());
    assert_eq!(cluster.node_timeout(), Duration::from_secs(1));
    for &port in &ports {
        assert_cluster_ok(port, 3).await?;
        assert_eq!(
            cluster.node(port).map(|n| n.url()),
            Some(format!("redis://127.0.0.1:{port}"))
        );
    }

    // The URL is the cluster form fred reads, naming every node.
    let url = cluster.url();
    assert!(url.starts_with("redis-cluster://127.0.0.1:"), "{url}");
    match Config::from_url(&url)?.server {
        ServerConfig::Clustered { hosts, .. } => {
            let mut seen: Vec<u16> = hosts.iter().map(|h| h.port).collect();
            seen.sort_unstable();
            assert_eq!(seen, sorted);
        }
        other => panic!("not a cluster config: {other:?}"),
    }

    // The local slot computation agrees with the server's.
    let keys = [
        "foo",
        "bar",
        "123456789",
        "{user1000}.following",
        "{user1000}.followers",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "stevedore:{emails}:normal",
        "",
        "ключ",
    ];
    for key in keys {
        let live = on_node(ports[0], &["CLUSTER", "KEYSLOT", key])
            .await?
            .convert::<i64>()?;
        assert_eq!(i64::from(cluster.slot_of(key)), live, "slot of {key:?}");
    }
    assert_eq!(
        cluster.slot_of("{user1000}.following"),
        cluster.slot_of("{user1000}.followers")
    );

    // The primary the kit names for a slot takes a write for it; another redirects.
    let slot = cluster.slot_of("foo");
    let owner = cluster.primary_of_slot(slot).await?;
    assert!(ports.contains(&owner));
    assert_eq!(
        on_node(owner, &["SET", "foo", "bar"])
            .await?
            .convert::<String>()?,
        "OK"
    );
    let other = ports
        .iter()
        .copied()
        .find(|&p| p != owner)
        .ok_or("a port")?;
    let err = on_node(other, &["SET", "foo", "bar"])
        .await
        .expect_err("a MOVED redirection");
    assert!(err.to_string().contains("MOVED"), "{err}");

    // Misuse is reported clearly.
    assert!(matches!(
        cluster.primary_of_slot(16384).await,
        Err(KitError::InvalidCluster(_))
    ));
    assert!(matches!(
        cluster.wait_for_failover(1, Duration::from_secs(1)).await,
        Err(KitError::UnknownClusterNode(1))
    ));
    Ok(())
}

#[tokio::test]
async fn replicas_attach_and_a_cluster_client_works() -> TestResult {
    let t = Instant::now();
    let cluster = RedisCluster::builder()
        .primaries(3)
        .replicas(1)
        .start()
        .await?;
    eprintln!(
        "cluster of 3 primaries and 3 replicas started in {} ms",
        t.elapsed().as_millis()
    );
    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    let primaries = cluster.primaries().await?;
    let replicas = cluster.replicas().await?;
    assert_eq!(primaries.len(), 3);
    assert_eq!(replicas.len(), 3);
    for &port in &ports {
        assert_cluster_ok(port, 6).await?;
    }
    for &replica in &replicas {
        let info = text_of(replica, &["INFO", "replication"]).await?;
        assert_eq!(field(&info, "role"), Some("slave"), "{info}");
        assert_eq!(field(&info, "master_link_status"), Some("up"), "{info}");
        let primary: u16 = field(&info, "master_port").ok_or("master_port")?.parse()?;
        assert!(primaries.contains(&primary), "{info}");
    }

    // A real cluster client, from the URL, writes and reads keys on every primary.
    let client = Builder::from_config(Config::from_url(&cluster.url())?).build()?;
    client.init().await?;
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..30 {
        let key = format!("key-{i}");
        client
            .set::<(), _, _>(key.as_str(), i, None, None, false)
            .await?;
        assert_eq!(client.get::<i64, _>(key.as_str()).await?, i);
        owners.insert(cluster.primary_of_slot(cluster.slot_of(&key)).await?);
    }
    assert_eq!(owners.into_iter().collect::<Vec<_>>(), primaries);
    client.quit().await?;

    // The writes reach the replicas.
    let started = Instant::now();
    while !cluster.replicas_caught_up().await? {
        assert!(started.elapsed() < DEADLINE, "replicas never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Only a primary fails over.
    let err = cluster
        .wait_for_failover(replicas[0], Duration::from_secs(1))
        .await
        .expect_err("a replica serves no slots");
    assert!(matches!(err, KitError::InvalidCluster(_)), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_killed_primary_fails_over_to_its_replica_and_rejoins_as_one() -> TestResult {
    let mut cluster = RedisCluster::builder()
        .primaries(3)
        .replicas(1)
        .start()
        .await?;
    let replicas_before = cluster.replicas().await?;
    let key = "{failover}:k";
    let slot = cluster.slot_of(key);
    let old = cluster.primary_of_slot(slot).await?;
    assert_eq!(
        on_node(old, &["SET", key, "before the crash"])
            .await?
            .convert::<String>()?,
        "OK"
    );
    // The write is on the replica before the crash.
    assert_eq!(
        on_node(old, &["WAIT", "1", "1000"])
            .await?
            .convert::<i64>()?,
        1
    );

    cluster.kill(old)?;
    let killed = Instant::now();
    let new = cluster.wait_for_failover(old, DEADLINE).await?;
    let failover = killed.elapsed();
    eprintln!(
        "primary {old} killed; replica {new} took over in {} ms (node timeout {:?})",
        failover.as_millis(),
        cluster.node_timeout()
    );
    assert_ne!(new, old);
    assert!(replicas_before.contains(&new), "{new} was not a replica");
    assert_eq!(cluster.primary_of_slot(slot).await?, new);
    let primaries = cluster.primaries().await?;
    assert!(primaries.contains(&new) && !primaries.contains(&old));
    assert_eq!(
        on_node(new, &["GET", key]).await?.convert::<String>()?,
        "before the crash"
    );
    for port in cluster.ports().into_iter().filter(|&p| p != old) {
        let info = text_of(port, &["CLUSTER", "INFO"]).await?;
        assert_eq!(field(&info, "cluster_state"), Some("ok"), "{port}: {info}");
    }
    // Asking again after the failover gives the same answer.
    assert_eq!(
        cluster
            .wait_for_failover(old, Duration::from_secs(5))
            .await?,
        new
    );

    // Restarted, the old primary rejoins as a replica of the new one.
    let restarted = Instant::now();
    cluster.restart(old).await?;
    cluster.wait_ok(DEADLINE).await?;
    eprintln!(
        "old primary {old} rejoined as a replica in {} ms",
        restarted.elapsed().as_millis()
    );
    let info = text_of(old, &["INFO", "replication"]).await?;
    assert_eq!(field(&info, "role"), Some("slave"), "{info}");
    assert_eq!(field(&info, "master_port"), Some(new.to_string().as_str()));
    assert!(cluster.replicas().await?.contains(&old));
    // Its data came back from the new primary (a replica answers GET with MOVED, DBSIZE not).
    let started = Instant::now();
    while !cluster.replicas_caught_up().await? {
        assert!(started.elapsed() < DEADLINE, "replicas never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(on_node(old, &["DBSIZE"]).await?.convert::<i64>()?, 1);
    Ok(())
}

#[tokio::test]
async fn no_primary_is_a_clear_error() {
    let err = RedisCluster::builder()
        .primaries(0)
        .start()
        .await
        .expect_err("a cluster needs a primary");
    assert!(matches!(err, KitError::InvalidCluster(_)), "{err:?}");
    assert!(err.to_string().contains("at least one primary"), "{err}");
}
