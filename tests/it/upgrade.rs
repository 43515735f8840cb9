//! Data written by the previous version (every ready job with a status hash and an `id`
//! field, a UUID) keeps working after workers are upgraded: old entries decode and run,
//! old status records are read until they expire, old dead letters replay.
//!
//! The old data is written by the previous version's own scripts (`fixtures/previous/`:
//! `enqueue_ready.lua` and `enqueue.lua` with their prelude, as they were before job
//! status moved into the entries), run with EVAL on a plain connection.

use std::time::Duration;

use fred::prelude::*;
use stevedore::{JobContext, JobError, JobState, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

#[job_handler(name = "up.echo", queue = "up", max_attempts = 2)]
async fn echo(n: u32, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), n);
    ctx.set_result(&n)?;
    Ok(())
}

fn previous(script: &str) -> String {
    let body = match script {
        "enqueue_ready" => include_str!("fixtures/previous/enqueue_ready.lua"),
        _ => include_str!("fixtures/previous/enqueue.lua"),
    };
    format!("{}\n{body}", include_str!("fixtures/previous/prelude.lua"))
}

fn payload(n: u32) -> Vec<u8> {
    rmp_serde::to_vec_named(&n).expect("msgpack")
}

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Enqueues ready jobs `(id, n)` on the normal stream of `up` as the previous version did:
/// a status hash each (retention one hour) and an entry with an `id` field.
async fn enqueue_previous(env: &TestEnv, jobs: &[(String, u32)]) {
    let mut keys: Vec<String> = ["high", "normal", "low"]
        .iter()
        .map(|p| env.stream("up", p))
        .collect();
    let mut args: Vec<Value> = vec![3_600_000.into(), now_ms().into(), "up".into()];
    for (id, n) in jobs {
        keys.push(format!("{}:{{up}}:job:{id}", env.prefix));
        args.extend([
            Value::from(2),
            Value::from(0),
            Value::from(id.as_str()),
            Value::from("up.echo"),
            Value::from(1),
            Value::from(2),
            Value::from(now_ms()),
            Value::Bytes(payload(*n).into()),
        ]);
    }
    let enqueued: i64 = env
        .raw
        .eval(previous("enqueue_ready"), keys, args)
        .await
        .expect("previous enqueue_ready.lua");
    assert_eq!(enqueued, jobs.len() as i64);
}

