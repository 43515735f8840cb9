// The payload comes first; the context second.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(_ctx: JobContext, _job: SendEmail) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
