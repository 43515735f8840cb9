//! `rediss://` against Debian's `redis-server` serving TLS: jobs run over it, a private CA
//! and mutual TLS work, and nothing ever falls back to plain TCP: an untrusted server, a
//! plain port, or TLS options with a `redis://` URL are refused.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::{Client, JobContext, JobError, JobState, Worker, job_handler};
use stevedore_testcontainers::{RedisServer, TestCerts, free_port};

use crate::support;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Secret {
    n: u32,
}

#[job_handler(name = "tls.job", queue = "tls")]
async fn tls_job(s: Secret, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), s.n);
    Ok(())
}

/// A TLS server (and its plain port, for the checks), with `requirepass` when given.
async fn tls_server(
    certs: &TestCerts,
    client_auth: bool,
    password: Option<&str>,
) -> (RedisServer, u16) {
    let port = free_port().expect("a free port");
    let server = certs
        .tls_args(RedisServer::builder(), port, client_auth)
        .start()
        .await
        .expect("redis-server with TLS");
    if let Some(p) = password {
        // Set once the server is up: the builder's readiness check PINGs without one.
        let raw = support::raw_client(&server.url()).await;
        let _: () = fred::prelude::ConfigInterface::config_set(&raw, "requirepass", p)
            .await
            .expect("CONFIG SET requirepass");
    }
    (server, port)
}

/// `connect` under a deadline: an error (or a hang) is a refusal.
async fn connect(b: stevedore::ClientBuilder) -> stevedore::Result<Client> {
    match tokio::time::timeout(Duration::from_secs(30), b.connect()).await {
        Ok(r) => r,
        Err(_) => panic!("connect neither succeeded nor failed within 30 s"),
    }
}

#[tokio::test]
async fn jobs_run_over_tls_with_a_private_ca() {
    let certs = TestCerts::generate().expect("certificates");
    let (_server, port) = tls_server(&certs, false, None).await;
    let client = connect(
        Client::builder(&format!("rediss://127.0.0.1:{port}"))
            .prefix("tls")
            .tls_ca_file(certs.ca()),
    )
    .await
    .expect("a TLS connection with the CA file");
    let running = support::spawn(
        Worker::builder(client.clone())
            .handler(tls_job::handler())
            .build()
            .expect("worker"),
    );
    let id = client
        .enqueue(tls_job::job(Secret { n: 7 }))
        .await
        .expect("enqueue over TLS");
    let status = client
        .wait_for(id.as_str(), Duration::from_secs(15))
        .await
        .expect("status")
        .expect("final");
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(support::values::<u32>(id.as_str()), vec![7]);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn mutual_tls_and_a_password_work_and_a_missing_client_certificate_is_refused() {
    let certs = TestCerts::generate().expect("certificates");
    let (_server, port) = tls_server(&certs, true, Some("pw-1")).await;
    let url = format!("rediss://:pw-1@127.0.0.1:{port}");
    let client = connect(
        Client::builder(&url)
            .tls_ca_file(certs.ca())
            .tls_client_cert(certs.client_cert(), certs.client_key()),
    )
    .await
    .expect("mutual TLS with a password");
    client
        .queue_stats("q")
        .await
        .expect("a call over mutual TLS");

    let refused = connect(Client::builder(&url).tls_ca_file(certs.ca())).await;
    assert!(refused.is_err(), "a server asking for a client certificate");
    let wrong_password = connect(
        Client::builder(&format!("rediss://:nope@127.0.0.1:{port}"))
            .tls_ca_file(certs.ca())
            .tls_client_cert(certs.client_cert(), certs.client_key()),
    )
    .await;
    assert!(wrong_password.is_err());
}

#[tokio::test]
async fn tls_never_falls_back_to_plain_tcp() {
    let certs = TestCerts::generate().expect("certificates");
    let (server, port) = tls_server(&certs, false, None).await;
    // A server whose certificate nobody here trusts (no CA file: system roots only).
    let untrusted = connect(Client::builder(&format!("rediss://127.0.0.1:{port}"))).await;
    let err = untrusted.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(!err.is_empty(), "an untrusted server was accepted");

    // A rediss:// URL pointing at a plain port: refused, not connected in clear.
    let plain = connect(
        Client::builder(&format!("rediss://127.0.0.1:{}", server.port())).tls_ca_file(certs.ca()),
    )
    .await;
    assert!(plain.is_err(), "rediss:// connected to a plain port");

    // TLS options with a plain URL: the caller expects TLS; a clear error, no connection.
    let mixed = connect(
        Client::builder(&format!("redis://127.0.0.1:{}", server.port())).tls_ca_file(certs.ca()),
    )
    .await;
    match mixed {
        Err(stevedore::Error::InvalidConfig(m)) => assert!(m.contains("rediss://"), "{m}"),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
    // Files that are not there, or not certificates.
    let missing = connect(
        Client::builder(&format!("rediss://127.0.0.1:{port}")).tls_ca_file("/nonexistent/ca.pem"),
    )
    .await;
    match missing {
        Err(stevedore::Error::InvalidConfig(m)) => {
            assert!(m.contains("/nonexistent/ca.pem"), "{m}")
        }
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
    let not_a_cert = connect(
        Client::builder(&format!("rediss://127.0.0.1:{port}")).tls_ca_file(certs.client_key()),
    )
    .await;
    assert!(
        matches!(not_a_cert, Err(stevedore::Error::InvalidConfig(_))),
        "a key file given as the CA"
    );
}
