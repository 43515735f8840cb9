use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use serde_json::Value as Json;
use stevedore::Worker;
use stevedore::admin::AdminConfig;
use stevedore_testcontainers::TestRedis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One test's Redis, a client on it, and a raw connection for inspecting keys.
pub(crate) struct TestEnv {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) client: stevedore::Client,
    pub(crate) raw: fred::prelude::Client,
    /// The server when this env started one (`None` for a server the test owns).
    _redis: Option<TestRedis>,
}

impl TestEnv {
    pub(crate) async fn start() -> TestEnv {
        let redis = TestRedis::start().await.expect("a test redis");
        let mut env = TestEnv::on(redis.url()).await;
        env._redis = Some(redis);
        env
    }

    /// An env on a server the test runs itself (to kill and restart it).
    pub(crate) async fn on(url: &str) -> TestEnv {
        let url = url.to_string();
        let prefix = format!("t{:08x}", rand::random::<u32>());
        let client = stevedore::Client::builder(&url)
            .prefix(&prefix)
            .connect()
            .await
            .expect("client connects");
        let raw = raw_client(&url).await;
        TestEnv {
            url,
            prefix,
            client,
            raw,
            _redis: None,
        }
    }

    /// A client with other settings on the same Redis and prefix.
    pub(crate) async fn client_with(
        &self,
        f: impl FnOnce(stevedore::ClientBuilder) -> stevedore::ClientBuilder,
    ) -> stevedore::Client {
        f(stevedore::Client::builder(&self.url).prefix(&self.prefix))
            .connect()
            .await
            .expect("client connects")
    }

    /// The key of a ready stream, spelled as the README documents it.
    pub(crate) fn stream(&self, queue: &str, priority: &str) -> String {
        format!("{}:{{{queue}}}:{priority}", self.prefix)
    }

    pub(crate) fn dlq(&self, queue: &str) -> String {
        format!("{}:{{{queue}}}:dlq", self.prefix)
    }

    pub(crate) async fn xlen(&self, key: &str) -> u64 {
        self.raw.xlen(key).await.expect("XLEN")
    }

    /// Entries in the ready streams of `queue`, all priorities.
    pub(crate) async fn ready(&self, queue: &str) -> u64 {
        let mut n = 0;
        for p in ["high", "normal", "low"] {
            n += self.xlen(&self.stream(queue, p)).await;
        }
        n
    }

    /// Pending (delivered, unacknowledged) entries of `queue`, all priorities. A stream
    /// without the group counts 0; any other error fails the test.
    pub(crate) async fn pending(&self, queue: &str) -> u64 {
        let mut n = 0;
        for p in ["high", "normal", "low"] {
            let summary: Result<Value, _> = self
                .raw
                .xpending(self.stream(queue, p), "stevedore", ())
                .await;
            match summary {
                Ok(Value::Array(parts)) => n += parts.first().and_then(|v| v.as_u64()).unwrap_or(0),
                Ok(other) => panic!("unexpected XPENDING reply {other:?}"),
                Err(e) if e.details().starts_with("NOGROUP") => {}
                Err(e) => panic!("XPENDING failed: {e}"),
            }
        }
        n
    }

    /// A job's state, `None` when it has no status.
    pub(crate) async fn state(&self, id: &str) -> Option<stevedore::JobState> {
        self.client
            .status(id)
            .await
            .expect("status")
            .map(|s| s.state)
    }

    /// The DLQ entries of `queue`, oldest first, with their fields as text (the payload
    /// lossily).
    pub(crate) async fn dead_letters(&self, queue: &str) -> Vec<HashMap<String, String>> {
        let entries: Vec<(String, HashMap<String, Value>)> = self
            .raw
            .xrange_values(self.dlq(queue), "-", "+", None)
            .await
            .expect("XRANGE dlq");
        entries
            .into_iter()
            .map(|(_, fields)| {
                fields
                    .into_iter()
                    .map(|(k, v)| {
                        let text = v
                            .as_bytes()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default();
                        (k, text)
                    })
                    .collect()
            })
            .collect()
    }
}

pub(crate) async fn raw_client(url: &str) -> fred::prelude::Client {
    let mut builder = Builder::from_config(Config::from_url(url).expect("url"));
    // Reconnects on its own (the durability tests restart Redis under it), and never waits
    // on a dead connection for long.
    builder
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5));
    let raw = builder.build().expect("raw client");
    raw.init().await.expect("raw client connects");
    raw
}

/// Polls `check` every 10 ms until it is true; panics with `what` after `timeout`.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// Polls `check` every 10 ms until it returns a value, and returns that value; panics with
/// `what` after `timeout`.
pub(crate) async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many connections are blocked in XREADGROUP right now: worker read loops waiting
/// for jobs.
pub(crate) async fn blocked_readers(env: &TestEnv) -> usize {
    let list: String = env
        .raw
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["LIST"],
        )
        .await
        .unwrap_or_default();
    list.lines()
        .filter(|l| l.contains("cmd=xreadgroup") && l.split_whitespace().any(|f| f == "flags=b"))
        .count()
}

