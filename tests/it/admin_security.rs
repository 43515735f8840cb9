//! The admin server refuses what another web site makes a browser send, answers only for
//! the hosts it knows, guards reads with its token, serves loopback clients only when it
//! has no token, bounds what one list returns, and answers every error as JSON.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use stevedore::admin::{AdminConfig, LIST_PAGE_BYTES};
use tokio::io::AsyncWriteExt;

use crate::support::{TestEnv, exchange, read_response, serve_admin};

const TOKEN: &str = "t0ken";
const READ: &str = "read-only";

/// Makes queue `q` known (one job enqueued), so pause and dead-letter calls find it.
async fn known_queue(env: &TestEnv, q: &str) {
    env.client
        .enqueue(stevedore::RawJob::new("sec.noop", q, &0).expect("job"))
        .await
        .expect("enqueue");
}

#[tokio::test]
async fn requests_another_site_makes_a_browser_send_are_refused() {
    let env = TestEnv::start().await;
    known_queue(&env, "q").await;
    // The default a user without a token gets: loopback clients, no token.
    let s = serve_admin(&env.client, AdminConfig::loopback_only()).await;
    let host = format!("Host: {}", s.addr);
    let pause = "POST /api/v1/queues/q/pause HTTP/1.1";
    let cases: Vec<(&str, String, &[u8], u16)> = vec![
        // A plain HTML form on another site.
        (
            "form post",
            format!(
                "{pause}\r\n{host}\r\nOrigin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/x-www-form-urlencoded"
            ),
            b"a=1",
            403,
        ),
        // fetch() from another site without a body (no content type at all).
        (
            "no-cors fetch",
            format!(
                "{pause}\r\n{host}\r\nOrigin: http://evil.example\r\nSec-Fetch-Site: cross-site"
            ),
            b"",
            403,
        ),
        // An older browser: only Origin says where it comes from.
        (
            "origin only",
            format!(
                "{pause}\r\n{host}\r\nOrigin: http://evil.example:{}",
                s.addr.port()
            ),
            b"",
            403,
        ),
        (
            "sibling site",
            format!("{pause}\r\n{host}\r\nSec-Fetch-Site: same-site"),
            b"",
            403,
        ),
        // A script without a browser, sending a form type: not JSON.
        (
            "not json",
            format!("{pause}\r\n{host}\r\nContent-Type: text/plain"),
            b"{}",
            415,
        ),
    ];
    for (name, head, body, status) in cases {
        let (code, _, json) = exchange(s.addr, &head, body).await;
        assert_eq!(code, status, "{name}: {json}");
        assert!(json["error"].is_string(), "{name}: a JSON error: {json}");
    }
    assert!(
        !env.client.admin().is_paused("q").await.expect("paused?"),
        "nothing was paused"
    );
    // The page itself, and a script, may.
    let same = format!(
        "{pause}\r\n{host}\r\nOrigin: http://{}\r\nSec-Fetch-Site: same-origin",
        s.addr
    );
    assert_eq!(exchange(s.addr, &same, b"").await.0, 200);
    let script = format!("{pause}\r\n{host}");
    assert_eq!(exchange(s.addr, &script, b"").await.0, 200);
}

