use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{Client, JobContext, JobError, JobState, RetryPolicy, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    hold_ms: u64,
    fail_first: bool,
    permanent: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    pages: u32,
}

#[job_handler(name = "status.step", queue = "st", max_attempts = 3)]
async fn step(s: Step, ctx: JobContext) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(s.hold_ms)).await;
    if s.permanent {
        return Err(JobError::permanent("the report was withdrawn"));
    }
    if s.fail_first && ctx.attempt() == 1 {
        return Err(JobError::retry("printer jammed"));
    }
    ctx.set_result(&Report { pages: 12 })?;
    Ok(())
}

/// Polls the status every few ms and returns the distinct states seen, in order, once the
/// job reaches a final state.
async fn watch(client: &Client, id: &str) -> Vec<JobState> {
    let mut seen: Vec<JobState> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = client.status_in("st", id).await.expect("status") {
            if seen.last() != Some(&s.state) {
                seen.push(s.state);
            }
            if s.state.is_final() {
                return seen;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job never finished; saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn status_follows_a_job_through_every_state() {
    let env = TestEnv::start().await;
    // Queued: enqueued, no worker yet.
    let queued = env
        .client
        .enqueue(step::job(Step {
            hold_ms: 0,
            fail_first: false,
            permanent: false,
        }))
        .await
        .expect("enqueue");
    let s = env
        .client
        .status(queued.as_str())
        .await
        .expect("status")
        .expect("known");
    assert_eq!(
        (
            s.state,
            s.attempts,
            s.max_attempts,
            s.queue.as_str(),
            s.job_type.as_str()
        ),
        (JobState::Queued, 0, 3, "st", "status.step")
    );
    assert!(s.enqueued_at.is_some());

    // Scheduled → running → retrying → running → succeeded, with a result.
    let id = env
        .client
        .enqueue(
            step::job(Step {
                hold_ms: 300,
                fail_first: true,
                permanent: false,
            })
            .delay(Duration::from_millis(400)),
        )
        .await
        .expect("enqueue");
    let s = env
        .client
        .status_in("st", id.as_str())
        .await
        .expect("status")
        .expect("known");
    assert_eq!(s.state, JobState::Scheduled);
    assert!(s.next_at.is_some());

    let running = support::spawn(
        Worker::builder(env.client.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(400)))
            .handler(step::handler())
            .build()
            .expect("worker"),
    );
    let seen = watch(&env.client, id.as_str()).await;
    let core: Vec<JobState> = seen
        .iter()
        .copied()
        .filter(|s| *s != JobState::Queued)
        .collect();
    assert_eq!(
        core,
        vec![
            JobState::Scheduled,
            JobState::Running,
            JobState::Retrying,
            JobState::Running,
            JobState::Succeeded
        ],
        "seen {seen:?}"
    );
    let s = env
        .client
        .status(id.as_str())
        .await
        .expect("status")
        .expect("known");
    assert_eq!(s.attempts, 2);
    assert_eq!(
        s.error.as_deref(),
        Some("printer jammed"),
        "the last error is kept"
    );
    assert_eq!(
        s.result_as::<Report>().map(|r| r.ok()),
        Some(Some(Report { pages: 12 }))
    );
    assert!(s.finished_at.is_some() && s.started_at.is_some());

    // Dead, with its reason; wait_for returns at the final state.
    let dead = env
        .client
        .enqueue(step::job(Step {
            hold_ms: 0,
            fail_first: false,
            permanent: true,
        }))
        .await
        .expect("enqueue");
    let s = env
        .client
        .wait_for(dead.as_str(), Duration::from_secs(10))
        .await
        .expect("wait")
        .expect("known");
    assert_eq!(
        (s.state, s.reason.as_deref(), s.error.as_deref()),
        (
            JobState::Dead,
            Some("failed"),
            Some("the report was withdrawn")
        )
    );
    running.shutdown().await.expect("clean shutdown");

    assert_eq!(
        env.client.status("no-such-job").await.expect("status"),
        None
    );
    let waited = env
        .client
        .wait_for("no-such-job", Duration::from_millis(50))
        .await
        .expect("wait");
    assert_eq!(waited, None);
}

#[tokio::test]
async fn status_expires_after_the_retention_and_can_be_turned_off() {
    let env = TestEnv::start().await;
    let short = env
        .client_with(|b| b.job_status(Some(Duration::from_millis(300))))
        .await;
    let id = short
        .enqueue(step::job(Step {
            hold_ms: 0,
            fail_first: false,
            permanent: false,
        }))
        .await
        .expect("enqueue");
    // While it waits its status is its entry, whatever the retention; the retention counts
    // from the end.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = short.status(id.as_str()).await.expect("status");
    assert_eq!(s.map(|s| s.state), Some(JobState::Queued));
    let running = support::spawn(
        Worker::builder(short.clone())
            .handler(step::handler())
            .build()
            .expect("worker"),
    );
    let s = short
        .wait_for(id.as_str(), Duration::from_secs(10))
        .await
        .expect("wait");
    assert_eq!(s.map(|s| s.state), Some(JobState::Succeeded));
    running.shutdown().await.expect("clean shutdown");
    eventually(Duration::from_secs(5), "status expired", || async {
        short.status(id.as_str()).await.ok().flatten().is_none()
    })
    .await;

    let off = env.client_with(|b| b.job_status(None)).await;
    let id = off
        .enqueue(step::job(Step {
            hold_ms: 0,
            fail_first: false,
            permanent: false,
        }))
        .await
        .expect("enqueue");
    let running = support::spawn(
        Worker::builder(off.clone())
            .handler(step::handler())
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(10), "job ran", || async {
        env.ready("st").await == 0 && env.pending("st").await == 0
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
    assert_eq!(
        off.status(id.as_str()).await.expect("status"),
        None,
        "no status written when off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_producers_of_a_unique_job_create_one() {
    let env = TestEnv::start().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = env.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .enqueue(
                    step::job(Step {
                        hold_ms: 0,
                        fail_first: false,
                        permanent: false,
                    })
                    .unique("report-2026-11", Duration::from_secs(60)),
                )
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task").expect("enqueue"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every producer got the same job id");
    assert_eq!(env.ready("st").await, 1, "one job enqueued");

    // By payload: equal payloads collapse, different ones do not; delayed jobs too.
    let a = Step {
        hold_ms: 1,
        fail_first: false,
        permanent: false,
    };
    let b = Step {
        hold_ms: 2,
        fail_first: false,
        permanent: false,
    };
    let ttl = Duration::from_secs(60);
    let ids = env
        .client
        .enqueue_bulk([
            step::job(a.clone()).unique_by_payload(ttl),
            step::job(a.clone()).unique_by_payload(ttl),
            step::job(b.clone())
                .unique_by_payload(ttl)
                .delay(Duration::from_secs(30)),
            step::job(b)
                .unique_by_payload(ttl)
                .delay(Duration::from_secs(30)),
        ])
        .await
        .expect("bulk");
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[3]);
    assert_ne!(ids[0], ids[2]);
    assert_eq!(env.ready("st").await, 2);
    // The unique key lives for its ttl, readable with redis-cli.
    let key = format!("{}:{{st}}:unique:report-2026-11", env.prefix);
    let ttl_ms: i64 = fred::prelude::KeysInterface::pttl(&env.raw, key.as_str())
        .await
        .expect("pttl");
    assert!(ttl_ms > 50_000 && ttl_ms <= 60_000, "ttl {ttl_ms}");
    let err = env
        .client
        .enqueue(step::job(a).unique("", ttl))
        .await
        .expect_err("empty key");
    assert!(
        matches!(
            err,
            stevedore::Error::InvalidName {
                kind: "unique key",
                ..
            }
        ),
        "{err:?}"
    );
}

#[job_handler(name = "status.quiet", queue = "st2", keep_succeeded = "0s")]
async fn quiet(s: Step, _ctx: JobContext) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(s.hold_ms)).await;
    Ok(())
}

#[job_handler(name = "status.kept", queue = "st2")]
async fn kept(s: Step, ctx: JobContext) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(s.hold_ms)).await;
    ctx.set_result(&Report { pages: 3 })?;
    Ok(())
}

