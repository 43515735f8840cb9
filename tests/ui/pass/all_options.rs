// Every option at once: the generated type is a `JobHandler` whose constants carry the
// options, `job` builds a `Job` typed by the handler, and `handler` is accepted wherever a
// `JobHandler` is.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::{
    HandlerOptions, IntoJob, Job, JobContext, JobError, JobHandler, Priority, job_handler,
};

#[derive(Debug, Serialize, Deserialize)]
struct SendEmail {
    to: String,
    subject: String,
}

#[job_handler(
    name = "email.send",
    queue = "emails",
    max_attempts = 5,
    timeout = "30s",
    priority = "high",
    crate = "::stevedore"
)]
async fn send_email(job: SendEmail, ctx: JobContext) -> Result<(), JobError> {
    let _ = (job.to, job.subject, ctx.attempt());
    Ok(())
}

fn takes_handler(_handler: impl JobHandler) {}

fn takes_job(_job: impl IntoJob) {}

fn takes_worker_builder(builder: stevedore::WorkerBuilder) -> stevedore::WorkerBuilder {
    builder.handler(send_email::handler())
}

fn main() {
    let job: Job<send_email> = send_email::job(SendEmail {
        to: "ada@example.com".into(),
        subject: "hi".into(),
    })
    .priority(Priority::High);
    takes_job(job);

    takes_handler(send_email::handler());
    let _ = takes_worker_builder;

    assert_eq!(<send_email as JobHandler>::NAME, "email.send");
    assert_eq!(<send_email as JobHandler>::QUEUE, "emails");
    assert_eq!(
        <send_email as JobHandler>::OPTIONS,
        HandlerOptions::new()
            .max_attempts(5)
            .timeout(Duration::from_secs(30))
            .priority(Priority::High)
    );
    assert_eq!(send_email::OPTIONS.effective_max_attempts(), 5);
    assert_eq!(
        send_email::OPTIONS.effective_timeout(),
        Duration::from_secs(30)
    );
}
