// The second argument must be the `JobContext`.

use serde::{Deserialize, Serialize};
use stevedore::{JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(_job: SendEmail, _ctx: String) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
