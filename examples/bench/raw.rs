//! The ceiling: the same work done with plain Redis commands and nothing around them.
//!
//! A raw job is an XADD of the same fields a stevedore entry of a job enqueued to run now
//! has (`type`, `attempt`, `max_attempts`, `enqueued_at`, `payload`: its id is its entry's); a raw consumer reads 100 entries per
//! XREADGROUP and acknowledges and deletes each batch with XACK + XDEL pipelined with the
//! next read, so it needs one round trip per hundred jobs. No status, no metrics, no
//! leases, no retries: what Redis and fred can do at best on this machine.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;

use crate::child::{self, ChildReport, Probe};

pub(crate) const GROUP: &str = "bench";
const COUNT: u64 = 100;

/// A plain fred client on `url`, connected.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Client> {
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    Ok(client)
}

/// The fields of one raw entry, the same as a stevedore entry of job type `bench.noop`.
pub(crate) fn entry(probe: Probe) -> Vec<(&'static str, Value)> {
    let payload = rmp_serde::to_vec_named(&probe).unwrap_or_default();
    vec![
        ("type", "bench.noop".into()),
        ("attempt", 1i64.into()),
        ("max_attempts", 5i64.into()),
        ("enqueued_at", ((child::now_us() / 1000) as i64).into()),
        ("payload", Value::Bytes(payload.into())),
    ]
}

/// One XADD, awaited.
pub(crate) async fn add(redis: &Client, stream: &str, probe: Probe) -> anyhow::Result<()> {
    let _: String = redis.xadd(stream, false, None, "*", entry(probe)).await?;
    Ok(())
}

/// `n` entries in pipelines of `chunk` XADDs, one round trip each.
pub(crate) async fn add_bulk(
    redis: &Client,
    stream: &str,
    n: usize,
    chunk: usize,
) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk);
        let p = redis.pipeline();
        for _ in 0..k {
            let _: () = p
                .xadd(stream, false, None, "*", entry(Probe::default()))
                .await?;
        }
        for r in p.try_all::<Value>().await {
            r?;
        }
        left -= k;
    }
    Ok(())
}

/// Creates the consumer group (and the stream).
pub(crate) async fn create_group(redis: &Client, stream: &str) -> anyhow::Result<()> {
    match redis
        .xgroup_create::<(), _, _, _>(stream, GROUP, "0", true)
        .await
    {
        Err(e) if !e.details().starts_with("BUSYGROUP") => Err(e.into()),
        _ => Ok(()),
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct ConsumerArgs {
    #[arg(long)]
    redis_url: String,
    /// The streams to consume, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    stream: Vec<String>,
    #[arg(long)]
    consumer: String,
    #[arg(long, value_enum, default_value_t = crate::Flavor::MultiThread)]
    pub(crate) runtime: crate::Flavor,
}

type ReadReply = Option<Vec<(String, Vec<(String, Option<HashMap<String, Value>>)>)>>;

/// The ids read, after recording each entry's probe.
fn take(reply: ReadReply, ids: &mut Vec<String>) {
    for (_, entries) in reply.unwrap_or_default() {
        for (id, fields) in entries {
            let t = fields
                .as_ref()
                .and_then(|f| f.get("payload"))
                .and_then(|v| v.as_bytes())
                .and_then(|b| rmp_serde::from_slice::<Probe>(b).ok())
                .map_or(0, |p| p.t);
            child::observe(t);
            ids.push(id);
        }
    }
}

/// The `raw-consumer` role: one loop per stream, each on a connection of its own.
pub(crate) async fn consumer_main(args: ConsumerArgs) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for stream in &args.stream {
        let redis = connect(&args.redis_url).await?;
        create_group(&redis, stream).await?;
        clients.push(redis);
    }
    let lines = child::handshake().await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        child::until_stop(lines).await;
        stopper.cancel();
    });
    if let ([redis], [stream]) = (clients.as_slice(), args.stream.as_slice()) {
        // One stream: on this task, as before there could be several.
        consume(redis.clone(), stream.clone(), args.consumer, stop).await?;
    } else {
        let loops = clients.into_iter().zip(args.stream).map(|(redis, stream)| {
            let stop = stop.clone();
            let consumer = args.consumer.clone();
            tokio::spawn(async move { consume(redis, stream, consumer, stop).await })
        });
        for done in futures::future::join_all(loops).await {
            done??;
        }
    }
    println!("{}", serde_json::to_string(&ChildReport::collect())?);
    Ok(())
}

/// Reads, acknowledges and deletes the entries of `stream` until `stop`.
async fn consume(
    redis: Client,
    stream: String,
    consumer: String,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let stream = stream.as_str();
    let mut acks: Vec<String> = Vec::new();
    while !stop.is_cancelled() {
        // Acknowledge the last batch and read the next one in one round trip.
        let p = redis.pipeline();
        if !acks.is_empty() {
            let _: () = p.xack(stream, GROUP, acks.clone()).await?;
            let _: () = p.xdel(stream, std::mem::take(&mut acks)).await?;
        }
        let _: () = p
            .xreadgroup(GROUP, &consumer, Some(COUNT), None, false, stream, ">")
            .await?;
        let mut replies = p.try_all::<Value>().await;
        let read = replies.pop().context("no reply")??;
        for r in replies {
            r?;
        }
        take(read.convert()?, &mut acks);
        if acks.is_empty() {
            let reply: ReadReply = redis
                .xreadgroup(
                    GROUP,
                    &consumer,
                    Some(COUNT),
                    Some(Duration::from_millis(100).as_millis() as u64),
                    false,
                    stream,
                    ">",
                )
                .await?;
            take(reply, &mut acks);
        }
    }
    if !acks.is_empty() {
        let _: u64 = redis.xack(stream, GROUP, acks.clone()).await?;
        let _: u64 = redis.xdel(stream, acks).await?;
    }
    Ok(())
}
