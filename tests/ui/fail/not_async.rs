// A handler must be an `async fn`: the error points at `fn`.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
fn send_email(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
