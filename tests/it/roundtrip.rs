use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{Client, Error, JobContext, JobError, Priority, RawJob, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Tuple(i8, String),
    Struct { x: f64, tags: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    text: String,
    empty: String,
    big: u64,
    small: i64,
    float: f64,
    flag: bool,
    none: Option<u32>,
    some: Option<Vec<u16>>,
    bytes: Vec<u8>,
    map: BTreeMap<String, Vec<i32>>,
    shapes: Vec<Shape>,
    nested: Option<Box<Everything>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pair(u32, String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ping;

#[job_handler(name = "rt.everything", queue = "rt")]
async fn everything(payload: Everything, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), payload);
    Ok(())
}

#[job_handler(name = "rt.pair", queue = "rt")]
async fn pair(payload: Pair, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), payload);
    Ok(())
}

#[job_handler(name = "rt.ping", queue = "rt")]
async fn ping(payload: Ping, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), payload);
    Ok(())
}

#[job_handler(name = "rt.shape", queue = "rt")]
async fn shape(payload: Shape, ctx: JobContext) -> Result<(), JobError> {
    support::record(
        ctx.id(),
        (
            payload,
            ctx.priority(),
            ctx.attempt(),
            ctx.queue().to_string(),
        ),
    );
    Ok(())
}

#[job_handler(name = "rt.text", queue = "rt")]
async fn text(payload: String, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), payload);
    Ok(())
}

fn sample() -> Everything {
    let leaf = Everything {
        text: "naïve café ✓ 🚢 \u{0}nul".into(),
        empty: String::new(),
        big: u64::MAX,
        small: i64::MIN,
        float: -0.125,
        flag: true,
        none: None,
        some: Some(vec![0, 65535]),
        bytes: (0..=255).collect(),
        map: BTreeMap::from([("a".into(), vec![-1, 0, 1]), ("".into(), vec![])]),
        shapes: vec![
            Shape::Unit,
            Shape::Tuple(-128, "t".into()),
            Shape::Struct {
                x: 1e300,
                tags: vec!["x".into()],
            },
        ],
        nested: None,
    };
    Everything {
        nested: Some(Box::new(leaf.clone())),
        ..leaf
    }
}

