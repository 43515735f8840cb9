use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{Error, JobContext, JobError, Periodic, RawJob, Worker, job_handler};

use crate::support::{self, TestEnv, eventually, wait_for};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    /// The tick's scheduled time, ms since the epoch (Redis' clock).
    at_ms: u64,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Each handler records into its own list, so tests running in parallel do not mix.
static EVERY_TICK: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
static PLAIN_TICK: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static EVERY_SECOND: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn push<T>(list: &Mutex<Vec<T>>, value: T) {
    list.lock().unwrap_or_else(|p| p.into_inner()).push(value);
}

fn taken<T: Clone>(list: &Mutex<Vec<T>>) -> Vec<T> {
    list.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[job_handler(name = "cron.tick", queue = "cron")]
async fn every_tick(t: Tick, ctx: JobContext) -> Result<(), JobError> {
    // (tick, when its job was enqueued): the enqueue's lateness.
    push(&EVERY_TICK, (t.at_ms, ms(ctx.enqueued_at())));
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plain {
    note: String,
}

#[job_handler(name = "cron.plain", queue = "cron")]
async fn plain_tick(_p: Plain, ctx: JobContext) -> Result<(), JobError> {
    push(&PLAIN_TICK, ms(ctx.enqueued_at()));
    Ok(())
}

#[job_handler(name = "cron.second", queue = "cron")]
async fn every_second(t: Tick, _ctx: JobContext) -> Result<(), JobError> {
    push(&EVERY_SECOND, t.at_ms);
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nightly {}

#[job_handler(name = "cron.nightly", queue = "cron")]
async fn nightly(_n: Nightly, ctx: JobContext) -> Result<(), JobError> {
    support::record("cron.nightly", ctx.id().to_string());
    Ok(())
}

/// Redis' clock, in ms.
async fn redis_now(env: &TestEnv) -> u64 {
    env.raw
        .eval(
            "local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000)",
            Vec::<String>::new(),
            Vec::<String>::new(),
        )
        .await
        .expect("TIME")
}

fn cron_hash(env: &TestEnv) -> String {
    format!("{}:{{cron}}:cron", env.prefix)
}

/// Ticks must be distinct and `step` apart, from the first to the last.
fn assert_every_tick_once(ticks: &[u64], step: u64, what: &str) {
    let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ticks.len(),
        "{what}: a tick ran twice: {ticks:?}"
    );
    let sorted: Vec<u64> = distinct.into_iter().collect();
    for w in sorted.windows(2) {
        assert_eq!(
            w[1] - w[0],
            step,
            "{what}: ticks missing between {} and {}: {sorted:?}",
            w[0],
            w[1]
        );
    }
    for t in &sorted {
        assert_eq!(t % step, 0, "{what}: {t} is not a tick");
    }
}

/// How many ticks of each schedule the three-worker run waits for: the run, two
/// minutes of a five-second schedule, had 24.
const TICKS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_enqueue_each_of_24_ticks_exactly_once() {
    let env = TestEnv::start().await;
    // Both schedules tick every second, so 24 ticks take 24 s instead of two minutes; what
    // is checked of each tick (enqueued once by one of the three workers, none missed,
    // less than a second late) does not depend on the spacing.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            support::spawn(
                Worker::builder(env.client.clone())
                    .handler(every_tick::handler())
                    .handler(plain_tick::handler())
                    // The tick's time in the payload...
                    .periodic(Periodic::from_fn("* * * * * *", |tick| {
                        every_tick::job(Tick { at_ms: ms(tick) })
                    }))
                    // ...and a clone of one job, known by its enqueue time.
                    .cron(
                        "* * * * * *",
                        RawJob::new(
                            "cron.plain",
                            "cron",
                            &Plain {
                                note: "digest".into(),
                            },
                        )
                        .expect("job"),
                    )
                    .build()
                    .expect("worker"),
            )
        })
        .collect();
    let started = Instant::now();
    // The run the issue asks for: 24 ticks of each schedule.
    eventually(
        Duration::from_secs(TICKS as u64 + 30),
        "24 ticks of each schedule",
        || async { taken(&EVERY_TICK).len() >= TICKS && taken(&PLAIN_TICK).len() >= TICKS },
    )
    .await;
    // All three stop at once: no tick falls between one's stop and the others'.
    for w in &workers {
        w.stop.cancel();
    }
    for w in workers {
        w.shutdown().await.expect("clean shutdown");
    }
    let elapsed = started.elapsed();

    let runs = taken(&EVERY_TICK);
    let ticks: Vec<u64> = runs.iter().map(|(t, _)| *t).collect();
    assert_every_tick_once(&ticks, 1_000, "from_fn schedule");
    assert!(
        ticks.len() >= TICKS,
        "expected {TICKS} ticks, got {}",
        ticks.len()
    );
    let mut lateness: Vec<i64> = runs.iter().map(|(t, e)| *e as i64 - *t as i64).collect();
    lateness.sort_unstable();
    eprintln!(
        "periodic: {} ticks in {elapsed:?} across 3 workers; enqueue lateness min {} ms, p50 {} ms, max {} ms",
        ticks.len(),
        lateness[0],
        lateness[lateness.len() / 2],
        lateness[lateness.len() - 1]
    );
    assert!(
        lateness[0] >= -5,
        "a tick was enqueued before it was due: {lateness:?}"
    );
    assert!(
        lateness[lateness.len() - 1] < 1_000,
        "a tick was enqueued over a second late: {lateness:?}"
    );

    // The plain job is identified by the tick its enqueue time falls in (enqueues are less
    // than a second late, as checked above).
    let plain: Vec<u64> = taken(&PLAIN_TICK).iter().map(|e| e - e % 1_000).collect();
    assert_every_tick_once(&plain, 1_000, "cron schedule");
    assert!(
        plain.len() >= TICKS,
        "plain schedule ran {} times",
        plain.len()
    );

    // What Redis keeps: per schedule, the newest tick claimed and by whom.
    let state: std::collections::HashMap<String, String> =
        env.raw.hgetall(cron_hash(&env)).await.expect("HGETALL");
    assert_eq!(state.len(), 4, "two schedules, two fields each: {state:?}");
    let newest = ticks.iter().max().copied().unwrap_or(0);
    assert!(
        state.values().any(|v| v == &newest.to_string()),
        "the newest tick run is the newest claimed: {state:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_one_catch_up_run_however_many_workers_start() {
    let env = TestEnv::start().await;
    let now = redis_now(&env).await;
    let midnight = now - now % 86_400_000;
    // The nightly job last ran ten nights ago: ten ticks were missed.
    let ten_days_ago = midnight - 10 * 86_400_000;
    let _: () = env
        .raw
        .hset(cron_hash(&env), ("nightly", ten_days_ago.to_string()))
        .await
        .expect("HSET");
    let workers: Vec<_> = (0..3)
        .map(|_| {
            support::spawn(
                Worker::builder(env.client.clone())
                    .handler(nightly::handler())
                    .cron_named(
                        "nightly",
                        "0 0 0 * * *",
                        RawJob::new("cron.nightly", "cron", &Nightly {}).expect("job"),
                    )
                    .build()
                    .expect("worker"),
            )
        })
        .collect();
    let started = Instant::now();
    eventually(Duration::from_secs(10), "the catch-up run", || async {
        support::runs("cron.nightly") >= 1
    })
    .await;
    let caught_up = started.elapsed();
    // The claim records the latest missed tick, tonight's midnight, not an older one.
    let last: Option<String> = env
        .raw
        .hget(cron_hash(&env), "nightly")
        .await
        .expect("HGET");
    assert_eq!(last, Some(midnight.to_string()));
    let by: Option<String> = env
        .raw
        .hget(cron_hash(&env), "nightly:by")
        .await
        .expect("HGET");
    assert!(by.is_some_and(|b| !b.is_empty()));
    for w in workers {
        w.shutdown().await.expect("clean shutdown");
    }
    assert_eq!(
        support::runs("cron.nightly"),
        1,
        "one catch-up run, not one per missed tick or per worker"
    );
    assert_eq!(env.ready("cron").await, 0, "no second catch-up queued");
    assert_eq!(env.pending("cron").await, 0);
    eprintln!("periodic: catch-up ran {caught_up:?} after 3 workers started");
}

