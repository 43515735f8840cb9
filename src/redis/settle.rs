//! Settling deliveries: recorded as running, acknowledged, retried later, dead-lettered.

use std::collections::HashMap;
use std::sync::Arc;

use fred::prelude::*;

use super::Store;
use super::keys::GROUP;
use crate::Priority;
use crate::envelope::Envelope;

/// Attempts recorded per script call at most: a script holds the server while it runs.
const STARTED_BATCH: usize = 256;

/// Entries acknowledged per call of `ack.lua` at most: a script holds the server while it
/// runs, and this many take about a millisecond.
const ACK_BATCH: usize = 256;

/// Longest error text stored in a status or a dead letter.
const MAX_ERROR_LEN: usize = 4096;

/// The finished entries of one ready stream, with their jobs' success records.
#[derive(Debug, Default)]
pub(crate) struct StreamAcks {
    pub(crate) ids: Vec<String>,
    /// One for each job that keeps a record of its success.
    pub(crate) records: Vec<Succeeded>,
}

/// How a job's success is kept (`lua/ack.lua`; docs/architecture.md, "Data model").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Succeeded {
    /// The job has a status hash (`key`): marked succeeded, kept `keep_ms` from now.
    Record {
        key: String,
        result: Option<String>,
        keep_ms: u64,
    },
    /// A field of the queue's done bucket for the job's enqueue minute.
    Done {
        bucket: String,
        job_id: String,
        /// See [`Succeeded::done_value`].
        value: String,
        keep_ms: u64,
    },
}

impl Succeeded {
    /// The done-bucket value of a job: `<finished ms> <attempt> <max attempts> <type>`,
    /// then ` <result>` when the handler stored one (JSON, which may hold spaces: it comes
    /// last).
    pub(crate) fn done_value(
        finished_ms: u64,
        attempt: u32,
        max_attempts: u32,
        job_type: &str,
        result: Option<&str>,
    ) -> String {
        let mut v = format!("{finished_ms} {attempt} {max_attempts} {job_type}");
        if let Some(r) = result {
            v.push(' ');
            v.push_str(r);
        }
        v
    }
}

/// What a fenced change of a pending entry came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fenced {
    /// Done: this consumer owned the entry.
    Done,
    /// The entry's data was deleted while it was pending: it was acknowledged, nothing else.
    Deleted,
    /// Another consumer owns the entry now (or it is no longer pending): nothing changed.
    LeaseLost,
}

/// Why a delivery goes back to the scheduled set (`lua/retry.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Again {
    /// Its attempt failed: the next one raises `attempt`; `error` is the failure.
    Retry,
    /// A rate limit had no token for it: `attempt` stays, `error` says which limit.
    Defer,
    /// As `Defer`, with its tokens taken for its due time: it starts then without asking.
    Reserve,
}

impl Again {
    fn as_str(self) -> &'static str {
        match self {
            Again::Retry => "retry",
            Again::Defer => "defer",
            Again::Reserve => "reserve",
        }
    }
}

/// A delivery to schedule again (`lua/retry.lua`): a failed attempt, or a job a rate limit
/// holds back.
pub(crate) struct Retry<'a> {
    pub(crate) again: Again,
    pub(crate) queue: &'a str,
    pub(crate) priority: Priority,
    pub(crate) stream: &'a str,
    pub(crate) entry_id: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) job_id: &'a str,
    pub(crate) delay_ms: u64,
    pub(crate) retention_ms: u64,
    pub(crate) error: &'a str,
    /// Fields of the job's status hash besides its state (type, queue, attempts, ...), so
    /// a job that had none gets a whole one.
    pub(crate) about: &'a [(&'static str, String)],
}

/// A delivery to move to the dead-letter stream (`lua/dead_letter.lua`).
pub(crate) struct DeadLetter<'a> {
    pub(crate) queue: &'a str,
    pub(crate) stream: &'a str,
    pub(crate) entry_id: &'a str,
    pub(crate) consumer: &'a str,
    /// The job's id, when the entry had a readable one (its status is marked dead).
    pub(crate) job_id: Option<&'a str>,
    pub(crate) retention_ms: u64,
    pub(crate) reason: &'a str,
    pub(crate) error: &'a str,
    /// As for [`Retry::about`].
    pub(crate) about: &'a [(&'static str, String)],
}

