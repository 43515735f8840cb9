// Three arguments instead of `(payload, ctx)`.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(_job: SendEmail, _ctx: JobContext, _extra: u32) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