#[tokio::test]
async fn payloads_of_every_shape_arrive_unchanged() {
    let env = TestEnv::start().await;
    let worker = Worker::builder(env.client.clone())
        .handler(everything::handler())
        .handler(pair::handler())
        .handler(ping::handler())
        .handler(shape::handler())
        .handler(text::handler())
        .build()
        .expect("worker");
    let running = support::spawn(worker);

    let e = env
        .client
        .enqueue(everything::job(sample()))
        .await
        .expect("enqueue");
    let p = env
        .client
        .enqueue(pair::job(Pair(7, "seven".into())))
        .await
        .expect("enqueue");
    let g = env.client.enqueue(ping::job(Ping)).await.expect("enqueue");
    let t = env
        .client
        .enqueue(text::job("just a string".into()).priority(Priority::Low))
        .await
        .expect("enqueue");
    let shapes = env
        .client
        .enqueue_bulk([
            shape::job(Shape::Unit).priority(Priority::High),
            shape::job(Shape::Tuple(1, "one".into())),
            shape::job(Shape::Struct {
                x: f64::MIN_POSITIVE,
                tags: vec![],
            })
            .priority(Priority::Low),
        ])
        .await
        .expect("bulk enqueue");

    let all: Vec<_> = [&e, &p, &g, &t]
        .into_iter()
        .chain(shapes.iter())
        .cloned()
        .collect();
    eventually(Duration::from_secs(10), "every job ran", || async {
        all.iter().all(|id| support::runs(id.as_str()) == 1)
    })
    .await;

    assert_eq!(support::values::<Everything>(e.as_str()), vec![sample()]);
    assert_eq!(
        support::values::<Pair>(p.as_str()),
        vec![Pair(7, "seven".into())]
    );
    assert_eq!(support::values::<Ping>(g.as_str()), vec![Ping]);
    assert_eq!(
        support::values::<String>(t.as_str()),
        vec!["just a string".to_string()]
    );
    let got: Vec<_> = shapes
        .iter()
        .flat_map(|id| support::values::<(Shape, Priority, u32, String)>(id.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Shape::Unit, Priority::High, 1, "rt".to_string()),
            (
                Shape::Tuple(1, "one".into()),
                Priority::Normal,
                1,
                "rt".to_string()
            ),
            (
                Shape::Struct {
                    x: f64::MIN_POSITIVE,
                    tags: vec![]
                },
                Priority::Low,
                1,
                "rt".to_string()
            ),
        ]
    );

    eventually(
        Duration::from_secs(5),
        "all acknowledged and removed",
        || async { env.ready("rt").await == 0 && env.pending("rt").await == 0 },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn entries_are_readable_with_redis_cli() {
    let env = TestEnv::start().await;
    let id = env
        .client
        .enqueue(
            pair::job(Pair(1, "x".into()))
                .priority(Priority::High)
                .max_attempts(7)
                .timeout(Duration::from_secs(9)),
        )
        .await
        .expect("enqueue");
    let entries: Vec<(String, std::collections::HashMap<String, Value>)> = env
        .raw
        .xrange_values(env.stream("rt", "high"), "-", "+", None)
        .await
        .expect("xrange");
    assert_eq!(entries.len(), 1);
    let f = &entries[0].1;
    let text = |k: &str| f.get(k).and_then(|v| v.as_string()).unwrap_or_default();
    // The job's id is its entry's, with its priority: the entry needs no `id` field.
    assert_eq!(format!("rt:h-{}", entries[0].0), id.as_str());
    assert!(!f.contains_key("id"));
    assert_eq!(text("type"), "rt.pair");
    assert_eq!(text("attempt"), "1");
    assert_eq!(text("max_attempts"), "7");
    assert_eq!(text("timeout"), "9000");
    let enqueued_at: u64 = text("enqueued_at")
        .parse()
        .expect("enqueued_at is a number");
    assert!(enqueued_at > 1_700_000_000_000);
    let payload = f
        .get("payload")
        .and_then(|v| v.as_bytes())
        .expect("payload bytes");
    let decoded: Pair = rmp_serde::from_slice(payload).expect("payload is MessagePack");
    assert_eq!(decoded, Pair(1, "x".into()));

    // The queue is discoverable.
    let queues: Vec<String> = env
        .raw
        .smembers(format!("{}:queues", env.prefix))
        .await
        .expect("smembers");
    assert_eq!(queues, vec!["rt".to_string()]);
}

#[tokio::test]
async fn handler_defaults_and_enqueue_options_reach_the_entry() {
    #[job_handler(
        name = "rt.defaults",
        queue = "rt",
        max_attempts = 4,
        timeout = "1500ms",
        priority = "low"
    )]
    async fn with_defaults(_p: Ping, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
    let env = TestEnv::start().await;
    env.client
        .enqueue(with_defaults::job(Ping))
        .await
        .expect("enqueue");
    env.client
        .enqueue(
            with_defaults::job(Ping)
                .priority(Priority::High)
                .max_attempts(9)
                .queue("other"),
        )
        .await
        .expect("enqueue");
    assert_eq!(
        env.xlen(&env.stream("rt", "low")).await,
        1,
        "handler's default priority applies"
    );
    assert_eq!(
        env.xlen(&env.stream("other", "high")).await,
        1,
        "enqueue options win"
    );
    let entries: Vec<(String, std::collections::HashMap<String, Value>)> = env
        .raw
        .xrange_values(env.stream("rt", "low"), "-", "+", None)
        .await
        .expect("xrange");
    assert_eq!(
        entries[0]
            .1
            .get("max_attempts")
            .and_then(Value::as_string)
            .as_deref(),
        Some("4")
    );
    assert_eq!(
        entries[0]
            .1
            .get("timeout")
            .and_then(Value::as_string)
            .as_deref(),
        None,
        "the handler's timeout is not copied into each entry"
    );
}

