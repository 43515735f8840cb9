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
//! directly, and tests that need a Redis Cluster use [`RedisCluster`] (see below).
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
//! | `STEVEDORE_REDIS_SERVER` | the `redis-server` binary for path 3, [`RedisServer`] and [`RedisCluster`] (default: `redis-server` on `PATH`) |
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
//!
//! # A Redis Cluster
//!
//! [`RedisCluster`] starts a Redis Cluster of local `redis-server` processes (the binary of
//! path 3: `STEVEDORE_REDIS_SERVER`, or `redis-server` on `PATH`; a `valkey-server` works
//! too), by default three primaries without replicas,
//! e.g. `RedisCluster::builder().primaries(3).replicas(1).start()` for six nodes. The kit
//! forms the cluster itself over RESP (no `redis-cli`): it spreads the 16384 slots evenly over
//! the primaries, introduces the nodes, attaches the replicas, and returns once every node
//! reports `cluster_state:ok` and sees the same slots map with every replica attached (about
//! 2 s: a primary reports `cluster_state:ok` no sooner than 2 s after it started). The node timeout is 1 s by
//! default so that a failover takes 2-3 s.
//!
//! [`url()`](RedisCluster::url) is the form fred reads as a cluster,
//! `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&...`; [`slot_of`](RedisCluster::slot_of)
//! computes a key's slot, [`primary_of_slot`](RedisCluster::primary_of_slot) asks the cluster
//! which primary serves it. To test a failover, [`kill`](RedisCluster::kill) that primary
//! (SIGKILL) and [`wait_for_failover`](RedisCluster::wait_for_failover), which returns the
//! replica that took over; [`restart`](RedisCluster::restart) brings the old node back (as a
//! replica) and [`wait_ok`](RedisCluster::wait_ok) waits until it has rejoined.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use stevedore_testcontainers::{KitError, RedisCluster};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), KitError> {
//! let mut cluster = RedisCluster::builder().replicas(1).start().await?;
//! // Connect a cluster client (e.g. fred's `Config::from_url`) to `cluster.url()`.
//! let primary = cluster.primary_of_slot(cluster.slot_of("{emails}:normal")).await?;
//! cluster.kill(primary)?;
//! let promoted = cluster.wait_for_failover(primary, Duration::from_secs(30)).await?;
//! eprintln!("{primary} failed over to {promoted}");
//! # Ok(())
//! # }
//! ```

mod announce;
mod cluster;
mod container;
mod error;
mod harness;
mod process;
mod resp;
mod settings;
mod source;
mod test_redis;
mod tls;

pub use crate::cluster::{RedisCluster, RedisClusterBuilder};
pub use crate::error::KitError;
pub use crate::harness::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_LEASE, DEFAULT_RETRY_POLICY, Harness, HarnessBuilder,
};
pub use crate::process::{RedisServer, RedisServerBuilder};
pub use crate::source::RedisSource;
pub use crate::test_redis::TestRedis;
pub use crate::tls::TestCerts;

/// A free TCP port on 127.0.0.1 (bound, then let go), e.g. for a server's TLS port.
pub fn free_port() -> Result<u16, KitError> {
    crate::process::free_port()
}
