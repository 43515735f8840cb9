// Without options the job type is the function's name, the queue is "default", and the
// handler sets no defaults of its own.

use serde::{Deserialize, Serialize};
use stevedore::{HandlerOptions, JobContext, JobError, JobHandler, job_handler};

#[derive(Debug, Serialize, Deserialize)]
struct Ping {}

#[job_handler]
async fn ping(_job: Ping, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler()]
async fn pong(_job: Ping, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {
    assert_eq!(<ping as JobHandler>::NAME, "ping");
    assert_eq!(<ping as JobHandler>::QUEUE, "default");
    assert_eq!(<ping as JobHandler>::OPTIONS, HandlerOptions::new());
    assert_eq!(<pong as JobHandler>::NAME, "pong");
    let _job: stevedore::Job<ping> = ping::job(Ping {});
}
