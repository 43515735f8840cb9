//! Writing jobs: one round trip for any number of jobs, ready ones a script call per
//! hundred jobs of a queue (`enqueue_ready.lua`), delayed and unique ones a call each
//! (`enqueue.lua`), both by SHA.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use futures::future::{BoxFuture, MaybeDone, maybe_done};

use fred::prelude::*;

use super::cluster::{Cluster, slot_of};
use super::entry::fields_of;
use super::keys;
use super::scripts::Scripts;
use super::{Route, Store, fail};
use crate::Priority;
use crate::envelope::Envelope;

/// One job to write.
pub(crate) struct JobWrite {
    pub(crate) queue: String,
    pub(crate) priority: Priority,
    /// `("in", delay ms)` or `("at", epoch ms)` for a delayed job.
    pub(crate) when: Option<(&'static str, u64)>,
    /// `(unique key, ttl ms)` of a unique job; the key without prefix, as the caller chose.
    pub(crate) unique: Option<(String, u64)>,
    pub(crate) envelope: Envelope,
}

impl Store {
    /// Writes jobs in one round trip and says what became of each ([`Written`]): its id,
    /// the id of the job enqueued before for a duplicate of a unique job, or the capacity
    /// of the bounded queue that refused it. A delayed job gets a status record when `retention_ms` is above 0 (a ready
    /// job needs none: its entry is its record), and `new_queues` are added to the known
    /// queues in the same round trip. See [`write_jobs`] for how the calls are made.
    pub(crate) async fn enqueue_batch(
        &self,
        new_queues: Vec<String>,
        writes: Vec<JobWrite>,
        retention_ms: u64,
    ) -> crate::Result<Vec<Written>> {
        let targets = match &self.route {
            Route::Pool(p) => Targets::One(p.next()),
            Route::Cluster(c) => Targets::BySlot(self.write_nodes(c, &new_queues, &writes).await?),
        };
        write_jobs(
            &targets,
            &self.keys,
            &self.scripts,
            new_queues,
            writes,
            retention_ms,
        )
        .await
        .map_err(|e| self.noted(e))
    }

    /// On a cluster: a client of the primary of every slot a write touches (one per queue,
    /// and the registry's), resolved before the first command is built.
    async fn write_nodes(
        &self,
        c: &Cluster,
        new_queues: &[String],
        writes: &[JobWrite],
    ) -> crate::Result<Vec<(u16, Client)>> {
        let mut slots: Vec<u16> = Vec::new();
        if !new_queues.is_empty() {
            slots.push(slot_of(self.keys.queues().as_bytes()));
        }
        let mut seen: Vec<&str> = Vec::new();
        for w in writes {
            if !seen.contains(&w.queue.as_str()) {
                seen.push(w.queue.as_str());
                let slot = slot_of(self.keys.stream(&w.queue, w.priority).as_bytes());
                if !slots.contains(&slot) {
                    slots.push(slot);
                }
            }
        }
        let mut clients = Vec::with_capacity(slots.len());
        for slot in slots {
            clients.push((slot, c.client(slot).await?.1));
        }
        Ok(clients)
    }
}

/// Where the commands of an enqueue go.
enum Targets<'c> {
    /// Every command on this connection (a single server).
    One(&'c Client),
    /// On a cluster: the connection of each slot the write touches.
    BySlot(Vec<(u16, Client)>),
}

impl Targets<'_> {
    /// The connection for `command`: the one of its first key's slot.
    fn client(&self, command: &EnqueueCommand) -> &Client {
        match self {
            Targets::One(c) => c,
            Targets::BySlot(clients) => {
                let key: &[u8] = match command {
                    EnqueueCommand::Register { key, .. } => key.as_bytes(),
                    EnqueueCommand::Ready { keys, .. } | EnqueueCommand::Scripted { keys, .. } => {
                        keys.first().and_then(Value::as_bytes).unwrap_or_default()
                    }
                };
                let slot = slot_of(key);
                let at = clients.iter().position(|(s, _)| *s == slot).unwrap_or(0);
                &clients[at].1
            }
        }
    }
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
    /// A delayed or unique job, through `enqueue.lua`: KEYS and ARGV.
    Scripted { keys: Vec<Value>, args: Vec<Value> },
}

