use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, Priority, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    run: String,
    sleep_ms: u64,
}

/// Start order per test run: the priority of each job as it started.
static STARTS: Mutex<Option<HashMap<String, Vec<Priority>>>> = Mutex::new(None);
/// Running and peak concurrency per test run.
static IN_FLIGHT: Mutex<Option<HashMap<String, (usize, usize)>>> = Mutex::new(None);
static DONE: AtomicUsize = AtomicUsize::new(0);

#[job_handler(name = "sched.step", queue = "sched")]
async fn step(job: Step, ctx: JobContext) -> Result<(), JobError> {
    if let Ok(mut m) = STARTS.lock() {
        m.get_or_insert_default()
            .entry(job.run.clone())
            .or_default()
            .push(ctx.priority());
    }
    if let Ok(mut m) = IN_FLIGHT.lock() {
        let e = m
            .get_or_insert_default()
            .entry(job.run.clone())
            .or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
    }
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    if let Ok(mut m) = IN_FLIGHT.lock()
        && let Some(e) = m.get_or_insert_default().get_mut(&job.run)
    {
        e.0 -= 1;
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    support::record(ctx.id(), ());
    Ok(())
}

#[tokio::test]
async fn high_priority_overtakes_earlier_low_and_low_still_progresses() {
    let env = TestEnv::start().await;
    let run = env.prefix.clone();
    let low: Vec<_> = (0..60)
        .map(|_| {
            step::job(Step {
                run: run.clone(),
                sleep_ms: 5,
            })
            .priority(Priority::Low)
        })
        .collect();
    let high: Vec<_> = (0..60)
        .map(|_| {
            step::job(Step {
                run: run.clone(),
                sleep_ms: 5,
            })
            .priority(Priority::High)
        })
        .collect();
    // All low jobs are older than every high job.
    let mut ids = env.client.enqueue_bulk(low).await.expect("enqueue low");
    ids.extend(env.client.enqueue_bulk(high).await.expect("enqueue high"));

    let running = support::spawn(
        Worker::builder(env.client.clone())
            .concurrency(2)
            .handler(step::handler())
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(30), "all 120 jobs ran", || async {
        ids.iter().all(|id| support::runs(id.as_str()) == 1)
    })
    .await;
    running.shutdown().await.expect("clean shutdown");

    let order = STARTS
        .lock()
        .ok()
        .and_then(|mut m| m.get_or_insert_default().remove(&run))
        .unwrap_or_default();
    assert_eq!(order.len(), 120);
    let first_40_high = order[..40].iter().filter(|p| **p == Priority::High).count();
    assert!(
        first_40_high >= 30,
        "high should dominate the first 40 starts, got {first_40_high}: {order:?}"
    );
    let last_high = order
        .iter()
        .rposition(|p| *p == Priority::High)
        .unwrap_or(0);
    let lows_before_last_high = order[..last_high]
        .iter()
        .filter(|p| **p == Priority::Low)
        .count();
    assert!(
        lows_before_last_high >= 1,
        "low must not starve while high has work: {order:?}"
    );
    let mean = |p: Priority| {
        let pos: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, q)| **q == p)
            .map(|(i, _)| i)
            .collect();
        pos.iter().sum::<usize>() as f64 / pos.len() as f64
    };
    assert!(mean(Priority::High) < mean(Priority::Low), "{order:?}");
}