#[tokio::test]
async fn enqueue_refuses_bad_input_and_writes_nothing() {
    let env = TestEnv::start().await;
    let small = env.client_with(|b| b.payload_limit(1024)).await;

    let err = small
        .enqueue(text::job("x".repeat(2000)))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, Error::PayloadTooLarge { limit: 1024, .. }),
        "{err:?}"
    );

    // One bad job in a bulk refuses the whole batch.
    let batch = vec![
        text::job("ok".into()),
        text::job("y".repeat(5000)),
        text::job("ok".into()),
    ];
    let err = small
        .enqueue_bulk(batch)
        .await
        .expect_err("too large in bulk");
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err:?}");

    let err = env
        .client
        .enqueue(text::job("x".into()).queue("bad queue"))
        .await
        .expect_err("bad queue");
    assert!(
        matches!(err, Error::InvalidName { kind: "queue", .. }),
        "{err:?}"
    );
    let err = RawJob::new("{escape}", "rt", &1).expect_err("bad type");
    assert!(
        matches!(
            err,
            Error::InvalidName {
                kind: "job type",
                ..
            }
        ),
        "{err:?}"
    );
    let err = RawJob::new("ok.type", &"q".repeat(65), &1).expect_err("long queue");
    assert!(
        matches!(err, Error::InvalidName { kind: "queue", .. }),
        "{err:?}"
    );

    assert_eq!(env.ready("rt").await, 0, "nothing was written");
    let keys: Vec<String> = env
        .raw
        .custom(
            fred::types::CustomCommand::new_static("KEYS", fred::types::ClusterHash::Random, false),
            vec![format!("{}*", env.prefix)],
        )
        .await
        .expect("keys");
    assert!(keys.is_empty(), "refused jobs left keys behind: {keys:?}");
}

#[tokio::test]
async fn raw_jobs_from_json_reach_typed_handlers() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(pair::handler())
            .build()
            .expect("worker"),
    );
    let json: serde_json::Value = serde_json::from_str(r#"[42, "from json"]"#).expect("json");
    let id = env
        .client
        .enqueue(RawJob::new("rt.pair", "rt", &json).expect("raw job"))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "raw job ran", || async {
        support::runs(id.as_str()) == 1
    })
    .await;
    assert_eq!(
        support::values::<Pair>(id.as_str()),
        vec![Pair(42, "from json".into())]
    );
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn connecting_fails_fast_with_a_clear_error() {
    let err = Client::connect("redis://127.0.0.1:1")
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_connection(), "{err:?}");
    let err = Client::connect("nonsense://user:hunter2@host")
        .await
        .expect_err("bad url");
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains("hunter2"),
        "password leaked: {err}"
    );
}

/// The job id of every entry of `stream`, oldest first: its `id` field, or for a job
/// enqueued to run now, its queue, the stream's priority letter and its entry id.
async fn stream_ids(env: &TestEnv, stream: &str) -> Vec<String> {
    let entries: Vec<(String, HashMap<String, Value>)> = env
        .raw
        .xrange(stream, "-", "+", None)
        .await
        .expect("xrange");
    let queue = stream
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(q, _)| q.to_string())
        .unwrap_or_default();
    let letter = match stream.rsplit(':').next() {
        Some("high") => "h",
        Some("low") => "l",
        _ => "n",
    };
    entries
        .into_iter()
        .map(|(entry, fields)| {
            fields
                .get("id")
                .and_then(Value::as_string)
                .unwrap_or_else(|| format!("{queue}:{letter}-{entry}"))
        })
        .collect()
}

