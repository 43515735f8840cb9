// The context is taken by value (it is cheap to clone).

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(_job: SendEmail, _ctx: &JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
