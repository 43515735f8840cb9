//! `stevedore`: inspect and operate stevedore queues from a shell, and serve the admin API
//! with the web dashboard.
//!
//! Every subcommand is a thin layer over the library's admin calls
//! ([`stevedore::Admin`], [`stevedore::Client::status`], [`stevedore::DeadLetters`],
//! [`stevedore::admin::router`]), so the CLI, the HTTP API and the dashboard never disagree;
//! nothing here speaks Redis itself. Output is a table for people, or one JSON document on
//! stdout with `--json`. A failure prints one `error: ...` line on stderr and exits 1 when
//! something out there went wrong (Redis unreachable, no such queue, job or dead letter) or
//! 2 when the command line was wrong (as clap does for bad arguments).
//!
//! ```text
//! main.rs      parses the command line, runs one command, maps failures to exit codes
//! args.rs      every subcommand and option
//! failure.rs   one-line errors and exit codes
//! output.rs    tables, times, and writing to stdout
//! overview.rs  stats, queues, workers, job, pause, resume
//! control.rs   cancel, delete, retry, purge, batch, webhooks, enqueue --after
//! enqueue.rs   enqueue (one job, or many in batches with a progress bar)
//! dlq.rs       dlq list, show, replay, purge
//! serve.rs     serve: the HTTP API and dashboard, loopback unless a token is set
//! ```

mod args;
mod control;
mod dlq;
mod enqueue;
mod failure;
mod limits;
mod output;
mod overview;
mod serve;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stevedore::Client;

use args::{Cli, Command, Global};

/// How long connecting to Redis may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one Redis command may take once connected before the command fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return failure::clap_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failure::report(&anyhow::Error::new(e).context("cannot start a runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure::report(&e),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Stats => overview::stats(&connect(g, 1).await?, g).await,
        Command::Queues => overview::queues(&connect(g, 1).await?, g).await,
        Command::Workers => overview::workers(&connect(g, 1).await?, g).await,
        Command::Job { id } => overview::job(&connect(g, 1).await?, g, &id).await,
        Command::Pause { queue } => overview::pause(&connect(g, 1).await?, g, &queue, true).await,
        Command::Resume { queue } => overview::pause(&connect(g, 1).await?, g, &queue, false).await,
        Command::Partitions { queue, count } => {
            overview::partitions(&connect(g, 1).await?, g, &queue, count).await
        }
        Command::Enqueue(a) => {
            // Refuse bad options before touching Redis.
            let job = a.job()?;
            let wait = a.room_wait()?;
            let client = connect(g, 1).await?;
            if !a.after.is_empty() {
                return control::enqueue_after(&client, g, job, &a.after, a.on_failure).await;
            }
            enqueue::run(&client, g, job, (&a.job_type, &a.queue), a.count, wait).await
        }
        Command::Limits { change } => {
            let plan = limits::Plan::from_args(change)?;
            plan.run(&connect(g, 1).await?, g).await
        }
        Command::Dlq(cmd) => {
            let plan = dlq::Plan::from_args(cmd)?;
            plan.run(&connect(g, 1).await?, g).await
        }
        Command::Cancel { id, by, reason } => {
            control::cancel(&connect(g, 1).await?, g, &id, by, &reason).await
        }
        Command::Delete { id, yes } => {
            if !yes {
                return control::delete_refused(&id);
            }
            control::delete(&connect(g, 1).await?, g, &id, yes).await
        }
        Command::Retry { id } => control::retry(&connect(g, 1).await?, g, &id).await,
        Command::Purge {
            queue,
            priority,
            job_type,
            ready_only,
            scheduled_only,
            yes,
        } => {
            let a = control::PurgeArgs {
                queue: &queue,
                priority,
                job_type,
                ready_only,
                scheduled_only,
                yes,
            };
            if !yes {
                return control::purge_refused(&queue);
            }
            control::purge(&connect(g, 1).await?, g, a).await
        }
        Command::Batch { id } => control::batch(&connect(g, 1).await?, g, &id).await,
        Command::Webhooks { change } => control::webhooks(&connect(g, 1).await?, g, change).await,
        Command::Serve(a) => {
            let plan = serve::Plan::from_args(a)?;
            plan.run(connect(g, 4).await?).await
        }
    }
}

/// Connects to Redis with `pool` connections, failing within [`CONNECT_TIMEOUT`] when it
/// does not answer.
async fn connect(g: &Global, pool: usize) -> anyhow::Result<Client> {
    let mut builder = Client::builder(&g.redis_url)
        .prefix(&g.prefix)
        .pool_size(pool)
        .command_timeout(COMMAND_TIMEOUT);
    if let Some(ca) = &g.tls_ca_file {
        builder = builder.tls_ca_file(ca);
    }
    if let (Some(cert), Some(key)) = (&g.tls_cert, &g.tls_key) {
        builder = builder.tls_client_cert(cert, key);
    }
    let connecting = builder.connect();
    let client = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot connect to redis at {}: no answer within {} s",
                stevedore::error::redact_url(&g.redis_url),
                CONNECT_TIMEOUT.as_secs()
            )
        })?;
    match client {
        Err(e) if e.is_connection() => Err(e).with_context(|| {
            format!(
                "cannot connect to redis at {}",
                stevedore::error::redact_url(&g.redis_url)
            )
        }),
        other => Ok(other?),
    }
}
