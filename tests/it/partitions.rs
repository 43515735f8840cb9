//! Partitioned queues on a single Redis: placement in turn and by key, every job once,
//! status by id, per-key order, unique jobs, the count declared once and changed only on an
//! empty queue, dead letters merged over the partitions, pause by the queue's name, and
//! the admin views' sums. (On a Redis Cluster: `servers.rs`.)

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stevedore::dlq::{DeadLetterFilter, DeadLetterQuery};
use stevedore::{Error, JobContext, JobError, JobState, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    /// Where this test's runs are recorded.
    log: String,
    key: String,
    seq: u32,
}

/// One run: the job's key, its sequence number, and the partition it ran from.
type Run = (String, u32, String);

/// Per log, the runs in the order jobs started.
static RUNS: Mutex<Option<HashMap<String, Vec<Run>>>> = Mutex::new(None);

fn runs_of(log: &str) -> Vec<Run> {
    RUNS.lock()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(log).cloned()))
        .unwrap_or_default()
}

#[job_handler(name = "part.item", queue = "parted")]
async fn item(i: Item, ctx: JobContext) -> Result<(), JobError> {
    if let Ok(mut m) = RUNS.lock() {
        m.get_or_insert_default()
            .entry(i.log.clone())
            .or_default()
            .push((i.key.clone(), i.seq, ctx.queue().to_string()));
    }
    support::record(ctx.id(), ());
    Ok(())
}

#[job_handler(name = "part.doomed", queue = "parted", max_attempts = 1)]
async fn doomed(_i: Item, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ());
    Err(JobError::permanent("no such mailbox"))
}

fn items(log: &str, key: &str, n: u32) -> Vec<stevedore::Job<item>> {
    (0..n)
        .map(|seq| {
            item::job(Item {
                log: log.into(),
                key: key.into(),
                seq,
            })
        })
        .collect()
}

fn worker(env: &TestEnv, concurrency: usize) -> stevedore::WorkerBuilder {
    Worker::builder(env.client.clone())
        .handler(item::handler())
        .handler(doomed::handler())
        .partitions("parted", 3)
        .concurrency(concurrency)
}

/// A worker of concurrency 4 that declares the queue's three partitions, running once the
/// count is recorded.
async fn declaring_worker(env: &TestEnv) -> support::Running {
    let w = support::spawn(worker(env, 4).build().expect("worker"));
    eventually(WAIT, "the worker declared the count", || async {
        env.client.partitions("parted").await.expect("count") == 3
    })
    .await;
    w
}

