//! Webhooks against a real Redis and a real HTTP receiver: deliveries are signed, carry the
//! job's result or error, fire only for their scope and events, retry on 5xx until the
//! receiver takes them, are dead-lettered when refused or unreachable, and never trigger
//! hooks themselves.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::webhook::{Webhook, WebhookEvent, WebhookScope, signature};
use stevedore::{Error, JobContext, JobError, JobState, RetryPolicy, Worker, job_handler};
use tokio::net::TcpListener;

use crate::support::{TestEnv, eventually, wait_for};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    fail: bool,
}

#[job_handler(name = "hook.task", queue = "hooked", max_attempts = 1)]
async fn task(t: Task, ctx: JobContext) -> Result<(), JobError> {
    if t.fail {
        return Err(JobError::permanent("the task failed"));
    }
    ctx.set_result(&serde_json::json!({ "rows": 42 }))
        .map_err(|e| JobError::permanent(e.to_string()))
}

#[job_handler(name = "hook.other", queue = "quiet", max_attempts = 1)]
async fn other(_t: Task, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
    raw: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn on(&self, path: &str) -> Vec<Got> {
        self.all().into_iter().filter(|g| g.path == path).collect()
    }
}

async fn record(st: &Receiver, path: &str, headers: HeaderMap, raw: Bytes) -> usize {
    let body = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
    let mut got = st.got.lock().unwrap_or_else(|p| p.into_inner());
    got.push(Got {
        path: path.to_string(),
        headers,
        body,
        raw,
    });
    got.iter().filter(|g| g.path == path).count()
}