impl Store {
    /// Records attempts as running since `now_ms` (`lua/started.lua`): for each job its
    /// status key and envelope (attempt, attempt budget). One call per 256 jobs, sent in
    /// turn. Returns, per call that failed, the error and the range of `attempts` it covered.
    pub(crate) async fn mark_started(
        &self,
        attempts: &[(&str, &Envelope)],
        now_ms: u64,
    ) -> Vec<(crate::Error, std::ops::Range<usize>)> {
        let now = Value::from(now_ms as i64);
        let mut failed = Vec::new();
        for (i, chunk) in attempts.chunks(STARTED_BATCH).enumerate() {
            let mut keys = Vec::with_capacity(chunk.len());
            let mut args = Vec::with_capacity(3 * chunk.len());
            for (key, env) in chunk {
                keys.push(key.to_string());
                args.push(Value::from(i64::from(env.attempt)));
                args.push(Value::from(i64::from(env.max_attempts)));
                args.push(now.clone());
            }
            let r: crate::Result<i64> = self.run(&self.scripts.started, keys, args).await;
            if let Err(e) = r {
                let start = i * STARTED_BATCH;
                failed.push((e, start..start + chunk.len()));
            }
        }
        failed
    }

    /// Acknowledges and deletes finished entries and records their jobs' success: one call
    /// of `lua/ack.lua` per stream and 256 entries, all sent together. Returns how many
    /// entries were acknowledged.
    pub(crate) async fn ack_batch(
        &self,
        by_stream: &HashMap<Arc<str>, StreamAcks>,
    ) -> crate::Result<u64> {
        let now = Value::from(crate::clock::now_ms() as i64);
        let mut calls = Vec::new();
        for (stream, acks) in by_stream {
            // Not every entry has a record (one deleted while pending, a job kept for no
            // time): each call takes as many records as it has entries, until none are left.
            let mut records = acks.records.as_slice();
            for ids in acks.ids.chunks(ACK_BATCH) {
                let (these, rest) = records.split_at(records.len().min(ids.len()));
                records = rest;
                let mut keys: Vec<String> = vec![stream.to_string()];
                let mut args: Vec<Value> = Vec::with_capacity(4 + ids.len() + 4 * these.len());
                args.extend([Value::from(GROUP), now.clone()]);
                push_acks(&mut keys, &mut args, ids, these);
                calls.push(self.run::<u64>(&self.scripts.ack, keys, args));
            }
        }
        let mut acked = 0;
        for r in futures::future::join_all(calls).await {
            acked += r?;
        }
        Ok(acked)
    }

    /// Schedules a failed attempt's next try `delay_ms` from now on Redis' clock, if
    /// `consumer` still owns the entry (`lua/retry.lua`).
    pub(crate) async fn retry_later(&self, r: &Retry<'_>) -> crate::Result<Fenced> {
        let keys = vec![
            r.stream.to_string(),
            self.keys.scheduled(r.queue),
            self.keys.job(r.queue, r.job_id),
        ];
        let args: Vec<Value> = vec![
            GROUP.into(),
            r.consumer.into(),
            r.entry_id.into(),
            Value::from(r.delay_ms as i64),
            r.priority.as_str().into(),
            self.keys.wake(r.queue).into(),
            Value::from(r.retention_ms as i64),
            truncate(r.error).into(),
            r.job_id.into(),
            r.again.as_str().into(),
        ];
        let args = with_about(args, r.about);
        let due: i64 = self.run(&self.scripts.retry, keys, args).await?;
        Ok(match due {
            0 => Fenced::LeaseLost,
            -1 => Fenced::Deleted,
            _ => Fenced::Done,
        })
    }

