//! Operator control over the HTTP API, against a real Redis: cancel (waiting and running),
//! delete, run now, purge with filters, a job enqueued after others, batch status,
//! webhooks set, listed without their secret and removed; 404s, 422s, and the token.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stevedore::admin::AdminConfig;
use stevedore::flow::Batch;
use stevedore::{JobContext, JobError, JobState, Worker, job_handler};

use crate::support::{self, AdminServer, TestEnv, eventually, serve_admin};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nap {
    ms: u64,
}

#[job_handler(name = "ctl.nap", queue = "naps")]
async fn nap(n: Nap, ctx: JobContext) -> Result<(), JobError> {
    tokio::select! {
        _ = ctx.cancelled() => Err(JobError::permanent("stopped")),
        _ = tokio::time::sleep(Duration::from_millis(n.ms)) => Ok(()),
    }
}

const TOKEN: &str = "t0ken";

async fn call(
    api: &AdminServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json");
    if let Some(t) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {t}"));
    }
    let bytes = body
        .map(|b| serde_json::to_vec(&b).expect("json"))
        .unwrap_or_default();
    let (code, raw, _) = support::exchange(api.addr, &head, &bytes).await;
    let value = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    (code, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_delete_run_now_and_purge_over_http() {
    let env = TestEnv::start().await;
    let api = serve_admin(&env.client, AdminConfig::with_token(TOKEN)).await;
    let t = Some(TOKEN);
    let queued = env
        .client
        .enqueue(nap::job(Nap { ms: 0 }))
        .await
        .expect("enqueue");
    let (code, body) = call(
        &api,
        "POST",
        &format!("/api/v1/jobs/{queued}/cancel"),
        t,
        Some(json!({ "by": "ops", "reason": "wrong customer" })),
    )
    .await;
    assert_eq!(
        (code, &body),
        (200, &json!({ "outcome": "cancelled", "state": "queued" }))
    );
    let (code, status) = call(&api, "GET", &format!("/api/v1/jobs/{queued}"), t, None).await;
    assert_eq!(code, 200);
    assert_eq!(status["state"], "cancelled");
    assert_eq!(status["cancelled_by"], "ops");
    assert_eq!(status["reason"], "wrong customer");
    // Again: already ended. Without a body: by defaults to "http".
    let (code, body) = call(
        &api,
        "POST",
        &format!("/api/v1/jobs/{queued}/cancel"),
        t,
        None,
    )
    .await;
    assert_eq!(
        (code, body["outcome"].as_str()),
        (200, Some("already_ended"))
    );

    // Without the token, writes are refused.
    let later = env
        .client
        .enqueue(nap::job(Nap { ms: 0 }).delay(Duration::from_secs(600)))
        .await
        .expect("enqueue");
    let (code, _) = call(
        &api,
        "POST",
        &format!("/api/v1/jobs/{later}/retry"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 401);
    let (code, _) = call(&api, "DELETE", &format!("/api/v1/jobs/{later}"), None, None).await;
    assert_eq!(code, 401);
    assert_eq!(env.state(later.as_str()).await, Some(JobState::Scheduled));

    // Run now, then a worker runs it.
    let (code, body) = call(
        &api,
        "POST",
        &format!("/api/v1/jobs/{later}/retry"),
        t,
        None,
    )
    .await;
    assert_eq!(
        (code, &body),
        (200, &json!({ "outcome": "due", "state": "scheduled" }))
    );
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(nap::handler())
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(10), "it ran", || async {
        env.state(later.as_str()).await == Some(JobState::Succeeded)
    })
    .await;
    let (code, body) = call(
        &api,
        "POST",
        &format!("/api/v1/jobs/{later}/retry"),
        t,
        None,
    )
    .await;
    assert_eq!(
        (code, &body),
        (
            200,
            &json!({ "outcome": "not_scheduled", "state": "succeeded" })
        )
    );

    // A running job: requested, then cancelled by its worker.
    let long = env
        .client
        .enqueue(nap::job(Nap { ms: 60_000 }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "it runs", || async {
        env.state(long.as_str()).await == Some(JobState::Running)
    })
    .await;
    let (code, body) = call(
        &api,
        "POST",
        &format!("/api/v1/jobs/{long}/cancel"),
        t,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (code, &body),
        (
            200,
            &json!({ "outcome": "requested", "state": "cancelling" })
        )
    );
    eventually(Duration::from_secs(5), "its worker stops it", || async {
        env.state(long.as_str()).await == Some(JobState::Cancelled)
    })
    .await;

    // Delete, then it is unknown.
    let (code, body) = call(&api, "DELETE", &format!("/api/v1/jobs/{long}"), t, None).await;
    assert_eq!(
        (code, &body),
        (200, &json!({ "deleted": true, "was": "cancelled" }))
    );
    for (method, path) in [
        ("DELETE", format!("/api/v1/jobs/{long}")),
        ("POST", format!("/api/v1/jobs/{long}/cancel")),
        ("POST", format!("/api/v1/jobs/{long}/retry")),
    ] {
        let (code, body) = call(&api, method, &path, t, None).await;
        assert_eq!(
            (code, body["error"].as_str()),
            (404, Some("not_found")),
            "{method} {path}"
        );
    }
    running.shutdown().await.expect("stop");

    // Purge: filters, counts, bad input.
    for p in ["high", "low", "low"] {
        env.client
            .enqueue(nap::job(Nap { ms: 0 }).priority(p.parse().expect("priority")))
            .await
            .expect("enqueue");
    }
    env.client
        .enqueue(nap::job(Nap { ms: 0 }).delay(Duration::from_secs(600)))
        .await
        .expect("enqueue");
    let (code, body) = call(
        &api,
        "POST",
        "/api/v1/queues/naps/purge",
        t,
        Some(json!({ "priority": "low", "scheduled": false })),
    )
    .await;
    assert_eq!(
        (code, &body),
        (200, &json!({ "queue": "naps", "ready": 2, "scheduled": 0 }))
    );
    let (code, body) = call(&api, "POST", "/api/v1/queues/naps/purge", t, None).await;
    assert_eq!(
        (code, &body),
        (200, &json!({ "queue": "naps", "ready": 1, "scheduled": 1 }))
    );
    for (path, body, want) in [
        ("/api/v1/queues/nowhere/purge", json!({}), 404),
        (
            "/api/v1/queues/naps/purge",
            json!({ "priority": "urgent" }),
            422,
        ),
        (
            "/api/v1/queues/naps/purge",
            json!({ "ready": false, "scheduled": false }),
            422,
        ),
        ("/api/v1/queues/naps/purge", json!({ "what": 1 }), 422),
    ] {
        let (code, reply) = call(&api, "POST", path, t, Some(body.clone())).await;
        assert_eq!(code, want, "{path} {body}: {reply}");
    }
    let (code, body) = call(
        &api,
        "POST",
        &format!("/api/v1/jobs/{queued}/cancel"),
        t,
        Some(json!({ "by": "a\nb" })),
    )
    .await;
    assert_eq!((code, body["error"].as_str()), (422, Some("invalid")));
    let (code, q) = call(&api, "GET", "/api/v1/queues/naps", t, None).await;
    assert_eq!(code, 200);
    assert_eq!(q["totals"]["purged"], 4);
    assert_eq!(q["totals"]["cancelled"], 2);
    assert_eq!(q["totals"]["deleted"], 1);
    assert_eq!(q["totals"]["retried_now"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_after_others_batches_and_webhooks_over_http() {
    let env = TestEnv::start().await;
    let api = serve_admin(&env.client, AdminConfig::with_token(TOKEN)).await;
    let t = Some(TOKEN);
    let first = env
        .client
        .enqueue(nap::job(Nap { ms: 0 }))
        .await
        .expect("enqueue");
    let (code, body) = call(
        &api,
        "POST",
        "/api/v1/jobs",
        t,
        Some(json!({ "type": "ctl.nap", "queue": "naps", "payload": { "ms": 0 }, "after": [first.as_str()], "on_failure": "run" })),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let after = body["id"].as_str().expect("id").to_string();
    assert_eq!(env.state(&after).await, Some(JobState::Blocked));
    for (job, want) in [
        (
            json!({ "type": "ctl.nap", "queue": "naps", "after": ["naps:n-1-0"] }),
            404,
        ),
        (
            json!({ "type": "ctl.nap", "queue": "naps", "after": [first.as_str()], "on_failure": "maybe" }),
            422,
        ),
        (
            json!({ "type": "ctl.nap", "queue": "naps", "on_failure": "run" }),
            422,
        ),
    ] {
        let (code, reply) = call(&api, "POST", "/api/v1/jobs", t, Some(job.clone())).await;
        assert_eq!(code, want, "{job}: {reply}");
    }
    let batch = env
        .client
        .enqueue_batch(
            Batch::new()
                .job(nap::job(Nap { ms: 0 }))
                .job(nap::job(Nap { ms: 0 })),
        )
        .await
        .expect("batch");
    let (code, body) = call(
        &api,
        "GET",
        &format!("/api/v1/batches/{}", batch.id),
        t,
        None,
    )
    .await;
    assert_eq!(
        (code, &body["total"], &body["pending"], &body["state"]),
        (200, &json!(2), &json!(2), &json!("running"))
    );
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(nap::handler())
            .build()
            .expect("worker"),
    );
    eventually(
        Duration::from_secs(10),
        "the batch and the dependent end",
        || async {
            let (_, b) = call(
                &api,
                "GET",
                &format!("/api/v1/batches/{}", batch.id),
                t,
                None,
            )
            .await;
            b["state"] == "done" && env.state(&after).await == Some(JobState::Succeeded)
        },
    )
    .await;
    let (code, _) = call(&api, "GET", "/api/v1/batches/naps:b-none", t, None).await;
    assert_eq!(code, 404);
    running.shutdown().await.expect("stop");

    // Webhooks.
    let (code, body) = call(
        &api,
        "PUT",
        "/api/v1/webhooks/type/ctl.nap",
        t,
        Some(json!({ "url": "https://example.com/hook", "secret": "hush", "events": ["dead"], "timeout_ms": 2000 })),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(&api, "GET", "/api/v1/webhooks", t, None).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({ "webhooks": [{ "scope": "type", "name": "ctl.nap", "url": "https://example.com/hook", "events": ["dead"], "timeout_ms": 2000 }] })
    );
    assert!(!body.to_string().contains("hush"));
    for (path, hook, want) in [
        (
            "/api/v1/webhooks/type/ctl.nap",
            json!({ "url": "ftp://x", "secret": "s" }),
            422,
        ),
        (
            "/api/v1/webhooks/type/ctl.nap",
            json!({ "url": "https://x" }),
            422,
        ),
        (
            "/api/v1/webhooks/pool/x",
            json!({ "url": "https://x", "secret": "s" }),
            404,
        ),
    ] {
        let (code, reply) = call(&api, "PUT", path, t, Some(hook.clone())).await;
        assert_eq!(code, want, "{path} {hook}: {reply}");
    }
    let (code, body) = call(&api, "DELETE", "/api/v1/webhooks/type/ctl.nap", t, None).await;
    assert_eq!((code, &body["removed"]), (200, &json!(true)));
    let (code, body) = call(&api, "DELETE", "/api/v1/webhooks/type/ctl.nap", t, None).await;
    assert_eq!((code, &body["removed"]), (200, &json!(false)));
}