/// A receiver: `/ok` takes everything, `/flaky` answers 500 twice then 200, `/refuse`
/// answers 400.
async fn receiver() -> (String, Receiver) {
    let st = Receiver::default();
    let app = Router::new()
        .route(
            "/ok",
            post(
                |State(st): State<Receiver>, h: HeaderMap, b: Bytes| async move {
                    record(&st, "/ok", h, b).await;
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/flaky",
            post(
                |State(st): State<Receiver>, h: HeaderMap, b: Bytes| async move {
                    if record(&st, "/flaky", h, b).await <= 2 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .route(
            "/refuse",
            post(
                |State(st): State<Receiver>, h: HeaderMap, b: Bytes| async move {
                    record(&st, "/refuse", h, b).await;
                    StatusCode::BAD_REQUEST
                },
            ),
        )
        .with_state(st.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(axum::serve(listener, app).into_future());
    (format!("http://{addr}"), st)
}

fn worker(env: &TestEnv) -> Worker {
    Worker::builder(env.client.clone())
        .handler(task::handler())
        .handler(other::handler())
        .queues(["hooked", "quiet"])
        .retry_policy(RetryPolicy::fixed(Duration::from_millis(30)).with_jitter(false))
        .build()
        .expect("worker")
}

/// Checks the signature header against the body, as a receiver would.
fn signed(g: &Got, secret: &str) -> bool {
    let header = g
        .headers
        .get("stevedore-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let t = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    t > 0 && header == signature(secret, t, &g.raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_hook_delivers_signed_successes_and_deaths_and_nothing_else() {
    let env = TestEnv::start().await;
    let (base, rx) = receiver().await;
    // Set before the queue is known: the worker writes the queue's copy when it starts.
    env.client
        .set_webhook(
            WebhookScope::Queue("hooked".into()),
            Webhook::new(format!("{base}/ok"), "s3cret"),
        )
        .await
        .expect("set hook");
    let running = crate::support::spawn(worker(&env));
    let copy = format!("{}:{{hooked}}:hooks", env.prefix);
    eventually(
        Duration::from_secs(10),
        "the worker writes the queue's hooks",
        || async {
            let events: Option<String> = env.raw.hget(&copy, "queue").await.expect("hget");
            events.as_deref() == Some("dead,succeeded")
        },
    )
    .await;
    let ok = env
        .client
        .enqueue(task::job(Task { fail: false }))
        .await
        .expect("enqueue");
    let bad = env
        .client
        .enqueue(task::job(Task { fail: true }))
        .await
        .expect("enqueue");
    env.client
        .enqueue(other::job(Task { fail: false }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "two deliveries", || async {
        rx.on("/ok").len() >= 2
    })
    .await;
    // Deliveries are jobs too, but never hooked themselves: nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.on("/ok");
    assert_eq!(got.len(), 2, "{got:?}");
    let by_job = |id: &str| {
        got.iter()
            .find(|g| g.body["job_id"] == id)
            .cloned()
            .expect("a delivery for the job")
    };
    let s = by_job(ok.as_str());
    assert_eq!(s.body["event"], "succeeded");
    assert_eq!(s.body["job_type"], "hook.task");
    assert_eq!(s.body["queue"], "hooked");
    assert_eq!(s.body["result"]["rows"], 42);
    assert_eq!(s.headers["stevedore-event"], "succeeded");
    assert!(signed(&s, "s3cret"), "{:?}", s.headers);
    assert!(!signed(&s, "another secret"));
    let d = by_job(bad.as_str());
    assert_eq!(d.body["event"], "dead");
    assert_eq!(d.body["error"], "the task failed");
    assert!(signed(&d, "s3cret"));
    // The delivery's id is a job's: its status says it succeeded, and it carries the answer.
    // The receiver records a request as it arrives: the delivery's acknowledgement may
    // still be on the way.
    let delivery = d.headers["stevedore-delivery"]
        .to_str()
        .expect("text")
        .to_string();
    let st = env
        .client
        .wait_for(&delivery, Duration::from_secs(10))
        .await
        .expect("status")
        .expect("known");
    assert_eq!(
        (st.state, st.job_type.as_str()),
        (JobState::Succeeded, "stevedore.webhook")
    );
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_hook_retries_until_taken_and_dead_letters_what_is_refused() {
    let env = TestEnv::start().await;
    let (base, rx) = receiver().await;
    let running = crate::support::spawn(worker(&env));
    env.client
        .set_webhook(
            WebhookScope::Type("hook.task".into()),
            Webhook::new(format!("{base}/flaky"), "k1").events(&[WebhookEvent::Dead]),
        )
        .await
        .expect("set hook");
    let good = env
        .client
        .enqueue(task::job(Task { fail: false }))
        .await
        .expect("enqueue");
    let bad = env
        .client
        .enqueue(task::job(Task { fail: true }))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "taken on the third try",
        || async { rx.on("/flaky").len() >= 3 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.on("/flaky");
    assert_eq!(got.len(), 3, "twice refused with 500, then taken: {got:?}");
    assert!(
        got.iter().all(|g| g.body["job_id"] == bad.as_str()),
        "dead only"
    );
    let ids: Vec<_> = got
        .iter()
        .map(|g| g.headers["stevedore-delivery"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one delivery, retried"
    );
    assert_eq!(got[2].body["attempt"], 3);
    assert!(
        rx.on("/flaky")
            .iter()
            .all(|g| g.body["job_id"] != good.as_str())
    );

    // A receiver that refuses (400): dead-lettered at once, not retried.
    env.client
        .set_webhook(
            WebhookScope::Type("hook.task".into()),
            Webhook::new(format!("{base}/refuse"), "k1"),
        )
        .await
        .expect("replace hook");
    env.client
        .enqueue(task::job(Task { fail: false }))
        .await
        .expect("enqueue");
    let letter = wait_for(
        Duration::from_secs(10),
        "the refused delivery is dead",
        || async {
            env.dead_letters("hooked")
                .await
                .into_iter()
                .find(|l| l.get("type").map(String::as_str) == Some("stevedore.webhook"))
        },
    )
    .await;
    assert!(letter["error"].contains("400"), "{letter:?}");
    assert_eq!(rx.on("/refuse").len(), 1);

    // Unreachable: retried, then dead-lettered (8 attempts, 30 ms apart).
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    env.client
        .set_webhook(
            WebhookScope::Type("hook.task".into()),
            Webhook::new(format!("http://127.0.0.1:{port}/"), "k1")
                .timeout(Duration::from_millis(500)),
        )
        .await
        .expect("replace hook");
    env.client
        .enqueue(task::job(Task { fail: false }))
        .await
        .expect("enqueue");
    let letter = wait_for(
        Duration::from_secs(20),
        "the unreachable delivery is dead",
        || async {
            env.dead_letters("hooked").await.into_iter().find(|l| {
                l.get("type").map(String::as_str) == Some("stevedore.webhook")
                    && l.get("error").is_some_and(|e| e.contains("failed"))
            })
        },
    )
    .await;
    assert_eq!(letter["attempt"], "8", "{letter:?}");
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_listed_without_secrets_and_bad_ones_are_refused() {
    let env = TestEnv::start().await;
    let scope = WebhookScope::Queue("hooked".into());
    for (hook, what) in [
        (Webhook::new("ftp://example.com/x", "s"), "scheme"),
        (Webhook::new("not a url", "s"), "url"),
        (Webhook::new("https://example.com/x", ""), "secret"),
        (
            Webhook::new("https://example.com/x", "s").events(&[]),
            "events",
        ),
        (
            Webhook::new("https://example.com/x", "s").timeout(Duration::from_secs(3600)),
            "timeout",
        ),
    ] {
        assert!(
            matches!(
                env.client.set_webhook(scope.clone(), hook).await,
                Err(Error::InvalidInput(_))
            ),
            "{what}"
        );
    }
    assert!(matches!(
        env.client
            .set_webhook(
                WebhookScope::Type("bad type!".into()),
                Webhook::new("https://e.com", "s")
            )
            .await,
        Err(Error::InvalidName { .. })
    ));
    env.client
        .set_webhook(
            scope.clone(),
            Webhook::new("https://example.com/x", "very secret"),
        )
        .await
        .expect("set");
    let listed = env.client.webhooks().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].url, "https://example.com/x");
    assert!(!format!("{listed:?}").contains("very secret"));
    assert!(
        !serde_json::to_string(&listed)
            .expect("json")
            .contains("very secret")
    );
    assert!(
        env.client
            .remove_webhook(scope.clone())
            .await
            .expect("remove")
    );
    assert!(!env.client.remove_webhook(scope).await.expect("remove"));
    assert!(env.client.webhooks().await.expect("list").is_empty());
}

/// A type hook fires for its type only, however the acknowledgement learns a job's type:
/// from its done-bucket record, from its status hash (a delayed job), or, with no success
/// record kept, from its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_hook_knows_each_job_type_with_or_without_success_records() {
    let env = TestEnv::start().await;
    let (base, rx) = receiver().await;
    env.client
        .set_webhook(
            WebhookScope::Type("hook.task".into()),
            Webhook::new(format!("{base}/ok"), "k3").events(&[WebhookEvent::Succeeded]),
        )
        .await
        .expect("set hook");
    for keep in [None, Some(Duration::ZERO)] {
        let mut builder = Worker::builder(env.client.clone())
            .handler(task::handler())
            .handler(other::handler())
            .queues(["hooked"]);
        if let Some(keep) = keep {
            builder = builder.keep_succeeded("hooked", keep);
        }
        let running = crate::support::spawn(builder.build().expect("worker"));
        let before = rx.on("/ok").len();
        let mut ours = Vec::new();
        for _ in 0..3 {
            ours.push(
                env.client
                    .enqueue(task::job(Task { fail: false }))
                    .await
                    .expect("enqueue"),
            );
            ours.push(
                env.client
                    .enqueue(task::job(Task { fail: false }).delay(Duration::from_millis(50)))
                    .await
                    .expect("enqueue"),
            );
            // Another type on the same queue: no delivery.
            env.client
                .enqueue(other::job(Task { fail: false }).queue("hooked"))
                .await
                .expect("enqueue");
        }
        eventually(
            Duration::from_secs(10),
            "a delivery per job of the type",
            || async { rx.on("/ok").len() >= before + ours.len() },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got: Vec<String> = rx.on("/ok")[before..]
            .iter()
            .map(|g| {
                assert_eq!(g.body["job_type"], "hook.task", "{:?}", g.body);
                g.body["job_id"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        got.sort();
        let mut want: Vec<String> = ours.iter().map(|id| id.as_str().to_string()).collect();
        want.sort();
        assert_eq!(got, want, "success records kept: {keep:?}");
        running.shutdown().await.expect("stop");
    }
}
