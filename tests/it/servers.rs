//! The core cases of the failure-handling suite (jobs and status, retries and dead letters,
//! lease takeover, poison, delayed, periodic and unique jobs) run once per server kind
//! besides the default one: a Valkey server and a Redis Cluster of three primaries.
//!
//! Valkey: `STEVEDORE_TEST_VALKEY_SERVER` names the `valkey-server` binary, else one on
//! `PATH` is used. A Redis Cluster is made of `redis-server` processes (or the binary
//! `STEVEDORE_REDIS_SERVER` names). Without the binary the cases print a line and pass,
//! unless `STEVEDORE_REQUIRE_VALKEY` or `STEVEDORE_REQUIRE_CLUSTER` is set (CI sets both).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::ClientLike;
use serde::{Deserialize, Serialize};
use stevedore::{DeadReason, JobContext, JobError, JobState, Periodic, job_handler};
use stevedore_testcontainers::{Harness, RedisCluster, RedisServer};

use crate::support::{self, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// A server of one kind, running for one test.
pub(crate) enum Server {
    Valkey(RedisServer),
    Cluster(RedisCluster),
}

impl Server {
    pub(crate) fn url(&self) -> String {
        match self {
            Server::Valkey(s) => s.url(),
            Server::Cluster(c) => c.url(),
        }
    }
}

/// Whether `var` asks for the cases to run (and fail) rather than skip.
fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `name` on `PATH`, if there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The `valkey-server` binary to test against, if this machine has one.
pub(crate) fn valkey_binary() -> Option<PathBuf> {
    match std::env::var_os("STEVEDORE_TEST_VALKEY_SERVER") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => on_path("valkey-server"),
    }
}

/// A Valkey server of its own, or `None` (and a line saying so) when there is no binary
/// and none is required.
pub(crate) async fn valkey() -> Option<Server> {
    let Some(program) = valkey_binary() else {
        assert!(
            !required("STEVEDORE_REQUIRE_VALKEY"),
            "STEVEDORE_REQUIRE_VALKEY is set but no valkey-server was found \
             (set STEVEDORE_TEST_VALKEY_SERVER or put one on PATH)"
        );
        eprintln!("servers: SKIPPED on valkey: no valkey-server (STEVEDORE_TEST_VALKEY_SERVER)");
        return None;
    };
    let server = RedisServer::builder()
        .program(&program)
        .start()
        .await
        .unwrap_or_else(|e| panic!("valkey-server {} starts: {e}", program.display()));
    // The cases must run on Valkey, not on whatever a misnamed binary is.
    let info: String = support::raw_client(&server.url())
        .await
        .custom(fred::cmd!("INFO"), vec!["server"])
        .await
        .expect("INFO server");
    assert!(
        info.contains("valkey_version:"),
        "{} is not a valkey-server",
        program.display()
    );
    Some(Server::Valkey(server))
}

/// Whether a cluster can be made here: a server binary is named or `redis-server` is on
/// `PATH`. When not, a line says so, and the test fails if `STEVEDORE_REQUIRE_CLUSTER` is
/// set.
pub(crate) fn cluster_wanted() -> bool {
    let named = std::env::var_os("STEVEDORE_REDIS_SERVER").is_some_and(|v| !v.is_empty());
    if named || on_path("redis-server").is_some() {
        return true;
    }
    assert!(
        !required("STEVEDORE_REQUIRE_CLUSTER"),
        "STEVEDORE_REQUIRE_CLUSTER is set but no redis-server was found"
    );
    eprintln!("servers: SKIPPED on a cluster: no redis-server on PATH");
    false
}

/// A cluster of three primaries of its own, or `None` when none can be made here.
pub(crate) async fn cluster() -> Option<Server> {
    if !cluster_wanted() {
        return None;
    }
    let cluster = RedisCluster::builder()
        .primaries(3)
        .start()
        .await
        .unwrap_or_else(|e| panic!("a cluster of three primaries starts: {e}"));
    Some(Server::Cluster(cluster))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    tag: String,
}

