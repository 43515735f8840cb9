//! Jobs that wait for others: dependencies, chains and batches (README, "Chains,
//! dependencies, batches").
//!
//! A job that waits is written `blocked`: a status hash holding what its entry will be,
//! how many jobs it waits for, and no entry, so no worker sees it. Each job waited for has
//! a set of its dependents. When such a job ends (succeeds, dies, is cancelled or deleted)
//! the script that ends it, in the same step, puts its outcome in its queue's outbox and
//! wakes the queue's workers; one of them tells each dependent (`lua/resolve.lua`, one call
//! each, idempotent), and the call that hears from the last job it waited for releases the
//! dependent to its stream. Nothing polls a job, and a worker killed between two steps
//! leaves the outbox entry for the next worker to finish (every janitor round looks).
//!
//! A batch is a hash counting its jobs' ends; its callbacks wait for the batch as jobs wait
//! for jobs, and the batch "ends" once, when its last job does.

use std::collections::HashMap;

use crate::job::PreparedJob;
use crate::names::{JobId, validate_job_id};
use crate::observe::{Observers, ResolvedEvent};
use crate::redis::{Depended, Heard, HeldJob, TargetKind};
use crate::{Client, Error, IntoJob, Result};

mod settle;
pub(crate) use settle::{drain_outbox, repair_flows};

/// Tells observers what a resolve call did, when it ended a wait.
pub(super) fn report(observers: &Observers, queue: &str, id: &str, word: &str) {
    if matches!(
        word,
        "released" | "scheduled" | "cancelled" | "dead" | "done"
    ) {
        let e = ResolvedEvent {
            queue,
            id,
            outcome: word,
        };
        observers.each(|o| o.resolved(&e));
    }
}

/// What a job does when a job it depends on does not succeed (dies, is cancelled or
/// deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnParentFailure {
    /// It is cancelled too (status `cancelled`, reason naming the job), and so are the jobs
    /// that wait for it under this policy.
    #[default]
    Cancel,
    /// It runs anyway once every job it waits for has ended; `JobContext::parents` says how
    /// each ended.
    Run,
    /// It is dead-lettered (reason `parent_failed`), to be looked at and replayed by hand.
    DeadLetter,
}

impl OnParentFailure {
    fn as_str(self) -> &'static str {
        match self {
            OnParentFailure::Cancel => "cancel",
            OnParentFailure::Run => "run",
            OnParentFailure::DeadLetter => "dead",
        }
    }
}

/// A job another waits for: its id and what happens if it does not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    id: String,
    on_failure: OnParentFailure,
}

impl Dependency {
    /// A dependency on job `id` (enqueued earlier; see [`Client::enqueue_after`]); if it
    /// does not succeed, the dependent is cancelled.
    pub fn on(id: impl AsRef<str>) -> Self {
        Dependency {
            id: id.as_ref().to_string(),
            on_failure: OnParentFailure::Cancel,
        }
    }

    /// What the dependent does if this job does not succeed.
    pub fn on_failure(mut self, policy: OnParentFailure) -> Self {
        self.on_failure = policy;
        self
    }
}

/// Jobs that run one after another, each once the one before it ended:
/// `Chain::new(a).then(b).then(c)`, enqueued with [`Client::enqueue_chain`].
#[must_use = "a chain does nothing until it is enqueued"]
pub struct Chain {
    jobs: Vec<(Result<PreparedJob>, OnParentFailure)>,
}

impl Chain {
    /// A chain starting with `first`.
    pub fn new(first: impl IntoJob) -> Self {
        Chain {
            jobs: vec![(first.prepare(), OnParentFailure::Cancel)],
        }
    }

    /// `next` runs once the job before it succeeded; if that one does not, `next` (and the
    /// rest of the chain) is cancelled.
    pub fn then(self, next: impl IntoJob) -> Self {
        self.then_with(next, OnParentFailure::Cancel)
    }

    /// `next` runs once the job before it ended, and if it did not succeed, does what
    /// `policy` says.
    pub fn then_with(mut self, next: impl IntoJob, policy: OnParentFailure) -> Self {
        self.jobs.push((next.prepare(), policy));
        self
    }
}