/// Waits until no connection has been blocked in XREADGROUP for `quiet` straight, i.e. the
/// read loops of the workers on `env` fetch nothing any more (their queue is paused). A
/// read loop that still fetches is blocked in its read at every poll (every 10 ms) but for
/// the moment between one read and the next; `quiet` only has to be clearly longer than
/// that moment. Panics after `timeout`.
pub(crate) async fn readers_quiet(env: &TestEnv, quiet: Duration, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut unblocked_since: Option<Instant> = None;
    loop {
        if blocked_readers(env).await > 0 {
            unblocked_since = None;
        } else if unblocked_since.get_or_insert_with(Instant::now).elapsed() >= quiet {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for the read loops to stop reading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A worker running in the background, stopped by cancelling its token.
pub(crate) struct Running {
    pub(crate) stop: CancellationToken,
    pub(crate) handle: JoinHandle<stevedore::Result<()>>,
}

impl Running {
    pub(crate) async fn shutdown(self) -> stevedore::Result<()> {
        self.stop.cancel();
        self.handle.await.expect("worker task")
    }
}

pub(crate) fn spawn(worker: Worker) -> Running {
    let stop = CancellationToken::new();
    let signal = stop.clone().cancelled_owned();
    let handle = tokio::spawn(worker.run_until(signal));
    Running { stop, handle }
}

/// What handlers saw, by job id: tests share one process, job ids keep them apart.
type Seen = HashMap<String, Vec<Box<dyn Any + Send>>>;
static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();

fn seen() -> std::sync::MutexGuard<'static, Seen> {
    SEEN.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Records that job `id` ran with `value`.
pub(crate) fn record<T: Any + Send>(id: &str, value: T) {
    seen()
        .entry(id.to_string())
        .or_default()
        .push(Box::new(value));
}

/// How many times job `id` ran.
pub(crate) fn runs(id: &str) -> usize {
    seen().get(id).map_or(0, Vec::len)
}

/// The values job `id` ran with.
pub(crate) fn values<T: Any + Clone>(id: &str) -> Vec<T> {
    seen()
        .get(id)
        .map(|v| {
            v.iter()
                .filter_map(|b| b.downcast_ref::<T>().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// The `worker` example, built by `cargo test` next to the test binaries.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", name])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building example {name} failed");
    }
    bin
}

pub(crate) struct WorkerProcess(Child);

impl WorkerProcess {
    pub(crate) fn start(env: &TestEnv, extra: &[&str]) -> WorkerProcess {
        WorkerProcess::start_on(&env.url, &env.prefix, extra, None)
    }

    /// A worker process on any Redis; its stderr goes to `log` when given.
    pub(crate) fn start_on(
        url: &str,
        prefix: &str,
        extra: &[&str],
        log: Option<&std::path::Path>,
    ) -> WorkerProcess {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("worker log file")),
            None => Stdio::inherit(),
        };
        let child = Command::new(example_binary("worker"))
            .args(["--redis-url", url, "--prefix", prefix, "--queues", "demo"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start worker process");
        WorkerProcess(child)
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker {pid} did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl WorkerProcess {
    /// SIGKILL: the worker dies mid-job, acknowledging nothing.
    pub(crate) fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// True once the process has exited (it aborted, or was killed).
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `sig` (`STOP`, `CONT`, ...) to process `pid`; false when it was not delivered (no
/// such process).
pub(crate) fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The pid of the server listening on `port` (one the test started itself, e.g. with
/// `RedisServer`): a `redis-server`, or a `valkey-server` named by `STEVEDORE_REDIS_SERVER`.
pub(crate) fn redis_pid(port: u16) -> u32 {
    let out = Command::new("pgrep")
        .args(["-f", &format!("(redis|valkey)-server .*:{port}( |$)")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the redis-server's pid")
}

/// Sends `sig` to the redis-server listening on `port`: `STOP` makes it look to its
/// clients as a hung server does (connections stay open, nothing answers), `CONT` ends that.
pub(crate) fn signal_redis(port: u16, sig: &str) {
    assert!(
        signal(redis_pid(port), sig),
        "kill -{sig} reached the redis-server on port {port}"
    );
}

/// The admin API served on a free loopback port until dropped.
pub(crate) struct AdminServer {
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves the admin API of `client` with `config` on a free loopback port.
pub(crate) async fn serve_admin(client: &stevedore::Client, config: AdminConfig) -> AdminServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let router = stevedore::admin::router(client.admin(), config);
    tokio::spawn(stevedore::admin::serve(
        listener,
        router,
        stop.clone().cancelled_owned(),
    ));
    AdminServer { addr, stop }
}

/// A raw HTTP/1.1 exchange over a fresh connection: `head` is the request line and headers
/// (without the blank line), `body` follows; returns the status, the body bytes and the
/// body as JSON (`Null` when it is not JSON).
pub(crate) async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Vec<u8>, Json) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{head}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    // A server may answer (413) and close before reading a large body.
    let _ = s.write_all(body).await;
    read_response(&mut s).await
}

/// Reads an HTTP/1.1 response to its end (30 s at most): the status, the body bytes (chunks
/// joined) and the body as JSON (`Null` when it is not JSON).
pub(crate) async fn read_response(s: &mut tokio::net::TcpStream) -> (u16, Vec<u8>, Json) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let mut body = buf.get(split + 4..).unwrap_or_default().to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    let json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    (code, body, json)
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&s[..eol]).unwrap_or("0");
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest.get(n + 2..).unwrap_or_default();
    }
    out
}
