//! Rate limits, fleet-wide, against a real Redis: a type's limit held by three worker
//! processes, per-key limits that keep one busy key from holding back the others, a queue's
//! limit over two types, a downstream's "slow down" pausing its type, limits changed while
//! workers run, and limits that are none refused. Concurrency limits: per type and per key
//! across two workers, and across worker processes one of which is killed mid-job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{
    Error, JobContext, JobError, JobState, LimitScope, Metrics, RateLimit, RawJob, Worker,
    job_handler,
};

use crate::support::{self, TestEnv, WorkerProcess, eventually, wait_for};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    /// Where this test's runs are recorded.
    log: String,
    key: String,
    /// Answer "slow down" on the first attempt of this many runs of the log.
    #[serde(default)]
    refuse: u32,
}

/// One run: the job's key, when it started, and its attempt number.
type Run = (String, Instant, u32);

static RUNS: Mutex<Option<HashMap<String, Vec<Run>>>> = Mutex::new(None);

fn runs_of(log: &str) -> Vec<Run> {
    RUNS.lock()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(log).cloned()))
        .unwrap_or_default()
}

/// Records the run; answers "slow down" (once per job) while the log has seen fewer than
/// `refuse` refusals.
fn note(c: &Call, ctx: &JobContext) -> Result<(), JobError> {
    let mut m = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let runs = m.get_or_insert_default().entry(c.log.clone()).or_default();
    let refused = runs.iter().filter(|(k, _, _)| k == "refused").count() as u32;
    if refused < c.refuse && support::runs(ctx.id()) == 0 {
        runs.push(("refused".into(), Instant::now(), ctx.attempt()));
        support::record(ctx.id(), ());
        return Err(JobError::rate_limited(
            "429 Too Many Requests",
            Duration::from_millis(1500),
        ));
    }
    runs.push((c.key.clone(), Instant::now(), ctx.attempt()));
    support::record(ctx.id(), ());
    Ok(())
}

#[job_handler(name = "lim.call", queue = "limited", limit_key = "key")]
async fn call(c: Call, ctx: JobContext) -> Result<(), JobError> {
    note(&c, &ctx)
}

#[job_handler(name = "lim.other", queue = "limited")]
async fn other(c: Call, ctx: JobContext) -> Result<(), JobError> {
    note(&c, &ctx)
}

fn calls(log: &str, key: &str, n: usize) -> Vec<stevedore::Job<call>> {
    (0..n)
        .map(|_| {
            call::job(Call {
                log: log.into(),
                key: key.into(),
                refuse: 0,
            })
        })
        .collect()
}

fn worker(env: &TestEnv) -> stevedore::WorkerBuilder {
    Worker::builder(env.client.clone())
        .handler(call::handler())
        .handler(other::handler())
        .concurrency(16)
}

