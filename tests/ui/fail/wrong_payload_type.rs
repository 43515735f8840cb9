// The point of typed jobs: a payload of another handler's type does not compile.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[derive(Serialize, Deserialize)]
struct ResizeImage {
    path: String,
}

#[job_handler(name = "email.send")]
async fn send_email(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {
    let _job = send_email::job(ResizeImage {
        path: "cat.png".into(),
    });
}
