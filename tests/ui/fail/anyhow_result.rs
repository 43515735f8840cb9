// `anyhow::Error` is not a `std::error::Error`, so it does not convert into `JobError`;
// convert with `JobError::retry(e)` (or `permanent`) instead.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(job: SendEmail, _ctx: JobContext) -> anyhow::Result<()> {
    anyhow::ensure!(!job.to.is_empty(), "no recipient");
    Ok(())
}

fn main() {}
