//! How an application tests its job handlers with the harness: a welcome-mail handler with
//! its payload, tested for success, for failures that end in the dead-letter stream with
//! their reason, and for a worker that crashes mid-job.
//!
//! Run with `cargo test -p stevedore-testcontainers --test app_test`. Redis comes from a
//! container when a Docker engine answers, else from a local `redis-server`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::{DeadReason, JobContext, JobError, JobState, job_handler};
use stevedore_testcontainers::Harness;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Long enough for a loaded CI machine, short enough to fail a hung test quickly.
const DEADLINE: Duration = Duration::from_secs(20);

/// The job's payload, as the application enqueues it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Welcome {
    email: String,
    name: String,
}

/// What the handler reports back through the job's status.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sent {
    to: String,
}

/// The handler under test.
#[job_handler(name = "mail.welcome", queue = "mail", max_attempts = 3)]
async fn send_welcome(job: Welcome, ctx: JobContext) -> Result<(), JobError> {
    if !job.email.contains('@') {
        return Err(JobError::permanent(format!(
            "not an email address: {:?}",
            job.email
        )));
    }
    // A failed send is retried: `?` turns any std error into a retryable JobError.
    smtp::send(&job.email, &format!("Welcome aboard, {}!", job.name)).await?;
    ctx.set_result(&Sent { to: job.email })?;
    Ok(())
}

/// A stand-in for the mail server: records what it delivered, refuses `@down.example`,
/// and hangs for the addresses a test tells it to.
mod smtp {
    use std::sync::{Mutex, MutexGuard};

    use tokio::sync::Notify;

    static DELIVERED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static HANGING: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static RELEASED: Notify = Notify::const_new();

    #[derive(Debug)]
    pub(crate) struct Refused(String);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "smtp: connection refused by {}", self.0)
        }
    }

    impl std::error::Error for Refused {}

    pub(crate) async fn send(to: &str, _body: &str) -> Result<(), Refused> {
        loop {
            let released = RELEASED.notified();
            if !lock(&HANGING).iter().any(|a| a == to) {
                break;
            }
            released.await;
        }
        if to.ends_with("@down.example") {
            return Err(Refused("down.example".to_owned()));
        }
        lock(&DELIVERED).push(to.to_owned());
        Ok(())
    }

    pub(crate) fn delivered_to(to: &str) -> usize {
        lock(&DELIVERED).iter().filter(|a| *a == to).count()
    }

    /// Makes sends to `to` hang until [`release`] is called.
    pub(crate) fn hang(to: &str) {
        lock(&HANGING).push(to.to_owned());
    }

    pub(crate) fn release(to: &str) {
        lock(&HANGING).retain(|a| a != to);
        RELEASED.notify_waiters();
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn welcome(email: &str) -> Welcome {
    Welcome {
        email: email.to_owned(),
        name: "Ada".to_owned(),
    }
}

#[tokio::test]
async fn welcome_mail_is_sent() -> TestResult {
    let h = Harness::builder()
        .handler(send_welcome::handler())
        .start()
        .await?;

    let id = h
        .enqueue(send_welcome::job(welcome("ada@example.com")))
        .await?;
    let status = h.wait_for(&id, DEADLINE).await?;

    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.attempts, 1);
    assert_eq!(
        status.result_as::<Sent>().transpose()?,
        Some(Sent {
            to: "ada@example.com".into()
        })
    );
    assert_eq!(smtp::delivered_to("ada@example.com"), 1);
    h.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn an_invalid_address_is_dead_lettered_without_retries() -> TestResult {
    let h = Harness::builder()
        .handler(send_welcome::handler())
        .start()
        .await?;

    let id = h
        .enqueue(send_welcome::job(welcome("not-an-address")))
        .await?;
    let status = h.wait_for(&id, DEADLINE).await?;

    assert_eq!(status.state, JobState::Dead);
    assert_eq!(status.attempts, 1, "a permanent error is not retried");
    let dead = h.dead_letter(&id).await?.expect("the job is in the DLQ");
    assert_eq!(dead.reason, DeadReason::Failed);
    assert_eq!(dead.error, r#"not an email address: "not-an-address""#);
    assert_eq!(dead.job_type.as_deref(), Some("mail.welcome"));
    let payload = dead.payload_json().expect("a readable payload");
    assert_eq!(payload["email"], "not-an-address");
    h.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_mail_server_outage_is_retried_then_dead_lettered() -> TestResult {
    let h = Harness::builder()
        .handler(send_welcome::handler())
        .start()
        .await?;

    let id = h
        .enqueue(send_welcome::job(welcome("ops@down.example")))
        .await?;
    let status = h.wait_for(&id, DEADLINE).await?;

    assert_eq!(status.state, JobState::Dead);
    assert_eq!(status.attempts, 3, "max_attempts = 3");
    let dead = h.dead_letter(&id).await?.expect("the job is in the DLQ");
    assert_eq!(dead.reason, DeadReason::Failed);
    assert_eq!(dead.attempts, Some(3));
    assert_eq!(dead.error, "smtp: connection refused by down.example");
    assert_eq!(h.dead_letters("mail").await?.len(), 1);
    h.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_mail_whose_worker_crashed_is_sent_by_another_worker() -> TestResult {
    let h = Harness::builder()
        .handler(send_welcome::handler())
        .lease(Duration::from_millis(500))
        .start()
        .await?;
    smtp::hang("grace@example.com");

    let id = h
        .enqueue(send_welcome::job(welcome("grace@example.com")))
        .await?;
    h.wait_for_state(&id, JobState::Running, DEADLINE).await?;
    h.crash_worker().await?;

    // The crashed worker acknowledged nothing: the job is still pending under its name.
    assert_eq!(h.pending("mail").await?, 1);
    assert_eq!(smtp::delivered_to("grace@example.com"), 0);

    smtp::release("grace@example.com");
    h.start_worker().await?;
    let status = h.wait_for(&id, DEADLINE).await?;

    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(smtp::delivered_to("grace@example.com"), 1);
    assert_eq!(h.pending("mail").await?, 0);
    h.shutdown().await?;
    Ok(())
}
