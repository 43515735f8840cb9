//! Dead letters: listing, replaying and purging the jobs a queue gave up on.
//!
//! A dead letter keeps everything needed to run its job again, so the usual way out of an
//! outage or a bug is to fix it and replay; purging is for what will never succeed. Each
//! queue's dead letters are one stream whose entry ids are the times the jobs died, so
//! newest-first listing, paging and time filters are plain id ranges, while job type and
//! reason filters are applied here, chunk by chunk. A replay is one Lua script per entry
//! that re-enqueues the job and deletes its dead letter together, so replays racing each
//! other (or a crash midway) re-enqueue every job exactly once.

mod entry;

use std::fmt;
use std::time::{Duration, SystemTime};

pub use entry::{DeadJob, DeadReason};

use crate::names::validate_queue_ref;
use crate::redis::DeadEntry;
use crate::{Client, Error, JobId, Result};
use entry::{StreamId, ms_of};

/// Entries a page holds when the query does not say.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// Most entries one page holds.
pub(crate) const MAX_LIMIT: usize = 1000;
/// Entries read per round trip while filtering, replaying or purging. Dead letters carry
/// their payloads, so chunks stay small.
const CHUNK: u64 = 100;

impl Client {
    /// The dead letters of `queue`: count, list, replay and purge them. For a
    /// partitioned queue, over all its partitions; a partition's name (`emails~3`, a
    /// [`DeadJob::queue`]) gives that partition's alone.
    ///
    /// Fails with [`Error::InvalidName`] when `queue` is not a valid queue name.
    pub fn dead_letters(&self, queue: &str) -> Result<DeadLetters> {
        validate_queue_ref(queue)?;
        Ok(DeadLetters {
            client: self.clone(),
            queue: queue.to_string(),
        })
    }
}

/// The dead letters of one queue. Cheap to clone; made by [`Client::dead_letters`].
#[derive(Clone)]
pub struct DeadLetters {
    client: Client,
    queue: String,
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("queue", &self.queue)
            .field("stream", &self.client.keys().dlq(&self.queue))
            .finish_non_exhaustive()
    }
}

/// Which dead letters an operation applies to. Every condition set must hold; the default
/// matches them all.
#[derive(Default, Clone, Debug)]
pub struct DeadLetterFilter {
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only jobs that died for this reason.
    pub reason: Option<DeadReason>,
    /// Only jobs dead-lettered at or after this time (millisecond precision, Redis' clock:
    /// the time in the dead letter's entry id).
    pub since: Option<SystemTime>,
    /// Only jobs dead-lettered before this time (millisecond precision, Redis' clock).
    pub until: Option<SystemTime>,
}