#[tokio::test]
async fn the_concurrency_bound_is_reached_and_never_exceeded() {
    let env = TestEnv::start().await;
    let run = env.prefix.clone();
    let jobs: Vec<_> = (0..80)
        .map(|i| {
            let p = Priority::ALL[i % 3];
            step::job(Step {
                run: run.clone(),
                sleep_ms: 20,
            })
            .priority(p)
        })
        .collect();
    let ids = env.client.enqueue_bulk(jobs).await.expect("enqueue");
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .concurrency(5)
            .handler(step::handler())
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(30), "all jobs ran", || async {
        ids.iter().all(|id| support::runs(id.as_str()) == 1)
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
    let (now, peak) = IN_FLIGHT
        .lock()
        .ok()
        .and_then(|mut m| m.get_or_insert_default().remove(&run))
        .unwrap_or_default();
    assert_eq!(now, 0);
    assert_eq!(peak, 5, "peak concurrency must be exactly the bound");
}

#[tokio::test]
async fn one_worker_serves_several_queues() {
    let env = TestEnv::start().await;
    let run = env.prefix.clone();
    let mut ids = Vec::new();
    for q in ["alpha", "beta", "gamma"] {
        ids.push(
            env.client
                .enqueue(
                    step::job(Step {
                        run: run.clone(),
                        sleep_ms: 0,
                    })
                    .queue(q),
                )
                .await
                .expect("enqueue"),
        );
    }
    let worker = Worker::builder(env.client.clone())
        .queues(["alpha", "beta", "gamma"])
        .handler(step::handler())
        .build()
        .expect("worker");
    assert_eq!(worker.queues(), ["alpha", "beta", "gamma"]);
    let running = support::spawn(worker);
    eventually(
        Duration::from_secs(10),
        "jobs on all three queues ran",
        || async { ids.iter().all(|id| support::runs(id.as_str()) == 1) },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
    for q in ["alpha", "beta", "gamma"] {
        assert_eq!(
            env.ready(q).await + env.pending(q).await,
            0,
            "queue {q} drained"
        );
    }
}

#[test]
fn worker_settings_are_checked() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let env = TestEnv::start().await;
        let no_handler = Worker::builder(env.client.clone()).build();
        assert!(matches!(
            no_handler,
            Err(stevedore::Error::InvalidConfig(_))
        ));
        let zero = Worker::builder(env.client.clone())
            .concurrency(0)
            .handler(step::handler())
            .build();
        assert!(matches!(zero, Err(stevedore::Error::InvalidConfig(_))));
        let twice = Worker::builder(env.client.clone())
            .handler(step::handler())
            .handler(step::handler())
            .build();
        assert!(
            matches!(twice, Err(stevedore::Error::InvalidConfig(m)) if m.contains("sched.step"))
        );
        let bad_queue = Worker::builder(env.client.clone())
            .queues(["a b"])
            .handler(step::handler())
            .build();
        assert!(matches!(
            bad_queue,
            Err(stevedore::Error::InvalidName { .. })
        ));
    });
}

/// With `normal` empty, `high` and `low` share the slots by the smooth round robin: the
/// README quotes the share this prints.
#[tokio::test]
async fn with_one_priority_empty_the_others_share_by_their_weights() {
    let env = TestEnv::start().await;
    let run = env.prefix.clone();
    let job = |p: Priority| {
        step::job(Step {
            run: run.clone(),
            sleep_ms: 1,
        })
        .priority(p)
    };
    let mut ids = env
        .client
        .enqueue_bulk((0..400).map(|_| job(Priority::Low)))
        .await
        .expect("enqueue low");
    ids.extend(
        env.client
            .enqueue_bulk((0..400).map(|_| job(Priority::High)))
            .await
            .expect("enqueue high"),
    );
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .concurrency(2)
            .handler(step::handler())
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(60), "all 800 jobs ran", || async {
        ids.iter().all(|id| support::runs(id.as_str()) == 1)
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
    let order = STARTS
        .lock()
        .ok()
        .and_then(|mut m| m.get_or_insert_default().remove(&run))
        .unwrap_or_default();
    // While both have jobs waiting: the first 300 starts (high has 400).
    let high = order[..300]
        .iter()
        .filter(|p| **p == Priority::High)
        .count();
    println!(
        "scheduling: normal empty, first 300 starts: high {high} ({:.0}%), low {} ({:.0}%)",
        high as f64 / 3.0,
        300 - high,
        (300 - high) as f64 / 3.0
    );
    assert!((165..=290).contains(&high), "high {high} of 300: {order:?}");
}
