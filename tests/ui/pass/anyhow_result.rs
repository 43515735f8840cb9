// Handlers may return `anyhow::Result`, a boxed error, or a `String` error: each is retried
// with its message (and, for errors with sources, theirs after it).

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobHandler, job_handler};

#[derive(Debug, Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(job: SendEmail, _ctx: JobContext) -> anyhow::Result<()> {
    anyhow::ensure!(!job.to.is_empty(), "no recipient");
    Ok(())
}

#[job_handler]
async fn boxed(job: SendEmail, _ctx: JobContext) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if job.to.is_empty() {
        return Err("no recipient".into());
    }
    Ok(())
}

#[job_handler]
async fn text(job: SendEmail, _ctx: JobContext) -> Result<(), String> {
    if job.to.is_empty() {
        return Err("no recipient".to_string());
    }
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let empty = || SendEmail { to: String::new() };
    let message = |r: Result<(), stevedore::JobError>| r.map_err(|e| e.message().to_string());
    let ctx = || JobContext::for_tests("t");
    assert_eq!(
        message(runtime.block_on(send_email::handler().handle(empty(), ctx()))),
        Err("no recipient".to_string())
    );
    assert_eq!(
        message(runtime.block_on(boxed::handler().handle(empty(), ctx()))),
        Err("no recipient".to_string())
    );
    assert_eq!(
        message(runtime.block_on(text::handler().handle(empty(), ctx()))),
        Err("no recipient".to_string())
    );
    let with_context = anyhow::anyhow!("disk full").context("could not write report");
    let e = stevedore::handler::IntoJobError::into_job_error(with_context);
    assert_eq!(e.message(), "could not write report: disk full");
}