#[tokio::test]
async fn jobs_spread_over_the_partitions_and_each_runs_once() {
    let env = TestEnv::start().await;
    env.client
        .declare_partitions("parted", 3)
        .await
        .expect("declared");
    let parts = env.client.partition_names("parted").await.expect("names");
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.starts_with("parted~")), "{parts:?}");

    // In turn: 300 jobs, 100 per partition, before any worker runs.
    let log = env.prefix.clone();
    let ids = env
        .client
        .enqueue_bulk(items(&log, "", 300))
        .await
        .expect("enqueued");
    for p in &parts {
        assert_eq!(env.xlen(&env.stream(p, "normal")).await, 100, "{p}");
        let s = env.client.queue_stats(p).await.expect("partition stats");
        assert_eq!((s.ready.normal, s.partitions), (100, 1), "{p}");
    }
    let all = env.client.queue_stats("parted").await.expect("queue stats");
    assert_eq!((all.ready.total(), all.partitions), (300, 3));
    // A job's id names its partition, so its status is one read.
    assert!(ids.iter().all(|id| {
        parts
            .iter()
            .any(|p| id.as_str().starts_with(&format!("{p}:")))
    }));
    let st = env.client.status(ids[0].as_str()).await.expect("status");
    assert_eq!(st.map(|s| s.state), Some(JobState::Queued));

    // Two workers drain every partition; every job runs once.
    let a = support::spawn(worker(&env, 8).build().expect("worker"));
    let b = support::spawn(worker(&env, 8).build().expect("worker"));
    eventually(WAIT, "300 jobs ran", || async {
        runs_of(&log).len() >= 300
    })
    .await;
    let seen: BTreeSet<u32> = runs_of(&log).iter().map(|r| r.1).collect();
    assert_eq!((runs_of(&log).len(), seen.len()), (300, 300));
    let by_part: BTreeSet<String> = runs_of(&log).into_iter().map(|r| r.2).collect();
    assert_eq!(by_part, parts.iter().cloned().collect::<BTreeSet<_>>());
    eventually(WAIT, "all acknowledged", || async {
        let s = env.client.queue_stats("parted").await.expect("stats");
        s.ready.total() + s.pending.total() == 0
    })
    .await;
    let st = env
        .client
        .wait_for(ids[299].as_str(), WAIT)
        .await
        .expect("status");
    assert_eq!(st.map(|s| s.state), Some(JobState::Succeeded));

    // A delayed job (a UUID id, no partition in it) is found and runs too.
    let later = env
        .client
        .enqueue(
            items(&log, "", 1)
                .remove(0)
                .delay(Duration::from_millis(100)),
        )
        .await
        .expect("delayed");
    let st = env
        .client
        .wait_for(later.as_str(), WAIT)
        .await
        .expect("status");
    assert_eq!(st.map(|s| s.state), Some(JobState::Succeeded));

    // The admin views show the queue once, with its sums.
    let admin = env.client.admin();
    assert_eq!(admin.queue_names().await.expect("names"), ["parted"]);
    let q = admin.queue("parted").await.expect("queue");
    assert_eq!((q.stats.partitions, q.workers), (3, 2));
    // Workers add to the lifetime totals about once a second, and when they stop.
    a.shutdown().await.expect("a stops");
    b.shutdown().await.expect("b stops");
    let q = admin.queue("parted").await.expect("queue");
    assert_eq!(q.totals.succeeded, 301);
}

#[tokio::test]
async fn jobs_of_one_key_stay_in_one_partition_in_order() {
    let env = TestEnv::start().await;
    let log = env.prefix.clone();
    env.client
        .declare_partitions("parted", 3)
        .await
        .expect("declared");
    // Interleaved keys, one partition per key; a worker of concurrency 1 keeps each
    // partition's order.
    let keys: Vec<String> = (0..6).map(|k| format!("customer-{k}")).collect();
    let mut jobs = Vec::new();
    for seq in 0..20 {
        for k in &keys {
            jobs.push(
                item::job(Item {
                    log: log.clone(),
                    key: k.clone(),
                    seq,
                })
                .partition_key(k.clone()),
            );
        }
    }
    env.client.enqueue_bulk(jobs).await.expect("enqueued");
    let w = support::spawn(worker(&env, 1).build().expect("worker"));
    eventually(WAIT, "120 jobs ran", || async {
        runs_of(&log).len() >= 120
    })
    .await;
    let runs = runs_of(&log);
    let mut used = BTreeSet::new();
    for k in &keys {
        let of_key: Vec<&Run> = runs.iter().filter(|r| &r.0 == k).collect();
        let parts: BTreeSet<&str> = of_key.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(parts.len(), 1, "{k} ran in one partition: {parts:?}");
        used.extend(parts);
        let seqs: Vec<u32> = of_key.iter().map(|r| r.1).collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "{k} in order");
    }
    assert!(used.len() > 1, "six keys use more than one partition");
    // A JSON job (HTTP API, CLI) with the same key goes to the same partition.
    let mut json = stevedore::admin::JsonJob::new(
        "part.item",
        "parted",
        serde_json::json!({"log": "json", "key": "customer-0", "seq": 0}),
    );
    json.partition_key = Some("customer-0".into());
    let enqueued = env
        .client
        .admin()
        .enqueue_json(json)
        .await
        .expect("json job");
    let first = runs
        .iter()
        .find(|r| r.0 == "customer-0")
        .map(|r| r.2.clone());
    assert_eq!(
        enqueued
            .id
            .as_str()
            .split_once(':')
            .map(|(p, _)| p.to_string()),
        first
    );
    w.shutdown().await.expect("stops");
}

