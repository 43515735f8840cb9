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

/// A payload too large for a command line comes from a file or standard input; a missing
/// file, a clash with `--payload`, or a delay that would wrap round are usage errors.
#[tokio::test]
async fn payloads_come_from_a_file_or_stdin() {
    use tokio::io::AsyncWriteExt;

    let env = Env::start().await;
    let dir = std::env::temp_dir().join(format!("stevedore-cli-{}", crate::support::nanos()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("payload.json");
    let big = "x".repeat(600_000);
    std::fs::write(&file, serde_json::json!({ "text": big }).to_string()).expect("write");
    let path = file.to_str().expect("utf-8 path");

    let id = env
        .ok(&["enqueue", "file.job", "-q", "files", "--payload-file", path])
        .await;
    assert!(id.trim().starts_with("files:n-"), "{id}");

    let mut child = env
        .command(&["enqueue", "file.job", "-q", "files", "--payload-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(br#"{"from": "stdin"}"#)
        .await
        .expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().await.expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Both payloads reached the stream whole, as MessagePack.
    let raw = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&env.url).expect("url"),
    )
    .build()
    .expect("client");
    fred::prelude::ClientLike::init(&raw)
        .await
        .expect("connects");
    let entries: Vec<(
        String,
        std::collections::HashMap<String, fred::types::Value>,
    )> = fred::prelude::StreamsInterface::xrange(
        &raw,
        format!("{}:{{files}}:normal", env.prefix),
        "-",
        "+",
        None,
    )
    .await
    .expect("xrange");
    let payloads: Vec<serde_json::Value> = entries
        .iter()
        .map(|(_, f)| {
            let bytes = f
                .get("payload")
                .and_then(|v| v.as_bytes())
                .expect("payload");
            rmp_serde::from_slice(bytes).expect("msgpack")
        })
        .collect();
    assert_eq!(payloads.len(), 2);
    assert_eq!(payloads[0]["text"].as_str().map(str::len), Some(600_000));
    assert_eq!(payloads[1], serde_json::json!({"from": "stdin"}));

    let missing = dir.join("nope.json");
    let missing = missing.to_str().expect("utf-8 path");
    env.fails(
        &["enqueue", "file.job", "--payload-file", missing],
        2,
        "--payload-file",
    )
    .await;
    env.fails(
        &[
            "enqueue",
            "file.job",
            "--payload",
            "{}",
            "--payload-file",
            path,
        ],
        2,
        "--payload-file",
    )
    .await;
    env.fails(
        &["enqueue", "file.job", "--delay", "1000000000y"],
        2,
        "100 years",
    )
    .await;
    env.fails(
        &[
            "enqueue",
            "file.job",
            "--unique",
            "k",
            "--unique-ttl",
            "1000000000y",
        ],
        2,
        "100 years",
    )
    .await;
    env.fails(&["enqueue", "file.job", "-q", ".."], 2, "invalid queue")
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}
