// Queue names are checked at compile time, as the runtime would reject them.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler(queue = "a b")]
async fn send_email(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
