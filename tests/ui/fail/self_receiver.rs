// A method cannot be a handler: there is no `self` to call it on.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, job_handler};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

struct Mailer;

impl Mailer {
    #[job_handler]
    async fn send_email(&self, _job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {}