#[tokio::test]
async fn only_known_hosts_are_answered() {
    let env = TestEnv::start().await;
    let s = serve_admin(
        &env.client,
        AdminConfig::with_token(TOKEN).allowed_hosts(["jobs.example.com"]),
    )
    .await;
    let get = |host: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}")
    };
    // DNS rebinding: a name that resolves to this machine, but not ours.
    let (code, _, json) = exchange(s.addr, &get("evil.example:8080", "/api/v1/stats"), b"").await;
    assert_eq!(
        (code, json["error"].as_str()),
        (403, Some("host_not_allowed"))
    );
    assert_eq!(
        exchange(s.addr, &get("evil.example", "/"), b"").await.0,
        403
    );
    for ok in [
        s.addr.to_string(),
        format!("localhost:{}", s.addr.port()),
        "jobs.example.com".to_string(),
    ] {
        assert_eq!(
            exchange(s.addr, &get(&ok, "/api/v1/stats"), b"").await.0,
            200,
            "{ok}"
        );
    }
    // Probes come by service names and hold no job data.
    assert_eq!(
        exchange(s.addr, &get("admin.internal", "/healthz"), b"")
            .await
            .0,
        200
    );
    let any = serve_admin(&env.client, AdminConfig::with_token(TOKEN).allow_any_host()).await;
    assert_eq!(
        exchange(any.addr, &get("evil.example", "/api/v1/stats"), b"")
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_token_guards_reads_and_a_read_token_only_reads() {
    let env = TestEnv::start().await;
    known_queue(&env, "q").await;
    let s = serve_admin(&env.client, AdminConfig::with_token(TOKEN).read_token(READ)).await;
    let req = |method: &str, path: &str, token: Option<&str>| {
        let mut h = format!("{method} {path} HTTP/1.1\r\nHost: {}", s.addr);
        if let Some(t) = token {
            h.push_str(&format!("\r\nAuthorization: Bearer {t}"));
        }
        h
    };
    let dlq = "/api/v1/queues/q/dlq";
    assert_eq!(exchange(s.addr, &req("GET", dlq, None), b"").await.0, 401);
    assert_eq!(
        exchange(s.addr, &req("GET", dlq, Some("nope")), b"")
            .await
            .0,
        401
    );
    assert_eq!(
        exchange(s.addr, &req("GET", dlq, Some(READ)), b"").await.0,
        200
    );
    assert_eq!(
        exchange(s.addr, &req("GET", dlq, Some(TOKEN)), b"").await.0,
        200
    );
    let pause = "/api/v1/queues/q/pause";
    let (code, _, json) = exchange(s.addr, &req("POST", pause, Some(READ)), b"").await;
    assert_eq!(code, 401, "{json}");
    assert!(!env.client.admin().is_paused("q").await.expect("paused?"));
    assert_eq!(
        exchange(s.addr, &req("POST", pause, Some(TOKEN)), b"")
            .await
            .0,
        200
    );
    // Open without a token: the page, the API's description, and the probes.
    for open in ["/", "/api/v1/openapi.json", "/healthz", "/metrics"] {
        assert_eq!(
            exchange(s.addr, &req("GET", open, None), b"").await.0,
            200,
            "{open}"
        );
    }
}

#[tokio::test]
async fn without_a_token_only_clients_on_this_machine_are_served() {
    use tower::ServiceExt as _;
    let env = TestEnv::start().await;
    let app = stevedore::admin::router(env.client.admin(), AdminConfig::loopback_only());
    let call = |peer: Option<&str>| {
        let mut req = axum::http::Request::get("/api/v1/stats")
            .header("host", "127.0.0.1:8080")
            .body(axum::body::Body::empty())
            .expect("request");
        if let Some(p) = peer {
            let addr: SocketAddr = p.parse().expect("addr");
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(addr));
        }
        app.clone().oneshot(req)
    };
    let status = |r: Result<axum::response::Response, std::convert::Infallible>| {
        r.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    assert_eq!(status(call(Some("127.0.0.1:50000")).await), 200);
    assert_eq!(status(call(Some("[::1]:50000")).await), 200);
    assert_eq!(status(call(Some("192.0.2.7:50000")).await), 403);
    // Mounted where the peer is unknown: refused rather than guessed.
    assert_eq!(status(call(None).await), 403);
    let open = stevedore::admin::router(env.client.admin(), AdminConfig::insecure_no_auth());
    let req = axum::http::Request::get("/api/v1/stats")
        .header("host", "127.0.0.1:8080")
        .body(axum::body::Body::empty())
        .expect("request");
    assert_eq!(status(open.oneshot(req).await), 200);
}

#[tokio::test]
async fn a_list_of_large_dead_letters_stays_small_and_pages_through_all_of_them() {
    let env = TestEnv::start().await;
    known_queue(&env, "big").await;
    // 40 dead letters of about 1 MB each (under the 1 MiB payload limit), written as the
    // worker writes them.
    let payload = rmp_serde::to_vec_named(&"x".repeat(1_000_000)).expect("encode");
    let dlq = env.dlq("big");
    for n in 0..40 {
        let fields: Vec<(&str, fred::types::Value)> = vec![
            ("id", format!("job-{n}").into()),
            ("type", "sec.big".into()),
            ("attempt", "1".into()),
            ("max_attempts", "1".into()),
            ("enqueued_at", "1700000000000".into()),
            ("payload", fred::types::Value::Bytes(payload.clone().into())),
            ("reason", "failed".into()),
            ("error", "too big to list".into()),
        ];
        let _: String =
            fred::prelude::StreamsInterface::xadd(&env.raw, dlq.as_str(), false, None, "*", fields)
                .await
                .expect("xadd");
    }
    let s = serve_admin(&env.client, AdminConfig::with_token(TOKEN)).await;
    let get = |path: String| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}",
            s.addr
        )
    };
    let mut seen = std::collections::HashSet::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &before {
            Some(b) => format!("/api/v1/queues/big/dlq?limit=1000&before={b}"),
            None => "/api/v1/queues/big/dlq?limit=1000".to_string(),
        };
        let (code, body, json) = exchange(s.addr, &get(path), b"").await;
        assert_eq!(code, 200, "{json}");
        assert!(
            body.len() <= LIST_PAGE_BYTES + 64 * 1024,
            "a page of {} bytes",
            body.len()
        );
        pages += 1;
        for j in json["jobs"].as_array().expect("jobs") {
            assert_eq!(j["payload"], Value::Null);
            assert_eq!(j["payload_truncated"], true);
            assert_eq!(j["payload_bytes"].as_u64(), Some(payload.len() as u64));
            seen.insert(j["entry_id"].as_str().expect("id").to_string());
        }
        match json["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => break,
        }
        assert!(pages < 50, "paging does not end");
    }
    assert_eq!(seen.len(), 40, "every dead letter is on some page");
    println!(
        "admin_security: 40 dead letters of 1 MB listed in {pages} page(s) of at most {LIST_PAGE_BYTES} bytes"
    );
    // One entry whole, on its own endpoint.
    let one = seen.iter().next().expect("an entry").clone();
    let (code, _, json) =
        exchange(s.addr, &get(format!("/api/v1/queues/big/dlq/{one}")), b"").await;
    assert_eq!(code, 200);
    assert_eq!(json["payload"].as_str().map(str::len), Some(1_000_000));
    // The dashboard's list: no payloads at all.
    known_queue(&env, "small").await;
    let (_, _, json) = exchange(
        s.addr,
        &get("/api/v1/queues/big/dlq?limit=2&payloads=false".into()),
        b"",
    )
    .await;
    assert_eq!(json["jobs"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn oversized_and_slow_bodies_get_json_errors() {
    let env = TestEnv::start().await;
    let s = serve_admin(
        &env.client,
        AdminConfig::with_token(TOKEN).request_timeout(Duration::from_secs(1)),
    )
    .await;
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json",
        s.addr
    );
    let big = vec![b' '; 1024 * 1024 + 1];
    let (code, _, json) = exchange(s.addr, &head, &big).await;
    assert_eq!(
        (code, json["error"].as_str()),
        (413, Some("payload_too_large")),
        "{json}"
    );

    // A body that trickles in: the request timeout, not a Redis error.
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let req = format!("{head}\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{{\"type\"");
    c.write_all(req.as_bytes()).await.expect("write");
    let (code, _, json) = read_response(&mut c).await;
    assert_eq!(
        (code, json["error"].as_str()),
        (408, Some("timeout")),
        "{json}"
    );

    // A method a path does not take: JSON too.
    let (code, _, json) = exchange(
        s.addr,
        &format!(
            "DELETE /api/v1/stats HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}",
            s.addr
        ),
        b"",
    )
    .await;
    assert_eq!(code, 405);
    assert!(json["error"].is_string(), "{json}");
}
