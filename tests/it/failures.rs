use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, RetryPolicy, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    label: String,
}

#[job_handler(name = "fail.always", queue = "fail", max_attempts = 3)]
async fn always_fails(_w: Work, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Err(JobError::retry(format!(
        "upstream said no on attempt {}",
        ctx.attempt()
    )))
}

#[job_handler(name = "fail.io", queue = "fail", max_attempts = 2)]
async fn io_error(_w: Work, ctx: JobContext) -> Result<(), std::io::Error> {
    support::record(ctx.id(), ctx.attempt());
    Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "smtp down",
    ))
}

#[job_handler(name = "fail.permanent", queue = "fail", max_attempts = 5)]
async fn permanent(_w: Work, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Err(JobError::permanent("the account was deleted"))
}

#[job_handler(name = "fail.panic", queue = "fail", max_attempts = 2)]
async fn panics(_w: Work, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    panic!("boom in {}", ctx.id());
}

#[job_handler(
    name = "fail.slow",
    queue = "fail",
    max_attempts = 2,
    timeout = "200ms"
)]
async fn too_slow(_w: Work, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

#[job_handler(name = "fail.second_time_lucky", queue = "fail", max_attempts = 3)]
async fn second_time_lucky(_w: Work, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    if ctx.attempt() < 2 {
        Err(JobError::retry("not yet"))
    } else {
        Ok(())
    }
}

fn work(label: &str) -> Work {
    Work {
        label: label.into(),
    }
}

#[tokio::test]
async fn failed_attempts_retry_until_max_attempts_then_dead_letter_with_their_reason() {
    let env = TestEnv::start().await;
    let worker = Worker::builder(env.client.clone())
        .concurrency(8)
        .retry_policy(RetryPolicy::fixed(Duration::from_millis(20)))
        .handler(always_fails::handler())
        .handler(io_error::handler())
        .handler(permanent::handler())
        .handler(panics::handler())
        .handler(too_slow::handler())
        .handler(second_time_lucky::handler())
        .build()
        .expect("worker");
    let running = support::spawn(worker);
    let c = &env.client;
    let fails = c
        .enqueue(always_fails::job(work("a")))
        .await
        .expect("enqueue");
    let io = c.enqueue(io_error::job(work("b"))).await.expect("enqueue");
    let perm = c.enqueue(permanent::job(work("c"))).await.expect("enqueue");
    let panic = c.enqueue(panics::job(work("d"))).await.expect("enqueue");
    let slow = c.enqueue(too_slow::job(work("e"))).await.expect("enqueue");
    let lucky = c
        .enqueue(second_time_lucky::job(work("f")))
        .await
        .expect("enqueue");

    eventually(Duration::from_secs(20), "five dead letters", || async {
        env.xlen(&env.dlq("fail")).await == 5
    })
    .await;
    eventually(Duration::from_secs(5), "queue drained", || async {
        env.ready("fail").await == 0 && env.pending("fail").await == 0
    })
    .await;
    running
        .shutdown()
        .await
        .expect("the worker survived panics and timeouts");

    // Attempts are counted exactly, numbered from 1.
    assert_eq!(support::values::<u32>(fails.as_str()), vec![1, 2, 3]);
    assert_eq!(support::values::<u32>(io.as_str()), vec![1, 2]);
    assert_eq!(
        support::values::<u32>(perm.as_str()),
        vec![1],
        "a permanent error is not retried"
    );
    assert_eq!(support::values::<u32>(panic.as_str()), vec![1, 2]);
    assert_eq!(support::values::<u32>(slow.as_str()), vec![1, 2]);
    assert_eq!(
        support::values::<u32>(lucky.as_str()),
        vec![1, 2],
        "success on attempt 2 ends it"
    );

    let dead = env.dead_letters("fail").await;
    let of = |id: &stevedore::JobId| {
        dead.iter()
            .find(|d| d.get("id").map(String::as_str) == Some(id.as_str()))
            .cloned()
            .unwrap_or_default()
    };
    let expect = [
        (&fails, "failed", "upstream said no on attempt 3", "3"),
        (&io, "failed", "smtp down", "2"),
        (&perm, "failed", "the account was deleted", "1"),
        (&panic, "failed", "handler panicked: boom in", "2"),
        (&slow, "timeout", "timed out after 200ms", "2"),
    ];
    for (id, reason, error, attempt) in expect {
        let d = of(id);
        assert_eq!(d.get("reason").map(String::as_str), Some(reason), "{d:?}");
        assert!(d.get("error").is_some_and(|e| e.contains(error)), "{d:?}");
        assert_eq!(d.get("attempt").map(String::as_str), Some(attempt), "{d:?}");
        assert_eq!(
            d.get("type")
                .map(String::as_str)
                .map(|t| t.starts_with("fail.")),
            Some(true)
        );
    }
    assert!(of(&lucky).is_empty(), "the lucky job is not dead");
}

/// A payload whose decoding panics: user code (a Deserialize impl) that runs before the
/// handler's future exists.
#[derive(Debug, Clone, Serialize)]
struct Explosive {
    label: String,
}

impl<'de> Deserialize<'de> for Explosive {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("the payload decoder blew up")
    }
}