/// A job enqueued to run now has no status hash: queued and running are read from its entry
/// and the pending list, succeeded from its queue's done bucket, kept as long as its type or
/// queue asks (nothing at all for zero).
#[tokio::test]
async fn a_ready_job_is_followed_through_its_entry_and_kept_as_long_as_asked() {
    let env = TestEnv::start().await;
    let step = |hold_ms| Step {
        hold_ms,
        fail_first: false,
        permanent: false,
    };
    let kept_id = env
        .client
        .enqueue(kept::job(step(400)))
        .await
        .expect("enqueue");
    let quiet_id = env
        .client
        .enqueue(quiet::job(step(400)))
        .await
        .expect("enqueue");
    let s = env
        .client
        .status(kept_id.as_str())
        .await
        .expect("status")
        .expect("known");
    assert_eq!(
        (s.state, s.attempts, s.job_type.as_str(), s.queue.as_str()),
        (JobState::Queued, 0, "status.kept", "st2")
    );
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .keep_succeeded("st2", Duration::from_millis(1500))
            .handler(kept::handler())
            .handler(quiet::handler())
            .build()
            .expect("worker"),
    );
    for id in [&kept_id, &quiet_id] {
        let s = support::wait_for(Duration::from_secs(10), "running", || async {
            env.client
                .status_in("st2", id.as_str())
                .await
                .ok()
                .flatten()
                .filter(|s| s.state == JobState::Running)
        })
        .await;
        assert_eq!(s.attempts, 1);
    }
    let s = env
        .client
        .wait_for(kept_id.as_str(), Duration::from_secs(10))
        .await
        .expect("wait")
        .expect("known");
    assert_eq!(
        (
            s.state,
            s.attempts,
            s.job_type.as_str(),
            s.result_as::<Report>().map(|r| r.ok())
        ),
        (
            JobState::Succeeded,
            1,
            "status.kept",
            Some(Some(Report { pages: 3 }))
        )
    );
    assert!(s.finished_at.is_some() && s.enqueued_at.is_some());
    eventually(Duration::from_secs(10), "the quiet job is done", || async {
        env.ready("st2").await == 0 && env.pending("st2").await == 0
    })
    .await;
    assert_eq!(
        env.client.status(quiet_id.as_str()).await.expect("status"),
        None,
        "keep_succeeded = 0: nothing written on success"
    );
    let statuses: Vec<String> = env
        .raw
        .custom(
            fred::cmd!("KEYS"),
            vec![format!("{}:{{st2}}:job:*", env.prefix)],
        )
        .await
        .expect("keys");
    assert!(statuses.is_empty(), "no status hash: {statuses:?}");
    eventually(
        Duration::from_secs(5),
        "the success record expired",
        || async {
            env.client
                .status(kept_id.as_str())
                .await
                .ok()
                .flatten()
                .is_none()
        },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
}

