//! Operator control of jobs: cancel, delete, retry now (`lua/job_control.lua`), purge
//! (`lua/purge.lua`), and the worker's side of a cancelled attempt (`lua/cancelled.lua`).

use fred::prelude::*;

use super::Store;
use super::entry::{list_of, text_of};
use super::keys::GROUP;
use crate::Priority;

/// What an operator asks of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Cancel,
    Delete,
    RetryNow,
}

impl Control {
    fn as_str(self) -> &'static str {
        match self {
            Control::Cancel => "cancel",
            Control::Delete => "delete",
            Control::RetryNow => "retry",
        }
    }
}

/// What `lua/job_control.lua` did: its outcome word, the job's state before (`queued`,
/// `running`, `scheduled`, ...; empty for an unknown job) and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Controlled {
    pub(crate) outcome: String,
    pub(crate) was: String,
    pub(crate) job_type: String,
}

/// Who asks, and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked<'a> {
    pub(crate) by: &'a str,
    pub(crate) why: &'a str,
}

/// Where one purge step looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PurgePlace {
    Stream(Priority),
    Scheduled,
}

/// A purge step's filters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PurgeFilter<'a> {
    pub(crate) job_type: Option<&'a str>,
    /// Scheduled jobs of this priority only.
    pub(crate) priority: Option<Priority>,
}

/// Entries looked at per purge step: a step holds the server while it runs.
const PURGE_STEP: i64 = 500;

impl Store {
    /// Acts on job `id` of `queue` (`lua/job_control.lua`).
    pub(crate) async fn control_job(
        &self,
        queue: &str,
        id: &str,
        action: Control,
        asked: Asked<'_>,
        retention_ms: u64,
    ) -> crate::Result<Controlled> {
        let record = self.keys.job(queue, id);
        let [high, normal, low] = self.keys.streams(queue);
        let (entry, done) = match (crate::names::parse_locator(id), self.keys.done_of(id)) {
            (Some((q, priority, entry)), Some(done)) if q == queue => {
                (format!("{}-{entry}", letter(priority)), done)
            }
            _ => (String::new(), record.clone()),
        };
        let keys = vec![
            record,
            high,
            normal,
            low,
            self.keys.scheduled(queue),
            done,
            self.keys.cancel(queue),
            self.keys.totals(queue),
            self.keys.dlq(queue),
        ];
        let args: Vec<Value> = vec![
            action.as_str().into(),
            id.into(),
            GROUP.into(),
            entry.into(),
            self.keys.wake(queue).into(),
            Value::from(retention_ms as i64),
            asked.by.into(),
            asked.why.into(),
            queue.into(),
            self.keys.unique_prefix(queue).into(),
        ];
        let reply: Value = self.run(&self.scripts.job_control, keys, args).await?;
        let mut parts = list_of(reply).into_iter().map(|v| text_of(&v));
        let outcome = parts
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| crate::Error::Decode("unexpected reply of job_control.lua".into()))?;
        Ok(Controlled {
            outcome,
            was: parts.next().unwrap_or_default(),
            job_type: parts.next().unwrap_or_default(),
        })
    }

    /// One step of a purge of `queue` (`lua/purge.lua`): returns how many jobs it deleted
    /// and where the next step starts (`None`: this place is done).
    pub(crate) async fn purge_step(
        &self,
        queue: &str,
        place: PurgePlace,
        filter: PurgeFilter<'_>,
        cursor: &str,
    ) -> crate::Result<(u64, Option<String>)> {
        let (key, kind) = match place {
            PurgePlace::Stream(p) => (self.keys.stream(queue, p), "stream"),
            PurgePlace::Scheduled => (self.keys.scheduled(queue), "scheduled"),
        };
        let args: Vec<Value> = vec![
            kind.into(),
            GROUP.into(),
            cursor.into(),
            Value::from(PURGE_STEP),
            filter.job_type.unwrap_or_default().into(),
            filter
                .priority
                .map(Priority::as_str)
                .unwrap_or_default()
                .into(),
            self.keys.job_prefix(queue).into(),
            self.keys.unique_prefix(queue).into(),
        ];
        let reply: Value = self
            .run(
                &self.scripts.purge,
                vec![key, self.keys.totals(queue)],
                args,
            )
            .await?;
        let mut parts = list_of(reply).into_iter();
        let purged = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
        let next = parts.next().map(|v| text_of(&v)).filter(|c| !c.is_empty());
        Ok((purged, next))
    }

    /// Settles an attempt stopped by a cancel request, if `consumer` still owns its entry
    /// (`lua/cancelled.lua`): acknowledged, deleted, its job marked cancelled. `asked` is
    /// used when no request is recorded (the handler cancelled itself). Returns false when
    /// the entry was not this consumer's any more (deleted, or its lease lost).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn settle_cancelled(
        &self,
        queue: &str,
        stream: &str,
        consumer: &str,
        entry_id: &str,
        job_id: &str,
        retention_ms: u64,
        asked: Asked<'_>,
        about: &[(&'static str, String)],
    ) -> crate::Result<bool> {
        let keys = vec![
            stream.to_string(),
            self.keys.job(queue, job_id),
            self.keys.cancel(queue),
            self.keys.totals(queue),
        ];
        let mut args: Vec<Value> = vec![
            GROUP.into(),
            consumer.into(),
            entry_id.into(),
            Value::from(retention_ms as i64),
            asked.by.into(),
            asked.why.into(),
        ];
        for (field, value) in about {
            args.push(Value::from_static_str(field));
            args.push(Value::from(value.as_str()));
        }
        let n: i64 = self.run(&self.scripts.cancelled, keys, args).await?;
        Ok(n == 1)
    }
}

/// The letter a job id and the cancel requests give a priority's stream.
fn letter(p: Priority) -> char {
    match p {
        Priority::High => 'h',
        Priority::Normal => 'n',
        Priority::Low => 'l',
    }
}