/// Writes jobs in one round trip and returns their ids with whether each was written: for
/// a duplicate of a unique job, the id of the job already enqueued. A delayed job's status
/// hash is written when `retention_ms` is above 0. Queue names in `new_queues` are added to
/// the discovery set in the same round trip.
///
/// Ready jobs of a queue go out as one script call per hundred (their entries only, in
/// order; each job's id is its entry's); delayed and unique jobs as one call each. A job that needs the
/// single-job script closes its queue's batch, so every stream gets its jobs in order. Each
/// call is sent as soon as it is complete, in order, so Redis runs the first hundred jobs
/// while the next are still being encoded; the replies are read once all are sent.
async fn write_jobs(
    targets: &Targets<'_>,
    keys: &keys::Keys,
    scripts: &Scripts,
    new_queues: Vec<String>,
    writes: Vec<JobWrite>,
    retention_ms: u64,
) -> crate::Result<Vec<Written>> {
    // Every call that writes a job goes by SHA, and both enqueue scripts are loaded
    // together: a server that lost its scripts refuses all of a write's calls, which then go
    // again in order, so no queue's jobs change order. Loading them before a client's first
    // write spares that refused round trip. On a cluster each primary loads them at its
    // first write's refusal (one flag cannot say which nodes have them).
    if let Targets::One(client) = targets
        && !scripts.enqueue_loaded.load(Ordering::Relaxed)
    {
        scripts.load_enqueue(client).await?;
    }
    let mut commands: Vec<EnqueueCommand> = Vec::new();
    // Per command: whether it takes no more jobs, so it can be sent.
    let mut closed: Vec<bool> = Vec::new();
    let mut sent = InFlight::new(targets, scripts);
    if !new_queues.is_empty() {
        commands.push(EnqueueCommand::Register {
            key: keys.queues(),
            queues: new_queues,
        });
        closed.push(true);
    }
    // Per job: the command holding its outcome and where in it (see `Outcome`).
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(writes.len());
    // The open batch of each queue, by index into `commands`.
    let mut open: HashMap<String, usize> = HashMap::new();
    for w in writes {
        let w = Write::from(w, keys);
        if w.when.is_none() && w.unique.is_none() {
            let at = match open.get(&w.queue) {
                Some(&at) => at,
                None => {
                    let mut script_keys: Vec<Value> = Vec::with_capacity(7);
                    script_keys.extend(keys.streams(&w.queue).map(Value::from));
                    script_keys.extend(bound_keys(keys, &w.queue).map(Value::from));
                    commands.push(EnqueueCommand::Ready {
                        args: vec![Value::from_static_str(keys::GROUP)],
                        keys: script_keys,
                        jobs: 0,
                    });
                    closed.push(false);
                    open.insert(w.queue.clone(), commands.len() - 1);
                    commands.len() - 1
                }
            };
            let mut position = 0;
            if let EnqueueCommand::Ready { args, jobs, .. } = &mut commands[at] {
                push_ready_job(args, w.priority, w.fields);
                position = *jobs;
                *jobs += 1;
                if *jobs == ENQUEUE_BATCH {
                    closed[at] = true;
                    open.remove(&w.queue);
                }
            }
            outcomes.push((at, Outcome::Entry(position, w.queue.clone(), w.priority)));
            sent.send_closed(&commands, &closed).await;
            continue;
        }
        // This queue's later ready jobs go after this one.
        if let Some(at) = open.remove(&w.queue) {
            closed[at] = true;
        }
        let (mode, ms) = w.when.unwrap_or(("ready", 0));
        let target = match w.when {
            None => keys.stream(&w.queue, w.priority),
            Some(_) => keys.scheduled(&w.queue),
        };
        // A ready job has no status key (nor a job id yet): its stream stands in.
        let status_key = if w.job_id.is_empty() {
            target.clone()
        } else {
            keys.job(&w.queue, &w.job_id)
        };
        let (unique_key, unique_ttl) = w.unique.unwrap_or_default();
        let mut script_keys = vec![
            Value::from(target),
            Value::from(status_key.as_str()),
            // Not read when the job is not unique; a key of the same slot stands in.
            Value::from(if unique_key.is_empty() {
                status_key
            } else {
                unique_key
            }),
        ];
        script_keys.extend(keys.streams(&w.queue).map(Value::from));
        script_keys.extend(bound_keys(keys, &w.queue).map(Value::from));
        let mut args: Vec<Value> = Vec::with_capacity(12 + 2 * w.fields.len());
        args.extend([
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
            Value::from_static_str(keys::GROUP),
        ]);
        for (k, v) in w.fields {
            args.push(Value::from_static_str(k));
            args.push(v);
        }
        commands.push(EnqueueCommand::Scripted {
            keys: script_keys,
            args,
        });
        closed.push(true);
        outcomes.push((commands.len() - 1, Outcome::Scripted));
        sent.send_closed(&commands, &closed).await;
    }
    closed.fill(true);
    sent.send_closed(&commands, &closed).await;
    let mut results = sent.results().await;
    // A server that lost its scripts (restart, SCRIPT FLUSH) ran none of the calls it
    // refused: load the scripts and send just those again, in order.
    let refused: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
        .map(|(i, _)| i)
        .collect();
    if !refused.is_empty() {
        match targets {
            Targets::One(client) => scripts.load_enqueue(client).await?,
            Targets::BySlot(_) => {
                let mut loaded: Vec<&Client> = Vec::new();
                for &i in &refused {
                    let client = targets.client(&commands[i]);
                    if !loaded.iter().any(|c| c.id() == client.id()) {
                        scripts.enqueue_ready.load(client).await.map_err(fail)?;
                        scripts.enqueue.load(client).await.map_err(fail)?;
                        loaded.push(client);
                    }
                }
            }
        }
        let again = send_again(targets, &commands, scripts, &refused).await;
        for (i, r) in refused.into_iter().zip(again) {
            results[i] = r;
        }
    }
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(fail(e.clone()));
    }
    let mut ids = Vec::with_capacity(outcomes.len());
    for (index, outcome) in outcomes {
        let reply = match results.get(index) {
            Some(Ok(Value::Array(parts))) => parts.as_slice(),
            _ => &[],
        };
        let id = match outcome {
            Outcome::Entry(position, queue, priority) => match reply.get(position) {
                Some(Value::Integer(capacity)) => Some(Written::Full((*capacity).max(0) as u64)),
                Some(entry) => entry
                    .as_str()
                    .map(|entry| Written::New(crate::names::locator(&queue, priority, &entry))),
                None => None,
            },
            Outcome::Scripted => match reply {
                [_, code, capacity] if code.as_i64() == Some(2) => {
                    Some(Written::Full(capacity.as_i64().unwrap_or(0).max(0) as u64))
                }
                [id, written] => id.as_string().map(|id| {
                    if written.as_i64().unwrap_or(1) == 1 {
                        Written::New(id)
                    } else {
                        Written::Duplicate(id)
                    }
                }),
                _ => None,
            },
        };
        ids.push(
            id.ok_or_else(|| crate::Error::Decode("an enqueue script returned no job id".into()))?,
        );
    }
    Ok(ids)
}

