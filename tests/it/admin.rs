use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stevedore::admin::AdminConfig;
use stevedore::{JobContext, JobError, Worker, job_handler};
use stevedore_testcontainers::RedisServer;

use crate::support::{self, AdminServer, TestEnv, eventually, serve_admin};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mail {
    to: String,
}

#[job_handler(name = "adm.mail", queue = "mail")]
async fn mail(m: Mail, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), m.to);
    Ok(())
}

#[job_handler(name = "adm.broken", queue = "mail", max_attempts = 1)]
async fn broken(_m: Mail, _ctx: JobContext) -> Result<(), JobError> {
    Err(JobError::permanent("mailbox gone"))
}

const TOKEN: &str = "s3cret";

/// What a bad request is: a name, its token, its body, the status and error kind it gets.
type BadCase = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

/// One HTTP/1.1 request over a fresh connection: status and body (JSON when it parses,
/// else the text).
async fn call(
    api: &AdminServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json");
    if let Some(t) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {t}"));
    }
    let (code, raw, _) = support::exchange(api.addr, &head, body.unwrap_or_default()).await;
    let value = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    (code, value)
}

async fn post(api: &AdminServer, path: &str, body: Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(&body).expect("json");
    call(api, "POST", path, Some(TOKEN), Some(&bytes)).await
}

async fn get(api: &AdminServer, path: &str) -> (u16, Value) {
    // A server without a token ignores it.
    call(api, "GET", path, Some(TOKEN), None).await
}

