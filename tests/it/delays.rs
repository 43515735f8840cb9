use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, Priority, RetryPolicy, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Due {
    /// Wall-clock due time in ms since the epoch.
    at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[job_handler(name = "delay.due", queue = "later")]
async fn due(d: Due, ctx: JobContext) -> Result<(), JobError> {
    // Lateness: how long after its due time the job started.
    support::record(ctx.id(), now_ms() as i64 - d.at_ms as i64);
    Ok(())
}

#[tokio::test]
async fn delayed_jobs_start_within_100ms_of_their_due_time() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .concurrency(32)
            .handler(due::handler())
            .build()
            .expect("worker"),
    );
    // 200 jobs due over the next 5 s, half by delay and half by run_at, enqueued in bulk.
    let start = now_ms() + 300;
    let jobs: Vec<_> = (0..200u64)
        .map(|i| {
            let at_ms = start + i * 5000 / 200;
            let job = due::job(Due { at_ms });
            if i % 2 == 0 {
                job.run_at(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms))
            } else {
                job.delay(Duration::from_millis(at_ms.saturating_sub(now_ms())))
            }
        })
        .collect();
    let ids = env.client.enqueue_bulk(jobs).await.expect("enqueue");
    assert_eq!(
        env.ready("later").await,
        0,
        "nothing is ready before its time"
    );
    let scheduled: u64 = env
        .raw
        .zcard(format!("{}:{{later}}:scheduled", env.prefix))
        .await
        .expect("zcard");
    assert!(
        scheduled > 150,
        "jobs wait in the scheduled set, found {scheduled}"
    );

    eventually(Duration::from_secs(20), "all delayed jobs ran", || async {
        ids.iter().all(|id| support::runs(id.as_str()) == 1)
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
    let mut lateness: Vec<i64> = ids
        .iter()
        .flat_map(|id| support::values::<i64>(id.as_str()))
        .collect();
    lateness.sort_unstable();
    let p50 = lateness[lateness.len() / 2];
    let p99 = lateness[lateness.len() * 99 / 100];
    let max = lateness[lateness.len() - 1];
    eprintln!(
        "delayed jobs: lateness p50 {p50} ms, p99 {p99} ms, max {max} ms, earliest {} ms",
        lateness[0]
    );
    // The clocks of Redis and this process are the same machine's here.
    assert!(
        lateness[0] >= -5,
        "a job started before its due time: {} ms early",
        -lateness[0]
    );
    assert!(p99 <= 100, "p99 lateness {p99} ms exceeds 100 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_due_together_are_promoted_exactly_once_by_two_promoters() {
    let env = TestEnv::start().await;
    let at = SystemTime::now() + Duration::from_millis(1500);
    let at_ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let jobs: Vec<_> = (0..10_000)
        .map(|_| due::job(Due { at_ms }).run_at(at))
        .collect();
    let ids = env.client.enqueue_bulk(jobs).await.expect("enqueue");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            support::spawn(
                Worker::builder(env.client.clone())
                    .concurrency(32)
                    .handler(due::handler())
                    .build()
                    .expect("worker"),
            )
        })
        .collect();
    eventually(Duration::from_secs(120), "all 10,000 ran", || async {
        ids.iter().all(|id| support::runs(id.as_str()) >= 1)
    })
    .await;
    eventually(Duration::from_secs(10), "drained", || async {
        env.ready("later").await == 0 && env.pending("later").await == 0
    })
    .await;
    for w in workers {
        w.shutdown().await.expect("clean shutdown");
    }
    let dup = ids
        .iter()
        .filter(|id| support::runs(id.as_str()) != 1)
        .count();
    assert_eq!(dup, 0, "jobs promoted or run more than once");
    let scheduled: u64 = env
        .raw
        .zcard(format!("{}:{{later}}:scheduled", env.prefix))
        .await
        .expect("zcard");
    assert_eq!(scheduled, 0);
}

/// Attempt start times per job id.
static ATTEMPTS: Mutex<Option<HashMap<String, Vec<Instant>>>> = Mutex::new(None);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    fail_times: u32,
    retry_after_ms: Option<u64>,
}

#[job_handler(
    name = "delay.flaky",
    queue = "later",
    max_attempts = 4,
    backoff = "fixed",
    backoff_base = "300ms"
)]
async fn flaky(f: Flaky, ctx: JobContext) -> Result<(), JobError> {
    if let Ok(mut m) = ATTEMPTS.lock() {
        m.get_or_insert_default()
            .entry(ctx.id().to_string())
            .or_default()
            .push(Instant::now());
    }
    support::record(ctx.id(), ctx.attempt());
    if ctx.attempt() <= f.fail_times {
        return Err(match f.retry_after_ms {
            Some(ms) => JobError::retry_after("rate limited", Duration::from_millis(ms)),
            None => JobError::retry("try again"),
        });
    }
    Ok(())
}

