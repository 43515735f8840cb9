//! Everything that speaks Redis: connections, the stream commands, the Lua scripts and
//! the key names.
//!
//! The rest of the library calls these functions and never builds a command itself, so
//! the data model in `DESIGN.md` and the README can be checked against this one module.

pub(crate) mod keys;
pub(crate) mod scripts;
pub(crate) mod stats;

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;

use crate::Priority;
use crate::error::redact_url;

/// One entry read from a stream: its id and fields (`None` for an entry whose data was
/// deleted while it was pending).
pub(crate) type Entry = (String, Option<Fields>);

/// An entry's fields and values, in the order Redis returned them. An entry has a handful
/// of fields, so a scan finds one faster than a hash map is built.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fields(Vec<Value>);

impl Fields {
    /// The value of field `name` (the first, should it repeat).
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .chunks_exact(2)
            .find(|pair| pair[0].as_bytes() == Some(name.as_bytes()))
            .map(|pair| &pair[1])
    }
}

impl<K: Into<Value>> FromIterator<(K, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Self {
        Fields(pairs.into_iter().flat_map(|(k, v)| [k.into(), v]).collect())
    }
}

fn unexpected(what: &str) -> Error {
    Error::new(
        ErrorKind::Parse,
        format!("unexpected XREADGROUP reply: {what}"),
    )
}

/// The entries of one stream's part of an XREADGROUP reply: `[[id, [field, value, ...]
/// or nil], ...]`.
fn entries_of(reply: Value) -> Result<Vec<Entry>, Error> {
    reply
        .into_array()
        .into_iter()
        .map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts
                .next()
                .and_then(Value::into_string)
                .ok_or_else(|| unexpected("an entry without an id"))?;
            let fields = match parts.next() {
                None | Some(Value::Null) => None,
                Some(fields) => Some(Fields(fields.into_array())),
            };
            Ok((id, fields))
        })
        .collect()
}

/// An XREADGROUP reply, `nil` or `[[stream, entries], ...]`: entries per stream, in the
/// order the streams were asked for. Read straight from the reply, without building a map
/// per entry.
fn read_reply(reply: Value) -> Result<Vec<(String, Vec<Entry>)>, Error> {
    if reply.is_null() {
        return Ok(Vec::new());
    }
    reply
        .into_array()
        .into_iter()
        .map(|stream| {
            let mut parts = stream.into_array().into_iter();
            let name = parts
                .next()
                .and_then(Value::into_string)
                .ok_or_else(|| unexpected("a stream without a name"))?;
            Ok((name, entries_of(parts.next().unwrap_or(Value::Null))?))
        })
        .collect()
}

/// Builds connections that all share one configuration and reconnect policy.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
}

impl Connector {
    pub(crate) fn from_url(url: &str) -> crate::Result<Self> {
        const SCHEMES: [&str; 6] = [
            "redis",
            "rediss",
            "redis-cluster",
            "rediss-cluster",
            "redis-sentinel",
            "rediss-sentinel",
        ];
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
        if !SCHEMES.contains(&scheme) {
            return Err(crate::Error::InvalidUrl {
                url: redact_url(url),
                reason: format!("the scheme must be one of {}", SCHEMES.join(", ")),
            });
        }
        let config = Config::from_url(url).map_err(|e| crate::Error::InvalidUrl {
            url: redact_url(url),
            reason: e.details().to_string(),
        })?;
        Ok(Connector { config })
    }

    fn builder(&self) -> Builder {
        let mut b = Builder::from_config(self.config.clone());
        b.with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.max_command_attempts = 3;
            // Commands are small and latency matters: no Nagle delay (fred leaves it on).
            c.tcp.nodelay = Some(true);
        })
        .with_performance_config(|p| {
            // No client-side timeout: it would leave a blocked read's connection stuck.
            p.default_command_timeout = Duration::ZERO;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        b
    }

    /// A pool for enqueueing and admin calls, connected.
    pub(crate) async fn pool(&self, size: usize) -> crate::Result<Pool> {
        let pool = self.builder().build_pool(size.max(1))?;
        pool.init().await?;
        Ok(pool)
    }

    /// A client of its own for one blocking read loop, connected. Blocking reads must never
    /// share a connection: every other command on it would wait for the read. A command
    /// sent while its read is blocked (the QUIT at shutdown) first unblocks the read with
    /// `CLIENT UNBLOCK`, so no entry is delivered to a loop that stopped listening.
    pub(crate) async fn dedicated(&self) -> crate::Result<Client> {
        let mut builder = self.builder();
        builder.with_config(|c| c.blocking = Blocking::Interrupt);
        let client = builder.build()?;
        client.init().await?;
        Ok(client)
    }
}

