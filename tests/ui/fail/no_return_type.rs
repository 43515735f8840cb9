// A handler must return `Result<(), E>` so the worker can retry on failure.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(_job: SendEmail, _ctx: JobContext) {}

fn main() {}
