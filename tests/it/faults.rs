//! The fault suite: worker processes (the `worker` example) drain a batch of `demo.count`
//! jobs while something goes wrong, and a ledger of every job says afterwards how many
//! were lost (never ran, not dead-lettered: must be 0), ran more than once (at least once
//! allows it: counted and printed), or were stuck (still queued once the fault is over:
//! must be 0). Each test prints one `faults:` line with its figures; the README's
//! reliability section quotes them. Redis killed with AOF is in `durability.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use stevedore::{JobId, RawJob};
use stevedore_testcontainers::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{TestEnv, WorkerProcess, eventually, redis_pid, signal};

/// Every job of a run and what became of it.
struct Ledger {
    ids: Vec<JobId>,
    audit: String,
    started: Instant,
}

impl Ledger {
    /// Enqueues `n` jobs that sleep `ms` each and record every execution.
    async fn enqueue(env: &TestEnv, n: usize, ms: u64) -> Ledger {
        let job = RawJob::new("demo.count", "demo", &serde_json::json!({ "ms": ms })).expect("job");
        let ids = env
            .client
            .enqueue_bulk(std::iter::repeat_n(job, n))
            .await
            .expect("enqueue");
        Ledger {
            ids,
            audit: format!("{}-demo:executions", env.prefix),
            started: Instant::now(),
        }
    }

    async fn executed(&self, env: &TestEnv) -> u64 {
        env.raw.hlen(self.audit.as_str()).await.unwrap_or(0)
    }

    /// Waits until `n` jobs ran at least once.
    async fn progress(&self, env: &TestEnv, n: u64) {
        eventually(Duration::from_secs(60), "progress", || async {
            self.executed(env).await >= n
        })
        .await;
    }

    /// Waits (up to `within`) for the queue to drain, then counts. `destroyed` are ids an
    /// operator deleted: neither lost nor stuck.
    async fn settle(&self, env: &TestEnv, name: &str, within: Duration, destroyed: &[String]) {
        let deadline = Instant::now() + within;
        let scheduled = format!("{}:{{demo}}:scheduled", env.prefix);
        let waiting = || async {
            let s: u64 = env.raw.zcard(scheduled.as_str()).await.unwrap_or(0);
            env.ready("demo").await + env.pending("demo").await + s
        };
        let mut stuck = waiting().await;
        while stuck > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stuck = waiting().await;
        }
        let runs: HashMap<String, u64> = env
            .raw
            .hgetall(self.audit.as_str())
            .await
            .unwrap_or_default();
        let dead: Vec<String> = env
            .dead_letters("demo")
            .await
            .into_iter()
            .filter_map(|d| d.get("id").cloned())
            .collect();
        let gone: std::collections::HashSet<&str> = destroyed.iter().map(String::as_str).collect();
        let lost = self
            .ids
            .iter()
            .filter(|id| {
                !runs.contains_key(id.as_str())
                    && !dead.iter().any(|d| d == id.as_str())
                    && !gone.contains(id.as_str())
            })
            .count();
        let duplicated = self
            .ids
            .iter()
            .filter(|id| runs.get(id.as_str()).is_some_and(|n| *n > 1))
            .count();
        println!(
            "faults: {name}: jobs {}, lost {lost}, duplicated {duplicated}, dead {}, destroyed by the operator {}, stuck {stuck}, took {:.1} s",
            self.ids.len(),
            dead.len(),
            destroyed.len(),
            self.started.elapsed().as_secs_f64()
        );
        assert_eq!(lost, 0, "{name}: jobs lost");
        assert_eq!(stuck, 0, "{name}: jobs stuck after the fault");
    }
}

const ARGS: [&str; 6] = [
    "--lease",
    "1s",
    "--concurrency",
    "16",
    "--drain-timeout",
    "5s",
];

