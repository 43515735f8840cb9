//! Chains, dependencies and batches against a real Redis: a chain runs in order and passes
//! results on; a dependent waits `blocked` and follows its policy when a job it waits for
//! dies; an unknown dependency is refused with nothing enqueued; two parents ending at the
//! same moment on two workers release their child once; a batch calls back exactly once,
//! also when the worker running it is killed; a janitor finishes, or undoes, a flow whose
//! client stopped half-way through writing it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::flow::{Batch, BatchState, Chain, Dependency, OnParentFailure};
use stevedore::{Error, JobContext, JobError, JobState, RawJob, Worker, job_handler};

use crate::support::{self, TestEnv, WorkerProcess, eventually, wait_for};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    name: String,
    ms: u64,
    fail: bool,
    /// Jobs with the same `meet` wait for each other before they end (two at most), so
    /// they end at the same moment.
    #[serde(default)]
    meet: Option<String>,
}

/// How many jobs arrived at each meeting.
static MEETINGS: std::sync::Mutex<Option<HashMap<String, usize>>> = std::sync::Mutex::new(None);

async fn meet(key: &str) {
    {
        let mut m = MEETINGS.lock().unwrap_or_else(|p| p.into_inner());
        *m.get_or_insert_with(HashMap::new)
            .entry(key.to_string())
            .or_default() += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let here = MEETINGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|m| m.get(key).copied())
            .unwrap_or(0);
        if here >= 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What a `flow.step` job saw: its name, when it started and ended, and its parents.
#[derive(Debug, Clone)]
struct Seen {
    started: Instant,
    ended: Instant,
    parents: HashMap<String, stevedore::ParentOutcome>,
}

#[job_handler(name = "flow.step", queue = "flow", max_attempts = 1)]
async fn step(s: Step, ctx: JobContext) -> Result<(), JobError> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(s.ms)).await;
    if let Some(key) = &s.meet {
        meet(key).await;
    }
    support::record(
        ctx.id(),
        Seen {
            started,
            ended: Instant::now(),
            parents: ctx.parents(),
        },
    );
    if s.fail {
        return Err(JobError::permanent(format!("{} failed", s.name)));
    }
    ctx.set_result(&format!("made by {}", s.name))
        .map_err(|e| JobError::permanent(e.to_string()))?;
    Ok(())
}

fn job(name: &str, ms: u64) -> stevedore::Job<step> {
    step::job(Step {
        name: name.into(),
        ms,
        fail: false,
        meet: None,
    })
}

/// A job that ends only once another with the same `key` is running too.
fn meeting(name: &str, key: &str) -> stevedore::Job<step> {
    step::job(Step {
        name: name.into(),
        ms: 0,
        fail: false,
        meet: Some(key.into()),
    })
}

fn failing(name: &str) -> stevedore::Job<step> {
    step::job(Step {
        name: name.into(),
        ms: 0,
        fail: true,
        meet: None,
    })
}

fn worker(env: &TestEnv) -> Worker {
    Worker::builder(env.client.clone())
        .handler(step::handler())
        .concurrency(8)
        .build()
        .expect("worker")
}

async fn ended(env: &TestEnv, id: &str) -> JobState {
    wait_for(Duration::from_secs(20), "the job ends", || async {
        env.state(id).await.filter(|s| s.is_final())
    })
    .await
}