impl DeadLetterFilter {
    /// True when no condition is set: the filter matches every dead letter.
    pub fn is_empty(&self) -> bool {
        self.job_type.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// What a [`DeadLetters::list`] call asks for: a filter, a page size and a cursor.
#[derive(Default, Clone, Debug)]
pub struct DeadLetterQuery {
    /// Which dead letters to list.
    pub filter: DeadLetterFilter,
    /// Most entries on the page: 0 means 50; more than 1000 means 1000.
    pub limit: usize,
    /// Page cursor: list only entries older than this entry id (a page's
    /// [`next`](DeadLetterPage::next)). `None` starts at the newest.
    pub before: Option<String>,
}

/// Dead letters, newest first, and where the next page starts.
#[derive(Clone, Debug)]
pub struct DeadLetterPage {
    /// The matching dead letters, newest first.
    pub jobs: Vec<DeadJob>,
    /// The cursor for the next (older) page, to pass as [`DeadLetterQuery::before`];
    /// `None` when no older entry matches.
    pub next: Option<String>,
}

impl DeadLetterFilter {
    /// The entry ids the time bounds allow, both ends included; `None` when none.
    fn id_range(&self) -> Option<(StreamId, StreamId)> {
        let start = self
            .since
            .map_or(StreamId::MIN, |t| StreamId::at_ms(ms_of(t)));
        let end = match self.until {
            Some(t) => StreamId::at_ms(ms_of(t)).prev()?,
            None => StreamId::MAX,
        };
        (start <= end).then_some((start, end))
    }

    /// True when only the entry ids (not the fields) decide.
    fn by_time_only(&self) -> bool {
        self.job_type.is_none() && self.reason.is_none()
    }

    fn matches(&self, job: &DeadJob) -> bool {
        self.job_type
            .as_deref()
            .is_none_or(|t| job.job_type.as_deref() == Some(t))
            && self.reason.as_ref().is_none_or(|r| *r == job.reason)
    }
}

/// What [`DeadLetters::apply`] does to each matching entry.
#[derive(Clone, Copy)]
enum Action {
    Replay,
    Purge,
}

impl DeadLetters {
    /// The queue these dead letters belong to (a queue, or one partition of one).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The dead-letter streams behind these: the queue's own, or one per partition of a
    /// partitioned queue (its layout read as producers read it, at most every 2 s).
    async fn parts(&self) -> Result<Vec<DeadLetters>> {
        if crate::names::is_partition(&self.queue) {
            return Ok(vec![self.clone()]);
        }
        let layouts = self.client.layouts_of(&[self.queue.as_str()]).await?;
        let names = layouts
            .get(&self.queue)
            .map(|l| l.names.to_vec())
            .unwrap_or_else(|| vec![self.queue.clone()]);
        Ok(names
            .into_iter()
            .map(|queue| DeadLetters {
                client: self.client.clone(),
                queue,
            })
            .collect())
    }

    /// How many dead letters the queue holds (over its partitions).
    pub async fn count(&self) -> Result<u64> {
        let mut n = 0;
        for part in self.parts().await? {
            n += part.count_one().await?;
        }
        Ok(n)
    }

    /// One page of dead letters, newest first, filtered; a partitioned queue's merged by
    /// entry id (the time each job died). Each job's [`queue`](DeadJob::queue) names the
    /// partition it is in.
    ///
    /// Scans as far back as it takes to fill the page, so matching entries separated by
    /// many others are still found. Fails with [`Error::InvalidConfig`] when
    /// [`before`](DeadLetterQuery::before) is not an entry id.
    pub async fn list(&self, query: &DeadLetterQuery) -> Result<DeadLetterPage> {
        self.list_scanning(query, CHUNK).await
    }

    /// [`list`](Self::list), reading at most `scan` entries per round trip when it filters
    /// by more than time (the admin API keeps reads small when payloads may be large).
    pub(crate) async fn list_scanning(
        &self,
        query: &DeadLetterQuery,
        scan: u64,
    ) -> Result<DeadLetterPage> {
        let parts = self.parts().await?;
        if let [one] = parts.as_slice() {
            return one.list_scanning_one(query, scan).await;
        }
        let pages =
            futures::future::try_join_all(parts.iter().map(|p| p.list_scanning_one(query, scan)))
                .await?;
        Ok(merge_pages(pages, query.limit))
    }

    /// One dead letter by entry id; `None` when there is none (or `entry_id` is not an
    /// entry id). On a partitioned queue, fails with [`Error::InvalidInput`] when two
    /// partitions hold that id: ask the partition ([`DeadJob::queue`]) instead.
    pub async fn get(&self, entry_id: &str) -> Result<Option<DeadJob>> {
        Ok(self.find(entry_id).await?.map(|(_, job)| job))
    }

    /// The partition holding dead letter `entry_id`, and the dead letter.
    async fn find(&self, entry_id: &str) -> Result<Option<(DeadLetters, DeadJob)>> {
        let parts = self.parts().await?;
        let found =
            futures::future::try_join_all(parts.iter().map(|p| p.get_one(entry_id))).await?;
        let mut hits = parts
            .into_iter()
            .zip(found)
            .filter_map(|(p, job)| job.map(|j| (p, j)));
        let first = hits.next();
        if let Some((other, _)) = hits.next() {
            let one = first
                .as_ref()
                .map(|(p, _)| p.queue.clone())
                .unwrap_or_default();
            return Err(Error::InvalidInput(format!(
                "dead letter {} is in two partitions ({one}, {}): name the partition instead of the queue",
                crate::error::excerpt(entry_id),
                other.queue
            )));
        }
        Ok(first)
    }

    /// Puts one dead job back on its queue (its partition, on a partitioned queue) and
    /// deletes the dead letter, atomically.
    ///
    /// The job keeps its id, type, payload and options, returns to the priority it had,
    /// and starts over at attempt 1 with a full attempt budget; its new entry carries
    /// `replayed_from` with the dead letter's entry id. Returns the job id (empty for a
    /// hand-written entry without one), or `None` when the dead letter no longer exists:
    /// replaying twice, even concurrently, re-enqueues the job once.
    pub async fn replay(&self, entry_id: &str) -> Result<Option<JobId>> {
        match self.find(entry_id).await? {
            Some((part, _)) => part.replay_one(entry_id).await,
            None => Ok(None),
        }
    }

    /// Replays every dead letter, oldest first (partition by partition); returns how many
    /// were re-enqueued.
    ///
    /// Only entries present when the call starts are replayed, so jobs that die again
    /// meanwhile stay dead. Entries replayed or purged concurrently by someone else are
    /// skipped, not counted.
    pub async fn replay_all(&self) -> Result<u64> {
        self.replay_matching(&DeadLetterFilter::default()).await
    }

    /// Replays the matching dead letters, oldest first, like
    /// [`replay_all`](Self::replay_all); returns how many were re-enqueued.
    pub async fn replay_matching(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let mut n = 0;
        for part in self.parts().await? {
            n += part.replay_matching_one(filter).await?;
        }
        Ok(n)
    }

    /// Deletes one dead letter; `false` when it did not exist.
    pub async fn purge(&self, entry_id: &str) -> Result<bool> {
        match self.find(entry_id).await? {
            Some((part, _)) => part.purge_one(entry_id).await,
            None => Ok(false),
        }
    }

    /// Deletes every dead letter of the queue, one atomic step per partition; returns how
    /// many.
    pub async fn purge_all(&self) -> Result<u64> {
        let mut n = 0;
        for part in self.parts().await? {
            n += part.purge_all_one().await?;
        }
        Ok(n)
    }

    /// Deletes the dead letters that died more than `age` ago, measured on Redis' clock
    /// (never this machine's); returns how many.
    pub async fn purge_older_than(&self, age: Duration) -> Result<u64> {
        let mut n = 0;
        for part in self.parts().await? {
            n += part.purge_older_than_one(age).await?;
        }
        Ok(n)
    }

    /// Deletes the matching dead letters; returns how many.
    ///
    /// Only entries present when the call starts are considered. An empty filter deletes
    /// them all in one step per partition, as [`purge_all`](Self::purge_all).
    pub async fn purge_matching(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let mut n = 0;
        for part in self.parts().await? {
            n += part.purge_matching_one(filter).await?;
        }
        Ok(n)
    }
}

/// The newest `limit` jobs of several partitions' pages (each newest first), newest first,
/// with any job whose entry id equals the last one taken (ids are per partition, so two
/// may tie): the next page starts strictly before it, and loses nothing.
fn merge_pages(pages: Vec<DeadLetterPage>, limit: usize) -> DeadLetterPage {
    let limit = match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let more = pages.iter().any(|p| p.next.is_some());
    let mut jobs: Vec<DeadJob> = pages.into_iter().flat_map(|p| p.jobs).collect();
    let id = |j: &DeadJob| StreamId::parse(&j.entry_id).unwrap_or(StreamId::MIN);
    jobs.sort_by_key(|j| std::cmp::Reverse(id(j)));
    let mut cut = jobs.len().min(limit);
    if let Some(last) = cut.checked_sub(1).map(|i| id(&jobs[i])) {
        while cut < jobs.len() && id(&jobs[cut]) == last {
            cut += 1;
        }
    }
    let left = jobs.len() > cut;
    jobs.truncate(cut);
    DeadLetterPage {
        next: if more || left {
            jobs.last().map(|j| j.entry_id.clone())
        } else {
            None
        },
        jobs,
    }
}

/// The same operations on one dead-letter stream: the queue's, or one partition's.
impl DeadLetters {
    /// How many dead letters the stream holds.
    async fn count_one(&self) -> Result<u64> {
        self.client.store().dead_count(&self.queue).await
    }

    /// One page of the stream's dead letters (see [`list_scanning`](Self::list_scanning)).
    async fn list_scanning_one(
        &self,
        query: &DeadLetterQuery,
        scan: u64,
    ) -> Result<DeadLetterPage> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let mut page = DeadLetterPage {
            jobs: Vec::new(),
            next: None,
        };
        let cursor = match &query.before {
            Some(c) => Some(StreamId::parse(c).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "dead-letter page cursor {} is not a stream entry id",
                    crate::error::excerpt(c)
                ))
            })?),
            None => None,
        };
        let Some((start, mut end)) = query.filter.id_range() else {
            return Ok(page);
        };
        if let Some(cursor) = cursor {
            match cursor.prev() {
                Some(p) => end = end.min(p),
                None => return Ok(page),
            }
        }
        // One more than the page, to know whether another page follows.
        let chunk = if query.filter.by_time_only() {
            limit as u64 + 1
        } else {
            scan.max(limit as u64 + 1)
        };
        while start <= end {
            let entries = self.range(start, end, chunk, true).await?;
            let full = entries.len() as u64 == chunk;
            let mut oldest = None;
            for (id, fields) in entries {
                oldest = StreamId::parse(&id);
                let job = DeadJob::from_entry(&self.queue, id, fields);
                if !query.filter.matches(&job) {
                    continue;
                }
                if page.jobs.len() == limit {
                    page.next = page.jobs.last().map(|j| j.entry_id.clone());
                    return Ok(page);
                }
                page.jobs.push(job);
            }
            match oldest.and_then(StreamId::prev) {
                Some(p) if full => end = p,
                _ => break,
            }
        }
        Ok(page)
    }

    /// One dead letter by entry id; `None` when there is none (or `entry_id` is not an
    /// entry id).
    async fn get_one(&self, entry_id: &str) -> Result<Option<DeadJob>> {
        let Some(id) = StreamId::parse(entry_id) else {
            return Ok(None);
        };
        let entry = self.range(id, id, 1, false).await?.into_iter().next();
        Ok(entry.map(|(id, fields)| DeadJob::from_entry(&self.queue, id, fields)))
    }

    /// Replays one dead letter of the stream (see [`replay`](Self::replay)).
    async fn replay_one(&self, entry_id: &str) -> Result<Option<JobId>> {
        let Some(id) = StreamId::parse(entry_id) else {
            return Ok(None);
        };
        let replayed = self.replay_ids(&[id.to_string()]).await?;
        Ok(replayed.into_iter().next().flatten().map(JobId::from))
    }

    /// Replays the stream's matching dead letters, oldest first.
    async fn replay_matching_one(&self, filter: &DeadLetterFilter) -> Result<u64> {
        self.apply(filter, Action::Replay).await
    }

    /// Deletes one dead letter; `false` when it did not exist.
    async fn purge_one(&self, entry_id: &str) -> Result<bool> {
        let Some(id) = StreamId::parse(entry_id) else {
            return Ok(false);
        };
        let deleted = self
            .client
            .store()
            .dead_delete(&self.queue, vec![id.to_string()]);
        Ok(deleted.await? > 0)
    }

    /// Deletes every dead letter of the queue in one atomic step; returns how many.
    async fn purge_all_one(&self) -> Result<u64> {
        self.client.store().dead_delete_all(&self.queue).await
    }

    /// Deletes the dead letters that died more than `age` ago, measured on Redis' clock
    /// (never this machine's); returns how many.
    async fn purge_older_than_one(&self, age: Duration) -> Result<u64> {
        self.client
            .store()
            .dead_delete_older(&self.queue, age)
            .await
    }

    /// Deletes the matching dead letters; returns how many.
    ///
    /// Only entries present when the call starts are considered. An empty filter deletes
    /// them all in one step, as [`purge_all`](Self::purge_all).
    async fn purge_matching_one(&self, filter: &DeadLetterFilter) -> Result<u64> {
        if filter.is_empty() {
            return self.purge_all_one().await;
        }
        self.apply(filter, Action::Purge).await
    }

    /// Up to `count` entries with ids from `start` to `end` (both included), oldest first,
    /// or newest first when `newest_first`.
    async fn range(
        &self,
        start: StreamId,
        end: StreamId,
        count: u64,
        newest_first: bool,
    ) -> Result<Vec<DeadEntry>> {
        let (start, end) = (start.to_string(), end.to_string());
        self.client
            .store()
            .dead_range(&self.queue, &start, &end, count, newest_first)
            .await
    }

    /// The newest entry's id, `None` for an empty or missing stream.
    async fn newest(&self) -> Result<Option<StreamId>> {
        let newest = self.range(StreamId::MIN, StreamId::MAX, 1, true).await?;
        Ok(newest.first().and_then(|(id, _)| StreamId::parse(id)))
    }

    async fn replay_ids(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
        let retention = self.client.status_retention_ms();
        self.client
            .store()
            .dead_replay(&self.queue, ids, retention)
            .await
    }

    /// Replays or purges the entries matching `filter`, oldest first, chunk by chunk, up
    /// to the newest entry present at the start (so entries added meanwhile, such as
    /// replayed jobs that died again, are left alone). Returns how many it changed.
    async fn apply(&self, filter: &DeadLetterFilter, action: Action) -> Result<u64> {
        let Some((mut start, end)) = filter.id_range() else {
            return Ok(0);
        };
        let Some(newest) = self.newest().await? else {
            return Ok(0);
        };
        let end = end.min(newest);
        let mut changed = 0;
        while start <= end {
            let entries = self.range(start, end, CHUNK, false).await?;
            let full = entries.len() as u64 == CHUNK;
            let last = entries.last().and_then(|(id, _)| StreamId::parse(id));
            let ids = self.matching_ids(filter, entries);
            changed += match action {
                Action::Replay => self.replay_ids(&ids).await?.iter().flatten().count() as u64,
                Action::Purge => self.client.store().dead_delete(&self.queue, ids).await?,
            };
            match last.and_then(StreamId::next) {
                Some(n) if full => start = n,
                _ => break,
            }
        }
        Ok(changed)
    }

    fn matching_ids(&self, filter: &DeadLetterFilter, entries: Vec<DeadEntry>) -> Vec<String> {
        if filter.by_time_only() {
            return entries.into_iter().map(|(id, _)| id).collect();
        }
        entries
            .into_iter()
            .map(|(id, fields)| DeadJob::from_entry(&self.queue, id, fields))
            .filter(|job| filter.matches(job))
            .map(|job| job.entry_id)
            .collect()
    }
}