impl Connector {
    /// A pub/sub client that resubscribes by itself after a reconnect, connected.
    pub(crate) async fn subscriber(&self) -> crate::Result<fred::clients::SubscriberClient> {
        let client = self.builder().build_subscriber_client()?;
        client.init().await?;
        // Detached: resubscribes after every reconnect until the client is dropped.
        drop(client.manage_subscriptions());
        Ok(client)
    }
}

/// True for the server's "no such consumer group" error (a restarted server without
/// persistence, or `XGROUP DESTROY`).
pub(crate) fn is_nogroup(e: &Error) -> bool {
    e.details().starts_with("NOGROUP")
}

/// Creates the consumer group on each stream (creating the streams too), reading from
/// the start so entries added before the group existed are not skipped. An existing
/// group is fine.
pub(crate) async fn ensure_groups(
    client: &Client,
    streams: &[String],
    group: &str,
) -> Result<(), Error> {
    let p = client.pipeline();
    for s in streams {
        let _: () = p.xgroup_create(s.as_str(), group, "0", true).await?;
    }
    for r in p.try_all::<Value>().await {
        match r {
            Err(e) if !e.details().starts_with("BUSYGROUP") => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Reads up to `count` new entries from each of `streams` for `consumer`, blocking up to
/// `block` when none is there (no blocking when `block` is `None`). Streams with nothing new
/// are left out of the reply.
pub(crate) async fn read_group(
    client: &Client,
    group: &str,
    consumer: &str,
    count: u64,
    block: Option<Duration>,
    streams: Vec<String>,
) -> Result<Vec<(String, Vec<Entry>)>, Error> {
    let ids = vec![">"; streams.len()];
    let reply: Value = client
        .xreadgroup(
            group,
            consumer,
            Some(count),
            block.map(|b| b.as_millis() as u64),
            false,
            streams,
            ids,
        )
        .await?;
    read_reply(reply)
}

/// Reads from several streams with a different COUNT each, in one round trip, without
/// blocking. Returns the entries per requested stream, in request order.
pub(crate) async fn read_group_counts(
    client: &Client,
    group: &str,
    consumer: &str,
    requests: &[(String, u64)],
) -> Result<Vec<Vec<Entry>>, Error> {
    let p = client.pipeline();
    for (stream, count) in requests {
        let _: () = p
            .xreadgroup(
                group,
                consumer,
                Some(*count),
                None,
                false,
                stream.as_str(),
                ">",
            )
            .await?;
    }
    let mut out = Vec::with_capacity(requests.len());
    for r in p.try_all::<Value>().await {
        out.push(
            read_reply(r?)?
                .into_iter()
                .next()
                .map(|(_, e)| e)
                .unwrap_or_default(),
        );
    }
    Ok(out)
}

/// One job to write.
pub(crate) struct JobWrite {
    pub(crate) job_id: String,
    pub(crate) job_type: String,
    pub(crate) queue: String,
    pub(crate) priority: Priority,
    pub(crate) max_attempts: u32,
    pub(crate) fields: Vec<(&'static str, Value)>,
    /// `("in", delay ms)` or `("at", epoch ms)` for a delayed job.
    pub(crate) when: Option<(&'static str, u64)>,
    /// `(key, ttl ms)` of a unique job.
    pub(crate) unique: Option<(String, u64)>,
}

/// Ready jobs sent per call of the batch enqueue script at most: a script holds the server
/// while it runs, and a hundred jobs take well under a millisecond.
const ENQUEUE_BATCH: usize = 100;

/// One command of an enqueue round trip.
enum EnqueueCommand {
    /// `SADD <prefix>:queues <queue> ...`.
    Register { key: String, queues: Vec<String> },
    /// Ready jobs of one queue, through `enqueue_ready.lua`: KEYS and ARGV.
    Ready {
        keys: Vec<Value>,
        args: Vec<Value>,
        jobs: usize,
    },
    /// A delayed or unique job, through `enqueue.lua`: the EVAL arguments.
    Scripted(Vec<Value>),
}

/// Writes jobs in one round trip and returns their ids: for a duplicate of a unique job,
/// the id of the job already enqueued. A status hash is written for each when
/// `retention_ms` is above 0. Queue names in `new_queues` are added to the discovery set
/// in the same round trip.
///
/// Ready jobs of a queue go out as one script call per hundred (status and entry written
/// together, in order); delayed and unique jobs as one call each. A job that needs the
/// single-job script closes its queue's batch, so every stream gets its jobs in order.
pub(crate) async fn write_jobs(
    client: &Client,
    keys: &keys::Keys,
    script: &scripts::Script,
    new_queues: Vec<String>,
    writes: Vec<JobWrite>,
    retention_ms: u64,
) -> Result<Vec<String>, Error> {
    let now = crate::job::now_ms() as i64;
    let mut commands: Vec<EnqueueCommand> = Vec::new();
    if !new_queues.is_empty() {
        commands.push(EnqueueCommand::Register {
            key: keys.queues(),
            queues: new_queues,
        });
    }
    // Per job: the command holding its outcome, and whether that is a script's reply.
    let mut outcomes: Vec<(usize, bool, String)> = Vec::with_capacity(writes.len());
    // The open batch of each queue, by index into `commands`.
    let mut open: HashMap<String, usize> = HashMap::new();
    for w in writes {
        if w.when.is_none() && w.unique.is_none() {
            let at = match open.get(&w.queue) {
                Some(&at) if matches!(&commands[at], EnqueueCommand::Ready { jobs, .. } if *jobs < ENQUEUE_BATCH) => {
                    at
                }
                _ => {
                    let streams = keys.streams(&w.queue);
                    let mut k = Vec::with_capacity(3 + ENQUEUE_BATCH);
                    k.extend(streams.map(Value::from));
                    commands.push(EnqueueCommand::Ready {
                        args: vec![
                            Value::from(retention_ms as i64),
                            Value::from(now),
                            Value::from(w.queue.as_str()),
                        ],
                        keys: k,
                        jobs: 0,
                    });
                    open.insert(w.queue.clone(), commands.len() - 1);
                    commands.len() - 1
                }
            };
            if let EnqueueCommand::Ready {
                keys: k,
                args,
                jobs,
                ..
            } = &mut commands[at]
            {
                if retention_ms > 0 {
                    k.push(Value::from(keys.job(&w.queue, &w.job_id)));
                }
                args.reserve(4 + 2 * w.fields.len());
                args.extend([
                    Value::from(w.priority.index() as i64 + 1),
                    Value::from(w.job_type),
                    Value::from(i64::from(w.max_attempts)),
                    Value::from(2 * w.fields.len() as i64),
                ]);
                for (k, v) in w.fields {
                    args.push(Value::from_static_str(k));
                    args.push(v);
                }
                *jobs += 1;
            }
            outcomes.push((at, false, w.job_id));
            continue;
        }
        // This queue's later ready jobs go after this one.
        open.remove(&w.queue);
        let (mode, ms) = w.when.unwrap_or(("ready", 0));
        let target = match w.when {
            None => keys.stream(&w.queue, w.priority),
            Some(_) => keys.scheduled(&w.queue),
        };
        let status_key = keys.job(&w.queue, &w.job_id);
        let (unique_key, unique_ttl) = w.unique.unwrap_or_default();
        let mut args: Vec<Value> = Vec::with_capacity(16 + 2 * w.fields.len());
        args.extend([
            Value::from(scripts::ENQUEUE_LUA),
            Value::from(3),
            Value::from(target),
            Value::from(status_key.as_str()),
            // Not read when the job is not unique; a key of the same slot stands in.
            Value::from(if unique_key.is_empty() {
                status_key
            } else {
                unique_key
            }),
            Value::from(w.job_id.as_str()),
            Value::from(mode),
            Value::from(ms as i64),
            Value::from(w.priority.as_str()),
            Value::from(keys.wake(&w.queue)),
            Value::from(retention_ms as i64),
            Value::from(unique_ttl as i64),
            Value::from(w.job_type),
            Value::from(w.queue),
            Value::from(i64::from(w.max_attempts)),
        ]);
        for (k, v) in w.fields {
            args.push(Value::from_static_str(k));
            args.push(v);
        }
        commands.push(EnqueueCommand::Scripted(args));
        outcomes.push((commands.len() - 1, true, w.job_id));
    }
    let mut results = send_enqueue(client, &commands, script, None).await;
    // A server that lost its scripts (restart, SCRIPT FLUSH) ran none of the batch calls
    // it refused: load the script and send just those again, in order.
    let refused: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
        .map(|(i, _)| i)
        .collect();
    if !refused.is_empty() {
        script.load(client).await?;
        let again = send_enqueue(client, &commands, script, Some(&refused)).await;
        for (i, r) in refused.into_iter().zip(again) {
            results[i] = r;
        }
    }
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(e.clone());
    }
    let mut ids = Vec::with_capacity(outcomes.len());
    for (index, scripted, id) in outcomes {
        if !scripted {
            ids.push(id);
            continue;
        }
        let existing = match results.get(index) {
            Some(Ok(Value::Array(parts))) => parts.first().and_then(Value::as_string),
            _ => None,
        };
        ids.push(existing.unwrap_or(id));
    }
    Ok(ids)
}

/// Sends `commands` (only those at `only`, when given) back to back on one connection, in
/// order, without waiting between them; one result each. Not as a fred pipeline: that
/// copies every argument of every command once more before sending.
async fn send_enqueue(
    client: &Client,
    commands: &[EnqueueCommand],
    script: &scripts::Script,
    only: Option<&[usize]>,
) -> Vec<Result<Value, Error>> {
    // No typed EVAL or EVALSHA for arguments built by hand; the slot is taken from the first
    // key (offset 2: after the script and the number of keys).
    let eval = |name: &'static str| {
        fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::Offset(2), false)
    };
    let chosen: Vec<&EnqueueCommand> = match only {
        Some(indexes) => indexes.iter().map(|&i| &commands[i]).collect(),
        None => commands.iter().collect(),
    };
    // Each call hands its command to the connection when first polled, and join_all polls
    // them in order.
    let calls = chosen.into_iter().map(|c| async move {
        match c {
            EnqueueCommand::Register { key, queues } => {
                client
                    .sadd::<Value, _, _>(key.as_str(), queues.clone())
                    .await
            }
            EnqueueCommand::Ready { keys, args, .. } => {
                let mut all: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
                all.push(Value::from(script.sha1().clone()));
                all.push(Value::from(keys.len() as i64));
                all.extend(keys.iter().cloned());
                all.extend(args.iter().cloned());
                client.custom::<Value, _>(eval("EVALSHA"), all).await
            }
            EnqueueCommand::Scripted(args) => client.custom(eval("EVAL"), args.clone()).await,
        }
    });
    futures::future::join_all(calls).await
}

/// The finished entries of one ready stream, with their jobs' status keys and results.
#[derive(Debug, Default)]
pub(crate) struct StreamAcks {
    pub(crate) ids: Vec<String>,
    /// Status key and the handler's result (JSON), for each job that tracks status.
    pub(crate) statuses: Vec<(String, Option<String>)>,
}

/// Entries acknowledged per call of `ack.lua` at most: a script holds the server while it
/// runs, and this many take about a millisecond.
const ACK_BATCH: usize = 256;

/// Acknowledges and deletes finished entries and marks their jobs succeeded: one script
/// call (`ack.lua`) per stream and 256 entries, all calls sent together.
pub(crate) async fn ack_and_delete(
    client: &Client,
    script: &scripts::Script,
    group: &str,
    by_stream: &HashMap<std::sync::Arc<str>, StreamAcks>,
    retention_ms: u64,
) -> Result<(), Error> {
    let now = crate::job::now_ms() as i64;
    let mut calls = Vec::new();
    for (stream, acks) in by_stream {
        // Not every entry has a status (one deleted while pending has none): each call
        // takes as many statuses as it has entries, until none are left.
        let mut statuses = acks.statuses.as_slice();
        for ids in acks.ids.chunks(ACK_BATCH) {
            let (these, rest) = statuses.split_at(statuses.len().min(ids.len()));
            statuses = rest;
            let mut keys = Vec::with_capacity(1 + these.len());
            keys.push(stream.to_string());
            keys.extend(these.iter().map(|(key, _)| key.clone()));
            let mut args: Vec<Value> = Vec::with_capacity(4 + ids.len() + these.len());
            args.extend([
                Value::from(group),
                Value::from(now),
                Value::from(retention_ms as i64),
                Value::from(ids.len() as i64),
            ]);
            args.extend(ids.iter().map(|id| Value::from(id.as_str())));
            args.extend(
                these
                    .iter()
                    .map(|(_, result)| Value::from(result.as_deref().unwrap_or(""))),
            );
            calls.push(scripts::run::<Value>(client, script, keys, args));
        }
    }
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

/// The priority a stream key belongs to, from its suffix.
pub(crate) fn priority_of(stream: &str) -> Option<Priority> {
    Priority::ALL
        .into_iter()
        .find(|p| stream.ends_with(&format!(":{}", p.as_str())))
}
