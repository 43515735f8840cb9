use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use crate::support::{Env, queue_info};

/// Sends one HTTP/1.1 request; returns the status code and the body.
async fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Starts `stevedore serve` and returns it with the address it printed.
async fn serve(env: &Env, args: &[&str]) -> (Child, String) {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut child = env
        .command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("serve prints its address in time")
    .expect("reads stdout");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (child, addr)
}

/// Stops a child this test started and returns what it wrote on stderr.
async fn stop(mut child: Child) -> String {
    child.start_kill().expect("kill");
    let out = child.wait_with_output().await.expect("child exits");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn serve_answers_the_api_and_refuses_open_non_loopback_addresses() {
    let env = Env::start().await;
    let id = env.ok(&["enqueue", "x.y", "-q", "served"]).await;
    let id = id.trim();

    let (child, addr) = serve(&env, &["--addr", "127.0.0.1:0", "--token", "s3cret"]).await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    // Reads need the token too.
    let (status, body) = http(&addr, "GET", "/api/v1/stats", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(&addr, "GET", "/api/v1/stats", Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).expect("JSON stats");
    assert_eq!(stats["queues"], 1);
    assert_eq!(stats["ready"], 1);
    // The CLI and the API show a job the same way.
    let (status, body) = http(&addr, "GET", &format!("/api/v1/jobs/{id}"), Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).expect("JSON status");
    assert_eq!(api, env.json(&["job", id]).await);
    // Changes need the token.
    let (status, _) = http(&addr, "POST", "/api/v1/queues/served/pause", None).await;
    assert_eq!(status, 401);
    let (status, _) = http(&addr, "POST", "/api/v1/queues/served/pause", Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(
        queue_info(&env.json(&["queues"]).await, "served")["paused"],
        true
    );
    stop(child).await;

    env.fails(&["serve", "--addr", "0.0.0.0:0"], 2, "--allow-no-token")
        .await;
    env.fails(&["serve", "--addr", "[::]:0", "--token", ""], 2, "--token")
        .await;

    let (child, addr) = serve(&env, &["--addr", "0.0.0.0:0", "--allow-no-token"]).await;
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    let port = addr.rsplit(':').next().expect("a port");
    let (status, _) = http(&format!("127.0.0.1:{port}"), "GET", "/api/v1/queues", None).await;
    assert_eq!(status, 200);
    let stderr = stop(child).await;
    assert!(stderr.contains("NO TOKEN"), "no warning: {stderr}");
}
