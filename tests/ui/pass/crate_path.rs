// `crate = "..."` points the expansion at a re-export of stevedore, for crates that wrap
// it (here the re-export lives in this crate; a framework would re-export it from its own).
// The path resolves where the handler is written: `crate::...` works from any module, a
// relative path only from the module it is relative to. `::stevedore` resolves here too, so
// `fail/crate_path_unresolved.rs` is what shows the given path is the one used.

mod reexport {
    pub use stevedore;
}

use reexport::stevedore::{JobContext, JobError, JobHandler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Ping {}

#[reexport::stevedore::job_handler(
    name = "ping",
    timeout = "1s",
    priority = "low",
    crate = "crate::reexport::stevedore"
)]
async fn ping(_job: Ping, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

// Relative to the crate root, which is where this handler is.
#[reexport::stevedore::job_handler(crate = "reexport::stevedore")]
async fn pong(_job: Ping, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

fn main() {
    assert_eq!(<ping as JobHandler>::NAME, "ping");
    assert_eq!(<pong as JobHandler>::NAME, "pong");
    let _job: reexport::stevedore::Job<ping> = ping::job(Ping {});
}
