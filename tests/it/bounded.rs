//! Bounded queues against a real Redis: eight producers racing into a full queue get
//! exactly its capacity in and a clear refusal for the rest (single, delayed, unique and
//! bulk enqueues alike); bulk enqueues say which jobs were refused; waiting enqueues are
//! admitted as workers make room, woken by the room notice rather than by their fallback
//! re-check, and the queue never holds more than its capacity meanwhile; a capacity
//! below 1 is refused; a partitioned queue shares its capacity over its partitions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use stevedore::observe::RefusedEvent;
use stevedore::{Error, JobContext, JobError, Observer, RawJob, Worker, job_handler};

use crate::support::{self, TestEnv, eventually, wait_for};

#[job_handler(name = "bounded.work", queue = "bounded")]
async fn work(ms: u64, _ctx: JobContext) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

fn job(queue: &str) -> RawJob {
    RawJob::new("bounded.work", queue, &0u64).expect("raw job")
}

/// Jobs waiting in `queue`: undelivered entries of its streams plus its scheduled set,
/// counted in one step (a script), so a worker acknowledging between two reads cannot
/// make the count look higher than it was.
async fn waiting(env: &TestEnv, queue: &str) -> u64 {
    const COUNT: &str = r#"
        local n = redis.call('ZCARD', KEYS[4])
        for i = 1, 3 do
          local len = redis.call('XLEN', KEYS[i])
          local ok, p = pcall(redis.call, 'XPENDING', KEYS[i], 'stevedore')
          if ok and p then len = len - p[1] end
          n = n + len
        end
        return n"#;
    let keys: Vec<String> = ["high", "normal", "low", "scheduled"]
        .iter()
        .map(|k| format!("{}:{{{queue}}}:{k}", env.prefix))
        .collect();
    env.raw
        .eval::<u64, _, _, _>(COUNT, keys, Vec::<String>::new())
        .await
        .expect("counting waiting jobs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_takes_exactly_its_capacity_from_eight_racing_producers() {
    const CAPACITY: u64 = 50;
    let env = TestEnv::start().await;
    env.client
        .set_queue_capacity("racing", CAPACITY)
        .await
        .expect("set the capacity");
    assert_eq!(
        env.client.queue_capacity("racing").await.expect("read"),
        Some(CAPACITY)
    );
    let mut producers = Vec::new();
    for p in 0..8u32 {
        let client = env.client_with(|b| b).await;
        producers.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (0u64, 0u64);
            let mut count = |r: stevedore::Result<stevedore::JobId>| match r {
                Ok(_) => accepted += 1,
                Err(Error::QueueFull { queue, capacity }) => {
                    assert_eq!((queue.as_str(), capacity), ("racing", CAPACITY));
                    refused += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            };
            for i in 0..20u32 {
                // Ready, delayed and unique jobs: all three enqueue paths count alike.
                let j = match i % 3 {
                    0 => job("racing"),
                    1 => job("racing").delay(Duration::from_secs(600)),
                    _ => job("racing").unique(format!("p{p}-{i}"), Duration::from_secs(600)),
                };
                count(client.enqueue(j).await);
            }
            let bulk = client
                .enqueue_bulk_partial((0..10).map(|_| job("racing")))
                .await
                .expect("a bulk enqueue");
            for r in bulk {
                count(r);
            }
            (accepted, refused)
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for p in producers {
        let (a, r) = p.await.expect("producer");
        accepted += a;
        refused += r;
    }
    println!("accepted {accepted}, refused {refused} of 240");
    let info = env
        .client
        .admin()
        .queue("racing")
        .await
        .expect("queue info");
    assert_eq!(
        info.totals.refused, refused,
        "each refusal counted once, by the enqueue"
    );
    assert_eq!(accepted, CAPACITY, "exactly the capacity got in");
    assert_eq!(refused, 240 - CAPACITY);
    assert_eq!(
        waiting(&env, "racing").await,
        CAPACITY,
        "and nothing more was written"
    );
    // A duplicate of a unique job already in takes no room and is no refusal.
    let unique = job("full-dup").unique("same", Duration::from_secs(60));
    env.client
        .set_queue_capacity("full-dup", 1)
        .await
        .expect("capacity");
    let first = env.client.enqueue(unique.clone()).await.expect("first");
    let again = env.client.enqueue(unique).await.expect("a duplicate");
    assert_eq!(first, again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_enqueue_says_which_jobs_were_refused() {
    let env = TestEnv::start().await;
    env.client
        .set_queue_capacity("bulk", 5)
        .await
        .expect("capacity");
    let outcomes = env
        .client
        .enqueue_bulk_partial((0..8).map(|_| job("bulk")))
        .await
        .expect("bulk");
    let refused: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Err(Error::QueueFull { .. })))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused, vec![5, 6, 7], "the jobs past the room");
    assert!(outcomes[..5].iter().all(Result::is_ok));
    // Another queue in the same call is not held back by the full one.
    let mixed = env
        .client
        .enqueue_bulk_partial([job("bulk"), job("unbounded"), job("bulk")])
        .await
        .expect("bulk");
    assert!(mixed[0].is_err() && mixed[1].is_ok() && mixed[2].is_err());
    // `enqueue_bulk` fails whole, naming the queue.
    match env.client.enqueue_bulk([job("bulk")]).await {
        Err(Error::QueueFull { queue, capacity }) => {
            assert_eq!((queue.as_str(), capacity), ("bulk", 5))
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // Lifting the bound admits again; capacities of 0 are refused.
    assert!(
        env.client
            .remove_queue_capacity("bulk")
            .await
            .expect("remove")
    );
    assert!(
        !env.client
            .remove_queue_capacity("bulk")
            .await
            .expect("again")
    );
    env.client.enqueue(job("bulk")).await.expect("no bound now");
    assert!(matches!(
        env.client.set_queue_capacity("bulk", 0).await,
        Err(Error::InvalidInput(m)) if m.contains("at least 1")
    ));
    assert!(matches!(
        env.client.set_queue_capacity("bad name", 3).await,
        Err(Error::InvalidName { .. })
    ));
    assert_eq!(env.client.queue_capacities().await.expect("list"), vec![]);
}

/// Each refused try, when it happened.
#[derive(Default, Clone)]
struct Refusals(Arc<Mutex<Vec<Instant>>>);

impl Observer for Refusals {
    fn refused(&self, _job: &RefusedEvent<'_>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
    }
}

impl Refusals {
    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_enqueue_is_woken_when_a_worker_makes_room() {
    let env = TestEnv::start().await;
    let refusals = Refusals::default();
    let producer = env.client_with(|b| b.observer(refusals.clone())).await;
    producer
        .set_queue_capacity("bounded", 1)
        .await
        .expect("capacity");
    producer
        .enqueue(work::job(50))
        .await
        .expect("fills the queue");
    assert!(matches!(
        producer.enqueue(work::job(50)).await,
        Err(Error::QueueFull { .. })
    ));
    // A wait that ends without room fails as a plain enqueue does.
    let started = Instant::now();
    assert!(matches!(
        producer
            .enqueue_wait(work::job(50), Duration::from_millis(300))
            .await,
        Err(Error::QueueFull { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let before = refusals.count();
    let waiter = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let id = producer
                .enqueue_wait(work::job(50), Duration::from_secs(20))
                .await;
            (id, Instant::now())
        })
    };
    // Its second refused try is its fallback re-check, a second after the first: room
    // made just after it is heard by notice, long before the next re-check.
    let second = wait_for(Duration::from_secs(5), "two refused tries", || async {
        let seen = refusals.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (seen.len() >= before + 2).then(|| seen[before + 1])
    })
    .await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(work::handler())
            .concurrency(1)
            .build()
            .expect("worker"),
    );
    let (id, admitted) = waiter.await.expect("waiter");
    id.expect("admitted once a worker made room");
    let after = admitted.duration_since(second);
    println!("admitted {after:?} after the second refused try");
    assert!(
        after < Duration::from_millis(800),
        "woken by the room notice, not the re-check a second after the last try ({after:?})"
    );
    assert_eq!(refusals.count(), before + 2, "no further refused try");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_waiting_producers_never_push_the_queue_past_its_capacity() {
    const CAPACITY: u64 = 10;
    let env = TestEnv::start().await;
    env.client
        .set_queue_capacity("bounded", CAPACITY)
        .await
        .expect("capacity");
    let mut producers = Vec::new();
    for _ in 0..8 {
        let client = env.client_with(|b| b).await;
        producers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..15 {
                ids.push(
                    client
                        .enqueue_wait(work::job(5), Duration::from_secs(60))
                        .await
                        .expect("admitted within the wait"),
                );
            }
            ids
        }));
    }
    // The producers fill the queue and wait; then workers drain it.
    eventually(Duration::from_secs(10), "the queue full", || async {
        waiting(&env, "bounded").await == CAPACITY
    })
    .await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(work::handler())
            .concurrency(4)
            .build()
            .expect("worker"),
    );
    let mut most = 0;
    let mut ids = Vec::new();
    for p in producers {
        while !p.is_finished() {
            most = most.max(waiting(&env, "bounded").await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids.extend(p.await.expect("producer"));
    }
    println!("most waiting at once: {most} (capacity {CAPACITY})");
    assert!(most <= CAPACITY, "{most} waiting, over the capacity");
    assert_eq!(ids.len(), 120, "every producer's every job got in");
    eventually(Duration::from_secs(30), "every job ran", || async {
        env.ready("bounded").await == 0
    })
    .await;
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_shares_its_capacity_over_its_partitions() {
    let env = TestEnv::start().await;
    env.client
        .declare_partitions("parted", 4)
        .await
        .expect("partitions");
    env.client
        .set_queue_capacity("parted", 8)
        .await
        .expect("capacity");
    let names = env.client.partition_names("parted").await.expect("names");
    for name in &names {
        let share: Option<u64> = env
            .raw
            .get(format!("{}:{{{name}}}:capacity", env.prefix))
            .await
            .expect("GET");
        assert_eq!(share, Some(2), "{name}");
    }
    let outcomes = env
        .client
        .enqueue_bulk_partial((0..12).map(|_| job("parted")))
        .await
        .expect("bulk");
    let accepted = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 8, "two per partition, dealt in turn");
    let mut total = 0;
    for name in &names {
        total += waiting(&env, name).await;
    }
    assert_eq!(total, 8);
}

/// A raw request to the admin API: the status, the response head (headers) and the JSON.
async fn http(
    api: &support::AdminServer,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::to_vec(&body).expect("json");
    let mut s = tokio::net::TcpStream::connect(api.addr)
        .await
        .expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(&body).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    // Small JSON bodies may come chunked: take the document between the outer brackets.
    let json = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or_default(),
        _ => serde_json::Value::Null,
    };
    (code, head.to_ascii_lowercase(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_full_queue_answers_429_with_retry_after() {
    use serde_json::json;
    let env = TestEnv::start().await;
    let api =
        support::serve_admin(&env.client, stevedore::admin::AdminConfig::loopback_only()).await;
    let (code, _, row) = http(
        &api,
        "POST",
        "/api/v1/limits/queue/web",
        json!({ "capacity": 1 }),
    )
    .await;
    assert_eq!(code, 200, "{row}");
    assert_eq!(row["capacity"], 1, "{row}");
    let job = json!({ "type": "bounded.work", "queue": "web", "payload": 1 });
    let (code, _, first) = http(&api, "POST", "/api/v1/jobs", job.clone()).await;
    assert_eq!(code, 201, "{first}");
    let (code, head, refused) = http(&api, "POST", "/api/v1/jobs", job.clone()).await;
    assert_eq!(code, 429, "{refused}");
    assert_eq!(refused["error"], "queue_full", "{refused}");
    assert!(head.contains("retry-after: 1"), "{head}");
    // A wait for room within the request's deadline, and one past it.
    let mut waiting = job.clone();
    waiting["wait_for_room"] = json!("200ms");
    let (code, _, _) = http(&api, "POST", "/api/v1/jobs", waiting.clone()).await;
    assert_eq!(code, 429);
    waiting["wait_for_room"] = json!("1m");
    let (code, _, e) = http(&api, "POST", "/api/v1/jobs", waiting).await;
    assert_eq!(code, 422, "{e}");
    let (code, _, e) = http(
        &api,
        "POST",
        "/api/v1/limits/queue/web",
        json!({ "capacity": 0 }),
    )
    .await;
    assert_eq!(code, 422, "{e}");
    let (code, _, e) = http(
        &api,
        "POST",
        "/api/v1/limits/queue/web",
        json!({ "capacity": "lots" }),
    )
    .await;
    assert_eq!(code, 422, "{e}");
    let (code, _, list) = http(&api, "GET", "/api/v1/limits", json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(list[0]["queues"][0]["waiting"], 1, "{list}");
    // The refused submit, and the waiting one's first try and its last, at the deadline.
    assert_eq!(list[0]["queues"][0]["refused"], 3, "{list}");
    let (code, _, row) = http(&api, "DELETE", "/api/v1/limits/queue/web", json!({})).await;
    assert_eq!(
        (code, &row["capacity"]),
        (200, &serde_json::Value::Null),
        "{row}"
    );
    let (code, _, _) = http(&api, "POST", "/api/v1/jobs", job).await;
    assert_eq!(code, 201, "no bound any more");
}