fn seen(id: &str) -> Vec<Seen> {
    support::values::<Seen>(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_in_order_and_hands_results_on() {
    let env = TestEnv::start().await;
    let ids = env
        .client
        .enqueue_chain(
            Chain::new(job("a", 200))
                .then(job("b", 0))
                .then(job("c", 0)),
        )
        .await
        .expect("enqueue chain");
    assert_eq!(ids.len(), 3);
    assert_eq!(env.state(ids[1].as_str()).await, Some(JobState::Blocked));
    let metrics = stevedore::Metrics::new();
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(step::handler())
            .metrics(&metrics)
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(10), "a runs", || async {
        env.state(ids[0].as_str()).await == Some(JobState::Running)
    })
    .await;
    assert_eq!(
        env.state(ids[1].as_str()).await,
        Some(JobState::Blocked),
        "b waits while a runs"
    );
    for id in &ids {
        assert_eq!(ended(&env, id.as_str()).await, JobState::Succeeded);
    }
    let (a, b, c) = (
        &seen(ids[0].as_str())[0],
        &seen(ids[1].as_str())[0],
        &seen(ids[2].as_str())[0],
    );
    assert!(a.ended <= b.started && b.ended <= c.started, "in order");
    let from_a = &b.parents[ids[0].as_str()];
    assert_eq!(from_a.state, "succeeded");
    assert_eq!(
        from_a
            .result_as::<String>()
            .expect("a result")
            .expect("decodes"),
        "made by a"
    );
    assert_eq!(c.parents.len(), 1);
    assert!(a.parents.is_empty());
    for id in &ids {
        assert_eq!(support::runs(id.as_str()), 1);
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"stevedore_jobs_resolved_total{queue="flow",outcome="released"} 2"#),
        "b and c released by the worker: {text}"
    );
    // Once every dependent was told, the queue stops looking for dependents.
    let flag = format!("{}:{{flow}}:has_deps", env.prefix);
    eventually(
        Duration::from_secs(5),
        "the dependents count is gone",
        || async {
            let n: u64 = env.raw.exists(&flag).await.expect("exists");
            n == 0
        },
    )
    .await;
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_with_status_off() {
    let env = TestEnv::start().await;
    let client = env.client_with(|b| b.job_status(None)).await;
    let ids = client
        .enqueue_chain(Chain::new(job("x", 0)).then(job("y", 0)).then(job("z", 0)))
        .await
        .expect("enqueue chain");
    let running = support::spawn(
        Worker::builder(client.clone())
            .handler(step::handler())
            .build()
            .expect("worker"),
    );
    // No status is kept: the chain is followed by what the handlers saw.
    eventually(Duration::from_secs(10), "the last job runs", || async {
        support::runs(ids[2].as_str()) == 1
    })
    .await;
    let (x, y, z) = (
        &seen(ids[0].as_str())[0],
        &seen(ids[1].as_str())[0],
        &seen(ids[2].as_str())[0],
    );
    assert!(x.ended <= y.started && y.ended <= z.started, "in order");
    assert_eq!(client.status(ids[1].as_str()).await.expect("status"), None);
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_follows_its_policy_when_a_job_it_waits_for_dies() {
    let env = TestEnv::start().await;
    let ok = env.client.enqueue(job("ok", 100)).await.expect("enqueue");
    let bad = env.client.enqueue(failing("bad")).await.expect("enqueue");
    let after = |policy| [Dependency::on(&ok), Dependency::on(&bad).on_failure(policy)];
    let cancelled = env
        .client
        .enqueue_after(job("cancelled", 0), after(OnParentFailure::Cancel))
        .await
        .expect("enqueue");
    let runs = env
        .client
        .enqueue_after(job("runs", 0), after(OnParentFailure::Run))
        .await
        .expect("enqueue");
    let dead = env
        .client
        .enqueue_after(job("dead", 0), after(OnParentFailure::DeadLetter))
        .await
        .expect("enqueue");
    // The grandchild of a cancelled job is cancelled too.
    let grandchild = env
        .client
        .enqueue_after(job("grandchild", 0), [Dependency::on(&cancelled)])
        .await
        .expect("enqueue");
    for id in [&cancelled, &runs, &dead, &grandchild] {
        assert_eq!(env.state(id.as_str()).await, Some(JobState::Blocked));
    }
    let running = support::spawn(worker(&env));
    assert_eq!(ended(&env, cancelled.as_str()).await, JobState::Cancelled);
    let s = env
        .client
        .status(cancelled.as_str())
        .await
        .expect("status")
        .expect("known");
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains(bad.as_str())),
        "{s:?}"
    );
    assert_eq!(ended(&env, grandchild.as_str()).await, JobState::Cancelled);
    assert_eq!(ended(&env, runs.as_str()).await, JobState::Succeeded);
    let r = &seen(runs.as_str())[0];
    assert_eq!(r.parents[ok.as_str()].state, "succeeded");
    assert_eq!(r.parents[bad.as_str()].state, "dead");
    assert!(r.parents[bad.as_str()].result.contains("bad failed"));
    assert_eq!(ended(&env, dead.as_str()).await, JobState::Dead);
    let letters = env.dead_letters("flow").await;
    assert!(
        letters.iter().any(
            |l| l.get("reason").map(String::as_str) == Some("parent_failed")
                && l.get("id").map(String::as_str) == Some(dead.as_str())
        ),
        "{letters:?}"
    );
    for id in [&cancelled, &dead, &grandchild] {
        assert_eq!(support::runs(id.as_str()), 0, "{id} never ran");
    }
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_on_ended_or_unknown_jobs() {
    let env = TestEnv::start().await;
    let running = support::spawn(worker(&env));
    let done = env.client.enqueue(job("done", 0)).await.expect("enqueue");
    assert_eq!(ended(&env, done.as_str()).await, JobState::Succeeded);
    // A job that ended already counts as it ended: the dependent runs at once.
    let next = env
        .client
        .enqueue_after(job("next", 0), [Dependency::on(&done)])
        .await
        .expect("enqueue");
    assert_eq!(ended(&env, next.as_str()).await, JobState::Succeeded);
    assert_eq!(
        seen(next.as_str())[0].parents[done.as_str()].state,
        "succeeded"
    );

    // An unknown id is refused, and nothing is left behind.
    for unknown in ["flow:n-1-0", "0190c0de-0000-7000-8000-000000000000"] {
        let r = env
            .client
            .enqueue_after(
                job("orphan", 0),
                [Dependency::on(&done), Dependency::on(unknown)],
            )
            .await;
        assert!(
            matches!(r, Err(Error::UnknownJob(ref id)) if id == unknown),
            "{r:?}"
        );
    }
    let blocked: Vec<String> = env
        .raw
        .custom(
            fred::cmd!("KEYS"),
            vec![format!("{}:{{flow}}:job:*", env.prefix)],
        )
        .await
        .expect("keys");
    for key in blocked {
        let st: Option<String> = env.raw.hget(&key, "state").await.expect("hget");
        assert_ne!(st.as_deref(), Some("blocked"), "{key} was left blocked");
    }
    let held: i64 = env
        .raw
        .zcard(format!("{}:{{flow}}:held", env.prefix))
        .await
        .expect("zcard");
    assert_eq!(held, 0, "refused jobs left in the held set");
    assert!(matches!(
        env.client.enqueue_after(job("none", 0), []).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        env.client
            .enqueue_after(
                job("u", 0).unique("k", Duration::from_secs(60)),
                [Dependency::on(&done)]
            )
            .await,
        Err(Error::InvalidInput(_))
    ));
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_parents_ending_together_on_two_workers_release_their_child_once() {
    const CHILDREN: usize = 60;
    let env = TestEnv::start().await;
    let mut parents = Vec::new();
    let mut children = Vec::new();
    for i in 0..CHILDREN {
        // The two parents of a child meet: each ends only once the other runs too, so
        // they run side by side on the two workers and end together.
        let key = format!("{}-{i}", env.prefix);
        let p1 = env
            .client
            .enqueue(meeting(&format!("p{i}a"), &key))
            .await
            .expect("enqueue");
        let p2 = env
            .client
            .enqueue(meeting(&format!("p{i}b"), &key))
            .await
            .expect("enqueue");
        children.push(
            env.client
                .enqueue_after(
                    job(&format!("c{i}"), 0),
                    [Dependency::on(&p1), Dependency::on(&p2)],
                )
                .await
                .expect("enqueue"),
        );
        parents.push((p1, p2));
    }
    // Two workers, each taking one job at a time: the two parents of a child run side by
    // side, one on each, and end within a few ms of each other.
    let one = |env: &TestEnv| {
        Worker::builder(env.client.clone())
            .handler(step::handler())
            .concurrency(1)
            .build()
            .expect("worker")
    };
    let (w1, w2) = (support::spawn(one(&env)), support::spawn(one(&env)));
    for c in &children {
        assert_eq!(ended(&env, c.as_str()).await, JobState::Succeeded);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut close = 0;
    for (c, (p1, p2)) in children.iter().zip(&parents) {
        assert_eq!(support::runs(c.as_str()), 1, "{c} ran once");
        let (a, b) = (&seen(p1.as_str())[0], &seen(p2.as_str())[0]);
        let gap = if a.ended > b.ended {
            a.ended - b.ended
        } else {
            b.ended - a.ended
        };
        if gap < Duration::from_millis(5) {
            close += 1;
        }
        assert!(seen(c.as_str())[0].started >= a.ended.max(b.ended));
    }
    eprintln!("{close} of {CHILDREN} children had parents ending within 5 ms of each other");
    assert!(close > CHILDREN / 2, "the race was hit: {close}");
    w1.shutdown().await.expect("stop");
    w2.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_its_jobs_and_calls_back_once() {
    let env = TestEnv::start().await;
    let mut batch = Batch::new()
        .on_complete(job("complete", 0))
        .on_success(job("success", 0));
    for i in 0..20 {
        batch = if i % 7 == 3 {
            batch.job(failing(&format!("m{i}")))
        } else {
            batch.job(job(&format!("m{i}"), 10))
        };
    }
    let b = env
        .client
        .enqueue_batch(batch)
        .await
        .expect("enqueue batch");
    assert_eq!(b.jobs.len(), 20);
    let status = env
        .client
        .batch(&b.id)
        .await
        .expect("batch")
        .expect("known");
    assert_eq!(
        (status.state, status.total, status.pending),
        (BatchState::Running, 20, 20)
    );
    let running = support::spawn(worker(&env));
    let complete = b.on_complete.clone().expect("on complete");
    let success = b.on_success.clone().expect("on success");
    assert_eq!(ended(&env, complete.as_str()).await, JobState::Succeeded);
    assert_eq!(ended(&env, success.as_str()).await, JobState::Cancelled);
    let status = env
        .client
        .batch(&b.id)
        .await
        .expect("batch")
        .expect("known");
    assert_eq!(
        (
            status.state,
            status.succeeded,
            status.failed,
            status.pending
        ),
        (BatchState::Done, 17, 3, 0)
    );
    let outcome = &seen(complete.as_str())[0].parents[b.id.as_str()];
    assert_eq!(outcome.state, "failed");
    assert!(outcome.result.contains("3 of 20"), "{outcome:?}");
    // Every job ran once, the callback once.
    for id in &b.jobs {
        assert_eq!(support::runs(id.as_str()), 1);
    }
    assert_eq!(support::runs(complete.as_str()), 1);
    assert_eq!(support::runs(success.as_str()), 0);

    // All succeed: on_success runs.
    let mut ok = Batch::new().on_success(job("all good", 0));
    for i in 0..5 {
        ok = ok.job(job(&format!("n{i}"), 0));
    }
    let ok = env.client.enqueue_batch(ok).await.expect("enqueue");
    let success = ok.on_success.clone().expect("on success");
    assert_eq!(ended(&env, success.as_str()).await, JobState::Succeeded);
    assert_eq!(ok.on_complete, None);
    assert!(matches!(
        env.client.enqueue_batch(Batch::new()).await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        env.client.batch("flow:b-nothing").await.expect("batch"),
        None
    );
    running.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_calls_back_once_when_the_worker_running_it_is_killed() {
    let env = TestEnv::start().await;
    let executions = format!("{}-demo:executions", env.prefix);
    let count =
        |ms: u64| RawJob::new("demo.count", "demo", &serde_json::json!({ "ms": ms })).expect("job");
    let mut batch = Batch::new().on_complete(count(0));
    for _ in 0..30 {
        batch = batch.job(count(150));
    }
    let process = WorkerProcess::start(&env, &["--lease", "1s", "--concurrency", "4"]);
    let b = env.client.enqueue_batch(batch).await.expect("enqueue");
    // Killed with some of the batch done, some running, some waiting.
    eventually(Duration::from_secs(30), "some jobs ended", || async {
        env.client
            .batch(&b.id)
            .await
            .expect("batch")
            .is_some_and(|s| s.succeeded >= 5)
    })
    .await;
    process.kill();
    let process = WorkerProcess::start(&env, &["--lease", "1s", "--concurrency", "8"]);
    let complete = b.on_complete.clone().expect("callback");
    let s = wait_for(Duration::from_secs(30), "the callback ran", || async {
        env.client
            .status(complete.as_str())
            .await
            .expect("status")
            .filter(|s| s.state.is_final())
    })
    .await;
    assert_eq!(s.state, JobState::Succeeded);
    let status = env
        .client
        .batch(&b.id)
        .await
        .expect("batch")
        .expect("known");
    assert_eq!((status.state, status.succeeded), (BatchState::Done, 30));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs: HashMap<String, u64> = env.raw.hgetall(&executions).await.expect("executions");
    assert_eq!(
        runs.get(complete.as_str()),
        Some(&1),
        "the callback ran exactly once"
    );
    for id in &b.jobs {
        assert!(runs.get(id.as_str()).is_some_and(|n| *n >= 1), "{id} ran");
    }
    process.terminate();
}

/// The ids of the jobs of `queue` left `blocked`.
async fn blocked_in(env: &TestEnv, queue: &str) -> Vec<String> {
    let keys: Vec<String> = env
        .raw
        .custom(
            fred::cmd!("KEYS"),
            vec![format!("{}:{{{queue}}}:job:*", env.prefix)],
        )
        .await
        .expect("keys");
    let mut out = Vec::new();
    for key in keys {
        let st: Option<String> = env.raw.hget(&key, "state").await.expect("hget");
        if st.as_deref() == Some("blocked") {
            out.push(
                key.rsplit_once(":job:")
                    .map(|(_, id)| id.to_string())
                    .unwrap_or_default(),
            );
        }
    }
    out
}

/// Runs `write` (a future: nothing is sent before it is awaited) while `key` holds a value
/// of the wrong type, and checks that Redis refused it: the write stops there, as a client
/// whose connection is lost would.
async fn stopped_at<T: std::fmt::Debug>(
    env: &TestEnv,
    key: &str,
    write: impl std::future::Future<Output = stevedore::Result<T>>,
) {
    let _: () = env
        .raw
        .set(key, "not a set", None, None, false)
        .await
        .expect("set");
    let r = write.await;
    assert!(matches!(r, Err(Error::Redis(_))), "{r:?}");
    let _: i64 = env.raw.del(key).await.expect("del");
}

async fn cancelled_reason(env: &TestEnv, id: &str) -> String {
    let s = env
        .client
        .status(id)
        .await
        .expect("status")
        .expect("a status");
    assert_eq!(s.state, JobState::Cancelled, "{s:?}");
    s.reason.unwrap_or_default()
}

/// A client that stops half-way through writing a flow leaves jobs that would wait for
/// ever: a janitor finishes what can be finished and cancels what depends on a part never
/// written. Each write is stopped by Redis refusing it (a key of the wrong type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_janitor_finishes_or_undoes_flows_whose_client_stopped_half_way() {
    let env = TestEnv::start().await;
    let key = |q: &str, rest: &str| format!("{}:{{{q}}}:{rest}", env.prefix);

    // A dependency whose second registration fails: the job waits for one of two parents.
    let p1 = env.client.enqueue(job("p1", 0)).await.expect("enqueue");
    let p2 = env.client.enqueue(job("p2", 0)).await.expect("enqueue");
    stopped_at(
        &env,
        &key("flow", &format!("dependents:{p2}")),
        env.client
            .enqueue_after(job("child", 0), [Dependency::on(&p1), Dependency::on(&p2)]),
    )
    .await;
    let child = blocked_in(&env, "flow").await;
    assert_eq!(child.len(), 1, "{child:?}");

    // A chain x -> y -> flow, written last job first, stopped at its middle job.
    stopped_at(
        &env,
        &key("flow-y", "held"),
        env.client.enqueue_chain(
            Chain::new(job("x", 0).queue("flow-x"))
                .then(job("y", 0).queue("flow-y"))
                .then(job("z", 0)),
        ),
    )
    .await;
    let tail: Vec<String> = blocked_in(&env, "flow")
        .await
        .into_iter()
        .filter(|id| !child.contains(id))
        .collect();
    assert_eq!(tail.len(), 1, "{tail:?}");
    assert!(blocked_in(&env, "flow-x").await.is_empty());

    // A batch stopped before the batch itself was written: one job of two was.
    stopped_at(
        &env,
        &key("flow-z", "held"),
        env.client.enqueue_batch(
            Batch::new()
                .job(job("bx", 0).queue("flow-x"))
                .job(job("bz", 0).queue("flow-z"))
                .on_complete(job("unborn callback", 0).queue("flow-w")),
        ),
    )
    .await;
    let orphans = blocked_in(&env, "flow-x").await;
    let unborn = blocked_in(&env, "flow-w").await;
    assert_eq!((orphans.len(), unborn.len()), (1, 1));

    // A batch written whole, stopped at releasing its jobs: none was released, none sealed.
    stopped_at(
        &env,
        &key("flow-v", "normal"),
        env.client.enqueue_batch(
            Batch::new()
                .job(job("v1", 0).queue("flow-v"))
                .job(job("v2", 0).queue("flow-v"))
                .on_complete(job("callback", 0).queue("flow-w")),
        ),
    )
    .await;
    let members = blocked_in(&env, "flow-v").await;
    assert_eq!(members.len(), 2);
    let callback: Vec<String> = blocked_in(&env, "flow-w")
        .await
        .into_iter()
        .filter(|id| !unborn.contains(id))
        .collect();
    assert_eq!(callback.len(), 1);

    let started = Instant::now();
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .queues(["flow", "flow-v", "flow-w", "flow-x", "flow-y", "flow-z"])
            .handler(step::handler())
            .concurrency(8)
            .lease(Duration::from_secs(2))
            .flow_repair_after(Duration::from_secs(1))
            .build()
            .expect("worker"),
    );
    // The dependency is registered again: the child runs after both parents.
    assert_eq!(ended(&env, &child[0]).await, JobState::Succeeded);
    let parents = &seen(&child[0])[0].parents;
    assert!(
        parents.contains_key(p1.as_str()) && parents.contains_key(p2.as_str()),
        "{parents:?}"
    );
    // The chain's tail waits for a job never written: cancelled, saying so.
    assert_eq!(ended(&env, &tail[0]).await, JobState::Cancelled);
    let why = cancelled_reason(&env, &tail[0]).await;
    assert!(why.contains("never written"), "{why}");
    // The batch never written: its job and its callback are cancelled, not run.
    for id in [&orphans[0], &unborn[0]] {
        assert_eq!(ended(&env, id).await, JobState::Cancelled);
        let why = cancelled_reason(&env, id).await;
        assert!(why.contains("never written"), "{why}");
    }
    // The batch written whole: its jobs are released, it is sealed, its callback runs once.
    assert_eq!(ended(&env, &callback[0]).await, JobState::Succeeded);
    for id in &members {
        assert_eq!(ended(&env, id).await, JobState::Succeeded);
    }
    eprintln!(
        "flows finished or undone {:?} after the worker started",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in child.iter().chain(&members).chain(&callback) {
        assert_eq!(support::runs(id), 1, "{id} ran once");
    }
    for id in tail.iter().chain(&orphans).chain(&unborn) {
        assert_eq!(support::runs(id), 0, "{id} never ran");
    }
    // Nothing is left to finish (a repair leaves the held set after its last step).
    for q in ["flow", "flow-v", "flow-w", "flow-x", "flow-y", "flow-z"] {
        eventually(Duration::from_secs(10), "the held set emptied", || async {
            env.raw
                .zcard::<i64, _>(key(q, "held"))
                .await
                .expect("zcard")
                == 0
        })
        .await;
        assert!(blocked_in(&env, q).await.is_empty(), "{q}");
    }
    running.shutdown().await.expect("stop");
}

/// A flow written to the end leaves nothing for a janitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_written_to_the_end_leaves_nothing_to_finish() {
    let env = TestEnv::start().await;
    let a = env.client.enqueue(job("a", 0)).await.expect("enqueue");
    env.client
        .enqueue_after(job("b", 0), [Dependency::on(&a)])
        .await
        .expect("enqueue");
    env.client
        .enqueue_chain(Chain::new(job("c", 0).queue("flow-x")).then(job("d", 0)))
        .await
        .expect("chain");
    env.client
        .enqueue_batch(
            Batch::new()
                .job(job("e", 0))
                .on_success(job("f", 0).queue("flow-x")),
        )
        .await
        .expect("batch");
    for q in ["flow", "flow-x"] {
        let held: i64 = env
            .raw
            .zcard(format!("{}:{{{q}}}:held", env.prefix))
            .await
            .expect("zcard");
        assert_eq!(held, 0, "{q}'s held set");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_repair_delay_under_a_second_is_refused() {
    let env = TestEnv::start().await;
    let built = Worker::builder(env.client.clone())
        .handler(step::handler())
        .flow_repair_after(Duration::from_millis(500))
        .build();
    assert!(
        matches!(built, Err(Error::InvalidConfig(ref m)) if m.contains("flow_repair_after")),
        "{:?}",
        built.err()
    );
}
