// The `crate = "..."` path is what the expansion uses: a path that does not resolve is
// reported on the string, not silently replaced by `::stevedore`.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler(crate = "crate::nowhere")]
async fn send_email(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
