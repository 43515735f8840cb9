// Limits are checked at compile time: a count of 0, a bad period, a per-key limit
// without its key, a key that is not a field path, a concurrency limit of 0.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler(rate_limit = "0/s")]
async fn zero(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(rate_limit = "5/fortnight")]
async fn period(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(rate_limit_per_key = "5/s")]
async fn no_key(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(limit_key = "to-address", rate_limit_per_key = "5/s")]
async fn bad_key(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(concurrency_limit = 0)]
async fn no_running(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(concurrency_limit_per_key = 1)]
async fn running_no_key(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
