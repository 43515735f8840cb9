//! The one error type of the kit.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while getting a Redis for a test or driving a
/// [`Harness`](crate::Harness).
///
/// Each variant says what to do about it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// No source of Redis worked: `STEVEDORE_TEST_REDIS_URL` is unset, no container engine
    /// answered, and no `redis-server` binary could be run.
    ///
    /// What to do: install redis-server (Debian: `apt-get install redis-server`) or start a
    /// Docker engine (or run `testcontainers/podman-setup.sh` and export the `DOCKER_HOST` it
    /// prints), or set `STEVEDORE_TEST_REDIS_URL` to a server you own.
    #[error(
        "no Redis for tests: {tried}. Install redis-server (Debian: apt-get install redis-server) \
         or start a Docker engine, or set STEVEDORE_TEST_REDIS_URL"
    )]
    NoRedisServer {
        /// What was tried, and why each path failed.
        tried: String,
    },

    /// `STEVEDORE_TEST_REDIS_SOURCE` has a value other than `env`, `container` or `process`.
    ///
    /// What to do: unset it, or set it to one of those three words.
    #[error("STEVEDORE_TEST_REDIS_SOURCE={0:?} is not one of: env, container, process")]
    InvalidSource(String),

    /// `STEVEDORE_TEST_REDIS_SOURCE=env` forces the env path, but `STEVEDORE_TEST_REDIS_URL`
    /// is unset or empty.
    ///
    /// What to do: set `STEVEDORE_TEST_REDIS_URL=redis://host:port`, or unset
    /// `STEVEDORE_TEST_REDIS_SOURCE`.
    #[error("STEVEDORE_TEST_REDIS_SOURCE=env, but STEVEDORE_TEST_REDIS_URL is not set")]
    EnvUrlMissing,

    /// `STEVEDORE_TEST_REDIS_IMAGE` is not of the form `name:tag`.
    ///
    /// What to do: give both parts, e.g. `redis:7.2` or `registry.local:5000/redis:7`.
    #[error("STEVEDORE_TEST_REDIS_IMAGE={0:?} is not of the form name:tag (e.g. redis:7)")]
    InvalidImage(String),

    /// The container path was forced (`STEVEDORE_TEST_REDIS_SOURCE=container`) but no
    /// container engine is reachable.
    ///
    /// What to do: start Docker, or point `DOCKER_HOST` at an engine that speaks the Docker
    /// API (on a machine without one: `eval "$(testcontainers/podman-setup.sh | tail -1)"`).
    #[error("no container engine: {reason}. Start Docker or set DOCKER_HOST")]
    NoContainerEngine {
        /// Why the engine was considered unreachable.
        reason: String,
    },

    /// The container engine answered, but the Redis container could not be started or did not
    /// become ready.
    ///
    /// What to do: check that the image exists or can be pulled (`docker pull <image>`), read
    /// the engine's logs, or set `STEVEDORE_TEST_REDIS_SOURCE=process` to use a local
    /// `redis-server` instead.
    #[error("could not start a Redis container from image {image}: {source}")]
    Container {
        /// The image that was requested, `name:tag`.
        image: String,
        /// What testcontainers (or the readiness check) reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The `redis-server` binary could not be run.
    ///
    /// What to do: install redis-server (Debian: `apt-get install redis-server`) so that it is
    /// on `PATH`, or set `STEVEDORE_REDIS_SERVER` to the binary's full path.
    #[error(
        "could not run {program:?}: {source}. Install redis-server (Debian: apt-get install \
         redis-server) or set STEVEDORE_REDIS_SERVER to its path"
    )]
    RedisServerNotFound {
        /// The program that was run.
        program: PathBuf,
        /// The error from spawning it.
        #[source]
        source: std::io::Error,
    },

    /// The `redis-server` process exited before it answered PING.
    ///
    /// What to do: read `log_tail` (usually a bad argument, or a port in use); the full log is
    /// `redis.log` in the server's directory.
    #[error("redis-server exited before it was ready ({status}); end of its log:\n{log_tail}")]
    RedisServerExited {
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its log (stdout, stderr and `--logfile`).
        log_tail: String,
    },

    /// The server (process or container) did not answer PING in time.
    ///
    /// What to do: the machine may be overloaded; check the server's log, or retry.
    #[error("Redis at {addr} did not answer PING within {waited:?}: {last_error}")]
    NotReady {
        /// `host:port` that was polled.
        addr: String,
        /// How long the kit waited.
        waited: Duration,
        /// The last failure seen (connection refused, `-LOADING`, ...).
        last_error: String,
    },

    /// A [`RedisClusterBuilder`](crate::RedisClusterBuilder) was asked for a cluster that
    /// cannot be made (no primary, or more primaries than the 16384 slots).
    ///
    /// What to do: ask for at least one primary (three is the usual).
    #[error("invalid Redis Cluster: {0}")]
    InvalidCluster(String),

    /// A node of a [`RedisCluster`](crate::RedisCluster) refused a command the kit sent it, or
    /// did not answer.
    ///
    /// What to do: read `error`, and the node's `redis.log` (in
    /// [`RedisServer::dir`](crate::RedisServer::dir) of
    /// [`RedisCluster::node`](crate::RedisCluster::node)); an unknown command means the server
    /// is too old (the kit needs Redis 7 or Valkey).
    #[error("cluster node 127.0.0.1:{port} failed {command}: {error}")]
    ClusterCommand {
        /// The node's port.
        port: u16,
        /// The command, e.g. `CLUSTER REPLICATE`.
        command: String,
        /// The error reply, or why there was no reply.
        error: String,
    },

    /// A [`RedisCluster`](crate::RedisCluster) did not reach the awaited state in time.
    ///
    /// What to do: read `last` (what was still missing when the wait gave up). A failover
    /// needs a replica of the killed primary and a majority of primaries alive; its time
    /// grows with the node timeout ([`RedisClusterBuilder::node_timeout`](crate::RedisClusterBuilder::node_timeout)).
    #[error("Redis Cluster: not {awaited} within {waited:?}; last seen: {last}")]
    ClusterTimeout {
        /// What was awaited, e.g. `cluster_state:ok on every node`.
        awaited: String,
        /// How long the kit waited.
        waited: Duration,
        /// What was still missing at the last check.
        last: String,
    },

    /// No node of the [`RedisCluster`](crate::RedisCluster) listens on this port.
    ///
    /// What to do: use one of [`RedisCluster::ports`](crate::RedisCluster::ports).
    #[error("no node of the Redis Cluster listens on port {0}")]
    UnknownClusterNode(u16),

    /// An I/O error around the server: creating its temp dir, picking a port, killing it;
    /// or creating the runtime of a harness worker.
    ///
    /// What to do: check free disk space in the temp dir (`TMPDIR`) and the process limits.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A stevedore call the harness made failed: connecting, enqueueing, reading a status or
    /// dead letters.
    ///
    /// What to do: read the inner error; an invalid payload or queue name is the test's to
    /// fix, a connection error means the test's Redis went away.
    #[error(transparent)]
    Stevedore(#[from] stevedore::Error),

    /// A harness worker could not be built (no handler, an invalid setting), or its run ended
    /// with an error or a panic.
    ///
    /// What to do: read the inner error; a worker needs at least one handler
    /// ([`HarnessBuilder::handler`](crate::HarnessBuilder::handler)).
    #[error("harness worker {name}: {source}")]
    Worker {
        /// The worker's consumer name.
        name: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The harness has no running worker to crash or stop.
    ///
    /// What to do: start one with [`Harness::start_worker`](crate::Harness::start_worker).
    #[error("no harness worker is running; start one with Harness::start_worker")]
    NoWorkerRunning,

    /// A job did not reach the awaited state before the deadline.
    ///
    /// What to do: read `last` (its last status, if any) and `workers`. A job still `queued`
    /// with no worker running needs [`Harness::start_worker`](crate::Harness::start_worker);
    /// one `retrying` may be waiting out a backoff its handler sets itself; one never seen
    /// was not enqueued through this harness's prefix.
    #[error("job {id} was not {awaited} within {waited:?}: {}", Seen { last: last.as_deref(), workers: *workers })]
    JobTimeout {
        /// The job's id.
        id: String,
        /// What was awaited: `final` (succeeded or dead) or a state name.
        awaited: String,
        /// How long the harness waited.
        waited: Duration,
        /// The job's last status, `None` if no status was ever found.
        last: Option<Box<stevedore::JobStatus>>,
        /// How many harness workers were running when the wait gave up.
        workers: usize,
    },

    /// While waiting for a job to reach one state, it ended in another it never leaves
    /// (e.g. it was awaited `running` but had already succeeded).
    ///
    /// What to do: wait for the final state instead, or make the handler hold the job in
    /// the awaited state (e.g. until the test lets it go) so the test can observe it.
    #[error("job {} ended {} while it was awaited {awaited}{}", status.id, status.state, ended_why(status))]
    JobEnded {
        /// The state that was awaited.
        awaited: String,
        /// The job's final status.
        status: Box<stevedore::JobStatus>,
    },
}

/// The end of a [`KitError::JobTimeout`] message: what the job was last seen doing.
struct Seen<'a> {
    last: Option<&'a stevedore::JobStatus>,
    workers: usize,
}

impl fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last {
            None => {
                f.write_str("no status was ever found (was it enqueued through this harness?)")?
            }
            Some(s) => {
                write!(
                    f,
                    "last seen {}, attempt {} of {}",
                    s.state, s.attempts, s.max_attempts
                )?;
                if let Some(e) = &s.error {
                    write!(f, ", last error {e:?}")?;
                }
            }
        }
        match self.workers {
            0 => f.write_str("; no harness worker is running"),
            1 => f.write_str("; 1 harness worker running"),
            n => write!(f, "; {n} harness workers running"),
        }
    }
}

/// `" (reason: error)"` for a dead job, empty otherwise.
fn ended_why(status: &stevedore::JobStatus) -> String {
    match (&status.reason, &status.error) {
        (Some(r), Some(e)) => format!(" ({r}: {e})"),
        (Some(r), None) => format!(" ({r})"),
        (None, Some(e)) => format!(" (last error: {e})"),
        (None, None) => String::new(),
    }
}
