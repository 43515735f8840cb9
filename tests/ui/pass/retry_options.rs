// The backoff options become the handler's retry policy.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::{HandlerOptions, JobContext, JobError, JobHandler, RetryPolicy, job_handler};

#[derive(Serialize, Deserialize)]
struct Ping {}

#[job_handler(backoff = "linear", backoff_base = "250ms", backoff_cap = "2s")]
async fn linear(_p: Ping, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(backoff = "fixed", backoff_base = "5s")]
async fn fixed(_p: Ping, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

#[job_handler(backoff_cap = "1m")]
async fn exponential(_p: Ping, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {
    let ms = Duration::from_millis;
    assert_eq!(
        <linear as JobHandler>::OPTIONS,
        HandlerOptions::new().retry(RetryPolicy::linear(ms(250), ms(2000)))
    );
    assert_eq!(<fixed as JobHandler>::OPTIONS, HandlerOptions::new().retry(RetryPolicy::fixed(ms(5000))));
    assert_eq!(
        <exponential as JobHandler>::OPTIONS,
        HandlerOptions::new().retry(RetryPolicy::exponential(ms(1000), ms(60_000)))
    );
}
