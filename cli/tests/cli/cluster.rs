use serde_json::Value;
use stevedore_testcontainers::RedisCluster;
use tokio::process::Command;

use crate::support::queue_info;

const BIN: &str = env!("CARGO_BIN_EXE_stevedore");

/// Runs the binary with `args` against `url`; returns its stdout, failing on a non-zero exit.
async fn ok(url: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["--redis-url", url, "--prefix", "cli-cluster"])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("STEVEDORE_TOKEN")
        .output()
        .await
        .expect("the binary runs");
    assert!(out.status.success(), "stevedore {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_cli_works_on_a_cluster_and_its_help_shows_the_url() {
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .await
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("redis-cluster://host:port?node=host2:port2"),
        "{help}"
    );

    let cluster = RedisCluster::start()
        .await
        .expect("a cluster of three primaries");
    let url = cluster.url();
    // Queues whose slots are on different primaries.
    let mut on = std::collections::BTreeMap::new();
    for i in 0..64 {
        let q = format!("q{i}");
        let port = cluster
            .primary_of_slot(cluster.slot_of(format!("{{{q}}}")))
            .await
            .expect("primary of a slot");
        on.entry(port).or_insert(q);
    }
    assert_eq!(on.len(), 3, "a queue on each primary: {on:?}");
    for (n, q) in on.values().enumerate() {
        let count = (n + 1).to_string();
        ok(&url, &["enqueue", "cli.job", "-q", q, "-n", &count]).await;
    }
    let queues: Value = serde_json::from_str(&ok(&url, &["--json", "queues"]).await).expect("JSON");
    for (n, q) in on.values().enumerate() {
        assert_eq!(queue_info(&queues, q)["stats"]["ready"]["normal"], n + 1);
    }
    let stats: Value = serde_json::from_str(&ok(&url, &["--json", "stats"]).await).expect("JSON");
    assert_eq!(stats["ready"], 6, "{stats}");
    let first = on.values().next().expect("a queue");
    ok(&url, &["pause", first]).await;
    let queues: Value = serde_json::from_str(&ok(&url, &["--json", "queues"]).await).expect("JSON");
    assert_eq!(queue_info(&queues, first)["paused"], true);
}
