//! Operator control against a real Redis: cancel a queued, scheduled, retrying or running
//! job (cooperative or not, the request missed on the channel, a worker killed mid-job, a
//! cancel racing the fetch), delete in every state (and racing a janitor's takeover),
//! retry now, purge with filters; every action counted in the totals and reported to
//! observers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::control::{CancelOutcome, Purge, RetryNowOutcome};
use stevedore::observe::{ControlAction, ControlEvent};
use stevedore::{
    Error, JobContext, JobError, JobState, Observer, Priority, RawJob, Worker, job_handler,
};

use crate::support::{self, TestEnv, WorkerProcess, eventually, wait_for};

/// How a `ctl.work` job behaves.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Mode {
    /// Sleeps, and stops with an error as soon as it is cancelled.
    Cooperative,
    /// Sleeps and never looks at its cancellation.
    Deaf,
    /// Fails, to be retried in ten minutes.
    Fails,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    ms: u64,
    mode: Mode,
}

#[job_handler(name = "ctl.work", queue = "ctl", max_attempts = 3)]
async fn work(job: Work, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), Instant::now());
    match job.mode {
        Mode::Cooperative => {
            tokio::select! {
                _ = ctx.cancelled() => return Err(JobError::permanent("stopped: cancelled")),
                _ = tokio::time::sleep(Duration::from_millis(job.ms)) => {}
            }
        }
        Mode::Deaf => tokio::time::sleep(Duration::from_millis(job.ms)).await,
        Mode::Fails => {
            return Err(JobError::retry_after(
                "downstream down",
                Duration::from_secs(600),
            ));
        }
    }
    Ok(())
}

fn job(ms: u64, mode: Mode) -> stevedore::Job<work> {
    work::job(Work { ms, mode })
}

fn worker(
    env: &TestEnv,
    f: impl FnOnce(stevedore::WorkerBuilder) -> stevedore::WorkerBuilder,
) -> Worker {
    f(Worker::builder(env.client.clone())
        .handler(work::handler())
        .concurrency(4))
    .build()
    .expect("worker")
}

async fn totals(env: &TestEnv, queue: &str) -> stevedore::admin::Totals {
    env.client
        .admin()
        .queue(queue)
        .await
        .expect("queue info")
        .totals
}

/// Records every control event.
/// An action, its job, and how many jobs.
type Action = (ControlAction, Option<String>, u64);

#[derive(Default, Clone)]
struct Actions(Arc<Mutex<Vec<Action>>>);

impl Observer for Actions {
    fn cancelled(&self, job: &stevedore::observe::JobEvent<'_>, _took: Duration) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((
            ControlAction::Cancelled,
            Some(job.job_id.to_string()),
            1,
        ));
    }

    fn controlled(&self, e: &ControlEvent<'_>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((
            e.action,
            e.job_id.map(str::to_string),
            e.jobs,
        ));
    }
}