fn task(tag: &str) -> Task {
    Task { tag: tag.into() }
}

#[job_handler(name = "core.ok", queue = "core")]
async fn ok(t: Task, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    ctx.set_result(&t.tag)?;
    Ok(())
}

#[job_handler(name = "core.flaky", queue = "core", max_attempts = 3)]
async fn flaky(_t: Task, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    if ctx.attempt() < 3 {
        return Err(JobError::retry(format!(
            "not yet on attempt {}",
            ctx.attempt()
        )));
    }
    Ok(())
}

#[job_handler(name = "core.doomed", queue = "core", max_attempts = 2)]
async fn doomed(_t: Task, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Err(JobError::retry("the upstream said no"))
}

/// Hangs on its first delivery (until its worker crashes), finishes on the next.
#[job_handler(name = "core.once_stuck", queue = "core")]
async fn once_stuck(_t: Task, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    if support::runs(ctx.id()) == 1 {
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// Hangs on every delivery: only a crash ends it.
#[job_handler(name = "core.stuck", queue = "core")]
async fn stuck(_t: Task, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    std::future::pending::<()>().await;
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    /// Where the ticks of one test are recorded.
    log: String,
    at_ms: u64,
}

#[job_handler(name = "core.tick", queue = "core")]
async fn tick(t: Tick, _ctx: JobContext) -> Result<(), JobError> {
    support::record(&t.log, t.at_ms);
    Ok(())
}

#[job_handler(name = "core.timed", queue = "core")]
async fn timed(t: Task, _ctx: JobContext) -> Result<(), JobError> {
    support::record(&t.tag, std::time::Instant::now());
    Ok(())
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A harness on `url` with the handlers of these cases and a 1 s lease.
async fn harness(
    url: &str,
    workers: usize,
    setup: impl Fn(stevedore::WorkerBuilder) -> stevedore::WorkerBuilder + Send + Sync + 'static,
) -> Harness {
    Harness::builder()
        .redis_url(url)
        .workers(workers)
        .lease(Duration::from_secs(1))
        .retry_policy(stevedore::RetryPolicy::fixed(Duration::from_millis(50)))
        .handler(ok::handler())
        .handler(flaky::handler())
        .handler(doomed::handler())
        .handler(once_stuck::handler())
        .handler(stuck::handler())
        .handler(tick::handler())
        .handler(timed::handler())
        .configure_worker(setup)
        .start()
        .await
        .expect("harness starts")
}

/// Jobs enqueued one by one and in bulk wait (counted by the admin view), run once each
/// when a worker starts, and report their status and result.
pub(crate) async fn jobs_run_and_report_their_status(url: &str) {
    let h = harness(url, 0, |w| w).await;
    let one = h.enqueue(ok::job(task("one"))).await.expect("enqueue");
    let bulk = h
        .client()
        .enqueue_bulk((0..20).map(|i| ok::job(task(&format!("bulk-{i}")))))
        .await
        .expect("bulk enqueue");
    let waiting = h.client().admin().queue("core").await.expect("queue view");
    assert_eq!(waiting.stats.ready.total(), 21, "{waiting:?}");
    let status = h.client().status(one.as_str()).await.expect("status");
    assert_eq!(status.map(|s| s.state), Some(JobState::Queued));

    h.start_worker().await.expect("a worker");
    let done = h.wait_for(&one, WAIT).await.expect("one finishes");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        done.result_as::<String>().transpose().expect("result"),
        Some("one".to_string())
    );
    for id in &bulk {
        let s = h.wait_for(id, WAIT).await.expect("bulk job finishes");
        assert_eq!(s.state, JobState::Succeeded);
        assert_eq!(support::runs(id.as_str()), 1, "ran once");
    }
    let after = h.client().admin().queue("core").await.expect("queue view");
    assert_eq!(after.stats.ready.total() + after.stats.pending.total(), 0);
    h.shutdown().await.expect("clean shutdown");
}

/// A failing job retries until it succeeds; one that fails every attempt is dead-lettered
/// with its reason, and can be replayed from the dead-letter stream.
pub(crate) async fn failures_retry_then_dead_letter(url: &str) {
    let h = harness(url, 1, |w| w).await;
    let lucky = h.enqueue(flaky::job(task("lucky"))).await.expect("enqueue");
    let doomed_id = h
        .enqueue(doomed::job(task("doomed")))
        .await
        .expect("enqueue");

    let s = h.wait_for(&lucky, WAIT).await.expect("lucky finishes");
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(support::values::<u32>(lucky.as_str()), vec![1, 2, 3]);

    let s = h.wait_for(&doomed_id, WAIT).await.expect("doomed finishes");
    assert_eq!(s.state, JobState::Dead);
    assert_eq!(support::values::<u32>(doomed_id.as_str()), vec![1, 2]);
    let dead = h
        .dead_letter(&doomed_id)
        .await
        .expect("dlq read")
        .expect("a dead letter");
    assert_eq!(dead.reason, DeadReason::Failed);
    assert!(
        dead.error.contains("the upstream said no"),
        "{}",
        dead.error
    );

    let letters = h.client().dead_letters("core").expect("dlq");
    let replayed = letters.replay_all().await.expect("replay");
    assert_eq!(replayed, 1);
    eventually(WAIT, "the replayed job ran and died again", || async {
        support::runs(doomed_id.as_str()) >= 3
            && h.dead_letters("core").await.is_ok_and(|d| d.len() == 1)
    })
    .await;
    h.shutdown().await.expect("clean shutdown");
}

/// A job whose worker dies mid-run is taken over by another worker once its lease expires,
/// and finishes there.
pub(crate) async fn a_dead_workers_job_is_taken_over(url: &str) {
    let h = harness(url, 1, |w| w).await;
    let id = h
        .enqueue(once_stuck::job(task("x")))
        .await
        .expect("enqueue");
    eventually(WAIT, "the job started", || async {
        support::runs(id.as_str()) == 1
    })
    .await;
    h.crash_worker().await.expect("crash");
    assert_eq!(h.pending("core").await.expect("pending"), 1);
    h.start_worker().await.expect("another worker");
    let s = h.wait_for(&id, WAIT).await.expect("the job finishes");
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(
        support::runs(id.as_str()),
        2,
        "ran again after the takeover"
    );
    h.shutdown().await.expect("clean shutdown");
}

/// A job that takes its worker down on every delivery is dead-lettered as poison after
/// exactly `max_deliveries`.
pub(crate) async fn poison_is_dead_lettered_after_max_deliveries(url: &str) {
    let h = harness(url, 1, |w| w.max_deliveries(2)).await;
    let id = h
        .enqueue(stuck::job(task("poison")))
        .await
        .expect("enqueue");
    for delivery in 1..=2 {
        eventually(WAIT, "the job was delivered again", || async {
            support::runs(id.as_str()) == delivery
        })
        .await;
        h.crash_worker().await.expect("crash");
        h.start_worker().await.expect("another worker");
    }
    let s = h.wait_for(&id, WAIT).await.expect("the job ends");
    assert_eq!(s.state, JobState::Dead);
    let dead = h
        .dead_letter(&id)
        .await
        .expect("dlq read")
        .expect("a dead letter");
    assert_eq!(dead.reason, DeadReason::Poison);
    assert_eq!(support::runs(id.as_str()), 2, "never run a third time");
    assert_eq!(h.pending("core").await.expect("pending"), 0);
    h.shutdown().await.expect("clean shutdown");
}

/// A delayed job is scheduled, then runs once due and not before.
pub(crate) async fn delayed_jobs_run_when_due(url: &str) {
    let h = harness(url, 1, |w| w).await;
    let delay = Duration::from_millis(600);
    let id = h
        .enqueue(ok::job(task("later")).delay(delay))
        .await
        .expect("enqueue");
    let status = h.client().status(id.as_str()).await.expect("status");
    assert_eq!(status.map(|s| s.state), Some(JobState::Scheduled));
    let s = h.wait_for(&id, WAIT).await.expect("the job finishes");
    assert_eq!(s.state, JobState::Succeeded);
    let (Some(enqueued), Some(started)) = (s.enqueued_at, s.started_at) else {
        panic!("times missing from {s:?}");
    };
    let waited = started.duration_since(enqueued).unwrap_or_default();
    assert!(waited >= delay, "started {waited:?} after enqueue");
    h.shutdown().await.expect("clean shutdown");
}

/// Two workers with the same schedule enqueue each tick once between them.
pub(crate) async fn periodic_ticks_run_once_across_workers(url: &str) {
    let log = format!("core.tick-{:08x}", rand::random::<u32>());
    let from = log.clone();
    let h = harness(url, 2, move |w| {
        let log = from.clone();
        w.periodic(Periodic::from_fn("* * * * * *", move |at| {
            tick::job(Tick {
                log: log.clone(),
                at_ms: ms(at),
            })
        }))
    })
    .await;
    eventually(WAIT, "four ticks", || async { support::runs(&log) >= 4 }).await;
    h.shutdown().await.expect("clean shutdown");
    let ticks = support::values::<u64>(&log);
    let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick ran twice: {ticks:?}");
    for t in &ticks {
        assert_eq!(t % 1000, 0, "{t} is not a tick");
    }
}

/// Concurrent producers of a unique job make one job, which runs once.
pub(crate) async fn a_unique_job_is_made_once(url: &str) {
    let h = harness(url, 0, |w| w).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = h.client().clone();
        tasks.push(tokio::spawn(async move {
            client
                .enqueue(ok::job(task("unique")).unique("report-2026-12", Duration::from_secs(60)))
                .await
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.expect("task").expect("enqueue"));
    }
    assert_eq!(ids.len(), 1, "every producer got the same id: {ids:?}");
    let waiting = h.client().admin().queue("core").await.expect("queue view");
    assert_eq!(waiting.stats.ready.total(), 1);
    h.start_worker().await.expect("a worker");
    let id = ids.first().expect("an id");
    assert_eq!(
        h.wait_for(id, WAIT).await.expect("finishes").state,
        JobState::Succeeded
    );
    assert_eq!(support::runs(id.as_str()), 1);
    h.shutdown().await.expect("clean shutdown");
}

/// One test per core case on a server that `$start` makes (`None`: skipped).
/// A queue of three partitions: jobs in turn over the partitions (on a cluster of three
/// primaries, one partition per primary), each run once with its status; a dead job's
/// letter is found through the queue's name and names its partition.
pub(crate) async fn a_partitioned_queue_runs_on_every_partition(url: &str) {
    let h = harness(url, 2, |w| w.partitions("core", 3)).await;
    h.client()
        .declare_partitions("core", 3)
        .await
        .expect("the workers' count");
    let ids = h
        .client()
        .enqueue_bulk((0..30).map(|i| ok::job(task(&format!("p{i}")))))
        .await
        .expect("bulk enqueue");
    let parts: BTreeSet<String> = ids
        .iter()
        .filter_map(|id| id.as_str().split_once(':').map(|(q, _)| q.to_string()))
        .collect();
    assert_eq!(
        parts,
        h.client()
            .partition_names("core")
            .await
            .expect("names")
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    for id in &ids {
        let s = h.wait_for(id, WAIT).await.expect("finishes");
        assert_eq!(s.state, JobState::Succeeded);
        assert_eq!(support::runs(id.as_str()), 1, "ran once");
    }
    let dead = h.enqueue(doomed::job(task("d"))).await.expect("enqueue");
    assert_eq!(
        h.wait_for(&dead, WAIT).await.expect("dies").state,
        JobState::Dead
    );
    let dlq = h.client().dead_letters("core").expect("dlq");
    assert_eq!(dlq.count().await.expect("count"), 1);
    let page = dlq
        .list(&stevedore::dlq::DeadLetterQuery::default())
        .await
        .expect("list");
    assert_eq!(page.jobs.len(), 1);
    assert!(
        dead.as_str()
            .starts_with(&format!("{}:", page.jobs[0].queue))
    );
    let view = h.client().admin().queue("core").await.expect("queue view");
    assert_eq!((view.stats.partitions, view.stats.dead), (3, 1));
    assert_eq!(view.stats.ready.total() + view.stats.pending.total(), 0);
    h.shutdown().await.expect("clean shutdown");
}

/// A queue limit of 10/s, burst 1, on a queue of three partitions (on a cluster: three
/// primaries, the limit's bucket wherever the queue's own name hashes), two workers: the
/// partitions share the one bucket, so twelve jobs take 1.1 s at least.
pub(crate) async fn a_rate_limit_holds_over_a_partitioned_queue(url: &str) {
    let limit = stevedore::RateLimit::per_second(10).with_burst(1);
    let h = harness(url, 2, move |w| {
        w.partitions("core", 3)
            .rate_limit(stevedore::LimitScope::Queue("core".into()), limit)
    })
    .await;
    // The producer must see the count before it enqueues: a job sent to the queue's own
    // name before the workers declared it would wait in a queue no worker consumes.
    h.client()
        .declare_partitions("core", 3)
        .await
        .expect("the workers' count");
    let log = format!("limited-{}", rand::random::<u32>());
    let ids = h
        .client()
        .enqueue_bulk((0..12).map(|_| timed::job(task(&log))))
        .await
        .expect("bulk enqueue");
    for id in &ids {
        let s = h.wait_for(id, WAIT).await.expect("finishes");
        assert_eq!(s.state, JobState::Succeeded);
    }
    let mut starts: Vec<std::time::Instant> = support::values(&log);
    starts.sort();
    assert_eq!(starts.len(), 12, "each ran once");
    let span = starts[11] - starts[0];
    eprintln!("12 jobs at 10/s burst 1 over 3 partitions: {span:?}");
    assert!(span >= Duration::from_millis(1_050), "{span:?}");
    h.shutdown().await.expect("clean shutdown");
}

/// A bounded queue refuses past its capacity (one job partly delayed, all counted), and a
/// waiting enqueue gets in once a worker, started later, makes room: the scripts and the
/// room channel work the same on this server.
pub(crate) async fn a_bounded_queue_refuses_then_admits_a_waiting_job(url: &str) {
    let h = harness(url, 0, |w| w).await;
    let client = h.client().clone();
    client
        .set_queue_capacity("core", 2)
        .await
        .expect("capacity");
    let first = client.enqueue(ok::job(task("a"))).await.expect("room");
    let second = client
        .enqueue(ok::job(task("b")).delay(Duration::from_millis(200)))
        .await
        .expect("room");
    match client.enqueue(ok::job(task("c"))).await {
        Err(stevedore::Error::QueueFull { queue, capacity }) => {
            assert_eq!((queue.as_str(), capacity), ("core", 2));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .enqueue_wait(ok::job(task("d")), Duration::from_secs(20))
                .await
        })
    };
    h.start_worker().await.expect("a worker");
    let third = waiter.await.expect("waiter").expect("admitted");
    for id in [&first, &second, &third] {
        let s = h.wait_for(id, WAIT).await.expect("finishes");
        assert_eq!(s.state, JobState::Succeeded);
    }
    h.shutdown().await.expect("clean shutdown");
}

/// Operator control: a waiting job cancelled never runs, a running one (a handler that
/// ignores its cancellation) is dropped after the grace period and ends cancelled, a
/// delete and a purge leave nothing: the control scripts and the cancel message work the
/// same on this server.
pub(crate) async fn jobs_are_cancelled_deleted_and_purged(url: &str) {
    let h = harness(url, 0, |w| w.cancel_grace(Duration::from_millis(200))).await;
    let client = h.client().clone();
    let waiting = client.enqueue(ok::job(task("w"))).await.expect("enqueue");
    assert!(matches!(
        client
            .cancel(waiting.as_str(), "ops", "no")
            .await
            .expect("cancel"),
        stevedore::control::CancelOutcome::Cancelled { .. }
    ));
    h.start_worker().await.expect("a worker");
    let running = client
        .enqueue(stuck::job(task("s")))
        .await
        .expect("enqueue");
    eventually(WAIT, "the stuck job runs", || async {
        support::runs(running.as_str()) == 1
    })
    .await;
    assert_eq!(
        client
            .cancel(running.as_str(), "ops", "stuck")
            .await
            .expect("cancel"),
        stevedore::control::CancelOutcome::Requested
    );
    let s = h.wait_for(&running, WAIT).await.expect("ends");
    assert_eq!(s.state, JobState::Cancelled);
    assert_eq!(support::runs(waiting.as_str()), 0);
    let later = client
        .enqueue(ok::job(task("l")).delay(Duration::from_secs(3600)))
        .await
        .expect("enqueue");
    assert_eq!(
        client.delete(later.as_str()).await.expect("delete"),
        JobState::Scheduled
    );
    for _ in 0..3 {
        client
            .enqueue(ok::job(task("p")).delay(Duration::from_secs(3600)))
            .await
            .expect("enqueue");
    }
    let purged = client
        .purge("core", stevedore::control::Purge::all())
        .await
        .expect("purge");
    assert_eq!(purged.scheduled, 3);
    h.shutdown().await.expect("clean shutdown");
}

/// A chain whose second job lives in another queue (another slot, on a cluster), and a
/// batch whose callback is released once: the outbox and the resolve scripts work the same
/// on this server.
pub(crate) async fn a_chain_across_queues_and_a_batch_call_back_once(url: &str) {
    let h = harness(url, 1, |w| w.queues(["core", "core-next"])).await;
    let client = h.client().clone();
    let ids = client
        .enqueue_chain(
            stevedore::flow::Chain::new(ok::job(task("a")))
                .then(ok::job(task("b")).queue("core-next")),
        )
        .await
        .expect("chain");
    for id in &ids {
        let s = h.wait_for(id, WAIT).await.expect("ends");
        assert_eq!(s.state, JobState::Succeeded, "{id}");
    }
    let mut batch =
        stevedore::flow::Batch::new().on_complete(ok::job(task("done")).queue("core-next"));
    for i in 0..5 {
        batch = batch.job(ok::job(task(&format!("m{i}"))));
    }
    let b = client.enqueue_batch(batch).await.expect("batch");
    let callback = b.on_complete.clone().expect("callback");
    let s = h.wait_for(&callback, WAIT).await.expect("ends");
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(support::runs(callback.as_str()), 1);
    h.shutdown().await.expect("clean shutdown");
}

/// The held job (or batch) ids of `queue`'s `held` set, oldest first.
async fn held(raw: &fred::prelude::Client, prefix: &str, queue: &str) -> Vec<String> {
    use fred::prelude::SortedSetsInterface;
    let members: Vec<String> = raw
        .zrange(
            format!("{prefix}:{{{queue}}}:held"),
            0,
            -1,
            None,
            false,
            None,
            false,
        )
        .await
        .expect("zrange");
    members
        .into_iter()
        .filter_map(|m| m.strip_prefix("j ").map(str::to_string))
        .collect()
}

/// Flows whose client stopped half-way, across slots: a chain stopped at its middle job
/// (its queue refuses the write) and a batch stopped before its jobs were released. A
/// janitor cancels the chain's written tail and releases and seals the batch.
pub(crate) async fn flows_stopped_half_way_are_finished_or_undone(url: &str) {
    use fred::prelude::KeysInterface;
    use stevedore::flow::{Batch, Chain};
    let h = harness(url, 0, |w| {
        w.queues(["core", "core-next", "core-far"])
            .flow_repair_after(Duration::from_secs(1))
    })
    .await;
    let client = h.client().clone();
    let raw = support::raw_client(url).await;
    let key = |q: &str, rest: &str| format!("{}:{{{q}}}:{rest}", h.prefix());
    let refuse = |k: String| {
        let raw = raw.clone();
        async move {
            let _: () = raw
                .set(&k, "not what it should be", None, None, false)
                .await
                .expect("set");
            k
        }
    };

    let stop = refuse(key("core-next", "held")).await;
    let chain = client
        .enqueue_chain(
            Chain::new(ok::job(task("a")))
                .then(ok::job(task("b")).queue("core-next"))
                .then(ok::job(task("c")).queue("core-far")),
        )
        .await;
    assert!(chain.is_err(), "{chain:?}");
    let _: i64 = raw.del(&stop).await.expect("del");
    let tail = held(&raw, h.prefix(), "core-far").await;
    assert_eq!(tail.len(), 1, "{tail:?}");

    let stop = refuse(key("core", "normal")).await;
    let batch = client
        .enqueue_batch(
            Batch::new()
                .job(ok::job(task("m1")))
                .job(ok::job(task("m2")))
                .on_complete(ok::job(task("done")).queue("core-next")),
        )
        .await;
    assert!(batch.is_err(), "{batch:?}");
    let _: i64 = raw.del(&stop).await.expect("del");
    let members = held(&raw, h.prefix(), "core").await;
    let callback = held(&raw, h.prefix(), "core-next").await;
    assert_eq!((members.len(), callback.len()), (2, 1));

    h.start_worker().await.expect("worker");
    let s = h.wait_for(&tail[0], WAIT).await.expect("ends");
    assert_eq!(s.state, JobState::Cancelled, "{s:?}");
    assert!(
        s.reason
            .as_deref()
            .unwrap_or_default()
            .contains("never written"),
        "{s:?}"
    );
    for id in members.iter().chain(&callback) {
        let s = h.wait_for(id, WAIT).await.expect("ends");
        assert_eq!(s.state, JobState::Succeeded, "{id}");
        assert_eq!(support::runs(id), 1, "{id}");
    }
    assert_eq!(support::runs(&tail[0]), 0);
    h.shutdown().await.expect("clean shutdown");
}

/// On a cluster of three primaries, a queue's three partitions are served by three
/// different primaries.
#[tokio::test]
async fn three_partitions_land_on_three_primaries() {
    let Some(Server::Cluster(cluster)) = cluster().await else {
        return;
    };
    let client = stevedore::Client::connect(&cluster.url())
        .await
        .expect("client");
    client
        .declare_partitions("spread", 3)
        .await
        .expect("declared");
    let mut primaries = BTreeSet::new();
    for name in client.partition_names("spread").await.expect("names") {
        let slot = cluster.slot_of(&name);
        primaries.insert(cluster.primary_of_slot(slot).await.expect("primary"));
    }
    assert_eq!(primaries.len(), 3, "{primaries:?}");
}

macro_rules! core_cases {
    ($kind:ident, $start:path) => {
        mod $kind {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(server) = $start().await else { return };
                        super::$name(&server.url()).await;
                    }
                };
            }
            case!(jobs_run_and_report_their_status);
            case!(failures_retry_then_dead_letter);
            case!(a_dead_workers_job_is_taken_over);
            case!(poison_is_dead_lettered_after_max_deliveries);
            case!(delayed_jobs_run_when_due);
            case!(periodic_ticks_run_once_across_workers);
            case!(a_unique_job_is_made_once);
            case!(a_partitioned_queue_runs_on_every_partition);
            case!(a_rate_limit_holds_over_a_partitioned_queue);
            case!(a_bounded_queue_refuses_then_admits_a_waiting_job);
            case!(jobs_are_cancelled_deleted_and_purged);
            case!(a_chain_across_queues_and_a_batch_call_back_once);
            case!(flows_stopped_half_way_are_finished_or_undone);
        }
    };
}

core_cases!(on_valkey, super::valkey);
core_cases!(on_cluster, super::cluster);
