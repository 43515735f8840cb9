// The annotated function is emitted as written, so a unit test can call it directly with
// a test context, without Redis or a worker.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, Retry, job_handler};

#[derive(Debug, Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler(name = "email.send", queue = "emails")]
async fn send_email(job: SendEmail, ctx: JobContext) -> Result<(), JobError> {
    if job.to.is_empty() {
        return Err(JobError::permanent("no recipient"));
    }
    assert_eq!(ctx.job_type(), "email.send");
    assert_eq!(ctx.attempt(), 1);
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let payload = SendEmail {
        to: "ada@example.com".into(),
    };
    let result = runtime.block_on(send_email(payload, JobContext::for_tests("email.send")));
    assert!(result.is_ok());

    let empty = SendEmail { to: String::new() };
    let result = runtime.block_on(send_email(empty, JobContext::for_tests("email.send")));
    assert!(matches!(result, Err(e) if e.retry_decision() == Retry::No));
}
