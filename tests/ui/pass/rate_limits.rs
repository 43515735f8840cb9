// Rate limits: per type, and per key of a (nested) payload field.

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, JobHandler, RateLimit, job_handler};

#[derive(Serialize, Deserialize)]
struct Account {
    id: u64,
}

#[derive(Serialize, Deserialize)]
struct SendEmail {
    customer: String,
    account: Account,
}

#[job_handler(name = "email.send", rate_limit = "50/s", limit_key = "customer", rate_limit_per_key = "5/1s burst 1")]
async fn send_email(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(name = "email.nested", limit_key = "account.id", concurrency_limit = 4, concurrency_limit_per_key = 1)]
async fn nested(_job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {
    let job = SendEmail {
        customer: "acme".into(),
        account: Account { id: 7 },
    };
    assert_eq!(send_email::limit_key(&job).as_deref(), Some("acme"));
    assert_eq!(nested::limit_key(&job).as_deref(), Some("7"));
    let o = <send_email as JobHandler>::OPTIONS;
    let _ = (o, RateLimit::per_second(50));
}
