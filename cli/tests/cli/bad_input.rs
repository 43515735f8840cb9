use std::time::{Duration, Instant};

use crate::support::Env;

#[tokio::test]
async fn bad_input_fails_with_one_line_and_changes_nothing() {
    let env = Env::start().await;
    env.ok(&["enqueue", "x.y", "-q", "known"]).await;
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let down = format!("redis://127.0.0.1:{dead_port}");

    // Usage errors: exit 2.
    env.fails(&["--redis-url", "nope://", "stats"], 2, "invalid redis url")
        .await;
    env.fails(&["enqueue", "x.y", "--payload", "{"], 2, "--payload")
        .await;
    env.fails(&["enqueue", "x.y", "--priority", "urgent"], 2, "--priority")
        .await;
    env.fails(&["enqueue", "x.y", "--delay", "soon"], 2, "--delay")
        .await;
    env.fails(
        &["enqueue", "x.y", "--max-attempts", "0"],
        2,
        "--max-attempts",
    )
    .await;
    env.fails(&["enqueue", "x.y", "--unique-ttl", "1h"], 2, "--unique")
        .await;
    env.fails(
        &["enqueue", "x.y", "--unique", "k", "-n", "2"],
        2,
        "--count",
    )
    .await;
    env.fails(&["enqueue", "bad type"], 2, "invalid job type")
        .await;
    env.fails(&["enqueue", "x.y", "-q", "bad/queue"], 2, "invalid queue")
        .await;
    env.fails(
        &["dlq", "list", "known", "--since", "yesterday"],
        2,
        "--since",
    )
    .await;
    env.fails(
        &["dlq", "list", "known", "--before", "garbage"],
        2,
        "cursor",
    )
    .await;
    env.fails(
        &["dlq", "purge", "known", "--older-than", "forever"],
        2,
        "--older-than",
    )
    .await;
    env.fails(&["dlq", "list", "known", "--reason", "sad"], 2, "--reason")
        .await;
    env.fails(&["frobnicate"], 2, "frobnicate").await;

    // Operational errors: exit 1.
    let started = Instant::now();
    env.fails(
        &["--redis-url", &down, "stats"],
        1,
        "cannot connect to redis",
    )
    .await;
    env.fails(
        &["--redis-url", &down, "enqueue", "x.y"],
        1,
        "cannot connect to redis",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "connecting did not fail fast"
    );
    env.fails(&["pause", "nowhere"], 1, "unknown queue").await;
    env.fails(&["dlq", "list", "nowhere"], 1, "unknown queue")
        .await;
    env.fails(
        &["dlq", "replay", "nowhere", "--dry-run"],
        1,
        "unknown queue",
    )
    .await;
    env.fails(&["job", "no-such-job"], 1, "no job").await;
    env.fails(&["dlq", "show", "known", "1-1"], 1, "no dead letter")
        .await;
    env.fails(&["dlq", "purge", "known", "1-1"], 1, "no dead letter")
        .await;

    // --json does not turn errors into JSON or move them to stdout.
    env.fails(&["--json", "pause", "nowhere"], 1, "unknown queue")
        .await;
}