#[tokio::test]
async fn jobs_statuses_and_dead_letters_of_the_previous_version_keep_working() {
    let env = TestEnv::start().await;
    let stream = env.stream("up", "normal");

    // Three ready jobs, and one an old worker took and died holding (its status says
    // running, as the previous version's started.lua left it).
    let ready: Vec<(String, u32)> = (1..=3).map(|n| (uuid(), n)).collect();
    let taken = (uuid(), 4);
    enqueue_previous(&env, &ready).await;
    let _: Value = env
        .raw
        .xgroup_create(&stream, "stevedore", "0", true)
        .await
        .expect("group");
    enqueue_previous(&env, std::slice::from_ref(&taken)).await;
    let _: Value = env
        .raw
        .xreadgroup(
            "stevedore",
            "old-worker",
            Some(3),
            None,
            false,
            &stream,
            ">",
        )
        .await
        .expect("an old worker reads");
    // It read the three first; the fourth stays undelivered. Mark the first as taken by the
    // dead worker for good: the janitor must take it over.
    let _: () = env
        .raw
        .hset(
            format!("{}:{{up}}:job:{}", env.prefix, ready[0].0),
            [("state", "running"), ("attempts", "1")],
        )
        .await
        .expect("hset");

    // A delayed job, through the previous enqueue.lua.
    let delayed = (uuid(), 5);
    let mut args: Vec<Value> = vec![
        delayed.0.as_str().into(),
        "in".into(),
        300.into(),
        "normal".into(),
        format!("{}:{{up}}:wake", env.prefix).into(),
        3_600_000.into(),
        0.into(),
        "up.echo".into(),
        "up".into(),
        2.into(),
    ];
    for (k, v) in [
        ("id", Value::from(delayed.0.as_str())),
        ("type", "up.echo".into()),
        ("attempt", 1.into()),
        ("max_attempts", 2.into()),
        ("enqueued_at", now_ms().into()),
        ("payload", Value::Bytes(payload(delayed.1).into())),
    ] {
        args.push(k.into());
        args.push(v);
    }
    let status_key = format!("{}:{{up}}:job:{}", env.prefix, delayed.0);
    let reply: Vec<Value> = env
        .raw
        .eval(
            previous("enqueue"),
            vec![
                format!("{}:{{up}}:scheduled", env.prefix),
                status_key.clone(),
                status_key,
            ],
            args,
        )
        .await
        .expect("previous enqueue.lua");
    assert_eq!(reply.len(), 2);

    // A dead letter as the previous dead_letter.lua wrote it, with its status.
    let dead = (uuid(), 6);
    let _: String = env
        .raw
        .xadd(
            env.dlq("up"),
            false,
            None,
            "*",
            vec![
                ("id", Value::from(dead.0.as_str())),
                ("type", "up.echo".into()),
                ("attempt", 2.into()),
                ("max_attempts", 2.into()),
                ("enqueued_at", now_ms().into()),
                ("payload", Value::Bytes(payload(dead.1).into())),
                ("reason", "failed".into()),
                ("error", "printer on fire".into()),
                ("failed_at", now_ms().into()),
                ("deliveries", 1.into()),
                ("origin", format!("{stream} 1-1").into()),
            ],
        )
        .await
        .expect("xadd");
    let _: () = env
        .raw
        .hset(
            format!("{}:{{up}}:job:{}", env.prefix, dead.0),
            [
                ("state", "dead"),
                ("type", "up.echo"),
                ("queue", "up"),
                ("reason", "failed"),
            ],
        )
        .await
        .expect("hset");
    // A finished job's old record, about to expire.
    let finished = uuid();
    let finished_key = format!("{}:{{up}}:job:{finished}", env.prefix);
    let _: () = env
        .raw
        .hset(
            &finished_key,
            [("state", "succeeded"), ("type", "up.echo"), ("queue", "up")],
        )
        .await
        .expect("hset");
    let _: () = env
        .raw
        .pexpire(&finished_key, 1_500, None)
        .await
        .expect("pexpire");

    // The previous client registered the queue along with its jobs.
    let _: i64 = env
        .raw
        .sadd(format!("{}:queues", env.prefix), "up")
        .await
        .expect("sadd");

    // Old records read as they are.
    let state = |id: String| {
        let client = env.client.clone();
        async move { client.status(&id).await.expect("status").map(|s| s.state) }
    };
    assert_eq!(state(ready[1].0.clone()).await, Some(JobState::Queued));
    assert_eq!(state(delayed.0.clone()).await, Some(JobState::Scheduled));
    assert_eq!(state(dead.0.clone()).await, Some(JobState::Dead));
    assert_eq!(state(finished.clone()).await, Some(JobState::Succeeded));

    // An upgraded worker runs every old job once, the abandoned one after the lease.
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .lease(Duration::from_secs(1))
            .handler(echo::handler())
            .build()
            .expect("worker"),
    );
    let all: Vec<&(String, u32)> = ready.iter().chain([&taken, &delayed]).collect();
    eventually(Duration::from_secs(20), "every old job ran", || async {
        all.iter().all(|(id, _)| support::runs(id) == 1)
    })
    .await;
    for (id, n) in &all {
        assert_eq!(support::values::<u32>(id), vec![*n], "{id} got its payload");
        let s = env
            .client
            .wait_for(id, Duration::from_secs(10))
            .await
            .expect("wait")
            .expect("known");
        assert_eq!(
            (
                s.state,
                s.result_as::<u32>().map(|r| r.ok()),
                s.queue.as_str()
            ),
            (JobState::Succeeded, Some(Some(*n)), "up"),
            "{id}: the old status record follows the job"
        );
    }

    // The old dead letter replays under its old id and runs.
    let dlq = env.client.dead_letters("up").expect("dlq");
    let letters = dlq.list(&Default::default()).await.expect("list");
    assert_eq!(letters.jobs.len(), 1);
    assert_eq!(letters.jobs[0].job_id.as_deref(), Some(dead.0.as_str()));
    let replayed = dlq
        .replay(&letters.jobs[0].entry_id)
        .await
        .expect("replay")
        .expect("replayed");
    assert_eq!(replayed.as_str(), dead.0);
    let s = env
        .client
        .wait_for(&dead.0, Duration::from_secs(10))
        .await
        .expect("wait")
        .expect("known");
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(support::values::<u32>(&dead.0), vec![dead.1]);

    // The old record expires like any other; unknown and malformed ids are unknown.
    eventually(Duration::from_secs(5), "the old record expired", || async {
        state(finished.clone()).await.is_none()
    })
    .await;
    for unknown in [
        uuid(),
        "up:n-1-0".to_string(),
        "not a job id".into(),
        "x".repeat(500),
    ] {
        assert_eq!(state(unknown.clone()).await, None, "{unknown:.40}");
    }
    running.shutdown().await.expect("clean shutdown");
    assert_eq!(env.ready("up").await + env.pending("up").await, 0);
}