impl Actions {
    fn of(&self, action: ControlAction) -> Vec<(Option<String>, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(a, _, _)| *a == action)
            .map(|(_, id, n)| (id.clone(), *n))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_job_never_runs_and_says_who_and_why() {
    let env = TestEnv::start().await;
    let actions = Actions::default();
    let client = env.client_with(|b| b.observer(actions.clone())).await;
    let doomed = client.enqueue(job(0, Mode::Deaf)).await.expect("enqueue");
    let kept = client.enqueue(job(0, Mode::Deaf)).await.expect("enqueue");
    let unique = client
        .enqueue(job(0, Mode::Deaf).unique("report-7", Duration::from_secs(600)))
        .await
        .expect("enqueue");

    let out = client
        .cancel(doomed.as_str(), "ops@example.com", "customer unsubscribed")
        .await
        .expect("cancel");
    assert_eq!(
        out,
        CancelOutcome::Cancelled {
            was: JobState::Queued
        }
    );
    let s = client
        .status(doomed.as_str())
        .await
        .expect("status")
        .expect("known");
    assert_eq!(s.state, JobState::Cancelled);
    assert_eq!(s.cancelled_by.as_deref(), Some("ops@example.com"));
    assert_eq!(s.reason.as_deref(), Some("customer unsubscribed"));
    assert_eq!((s.job_type.as_str(), s.attempts), ("ctl.work", 0));
    assert!(s.finished_at.is_some());
    // Cancelling again changes nothing and says so.
    assert_eq!(
        client
            .cancel(doomed.as_str(), "someone", "again")
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyEnded(JobState::Cancelled)
    );
    // A unique job's key is freed by its cancel: the same work can be enqueued again.
    client
        .cancel(unique.as_str(), "", "")
        .await
        .expect("cancel");
    let again = client
        .enqueue(job(0, Mode::Deaf).unique("report-7", Duration::from_secs(600)))
        .await
        .expect("enqueue");
    assert_ne!(
        again.as_str(),
        unique.as_str(),
        "a new job, not the cancelled one"
    );

    let running = support::spawn(worker(&env, |b| b));
    for id in [&kept, &again] {
        let s = client
            .wait_for(id.as_str(), Duration::from_secs(10))
            .await
            .expect("wait")
            .expect("known");
        assert_eq!(s.state, JobState::Succeeded);
    }
    assert_eq!(
        support::runs(doomed.as_str()),
        0,
        "a cancelled job never runs"
    );
    assert_eq!(support::runs(unique.as_str()), 0);
    // A finished job: nothing changes.
    assert_eq!(
        client
            .cancel(kept.as_str(), "ops", "late")
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyEnded(JobState::Succeeded)
    );
    assert_eq!(env.state(kept.as_str()).await, Some(JobState::Succeeded));
    // Unknown ids, and bad input, are clear errors.
    for unknown in [
        "ctl:n-1-0",
        "0190c0de-0000-7000-8000-000000000000",
        "not an id",
    ] {
        assert!(
            matches!(
                client.cancel(unknown, "", "").await,
                Err(Error::UnknownJob(_))
            ),
            "{unknown}"
        );
    }
    assert!(matches!(
        client.cancel(kept.as_str(), "two\nlines", "").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        client.cancel(kept.as_str(), "", &"x".repeat(2000)).await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(totals(&env, "ctl").await.cancelled, 2);
    assert_eq!(actions.of(ControlAction::Cancelled).len(), 2);
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_and_retrying_jobs_cancel_or_run_now() {
    let env = TestEnv::start().await;
    let running = support::spawn(worker(&env, |b| b));
    let later = env
        .client
        .enqueue(job(0, Mode::Deaf).delay(Duration::from_secs(600)))
        .await
        .expect("enqueue");
    let cancelled = env
        .client
        .enqueue(job(0, Mode::Deaf).delay(Duration::from_secs(600)))
        .await
        .expect("enqueue");
    let failing = env
        .client
        .enqueue(job(0, Mode::Fails))
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(10),
        "the failing job retries",
        || async { env.state(failing.as_str()).await == Some(JobState::Retrying) },
    )
    .await;

    // Run now: due at once, its attempt count unchanged.
    let asked = Instant::now();
    assert_eq!(
        env.client
            .retry_now(later.as_str())
            .await
            .expect("retry now"),
        RetryNowOutcome::Due {
            was: JobState::Scheduled
        }
    );
    let s = env
        .client
        .wait_for(later.as_str(), Duration::from_secs(10))
        .await
        .expect("wait")
        .expect("known");
    assert_eq!(s.state, JobState::Succeeded);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "ran {:?} after",
        asked.elapsed()
    );
    assert_eq!(s.attempts, 1);
    // Nothing to run now: a finished job.
    assert_eq!(
        env.client
            .retry_now(later.as_str())
            .await
            .expect("retry now"),
        RetryNowOutcome::NotScheduled(JobState::Succeeded)
    );

    assert_eq!(
        env.client
            .cancel(cancelled.as_str(), "", "")
            .await
            .expect("cancel"),
        CancelOutcome::Cancelled {
            was: JobState::Scheduled
        }
    );
    assert_eq!(
        env.client
            .cancel(failing.as_str(), "ops", "give up")
            .await
            .expect("cancel"),
        CancelOutcome::Cancelled {
            was: JobState::Retrying
        }
    );
    let s = env
        .client
        .status(failing.as_str())
        .await
        .expect("status")
        .expect("known");
    assert_eq!((s.state, s.attempts), (JobState::Cancelled, 1));
    assert_eq!(s.next_at, None);
    assert_eq!(
        s.error.as_deref(),
        Some("downstream down"),
        "its history is kept"
    );
    let scheduled: u64 = env
        .raw
        .zcard(format!("{}:{{ctl}}:scheduled", env.prefix))
        .await
        .expect("zcard");
    assert_eq!(scheduled, 0, "both left the schedule");
    let t = totals(&env, "ctl").await;
    assert_eq!((t.cancelled, t.retried_now), (2, 1));
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_stops_within_about_a_second_and_ends_cancelled() {
    let env = TestEnv::start().await;
    let actions = Actions::default();
    let metrics = stevedore::Metrics::new();
    let running = support::spawn(worker(&env, |b| {
        b.cancel_grace(Duration::from_millis(500))
            .observer(actions.clone())
            .metrics(&metrics)
    }));
    let polite = env
        .client
        .enqueue(job(60_000, Mode::Cooperative))
        .await
        .expect("enqueue");
    let deaf = env
        .client
        .enqueue(job(60_000, Mode::Deaf))
        .await
        .expect("enqueue");
    for id in [&polite, &deaf] {
        eventually(Duration::from_secs(10), "the job runs", || async {
            support::runs(id.as_str()) == 1
        })
        .await;
    }
    assert_eq!(env.state(polite.as_str()).await, Some(JobState::Running));

    for (id, within) in [(&polite, 1500), (&deaf, 2000)] {
        let asked = Instant::now();
        assert_eq!(
            env.client
                .cancel(id.as_str(), "ops", "wrong batch")
                .await
                .expect("cancel"),
            CancelOutcome::Requested
        );
        let s = wait_for(Duration::from_secs(10), "the job ends", || async {
            env.client
                .status(id.as_str())
                .await
                .expect("status")
                .filter(|s| s.state != JobState::Running && s.state != JobState::Cancelling)
        })
        .await;
        let took = asked.elapsed();
        assert_eq!(s.state, JobState::Cancelled, "{s:?}");
        assert_eq!(s.cancelled_by.as_deref(), Some("ops"));
        assert_eq!(s.reason.as_deref(), Some("wrong batch"));
        assert_eq!(s.attempts, 1);
        assert!(
            took < Duration::from_millis(within),
            "stopped {took:?} after the cancel"
        );
        eprintln!("{id}: cancelled {took:?} after the request");
    }
    // Neither retried nor dead-lettered: they never run again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(support::runs(polite.as_str()), 1);
    assert_eq!(support::runs(deaf.as_str()), 1);
    assert_eq!(env.dead_letters("ctl").await.len(), 0);
    assert_eq!(env.pending("ctl").await, 0);
    // Reported by the worker once its write is answered.
    eventually(Duration::from_secs(10), "both cancels reported", || async {
        actions.of(ControlAction::Cancelled).len() == 2
    })
    .await;
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_message_was_missed_is_found_at_the_next_renewal() {
    let env = TestEnv::start().await;
    let running = support::spawn(worker(&env, |b| b.lease(Duration::from_millis(900))));
    let id = env
        .client
        .enqueue(job(60_000, Mode::Cooperative))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "the job runs", || async {
        support::runs(id.as_str()) == 1
    })
    .await;
    // The request written as the cancel writes it, but never published.
    let entry = id.as_str().rsplit_once(":n-").expect("a locator").1;
    let _: () = env
        .raw
        .hset(
            format!("{}:{{ctl}}:cancel", env.prefix),
            (format!("n-{entry}"), "janitor\nunpublished"),
        )
        .await
        .expect("hset");
    let s = wait_for(Duration::from_secs(5), "the job ends", || async {
        env.client
            .status(id.as_str())
            .await
            .expect("status")
            .filter(|s| s.state.is_final())
    })
    .await;
    assert_eq!(s.state, JobState::Cancelled);
    assert_eq!(s.cancelled_by.as_deref(), Some("janitor"));
    let left: u64 = env
        .raw
        .hlen(format!("{}:{{ctl}}:cancel", env.prefix))
        .await
        .expect("hlen");
    assert_eq!(left, 0, "the request is removed with the job");
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_the_fetch_never_lose_or_double_a_job() {
    let env = TestEnv::start().await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(
            env.client
                .enqueue(job(30, Mode::Cooperative))
                .await
                .expect("enqueue"),
        );
    }
    let running = support::spawn(worker(&env, |b| b.concurrency(8)));
    // Each cancel is sent once the job a few places ahead of it has started, so it lands
    // at the fetch's front: on a job waiting, fetched and not started, or just started.
    let mut outcomes = Vec::new();
    for i in (8..ids.len()).step_by(2) {
        let ahead = ids[i - 5].clone();
        eventually(Duration::from_secs(10), "the job ahead starts", || async {
            support::runs(ahead.as_str()) > 0
                || env
                    .state(ahead.as_str())
                    .await
                    .is_some_and(JobState::is_final)
        })
        .await;
        let id = &ids[i];
        outcomes.push((
            id.clone(),
            env.client
                .cancel(id.as_str(), "", "race")
                .await
                .expect("cancel"),
        ));
    }
    for id in &ids {
        eventually(Duration::from_secs(30), "every job ends", || async {
            env.state(id.as_str()).await.is_some_and(JobState::is_final)
        })
        .await;
    }
    let (mut waiting, mut requested) = (0, 0);
    for (id, out) in &outcomes {
        let end = env.state(id.as_str()).await.expect("known");
        match out {
            CancelOutcome::Cancelled { .. } => {
                waiting += 1;
                assert_eq!(
                    support::runs(id.as_str()),
                    0,
                    "{id} was cancelled waiting, yet ran"
                );
                assert_eq!(end, JobState::Cancelled);
            }
            CancelOutcome::Requested => {
                requested += 1;
                assert!(
                    matches!(end, JobState::Cancelled | JobState::Succeeded),
                    "{id} ended {end}"
                );
            }
            CancelOutcome::AlreadyEnded(s) => assert_eq!(s, &end),
            other => panic!("unexpected {other:?}"),
        }
    }
    for id in &ids {
        assert!(support::runs(id.as_str()) <= 1, "{id} ran twice");
    }
    eprintln!("cancelled waiting: {waiting}, while fetched or running: {requested}");
    assert!(
        waiting > 0 && requested > 0,
        "both sides of the race were hit"
    );
    assert_eq!(env.pending("ctl").await, 0);
    assert_eq!(env.ready("ctl").await, 0);
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_was_killed_is_cancelled_by_the_janitor_not_run_again() {
    let env = TestEnv::start().await;
    let process = WorkerProcess::start(&env, &["--lease", "1s"]);
    let id = env
        .client
        .enqueue(
            RawJob::new("demo.sleep", "demo", &serde_json::json!({ "ms": 60_000 })).expect("job"),
        )
        .await
        .expect("enqueue");
    eventually(
        Duration::from_secs(30),
        "the process runs the job",
        || async { env.state(id.as_str()).await == Some(JobState::Running) },
    )
    .await;
    process.kill();
    assert_eq!(
        env.client
            .cancel(id.as_str(), "ops", "host lost")
            .await
            .expect("cancel"),
        CancelOutcome::Requested
    );
    assert_eq!(env.state(id.as_str()).await, Some(JobState::Cancelling));

    #[job_handler(name = "demo.sleep", queue = "demo")]
    async fn sleep_here(_p: serde_json::Value, ctx: JobContext) -> Result<(), JobError> {
        support::record(ctx.id(), ());
        Ok(())
    }
    let actions = Actions::default();
    let janitor = support::spawn(
        Worker::builder(env.client.clone())
            .handler(sleep_here::handler())
            .lease(Duration::from_secs(1))
            .observer(actions.clone())
            .build()
            .expect("worker"),
    );
    let s = wait_for(
        Duration::from_secs(15),
        "the janitor cancels it",
        || async {
            env.client
                .status(id.as_str())
                .await
                .expect("status")
                .filter(|s| s.state.is_final())
        },
    )
    .await;
    assert_eq!(s.state, JobState::Cancelled);
    assert_eq!(s.reason.as_deref(), Some("host lost"));
    assert_eq!(
        support::runs(id.as_str()),
        0,
        "taken over to be cancelled, not run"
    );
    assert_eq!(env.pending("demo").await, 0);
    // The janitor reports the cancel once its write is answered: maybe after the state
    // above was read.
    eventually(
        Duration::from_secs(10),
        "the janitor reported the cancel",
        || async { actions.of(ControlAction::Cancelled).len() == 1 },
    )
    .await;
    janitor.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_a_job_in_every_state() {
    let env = TestEnv::start().await;
    let queued = env
        .client
        .enqueue(job(0, Mode::Deaf))
        .await
        .expect("enqueue");
    let scheduled = env
        .client
        .enqueue(job(0, Mode::Deaf).delay(Duration::from_secs(600)))
        .await
        .expect("enqueue");
    assert_eq!(
        env.client.delete(queued.as_str()).await.expect("delete"),
        JobState::Queued
    );
    assert_eq!(
        env.client.delete(scheduled.as_str()).await.expect("delete"),
        JobState::Scheduled
    );
    let done = env
        .client
        .enqueue(job(0, Mode::Deaf))
        .await
        .expect("enqueue");
    let dead = env
        .client
        .enqueue(job(0, Mode::Fails).max_attempts(1))
        .await
        .expect("enqueue");
    let long = env
        .client
        .enqueue(job(60_000, Mode::Deaf))
        .await
        .expect("enqueue");
    let running = support::spawn(worker(&env, |b| b.cancel_grace(Duration::from_millis(200))));
    eventually(Duration::from_secs(10), "jobs settle", || async {
        env.state(done.as_str()).await == Some(JobState::Succeeded)
            && env.state(dead.as_str()).await == Some(JobState::Dead)
            && env.state(long.as_str()).await == Some(JobState::Running)
    })
    .await;
    assert_eq!(env.dead_letters("ctl").await.len(), 1);

    assert_eq!(
        env.client.delete(done.as_str()).await.expect("delete"),
        JobState::Succeeded
    );
    assert_eq!(
        env.client.delete(dead.as_str()).await.expect("delete"),
        JobState::Dead
    );
    assert_eq!(
        env.dead_letters("ctl").await.len(),
        0,
        "its dead letter went too"
    );
    assert_eq!(
        env.client.delete(long.as_str()).await.expect("delete"),
        JobState::Running
    );
    assert_eq!(
        env.pending("ctl").await,
        0,
        "a running job's entry goes at once"
    );
    for id in [&queued, &scheduled, &done, &dead, &long] {
        assert_eq!(env.state(id.as_str()).await, None, "{id} is gone");
        assert!(matches!(
            env.client.delete(id.as_str()).await,
            Err(Error::UnknownJob(_))
        ));
    }
    // The worker stops the deleted job and writes nothing back.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.state(long.as_str()).await, None);
    assert_eq!(support::runs(queued.as_str()), 0);
    assert_eq!(totals(&env, "ctl").await.deleted, 5);
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_racing_a_janitor_takeover_leave_nothing_behind() {
    let env = TestEnv::start().await;
    let process = WorkerProcess::start(&env, &["--lease", "1s", "--concurrency", "20"]);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            env.client
                .enqueue(
                    RawJob::new("demo.sleep", "demo", &serde_json::json!({ "ms": 60_000 }))
                        .expect("job"),
                )
                .await
                .expect("enqueue"),
        );
    }
    eventually(
        Duration::from_secs(30),
        "the process runs them all",
        || async { env.pending("demo").await == 20 },
    )
    .await;
    process.kill();
    #[job_handler(name = "demo.sleep", queue = "demo")]
    async fn sleep_here(_p: serde_json::Value, ctx: JobContext) -> Result<(), JobError> {
        support::record(ctx.id(), ());
        tokio::select! {
            _ = ctx.cancelled() => Err(JobError::permanent("stopped")),
            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
        }
    }
    let janitor = support::spawn(
        Worker::builder(env.client.clone())
            .handler(sleep_here::handler())
            .lease(Duration::from_secs(1))
            .concurrency(20)
            .build()
            .expect("worker"),
    );
    // Deletes spread over the takeover: some before it, some while it claims, some after.
    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let at = Duration::from_millis(150 * i as u64);
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let was = env.client.delete(id.as_str()).await.expect("delete");
        assert_eq!(was, JobState::Running, "{id}");
    }
    eventually(Duration::from_secs(10), "nothing pending", || async {
        env.pending("demo").await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(env.state(id.as_str()).await, None, "{id} stays deleted");
        assert!(support::runs(id.as_str()) <= 1);
    }
    assert_eq!(env.ready("demo").await, 0);
    assert_eq!(env.dead_letters("demo").await.len(), 0);
    let taken = ids
        .iter()
        .filter(|id| support::runs(id.as_str()) == 1)
        .count();
    eprintln!("{taken} of 20 were taken over before their delete");
    janitor.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_waiting_jobs_by_priority_type_and_place_and_leaves_running_ones() {
    let env = TestEnv::start().await;
    let raw = |t: &str, p: Priority| RawJob::new(t, "pq", &0u64).expect("job").priority(p);
    for _ in 0..10 {
        env.client
            .enqueue(raw("a", Priority::High))
            .await
            .expect("enqueue");
        env.client
            .enqueue(raw("b", Priority::Low))
            .await
            .expect("enqueue");
        env.client
            .enqueue(raw("a", Priority::Normal))
            .await
            .expect("enqueue");
    }
    for _ in 0..5 {
        env.client
            .enqueue(raw("b", Priority::Low).delay(Duration::from_secs(600)))
            .await
            .expect("enqueue");
    }
    let unique = env
        .client
        .enqueue(raw("a", Priority::Normal).unique("once", Duration::from_secs(600)))
        .await
        .expect("enqueue");

    let low_ready = env
        .client
        .purge("pq", Purge::all().priority(Priority::Low).ready_only())
        .await
        .expect("purge");
    assert_eq!((low_ready.ready, low_ready.scheduled), (10, 0));
    let a = env
        .client
        .purge("pq", Purge::all().job_type("a"))
        .await
        .expect("purge");
    assert_eq!(a.total(), 21);
    assert_eq!(env.state(unique.as_str()).await, None);
    // Its unique key was freed.
    let again = env
        .client
        .enqueue(raw("a", Priority::Normal).unique("once", Duration::from_secs(600)))
        .await
        .expect("enqueue");
    assert_ne!(again.as_str(), unique.as_str());
    let rest = env.client.purge("pq", Purge::all()).await.expect("purge");
    assert_eq!((rest.ready, rest.scheduled), (1, 5));
    let stats = env.client.queue_stats("pq").await.expect("stats");
    assert_eq!((stats.ready.total(), stats.scheduled), (0, 0));
    assert_eq!(totals(&env, "pq").await.purged, 37);

    // A running job is never purged.
    let running = support::spawn(worker(&env, |b| b));
    let long = env
        .client
        .enqueue(job(1_500, Mode::Deaf))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "it runs", || async {
        support::runs(long.as_str()) == 1
    })
    .await;
    assert_eq!(
        env.client
            .purge("ctl", Purge::all())
            .await
            .expect("purge")
            .total(),
        0
    );
    let s = env
        .client
        .wait_for(long.as_str(), Duration::from_secs(10))
        .await
        .expect("wait")
        .expect("known");
    assert_eq!(s.state, JobState::Succeeded);
    assert!(matches!(
        env.client.purge("never-used", Purge::all()).await,
        Err(Error::UnknownQueue(_))
    ));
    assert!(matches!(
        env.client
            .purge("pq", Purge::all().job_type("no spaces"))
            .await,
        Err(Error::InvalidName { .. })
    ));
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_covers_every_partition_of_a_partitioned_queue() {
    let env = TestEnv::start().await;
    env.client
        .set_partitions("parted", 3)
        .await
        .expect("partitions");
    for i in 0..30u32 {
        env.client
            .enqueue(
                RawJob::new("a", "parted", &i)
                    .expect("job")
                    .partition_key(format!("k{i}")),
            )
            .await
            .expect("enqueue");
    }
    let purged = env
        .client
        .purge("parted", Purge::all())
        .await
        .expect("purge");
    assert_eq!(purged.ready, 30);
    let stats = env.client.queue_stats("parted").await.expect("stats");
    assert_eq!(stats.ready.total(), 0);
}