#[job_handler(name = "decode.panic", queue = "decode", max_attempts = 2)]
async fn decode_panics(_e: Explosive, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(name = "decode.fine", queue = "decode")]
async fn decodes_fine(_w: Work, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Ok(())
}

#[tokio::test]
async fn a_panicking_payload_decoder_fails_its_attempts_and_the_worker_runs_on() {
    let env = TestEnv::start().await;
    let worker = Worker::builder(env.client.clone())
        .retry_policy(RetryPolicy::fixed(Duration::from_millis(20)))
        .handler(decode_panics::handler())
        .handler(decodes_fine::handler())
        .build()
        .expect("worker");
    let running = support::spawn(worker);
    let bad = env
        .client
        .enqueue(decode_panics::job(Explosive { label: "x".into() }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "one dead letter", || async {
        env.xlen(&env.dlq("decode")).await == 1
    })
    .await;
    let good = env
        .client
        .enqueue(decodes_fine::job(work("after")))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "the next job ran", || async {
        support::runs(good.as_str()) == 1
    })
    .await;
    running
        .shutdown()
        .await
        .expect("the worker survived a panicking decoder");
    let dead = env.dead_letters("decode").await;
    let d = &dead[0];
    assert_eq!(d.get("id").map(String::as_str), Some(bad.as_str()));
    assert_eq!(d.get("reason").map(String::as_str), Some("failed"));
    assert_eq!(d.get("attempt").map(String::as_str), Some("2"));
    assert!(
        d.get("error")
            .is_some_and(|e| e.contains("handler panicked: the payload decoder blew up")),
        "{d:?}"
    );
}

/// A job enqueued without `max_attempts` (a raw job, the HTTP API's JSON job, the CLI)
/// gets its handler's, not the library's default of 5; one that sets it keeps its own.
#[tokio::test]
async fn jobs_without_max_attempts_follow_their_handler() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(10)))
            .handler(always_fails::handler())
            .build()
            .expect("worker"),
    );
    let work = Work { label: "x".into() };
    let raw = stevedore::RawJob::new("fail.always", "fail", &work).expect("raw job");
    let unset = env.client.enqueue(raw.clone()).await.expect("enqueue");
    // Before it runs, the status says the budget is the handler's to decide (0).
    let queued = env.client.status(unset.as_str()).await.expect("status");
    assert!(queued.is_some_and(|s| s.max_attempts == 0 || s.attempts > 0));
    let json = env
        .client
        .admin()
        .enqueue_json(stevedore::admin::JsonJob::new(
            "fail.always",
            "fail",
            serde_json::json!({"label": "y"}),
        ))
        .await
        .expect("json enqueue")
        .id;
    let typed = env
        .client
        .enqueue(always_fails::job(work.clone()))
        .await
        .expect("enqueue");
    let own = env
        .client
        .enqueue(raw.max_attempts(2))
        .await
        .expect("enqueue");

    for (id, attempts) in [(&unset, 3), (&json, 3), (&typed, 3), (&own, 2)] {
        let status = env
            .client
            .wait_for(id.as_str(), Duration::from_secs(10))
            .await
            .expect("status")
            .expect("a final status");
        assert_eq!(status.state, stevedore::JobState::Dead, "{id}");
        assert_eq!(
            (status.attempts, status.max_attempts),
            (attempts, attempts),
            "{id}"
        );
        assert_eq!(
            support::values::<u32>(id.as_str()),
            (1..=attempts).collect::<Vec<_>>(),
            "{id}: attempts run"
        );
    }
    running.shutdown().await.expect("clean shutdown");
}
