//! A throwaway Redis for stevedore's tests, from an env URL, a container, or a local
//! `redis-server` process, whichever this machine offers; and a [`Harness`] that runs an
//! application's job handlers against it end to end.
//!
//! # Testing your handlers
//!
//! A [`Harness`] starts a Redis (see below), runs the handlers you register in workers
//! inside the test's process, under a key prefix of its own, and gives the test what it
//! needs to drive them: enqueue typed jobs, wait for a job's final status with a deadline,
//! read dead letters, and crash a worker mid-job to see another take its jobs over.
//!
//! ```
//! use std::time::Duration;
//!
//! use serde::{Deserialize, Serialize};
//! use stevedore::{DeadReason, JobContext, JobError, JobState, job_handler};
//! use stevedore_testcontainers::Harness;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Invoice {
//!     customer: String,
//!     cents: i64,
//! }
//!
//! #[job_handler(name = "invoice.send", queue = "billing", max_attempts = 3)]
//! async fn send_invoice(invoice: Invoice, ctx: JobContext) -> Result<(), JobError> {
//!     if invoice.cents < 0 {
//!         return Err(JobError::permanent("negative amount"));
//!     }
//!     ctx.set_result(&format!("sent to {}", invoice.customer))?;
//!     Ok(())
//! }
//!
//! // In your crate: #[tokio::test] async fn invoices() -> Result<(), Box<dyn Error>> { .. }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let h = Harness::builder().handler(send_invoice::handler()).start().await?;
//!
//! let id = h.enqueue(send_invoice::job(Invoice { customer: "ada".into(), cents: 1200 })).await?;
//! let status = h.wait_for(&id, Duration::from_secs(10)).await?;
//! assert_eq!(status.state, JobState::Succeeded);
//! assert_eq!(status.result_as::<String>().transpose()?.as_deref(), Some("sent to ada"));
//!
//! let id = h.enqueue(send_invoice::job(Invoice { customer: "bob".into(), cents: -1 })).await?;
//! assert_eq!(h.wait_for(&id, Duration::from_secs(10)).await?.state, JobState::Dead);
//! let dead = h.dead_letter(&id).await?.expect("a dead letter");
//! assert_eq!(dead.reason, DeadReason::Failed);
//! assert_eq!(dead.error, "negative amount");
//!
//! h.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! To see a crash: `h.wait_for_state(&id, JobState::Running, ..)`, then
//! [`h.crash_worker()`](Harness::crash_worker) drops the worker with its running handler
//! and acknowledges nothing, so the job stays pending
//! ([`h.pending(queue)`](Harness::pending)); [`h.start_worker()`](Harness::start_worker)
//! starts another, which takes the job over once the lease (1 s in a harness) expires.
//! `testcontainers/tests/app_test.rs` in stevedore's repository is a complete test file
//! that does all three.
//!
//! # Why
//!
//! stevedore's integration tests need a real Redis 7 (streams, consumer groups,
//! `XAUTOCLAIM`). Developers usually have Docker; some CI machines have no container engine
//! but can install Debian's `redis-server`; some setups provide a shared server. This crate
//! hides the difference behind one call, [`TestRedis::start`], and logs which path it took.
//! Tests that need to crash and restart a server (durability tests) use [`RedisServer`]
//! directly.
//!
//! # Where the server comes from, in order
//!
//! 1. **`env`**: `STEVEDORE_TEST_REDIS_URL`, if set. The server is shared with other tests
//!    (and other runs), so callers must isolate themselves, e.g. with a unique key prefix, and
//!    must not `FLUSHALL`.
//! 2. **`container`**: a fresh container of the official `redis:7` image through
//!    testcontainers, when a Docker-API engine may answer (`DOCKER_HOST` is set, or
//!    `/var/run/docker.sock` exists). If testcontainers cannot talk to the engine, the kit
//!    falls back to the next path. The container is removed when the [`TestRedis`] is
//!    dropped. On a machine with podman but no registry, `testcontainers/podman-setup.sh`
//!    prepares an engine and a local image.
//! 3. **`process`**: a `redis-server` child process on a free loopback port, in its own temp
//!    dir, killed when the [`TestRedis`] is dropped.
//!
//! One line on stderr says which path was taken (and, after a fallback, why), e.g.
//! `stevedore-testcontainers: redis from container redis:7 at redis://127.0.0.1:40123 (...)`.
//! The first such line for each path in a process is written straight to the process'
//! stderr, past the output capture of `cargo test`, so the output of every test binary
//! shows which path it used even when all its tests pass.
//!
//! # Environment variables
//!
//! | variable | effect |
//! |---|---|
//! | `STEVEDORE_TEST_REDIS_URL` | use this server (path 1) |
//! | `STEVEDORE_TEST_REDIS_SOURCE` | `env`, `container` or `process`: take only that path, and fail if it fails (CI sets `container` to prove that path runs) |
//! | `STEVEDORE_TEST_REDIS_IMAGE` | `name:tag` of the image for path 2 (default `redis:7`) |
//! | `DOCKER_HOST` | the engine for path 2 (default socket `/var/run/docker.sock`) |
//! | `STEVEDORE_REDIS_SERVER` | the `redis-server` binary for path 3 (default: `redis-server` on `PATH`) |
//!
//! # Example
//!
//! ```no_run
//! use stevedore_testcontainers::{KitError, RedisSource, TestRedis};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), KitError> {
//! let redis = TestRedis::start().await?;
//! eprintln!("testing against {} ({})", redis.url(), redis.source());
//! // Connect your client to `redis.url()`. On a shared server (`RedisSource::Env`),
//! // put every key under a prefix unique to this test.
//! let prefix = if redis.source() == RedisSource::Env { "test-1234:" } else { "" };
//! # let _ = prefix;
//! # Ok(())
//! # }
//! ```
//!
//! Drop a [`TestRedis`] that holds a container inside a Tokio runtime if you can (the end of
//! a `#[tokio::test]` is fine); outside one, the kit makes a small runtime to remove it.

