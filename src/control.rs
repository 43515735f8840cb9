//! Operator control of jobs: cancel, delete, run now, purge (README, "Cancel, delete,
//! purge").
//!
//! Each action on one job is one script call (`lua/job_control.lua`), atomic with every
//! other move of the job (a fetch, a promotion, a janitor's takeover), so it is safe while
//! workers run. A waiting job (queued, scheduled, retrying) that is cancelled never runs; a
//! running one is stopped by its worker, which learns of it within about a second (the
//! queue's wake channel, and every lease renewal should that message be missed) and fires
//! the handler's [`JobContext::cancelled`](crate::JobContext::cancelled); a handler still
//! running after the worker's [`cancel_grace`](crate::WorkerBuilder::cancel_grace) is
//! dropped. Either way the job ends `cancelled`, neither retried nor dead-lettered.

use crate::names::validate_job_id;
use crate::observe::{ControlAction, ControlEvent};
use crate::redis::{Asked, Control, Controlled, PurgeFilter, PurgePlace};
use crate::{Client, Error, JobState, Priority, Result};

/// Longest `by` a cancel accepts, in bytes.
pub const MAX_CANCELLED_BY: usize = 128;
/// Longest reason a cancel accepts, in bytes.
pub const MAX_CANCEL_REASON: usize = 1024;

/// What [`Client::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job was waiting (`was`: queued, scheduled or retrying) and will never run; its
    /// status says `cancelled`.
    Cancelled {
        /// Where it was.
        was: JobState,
    },
    /// The job is running: the worker running it was asked to stop it, and it ends
    /// `cancelled` (its status says `cancelling` until then). A job whose worker died is
    /// cancelled by the janitor that finds it, once its lease has expired.
    Requested,
    /// The job had ended already (succeeded, dead or cancelled): nothing changed.
    AlreadyEnded(JobState),
}

/// What [`Client::retry_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryNowOutcome {
    /// The job (`was`: scheduled or retrying) is due now: a promoter moves it to its stream
    /// at once, with its attempt count unchanged.
    Due {
        /// Where it was.
        was: JobState,
    },
    /// The job is not waiting for a time (queued, running, or ended): nothing changed.
    NotScheduled(JobState),
}

/// Which waiting jobs [`Client::purge`] deletes: by default every job waiting in the
/// queue, ready (in a stream, not delivered yet) and scheduled (delayed or retrying).
/// Running jobs are never purged: cancel them one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    priority: Option<Priority>,
    job_type: Option<String>,
    ready: bool,
    scheduled: bool,
}

impl Default for Purge {
    fn default() -> Self {
        Purge::all()
    }
}

impl Purge {
    /// Every waiting job: ready and scheduled, of every priority and type.
    pub fn all() -> Self {
        Purge {
            priority: None,
            job_type: None,
            ready: true,
            scheduled: true,
        }
    }

    /// Only jobs of `priority`.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Only jobs of `job_type`.
    pub fn job_type(mut self, job_type: impl Into<String>) -> Self {
        self.job_type = Some(job_type.into());
        self
    }

    /// Only ready jobs (in the streams), not scheduled ones.
    pub fn ready_only(mut self) -> Self {
        self.scheduled = false;
        self
    }

    /// Only scheduled jobs (delayed or retrying), not ready ones.
    pub fn scheduled_only(mut self) -> Self {
        self.ready = false;
        self
    }
}

/// What [`Client::purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Purged {
    /// Ready jobs (from the streams).
    pub ready: u64,
    /// Scheduled jobs (delayed or retrying).
    pub scheduled: u64,
}

impl Purged {
    /// Ready and scheduled together.
    pub fn total(&self) -> u64 {
        self.ready + self.scheduled
    }
}

fn check_asked(by: &str, reason: &str) -> Result<()> {
    if by.len() > MAX_CANCELLED_BY || by.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "`by` must be at most {MAX_CANCELLED_BY} bytes without control characters"
        )));
    }
    if reason.len() > MAX_CANCEL_REASON {
        return Err(Error::InvalidInput(format!(
            "the reason must be at most {MAX_CANCEL_REASON} bytes"
        )));
    }
    Ok(())
}

