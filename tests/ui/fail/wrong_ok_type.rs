// A handler's success carries no value: `Ok` must be `()`.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(job: SendEmail, _ctx: JobContext) -> Result<String, JobError> {
    Ok(job.to)
}

fn main() {}