#[tokio::test]
async fn a_unique_job_is_enqueued_once_whichever_producer_places_it() {
    let env = TestEnv::start().await;
    env.client
        .declare_partitions("parted", 3)
        .await
        .expect("declared");
    let log = env.prefix.clone();
    let producers = (0..8).map(|_| {
        let client = env.client.clone();
        let log = log.clone();
        tokio::spawn(async move {
            client
                .enqueue(
                    items(&log, "", 1)
                        .remove(0)
                        .unique("invoice-42", Duration::from_secs(60)),
                )
                .await
                .expect("enqueued")
        })
    });
    let ids: BTreeSet<String> = futures::future::join_all(producers)
        .await
        .into_iter()
        .map(|r| r.expect("producer").to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let s = env.client.queue_stats("parted").await.expect("stats");
    assert_eq!(s.ready.total(), 1);
}

#[tokio::test]
async fn the_count_is_declared_once_and_changes_only_on_an_empty_queue() {
    let env = TestEnv::start().await;
    let c = &env.client;
    assert_eq!(c.partitions("parted").await.expect("count"), 1);
    c.declare_partitions("parted", 3).await.expect("declared");
    c.declare_partitions("parted", 3)
        .await
        .expect("the same again");
    match c.declare_partitions("parted", 4).await {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("has 3 partitions"), "{m}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    for bad in [0, stevedore::job::MAX_PARTITIONS + 1] {
        assert!(matches!(
            c.declare_partitions("parted", bad).await,
            Err(Error::InvalidConfig(_))
        ));
    }
    // A worker declaring another count does not start.
    let w = Worker::builder(c.clone())
        .handler(item::handler())
        .partitions("parted", 5)
        .build()
        .expect("built");
    match w.run_until(std::future::pending()).await {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("not 5"), "{m}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    // Enqueueing into a partition directly is refused: the queue places its jobs.
    let direct = c.partition_names("parted").await.expect("names")[0].clone();
    assert!(matches!(
        stevedore::RawJob::new("part.item", &direct, &1),
        Err(Error::InvalidName { .. })
    ));

    // Not while a job waits (in the old layout or the new one), dead ones included.
    let log = env.prefix.clone();
    let id = c
        .enqueue(items(&log, "", 1).remove(0))
        .await
        .expect("enqueued");
    match c.set_partitions("parted", 2).await {
        Err(Error::QueueNotEmpty { queue, jobs }) => {
            assert_eq!((queue.as_str(), jobs), ("parted", 1))
        }
        other => panic!("expected QueueNotEmpty, got {other:?}"),
    }
    let w = support::spawn(worker(&env, 2).build().expect("worker"));
    c.wait_for(id.as_str(), WAIT).await.expect("ran");
    w.shutdown().await.expect("stops");
    c.set_partitions("parted", 2)
        .await
        .expect("switched on an empty queue");
    assert_eq!(c.partitions("parted").await.expect("count"), 2);
    // Producers follow: the next job lands in the new layout.
    let next = c
        .enqueue(items(&log, "", 1).remove(0))
        .await
        .expect("enqueued");
    let two = c.partition_names("parted").await.expect("names");
    assert!(
        two.iter()
            .any(|p| next.as_str().starts_with(&format!("{p}:"))),
        "{next}"
    );
    assert!(matches!(
        c.set_partitions("parted", 1).await,
        Err(Error::QueueNotEmpty { jobs: 1, .. })
    ));
}

#[tokio::test]
async fn dead_letters_of_all_partitions_list_merged_and_replay_by_id() {
    let env = TestEnv::start().await;
    let log = env.prefix.clone();
    let w = declaring_worker(&env).await;
    let jobs: Vec<_> = (0..9)
        .map(|seq| {
            doomed::job(Item {
                log: log.clone(),
                key: String::new(),
                seq,
            })
        })
        .collect();
    env.client.enqueue_bulk(jobs).await.expect("enqueued");
    let dlq = env.client.dead_letters("parted").expect("dlq");
    eventually(WAIT, "9 dead letters", || async {
        dlq.count().await.expect("count") == 9
    })
    .await;
    // Pages of 2, newest first over the three partitions, cover each once.
    let mut query = DeadLetterQuery {
        filter: DeadLetterFilter::default(),
        limit: 2,
        before: None,
    };
    let mut listed = Vec::new();
    loop {
        let page = dlq.list(&query).await.expect("page");
        listed.extend(page.jobs);
        match page.next {
            Some(n) => query.before = Some(n),
            None => break,
        }
    }
    assert_eq!(listed.len(), 9);
    let parts: BTreeSet<&str> = listed.iter().map(|j| j.queue.as_str()).collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
    let ids: Vec<&str> = listed.iter().map(|j| j.entry_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        std::cmp::Reverse((
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        ))
    });
    assert_eq!(ids, sorted, "newest first");
    // One partition's alone, by its name.
    let one = env
        .client
        .dead_letters(parts.iter().next().copied().unwrap_or_default())
        .expect("dlq");
    assert_eq!(one.count().await.expect("count"), 3);
    // A replay by entry id through the queue's name finds the partition.
    let first = &listed[0];
    let replayed = dlq.replay(&first.entry_id).await.expect("replayed");
    assert_eq!(replayed.map(|j| j.to_string()), first.job_id.clone());
    eventually(WAIT, "it died again", || async {
        first
            .job_id
            .as_deref()
            .is_some_and(|id| support::runs(id) == 2)
    })
    .await;
    eventually(WAIT, "9 dead letters again", || async {
        dlq.count().await.expect("count") == 9
    })
    .await;
    assert_eq!(dlq.purge_all().await.expect("purged"), 9);
    assert_eq!(dlq.count().await.expect("count"), 0);
    w.shutdown().await.expect("stops");
}

#[tokio::test]
async fn pausing_the_queue_pauses_every_partition() {
    let env = TestEnv::start().await;
    let log = env.prefix.clone();
    let w = declaring_worker(&env).await;
    // On one server, one loop and one blocking read serve the three partitions: an idle
    // worker holds one blocked connection, not three.
    eventually(WAIT, "the idle worker blocks in one read", || async {
        support::blocked_readers(&env).await == 1
    })
    .await;
    for _ in 0..20 {
        assert!(
            support::blocked_readers(&env).await <= 1,
            "one read, not one per partition"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let admin = env.client.admin();
    assert!(admin.pause("parted").await.expect("paused"));
    // Workers pick the pause up within a control round plus one blocking read; then no
    // read loop of any partition blocks on its streams any more.
    support::readers_quiet(&env, Duration::from_millis(250), WAIT).await;
    env.client
        .enqueue_bulk(items(&log, "", 30))
        .await
        .expect("enqueued");
    // Nothing to wait for: the jobs must NOT run. A loop still reading would start them
    // within milliseconds, so half a second of watching is ample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs_of(&log).len(), 0, "a paused queue runs nothing");
    let q = admin.queue("parted").await.expect("queue");
    assert!(q.paused);
    assert_eq!(q.stats.ready.total(), 30);
    assert!(admin.resume("parted").await.expect("resumed"));
    eventually(WAIT, "30 jobs ran", || async { runs_of(&log).len() >= 30 }).await;
    w.shutdown().await.expect("stops");
}
