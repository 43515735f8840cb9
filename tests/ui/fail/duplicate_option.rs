// An option given twice is reported at the second one.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler(queue = "emails", name = "email.send", queue = "mail")]
async fn send_email(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