fn gaps(id: &stevedore::JobId) -> Vec<Duration> {
    let times = ATTEMPTS
        .lock()
        .ok()
        .and_then(|mut m| m.get_or_insert_default().get(id.as_str()).cloned())
        .unwrap_or_default();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn retries_wait_as_the_policy_or_the_handler_says() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(flaky::handler())
            .build()
            .expect("worker"),
    );
    let policy = env
        .client
        .enqueue(flaky::job(Flaky {
            fail_times: 2,
            retry_after_ms: None,
        }))
        .await
        .expect("enqueue");
    let after = env
        .client
        .enqueue(
            flaky::job(Flaky {
                fail_times: 1,
                retry_after_ms: Some(900),
            })
            .priority(Priority::High),
        )
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "both succeeded", || async {
        support::values::<u32>(policy.as_str()).len() == 3
            && support::values::<u32>(after.as_str()).len() == 2
    })
    .await;
    eventually(Duration::from_secs(5), "drained", || async {
        env.ready("later").await == 0 && env.pending("later").await == 0
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
    assert_eq!(support::values::<u32>(policy.as_str()), vec![1, 2, 3]);
    for g in gaps(&policy) {
        assert!(
            g >= Duration::from_millis(290),
            "fixed 300 ms backoff, got {g:?}"
        );
    }
    let g = gaps(&after);
    assert_eq!(g.len(), 1);
    assert!(
        g[0] >= Duration::from_millis(890),
        "Retry-After 900 ms honoured, got {:?}",
        g[0]
    );
    assert_eq!(env.xlen(&env.dlq("later")).await, 0);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NewFeature {
    n: u32,
}

#[job_handler(name = "delay.new_feature", queue = "later")]
async fn new_feature(_f: NewFeature, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Ok(())
}

#[tokio::test]
async fn an_unknown_type_waits_for_a_worker_that_knows_it() {
    let env = TestEnv::start().await;
    // An old worker that does not know the new type yet.
    let old = support::spawn(
        Worker::builder(env.client.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(150)))
            .handler(due::handler())
            .build()
            .expect("worker"),
    );
    let id = env
        .client
        .enqueue(new_feature::job(NewFeature { n: 1 }).max_attempts(20))
        .await
        .expect("enqueue");
    let scheduled = format!("{}:{{later}}:scheduled", env.prefix);
    eventually(
        Duration::from_secs(10),
        "the old worker put it back for later",
        || async {
            env.raw
                .zcard::<u64, _>(scheduled.as_str())
                .await
                .unwrap_or(0)
                == 1
        },
    )
    .await;
    // The rolling deploy arrives.
    let new = support::spawn(
        Worker::builder(env.client.clone())
            .handler(new_feature::handler())
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(15), "the new worker ran it", || async {
        support::runs(id.as_str()) == 1
    })
    .await;
    old.shutdown().await.expect("clean shutdown");
    new.shutdown().await.expect("clean shutdown");
    assert_eq!(support::runs(id.as_str()), 1, "ran exactly once");
    assert!(
        support::values::<u32>(id.as_str())[0] >= 2,
        "it was retried at least once before"
    );
    assert_eq!(
        env.xlen(&env.dlq("later")).await,
        0,
        "nothing lost to the DLQ"
    );
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Coin {
    p: f64,
}

#[job_handler(
    name = "delay.coin",
    queue = "coins",
    max_attempts = 5,
    backoff = "exponential",
    backoff_base = "10ms",
    backoff_cap = "80ms"
)]
async fn coin(c: Coin, ctx: JobContext) -> Result<(), JobError> {
    if let Ok(mut m) = ATTEMPTS.lock() {
        m.get_or_insert_default()
            .entry(ctx.id().to_string())
            .or_default()
            .push(Instant::now());
    }
    if rand::random::<f64>() < c.p {
        return Err(JobError::retry("tails"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_flaky_jobs_all_end_succeeded_or_dead_within_the_policy() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .concurrency(32)
            .handler(coin::handler())
            .build()
            .expect("worker"),
    );
    let ids = env
        .client
        .enqueue_bulk((0..1_000).map(|_| coin::job(Coin { p: 0.5 })))
        .await
        .expect("enqueue");
    let mut finals = Vec::new();
    for id in &ids {
        let s = env
            .client
            .wait_for(id.as_str(), Duration::from_secs(60))
            .await
            .expect("status")
            .expect("known");
        assert!(s.state.is_final(), "job {id} ended {:?}", s.state);
        finals.push(s);
    }
    running.shutdown().await.expect("clean shutdown");
    let dead: Vec<_> = finals
        .iter()
        .filter(|s| s.state == stevedore::JobState::Dead)
        .collect();
    let succeeded = finals.len() - dead.len();
    eprintln!(
        "flaky p=0.5: {succeeded} succeeded, {} dead after 5 attempts",
        dead.len()
    );
    for s in &dead {
        assert_eq!((s.attempts, s.reason.as_deref()), (5, Some("failed")));
    }
    for s in &finals {
        assert!((1..=5).contains(&s.attempts));
    }
    assert_eq!(
        env.xlen(&env.dlq("coins")).await,
        dead.len() as u64,
        "every dead job is in the DLQ"
    );
    // Expected dead: 1000 × 0.5^5 ≈ 31; far outside that means the attempt count is off.
    assert!((5..=80).contains(&dead.len()), "{} dead", dead.len());
    // Each wait before attempt n+1 is at least half the nominal 10 ms × 2^(n−1) (capped at
    // 80 ms): equal jitter never goes lower.
    let policy =
        stevedore::RetryPolicy::exponential(Duration::from_millis(10), Duration::from_millis(80));
    for id in &ids {
        for (n, gap) in gaps(id).into_iter().enumerate() {
            let floor = policy.nominal_delay(n as u32 + 1) / 2;
            assert!(
                gap + Duration::from_millis(2) >= floor,
                "job {id}: wait {gap:?} before attempt {} < {floor:?}",
                n + 2
            );
        }
    }
}