/// Enqueues 730 jobs over queues `a` and `b` in one bulk, interleaved unevenly so batches
/// of a hundred close at different times; every 97th job of `a` is unique (some of them
/// duplicates) and every 89th delayed, each of which closes `a`'s open batch. Then checks
/// that each ready stream holds its jobs in enqueue order.
async fn mixed_bulk_keeps_order(env: &TestEnv, client: &Client, a: &str, b: &str) {
    let mut jobs = Vec::new();
    let mut expected: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut delayed = Vec::new();
    for n in 0..730usize {
        let queue = if n % 3 == 0 { b } else { a };
        let mut job = RawJob::new("order.test", queue, &n).expect("job");
        if queue == a && n % 97 == 0 {
            job = job.unique(format!("u{}", n % 2), Duration::from_secs(60));
        } else if queue == a && n % 89 == 0 {
            job = job.delay(Duration::from_secs(3600));
            delayed.push(n);
        }
        jobs.push(job);
        expected.entry(queue).or_default().push(n);
    }
    let ids = client.enqueue_bulk(jobs).await.expect("bulk enqueue");
    assert_eq!(ids.len(), 730);

    for queue in [a, b] {
        // The ids the stream should hold, in enqueue order: delayed jobs are not there yet,
        // and a duplicate of a unique job returns the first one's id without a new entry.
        // Compared as job numbers, which read better than ids when it fails.
        let number = |id: &str| ids.iter().position(|i| i.as_str() == id);
        let mut want: Vec<usize> = Vec::new();
        for &n in &expected[queue] {
            let first = number(ids[n].as_str()).expect("an id of the bulk");
            if delayed.contains(&n) || want.contains(&first) {
                continue;
            }
            want.push(first);
        }
        let got: Vec<Option<usize>> = stream_ids(env, &env.stream(queue, "normal"))
            .await
            .iter()
            .map(|id| number(id))
            .collect();
        let want: Vec<Option<usize>> = want.into_iter().map(Some).collect();
        assert_eq!(got, want, "entries of queue {queue}, by job number");
    }
    let scheduled: u64 = env
        .raw
        .zcard(format!("{}:{{{a}}}:scheduled", env.prefix))
        .await
        .expect("zcard");
    assert_eq!(scheduled as usize, delayed.len());
}

#[tokio::test]
async fn a_bulk_enqueue_keeps_every_stream_in_order_across_batches_queues_and_unique_jobs() {
    let env = TestEnv::start().await;
    // A new client's first write, on a server that has not seen the scripts.
    mixed_bulk_keeps_order(&env, &env.client, "a", "b").await;
    // The same client after the server lost its scripts (as after a restart).
    let _: () = env.raw.script_flush(false).await.expect("script flush");
    mixed_bulk_keeps_order(&env, &env.client, "c", "d").await;
}

#[tokio::test]
async fn a_queue_named_twice_is_consumed_by_one_loop() {
    let env = TestEnv::start().await;
    let worker = Worker::builder(env.client.clone())
        .queues(["rt-a", "rt-b", "rt-a"])
        .handler(ping::handler())
        .build()
        .expect("worker");
    assert_eq!(
        worker.queues(),
        ["rt-a", "rt-b"],
        "one loop per distinct queue, order kept"
    );
    let running = support::spawn(worker);
    let mut ids = Vec::new();
    for queue in ["rt-a", "rt-b"] {
        let job = RawJob::new("rt.ping", queue, &Ping).expect("raw job");
        ids.push(env.client.enqueue(job).await.expect("enqueue"));
    }
    eventually(
        Duration::from_secs(10),
        "both queues' jobs ran once",
        || async { ids.iter().all(|id| support::runs(id.as_str()) == 1) },
    )
    .await;
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn zero_attempts_is_refused_at_enqueue() {
    let env = TestEnv::start().await;
    let job = ping::job(Ping).max_attempts(0);
    let err = env
        .client
        .enqueue(job)
        .await
        .expect_err("0 is never a budget");
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("max_attempts must be at least 1")),
        "{err:?}"
    );
    assert_eq!(env.ready("rt").await, 0, "nothing written");
}
