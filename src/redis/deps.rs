//! Jobs that wait for others, and batches (README, "Chains, dependencies, batches"):
//! held jobs written (`lua/hold.lua`), dependencies on existing jobs recorded
//! (`lua/depend.lua`), outcomes resolved into their dependents (`lua/resolve.lua`) from
//! each queue's outbox (`lua/outbox_done.lua` clears an entry once told).

use std::collections::HashMap;

use fred::prelude::*;

use super::Store;
use super::entry::{fields_of, list_of, text_of};
use super::keys::GROUP;
use crate::Priority;
use crate::envelope::Envelope;

/// Held jobs written per script call at most.
const HOLD_BATCH: usize = 100;

/// A job written to wait for others (or held until its flow is written).
#[derive(Debug)]
pub(crate) struct HeldJob<'a> {
    /// Its id (a UUIDv7: it has a status hash from the start).
    pub(crate) id: &'a str,
    /// How many jobs it waits for.
    pub(crate) needs: usize,
    /// Not before: `("in", ms)` or `("at", ms since the epoch)`.
    pub(crate) when: Option<(&'static str, u64)>,
    pub(crate) priority: Priority,
    pub(crate) envelope: &'a Envelope,
    /// Who waits for it: `<queue> <id> <policy>`.
    pub(crate) dependents: Vec<String>,
    /// What it waits for: `<kind> <queue> <id> <policy>` (kind `job` or `batch`).
    pub(crate) parents: Vec<String>,
}

/// What `lua/depend.lua` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Depended {
    /// Recorded: the dependent is told when the job ends.
    Registered,
    /// The job had ended: outcome and result (or error).
    Ended(String, String),
    /// No such job (unknown or expired).
    Unknown,
}

/// Who hears of an ended job: a waiting job, or a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    Job,
    Batch,
}

/// One ended job, told to one dependent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heard<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) outcome: &'a str,
    pub(crate) result: &'a str,
    pub(crate) policy: &'a str,
}