fn state_of(name: &str) -> JobState {
    name.parse().unwrap_or(JobState::Queued)
}

impl Client {
    /// Cancels job `id`: a waiting job (queued, scheduled, retrying) never runs, a running
    /// one is stopped by its worker (see [`CancelOutcome`]). Its status says `cancelled`,
    /// with `cancelled_by` = `by` and `reason` = `reason`, for the client's status
    /// retention. A unique job's key is freed, so the same work can be enqueued again.
    ///
    /// Errors: [`Error::UnknownJob`] for an id no queue knows, [`Error::InvalidInput`] for a
    /// `by` over 128 bytes or with control characters, or a reason over 1024 bytes.
    ///
    /// ```no_run
    /// # async fn demo(client: stevedore::Client, id: &str) -> stevedore::Result<()> {
    /// use stevedore::control::CancelOutcome;
    /// match client.cancel(id, "ops@example.com", "customer unsubscribed").await? {
    ///     CancelOutcome::Cancelled { was } => println!("cancelled while {was}"),
    ///     CancelOutcome::Requested => println!("running: its worker stops it"),
    ///     CancelOutcome::AlreadyEnded(state) => println!("too late: {state}"),
    ///     _ => {}
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: &str, by: &str, reason: &str) -> Result<CancelOutcome> {
        check_asked(by, reason)?;
        let (queue, done) = self.control(id, Control::Cancel, by, reason).await?;
        let event = |action| ControlEvent {
            action,
            queue: &queue,
            job_id: Some(id),
            job_type: Some(done.job_type.as_str()).filter(|t| !t.is_empty()),
            jobs: 1,
        };
        Ok(match done.outcome.as_str() {
            "cancelled" => {
                self.observers()
                    .each(|o| o.controlled(&event(ControlAction::Cancelled)));
                CancelOutcome::Cancelled {
                    was: state_of(&done.was),
                }
            }
            "cancelling" => {
                self.observers()
                    .each(|o| o.controlled(&event(ControlAction::CancelRequested)));
                CancelOutcome::Requested
            }
            _ => CancelOutcome::AlreadyEnded(state_of(&done.was)),
        })
    }

    /// Deletes job `id` in whatever state it is: its entry, its place in the schedule, its
    /// status, its success record or its dead letter. A running job's entry goes at once
    /// (whatever its worker does next changes nothing) and its worker is asked to stop
    /// it. Returns the state it was in. A unique job's key is freed.
    ///
    /// Errors: [`Error::UnknownJob`] for an id no queue knows.
    pub async fn delete(&self, id: &str) -> Result<JobState> {
        let (queue, done) = self.control(id, Control::Delete, "", "deleted").await?;
        if done.outcome == "deleted" {
            self.observers().each(|o| {
                o.controlled(&ControlEvent {
                    action: ControlAction::Deleted,
                    queue: &queue,
                    job_id: Some(id),
                    job_type: Some(done.job_type.as_str()).filter(|t| !t.is_empty()),
                    jobs: 1,
                })
            });
        }
        Ok(state_of(&done.was))
    }

    /// Makes a scheduled or retrying job due now: it runs as soon as a worker is free, its
    /// attempt count unchanged (see [`RetryNowOutcome`]).
    ///
    /// Errors: [`Error::UnknownJob`] for an id no queue knows.
    pub async fn retry_now(&self, id: &str) -> Result<RetryNowOutcome> {
        let (queue, done) = self.control(id, Control::RetryNow, "", "").await?;
        Ok(if done.outcome == "retried" {
            self.observers().each(|o| {
                o.controlled(&ControlEvent {
                    action: ControlAction::RetriedNow,
                    queue: &queue,
                    job_id: Some(id),
                    job_type: Some(done.job_type.as_str()).filter(|t| !t.is_empty()),
                    jobs: 1,
                })
            });
            RetryNowOutcome::Due {
                was: state_of(&done.was),
            }
        } else {
            RetryNowOutcome::NotScheduled(state_of(&done.was))
        })
    }

    /// Deletes the waiting jobs of `queue` that `what` selects (every partition of a
    /// partitioned queue), in steps of at most 500 entries, each atomic: safe while
    /// workers and producers run (a job fetched or enqueued between two steps is left
    /// alone). Running jobs are never touched. Purged jobs are gone as if deleted: no
    /// status, unique keys freed.
    ///
    /// Errors: [`Error::UnknownQueue`] for a queue never used; [`Error::InvalidName`] for a
    /// job type that is no valid name.
    ///
    /// ```no_run
    /// # async fn demo(client: stevedore::Client) -> stevedore::Result<()> {
    /// use stevedore::control::Purge;
    /// use stevedore::Priority;
    /// let purged = client.purge("emails", Purge::all().priority(Priority::Low)).await?;
    /// println!("{} low jobs purged", purged.total());
    /// # Ok(()) }
    /// ```
    pub async fn purge(&self, queue: &str, what: Purge) -> Result<Purged> {
        crate::names::validate_queue_ref(queue)?;
        if let Some(t) = &what.job_type {
            crate::names::validate_name("job type", t)?;
        }
        let base = crate::names::queue_of(queue);
        let known = self.store().known_queues().await?;
        if !known
            .iter()
            .any(|q| q == queue || crate::names::queue_of(q) == base)
        {
            return Err(Error::UnknownQueue(queue.to_string()));
        }
        let names = if crate::names::is_partition(queue) {
            vec![queue.to_string()]
        } else {
            self.layouts_of(&[queue])
                .await?
                .remove(queue)
                .map_or_else(|| vec![queue.to_string()], |l| l.names.to_vec())
        };
        let filter = PurgeFilter {
            job_type: what.job_type.as_deref(),
            priority: what.priority,
        };
        let mut places = Vec::new();
        if what.ready {
            for p in Priority::ALL {
                if what.priority.is_none_or(|only| only == p) {
                    places.push(PurgePlace::Stream(p));
                }
            }
        }
        if what.scheduled {
            places.push(PurgePlace::Scheduled);
        }
        let mut purged = Purged::default();
        for name in &names {
            let mut here = 0;
            for &place in &places {
                let mut cursor = String::new();
                loop {
                    let (n, next) = self
                        .store()
                        .purge_step(name, place, filter, &cursor)
                        .await?;
                    here += n;
                    match place {
                        PurgePlace::Scheduled => purged.scheduled += n,
                        PurgePlace::Stream(_) => purged.ready += n,
                    }
                    match next {
                        Some(c) => cursor = c,
                        None => break,
                    }
                }
            }
            if here > 0 {
                self.observers().each(|o| {
                    o.controlled(&ControlEvent {
                        action: ControlAction::Purged,
                        queue: name,
                        job_id: None,
                        job_type: what.job_type.as_deref(),
                        jobs: here,
                    })
                });
            }
        }
        Ok(purged)
    }

    /// Finds job `id`'s queue and acts on it; [`Error::UnknownJob`] when none knows it.
    async fn control(
        &self,
        id: &str,
        action: Control,
        by: &str,
        why: &str,
    ) -> Result<(String, Controlled)> {
        if validate_job_id(id).is_err() {
            return Err(Error::UnknownJob(crate::error::one_line(id, 128)));
        }
        let queue = match crate::names::parse_locator(id) {
            Some((queue, _, _)) => queue.to_string(),
            None => {
                let queues = self.store().known_queues().await?;
                match self.store().find_job_status(&queues, id).await? {
                    Some((queue, _)) => queue,
                    None => return Err(Error::UnknownJob(id.to_string())),
                }
            }
        };
        let asked = Asked { by, why };
        let done = self
            .store()
            .control_job(&queue, id, action, asked, self.status_retention_ms())
            .await?;
        if done.outcome == "none" {
            return Err(Error::UnknownJob(id.to_string()));
        }
        Ok((queue, done))
    }
}
