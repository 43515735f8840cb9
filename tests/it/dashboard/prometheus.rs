//! A `prometheus` server as a child process, and the little HTTP the dashboard tests speak.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ALERTS, Query, exposed_names, repo_path};

/// True when a `prometheus` binary is on `PATH`. Without one the test is skipped loudly,
/// or fails when `STEVEDORE_REQUIRE_PROMETHEUS=1` (CI).
pub(super) fn prometheus_available(test: &str) -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    assert!(
        std::env::var("STEVEDORE_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
        "STEVEDORE_REQUIRE_PROMETHEUS=1 but there is no `prometheus` on PATH \
         (Debian: apt-get install prometheus)"
    );
    eprintln!(
        "\n==================== SKIPPED {test} ====================\n\
         no `prometheus` on PATH (Debian: apt-get install prometheus); \
         set STEVEDORE_REQUIRE_PROMETHEUS=1 to make this a failure\n"
    );
    false
}

/// A `prometheus` child process scraping one target every second with the alert rules
/// loaded, in its own temp dir; killed on drop.
pub(super) struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub(super) fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        // JSON is YAML, and quotes the path for us.
        let settings = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [repo_path(ALERTS).display().to_string()],
            "scrape_configs": [{
                "job_name": "stevedore",
                "static_configs": [{"targets": [target.to_string()]}],
            }],
        });
        std::fs::write(&config, settings.to_string()).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, dir }
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("prometheus log (last lines):\n{tail}")
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status})\n{}", self.log_tail());
        }
    }

    /// The `data` of a successful API answer, or why there is none.
    async fn api(&self, target: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.addr, target).await?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {target} answered {status}, not JSON ({e}): {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("GET {target} answered {status}: {body}"))
        }
    }

    pub(super) async fn wait_for_target_up(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            let last = match self.api("/api/v1/targets").await {
                Ok(data) => {
                    let targets = data["activeTargets"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if !targets.is_empty() && targets.iter().all(|t| t["health"] == "up") {
                        return;
                    }
                    format!("targets: {targets:?}")
                }
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape the worker within {timeout:?}; last: {last}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn query(&self, promql: &str) -> Answer {
        let target = format!("/api/v1/query?query={}", url_encode(promql));
        match http_get(self.addr, &target).await {
            Err(e) => Answer::Unreachable(e),
            Ok((400 | 422, body)) => Answer::Invalid(body),
            Ok((200, body)) => match serde_json::from_str::<Value>(&body) {
                Ok(v) if v["status"] == "success" => match v["data"]["result"].as_array() {
                    Some(r) if !r.is_empty() => Answer::Data,
                    _ => Answer::Empty,
                },
                _ => Answer::Invalid(body),
            },
            Ok((status, body)) => Answer::Unreachable(format!("{status}: {body}")),
        }
    }

    /// Queries each of `queries` until it returns data; fails naming those that never did
    /// within `timeout`, with what the exporter at `exporter` serves.
    pub(super) async fn assert_queries_return_data(
        &self,
        queries: Vec<Query>,
        exporter: SocketAddr,
        timeout: Duration,
    ) {
        let total = queries.len();
        let mut waiting: Vec<(Query, String)> = queries
            .into_iter()
            .map(|q| (q, "not asked yet".to_string()))
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let mut still = Vec::new();
            for (q, _) in waiting {
                match self.query(&q.promql).await {
                    Answer::Data => {}
                    Answer::Empty => still.push((q, "empty result".to_string())),
                    Answer::Unreachable(e) => still.push((q, e)),
                    Answer::Invalid(e) => panic!(
                        "Prometheus rejects the query of {}:\n  {}\n  as sent: {}\n  error: {e}",
                        q.place, q.expr, q.promql
                    ),
                }
            }
            waiting = still;
            if waiting.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let mut report = String::new();
                for (q, last) in &waiting {
                    let _ = write!(
                        report,
                        "\n  {}:\n    {}\n    as sent: {}\n    last answer: {last}",
                        q.place, q.expr, q.promql
                    );
                }
                let exposed = match http_get(exporter, "/metrics").await {
                    Ok((_, text)) => exposed_names(&text)
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(" "),
                    Err(e) => e,
                };
                panic!(
                    "{} of {total} dashboard queries returned no data within {timeout:?}:{report}\n\
                     the exporter serves: {exposed}\n{}",
                    waiting.len(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub(super) async fn wait_for_rules_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let data = self.api("/api/v1/rules").await.expect("GET /api/v1/rules");
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            assert!(
                !rules.is_empty(),
                "prometheus loaded no rules from {ALERTS}"
            );
            for r in &rules {
                assert!(
                    r["health"] != "err",
                    "alert {} fails to evaluate: {}",
                    r["name"],
                    r["lastError"]
                );
            }
            if rules.iter().all(|r| r["health"] == "ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "alert rules not evaluated within {timeout:?}: {rules:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Answer {
    /// A non-empty result.
    Data,
    /// A successful answer without series.
    Empty,
    /// Not answered (yet): connection refused, timeout, server error.
    Unreachable(String),
    /// Prometheus rejects the query itself.
    Invalid(String),
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `GET target` over HTTP/1.1 on a fresh connection: the status and the body. Small on
/// purpose: the test needs no HTTP client dependency for two local servers.
pub(super) async fn http_get(addr: SocketAddr, target: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET {target}: no answer within 10 s"))?
        .map_err(|e| format!("GET {target}: {e}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("GET {target}: the answer has no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {target}: no status in {head:?}"))?;
    let body = &raw[end + 4..];
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body).map_err(|e| format!("GET {target}: {e}"))?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The payload of a chunked body.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut off")?;
        let line = String::from_utf8_lossy(&rest[..line_end]);
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(hex, 16).map_err(|e| format!("chunk size {hex:?}: {e}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("a chunk is cut off")?);
        rest = rest.get(size + 2..).ok_or("a chunk is cut off")?;
    }
}
