use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::observe::{DeadJobEvent, EnqueuedEvent, Failure, JobEvent, Observer};
use stevedore::{
    JobContext, JobError, JobState, Metrics, Priority, RawJob, RetryPolicy, Worker, job_handler,
};
use stevedore_testcontainers::RedisServer;

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Task {
    n: u32,
}

#[job_handler(name = "obs.ok", queue = "obs")]
async fn ok(_t: Task, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(name = "obs.flaky", queue = "obs", max_attempts = 3)]
async fn flaky(_t: Task, ctx: JobContext) -> Result<(), JobError> {
    if ctx.attempt() == 1 {
        Err(JobError::retry("first try fails"))
    } else {
        Ok(())
    }
}

#[job_handler(name = "obs.doomed", queue = "obs", max_attempts = 2)]
async fn doomed(_t: Task, _ctx: JobContext) -> Result<(), JobError> {
    Err(JobError::retry("never works"))
}

#[job_handler(name = "obs.slow", queue = "obs", max_attempts = 1, timeout = "100ms")]
async fn slow(_t: Task, _ctx: JobContext) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

/// One stream entry as XREADGROUP returns it.
type Entry = (String, HashMap<String, Value>);

/// Records each job's events in order, by job id.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl Recorder {
    fn push(&self, id: &str, what: String) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .push(what);
    }

    /// The events of job `id`: `enqueued` first, then the worker's in the order they
    /// happened. The producer reports `enqueued` once it has Redis' reply, so the worker
    /// may report `started` before it: only that one is moved to the front, and each job is
    /// checked to have been reported enqueued exactly once.
    fn of(&self, id: &str) -> Vec<String> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default();
        let (mut enqueued, rest): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|e| e.starts_with("enqueued "));
        assert!(enqueued.len() <= 1, "{id} enqueued twice: {enqueued:?}");
        enqueued.extend(rest);
        enqueued
    }
}

impl Observer for Recorder {
    fn enqueued(&self, job: &EnqueuedEvent<'_>) {
        self.push(job.job_id, format!("enqueued {}", job.priority.as_str()));
    }
    fn started(&self, job: &JobEvent<'_>) {
        self.push(job.job_id, format!("started {}", job.attempt));
    }
    fn succeeded(&self, job: &JobEvent<'_>, _took: Duration) {
        self.push(job.job_id, "succeeded".into());
    }
    fn failed(&self, job: &JobEvent<'_>, failure: &Failure<'_>) {
        self.push(
            job.job_id,
            format!("failed {:?}: {}", failure.kind, failure.error),
        );
    }
    fn retried(&self, job: &JobEvent<'_>, delay: Duration, _error: &str) {
        self.push(job.job_id, format!("retried in {}ms", delay.as_millis()));
    }
    fn dead(&self, job: &DeadJobEvent<'_>) {
        let id = job.job_id.unwrap_or("(no id)");
        self.push(id, format!("dead {}", job.reason));
    }
}

/// The value of the sample line starting with `series ` in an exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn assert_series(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in\n{text}");
}

