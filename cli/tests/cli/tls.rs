use stevedore_testcontainers::{RedisServer, TestCerts, free_port};

use crate::support::Env;

/// The CLI speaks TLS to a rediss:// URL with --tls-ca-file (and a client certificate when
/// the server asks for one); without the CA it refuses the server rather than go plain.
#[tokio::test]
async fn the_cli_connects_over_tls_with_a_private_ca() {
    let env = Env::start().await;
    let certs = TestCerts::generate().expect("certificates");
    let port = free_port().expect("a free port");
    let _server = certs
        .tls_args(RedisServer::builder(), port, true)
        .start()
        .await
        .expect("redis-server with TLS");
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = certs.ca().to_string_lossy().into_owned();
    let cert = certs.client_cert().to_string_lossy().into_owned();
    let key = certs.client_key().to_string_lossy().into_owned();
    let out = env
        .ok(&[
            "--redis-url",
            &url,
            "--tls-ca-file",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--json",
            "stats",
        ])
        .await;
    assert!(out.contains("\"queues\""), "{out}");
    let refused = env.run(&["--redis-url", &url, "stats"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    let usage = env
        .run(&["--redis-url", &url, "--tls-cert", &cert, "stats"])
        .await;
    assert_eq!(
        usage.code,
        Some(2),
        "--tls-cert without --tls-key: {usage:?}"
    );
}

/// A rediss:// URL without TLS options uses the system's roots through the library's own
/// TLS setup (ring, readable roots only). `SSL_CERT_FILE` makes the test CA a system root
/// for the child process alone, and `SSL_CERT_DIR` names a directory that does not exist: a
/// root that cannot be read is skipped, not fatal (the client library's default setup
/// refused to connect at all). Without the CA the same URL is refused.
#[tokio::test]
async fn a_plain_rediss_url_trusts_the_system_roots() {
    let env = Env::start().await;
    let certs = TestCerts::generate().expect("certificates");
    let port = free_port().expect("a free port");
    let _server = certs
        .tls_args(RedisServer::builder(), port, false)
        .start()
        .await
        .expect("redis-server with TLS");
    let url = format!("rediss://127.0.0.1:{port}");
    let args = ["--redis-url", url.as_str(), "--json", "stats"];
    let trusted = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        env.command(&args)
            .env("SSL_CERT_FILE", certs.ca())
            .env("SSL_CERT_DIR", "/nonexistent/stevedore-test-certs")
            .output(),
    )
    .await
    .expect("the CLI finishes")
    .expect("the binary runs");
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("\"queues\""));
    let untrusted = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        env.command(&args).env_remove("SSL_CERT_FILE").output(),
    )
    .await
    .expect("the CLI finishes")
    .expect("the binary runs");
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "a private CA is not a system root"
    );
}