#[tokio::test]
async fn a_worker_starting_after_ten_missed_seconds_runs_the_latest_only_then_every_tick() {
    let env = TestEnv::start().await;
    // Start early in a second, so the latest missed tick is the second we read here.
    let now = wait_for(
        Duration::from_secs(5),
        "the first 300 ms of a second on Redis' clock",
        || async {
            let now = redis_now(&env).await;
            (now % 1_000 <= 300).then_some(now)
        },
    )
    .await;
    let latest_missed = now - now % 1_000;
    let _: () = env
        .raw
        .hset(
            cron_hash(&env),
            ("every-second", (latest_missed - 10_000).to_string()),
        )
        .await
        .expect("HSET");
    let worker = support::spawn(
        Worker::builder(env.client.clone())
            .handler(every_second::handler())
            .periodic(
                Periodic::from_fn("* * * * * *", |tick| {
                    every_second::job(Tick { at_ms: ms(tick) })
                })
                .name("every-second"),
            )
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(10), "three runs", || async {
        taken(&EVERY_SECOND).len() >= 3
    })
    .await;
    worker.shutdown().await.expect("clean shutdown");
    let ticks = taken(&EVERY_SECOND);
    assert_every_tick_once(&ticks, 1_000, "every second");
    let first = ticks.iter().min().copied().unwrap_or(0);
    assert_eq!(
        first, latest_missed,
        "one catch-up for the latest missed tick, none of the nine before it: {ticks:?}"
    );
}

#[tokio::test]
async fn a_bad_schedule_fails_build_with_invalid_config() {
    let env = TestEnv::start().await;
    let job = RawJob::new("cron.plain", "cron", &Plain { note: "x".into() }).expect("job");
    for (expr, expect) in [
        ("every five minutes", "invalid cron expression"),
        ("*/5 * * * *", "seconds field"),
        ("0 0 25 * * *", "invalid cron expression"),
    ] {
        let err = Worker::builder(env.client.clone())
            .handler(plain_tick::handler())
            .cron(expr, job.clone())
            .build()
            .expect_err("a bad expression");
        eprintln!("{err}");
        match err {
            Error::InvalidConfig(msg) => {
                assert!(msg.contains(expr), "{msg}");
                assert!(msg.contains(expect), "{msg}");
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
    let err = Worker::builder(env.client.clone())
        .handler(plain_tick::handler())
        .cron_named("a name", "0 * * * * *", job.clone())
        .build()
        .expect_err("a bad name");
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("a name")),
        "{err}"
    );
    let err = Worker::builder(env.client.clone())
        .handler(plain_tick::handler())
        .cron("0 * * * * *", job.clone())
        .cron("0  *  * * * *", job.clone())
        .build()
        .expect_err("the same schedule twice");
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("cron_named")),
        "{err}"
    );
    // Two expressions for one job are two schedules.
    Worker::builder(env.client.clone())
        .handler(plain_tick::handler())
        .cron("0 * * * * *", job.clone())
        .cron("30 * * * * *", job)
        .build()
        .expect("two schedules");
}