impl Store {
    /// Writes held jobs of `queue` (`lua/hold.lua`, 100 a call) and registers the queue.
    pub(crate) async fn hold_jobs(&self, queue: &str, jobs: &[HeldJob<'_>]) -> crate::Result<()> {
        // The known queues live in another slot: registered apart, first.
        self.register_queues(&[queue.to_string()]).await?;
        for chunk in jobs.chunks(HOLD_BATCH) {
            let mut args: Vec<Value> = vec![queue.into(), Value::from(chunk.len() as i64)];
            for j in chunk {
                let (mode, at) = j.when.unwrap_or(("", 0));
                args.push(j.id.into());
                args.push(Value::from(j.needs as i64));
                args.push(mode.into());
                args.push(Value::from(at as i64));
                args.push(j.priority.as_str().into());
                args.push(j.envelope.job_type.as_str().into());
                args.push(Value::from(i64::from(j.envelope.max_attempts)));
                let fields = fields_of(j.envelope);
                args.push(Value::from(fields.len() as i64));
                for (name, value) in fields {
                    args.push(Value::from_static_str(name));
                    args.push(value);
                }
                args.push(Value::from(j.dependents.len() as i64));
                args.extend(j.dependents.iter().map(|d| Value::from(d.as_str())));
                args.push(Value::from(j.parents.len() as i64));
                args.extend(j.parents.iter().map(|p| Value::from(p.as_str())));
            }
            let _: i64 = self
                .run(
                    &self.scripts.hold,
                    vec![self.keys.totals(queue), self.keys.held(queue)],
                    args,
                )
                .await?;
        }
        Ok(())
    }

    /// Records `dependent` (`<queue> <id> <policy>`) as waiting for job `id` of `queue`
    /// (`lua/depend.lua`).
    pub(crate) async fn depend(
        &self,
        queue: &str,
        id: &str,
        dependent: &str,
    ) -> crate::Result<Depended> {
        let record = self.keys.job(queue, id);
        let (keys, entry) = match (crate::names::parse_locator(id), self.keys.done_of(id)) {
            (Some((q, priority, entry)), Some(done)) if q == queue => (
                vec![record, self.keys.stream(queue, priority), done],
                entry.to_string(),
            ),
            _ => (vec![record.clone(), record.clone(), record], String::new()),
        };
        let reply: Value = self
            .run(
                &self.scripts.depend,
                keys,
                vec![GROUP.into(), entry.into(), id.into(), dependent.into()],
            )
            .await?;
        let mut parts = list_of(reply).into_iter().map(|v| text_of(&v));
        Ok(match parts.next().as_deref() {
            Some("registered") => Depended::Registered,
            Some("ended") => Depended::Ended(
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            ),
            Some("none") => Depended::Unknown,
            _ => {
                return Err(crate::Error::Decode(
                    "unexpected reply of depend.lua".into(),
                ));
            }
        })
    }

    /// Tells target `id` of `queue` that a job ended (`heard`), or with `None` checks
    /// whether it can go (`lua/resolve.lua`). Returns the script's word.
    pub(crate) async fn resolve(
        &self,
        kind: TargetKind,
        queue: &str,
        id: &str,
        heard: Option<Heard<'_>>,
        retention_ms: u64,
    ) -> crate::Result<String> {
        let [high, normal, low] = self.keys.streams(queue);
        let (target, log, kind_word) = match kind {
            TargetKind::Job => (
                self.keys.job(queue, id),
                self.keys.parents(queue, id),
                "job",
            ),
            TargetKind::Batch => (
                self.keys.batch(queue, id),
                self.keys.batch_jobs(queue, id),
                "batch",
            ),
        };
        let keys = vec![
            target,
            log,
            high,
            normal,
            low,
            self.keys.scheduled(queue),
            self.keys.dlq(queue),
            self.keys.totals(queue),
        ];
        let h = heard.unwrap_or(Heard {
            job_id: "",
            outcome: "",
            result: "",
            policy: "",
        });
        let args: Vec<Value> = vec![
            h.job_id.into(),
            h.outcome.into(),
            h.result.into(),
            h.policy.into(),
            Value::from(retention_ms as i64),
            kind_word.into(),
            id.into(),
        ];
        let reply: Value = self.run(&self.scripts.resolve, keys, args).await?;
        Ok(list_of(reply)
            .into_iter()
            .next()
            .map(|v| text_of(&v))
            .unwrap_or_default())
    }

    /// The jobs of `queue` that ended with dependents not told yet: job id → outbox value
    /// (`<outcome>\n<result>`).
    pub(crate) async fn outbox(&self, queue: &str) -> crate::Result<Vec<(String, String)>> {
        let key = self.keys.outbox(queue);
        let conn = self.node(&key).await?;
        let all: HashMap<String, String> = conn.hgetall(key).await.map_err(|e| self.fail(e))?;
        Ok(all.into_iter().collect())
    }

    /// Who waits for job `id` of `queue` (`<queue> <id> <policy>` each).
    pub(crate) async fn dependents_of(&self, queue: &str, id: &str) -> crate::Result<Vec<String>> {
        let key = self.keys.dependents(queue, id);
        let conn = self.node(&key).await?;
        conn.smembers(key).await.map_err(|e| self.fail(e))
    }

    /// Clears job `id`'s outbox entry if it still reads `value` (`lua/outbox_done.lua`).
    pub(crate) async fn outbox_done(
        &self,
        queue: &str,
        id: &str,
        value: &str,
    ) -> crate::Result<bool> {
        let n: i64 = self
            .run(
                &self.scripts.outbox_done,
                vec![
                    self.keys.outbox(queue),
                    self.keys.dependents(queue, id),
                    self.keys.has_deps(queue),
                ],
                vec![id.into(), value.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Writes a new, open batch of `total` jobs, and registers `callbacks` as waiting for
    /// it (`<queue> <id> <policy>`).
    pub(crate) async fn create_batch(
        &self,
        queue: &str,
        id: &str,
        total: usize,
        callbacks: &[String],
    ) -> crate::Result<()> {
        let keys = vec![
            self.keys.batch(queue, id),
            self.keys.dependents(queue, id),
            self.keys.has_deps(queue),
            self.keys.held(queue),
        ];
        let mut args: Vec<Value> = vec![id.into(), Value::from(total as i64)];
        args.extend(callbacks.iter().map(|c| Value::from(c.as_str())));
        let _: i64 = self.run(&self.scripts.batch, keys, args).await?;
        Ok(())
    }

    /// The held jobs and batches of `queue` written `grace` ago or more (Redis' clock)
    /// and not marked finished: `(is a batch, id)`, oldest first, `limit` at most.
    pub(crate) async fn held_due(
        &self,
        queue: &str,
        grace: std::time::Duration,
        limit: usize,
    ) -> crate::Result<Vec<(bool, String)>> {
        let reply: Value = self
            .run(
                &self.scripts.held_due,
                vec![self.keys.held(queue)],
                vec![
                    Value::from(grace.as_millis() as i64),
                    Value::from(limit as i64),
                ],
            )
            .await?;
        Ok(list_of(reply)
            .into_iter()
            .map(|v| text_of(&v))
            .filter_map(|m| match m.split_once(' ') {
                Some(("b", id)) => Some((true, id.to_string())),
                Some(("j", id)) => Some((false, id.to_string())),
                _ => None,
            })
            .collect())
    }

    /// Marks held jobs (`is a batch` false) and batches of `queue` as finished writing.
    pub(crate) async fn unhold(&self, queue: &str, ids: &[(bool, &str)]) -> crate::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.keys.held(queue);
        let conn = self.node(&key).await?;
        let members: Vec<String> = ids
            .iter()
            .map(|(batch, id)| format!("{} {id}", if *batch { "b" } else { "j" }))
            .collect();
        let _: i64 = conn.zrem(key, members).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// A held job's state and what it waits for (`waits_for` lines); `None` when it has
    /// no status hash.
    pub(crate) async fn held_job(
        &self,
        queue: &str,
        id: &str,
    ) -> crate::Result<Option<(String, Vec<String>)>> {
        let key = self.keys.job(queue, id);
        let conn = self.node(&key).await?;
        let (state, waits): (Option<String>, Option<String>) = conn
            .hmget(key, vec!["state", "waits_for"])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(state.map(|state| {
            let waits = waits
                .map(|w| w.lines().map(str::to_string).collect())
                .unwrap_or_default();
            (state, waits)
        }))
    }

    /// Deletes held job `id` of `queue` (a dependency it was to wait for is unknown), and
    /// its place in the queue's `held` set, in one round trip.
    pub(crate) async fn drop_held(&self, queue: &str, id: &str) -> crate::Result<()> {
        let key = self.keys.job(queue, id);
        let conn = self.node(&key).await?;
        let p = conn.pipeline();
        let _: () = p
            .del(vec![key, self.keys.parents(queue, id)])
            .await
            .map_err(|e| self.fail(e))?;
        let _: () = p
            .zrem(self.keys.held(queue), format!("j {id}"))
            .await
            .map_err(|e| self.fail(e))?;
        let _: Vec<Value> = p.all().await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// A batch's hash, empty when unknown.
    pub(crate) async fn batch_info(
        &self,
        queue: &str,
        id: &str,
    ) -> crate::Result<HashMap<String, String>> {
        let key = self.keys.batch(queue, id);
        let conn = self.node(&key).await?;
        conn.hgetall(key).await.map_err(|e| self.fail(e))
    }
}