/// Two worker processes on `url` (the server, or a proxy in front of it).
fn workers(url: &str, env: &TestEnv, extra: &[&str]) -> (WorkerProcess, WorkerProcess) {
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(extra);
    (
        WorkerProcess::start_on(url, &env.prefix, &args, None),
        WorkerProcess::start_on(url, &env.prefix, &args, None),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_longer_than_the_lease() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let ledger = Ledger::enqueue(&env, 1_000, 5).await;
    let (a, b) = workers(&server.url(), &env, &[]);
    ledger.progress(&env, 200).await;
    let pid = redis_pid(server.port());
    signal(pid, "STOP");
    tokio::time::sleep(Duration::from_secs(3)).await; // the fault: 3 leases
    signal(pid, "CONT");
    ledger
        .settle(
            &env,
            "redis paused 3 s (lease 1 s)",
            Duration::from_secs(90),
            &[],
        )
        .await;
    drop((a, b));
}

/// What the proxy does with traffic.
const PASS: u8 = 0;
const BLACKHOLE: u8 = 1;
const RESET: u8 = 2;

/// A TCP proxy in front of Redis that can drop traffic on the floor (connections stay
/// open, nothing arrives: a network partition) or reset every connection.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    /// Bumped on a reset: connections of an older generation close.
    generation: Arc<AtomicU8>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let generation = Arc::new(AtomicU8::new(0));
        let (m, g) = (mode.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if m.load(Ordering::SeqCst) == RESET {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let born = g.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, m.clone(), g.clone(), born));
                tokio::spawn(pipe(sr, cw, m.clone(), g.clone(), born));
            }
        });
        Proxy {
            port,
            mode,
            generation,
        }
    }

    fn set(&self, mode: u8) {
        if mode == RESET {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Copies one direction, holding bytes back while blackholed (as TCP does across a
/// partition: nothing is lost, nothing arrives) and closing on a reset.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    generation: Arc<AtomicU8>,
    born: u8,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if generation.load(Ordering::SeqCst) != born {
            return;
        }
        if mode.load(Ordering::SeqCst) == BLACKHOLE {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let n = match tokio::time::timeout(Duration::from_millis(100), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        // Bytes read just as the blackhole starts wait for it to end.
        while mode.load(Ordering::SeqCst) == BLACKHOLE {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if generation.load(Ordering::SeqCst) != born {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_blackholed_then_reset_loses_nothing() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let proxy = Proxy::start(server.port()).await;
    let via = format!("redis://127.0.0.1:{}", proxy.port);
    let ledger = Ledger::enqueue(&env, 1_000, 5).await;
    let (a, b) = workers(&via, &env, &["--max-deliveries", "20"]);
    ledger.progress(&env, 200).await;
    proxy.set(BLACKHOLE);
    tokio::time::sleep(Duration::from_secs(4)).await; // the fault: a 4 s partition
    proxy.set(PASS);
    ledger.progress(&env, 500).await;
    proxy.set(RESET);
    tokio::time::sleep(Duration::from_secs(1)).await; // the fault: every connection reset
    proxy.set(PASS);
    ledger
        .settle(
            &env,
            "partition: blackhole 4 s, then every connection reset",
            Duration::from_secs(120),
            &[],
        )
        .await;
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mistakes_destroy_only_what_the_operator_touched() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let stream = env.stream("demo", "normal");
    let ledger = Ledger::enqueue(&env, 600, 20).await;
    let (a, b) = workers(&server.url(), &env, &[]);
    ledger.progress(&env, 100).await;
    // DEL of the ready stream: whatever it held is gone by the operator's hand (read and
    // deleted in one script, so the count is exact). A job enqueued to run now is named by
    // its entry (`demo:n-<entry id>`, normal stream); a retried one carries its id.
    let destroyed: Vec<String> = env
        .raw
        .eval(
            "local ids = {} \
             for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do \
               local id = 'demo:n-' .. e[1] \
               for i = 1, #e[2], 2 do if e[2][i] == 'id' then id = e[2][i + 1] end end \
               ids[#ids + 1] = id \
             end \
             redis.call('DEL', KEYS[1]) return ids",
            vec![stream.clone()],
            Vec::<String>::new(),
        )
        .await
        .expect("DEL");
    // Jobs enqueued after the mistake run.
    let after = Ledger::enqueue(&env, 200, 5).await;
    after
        .settle(
            &env,
            "after DEL of the stream",
            Duration::from_secs(60),
            &[],
        )
        .await;
    // XGROUP DESTROY: the group is recreated and no job is lost.
    let group_ledger = Ledger::enqueue(&env, 300, 5).await;
    let _: Value = env
        .raw
        .custom(
            fred::cmd!("XGROUP"),
            vec![
                "DESTROY".to_string(),
                stream.clone(),
                "stevedore".to_string(),
            ],
        )
        .await
        .expect("XGROUP DESTROY");
    group_ledger
        .settle(
            &env,
            "consumer group destroyed",
            Duration::from_secs(60),
            &[],
        )
        .await;
    ledger
        .settle(
            &env,
            "stream deleted by an operator",
            Duration::from_secs(60),
            &destroyed,
        )
        .await;
    // FLUSHALL: everything gone; the workers carry on with what comes next.
    let _: () = env.raw.flushall(false).await.expect("FLUSHALL");
    let fresh = Ledger::enqueue(&env, 200, 5).await;
    fresh
        .settle(&env, "after FLUSHALL", Duration::from_secs(60), &[])
        .await;
    assert!(!destroyed.is_empty() || ledger.executed(&env).await > 0);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_short_drain_deadline_hands_jobs_over() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    // Long jobs, a long lease: only the hand-off makes the take-over quick.
    let args = [
        "--lease",
        "30s",
        "--concurrency",
        "8",
        "--drain-timeout",
        "1s",
    ];
    let ledger = Ledger::enqueue(&env, 40, 2_000).await;
    let stopping = WorkerProcess::start_on(&server.url(), &env.prefix, &args, None);
    let other = WorkerProcess::start_on(&server.url(), &env.prefix, &args, None);
    eventually(Duration::from_secs(30), "both workers run jobs", || async {
        env.pending("demo").await >= 12
    })
    .await;
    let asked = Instant::now();
    // Exits with the drain-timeout error: jobs were still running at the deadline.
    let status = stopping.terminate();
    let stopped_in = asked.elapsed();
    assert!(!status.success(), "the drain deadline passed: {status:?}");
    assert!(stopped_in < Duration::from_secs(10), "{stopped_in:?}");
    ledger
        .settle(
            &env,
            "SIGTERM, drain deadline 1 s, lease 30 s",
            Duration::from_secs(25),
            &[],
        )
        .await;
    println!(
        "faults: the stopped worker exited {:.1} s after SIGTERM; the rest finished within the 25 s bound (the lease is 30 s)",
        stopped_in.as_secs_f64()
    );
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_worker_with_long_jobs_loses_nothing() {
    let server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let ledger = Ledger::enqueue(&env, 200, 300).await;
    let (starved, healthy) = workers(&server.url(), &env, &["--max-deliveries", "20"]);
    ledger.progress(&env, 20).await;
    // The starved worker gets no CPU for 2.5 s at a time (past its 1 s lease), three times.
    for _ in 0..3 {
        signal(starved.pid(), "STOP");
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        signal(starved.pid(), "CONT");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ledger
        .settle(
            &env,
            "worker starved 3 x 2.5 s (lease 1 s, 300 ms jobs)",
            Duration::from_secs(90),
            &[],
        )
        .await;
    drop((starved, healthy));
}