mod container;
mod error;
mod harness;
mod process;
mod resp;
mod tls;

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::ContainerAsync;

pub use crate::error::KitError;
pub use crate::harness::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_LEASE, DEFAULT_RETRY_POLICY, Harness, HarnessBuilder,
};
pub use crate::process::{RedisServer, RedisServerBuilder};
pub use crate::tls::TestCerts;

/// A free TCP port on 127.0.0.1 (bound, then let go), e.g. for a server's TLS port.
pub fn free_port() -> Result<u16, KitError> {
    crate::process::free_port()
}

use crate::container::{ContainerFailure, ImageRef};

/// Env var: URL of a Redis server to use instead of starting one.
const URL_ENV: &str = "STEVEDORE_TEST_REDIS_URL";
/// Env var: forces one source (`env`, `container`, `process`).
const SOURCE_ENV: &str = "STEVEDORE_TEST_REDIS_SOURCE";
/// Env var: the container image, `name:tag`.
const IMAGE_ENV: &str = "STEVEDORE_TEST_REDIS_IMAGE";
/// Prefix of every log line.
const LOG_PREFIX: &str = "stevedore-testcontainers:";

/// Where a [`TestRedis`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisSource {
    /// A server named by `STEVEDORE_TEST_REDIS_URL`, shared with others: isolate by key prefix.
    Env,
    /// A container started through testcontainers, owned by this [`TestRedis`].
    Container,
    /// A local `redis-server` process, owned by this [`TestRedis`].
    Process,
}

impl RedisSource {
    /// The lower-case name: `"env"`, `"container"` or `"process"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Container => "container",
            Self::Process => "process",
        }
    }
}

impl fmt::Display for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RedisSource {
    type Err = KitError;

    /// Parses `env`, `container` or `process` (case-insensitive, surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "env" => Ok(Self::Env),
            "container" => Ok(Self::Container),
            "process" => Ok(Self::Process),
            _ => Err(KitError::InvalidSource(s.to_owned())),
        }
    }
}

/// A Redis server for one test, from wherever this machine offers one (see the crate docs).
///
/// Dropping it stops what it started: the container is removed, the process killed. A server
/// from `STEVEDORE_TEST_REDIS_URL` is left alone.
pub struct TestRedis {
    url: String,
    source: RedisSource,
    guard: Guard,
}

/// What a [`TestRedis`] must stop when dropped.
enum Guard {
    /// Nothing: a shared server from the environment.
    None,
    /// A container, removed when dropped (an `Option` so that `Drop` can take it).
    Container(Option<Box<ContainerAsync<Redis>>>),
    /// A child process, killed when dropped.
    Process(RedisServer),
}

impl fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TestRedis");
        d.field("url", &redact(&self.url))
            .field("source", &self.source);
        match &self.guard {
            Guard::None => {}
            Guard::Container(c) => {
                d.field("container", &c.as_ref().map(|c| c.id().to_owned()));
            }
            Guard::Process(p) => {
                d.field("process", p);
            }
        }
        d.finish()
    }
}

