//! Quickstart: two typed job types, three jobs at two priorities, one worker, done.
//!
//! Run with `cargo run --example quickstart`. It uses the Redis at `REDIS_URL` if set, else
//! starts one for itself (a container when an engine answers, else a local `redis-server`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::{Client, JobContext, JobError, Priority, Worker, job_handler};
use tokio::sync::Notify;

#[derive(Debug, Serialize, Deserialize)]
struct SendEmail {
    to: String,
    subject: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResizeImage {
    path: String,
    widths: Vec<u32>,
}

static DONE: AtomicUsize = AtomicUsize::new(0);
static ALL_DONE: Notify = Notify::const_new();
const JOBS: usize = 3;

fn finished() {
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == JOBS {
        ALL_DONE.notify_one();
    }
}

#[job_handler(
    name = "email.send",
    queue = "quickstart",
    max_attempts = 5,
    timeout = "30s"
)]
async fn send_email(job: SendEmail, ctx: JobContext) -> Result<(), JobError> {
    println!(
        "[{}] email.send   to={} subject={:?} (job {}, attempt {})",
        ctx.priority(),
        job.to,
        job.subject,
        ctx.id(),
        ctx.attempt()
    );
    finished();
    Ok(())
}

#[job_handler(name = "image.resize", queue = "quickstart")]
async fn resize_image(job: ResizeImage, ctx: JobContext) -> Result<(), JobError> {
    println!(
        "[{}] image.resize path={} widths={:?} (job {})",
        ctx.priority(),
        job.path,
        job.widths,
        ctx.id()
    );
    finished();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Keep the test server alive for the whole run when we started one.
    let (_server, url) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = match stevedore_testcontainers::TestRedis::start().await {
                Ok(server) => server,
                Err(stevedore_testcontainers::KitError::NoRedisServer { tried }) => {
                    anyhow::bail!(
                        "the quickstart needs a Redis and found none ({tried}). Install \
                         redis-server (Debian: apt-get install redis-server), start a Docker \
                         engine, or set REDIS_URL=redis://host:port to use a server you run"
                    )
                }
                Err(e) => return Err(e.into()),
            };
            let url = server.url().to_string();
            (Some(server), url)
        }
    };
    let client = Arc::new(
        Client::builder(&url)
            .prefix("stevedore-quickstart")
            .connect()
            .await?,
    );

    let ids = client
        .enqueue_bulk([
            send_email::job(SendEmail {
                to: "ada@example.com".into(),
                subject: "Welcome".into(),
            }),
            send_email::job(SendEmail {
                to: "grace@example.com".into(),
                subject: "Your report".into(),
            })
            .priority(Priority::High),
        ])
        .await?;
    let resize = client
        .enqueue(
            resize_image::job(ResizeImage {
                path: "cat.png".into(),
                widths: vec![64, 256],
            })
            .priority(Priority::Low),
        )
        .await?;
    println!("enqueued {} email jobs and image job {resize}", ids.len());

    let worker = Worker::builder((*client).clone())
        .concurrency(4)
        .handler(send_email::handler())
        .handler(resize_image::handler())
        .build()?;
    let done = async {
        tokio::select! {
            _ = ALL_DONE.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => eprintln!("gave up waiting after 30 s"),
        }
    };
    worker.run_until(done).await?;
    let n = DONE.load(Ordering::SeqCst);
    println!("processed {n} of {JOBS} jobs");
    anyhow::ensure!(n == JOBS, "not every job ran");
    Ok(())
}