/// An id that names an entry of a stream key that holds something else (a key written by
/// hand, another program under the prefix) is an unknown job, not a Redis error.
#[tokio::test]
async fn an_id_whose_stream_key_holds_another_type_is_unknown() {
    let env = TestEnv::start().await;
    let stream = format!("{}:{{st4}}:normal", env.prefix);
    let _: () = env
        .raw
        .set(&stream, "not a stream", None, None, false)
        .await
        .expect("set");
    for id in ["st4:n-1733300000000-0", "st4:n-0-0"] {
        assert_eq!(
            env.client
                .status(id)
                .await
                .expect("no error for a wrong type"),
            None,
            "{id}"
        );
    }
}

/// A queue with a memory budget for its success records loses the oldest past it, whole
/// minutes at a time, at the janitor's next round: its jobs then read as unknown.
#[tokio::test]
async fn success_records_past_the_queues_memory_budget_are_deleted() {
    let env = TestEnv::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            env.client
                .enqueue(kept::job(Step {
                    hold_ms: 0,
                    fail_first: false,
                    permanent: false,
                }))
                .await
                .expect("enqueue"),
        );
    }
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .keep_succeeded("st2", Duration::from_secs(3600))
            .succeeded_budget("st2", 1)
            .lease(Duration::from_millis(300))
            .handler(kept::handler())
            .build()
            .expect("worker"),
    );
    eventually(Duration::from_secs(10), "the jobs are done", || async {
        env.ready("st2").await == 0 && env.pending("st2").await == 0
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the records past the budget are deleted",
        || async {
            let mut none = true;
            for id in &ids {
                none &= env
                    .client
                    .status(id.as_str())
                    .await
                    .ok()
                    .flatten()
                    .is_none();
            }
            none
        },
    )
    .await;
    let buckets: Vec<String> = env
        .raw
        .custom(
            fred::cmd!("KEYS"),
            vec![format!("{}:{{st2}}:done:*", env.prefix)],
        )
        .await
        .expect("keys");
    assert!(buckets.is_empty(), "{buckets:?}");
    running.shutdown().await.expect("clean shutdown");
}