/// What became of one job of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Written {
    /// Written, under this id.
    New(String),
    /// A duplicate of a unique job: nothing written; the id of the job enqueued before.
    Duplicate(String),
    /// Refused: the queue (or partition) it went to holds as many jobs waiting as its
    /// capacity, given here. Nothing written.
    Full(u64),
}

#[cfg(test)]
impl Written {
    /// The job's id and whether it was written; a test's panic for a refused job.
    pub(crate) fn into_pair(self) -> (String, bool) {
        match self {
            Written::New(id) => (id, true),
            Written::Duplicate(id) => (id, false),
            Written::Full(c) => panic!("refused: the queue is full (capacity {c})"),
        }
    }
}

/// The keys an enqueue script reads for a bounded queue, after its streams: the scheduled
/// set, the capacity, the full mark and the lifetime totals (refusals are counted there).
fn bound_keys(keys: &keys::Keys, queue: &str) -> [String; 4] {
    [
        keys.scheduled(queue),
        keys.capacity(queue),
        keys.full(queue),
        keys.totals(queue),
    ]
}

/// Where a job's id is found among the replies of an enqueue.
enum Outcome {
    /// The entry id at this position of an `enqueue_ready.lua` reply, on this queue's
    /// priority stream: the job's id is made of them.
    Entry(usize, String, Priority),
    /// `{job id, 1 written or 0 duplicate}`, the reply of `enqueue.lua`.
    Scripted,
}

