//! The harness itself: its errors say what happened, harnesses sharing a server keep apart
//! and clean up, and workers stop gracefully or crash as asked.

use std::time::Duration;

use fred::prelude::ClientLike;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, JobState, job_handler};
use stevedore_testcontainers::{Harness, KitError, TestRedis};
use tokio::sync::Semaphore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    fail: bool,
}

#[job_handler(name = "harness.step", queue = "steps", max_attempts = 2)]
async fn step(job: Step, _ctx: JobContext) -> Result<(), JobError> {
    if job.fail {
        return Err(JobError::retry("step failed on purpose"));
    }
    Ok(())
}

/// Permits for `gated` jobs to finish; a job holds until the test adds one.
static GATE: Semaphore = Semaphore::const_new(0);

#[job_handler(name = "harness.gated", queue = "gated")]
async fn gated(_job: Step, _ctx: JobContext) -> Result<(), JobError> {
    GATE.acquire()
        .await
        .map_err(|e| JobError::retry(e.to_string()))?
        .forget();
    Ok(())
}

#[tokio::test]
async fn waiting_without_a_worker_times_out_with_the_last_status() -> TestResult {
    let h = Harness::builder()
        .handler(step::handler())
        .workers(0)
        .start()
        .await?;
    let id = h.enqueue(step::job(Step { fail: false })).await?;

    let err = h
        .wait_for(&id, Duration::from_millis(200))
        .await
        .expect_err("nothing runs the job");

    let text = err.to_string();
    assert!(matches!(err, KitError::JobTimeout { .. }), "{err:?}");
    assert!(text.contains("last seen queued"), "{text}");
    assert!(text.contains("no harness worker is running"), "{text}");

    h.start_worker().await?;
    assert_eq!(h.wait_for(&id, DEADLINE).await?.state, JobState::Succeeded);
    h.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn waiting_for_a_state_the_job_skipped_fails_at_once() -> TestResult {
    let h = Harness::builder().handler(step::handler()).start().await?;
    let id = h.enqueue(step::job(Step { fail: true })).await?;
    h.wait_for(&id, DEADLINE).await?;

    let err = h
        .wait_for_state(&id, JobState::Running, DEADLINE)
        .await
        .expect_err("the job is dead already");

    let text = err.to_string();
    assert!(matches!(err, KitError::JobEnded { .. }), "{err:?}");
    assert!(
        text.contains("ended dead while it was awaited running"),
        "{text}"
    );
    assert!(text.contains("step failed on purpose"), "{text}");
    h.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_harness_without_handlers_says_so() {
    let err = Harness::builder()
        .start()
        .await
        .expect_err("a worker needs a handler");
    let text = err.to_string();
    assert!(matches!(err, KitError::Worker { .. }), "{err:?}");
    assert!(text.contains("at least one handler"), "{text}");
}

#[tokio::test]
async fn crashing_or_stopping_with_no_worker_running_is_an_error() -> TestResult {
    let h = Harness::builder()
        .handler(step::handler())
        .workers(0)
        .start()
        .await?;
    assert!(matches!(
        h.crash_worker().await,
        Err(KitError::NoWorkerRunning)
    ));
    assert!(matches!(
        h.stop_worker().await,
        Err(KitError::NoWorkerRunning)
    ));
    Ok(())
}

#[tokio::test]
async fn harnesses_sharing_a_server_keep_apart_and_clean_up() -> TestResult {
    let redis = TestRedis::start().await?;
    let a = Harness::builder()
        .redis_url(redis.url())
        .handler(step::handler())
        .start()
        .await?;
    let b = Harness::builder()
        .redis_url(redis.url())
        .handler(step::handler())
        .start()
        .await?;
    assert_ne!(a.prefix(), b.prefix());

    let dead_in_a = a.enqueue(step::job(Step { fail: true })).await?;
    let ok_in_b = b.enqueue(step::job(Step { fail: false })).await?;
    assert_eq!(
        a.wait_for(&dead_in_a, DEADLINE).await?.state,
        JobState::Dead
    );
    assert_eq!(
        b.wait_for(&ok_in_b, DEADLINE).await?.state,
        JobState::Succeeded
    );
    assert_eq!(a.dead_letters("steps").await?.len(), 1);
    assert!(b.dead_letters("steps").await?.is_empty());
    assert!(b.client().status(dead_in_a.as_str()).await?.is_none());

    let raw = fred::prelude::Client::new(
        fred::prelude::Config::from_url(redis.url())?,
        None,
        None,
        None,
    );
    raw.init().await?;
    let prefix_a = a.prefix().to_owned();
    let keys_of = |prefix: String| {
        let raw = raw.clone();
        async move {
            raw.scan_buffered(format!("{prefix}:*"), None, None)
                .try_collect::<Vec<_>>()
                .await
        }
    };
    assert!(!keys_of(prefix_a.clone()).await?.is_empty());
    a.shutdown().await?;
    assert!(keys_of(prefix_a).await?.is_empty());
    assert!(!keys_of(b.prefix().to_owned()).await?.is_empty());
    b.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_stopped_worker_finishes_its_running_job_a_crashed_one_does_not() -> TestResult {
    let h = Harness::builder()
        .handler(gated::handler())
        .workers(0)
        .start()
        .await?;

    // Graceful: the running job finishes while the worker stops.
    h.start_worker().await?;
    let finished = h.enqueue(gated::job(Step { fail: false })).await?;
    h.wait_for_state(&finished, JobState::Running, DEADLINE)
        .await?;
    let (stopped, ()) = tokio::join!(h.stop_worker(), async { GATE.add_permits(1) });
    stopped?;
    assert_eq!(
        h.client().status(finished.as_str()).await?.map(|s| s.state),
        Some(JobState::Succeeded)
    );

    // Crash: the running job stays pending and runs again on the next worker.
    let name = h.start_worker().await?;
    let orphan = h.enqueue(gated::job(Step { fail: false })).await?;
    h.wait_for_state(&orphan, JobState::Running, DEADLINE)
        .await?;
    assert_eq!(h.crash_worker().await?, name);
    assert!(h.running_workers().is_empty());
    assert_eq!(h.pending("gated").await?, 1);
    h.start_worker().await?;
    GATE.add_permits(1);
    assert_eq!(
        h.wait_for(&orphan, DEADLINE).await?.state,
        JobState::Succeeded
    );
    assert_eq!(h.pending("gated").await?, 0);
    h.shutdown().await?;
    Ok(())
}
