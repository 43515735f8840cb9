use std::time::Duration;

use serde_json::Value;
use stevedore::{JobContext, JobError, Worker, job_handler};

use crate::support::{Env, eventually, queue_info};

#[job_handler(name = "cli.refuse", queue = "cli-dead")]
async fn refuse(_payload: Value, _ctx: JobContext) -> Result<(), JobError> {
    Err(JobError::permanent("refused for good"))
}

#[tokio::test]
async fn dead_letters_are_listed_shown_replayed_and_purged_and_dry_runs_change_nothing() {
    let env = Env::start().await;
    for n in 0..3 {
        let payload = format!(r#"{{"n":{n}}}"#);
        env.ok(&[
            "enqueue",
            "cli.refuse",
            "-q",
            "cli-dead",
            "--payload",
            &payload,
        ])
        .await;
    }
    // No worker knows this type; with one attempt it is dead-lettered as unknown_type.
    for _ in 0..2 {
        env.ok(&[
            "enqueue",
            "cli.unknown",
            "-q",
            "cli-dead",
            "--max-attempts",
            "1",
        ])
        .await;
    }
    let worker = Worker::builder(env.client().await)
        .handler(refuse::handler())
        .build()
        .expect("worker");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    eventually(Duration::from_secs(20), "five dead letters", async || {
        env.dead("cli-dead").await == 5
    })
    .await;
    let _ = stop.send(());
    running.await.expect("worker task").expect("clean shutdown");

    // Listing, filters and paging.
    let all = env.json(&["dlq", "list", "cli-dead"]).await;
    assert_eq!(all["total"], 5);
    assert_eq!(all["jobs"].as_array().map(Vec::len), Some(5));
    assert_eq!(all["next"], Value::Null);
    let count = async |args: &[&str]| {
        let mut all = vec!["dlq", "list", "cli-dead"];
        all.extend_from_slice(args);
        env.json(&all).await["jobs"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(count(&["--reason", "failed"]).await, 3);
    assert_eq!(count(&["--reason", "unknown_type"]).await, 2);
    assert_eq!(count(&["--type", "cli.unknown"]).await, 2);
    assert_eq!(count(&["--since", "1h"]).await, 5);
    assert_eq!(count(&["--until", "1h"]).await, 0);
    assert_eq!(count(&["--since", "2000-01-01T00:00:00Z"]).await, 5);
    let page = env.json(&["dlq", "list", "cli-dead", "--limit", "2"]).await;
    let next = page["next"].as_str().expect("a cursor");
    assert_eq!(count(&["--before", next]).await, 3);
    let table = env.ok(&["dlq", "list", "cli-dead", "--limit", "2"]).await;
    assert!(table.starts_with("ENTRY"), "{table}");
    assert!(table.contains(&format!("--before {next}")), "{table}");

    let failed = env
        .json(&[
            "dlq", "list", "cli-dead", "--reason", "failed", "--limit", "1",
        ])
        .await;
    let entry = failed["jobs"][0]["entry_id"]
        .as_str()
        .expect("entry id")
        .to_string();
    let job_id = failed["jobs"][0]["job_id"]
        .as_str()
        .expect("job id")
        .to_string();
    let shown = env.json(&["dlq", "show", "cli-dead", &entry]).await;
    assert_eq!(shown["reason"], "failed");
    assert_eq!(shown["error"], "refused for good");
    assert_eq!(shown["payload"], failed["jobs"][0]["payload"]);
    assert!(
        shown["payload"]["n"].is_u64(),
        "the payload as JSON: {shown}"
    );
    let human = env.ok(&["dlq", "show", "cli-dead", &entry]).await;
    assert!(
        human.contains("refused for good") && human.contains("payload:"),
        "{human}"
    );

    // Dry runs count and change nothing.
    let before = env.snapshot().await;
    let dry = |v: Value| v["matching"].as_u64().expect("a count");
    assert_eq!(
        dry(env.json(&["dlq", "replay", "cli-dead", "--dry-run"]).await),
        5
    );
    assert_eq!(
        dry(env
            .json(&[
                "dlq",
                "replay",
                "cli-dead",
                "--reason",
                "failed",
                "--dry-run"
            ])
            .await),
        3
    );
    assert_eq!(
        dry(env
            .json(&["dlq", "replay", "cli-dead", &entry, "--dry-run"])
            .await),
        1
    );
    assert_eq!(
        dry(env
            .json(&["dlq", "purge", "cli-dead", "--all", "--dry-run"])
            .await),
        5
    );
    assert_eq!(
        dry(env
            .json(&[
                "dlq",
                "purge",
                "cli-dead",
                "--older-than",
                "1h",
                "--dry-run"
            ])
            .await),
        0
    );
    assert_eq!(
        dry(env
            .json(&["dlq", "purge", "cli-dead", &entry, "--dry-run"])
            .await),
        1
    );
    let human = env
        .ok(&[
            "dlq",
            "purge",
            "cli-dead",
            "--type",
            "cli.unknown",
            "--dry-run",
        ])
        .await;
    assert_eq!(
        human,
        "would purge 2 dead letters of cli-dead (dry run: nothing changed)\n"
    );
    assert_eq!(env.snapshot().await, before, "a dry run changed Redis");

    let status = env.json(&["job", &job_id]).await;
    assert_eq!(
        (&status["state"], &status["reason"]),
        (&"dead".into(), &"failed".into())
    );

    // Replays: one by entry id, then by filter.
    let replayed = env.json(&["dlq", "replay", "cli-dead", &entry]).await;
    assert_eq!(replayed["replayed"], 1);
    assert_eq!(replayed["id"], job_id.as_str());
    let queues = env.json(&["queues"]).await;
    assert_eq!(
        queue_info(&queues, "cli-dead")["stats"]["ready"]["normal"],
        1,
        "back on its queue"
    );
    let status = env.json(&["job", &job_id]).await;
    assert_eq!(status["state"], "queued", "{status}");
    assert_eq!(status["reason"], Value::Null, "{status}");
    env.fails(&["dlq", "replay", "cli-dead", &entry], 1, "no dead letter")
        .await;
    env.fails(&["dlq", "show", "cli-dead", &entry], 1, "no dead letter")
        .await;
    let out = env
        .ok(&["dlq", "replay", "cli-dead", "--type", "cli.unknown"])
        .await;
    assert_eq!(out, "replayed 2 dead letters of cli-dead\n");
    assert_eq!(env.dead("cli-dead").await, 2);

    // Purges: one by entry id, then what is left.
    env.fails(&["dlq", "purge", "cli-dead"], 2, "--all").await;
    let before = env.snapshot().await;
    let out = env
        .ok(&["dlq", "purge", "cli-dead", "--older-than", "1h"])
        .await;
    assert_eq!(out, "purged 0 dead letters of cli-dead\n");
    assert_eq!(env.snapshot().await, before, "none was old enough");
    let last = env.json(&["dlq", "list", "cli-dead", "--limit", "1"]).await;
    let entry = last["jobs"][0]["entry_id"]
        .as_str()
        .expect("entry id")
        .to_string();
    assert_eq!(
        env.json(&["dlq", "purge", "cli-dead", &entry]).await["purged"],
        1
    );
    assert_eq!(
        env.ok(&["dlq", "purge", "cli-dead", "--all"]).await,
        "purged 1 dead letter of cli-dead\n"
    );
    assert_eq!(env.dead("cli-dead").await, 0);
    assert_eq!(
        env.ok(&["dlq", "list", "cli-dead"]).await,
        "no dead letters in cli-dead (0 in all)\n"
    );
}