/// A job to write, as the commands take it.
struct Write {
    job_id: String,
    job_type: String,
    queue: String,
    priority: Priority,
    max_attempts: u32,
    fields: Vec<(&'static str, Value)>,
    when: Option<(&'static str, u64)>,
    /// `(full key, ttl ms)` of a unique job.
    unique: Option<(String, u64)>,
}

impl Write {
    fn from(mut w: JobWrite, keys: &keys::Keys) -> Write {
        // A job to run now is named by its entry; a delayed one carries an id of its own,
        // and a status hash.
        let delayed = w.when.is_some();
        if !delayed {
            w.envelope.id.clear();
        } else if w.envelope.id.is_empty() {
            w.envelope.id = crate::names::JobId::generate().to_string();
        }
        w.envelope.recorded = delayed;
        Write {
            fields: fields_of(&w.envelope),
            unique: w.unique.map(|(k, ttl)| (keys.unique(&w.queue, &k), ttl)),
            job_id: w.envelope.id,
            job_type: w.envelope.job_type,
            max_attempts: w.envelope.max_attempts,
            queue: w.queue,
            priority: w.priority,
            when: w.when,
        }
    }
}

/// The fields every entry has, in the order `enqueue_ready.lua` takes their values.
const FIXED_FIELDS: [&str; 4] = ["type", "attempt", "max_attempts", "enqueued_at"];

/// Appends one job's arguments for `enqueue_ready.lua`: its priority, the number of
/// optional fields, the values of the fixed fields, the optional fields as name and value,
/// and the payload.
fn push_ready_job(args: &mut Vec<Value>, priority: Priority, fields: Vec<(&'static str, Value)>) {
    let mut fixed: [Value; 4] = std::array::from_fn(|_| Value::Null);
    let mut payload = Value::Null;
    let mut optional: Vec<(&'static str, Value)> = Vec::new();
    for (name, value) in fields {
        match FIXED_FIELDS.iter().position(|f| *f == name) {
            Some(at) => fixed[at] = value,
            None if name == "payload" => payload = value,
            None => optional.push((name, value)),
        }
    }
    args.reserve(7 + 2 * optional.len());
    args.push(Value::from(priority.index() as i64 + 1));
    args.push(Value::from(optional.len() as i64));
    args.extend(fixed);
    for (name, value) in optional {
        args.push(Value::from_static_str(name));
        args.push(value);
    }
    args.push(payload);
}

/// A command's reply, on its way.
type Call<'c> = BoxFuture<'c, Result<Value, Error>>;

/// A command's call: owns its arguments, so later commands can be built while it is out.
fn call<'c>(client: &'c Client, command: &EnqueueCommand, scripts: &Scripts) -> Call<'c> {
    let (script, keys, args) = match command {
        EnqueueCommand::Register { key, queues } => {
            let (key, queues) = (key.clone(), queues.clone());
            return async move { client.sadd::<Value, _, _>(key, queues).await }.boxed();
        }
        EnqueueCommand::Ready { keys, args, .. } => (&scripts.enqueue_ready, keys, args),
        EnqueueCommand::Scripted { keys, args } => (&scripts.enqueue, keys, args),
    };
    let mut all: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
    all.push(Value::from(script.sha1().clone()));
    all.push(Value::from(keys.len() as i64));
    all.extend(keys.iter().cloned());
    all.extend(args.iter().cloned());
    // No typed EVALSHA for arguments built by hand; the slot is taken from the first key
    // (offset 2: after the SHA and the number of keys).
    let evalsha = fred::types::CustomCommand::new_static(
        "EVALSHA",
        fred::types::ClusterHash::Offset(2),
        false,
    );
    async move { client.custom::<Value, _>(evalsha, all).await }.boxed()
}

/// The commands of one enqueue, sent in order as each is complete, so the server runs the
/// first ones while the rest are still being built.
struct InFlight<'c> {
    targets: &'c Targets<'c>,
    scripts: &'c Scripts,
    /// Index of the next command to send.
    next: usize,
    calls: Vec<Pin<Box<MaybeDone<Call<'c>>>>>,
}

impl<'c> InFlight<'c> {
    fn new(targets: &'c Targets<'c>, scripts: &'c Scripts) -> Self {
        InFlight {
            targets,
            scripts,
            next: 0,
            calls: Vec::new(),
        }
    }

    /// Sends the commands after the last one sent, up to the first that is not `closed`.
    async fn send_closed(&mut self, commands: &[EnqueueCommand], closed: &[bool]) {
        while self.next < commands.len() && closed[self.next] {
            let command = &commands[self.next];
            let client = self.targets.client(command);
            let mut c = Box::pin(maybe_done(call(client, command, self.scripts)));
            // The first poll hands the command to the connection; its reply is read later.
            let _ = futures::poll!(c.as_mut());
            self.calls.push(c);
            self.next += 1;
        }
    }

    /// Every sent command's reply, in order.
    async fn results(self) -> Vec<Result<Value, Error>> {
        let mut out = Vec::with_capacity(self.calls.len());
        for mut c in self.calls {
            c.as_mut().await;
            out.push(c.as_mut().take_output().unwrap_or_else(|| {
                Err(Error::new(
                    ErrorKind::Unknown,
                    "an enqueue call lost its reply",
                ))
            }));
        }
        out
    }
}

/// Sends the commands at `indexes` back to back on one connection, in order, without
/// waiting between them; one result each. Not as a fred pipeline: that copies every argument
/// of every command once more before sending.
async fn send_again(
    targets: &Targets<'_>,
    commands: &[EnqueueCommand],
    scripts: &Scripts,
    indexes: &[usize],
) -> Vec<Result<Value, Error>> {
    // Each call hands its command to the connection when first polled, and join_all polls
    // them in order.
    futures::future::join_all(
        indexes
            .iter()
            .map(|&i| call(targets.client(&commands[i]), &commands[i], scripts)),
    )
    .await
}
