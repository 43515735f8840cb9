// A generic handler has no single payload type to decode into.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email<T>(_job: T, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {
    let _ = SendEmail { to: String::new() }.to;
}