/// Jobs enqueued as one batch, with callbacks run once when the last of them ends:
/// enqueued with [`Client::enqueue_batch`].
#[must_use = "a batch does nothing until it is enqueued"]
pub struct Batch {
    jobs: Vec<Result<PreparedJob>>,
    on_complete: Option<Result<PreparedJob>>,
    on_success: Option<Result<PreparedJob>>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch {
            jobs: Vec::new(),
            on_complete: None,
            on_success: None,
        }
    }

    /// Adds a job.
    pub fn job(mut self, job: impl IntoJob) -> Self {
        self.jobs.push(job.prepare());
        self
    }

    /// A job enqueued once, when every job of the batch has ended, however they ended.
    /// Its handler reads the batch's outcome in `JobContext::parents` (one entry, the
    /// batch's id: state `succeeded`, or `failed` with how many failed).
    pub fn on_complete(mut self, job: impl IntoJob) -> Self {
        self.on_complete = Some(job.prepare());
        self
    }

    /// A job enqueued once, when every job of the batch has succeeded; cancelled if any
    /// did not.
    pub fn on_success(mut self, job: impl IntoJob) -> Self {
        self.on_success = Some(job.prepare());
        self
    }
}

/// A batch Redis accepted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BatchEnqueued {
    /// The batch's id (`<queue>:b-<uuid>`), for [`Client::batch`].
    pub id: String,
    /// Its jobs' ids, in the order they were added.
    pub jobs: Vec<JobId>,
    /// The callbacks' ids: on complete, then on success.
    pub on_complete: Option<JobId>,
    /// See [`on_complete`](Self::on_complete).
    pub on_success: Option<JobId>,
}

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchState {
    /// Its jobs are being written.
    Open,
    /// Its jobs are written and some have not ended.
    Running,
    /// Every job ended; its callbacks were released (or cancelled).
    Done,
}

/// A batch's counts ([`Client::batch`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BatchStatus {
    /// The batch's id.
    pub id: String,
    /// Where it is.
    pub state: BatchState,
    /// Its jobs.
    pub total: u64,
    /// Jobs not ended yet.
    pub pending: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that died, or were cancelled or deleted.
    pub failed: u64,
}

/// One job of a flow being written.
struct Node {
    job: PreparedJob,
    id: String,
    needs: usize,
    dependents: Vec<String>,
    /// What it waits for, as [`waits_for`] writes it.
    parents: Vec<String>,
}

/// A dependent's record in a dependents set: `<queue> <id> <policy>`.
pub(super) fn dependent(queue: &str, id: &str, policy: &str) -> String {
    format!("{queue} {id} {policy}")
}

/// A held job's record of one thing it waits for: `<kind> <queue> <id> <policy>`, kind
/// `job` or `batch` (what a janitor reads to finish a flow whose client stopped).
fn waits_for(kind: TargetKind, queue: &str, id: &str, policy: &str) -> String {
    let kind = match kind {
        TargetKind::Job => "job",
        TargetKind::Batch => "batch",
    };
    format!("{kind} {queue} {id} {policy}")
}

/// How long after a flow's jobs were written a janitor finishes writing it (or undoes
/// it) when its client has not: [`WorkerBuilder::flow_repair_after`]'s default.
///
/// [`WorkerBuilder::flow_repair_after`]: crate::WorkerBuilder::flow_repair_after
pub const FLOW_REPAIR_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn check(job: Result<PreparedJob>) -> Result<PreparedJob> {
    let job = job?;
    if job.unique.is_some() {
        return Err(Error::InvalidInput(
            "a job that waits for others, or is waited for, cannot be unique".into(),
        ));
    }
    Ok(job)
}