#[tokio::test]
async fn the_api_enqueues_reports_pauses_and_replays() {
    let env = TestEnv::start().await;
    let api = serve_admin(&env.client, AdminConfig::with_token(TOKEN)).await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(mail::handler())
            .handler(broken::handler())
            .build()
            .expect("worker"),
    );

    let (code, body) = post(
        &api,
        "/api/v1/jobs",
        json!({"type": "adm.mail", "queue": "mail", "payload": {"to": "ada@example.com"}, "priority": "high"}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    eventually(
        Duration::from_secs(10),
        "the submitted job succeeds",
        || async { get(&api, &format!("/api/v1/jobs/{id}")).await.1["state"] == "succeeded" },
    )
    .await;
    assert_eq!(support::values::<String>(&id), ["ada@example.com"]);
    let (_, status) = get(&api, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(status["type"], "adm.mail");
    assert_eq!(status["attempts"], 1);

    // A job that dies, then its dead letter: listed, shown, replayed.
    let (code, body) = post(
        &api,
        "/api/v1/jobs",
        json!({"type": "adm.broken", "queue": "mail", "payload": {"to": "bob@example.com"}}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(
        Duration::from_secs(10),
        "the broken job is dead",
        || async { get(&api, "/api/v1/queues/mail/dlq").await.1["total"] == 1 },
    )
    .await;
    let (_, page) = get(
        &api,
        "/api/v1/queues/mail/dlq?reason=failed&type=adm.broken",
    )
    .await;
    assert_eq!(
        page["matching"], 1,
        "a filtered list counts its matches: {page}"
    );
    let dead = &page["jobs"][0];
    assert_eq!(dead["error"], "mailbox gone");
    assert_eq!(dead["payload"], json!({"to": "bob@example.com"}));
    let entry = dead["entry_id"].as_str().expect("entry id").to_string();
    let (code, shown) = get(&api, &format!("/api/v1/queues/mail/dlq/{entry}")).await;
    assert_eq!((code, &shown["reason"]), (200, &json!("failed")));
    let (code, dry) = post(
        &api,
        "/api/v1/queues/mail/dlq/replay",
        json!({"dry_run": true}),
    )
    .await;
    assert_eq!((code, &dry["matching"]), (200, &json!(1)), "{dry}");
    assert_eq!(
        get(&api, "/api/v1/queues/mail/dlq").await.1["total"],
        1,
        "a dry run changes nothing"
    );
    let (code, replayed) = post(
        &api,
        "/api/v1/queues/mail/dlq/replay",
        json!({"type": "adm.broken"}),
    )
    .await;
    assert_eq!(
        (code, &replayed["replayed"]),
        (200, &json!(1)),
        "{replayed}"
    );
    eventually(
        Duration::from_secs(10),
        "the replayed job dies again",
        || async { get(&api, "/api/v1/queues/mail/dlq").await.1["total"] == 1 },
    )
    .await;
    let (code, purged) = post(&api, "/api/v1/queues/mail/dlq/purge", json!({})).await;
    assert_eq!((code, &purged["purged"]), (200, &json!(1)), "{purged}");

    // Queue views and lifetime totals (flushed by the worker about once a second).
    eventually(
        Duration::from_secs(10),
        "totals reach the queue view",
        || async {
            let (_, q) = get(&api, "/api/v1/queues/mail").await;
            q["totals"]["succeeded"] == 1 && q["totals"]["dead"] == 2 && q["workers"] == 1
        },
    )
    .await;
    let (code, queues) = get(&api, "/api/v1/queues").await;
    assert_eq!(code, 200);
    assert_eq!(queues[0]["name"], "mail");
    let (_, stats) = get(&api, "/api/v1/stats").await;
    assert_eq!(
        (stats["queues"].clone(), stats["workers"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(stats["totals"]["succeeded"], 1);
    let (_, workers) = get(&api, "/api/v1/workers").await;
    assert_eq!(workers[0]["queues"], json!(["mail"]));
    assert_eq!(workers[0]["concurrency"], 10);

    // Pause: enqueue still works, nothing runs, and the state is visible; resume drains.
    let (code, p) = post(&api, "/api/v1/queues/mail/pause", json!({})).await;
    assert_eq!((code, &p["changed"]), (200, &json!(true)), "{p}");
    // Workers pick the pause up within a control round plus one blocking read; then their
    // read loop fetches nothing more, which is what lets the job below wait.
    support::readers_quiet(&env, Duration::from_millis(250), Duration::from_secs(10)).await;
    let (_, body) = post(
        &api,
        "/api/v1/jobs",
        json!({"type": "adm.mail", "queue": "mail", "payload": {"to": "paused@example.com"}}),
    )
    .await;
    let held = body["id"].as_str().expect("id").to_string();
    // Nothing to wait for: the job must NOT run. A read loop that still fetched would start
    // it within milliseconds of its enqueue, so half a second of watching is ample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, q) = get(&api, "/api/v1/queues/mail").await;
    assert_eq!(
        (q["paused"].clone(), q["stats"]["ready"]["normal"].clone()),
        (json!(true), json!(1)),
        "{q}"
    );
    assert_eq!(support::runs(&held), 0, "a paused queue runs nothing");
    let (code, r) = post(&api, "/api/v1/queues/mail/resume", json!({})).await;
    assert_eq!((code, &r["paused"]), (200, &json!(false)));
    eventually(
        Duration::from_secs(10),
        "the held job runs after resume",
        || async { support::runs(&held) == 1 },
    )
    .await;

    // The OpenAPI document is served and names every route used here.
    let (code, doc) = get(&api, "/api/v1/openapi.json").await;
    assert_eq!(code, 200);
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/queues/{queue}/dlq/{entry}/replay",
        "/api/v1/queues/{queue}/pause",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    running.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let env = TestEnv::start().await;
    let api = serve_admin(&env.client, AdminConfig::loopback_only()).await;
    let doc: Value = serde_json::from_str(include_str!("../../assets/openapi.json")).expect("doc");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", "0000")
            .replace("{queue}", "nosuchqueue")
            .replace("{entry}", "1-0")
            .replace("{scope}", "queue")
            .replace("{name}", "nosuchqueue");
        for method in ops.as_object().expect("operations").keys() {
            let (code, body) =
                call(&api, &method.to_uppercase(), &concrete, None, Some(b"{}")).await;
            let fallback = body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no such endpoint"));
            assert!(
                !fallback && code != 405,
                "{method} {path} is documented but not served: {code} {body}"
            );
        }
    }
    let (code, body) = get(&api, "/api/v1/nothing").await;
    assert_eq!((code, &body["error"]), (404, &json!("not_found")));

    // The dashboard page refuses to be framed by other sites.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(api.addr)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut page = String::new();
    s.read_to_string(&mut page).await.expect("read");
    let head = page
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: frame-ancestors 'none'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let env = TestEnv::start().await;
    let api = serve_admin(&env.client, AdminConfig::with_token(TOKEN)).await;
    let job = json!({"type": "adm.mail", "queue": "mail", "payload": {"to": "x"}});
    let bytes = serde_json::to_vec(&job).expect("json");

    let cases: Vec<BadCase> = vec![
        ("no token", None, bytes.clone(), 401, "unauthorized"),
        (
            "wrong token",
            Some("nope"),
            bytes.clone(),
            401,
            "unauthorized",
        ),
        (
            "not JSON",
            Some(TOKEN),
            b"{to: x".to_vec(),
            400,
            "bad_request",
        ),
        ("empty body", Some(TOKEN), Vec::new(), 400, "bad_request"),
        (
            "unknown field",
            Some(TOKEN),
            br#"{"type": "adm.mail", "colour": 1}"#.to_vec(),
            422,
            "invalid",
        ),
        (
            "missing type",
            Some(TOKEN),
            br#"{"queue": "mail"}"#.to_vec(),
            422,
            "invalid",
        ),
        (
            "bad type name",
            Some(TOKEN),
            br#"{"type": "a b"}"#.to_vec(),
            422,
            "invalid",
        ),
        (
            "bad priority",
            Some(TOKEN),
            br#"{"type": "adm.mail", "priority": "urgent"}"#.to_vec(),
            422,
            "invalid",
        ),
        (
            "bad delay",
            Some(TOKEN),
            br#"{"type": "adm.mail", "delay": "soon"}"#.to_vec(),
            422,
            "invalid",
        ),
        (
            "zero attempts",
            Some(TOKEN),
            br#"{"type": "adm.mail", "max_attempts": 0}"#.to_vec(),
            422,
            "invalid",
        ),
        (
            "bad traceparent",
            Some(TOKEN),
            br#"{"type": "adm.mail", "traceparent": "00-x"}"#.to_vec(),
            422,
            "invalid",
        ),
    ];
    for (what, token, body, want, kind) in cases {
        let (code, reply) = call(&api, "POST", "/api/v1/jobs", token, Some(&body)).await;
        assert_eq!(
            (code, reply["error"].as_str()),
            (want, Some(kind)),
            "{what}: {reply}"
        );
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {reply}"
        );
    }
    let huge = vec![b' '; 2 * 1024 * 1024];
    let (code, _) = call(&api, "POST", "/api/v1/jobs", Some(TOKEN), Some(&huge)).await;
    assert_eq!(code, 413, "a body over the limit");

    let (code, reply) = get(&api, "/api/v1/jobs/0190a000-0000-7000-8000-000000000000").await;
    assert_eq!((code, reply["error"].as_str()), (404, Some("not_found")));
    let (code, _) = get(&api, "/api/v1/queues/mail").await;
    assert_eq!(code, 404, "unknown queue");
    let (code, _) = post(&api, "/api/v1/queues/mail/pause", json!({})).await;
    assert_eq!(code, 404, "pausing an unknown queue");
    let (code, reply) = get(&api, "/api/v1/queues/mail/dlq").await;
    assert_eq!(
        (code, reply["error"].as_str()),
        (404, Some("not_found")),
        "dead letters of an unknown queue"
    );
    let (code, _) = get(&api, "/api/v1/queues/bad%20name").await;
    assert_eq!(code, 422, "invalid queue name");
    let (code, _) = call(&api, "POST", "/api/v1/queues/mail/dlq/purge", None, None).await;
    assert_eq!(code, 401, "purging needs the token");

    // Nothing above wrote anything.
    assert!(
        env.client
            .admin()
            .queue_names()
            .await
            .expect("names")
            .is_empty()
    );
    let keys: Vec<String> = fred::prelude::ClientLike::custom(
        &env.raw,
        fred::cmd!("KEYS"),
        vec![format!("{}*", env.prefix)],
    )
    .await
    .expect("keys");
    assert!(keys.is_empty(), "{keys:?}");

    // A unique job: the second submit is a 409 naming the first job.
    let unique =
        json!({"type": "adm.mail", "queue": "mail", "payload": {"to": "u"}, "unique": "u-1"});
    let (code, first) = post(&api, "/api/v1/jobs", unique.clone()).await;
    assert_eq!(code, 201);
    let (code, reply) = get(&api, "/api/v1/queues/mail/dlq?reason=bogus").await;
    assert_eq!(
        (code, reply["error"].as_str()),
        (422, Some("invalid")),
        "{reply}"
    );
    let (code, dup) = post(&api, "/api/v1/jobs", unique).await;
    assert_eq!(
        (code, &dup["error"], &dup["id"]),
        (409, &json!("duplicate"), &first["id"])
    );
}

#[tokio::test]
async fn redis_down_is_a_503_not_a_hang_or_a_500() {
    let mut server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let api = serve_admin(&env.client, AdminConfig::with_token(TOKEN)).await;
    assert_eq!(get(&api, "/api/v1/stats").await.0, 200);
    server.kill().expect("kill");
    let started = std::time::Instant::now();
    let (code, body) = get(&api, "/api/v1/stats").await;
    assert_eq!(
        (code, body["error"].as_str()),
        (503, Some("redis_unavailable")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered in {:?}",
        started.elapsed()
    );
    let (code, _) = post(
        &api,
        "/api/v1/jobs",
        json!({"type": "adm.mail", "queue": "mail"}),
    )
    .await;
    assert_eq!(code, 503, "a submit is never acknowledged without Redis");
    assert_eq!(get(&api, "/healthz").await.0, 503);
    server.restart().await.expect("restart");
    eventually(Duration::from_secs(20), "the API recovers", || async {
        get(&api, "/api/v1/stats").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn a_filtered_dead_letter_list_counts_its_matches_over_all_pages() {
    let env = TestEnv::start().await;
    let api = serve_admin(&env.client, AdminConfig::loopback_only()).await;
    let _: () =
        fred::prelude::SetsInterface::sadd(&env.raw, format!("{}:queues", env.prefix), "mail")
            .await
            .expect("sadd");
    for (n, job_type) in ["adm.one", "adm.two", "adm.one", "adm.one"]
        .iter()
        .enumerate()
    {
        let fields = crate::dlq::dead(&env, "mail", &format!("j{n}"), job_type, "failed", "normal");
        crate::dlq::add(&env, "mail", "*", fields).await;
    }
    let (_, all) = get(&api, "/api/v1/queues/mail/dlq").await;
    assert_eq!(all["total"], 4, "{all}");
    assert!(all.get("matching").is_none(), "no filter, no count: {all}");

    let (_, one_page) = get(&api, "/api/v1/queues/mail/dlq?type=adm.one").await;
    assert_eq!(one_page["matching"], 3, "{one_page}");
    assert_eq!(one_page["total"], 4, "{one_page}");
    assert_eq!(one_page["jobs"].as_array().map(Vec::len), Some(3));

    // A page of one still counts every match, on its later pages too.
    let (_, first) = get(&api, "/api/v1/queues/mail/dlq?type=adm.one&limit=1").await;
    assert_eq!(first["matching"], 3, "{first}");
    assert_eq!(first["jobs"].as_array().map(Vec::len), Some(1));
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = get(
        &api,
        &format!("/api/v1/queues/mail/dlq?type=adm.one&limit=1&before={next}"),
    )
    .await;
    assert_eq!(second["matching"], 3, "{second}");
    assert_ne!(second["jobs"][0]["entry_id"], first["jobs"][0]["entry_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_listed_set_and_removed_over_http() {
    let env = TestEnv::start().await;
    let api = serve_admin(&env.client, AdminConfig::with_token(TOKEN)).await;
    let worker = support::spawn(
        Worker::builder(env.client.clone())
            .handler(mail::handler())
            .build()
            .expect("worker"),
    );
    // Limits on a job type need a live worker that handles it.
    eventually(Duration::from_secs(10), "the worker is live", || async {
        let (_, w) = get(&api, "/api/v1/workers").await;
        w.as_array()
            .is_some_and(|w| w.iter().any(|w| w["job_types"] == json!(["adm.mail"])))
    })
    .await;
    let body = json!({ "rate": "5/s burst 1", "max_running": 2 });
    let bytes = serde_json::to_vec(&body).expect("json");
    let (code, _) = call(
        &api,
        "POST",
        "/api/v1/limits/type/adm.mail",
        None,
        Some(&bytes),
    )
    .await;
    assert_eq!(code, 401, "a change needs the token");
    let (code, row) = post(&api, "/api/v1/limits/type/adm.mail", body).await;
    assert_eq!(code, 200, "{row}");
    assert_eq!(
        (
            &row["scope"],
            &row["name"],
            &row["rate"],
            &row["burst"],
            &row["max_running"]
        ),
        (
            &json!("type"),
            &json!("adm.mail"),
            &json!("5/1s burst 1"),
            &json!(1),
            &json!(2)
        )
    );
    assert_eq!(row["rate_per_second"], json!(5.0));
    for (path, body, what) in [
        (
            "/api/v1/limits/type/adm.nope",
            json!({ "rate": "5/s" }),
            "unknown job type",
        ),
        (
            "/api/v1/limits/type/adm.mail",
            json!({ "rate": "0/s" }),
            "lets nothing run",
        ),
        (
            "/api/v1/limits/type/adm.mail",
            json!({ "max_running": 0 }),
            "lets nothing run",
        ),
        (
            "/api/v1/limits/type/adm.mail",
            json!({ "max_running": -1 }),
            "whole number",
        ),
        (
            "/api/v1/limits/type/adm.mail",
            json!({ "rate": 5 }),
            "a string like",
        ),
        (
            "/api/v1/limits/type/adm.mail",
            json!({ "burst": 5 }),
            "unknown field",
        ),
        (
            "/api/v1/limits/type/adm.mail",
            json!({}),
            "nothing to change",
        ),
        (
            "/api/v1/limits/tenant/acme",
            json!({ "rate": "5/s" }),
            "use queue, type or key",
        ),
    ] {
        let (code, err) = post(&api, path, body.clone()).await;
        assert_eq!(code, 422, "{path} {body}: {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{path} {body}: {message}");
    }
    // Workers follow: three mails at 5/s, one at a time, take 0.4 s at least.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let started = std::time::Instant::now();
    let ids = env
        .client
        .enqueue_bulk((0..3).map(|i| {
            mail::job(Mail {
                to: format!("m{i}"),
            })
        }))
        .await
        .expect("enqueue");
    for id in &ids {
        let s = env
            .client
            .wait_for(id.as_str(), Duration::from_secs(10))
            .await
            .expect("status")
            .expect("known");
        assert_eq!(s.state, stevedore::JobState::Succeeded);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(380),
        "{:?}",
        started.elapsed()
    );
    // The list shows what each limit holds on the queue that used it. A job gives its
    // place back once its task ends, after its acknowledgement: wait for that.
    eventually(
        Duration::from_secs(10),
        "every place given back",
        || async { get(&api, "/api/v1/limits").await.1[0]["queues"][0]["running"] == json!(0) },
    )
    .await;
    let (code, list) = get(&api, "/api/v1/limits").await;
    assert_eq!(code, 200);
    let rows = list.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{list}");
    let on = &rows[0]["queues"][0];
    assert_eq!(on["queue"], json!("mail"), "{list}");
    assert_eq!(on["running"], json!(0), "{list}");
    assert!(
        on["tokens"]
            .as_f64()
            .is_some_and(|t| (0.0..=1.0).contains(&t)),
        "{list}"
    );
    // A queue's limit needs no live worker; removing one leaves the other.
    let (code, row) = post(
        &api,
        "/api/v1/limits/queue/mail",
        json!({ "max_running": 1 }),
    )
    .await;
    assert_eq!((code, &row["max_running"]), (200, &json!(1)), "{row}");
    let (code, row) = post(
        &api,
        "/api/v1/limits/type/adm.mail",
        json!({ "rate": null }),
    )
    .await;
    assert_eq!(
        (code, &row["rate"], &row["max_running"]),
        (200, &json!(null), &json!(2))
    );
    let (code, _) = call(
        &api,
        "DELETE",
        "/api/v1/limits/type/adm.mail",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call(
        &api,
        "DELETE",
        "/api/v1/limits/queue/mail",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (_, list) = get(&api, "/api/v1/limits").await;
    assert_eq!(list, json!([]));
    worker.shutdown().await.expect("clean stop");
}
