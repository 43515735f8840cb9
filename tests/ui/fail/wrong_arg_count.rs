// One argument instead of `(payload, ctx)`.

use serde::{Deserialize, Serialize};
use stevedore::{JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(_job: SendEmail) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
