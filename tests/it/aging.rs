//! Priority aging against a real Redis: under a steady flood of `high` jobs, with weights
//! that give `low` no share of its own (so without aging it starves), a `low` job starts
//! within the worker's aging bound plus its check interval; without aging the same `low`
//! job does not start while the flood lasts.

use std::time::{Duration, Instant};

use fred::prelude::*;
use stevedore::{JobContext, JobError, Priority, PriorityWeights, Worker, job_handler};
use tokio_util::sync::CancellationToken;

use crate::support::{self, TestEnv, wait_for};

#[job_handler(name = "aging.work", queue = "aging")]
async fn work(_n: u32, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), Instant::now());
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

const BOUND: Duration = Duration::from_millis(300);

/// `high` jobs in the queue's high streams (all its partitions).
async fn high_len(raw: &fred::prelude::Client, streams: &[String]) -> u64 {
    let mut n = 0;
    for s in streams {
        n += raw.xlen::<u64, _>(s.as_str()).await.unwrap_or(0);
    }
    n
}

async fn high_streams(env: &TestEnv) -> Vec<String> {
    env.client
        .partition_names("aging")
        .await
        .expect("names")
        .iter()
        .map(|q| env.stream(q, "high"))
        .collect()
}

/// Keeps at least 40 `high` jobs in the queue's high streams until `stop` fires.
async fn flood(env: &TestEnv, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let client = env.client.clone();
    let raw = env.raw.clone();
    let high = high_streams(env).await;
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let len = high_len(&raw, &high).await;
            if len < 60 {
                let jobs = (0..40).map(|i| work::job(i).priority(Priority::High));
                client.enqueue_bulk(jobs).await.expect("flood");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn worker(env: &TestEnv, aging: bool, parts: u16) -> support::Running {
    let mut b = Worker::builder(env.client.clone())
        .partitions("aging", parts)
        .handler(work::handler())
        .concurrency(2)
        .priority_weights(PriorityWeights {
            high: 1,
            normal: 0,
            low: 0,
        });
    if aging {
        b = b.priority_aging(BOUND);
    }
    support::spawn(b.build().expect("worker"))
}

async fn flooded(env: &TestEnv) {
    let high = high_streams(env).await;
    wait_for(Duration::from_secs(10), "the flood under way", || async {
        (high_len(&env.raw, &high).await >= 40).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aging_bounds_the_wait_of_low_jobs_under_a_flood_of_high_ones() {
    low_jobs_age(1).await;
}

/// On a single server, a partitioned queue's partitions share one fetch loop, which ages
/// each partition's streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aging_bounds_the_wait_over_a_partitioned_queue() {
    low_jobs_age(3).await;
}

async fn low_jobs_age(parts: u16) {
    let env = TestEnv::start().await;
    if parts > 1 {
        env.client
            .declare_partitions("aging", parts)
            .await
            .expect("partitions");
    }
    let stop = CancellationToken::new();
    let producer = flood(&env, stop.clone()).await;
    flooded(&env).await;
    let running = worker(&env, true, parts);
    let mut lows = Vec::new();
    for i in 0..5 {
        let id = env
            .client
            .enqueue(work::job(i).priority(Priority::Low))
            .await
            .expect("a low job");
        lows.push((id, Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut waits = Vec::new();
    for (id, sent) in &lows {
        let started = wait_for(Duration::from_secs(10), "the low job started", || async {
            support::values::<Instant>(id.as_str()).first().copied()
        })
        .await;
        waits.push(started.duration_since(*sent));
    }
    let high_left = high_len(&env.raw, &high_streams(&env).await).await;
    stop.cancel();
    producer.await.expect("flood task");
    running.shutdown().await.expect("shutdown");
    println!(
        "{parts} partition(s): low jobs' waits under the flood with aging {BOUND:?}: {waits:?}"
    );
    assert!(
        high_left > 0,
        "the flood lasted past the last low job ({high_left} high left)"
    );
    // The first low job was alone in its stream: it waited behind the flood until it aged
    // (low has no share of its own). Later ones may start sooner, swept along when the
    // stream is served while an older job has aged.
    assert!(
        waits[0] >= BOUND - Duration::from_millis(50),
        "the first low job started after {:?}, before it aged",
        waits[0]
    );
    for w in &waits {
        // The bound, a check interval (30 ms), and a fetch or two of slack.
        assert!(
            *w < BOUND + Duration::from_millis(500),
            "a low job waited {w:?} with a bound of {BOUND:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_aging_a_low_job_starves_under_the_same_flood() {
    let env = TestEnv::start().await;
    let stop = CancellationToken::new();
    let producer = flood(&env, stop.clone()).await;
    flooded(&env).await;
    let running = worker(&env, false, 1);
    let id = env
        .client
        .enqueue(work::job(0).priority(Priority::Low))
        .await
        .expect("a low job");
    // Five times the bound the other test holds: the low job must not have started.
    tokio::time::sleep(BOUND * 5).await;
    let started = support::runs(id.as_str());
    stop.cancel();
    producer.await.expect("flood task");
    running.shutdown().await.expect("shutdown");
    assert_eq!(
        started, 0,
        "weights of 1 : 0 : 0 give low nothing while high has jobs"
    );
}

#[test]
fn an_aging_bound_under_10_ms_is_refused() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let env = TestEnv::start().await;
        let built = Worker::builder(env.client.clone())
            .handler(work::handler())
            .priority_aging(Duration::from_millis(5))
            .build();
        assert!(
            matches!(built, Err(stevedore::Error::InvalidConfig(m)) if m.contains("priority_aging"))
        );
    });
}