/// Jobs per second between the first and the last start of `times` (sorted).
fn rate(times: &[Instant]) -> f64 {
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return 0.0;
    };
    (times.len() - 1) as f64 / last.duration_since(*first).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_limit_holds_across_three_worker_processes() {
    const JOBS: usize = 1_000;
    let env = TestEnv::start().await;
    env.client
        .set_rate_limit(
            LimitScope::Type("demo.limited".into()),
            RateLimit::per_second(50),
        )
        .await
        .expect("set the limit");
    let workers: Vec<_> = (0..3)
        .map(|_| WorkerProcess::start(&env, &["--concurrency", "16"]))
        .collect();
    let jobs: Vec<RawJob> = (0..JOBS)
        .map(|i| {
            RawJob::new(
                "demo.limited",
                "demo",
                &serde_json::json!({ "key": format!("k{}", i % 7) }),
            )
            .expect("raw job")
        })
        .collect();
    let ids = env.client.enqueue_bulk(jobs).await.expect("enqueue");
    let audit = format!("{}-demo:executions", env.prefix);
    let starts_key = format!("{}-demo:starts", env.prefix);
    eventually(Duration::from_secs(60), "every job ran", || async {
        let n: u64 = env.raw.hlen(audit.as_str()).await.unwrap_or(0);
        n as usize == JOBS
    })
    .await;
    let starts: Vec<String> = env
        .raw
        .lrange(starts_key.as_str(), 0, -1)
        .await
        .expect("starts");
    let mut ms: Vec<u64> = starts
        .iter()
        .filter_map(|s| {
            s.strip_prefix("start ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ms.sort_unstable();
    assert_eq!(ms.len(), JOBS, "one start per job: none lost, none twice");
    let span = (ms[JOBS - 1] - ms[0]) as f64 / 1000.0;
    // A burst of 50 at once, then 50 a second: 950 more jobs take 19 s.
    let per_second = (JOBS - 1) as f64 / span;
    // The busiest windows after the burst: a second may hold a few more than 50 (a job
    // sent to wait starts a few ms after its time, more on a loaded machine), five seconds
    // no more than 10% over.
    let busiest = |window: u64| {
        ms.iter()
            .enumerate()
            .skip(50)
            .map(|(i, t)| ms[i..].iter().take_while(|u| **u < t + window).count())
            .max()
            .unwrap_or(0)
    };
    let (second, five) = (busiest(1_000), busiest(5_000));
    eprintln!(
        "{JOBS} jobs at 50/s on 3 worker processes: {per_second:.1} jobs/s over {span:.1} s, busiest second after the burst {second}, busiest 5 s {five}"
    );
    assert!(
        (45.0..=55.0).contains(&per_second),
        "{per_second:.1} jobs/s is not 50/s ± 10%"
    );
    assert!(five <= 275, "{five} jobs started within five seconds");
    let counts: HashMap<String, u64> = env.raw.hgetall(audit.as_str()).await.expect("audit");
    assert!(ids.iter().all(|id| counts.get(id.as_str()) == Some(&1)));
    assert!(
        env.dead_letters("demo").await.is_empty(),
        "no job dead-lettered for being limited"
    );
    for w in workers {
        assert!(w.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_waits_for_its_own_tokens_and_holds_back_no_other_key() {
    let env = TestEnv::start().await;
    let log = "keys";
    let metrics = Metrics::new();
    let w = support::spawn(
        worker(&env)
            .metrics(&metrics)
            .rate_limit(
                LimitScope::Key("lim.call".into()),
                RateLimit::per_second(5).with_burst(1),
            )
            .build()
            .expect("worker"),
    );
    let started = Instant::now();
    let busy = env
        .client
        .enqueue_bulk(calls(log, "busy", 10))
        .await
        .expect("enqueue");
    env.client
        .enqueue_bulk(
            calls(log, "calm", 3)
                .into_iter()
                .chain(calls(log, "quiet", 3)),
        )
        .await
        .expect("enqueue");
    // A held-back job waits in the scheduled set, its attempt count unchanged, and says
    // what for.
    let waiting = wait_for(Duration::from_secs(10), "a job held back", || async {
        for id in &busy {
            if let Ok(Some(s)) = env.client.status(id.as_str()).await
                && s.state == JobState::Scheduled
            {
                return Some(s);
            }
        }
        None
    })
    .await;
    assert_eq!(waiting.attempts, 0, "{waiting:?}");
    let why = waiting.waiting_for.clone().unwrap_or_default();
    assert!(
        why.contains("rate limit of each key of job type \"lim.call\" (5/1s burst 1)"),
        "{why}"
    );
    eventually(Duration::from_secs(20), "every job ran", || async {
        runs_of(log).len() == 16
    })
    .await;
    let runs = runs_of(log);
    let of = |key: &str| -> Vec<Instant> {
        let mut t: Vec<Instant> = runs
            .iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, t, _)| *t)
            .collect();
        t.sort();
        t
    };
    let (busy_t, calm_t, quiet_t) = (of("busy"), of("calm"), of("quiet"));
    eprintln!(
        "busy: {:.1}/s over {:?}; calm done after {:?}, quiet after {:?}",
        rate(&busy_t),
        busy_t[9] - busy_t[0],
        calm_t[2] - started,
        quiet_t[2] - started
    );
    // 5 a second, one at a time: 10 jobs take 1.8 s at least.
    for pair in busy_t.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(150),
            "two jobs of one key {:?} apart",
            pair[1] - pair[0]
        );
    }
    assert!(rate(&busy_t) <= 5.5, "{:.2}/s", rate(&busy_t));
    // The other keys, enqueued after the busy one's ten, are not queued behind them.
    assert!(calm_t[2] < busy_t[6] && quiet_t[2] < busy_t[6]);
    assert!(runs.iter().all(|(_, _, attempt)| *attempt == 1));
    // Each job sent to wait is counted once it is in the scheduled set.
    let limited = limited_count(&metrics);
    assert!((1.0..=10.0).contains(&limited), "{limited} limited");
    w.shutdown().await.expect("clean stop");
}

/// `stevedore_jobs_limited_total` of `lim.call` on queue `limited`.
fn limited_count(metrics: &Metrics) -> f64 {
    let text = metrics.encode();
    let series = r#"stevedore_jobs_limited_total{queue="limited",type="lim.call"} "#;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_limit_counts_every_type_and_follows_changes_while_workers_run() {
    let env = TestEnv::start().await;
    let log = "queue";
    let w = support::spawn(
        worker(&env)
            .rate_limit(
                LimitScope::Queue("limited".into()),
                RateLimit::per_second(10).with_burst(1),
            )
            .build()
            .expect("worker"),
    );
    let mixed = calls(log, "a", 8);
    let others: Vec<_> = (0..8)
        .map(|_| {
            other::job(Call {
                log: log.into(),
                key: "b".into(),
                refuse: 0,
            })
        })
        .collect();
    env.client.enqueue_bulk(mixed).await.expect("enqueue");
    env.client.enqueue_bulk(others).await.expect("enqueue");
    eventually(Duration::from_secs(20), "every job ran", || async {
        runs_of(log).len() == 16
    })
    .await;
    let mut all: Vec<Instant> = runs_of(log).iter().map(|(_, t, _)| *t).collect();
    all.sort();
    eprintln!("queue limit 10/s over two types: {:.1}/s", rate(&all));
    assert!(rate(&all) <= 11.0, "{:.2}/s", rate(&all));
    assert!(rate(&all) >= 8.0, "{:.2}/s", rate(&all));

    // Lifted at runtime: the next jobs run at once.
    assert!(
        env.client
            .remove_rate_limit(&LimitScope::Queue("limited".into()))
            .await
            .expect("remove")
    );
    assert!(env.client.rate_limits().await.expect("limits").is_empty());
    tokio::time::sleep(Duration::from_millis(2_100)).await; // > one control round
    let log2 = "queue-lifted";
    let t0 = Instant::now();
    env.client
        .enqueue_bulk(calls(log2, "a", 40))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "every job ran", || async {
        runs_of(log2).len() == 40
    })
    .await;
    let took = t0.elapsed();
    eprintln!("40 jobs after the limit was lifted: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Set again at runtime: workers follow within a control round or two.
    env.client
        .set_rate_limit(
            LimitScope::Type("lim.call".into()),
            "4/1s burst 1".parse().expect("limit"),
        )
        .await
        .expect("set");
    assert_eq!(
        env.client.rate_limits().await.expect("limits"),
        vec![(
            LimitScope::Type("lim.call".into()),
            RateLimit::per_second(4).with_burst(1)
        )]
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let log3 = "queue-set";
    env.client
        .enqueue_bulk(calls(log3, "a", 6))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(20), "every job ran", || async {
        runs_of(log3).len() == 6
    })
    .await;
    let mut t: Vec<Instant> = runs_of(log3).iter().map(|(_, t, _)| *t).collect();
    t.sort();
    assert!(
        t[5] - t[0] >= Duration::from_millis(1_100),
        "{:?}",
        t[5] - t[0]
    );
    w.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_slow_down_pauses_the_type_and_costs_no_attempt() {
    let env = TestEnv::start().await;
    let log = "slow";
    let metrics = Metrics::new();
    let w = support::spawn(
        worker(&env)
            .metrics(&metrics)
            .rate_limit(
                LimitScope::Type("lim.call".into()),
                RateLimit::per_second(1000),
            )
            .build()
            .expect("worker"),
    );
    let first = env
        .client
        .enqueue(call::job(Call {
            log: log.into(),
            key: "a".into(),
            refuse: 1,
        }))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "the downstream refused",
        || async { runs_of(log).iter().any(|(k, _, _)| k == "refused") },
    )
    .await;
    let refused_at = runs_of(log)[0].1;
    // Jobs of the type enqueued now wait for the pause too.
    env.client
        .enqueue_bulk(calls(log, "b", 3))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "every job ran", || async {
        runs_of(log).len() == 5
    })
    .await;
    // A run is logged as it starts: its acknowledgement may still be on the way.
    eventually(
        Duration::from_secs(10),
        "the refused job succeeded",
        || async { env.state(first.as_str()).await == Some(JobState::Succeeded) },
    )
    .await;
    for (key, at, attempt) in runs_of(log).into_iter().skip(1) {
        let after = at - refused_at;
        assert!(
            after >= Duration::from_millis(1_400),
            "{key} started {after:?} after the refusal"
        );
        assert_eq!(attempt, 1, "{key}: the refusal cost no attempt");
    }
    // The refused attempt shows as failed and limited; the three held back as limited.
    assert_eq!(limited_count(&metrics), 4.0);
    assert!(
        metrics
            .encode()
            .contains(r#"stevedore_jobs_failed_total{queue="limited",type="lim.call"} 1"#)
    );
    w.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn limits_that_are_none_are_refused() {
    let env = TestEnv::start().await;
    for (limit, why) in [
        (
            RateLimit::new(0, Duration::from_secs(1)),
            "lets nothing run",
        ),
        (RateLimit::new(5, Duration::ZERO), "longer than zero"),
        (
            RateLimit::per_second(5).with_burst(0),
            "burst must be at least 1",
        ),
    ] {
        let e = worker(&env)
            .rate_limit(LimitScope::Type("lim.call".into()), limit)
            .build()
            .expect_err("refused");
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains(why) && m.contains("lim.call")),
            "{e}"
        );
        let e = env
            .client
            .set_rate_limit(LimitScope::Queue("limited".into()), limit)
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, Error::InvalidInput(m) if m.contains(why)),
            "{e}"
        );
    }
    let e = env
        .client
        .set_rate_limit(
            LimitScope::Type("no spaces".into()),
            RateLimit::per_second(1),
        )
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::InvalidName { .. }), "{e}");
    // A limit written by hand that does not read is left out, and lifts nothing else.
    let _: () = env
        .raw
        .hset(
            format!("{}:limits", env.prefix),
            [("type:lim.call", "fast"), ("queue:limited", "3/1s")],
        )
        .await
        .expect("hset");
    assert_eq!(
        env.client.rate_limits().await.expect("limits"),
        vec![(
            LimitScope::Queue("limited".into()),
            RateLimit::per_second(3)
        )]
    );
}

