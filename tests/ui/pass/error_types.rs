// A handler may return its own error type: anything that converts into `JobError`, which
// every `std::error::Error + Send + Sync + 'static` does.

use std::fmt;

use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobHandler, job_handler};

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    path: String,
}

#[job_handler(name = "report.write")]
async fn write_report(job: Report, _ctx: JobContext) -> Result<(), std::io::Error> {
    if job.path.is_empty() {
        return Err(std::io::Error::other("no path"));
    }
    Ok(())
}

#[derive(Debug)]
enum BillingError {
    CardDeclined,
}

impl fmt::Display for BillingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BillingError::CardDeclined => f.write_str("card declined"),
        }
    }
}

impl std::error::Error for BillingError {}

#[derive(Debug, Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

#[job_handler(name = "billing.charge")]
async fn charge(job: Charge, _ctx: JobContext) -> Result<(), BillingError> {
    if job.cents > 1_000_000 {
        return Err(BillingError::CardDeclined);
    }
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let failed = runtime.block_on(write_report::handler().handle(
        Report {
            path: String::new(),
        },
        JobContext::for_tests("report.write"),
    ));
    assert_eq!(
        failed.map_err(|e| e.message().to_string()),
        Err("no path".to_string())
    );

    let failed = runtime.block_on(charge::handler().handle(
        Charge { cents: 2_000_000 },
        JobContext::for_tests("billing.charge"),
    ));
    assert_eq!(
        failed.map_err(|e| e.message().to_string()),
        Err("card declined".to_string())
    );
}
