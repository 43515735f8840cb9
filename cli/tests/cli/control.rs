//! cancel, delete, retry, purge, batch, webhooks and enqueue --after, run as a process:
//! what they print (and in JSON), their exit codes, and that a refused one changes nothing.

use crate::support::Env;

#[tokio::test]
async fn cancel_delete_retry_and_purge() {
    let env = Env::start().await;
    let id = env.ok(&["enqueue", "work.do", "-q", "jobs"]).await;
    let id = id.trim();
    let out = env
        .json(&["cancel", id, "--by", "ops", "--reason", "not needed"])
        .await;
    assert_eq!(
        out,
        serde_json::json!({ "outcome": "cancelled", "state": "queued" })
    );
    let job = env.json(&["job", id]).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["cancelled_by"], "ops");
    assert_eq!(job["reason"], "not needed");
    let text = env.ok(&["job", id]).await;
    assert!(
        text.contains("cancelled by") && text.contains("ops"),
        "{text}"
    );
    let again = env.ok(&["cancel", id]).await;
    assert!(
        again.contains("already cancelled; nothing changed"),
        "{again}"
    );

    // Run now: a delayed job is made due (no worker here: it waits in its stream).
    let later = env
        .ok(&["enqueue", "work.do", "-q", "jobs", "--delay", "1h"])
        .await;
    let later = later.trim();
    let out = env.json(&["retry", later]).await;
    assert_eq!(
        out,
        serde_json::json!({ "outcome": "due", "state": "scheduled" })
    );
    let out = env.json(&["retry", id]).await;
    assert_eq!(out["outcome"], "not_scheduled");

    // Delete needs --yes, and refuses before touching Redis.
    env.fails(&["delete", later], 2, "add --yes").await;
    let out = env.json(&["delete", later, "--yes"]).await;
    assert_eq!(out["deleted"], true);
    env.fails(&["job", later], 1, "no job").await;
    env.fails(&["delete", later, "--yes"], 1, "unknown job")
        .await;
    env.fails(&["cancel", "jobs:n-1-0"], 1, "unknown job").await;
    env.fails(&["retry", "nonsense"], 1, "unknown job").await;
    env.fails(&["cancel", id, "--by", "a\u{7}b"], 2, "control characters")
        .await;

    // Purge: filters and counts.
    env.ok(&[
        "enqueue",
        "a.b",
        "-q",
        "jobs",
        "-n",
        "3",
        "--priority",
        "low",
    ])
    .await;
    env.ok(&["enqueue", "c.d", "-q", "jobs", "-n", "2"]).await;
    env.ok(&["enqueue", "c.d", "-q", "jobs", "--delay", "1h"])
        .await;
    env.fails(&["purge", "jobs"], 2, "add --yes").await;
    let out = env
        .json(&["purge", "jobs", "--priority", "low", "--yes"])
        .await;
    assert_eq!(
        out,
        serde_json::json!({ "queue": "jobs", "ready": 3, "scheduled": 0 })
    );
    let out = env
        .json(&["purge", "jobs", "--type", "c.d", "--ready-only", "--yes"])
        .await;
    assert_eq!(out["ready"], 2);
    let text = env.ok(&["purge", "jobs", "--yes"]).await;
    assert!(text.contains("purged 0 ready and 1 scheduled"), "{text}");
    env.fails(&["purge", "nowhere", "--yes"], 1, "unknown queue")
        .await;
    let stats = env.json(&["stats"]).await;
    assert_eq!(stats["totals"]["purged"], 6, "{stats}");
    assert_eq!(stats["totals"]["cancelled"], 1, "{stats}");
    assert_eq!(stats["totals"]["deleted"], 1, "{stats}");
}

#[tokio::test]
async fn enqueue_after_batches_and_webhooks() {
    let env = Env::start().await;
    let first = env.ok(&["enqueue", "work.do", "-q", "jobs"]).await;
    let first = first.trim();
    let out = env
        .json(&[
            "enqueue",
            "work.next",
            "-q",
            "jobs",
            "--after",
            first,
            "--on-failure",
            "run",
        ])
        .await;
    assert_eq!(out["state"], "blocked");
    let after = out["id"].as_str().expect("id").to_string();
    assert_eq!(env.json(&["job", &after]).await["state"], "blocked");
    env.fails(
        &[
            "enqueue",
            "work.next",
            "-q",
            "jobs",
            "--after",
            "jobs:n-1-0",
        ],
        1,
        "unknown job",
    )
    .await;

    let client = env.client().await;
    let batch = client
        .enqueue_batch(
            stevedore::flow::Batch::new()
                .job(stevedore::RawJob::new("work.do", "jobs", &1).expect("job"))
                .job(stevedore::RawJob::new("work.do", "jobs", &2).expect("job")),
        )
        .await
        .expect("batch");
    let b = env.json(&["batch", &batch.id]).await;
    assert_eq!(
        (b["total"].as_u64(), b["pending"].as_u64()),
        (Some(2), Some(2)),
        "{b}"
    );
    let text = env.ok(&["batch", &batch.id]).await;
    assert!(text.contains("running"), "{text}");
    env.fails(&["batch", "jobs:b-none"], 1, "no batch").await;

    assert_eq!(env.ok(&["webhooks"]).await, "no webhooks\n");
    let out = env
        .json(&[
            "webhooks",
            "set",
            "type",
            "work.do",
            "--url",
            "https://example.com/h",
            "--secret",
            "hush",
            "--events",
            "dead",
            "--timeout",
            "2s",
        ])
        .await;
    assert_eq!(
        out,
        serde_json::json!({ "webhooks": [{ "scope": "type", "name": "work.do", "url": "https://example.com/h", "events": ["dead"], "timeout_ms": 2000 }] })
    );
    let table = env.ok(&["webhooks"]).await;
    assert!(
        table.contains("work.do") && !table.contains("hush"),
        "{table}"
    );
    env.fails(
        &[
            "webhooks", "set", "type", "work.do", "--url", "ftp://x", "--secret", "s",
        ],
        2,
        "scheme",
    )
    .await;
    env.fails(
        &[
            "webhooks",
            "set",
            "pool",
            "x",
            "--url",
            "https://x",
            "--secret",
            "s",
        ],
        2,
        "queue or type",
    )
    .await;
    let out = env.json(&["webhooks", "remove", "type", "work.do"]).await;
    assert_eq!(out, serde_json::json!({ "webhooks": [] }));
    env.fails(&["webhooks", "remove", "type", "work.do"], 1, "no webhook")
        .await;
}
