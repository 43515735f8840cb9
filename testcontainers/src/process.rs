//! A `redis-server` child process on a free loopback port, in its own temp dir.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::KitError;
use crate::resp::{self, WaitError};

/// Env var naming the `redis-server` binary to run (default: `redis-server` on `PATH`).
pub(crate) const REDIS_SERVER_ENV: &str = "STEVEDORE_REDIS_SERVER";
/// How long a started process may take to answer PING.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How many times to try another port (first start) or the same port again (restart) when
/// the port turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// Name of the log file inside the server's directory.
const LOG_FILE: &str = "redis.log";
/// How many lines of the log go into an error.
const LOG_TAIL_LINES: usize = 30;

/// A local `redis-server` process that a test owns.
///
/// It listens on a free loopback port and keeps its files (log, AOF, RDB) in its own temp
/// dir. It can be SIGKILLed and restarted on the same port and dir, which is what durability
/// tests need. The process is killed, and the dir removed, when this value is dropped.
///
/// The kit always passes `--port --bind 127.0.0.1 --dir --save "" --appendonly no
/// --protected-mode no --daemonize no --logfile <dir>/redis.log`; arguments added with
/// [`RedisServerBuilder::arg`] come after them and so override them (but don't override
/// `--port`, `--bind` or `--dir`: the kit relies on them).
///
/// ```no_run
/// # async fn demo() -> Result<(), stevedore_testcontainers::KitError> {
/// use stevedore_testcontainers::RedisServer;
///
/// let mut server = RedisServer::builder().appendonly(true).start().await?;
/// // ... write through server.url() ...
/// server.kill()?; // SIGKILL, like a crash
/// server.restart().await?; // same port, same dir: the AOF is replayed
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
    // Declared last so that it is dropped after the process is gone (see Drop).
    dir: tempfile::TempDir,
}

/// Configures a [`RedisServer`] before starting it. Made by [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until .start() is awaited"]
pub struct RedisServerBuilder {
    program: Option<PathBuf>,
    args: Vec<String>,
}

impl RedisServerBuilder {
    /// Adds one extra `redis-server` argument, e.g. `.arg("--appendonly").arg("yes")`.
    ///
    /// Extra arguments come after the kit's defaults, so they override them.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Turns on the append-only file: `--appendonly yes --appendfsync always` when
    /// `fsync_always` is true, else `--appendfsync everysec`.
    pub fn appendonly(self, fsync_always: bool) -> Self {
        let fsync = if fsync_always { "always" } else { "everysec" };
        self.arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg(fsync)
    }

    /// Runs this binary instead of `redis-server` (or `$STEVEDORE_REDIS_SERVER`), e.g. a
    /// `valkey-server` for compatibility tests.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Starts the server on a free loopback port in a new temp dir and waits until it answers
    /// PING (at most 10 s).
    ///
    /// If the port was taken in the meantime, it retries with another port a few times.
    pub async fn start(self) -> Result<RedisServer, KitError> {
        let program = self.program.unwrap_or_else(default_program);
        let dir = tempfile::Builder::new()
            .prefix("stevedore-redis-")
            .tempdir()?;
        let mut server = RedisServer {
            program,
            args: self.args,
            port: 0,
            child: None,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port()?;
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(Launch::PortInUse(_)) if attempt < PORT_ATTEMPTS => continue,
                Err(Launch::PortInUse(e) | Launch::Failed(e)) => return Err(e),
            }
        }
    }
}

/// The program to run when the builder names none: `$STEVEDORE_REDIS_SERVER` or `redis-server`.
pub(crate) fn default_program() -> PathBuf {
    match std::env::var_os(REDIS_SERVER_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("redis-server"),
    }
}

/// Picks a free TCP port on 127.0.0.1 by binding port 0 and letting the listener go.
pub(crate) fn free_port() -> Result<u16, KitError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Why one launch attempt failed.
enum Launch {
    /// The process exited because its port was taken: worth another try.
    PortInUse(KitError),
    /// Anything else.
    Failed(KitError),
}

impl RedisServer {
    /// A builder, to add arguments or turn on the append-only file before starting.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Starts a server with the default settings; the same as `RedisServer::builder().start()`.
    pub async fn start() -> Result<RedisServer, KitError> {
        Self::builder().start().await
    }

    /// The server's URL, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working dir (`--dir`), holding `redis.log` and any AOF/RDB files. It is
    /// removed when the `RedisServer` is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the process with SIGKILL (no chance to save anything, like a crash) and waits for
    /// it to exit. Does nothing if it is not running.
    pub fn kill(&mut self) -> Result<(), KitError> {
        if let Some(mut child) = self.child.take() {
            if child.try_wait()?.is_none() {
                child.kill()?;
            }
            child.wait()?;
        }
        Ok(())
    }

    /// Kills the process if it is running, then starts it again on the same port, in the same
    /// dir, with the same arguments, and waits until it answers PING (after loading any AOF or
    /// RDB file).
    pub async fn restart(&mut self) -> Result<(), KitError> {
        self.kill()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(Launch::PortInUse(_)) if attempt < PORT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(Launch::PortInUse(e) | Launch::Failed(e)) => return Err(e),
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    fn command_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--port".into(),
            self.port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().as_os_str().to_owned(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--logfile".into(),
            self.log_path().into_os_string(),
        ];
        args.extend(self.args.iter().map(OsString::from));
        args
    }

    /// Spawns the process on `self.port` and waits until it answers PING.
    async fn launch(&mut self) -> Result<(), Launch> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Launch::Failed(e.into()))?;
        // Only what this launch writes counts when looking for "Address already in use".
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().map_err(|e| Launch::Failed(e.into()))?;
        let child = Command::new(&self.program)
            .args(self.command_args())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| {
                Launch::Failed(KitError::RedisServerNotFound {
                    program: self.program.clone(),
                    source,
                })
            })?;
        self.child = Some(child);

        let port = self.port;
        let child = &mut self.child;
        let waited = resp::wait_for_pong("127.0.0.1", port, READY_DEADLINE, || {
            match child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Err(status),
                _ => Ok(()),
            }
        })
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(WaitError::Gone(status)) => {
                self.child = None;
                let new_log = read_from(&log_path, log_start);
                let error = KitError::RedisServerExited {
                    status,
                    log_tail: tail(&new_log, LOG_TAIL_LINES),
                };
                if new_log.contains("Address already in use") {
                    Err(Launch::PortInUse(error))
                } else {
                    Err(Launch::Failed(error))
                }
            }
            Err(WaitError::Timeout { last }) => {
                // Don't leave a half-started server behind.
                let _ = self.kill();
                Err(Launch::Failed(KitError::NotReady {
                    addr: format!("127.0.0.1:{port}"),
                    waited: READY_DEADLINE,
                    last_error: last,
                }))
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Kill before the temp dir goes (fields drop after this body).
        let _ = self.kill();
    }
}

/// Reads `path` from byte `offset` on (lossy UTF-8); empty on any error.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` non-empty lines of `text`, or a note that it was empty.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(the log is empty)".to_owned();
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::resp::test_support::{Reply, command, wait_until_down};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

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
}