    /// Moves a delivery to its queue's dead-letter stream with its reason, if `consumer`
    /// still owns it (`lua/dead_letter.lua`).
    pub(crate) async fn dead_letter(&self, d: &DeadLetter<'_>) -> crate::Result<Fenced> {
        // Without a job id there is no status to mark; the DLQ key stands in (same slot).
        let (status, retention) = match d.job_id {
            Some(id) => (self.keys.job(d.queue, id), d.retention_ms),
            None => (self.keys.dlq(d.queue), 0),
        };
        let keys = vec![d.stream.to_string(), self.keys.dlq(d.queue), status];
        let args: Vec<Value> = vec![
            GROUP.into(),
            d.consumer.into(),
            d.entry_id.into(),
            d.reason.into(),
            truncate(d.error).into(),
            Value::from(retention as i64),
        ];
        let args = with_about(args, d.about);
        let moved: i64 = self.run(&self.scripts.dead_letter, keys, args).await?;
        Ok(match moved {
            1 => Fenced::Done,
            -1 => Fenced::Deleted,
            _ => Fenced::LeaseLost,
        })
    }
}

/// The status fields a job without a status hash gets when it needs one (it is retried or
/// dies: [`Retry::about`]); none for a job that has one already.
pub(crate) fn status_about(queue: &str, env: &Envelope) -> Vec<(&'static str, String)> {
    if env.recorded {
        return Vec::new();
    }
    vec![
        ("type", env.job_type.clone()),
        ("queue", queue.to_string()),
        ("attempts", env.attempt.to_string()),
        ("max_attempts", env.max_attempts.to_string()),
        ("enqueued_at", env.enqueued_at.to_string()),
    ]
}

/// Appends finished entries and their success records to a script call's arguments, as
/// `ack_finished` (lua/prelude.lua) reads them: n, the entry ids, m, then four values per
/// record, whose key is added to `keys` (once: jobs of a batch share a bucket or two).
pub(crate) fn push_acks(
    keys: &mut Vec<String>,
    args: &mut Vec<Value>,
    ids: &[String],
    records: &[Succeeded],
) {
    args.push(Value::from(ids.len() as i64));
    args.extend(ids.iter().map(|id| Value::from(id.as_str())));
    args.push(Value::from(records.len() as i64));
    for r in records {
        let (key, field, value, keep) = match r {
            Succeeded::Record {
                key,
                result,
                keep_ms,
            } => (key, "", result.as_deref().unwrap_or(""), keep_ms),
            Succeeded::Done {
                bucket,
                job_id,
                value,
                keep_ms,
            } => (bucket, job_id.as_str(), value.as_str(), keep_ms),
        };
        let at = match keys.iter().position(|k| k == key) {
            Some(at) => at,
            None => {
                keys.push(key.clone());
                keys.len() - 1
            }
        };
        args.extend([
            Value::from(at as i64 + 1),
            Value::from(field),
            Value::from(value),
            Value::from((*keep).max(1) as i64),
        ]);
    }
}

/// `args` followed by the status fields of `about`, as field and value.
fn with_about(mut args: Vec<Value>, about: &[(&'static str, String)]) -> Vec<Value> {
    for (field, value) in about {
        args.push(Value::from_static_str(field));
        args.push(Value::from(value.as_str()));
    }
    args
}

/// `s` cut to [`MAX_ERROR_LEN`] bytes at a character boundary.
fn truncate(s: &str) -> &str {
    if s.len() <= MAX_ERROR_LEN {
        return s;
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What trimming a queue's success records to its memory budget did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DoneTrim {
    /// Done buckets deleted (a minute of records each).
    pub(crate) buckets: u64,
    /// Their bytes, by Redis' estimate.
    pub(crate) freed: u64,
    /// Bytes of the buckets kept.
    pub(crate) kept: u64,
}

impl Store {
    /// Deletes `queue`'s oldest done buckets (whole minutes of success records) until the
    /// rest take at most `budget` bytes by Redis' estimate (`lua/done_trim.lua`).
    pub(crate) async fn done_trim(&self, queue: &str, budget: u64) -> crate::Result<DoneTrim> {
        let index = self.keys.done_index(queue);
        let mut prefix = index.clone();
        prefix.push(':');
        let (buckets, freed, kept): (u64, u64, u64) = self
            .run(
                &self.scripts.done_trim,
                vec![index],
                vec![
                    Value::from(budget.min(i64::MAX as u64) as i64),
                    prefix.into(),
                ],
            )
            .await?;
        Ok(DoneTrim {
            buckets,
            freed,
            kept,
        })
    }
}