impl TestRedis {
    /// Gets a Redis for a test.
    ///
    /// Order: 1) `STEVEDORE_TEST_REDIS_URL` if set (a shared server: callers isolate by key
    /// prefix); 2) a container of `redis:7` (or `STEVEDORE_TEST_REDIS_IMAGE`) through
    /// testcontainers when an engine may answer (`DOCKER_HOST`, else the default socket
    /// `/var/run/docker.sock`), on a free local port mapped explicitly; 3) a `redis-server`
    /// process (from `PATH`, or `STEVEDORE_REDIS_SERVER`) on a free loopback port in a temp
    /// dir. `STEVEDORE_TEST_REDIS_SOURCE=env|container|process` forces one path and makes its
    /// failure an error. Logs one line on stderr saying which path it took and, after a
    /// fallback, why.
    pub async fn start() -> Result<TestRedis, KitError> {
        Self::start_with(Settings::from_env()?).await
    }

    /// The URL to connect to, `redis://HOST:PORT` (`redis://127.0.0.1:PORT` unless the env
    /// URL or a remote `DOCKER_HOST` says otherwise).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where this server came from.
    pub fn source(&self) -> RedisSource {
        self.source
    }

    async fn start_with(settings: Settings) -> Result<TestRedis, KitError> {
        let started = Instant::now();
        match settings.forced {
            Some(RedisSource::Env) => {
                let url = settings.env_url.clone().ok_or(KitError::EnvUrlMissing)?;
                Ok(Self::from_env_url(url, &forced_note(RedisSource::Env)))
            }
            Some(RedisSource::Container) => {
                let engine = container::probe_engine(
                    settings.docker_host.as_deref(),
                    &settings.default_socket,
                )
                .map_err(|reason| KitError::NoContainerEngine { reason })?;
                let image = settings.image()?;
                match container::start(&image, settings.docker_host.as_deref()).await {
                    Ok(c) => Ok(Self::from_container(
                        c,
                        &image,
                        started.elapsed(),
                        &format!("{engine}; {}", forced_note(RedisSource::Container)),
                    )),
                    Err(e) => Err(e.into_kit_error(&image)),
                }
            }
            Some(RedisSource::Process) => {
                let server = settings.process_builder().start().await?;
                Ok(Self::from_process(
                    server,
                    &settings.program,
                    started.elapsed(),
                    &forced_note(RedisSource::Process),
                ))
            }
            None => {
                if let Some(url) = settings.env_url.clone() {
                    return Ok(Self::from_env_url(url, &format!("{URL_ENV} is set")));
                }
                let mut skipped = Vec::new();
                match container::probe_engine(
                    settings.docker_host.as_deref(),
                    &settings.default_socket,
                ) {
                    Err(why) => skipped.push(format!("no container: {why}")),
                    Ok(engine) => {
                        let image = settings.image()?;
                        match container::start(&image, settings.docker_host.as_deref()).await {
                            Ok(c) => {
                                return Ok(Self::from_container(
                                    c,
                                    &image,
                                    started.elapsed(),
                                    &engine,
                                ));
                            }
                            Err(ContainerFailure::Client(e)) => {
                                skipped.push(format!("no container: {engine}: {e}"));
                            }
                            Err(ContainerFailure::Other(e)) => return Err(e),
                        }
                    }
                }
                match settings.process_builder().start().await {
                    Ok(server) => Ok(Self::from_process(
                        server,
                        &settings.program,
                        started.elapsed(),
                        &skipped.join("; "),
                    )),
                    Err(KitError::RedisServerNotFound { program, source }) => {
                        // The install hint is the outer error's: said once.
                        skipped.push(format!("no process: could not run {program:?}: {source}"));
                        Err(KitError::NoRedisServer {
                            tried: skipped.join("; "),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn from_env_url(url: String, why: &str) -> TestRedis {
        announce(
            RedisSource::Env,
            &format!(
                "{LOG_PREFIX} redis from env {URL_ENV} at {} ({why})",
                redact(&url)
            ),
        );
        TestRedis {
            url,
            source: RedisSource::Env,
            guard: Guard::None,
        }
    }

    fn from_container(
        c: container::StartedContainer,
        image: &ImageRef,
        took: Duration,
        why: &str,
    ) -> TestRedis {
        announce(
            RedisSource::Container,
            &format!(
                "{LOG_PREFIX} redis from container {image} at {} (started in {} ms; {why})",
                c.url,
                took.as_millis()
            ),
        );
        TestRedis {
            url: c.url,
            source: RedisSource::Container,
            guard: Guard::Container(Some(Box::new(c.container))),
        }
    }

    fn from_process(
        server: RedisServer,
        program: &std::path::Path,
        took: Duration,
        why: &str,
    ) -> TestRedis {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!("; {why}")
        };
        announce(
            RedisSource::Process,
            &format!(
                "{LOG_PREFIX} redis from process {} at {} (started in {} ms{why})",
                program.display(),
                server.url(),
                took.as_millis()
            ),
        );
        TestRedis {
            url: server.url(),
            source: RedisSource::Process,
            guard: Guard::Process(server),
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Guard::Container(slot) = &mut self.guard else {
            return;
        };
        let Some(container) = slot.take() else {
            return;
        };
        // testcontainers removes the container from its Drop, which needs a Tokio runtime.
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(container);
            return;
        }
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let _entered = rt.enter();
                drop(container);
            }
            Err(e) => {
                eprintln!(
                    "{LOG_PREFIX} could not remove container {}: no Tokio runtime ({e})",
                    container.id()
                );
                std::mem::forget(container);
            }
        }
    }
}

/// What [`TestRedis::start`] reads from the environment (separate so tests can set it).
#[derive(Debug, Clone)]
struct Settings {
    forced: Option<RedisSource>,
    env_url: Option<String>,
    docker_host: Option<String>,
    default_socket: PathBuf,
    image: Option<String>,
    program: PathBuf,
}

impl Settings {
    fn from_env() -> Result<Settings, KitError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(Settings {
            forced: var(SOURCE_ENV).map(|s| s.parse()).transpose()?,
            env_url: var(URL_ENV),
            docker_host: var("DOCKER_HOST"),
            default_socket: PathBuf::from(container::DEFAULT_SOCKET),
            image: var(IMAGE_ENV),
            program: process::default_program(),
        })
    }

    fn image(&self) -> Result<ImageRef, KitError> {
        match &self.image {
            Some(s) => ImageRef::parse(s.trim()),
            None => Ok(ImageRef::default()),
        }
    }

    fn process_builder(&self) -> RedisServerBuilder {
        RedisServer::builder().program(self.program.clone())
    }
}

/// Logs which path a [`TestRedis`] took. The first line for each source in a process goes
/// straight to the process' stderr, past the output capture of the test harness, so a test
/// binary whose tests all pass still shows it; the others are printed like any test output
/// (shown for failing tests, or with `--nocapture`).
fn announce(source: RedisSource, line: &str) {
    static ANNOUNCED: AtomicU8 = AtomicU8::new(0);
    let bit = match source {
        RedisSource::Env => 1,
        RedisSource::Container => 2,
        RedisSource::Process => 4,
    };
    if ANNOUNCED.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        eprintln!("{line}");
        return;
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // `eprintln!` would be captured by libtest; a direct write is not. One write call, so
    // the line is not split by other output.
    let line = format!("{line} [first {source} redis of {exe}]\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The log note for a forced source.
fn forced_note(source: RedisSource) -> String {
    format!("forced by {SOURCE_ENV}={source}")
}

/// Hides the password (userinfo) of a URL for logs: `redis://user:pw@h:1` → `redis://***@h:1`.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::test_support::{Reply, command};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn no_engine_settings() -> Settings {
        Settings {
            forced: None,
            env_url: None,
            docker_host: None,
            default_socket: PathBuf::from("/nonexistent/stevedore-test/docker.sock"),
            image: None,
            program: process::default_program(),
        }
    }

    /// Host and port of a `redis://host:port` URL.
    fn host_port(url: &str) -> (String, u16) {
        let rest = url.trim_start_matches("redis://");
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (host, port) = rest.rsplit_once(':').expect("url has a port");
        let port = port.trim_end_matches('/').parse().expect("numeric port");
        (host.trim_matches(['[', ']']).to_owned(), port)
    }

    async fn wait_until_down(host: &str, port: u16) -> bool {
        for _ in 0..500 {
            if resp::ping(host, port).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn process_starts_and_answers_ping() -> TestResult {
        let t = Instant::now();
        let mut server = RedisServer::start().await?;
        eprintln!("process start took {} ms", t.elapsed().as_millis());
        assert!(server.is_running());
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        resp::ping("127.0.0.1", server.port()).await?;
        assert_eq!(
            command("127.0.0.1", server.port(), &["SET", "k", "v"]).await?,
            Reply::Simple("OK".into())
        );
        let dir = server.dir().to_owned();
        assert!(dir.join("redis.log").exists());
        let port = server.port();
        drop(server);
        assert!(
            wait_until_down("127.0.0.1", port).await,
            "server still answers after drop"
        );
        assert!(!dir.exists(), "temp dir not removed");
        Ok(())
    }

    #[tokio::test]
    async fn kill_then_restart_keeps_data_with_appendonly() -> TestResult {
        let mut server = RedisServer::builder().appendonly(true).start().await?;
        let port = server.port();
        let dir = server.dir().to_owned();
        assert_eq!(
            command("127.0.0.1", port, &["SET", "durable", "yes"]).await?,
            Reply::Simple("OK".into())
        );
        server.kill()?;
        assert!(!server.is_running());
        assert!(resp::ping("127.0.0.1", port).await.is_err());
        let t = Instant::now();
        server.restart().await?;
        eprintln!("restart took {} ms", t.elapsed().as_millis());
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert_eq!(server.dir(), dir);
        assert_eq!(
            command("127.0.0.1", port, &["GET", "durable"]).await?,
            Reply::Bulk(Some(b"yes".to_vec()))
        );
        Ok(())
    }

    #[tokio::test]
    async fn kill_then_restart_loses_data_without_appendonly() -> TestResult {
        let mut server = RedisServer::start().await?;
        let port = server.port();
        command("127.0.0.1", port, &["SET", "volatile", "yes"]).await?;
        server.restart().await?; // restart kills a running server first
        assert_eq!(
            command("127.0.0.1", port, &["GET", "volatile"]).await?,
            Reply::Bulk(None)
        );
        Ok(())
    }

    #[tokio::test]
    async fn bad_argument_reports_the_log_tail() {
        let err = RedisServer::builder()
            .arg("--no-such-directive")
            .arg("1")
            .start()
            .await
            .expect_err("a bad directive must fail");
        match &err {
            KitError::RedisServerExited { log_tail, .. } => {
                assert!(log_tail.contains("no-such-directive"), "{log_tail}");
            }
            other => panic!("unexpected error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_binary_is_reported() {
        let err = RedisServer::builder()
            .program("/nonexistent/redis-server")
            .start()
            .await
            .expect_err("a missing binary must fail");
        assert!(
            matches!(err, KitError::RedisServerNotFound { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn forced_env_uses_the_url() -> TestResult {
        let server = RedisServer::start().await?;
        let settings = Settings {
            forced: Some(RedisSource::Env),
            env_url: Some(server.url()),
            ..no_engine_settings()
        };
        let redis = TestRedis::start_with(settings).await?;
        assert_eq!(redis.source(), RedisSource::Env);
        assert_eq!(redis.url(), server.url());
        let (host, port) = host_port(redis.url());
        resp::ping(&host, port).await?;
        drop(redis);
        // The env server is not ours: it must still answer.
        resp::ping(&host, port).await?;
        Ok(())
    }

    #[tokio::test]
    async fn forced_env_without_url_is_an_error() {
        let settings = Settings {
            forced: Some(RedisSource::Env),
            ..no_engine_settings()
        };
        let err = TestRedis::start_with(settings).await.expect_err("no URL");
        assert!(matches!(err, KitError::EnvUrlMissing), "{err:?}");
    }

    #[tokio::test]
    async fn forced_container_without_engine_is_an_error() {
        let settings = Settings {
            forced: Some(RedisSource::Container),
            ..no_engine_settings()
        };
        let t = Instant::now();
        let err = TestRedis::start_with(settings)
            .await
            .expect_err("no engine");
        assert!(matches!(err, KitError::NoContainerEngine { .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn unreachable_engine_falls_back_to_process() -> TestResult {
        // testcontainers reads DOCKER_HOST itself (tests can't set env vars), so this only
        // exercises the fallback when the real environment has no engine.
        if std::env::var_os("DOCKER_HOST").is_some()
            || std::path::Path::new(container::DEFAULT_SOCKET).exists()
        {
            eprintln!("skipped: an engine is configured in this environment");
            return Ok(());
        }
        let settings = Settings {
            // Set, but nothing answers there: testcontainers fails with a Client error.
            docker_host: Some("unix:///nonexistent/stevedore-test/docker.sock".into()),
            ..no_engine_settings()
        };
        let redis = TestRedis::start_with(settings).await?;
        assert_eq!(redis.source(), RedisSource::Process);
        Ok(())
    }

    #[tokio::test]
    async fn no_engine_falls_back_to_process() -> TestResult {
        let redis = TestRedis::start_with(no_engine_settings()).await?;
        assert_eq!(redis.source(), RedisSource::Process);
        let (host, port) = host_port(redis.url());
        resp::ping(&host, port).await?;
        drop(redis);
        assert!(wait_until_down(&host, port).await);
        Ok(())
    }

    #[tokio::test]
    async fn nothing_available_is_no_redis_server() {
        let settings = Settings {
            program: PathBuf::from("/nonexistent/redis-server"),
            ..no_engine_settings()
        };
        let err = TestRedis::start_with(settings).await.expect_err("nothing");
        let text = err.to_string();
        assert!(matches!(err, KitError::NoRedisServer { .. }), "{err:?}");
        assert!(text.contains("apt-get install redis-server"), "{text}");
        assert_eq!(text.matches("apt-get install").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn start_works_on_this_machine() -> TestResult {
        let t = Instant::now();
        let redis = TestRedis::start().await?;
        eprintln!(
            "TestRedis::start() from {} took {} ms",
            redis.source(),
            t.elapsed().as_millis()
        );
        if let Ok(forced) = std::env::var(SOURCE_ENV) {
            assert_eq!(redis.source(), forced.parse::<RedisSource>()?);
        }
        let (host, port) = host_port(redis.url());
        resp::ping(&host, port).await?;
        assert_eq!(
            command(&host, port, &["SET", "stevedore-kit:probe", "1"]).await?,
            Reply::Simple("OK".into())
        );
        let source = redis.source();
        drop(redis);
        if source != RedisSource::Env {
            assert!(
                wait_until_down(&host, port).await,
                "{source} still answers after drop"
            );
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_starts_get_separate_servers() -> TestResult {
        let (a, b, c) = tokio::join!(TestRedis::start(), TestRedis::start(), TestRedis::start());
        let (a, b, c) = (a?, b?, c?);
        if a.source() != RedisSource::Env {
            assert_ne!(a.url(), b.url());
            assert_ne!(b.url(), c.url());
            assert_ne!(a.url(), c.url());
        }
        for r in [&a, &b, &c] {
            let (host, port) = host_port(r.url());
            resp::ping(&host, port).await?;
        }
        Ok(())
    }

    #[test]
    fn drop_outside_a_runtime_does_not_panic() -> TestResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let redis = rt.block_on(TestRedis::start())?;
        let (host, port) = host_port(redis.url());
        let source = redis.source();
        drop(redis); // no runtime entered here
        if source != RedisSource::Env {
            assert!(rt.block_on(wait_until_down(&host, port)));
        }
        Ok(())
    }

    #[test]
    fn source_names_round_trip() -> TestResult {
        for s in [
            RedisSource::Env,
            RedisSource::Container,
            RedisSource::Process,
        ] {
            assert_eq!(s.to_string().parse::<RedisSource>()?, s);
        }
        assert_eq!(
            " Container ".parse::<RedisSource>()?,
            RedisSource::Container
        );
        assert!(matches!(
            "docker".parse::<RedisSource>(),
            Err(KitError::InvalidSource(_))
        ));
        Ok(())
    }

    #[test]
    fn image_refs_parse() -> TestResult {
        assert_eq!(ImageRef::parse("redis:7")?.to_string(), "redis:7");
        let r = ImageRef::parse("registry.local:5000/redis:7.2")?;
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("registry.local:5000/redis", "7.2")
        );
        for bad in ["redis", "registry.local:5000/redis", ":7", "redis:"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ImageRef::default().to_string(), "redis:7");
        Ok(())
    }

    #[test]
    fn published_host_follows_remote_docker_host_only() {
        use container::published_host;
        assert_eq!(published_host(None), "127.0.0.1");
        assert_eq!(published_host(Some("unix:///run/podman.sock")), "127.0.0.1");
        assert_eq!(published_host(Some("tcp://localhost:2375")), "127.0.0.1");
        assert_eq!(published_host(Some("tcp://docker:2376")), "docker");
        assert_eq!(published_host(Some("tcp://[fd00::1]:2375")), "fd00::1");
    }

    #[test]
    fn urls_are_redacted_in_logs() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("rediss://:pw@h:1"), "rediss://***@h:1");
    }
}
