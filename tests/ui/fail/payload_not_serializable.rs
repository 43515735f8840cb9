// The payload goes over the wire, so it must be Serialize + Deserialize: the
// error points at the payload type.

use stevedore::{JobContext, JobError, job_handler};

struct SendEmail {
    to: String,
}

#[job_handler]
async fn send_email(job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    let _ = job.to;
    Ok(())
}

fn main() {}