impl Client {
    /// Enqueues `job` to run once every job of `deps` has ended (all succeeded, or
    /// otherwise as each dependency's [`OnParentFailure`] says). Until then its status is
    /// `blocked` and no worker sees it. Its handler reads what they left in
    /// `JobContext::parents`. A job that ended already counts as it ended.
    ///
    /// Errors: [`Error::UnknownJob`] for a dependency no queue knows (never enqueued, or
    /// ended longer ago than its status retention; nothing is enqueued then);
    /// [`Error::InvalidInput`] for no dependencies, or a unique job.
    ///
    /// ```no_run
    /// # use stevedore::{Client, RawJob};
    /// # use stevedore::flow::{Dependency, OnParentFailure};
    /// # async fn demo(client: Client) -> stevedore::Result<()> {
    /// let a = client.enqueue(RawJob::new("resize", "media", &"a.png")?).await?;
    /// let b = client.enqueue(RawJob::new("resize", "media", &"b.png")?).await?;
    /// let zip = client
    ///     .enqueue_after(
    ///         RawJob::new("zip", "media", &["a.png", "b.png"])?,
    ///         [Dependency::on(&a), Dependency::on(&b).on_failure(OnParentFailure::Run)],
    ///     )
    ///     .await?;
    /// # let _ = zip;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_after(
        &self,
        job: impl IntoJob,
        deps: impl IntoIterator<Item = Dependency>,
    ) -> Result<JobId> {
        let deps: Vec<Dependency> = deps.into_iter().collect();
        if deps.is_empty() {
            return Err(Error::InvalidInput(
                "enqueue_after needs at least one dependency (or use enqueue)".into(),
            ));
        }
        // Where each job waited for lives; an unknown one is refused before anything is
        // written.
        let mut parents = Vec::with_capacity(deps.len());
        for d in &deps {
            let queue = self.queue_of_job(&d.id).await?;
            if self.status_in(&queue, &d.id).await?.is_none() {
                return Err(Error::UnknownJob(d.id.clone()));
            }
            parents.push((queue, d));
        }
        let mut nodes = vec![Node {
            job: check(job.prepare())?,
            id: JobId::generate().as_str().to_string(),
            needs: deps.len(),
            dependents: Vec::new(),
            parents: parents
                .iter()
                .map(|(q, d)| waits_for(TargetKind::Job, q, &d.id, d.on_failure.as_str()))
                .collect(),
        }];
        self.place(&mut nodes).await?;
        self.hold(&nodes).await?;
        let (queue, id) = (nodes[0].job.queue.clone(), nodes[0].id.clone());
        for (parent_queue, d) in parents {
            let me = dependent(&queue, &id, d.on_failure.as_str());
            match self.store().depend(&parent_queue, &d.id, &me).await? {
                Depended::Registered => {}
                Depended::Ended(outcome, result) => {
                    let heard = Heard {
                        job_id: &d.id,
                        outcome: &outcome,
                        result: &result,
                        policy: d.on_failure.as_str(),
                    };
                    let word = self
                        .store()
                        .resolve(
                            TargetKind::Job,
                            &queue,
                            &id,
                            Some(heard),
                            self.status_retention_ms(),
                        )
                        .await?;
                    report(self.observers(), &queue, &id, &word);
                }
                Depended::Unknown => {
                    // Expired since it was looked up. Nothing of it may run: the held job
                    // goes (its other registrations find it gone when their jobs end).
                    self.store().drop_held(&queue, &id).await?;
                    return Err(Error::UnknownJob(d.id.clone()));
                }
            }
        }
        self.store().unhold(&queue, &[(false, &id)]).await?;
        Ok(JobId::from_string(id))
    }

    /// Enqueues a chain: its first job now (or at its delay), each next one once the one
    /// before it ended (see [`Chain`]). Returns their ids in order. Nothing runs until the
    /// whole chain is written.
    ///
    /// Errors: those of [`enqueue`](Self::enqueue) for each job; [`Error::InvalidInput`]
    /// for a unique job.
    pub async fn enqueue_chain(&self, chain: Chain) -> Result<Vec<JobId>> {
        let mut nodes = Vec::with_capacity(chain.jobs.len());
        let mut policies = Vec::with_capacity(chain.jobs.len());
        for (i, (job, policy)) in chain.jobs.into_iter().enumerate() {
            nodes.push(Node {
                job: check(job)?,
                id: JobId::generate().as_str().to_string(),
                needs: usize::from(i > 0),
                dependents: Vec::new(),
                parents: Vec::new(),
            });
            policies.push(policy);
        }
        self.place(&mut nodes).await?;
        for i in 1..nodes.len() {
            let me = dependent(&nodes[i].job.queue, &nodes[i].id, policies[i].as_str());
            let before = waits_for(
                TargetKind::Job,
                &nodes[i - 1].job.queue,
                &nodes[i - 1].id,
                policies[i].as_str(),
            );
            nodes[i - 1].dependents.push(me);
            nodes[i].parents.push(before);
        }
        // Written last job first: a job written means every job after it was, so a client
        // stopping half-way leaves a tail whose head a janitor finds without its parent.
        nodes.reverse();
        self.hold(&nodes).await?;
        nodes.reverse();
        if let Some(first) = nodes.first() {
            self.release(&first.job.queue, &first.id).await?;
        }
        self.written(&nodes, None).await?;
        Ok(nodes
            .into_iter()
            .map(|n| JobId::from_string(n.id))
            .collect())
    }

    /// Enqueues a batch: its jobs at once (each at its own delay), its callbacks once,
    /// when the last job ends (see [`Batch`]). The batch lives in the queue of its first
    /// callback (else of its first job); [`batch`](Self::batch) reads its counts.
    ///
    /// Errors: those of [`enqueue`](Self::enqueue) for each job; [`Error::InvalidInput`]
    /// for a batch without jobs, or a unique job.
    ///
    /// ```no_run
    /// # use stevedore::{Client, RawJob};
    /// # use stevedore::flow::Batch;
    /// # async fn demo(client: Client) -> stevedore::Result<()> {
    /// let mut batch = Batch::new().on_complete(RawJob::new("import.report", "imports", &())?);
    /// for file in ["a.csv", "b.csv"] {
    ///     batch = batch.job(RawJob::new("import.file", "imports", &file)?);
    /// }
    /// let done = client.enqueue_batch(batch).await?;
    /// let status = client.batch(&done.id).await?;
    /// # let _ = status;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_batch(&self, batch: Batch) -> Result<BatchEnqueued> {
        if batch.jobs.is_empty() {
            return Err(Error::InvalidInput("a batch needs at least one job".into()));
        }
        let mut members = Vec::with_capacity(batch.jobs.len());
        for job in batch.jobs {
            members.push(Node {
                job: check(job)?,
                id: JobId::generate().as_str().to_string(),
                needs: 0,
                dependents: Vec::new(),
                parents: Vec::new(),
            });
        }
        // The callbacks wait for the batch, as jobs wait for jobs.
        let mut callbacks = Vec::new();
        let mut policies = Vec::new();
        let mut slots = [None, None];
        for (slot, job, policy) in [
            (0, batch.on_complete, OnParentFailure::Run),
            (1, batch.on_success, OnParentFailure::Cancel),
        ] {
            if let Some(job) = job {
                slots[slot] = Some(callbacks.len());
                callbacks.push(Node {
                    job: check(job)?,
                    id: JobId::generate().as_str().to_string(),
                    needs: 1,
                    dependents: Vec::new(),
                    parents: Vec::new(),
                });
                policies.push(policy);
            }
        }
        self.place(&mut members).await?;
        self.place(&mut callbacks).await?;
        let home = callbacks
            .first()
            .map_or_else(|| members[0].job.queue.clone(), |c| c.job.queue.clone());
        let batch_id = format!("{home}:b-{}", JobId::generate().as_str());
        let waiting: Vec<String> = callbacks
            .iter()
            .zip(&policies)
            .map(|(c, p)| dependent(&c.job.queue, &c.id, p.as_str()))
            .collect();
        for (c, p) in callbacks.iter_mut().zip(&policies) {
            c.parents
                .push(waits_for(TargetKind::Batch, &home, &batch_id, p.as_str()));
        }
        // Callbacks, jobs, then the batch: a batch written means all its jobs were, and a
        // janitor undoes the jobs and callbacks of a batch its client never wrote.
        self.hold(&callbacks).await?;
        for m in &mut members {
            m.dependents.push(dependent(&home, &batch_id, "batch"));
        }
        self.hold(&members).await?;
        self.store()
            .create_batch(&home, &batch_id, members.len(), &waiting)
            .await?;
        for m in &members {
            self.release(&m.job.queue, &m.id).await?;
        }
        // Sealed last: a batch whose jobs all ended before this step ends here.
        let word = self
            .store()
            .resolve(
                TargetKind::Batch,
                &home,
                &batch_id,
                None,
                self.status_retention_ms(),
            )
            .await?;
        report(self.observers(), &home, &batch_id, &word);
        self.written(&members, None).await?;
        self.written(&callbacks, Some((&home, &batch_id))).await?;
        let id_of = |slot: Option<usize>| slot.map(|i| JobId::from_string(callbacks[i].id.clone()));
        Ok(BatchEnqueued {
            id: batch_id,
            on_complete: id_of(slots[0]),
            on_success: id_of(slots[1]),
            jobs: members
                .into_iter()
                .map(|m| JobId::from_string(m.id))
                .collect(),
        })
    }

    /// A batch's counts, or `None` for an unknown (or expired) batch id.
    pub async fn batch(&self, id: &str) -> Result<Option<BatchStatus>> {
        let Some((queue, rest)) = id.split_once(':') else {
            return Ok(None);
        };
        if crate::names::validate_queue_ref(queue).is_err() || !rest.starts_with("b-") {
            return Ok(None);
        }
        let h = self.store().batch_info(queue, id).await?;
        if h.is_empty() {
            return Ok(None);
        }
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (total, succeeded, failed) = (num("total"), num("succeeded"), num("failed"));
        let state = match (h.get("state").map(String::as_str), h.get("sealed")) {
            (Some("done"), _) => BatchState::Done,
            (_, Some(_)) => BatchState::Running,
            _ => BatchState::Open,
        };
        Ok(Some(BatchStatus {
            id: id.to_string(),
            state,
            total,
            pending: total.saturating_sub(succeeded + failed),
            succeeded,
            failed,
        }))
    }

    /// The queue that holds job `id`: named by a locator, else found by asking every
    /// known queue; [`Error::UnknownJob`] when none knows it.
    async fn queue_of_job(&self, id: &str) -> Result<String> {
        if validate_job_id(id).is_err() {
            return Err(Error::UnknownJob(crate::error::one_line(id, 128)));
        }
        if let Some((queue, _, _)) = crate::names::parse_locator(id) {
            return Ok(queue.to_string());
        }
        let queues = self.store().known_queues().await?;
        match self.store().find_job_status(&queues, id).await? {
            Some((queue, _)) => Ok(queue),
            None => Err(Error::UnknownJob(id.to_string())),
        }
    }

    /// Puts each job of a partitioned queue in its partition.
    async fn place(&self, nodes: &mut [Node]) -> Result<()> {
        let mut queues: Vec<String> = nodes.iter().map(|n| n.job.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        let names: Vec<&str> = queues.iter().map(String::as_str).collect();
        let layouts = self.layouts_of(&names).await?;
        for n in nodes.iter_mut() {
            if let Some(layout) = layouts.get(&n.job.queue)
                && layout.names.len() > 1
            {
                n.job.queue = layout
                    .place(n.job.partition_key.as_deref(), &self.layouts().turn)
                    .to_string();
            }
        }
        Ok(())
    }

    /// Writes `nodes` held (`blocked`) in their order: one script call per run of jobs of
    /// one queue (and hundred jobs).
    async fn hold(&self, nodes: &[Node]) -> Result<()> {
        let mut runs: Vec<(&str, Vec<HeldJob<'_>>)> = Vec::new();
        let mut envelopes = Vec::with_capacity(nodes.len());
        for n in nodes {
            let mut env = n.job.envelope.clone();
            env.id = n.id.clone();
            env.recorded = true;
            envelopes.push(env);
        }
        for (n, env) in nodes.iter().zip(&envelopes) {
            let held = HeldJob {
                id: &n.id,
                needs: n.needs,
                when: n.job.when(),
                priority: n.job.priority,
                envelope: env,
                dependents: n.dependents.clone(),
                parents: n.parents.clone(),
            };
            match runs.last_mut() {
                Some((q, jobs)) if *q == n.job.queue => jobs.push(held),
                _ => runs.push((&n.job.queue, vec![held])),
            }
        }
        for (queue, jobs) in runs {
            self.store().hold_jobs(queue, &jobs).await?;
        }
        Ok(())
    }

    /// Marks a flow's jobs (and its batch, `(queue, id)`) as written to the end: no janitor
    /// needs to finish them. One call per queue.
    async fn written(&self, nodes: &[Node], batch: Option<(&str, &str)>) -> Result<()> {
        let mut by_queue: HashMap<&str, Vec<(bool, &str)>> = HashMap::new();
        for n in nodes {
            by_queue
                .entry(&n.job.queue)
                .or_default()
                .push((false, &n.id));
        }
        if let Some((queue, id)) = batch {
            by_queue.entry(queue).or_default().push((true, id));
        }
        for (queue, ids) in by_queue {
            self.store().unhold(queue, &ids).await?;
        }
        Ok(())
    }

    /// Releases held job `id` of `queue` if it waits for nothing (more).
    async fn release(&self, queue: &str, id: &str) -> Result<()> {
        let word = self
            .store()
            .resolve(TargetKind::Job, queue, id, None, self.status_retention_ms())
            .await?;
        report(self.observers(), queue, id, &word);
        Ok(())
    }
}