#[tokio::test]
async fn metrics_and_observers_see_every_outcome() {
    let env = TestEnv::start().await;
    let metrics = Metrics::new();
    let events = Recorder::default();
    let client = env
        .client_with(|b| b.metrics(&metrics).observer(events.clone()))
        .await;
    let worker = Worker::builder(client.clone())
        .concurrency(4)
        .retry_policy(RetryPolicy::fixed(Duration::from_millis(20)))
        .handler(ok::handler())
        .handler(flaky::handler())
        .handler(doomed::handler())
        .handler(slow::handler())
        .build()
        .expect("worker");
    let running = support::spawn(worker);

    let ok_id = client
        .enqueue(ok::job(Task::default()).priority(Priority::High))
        .await
        .expect("enqueue");
    let flaky_id = client
        .enqueue(flaky::job(Task::default()))
        .await
        .expect("enqueue");
    let doomed_id = client
        .enqueue(doomed::job(Task::default()))
        .await
        .expect("enqueue");
    let slow_id = client
        .enqueue(slow::job(Task::default()))
        .await
        .expect("enqueue");
    let stranger = RawJob::new("obs.stranger", "obs", &Task::default())
        .expect("raw job")
        .max_attempts(1);
    let stranger_id = client.enqueue(stranger).await.expect("enqueue");
    let _: String = env
        .raw
        .xadd(
            env.stream("obs", "normal"),
            false,
            None,
            "*",
            vec![("junk", "yes")],
        )
        .await
        .expect("xadd junk");

    for (id, want) in [
        (&ok_id, JobState::Succeeded),
        (&flaky_id, JobState::Succeeded),
        (&doomed_id, JobState::Dead),
        (&slow_id, JobState::Dead),
        (&stranger_id, JobState::Dead),
    ] {
        let status = client
            .wait_for(id.as_str(), Duration::from_secs(20))
            .await
            .expect("status")
            .expect("known job");
        assert_eq!(status.state, want, "{id}");
    }
    eventually(
        Duration::from_secs(10),
        "the junk entry is dead-lettered",
        || async { env.xlen(&env.dlq("obs")).await == 4 },
    )
    .await;
    // A death is reported once its dead letter is written, so after the states and the
    // dead letters seen above. (Metrics hear of it first, in the same call: the client's
    // metrics come before its observers.)
    eventually(Duration::from_secs(10), "every death reported", || async {
        [&doomed_id, &slow_id, &stranger_id].iter().all(|id| {
            events
                .of(id.as_str())
                .last()
                .is_some_and(|e| e.starts_with("dead "))
        }) && !events.of("(no id)").is_empty()
    })
    .await;

    assert_eq!(
        events.of(flaky_id.as_str()),
        [
            "enqueued normal",
            "started 1",
            "failed Error: first try fails",
            "retried in 20ms",
            "started 2",
            "succeeded"
        ]
    );
    assert_eq!(
        events.of(doomed_id.as_str()),
        [
            "enqueued normal",
            "started 1",
            "failed Error: never works",
            "retried in 20ms",
            "started 2",
            "failed Error: never works",
            "dead failed"
        ]
    );
    assert_eq!(
        events.of(slow_id.as_str()),
        [
            "enqueued normal",
            "started 1",
            "failed Timeout: timed out after 100ms",
            "dead timeout"
        ]
    );
    assert_eq!(
        events.of(stranger_id.as_str()),
        ["enqueued normal", "dead unknown_type"]
    );
    assert_eq!(events.of("(no id)"), ["dead bad_entry"]);

    let text = metrics.encode();
    let q = r#"queue="obs""#;
    assert_series(
        &text,
        &format!(r#"stevedore_jobs_enqueued_total{{{q},type="obs.ok",priority="high"}}"#),
        1.0,
    );
    assert_series(
        &text,
        &format!(r#"stevedore_jobs_started_total{{{q},type="obs.flaky",priority="normal"}}"#),
        2.0,
    );
    assert_series(
        &text,
        &format!(r#"stevedore_jobs_succeeded_total{{{q},type="obs.flaky"}}"#),
        1.0,
    );
    assert_series(
        &text,
        &format!(r#"stevedore_jobs_failed_total{{{q},type="obs.flaky"}}"#),
        1.0,
    );
    assert_series(
        &text,
        &format!(r#"stevedore_jobs_retried_total{{{q},type="obs.doomed"}}"#),
        1.0,
    );
    assert_series(
        &text,
        &format!(r#"stevedore_jobs_failed_total{{{q},type="obs.doomed"}}"#),
        2.0,
    );
    for (job_type, reason) in [
        ("obs.doomed", "failed"),
        ("obs.slow", "timeout"),
        ("(unknown)", "unknown_type"),
        ("(invalid)", "bad_entry"),
    ] {
        assert_series(
            &text,
            &format!(r#"stevedore_jobs_dead_total{{{q},type="{job_type}",reason="{reason}"}}"#),
            1.0,
        );
    }
    // Producers name their own types; workers never label a type they do not know.
    assert!(
        text.lines()
            .filter(|l| !l.starts_with("stevedore_jobs_enqueued"))
            .all(|l| !l.contains("obs.stranger")),
        "unknown types are not labels:\n{text}"
    );
    assert_series(
        &text,
        &format!(r#"stevedore_job_duration_seconds_count{{{q},type="obs.ok"}}"#),
        1.0,
    );
    assert_series(
        &text,
        &format!(r#"stevedore_job_wait_seconds_count{{{q},type="obs.ok",priority="high"}}"#),
        1.0,
    );
    // Series of handlers and queues exist from the start, at zero.
    assert_series(&text, r#"stevedore_jobs_reclaimed_total{queue="obs"}"#, 0.0);
    assert_series(
        &text,
        &format!(r#"stevedore_jobs_started_total{{{q},type="obs.ok",priority="low"}}"#),
        0.0,
    );
    assert_series(&text, "stevedore_worker_jobs_in_flight", 0.0);
    assert_series(&text, "stevedore_worker_concurrency", 4.0);

    running.shutdown().await.expect("clean stop");
    assert_series(&metrics.encode(), "stevedore_worker_concurrency", 0.0);
}

static RELEASE: AtomicBool = AtomicBool::new(false);

#[job_handler(name = "depth.hold", queue = "depth")]
async fn hold(_t: Task, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ());
    while !RELEASE.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test]
async fn sampled_gauges_show_where_jobs_wait() {
    let env = TestEnv::start().await;
    let metrics = Metrics::new();
    metrics.set_sample_interval(Duration::from_millis(100));
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .concurrency(1)
            .metrics(&metrics)
            .handler(hold::handler())
            .build()
            .expect("worker"),
    );
    let first = env
        .client
        .enqueue(hold::job(Task::default()))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "the first job holds the only slot",
        || async { support::runs(first.as_str()) == 1 },
    )
    .await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(hold::job(Task::default()).priority(Priority::High));
    }
    for _ in 0..2 {
        jobs.push(hold::job(Task::default()).priority(Priority::Low));
    }
    env.client.enqueue_bulk(jobs).await.expect("enqueue");
    for _ in 0..2 {
        env.client
            .enqueue(hold::job(Task::default()).delay(Duration::from_secs(3600)))
            .await
            .expect("enqueue delayed");
    }
    let _: String = env
        .raw
        .xadd(
            env.dlq("depth"),
            false,
            None,
            "*",
            vec![("reason", "failed"), ("error", "by hand")],
        )
        .await
        .expect("xadd dead letter");

    let expected = [
        (
            r#"stevedore_queue_ready{queue="depth",priority="high"}"#,
            3.0,
        ),
        (
            r#"stevedore_queue_ready{queue="depth",priority="normal"}"#,
            0.0,
        ),
        (
            r#"stevedore_queue_ready{queue="depth",priority="low"}"#,
            2.0,
        ),
        (
            r#"stevedore_queue_pending{queue="depth",priority="normal"}"#,
            1.0,
        ),
        (
            r#"stevedore_queue_pending{queue="depth",priority="high"}"#,
            0.0,
        ),
        (r#"stevedore_queue_scheduled{queue="depth"}"#, 2.0),
        (r#"stevedore_queue_dead{queue="depth"}"#, 1.0),
        (r#"stevedore_queue_workers{queue="depth"}"#, 1.0),
    ];
    eventually(
        Duration::from_secs(10),
        "the sampler reports the queue",
        || async {
            let text = metrics.encode();
            expected.iter().all(|(s, v)| value(&text, s) == Some(*v))
                && value(
                    &text,
                    r#"stevedore_queue_oldest_waiting_seconds{queue="depth"}"#,
                )
                .is_some_and(|age| age > 0.0)
        },
    )
    .await;
    let stats = env.client.queue_stats("depth").await.expect("stats");
    assert_eq!(
        (stats.ready.high, stats.ready.normal, stats.ready.low),
        (3, 0, 2)
    );
    assert_eq!(stats.pending.total(), 1);
    assert_eq!((stats.scheduled, stats.dead), (2, 1));
    assert!(stats.oldest_waiting > Duration::ZERO);

    RELEASE.store(true, Ordering::Release);
    eventually(
        Duration::from_secs(10),
        "the backlog drains and the gauges follow",
        || async {
            let text = metrics.encode();
            value(
                &text,
                r#"stevedore_queue_ready{queue="depth",priority="high"}"#,
            ) == Some(0.0)
                && value(
                    &text,
                    r#"stevedore_queue_ready{queue="depth",priority="low"}"#,
                ) == Some(0.0)
                && value(
                    &text,
                    r#"stevedore_queue_oldest_waiting_seconds{queue="depth"}"#,
                ) == Some(0.0)
        },
    )
    .await;
    running.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn ready_counts_stay_right_when_redis_forgets_the_lag() {
    let mut server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let stream = env.stream("lag", "normal");
    let jobs: Vec<_> = (0..10).map(|n| ok::job(Task { n }).queue("lag")).collect();
    env.client.enqueue_bulk(jobs).await.expect("enqueue");
    let _: () = env
        .raw
        .xgroup_create(&stream, "stevedore", "0", true)
        .await
        .expect("group");
    let read: HashMap<String, Vec<Entry>> = env
        .raw
        .xreadgroup_map("stevedore", "c1", Some(3), None, false, &stream, ">")
        .await
        .expect("read 3");
    let first = read[&stream][0].0.clone();
    let _: i64 = env
        .raw
        .xack(&stream, "stevedore", &first)
        .await
        .expect("ack");
    let _: i64 = env.raw.xdel(&stream, &first).await.expect("del");

    let before = env.client.queue_stats("lag").await.expect("stats");
    assert_eq!((before.ready.normal, before.pending.normal), (7, 2));

    server.restart().await.expect("restart");
    let after = eventually_stats(&env, "lag").await;
    let groups: Vec<HashMap<String, Value>> =
        env.raw.xinfo_groups(&stream).await.expect("xinfo groups");
    // Redis 7.0 rebuilds the group from the AOF without its lag: the fallback is in use.
    // Valkey 8 keeps the lag across the restart, so there the counts come from it.
    let info: String = env
        .raw
        .custom(fred::cmd!("INFO"), vec!["server"])
        .await
        .expect("info");
    if !info.contains("valkey_version") {
        assert_eq!(groups[0].get("lag"), Some(&Value::Null), "{groups:?}");
    }
    assert_eq!((after.ready.normal, after.pending.normal), (7, 2));
    assert!(after.oldest_waiting > Duration::ZERO);
}

async fn eventually_stats(env: &TestEnv, queue: &str) -> stevedore::QueueStats {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match env.client.queue_stats(queue).await {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for redis: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("queue stats after restart: {e}"),
        }
    }
}

/// `GET path` over a fresh connection: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn health_endpoints_follow_redis_and_the_worker() {
    let mut server = RedisServer::start().await.expect("redis-server");
    let env = TestEnv::on(&server.url()).await;
    let metrics = Metrics::new();
    let worker = Worker::builder(env.client.clone())
        .metrics(&metrics)
        .handler(ok::handler())
        .build()
        .expect("worker");
    let health = worker.health();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        async move { axum::serve(listener, stevedore::http::router(metrics, health)).await },
    );

    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "not ready before it runs"
    );
    let running = support::spawn(worker);
    let poll = |path: &'static str, want: u16| async move {
        eventually(
            Duration::from_secs(20),
            &format!("{path} answers {want}"),
            || async { get(addr, path).await.0 == want },
        )
        .await;
    };
    poll("/readyz", 200).await;
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("stevedore_worker_concurrency 10"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");

    server.kill().expect("kill redis");
    poll("/healthz", 503).await;
    poll("/readyz", 503).await;
    let (_, body) = get(addr, "/healthz").await;
    assert!(body.contains("\"status\":\"unavailable\""), "{body}");

    server.restart().await.expect("restart redis");
    poll("/healthz", 200).await;
    poll("/readyz", 200).await;

    running.shutdown().await.expect("clean stop");
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "a stopped worker is not ready: {body}");
    assert!(body.contains("\"running\":false"), "{body}");
}