/// Jobs of `lim.slow` running now, and the most seen at once, per log.
static RUNNING: Mutex<Option<HashMap<String, (u32, u32)>>> = Mutex::new(None);

fn running_max(log: &str) -> u32 {
    RUNNING
        .lock()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(log).map(|(_, max)| *max)))
        .unwrap_or(0)
}

fn enter(log: &str, by: i32) {
    let mut m = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let e = m
        .get_or_insert_default()
        .entry(log.to_string())
        .or_default();
    e.0 = e.0.saturating_add_signed(by);
    e.1 = e.1.max(e.0);
}

#[job_handler(name = "lim.slow", queue = "limited", limit_key = "key")]
async fn slow(c: Call, ctx: JobContext) -> Result<(), JobError> {
    let log = format!("{}/{}", c.log, c.key);
    enter(&c.log, 1);
    enter(&log, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    enter(&log, -1);
    enter(&c.log, -1);
    note(&c, &ctx)
}

fn slows(log: &str, key: &str, n: usize) -> Vec<stevedore::Job<slow>> {
    (0..n)
        .map(|_| {
            slow::job(Call {
                log: log.into(),
                key: key.into(),
                refuse: 0,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_hold_across_workers_per_type_and_per_key() {
    let env = TestEnv::start().await;
    let log = "running";
    let metrics = Metrics::new();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            support::spawn(
                worker(&env)
                    .handler(slow::handler())
                    .metrics(&metrics)
                    .concurrency_limit(LimitScope::Type("lim.slow".into()), 3)
                    .concurrency_limit(LimitScope::Key("lim.slow".into()), 2)
                    .build()
                    .expect("worker"),
            )
        })
        .collect();
    env.client
        .enqueue_bulk(slows(log, "a", 12).into_iter().chain(slows(log, "b", 4)))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(30), "every job ran", || async {
        runs_of(log).len() == 16
    })
    .await;
    let (all, a, b) = (
        running_max(log),
        running_max(&format!("{log}/a")),
        running_max(&format!("{log}/b")),
    );
    eprintln!("at most running: {all} of type (limit 3), {a} of key a, {b} of key b (limit 2)");
    assert!(all <= 3 && a <= 2 && b <= 2, "{all} {a} {b}");
    // The limits are reached, not undershot: two workers of 16 slots each would run all 16.
    assert_eq!((all, a), (3, 2));
    assert!(limited_count_of(&metrics, "lim.slow") > 0.0);
    // The limits are sampled into gauges too.
    eventually(Duration::from_secs(15), "the limits sampled", || async {
        let text = metrics.encode();
        text.contains(r#"stevedore_limit_max_running{scope="type",name="lim.slow"} 3"#)
            && text.contains(r#"stevedore_limit_max_running{scope="key",name="lim.slow"} 2"#)
            && text.contains(
                r#"stevedore_limit_running{scope="type",name="lim.slow",queue="limited"} "#,
            )
    })
    .await;
    assert!(runs_of(log).iter().all(|(_, _, attempt)| *attempt == 1));
    assert_eq!(
        env.client.concurrency_limits().await.expect("limits"),
        vec![
            (LimitScope::Type("lim.slow".into()), 3),
            (LimitScope::Key("lim.slow".into()), 2),
        ]
    );
    // Every place was given back.
    let running = format!("{}:{{limited}}:running:type:lim.slow", env.prefix);
    eventually(Duration::from_secs(5), "no place held", || async {
        let n: u64 = env.raw.zcard(running.as_str()).await.unwrap_or(1);
        n == 0
    })
    .await;
    for w in workers {
        w.shutdown().await.expect("clean stop");
    }
}

/// `stevedore_jobs_limited_total` of `job_type` on queue `limited`.
fn limited_count_of(metrics: &Metrics, job_type: &str) -> f64 {
    let text = metrics.encode();
    let series = format!(r#"stevedore_jobs_limited_total{{queue="limited",type="{job_type}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// One `demo.limited` event: start or end, when (ms), job id, consumer.
struct Event {
    start: bool,
    at: u64,
    job: String,
    consumer: String,
}

async fn events(env: &TestEnv) -> Vec<Event> {
    let lines: Vec<String> = env
        .raw
        .lrange(format!("{}-demo:starts", env.prefix), 0, -1)
        .await
        .expect("events");
    lines
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let [what, at, _key, job, consumer] = w.as_slice() else {
                return None;
            };
            Some(Event {
                start: *what == "start",
                at: at.parse().ok()?,
                job: job.to_string(),
                consumer: consumer.to_string(),
            })
        })
        .collect()
}

/// Runs as (start, end) of every job execution; one whose worker was killed ends at
/// `killed` (consumer, ms).
fn runs_from(events: &[Event], killed: Option<(&str, u64)>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for s in events.iter().filter(|e| e.start) {
        let end = events
            .iter()
            .find(|e| !e.start && e.job == s.job && e.consumer == s.consumer && e.at >= s.at)
            .map(|e| e.at)
            .or_else(|| killed.filter(|(c, _)| *c == s.consumer).map(|(_, at)| at));
        out.push((s.at, end.unwrap_or(u64::MAX)));
    }
    out
}

/// The most runs overlapping at any moment within `[from, to)`.
fn most_at_once(runs: &[(u64, u64)], from: u64, to: u64) -> usize {
    runs.iter()
        .filter(|(s, _)| (from..to).contains(s))
        .map(|(s, _)| runs.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_holds_while_workers_are_killed_and_frees_their_places() {
    const JOBS: usize = 30;
    let env = TestEnv::start().await;
    env.client
        .set_concurrency_limit(LimitScope::Type("demo.limited".into()), 2)
        .await
        .expect("set the limit");
    let args = ["--concurrency", "4", "--lease", "2s"];
    let mut workers: Vec<WorkerProcess> =
        (0..3).map(|_| WorkerProcess::start(&env, &args)).collect();
    let jobs: Vec<RawJob> = (0..JOBS)
        .map(|_| {
            RawJob::new(
                "demo.limited",
                "demo",
                &serde_json::json!({ "key": "k", "ms": 400 }),
            )
            .expect("raw job")
        })
        .collect();
    env.client.enqueue_bulk(jobs).await.expect("enqueue");
    // Kill a worker in the middle of a job: its place stays taken until its lease runs out.
    let victim = wait_for(
        Duration::from_secs(30),
        "a worker mid-job after 6 jobs",
        || async {
            let ev = events(&env).await;
            if ev.iter().filter(|e| !e.start).count() < 6 {
                return None;
            }
            let open = runs_from(&ev, None)
                .iter()
                .zip(ev.iter().filter(|e| e.start))
                .find(|((_, end), _)| *end == u64::MAX)
                .map(|(_, s)| s.consumer.clone())?;
            workers
                .iter()
                .position(|w| open.contains(&format!("-{}-", w.pid())))
                .map(|i| (i, open))
        },
    )
    .await;
    let (i, consumer) = victim;
    workers.remove(i).kill();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    workers.push(WorkerProcess::start(&env, &args));
    let audit = format!("{}-demo:executions", env.prefix);
    eventually(Duration::from_secs(60), "every job ran", || async {
        let n: u64 = env.raw.hlen(audit.as_str()).await.unwrap_or(0);
        n as usize == JOBS
    })
    .await;
    let ev = events(&env).await;
    let runs = runs_from(&ev, Some((consumer.as_str(), killed_at)));
    let overall = most_at_once(&runs, 0, u64::MAX);
    // Two at once again once the killed worker's lease (2 s) ran out.
    let after = most_at_once(&runs, killed_at + 2_500, u64::MAX);
    eprintln!(
        "limit 2 over 3 worker processes, one killed mid-job: at most {overall} at once, {after} after its lease ran out"
    );
    assert!(overall <= 2, "{overall} jobs ran at once");
    assert_eq!(after, 2, "the killed worker's place was freed");
    let running = format!("{}:{{demo}}:running:type:demo.limited", env.prefix);
    eventually(Duration::from_secs(5), "no place held", || async {
        let n: u64 = env.raw.zcard(running.as_str()).await.unwrap_or(1);
        n == 0
    })
    .await;
    assert!(env.dead_letters("demo").await.is_empty());
    for w in workers {
        assert!(w.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_that_cannot_be_read_holds_its_jobs_back_and_loses_none() {
    let env = TestEnv::start().await;
    let log = "unreadable";
    let w = support::spawn(
        worker(&env)
            .rate_limit(
                LimitScope::Queue("limited".into()),
                RateLimit::per_second(1000),
            )
            .build()
            .expect("worker"),
    );
    // The queue's bucket is made a list: every token call fails (WRONGTYPE).
    let bucket = format!("{}:{{limited}}:limit:queue:limited", env.prefix);
    let _: () = env.raw.lpush(bucket.as_str(), "x").await.expect("lpush");
    let ids = env
        .client
        .enqueue_bulk(calls(log, "a", 3))
        .await
        .expect("enqueue");
    // The jobs are not run unchecked: they wait, and say why.
    let waiting = wait_for(Duration::from_secs(10), "a job held back", || async {
        for id in &ids {
            if let Ok(Some(s)) = env.client.status(id.as_str()).await
                && s.state == JobState::Scheduled
            {
                return Some(s);
            }
        }
        None
    })
    .await;
    let why = waiting.waiting_for.unwrap_or_default();
    assert!(why.contains("could not be read"), "{why}");
    assert!(runs_of(log).is_empty(), "ran without its limit");
    // Once the bucket reads again, every job runs once, on its first attempt.
    let _: () = env.raw.del(bucket.as_str()).await.expect("del");
    eventually(Duration::from_secs(15), "every job ran", || async {
        runs_of(log).len() == 3
    })
    .await;
    for id in &ids {
        assert_eq!(support::runs(id.as_str()), 1);
    }
    assert!(runs_of(log).iter().all(|(_, _, attempt)| *attempt == 1));
    assert!(env.dead_letters("limited").await.is_empty());
    w.shutdown().await.expect("clean stop");
}
