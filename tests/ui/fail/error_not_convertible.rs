// The error type must convert into `JobError` (any `std::error::Error` does).

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(_job: SendEmail, _ctx: JobContext) -> Result<(), i32> {
    Ok(())
}

fn main() {}
