use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, RetryPolicy, Worker, job_handler};

use crate::support::{self, TestEnv, eventually};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
}

#[job_handler(name = "shop.order", queue = "shop")]
async fn order(o: Order, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), o.id);
    Ok(())
}

/// Fields of a well-formed entry, as a person might write them with redis-cli.
fn entry(id: &str, job_type: &str, payload: Vec<u8>) -> Vec<(&'static str, Value)> {
    vec![
        ("id", id.into()),
        ("type", job_type.into()),
        ("attempt", "1".into()),
        ("max_attempts", "3".into()),
        ("enqueued_at", "1700000000000".into()),
        ("payload", Value::Bytes(payload.into())),
    ]
}

#[tokio::test]
async fn malformed_entries_and_unknown_types_are_dead_lettered_while_good_jobs_flow() {
    let env = TestEnv::start().await;
    // Workers decode at most 4 KiB payloads here.
    let worker_client = env.client_with(|b| b.payload_limit(4096)).await;
    let running = support::spawn(
        Worker::builder(worker_client)
            .concurrency(4)
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(20)))
            .handler(order::handler())
            .build()
            .expect("worker"),
    );
    let stream = env.stream("shop", "normal");
    let good = |n: u64| {
        order::job(Order {
            id: n,
            items: vec!["tea".into()],
        })
    };

    let mut good_ids = vec![env.client.enqueue(good(1)).await.expect("enqueue")];
    let xadd = |fields: Vec<(&'static str, Value)>| {
        let raw = env.raw.clone();
        let stream = stream.clone();
        async move {
            let id: String = raw
                .xadd(stream, false, None, "*", fields)
                .await
                .expect("xadd by hand");
            id
        }
    };
    // 1. Not a job at all.
    xadd(vec![("hello", "world".into())]).await;
    good_ids.push(env.client.enqueue(good(2)).await.expect("enqueue"));
    // 2. A job whose attempt is not a number.
    let mut f = entry(
        "bad-attempt",
        "shop.order",
        rmp_serde::to_vec_named(&Order {
            id: 0,
            items: vec![],
        })
        .unwrap_or_default(),
    );
    f[2] = ("attempt", "first".into());
    xadd(f).await;
    // 3. A type no worker knows.
    xadd(entry(
        "unknown-1",
        "shop.refund",
        rmp_serde::to_vec_named(&Order {
            id: 0,
            items: vec![],
        })
        .unwrap_or_default(),
    ))
    .await;
    good_ids.push(env.client.enqueue(good(3)).await.expect("enqueue"));
    // 4. A payload of the wrong shape for the handler.
    xadd(entry(
        "wrong-shape",
        "shop.order",
        rmp_serde::to_vec_named(&"just a string").unwrap_or_default(),
    ))
    .await;
    // 5. Bytes that are not MessagePack at all.
    xadd(entry("garbage", "shop.order", vec![0xc1, 0xff, 0x00])).await;
    // 6. A payload over the worker's limit.
    let big = Order {
        id: 9,
        items: vec!["x".repeat(10_000)],
    };
    xadd(entry(
        "too-big",
        "shop.order",
        rmp_serde::to_vec_named(&big).unwrap_or_default(),
    ))
    .await;
    // 7. Deeply nested arrays, within the size limit.
    let mut deep = vec![0x91u8; 3000];
    deep.push(0xc0);
    xadd(entry("deep", "shop.order", deep)).await;
    good_ids.push(env.client.enqueue(good(4)).await.expect("enqueue"));

    eventually(Duration::from_secs(10), "good jobs ran", || async {
        good_ids.iter().all(|id| support::runs(id.as_str()) == 1)
    })
    .await;
    eventually(Duration::from_secs(10), "seven dead letters", || async {
        env.xlen(&env.dlq("shop")).await == 7
    })
    .await;
    eventually(Duration::from_secs(5), "stream drained", || async {
        env.ready("shop").await == 0 && env.pending("shop").await == 0
    })
    .await;

    let dead = env.dead_letters("shop").await;
    let by = |id: &str| {
        dead.iter()
            .find(|d| d.get("id").map(String::as_str) == Some(id))
            .cloned()
            .unwrap_or_default()
    };
    let hello = dead
        .iter()
        .find(|d| d.contains_key("hello"))
        .cloned()
        .expect("the non-job entry keeps its fields");
    assert_eq!(hello.get("reason").map(String::as_str), Some("bad_entry"));
    assert!(
        hello
            .get("error")
            .is_some_and(|e| e.contains("`type` is missing")),
        "{hello:?}"
    );
    assert!(
        hello.get("id").is_some_and(|id| id.starts_with("shop:n-")),
        "a dead letter names its job, by entry when the entry had no id: {hello:?}"
    );
    assert!(
        hello.get("origin").is_some_and(|o| o.starts_with(&stream)),
        "{hello:?}"
    );
    assert_eq!(hello.get("deliveries").map(String::as_str), Some("1"));
    assert!(
        hello
            .get("failed_at")
            .is_some_and(|t| t.parse::<u64>().is_ok())
    );

    let cases = [
        ("bad-attempt", "bad_entry", "`attempt` is not a number"),
        ("unknown-1", "unknown_type", "shop.refund"),
        ("wrong-shape", "bad_entry", "does not decode"),
        ("garbage", "bad_entry", "does not decode"),
        ("too-big", "bad_entry", "exceeds the limit of 4096"),
        ("deep", "bad_entry", "does not decode"),
    ];
    for (id, reason, error) in cases {
        let d = by(id);
        assert_eq!(
            d.get("reason").map(String::as_str),
            Some(reason),
            "{id}: {d:?}"
        );
        assert!(
            d.get("error").is_some_and(|e| e.contains(error)),
            "{id}: {d:?}"
        );
        assert!(
            d.contains_key("payload"),
            "{id}: the payload is kept for inspection"
        );
    }
    running
        .shutdown()
        .await
        .expect("the worker survived all of it");
}

#[tokio::test]
async fn a_hand_written_entry_cannot_spoof_dead_letter_fields() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(20)))
            .handler(order::handler())
            .build()
            .expect("worker"),
    );
    let mut f = entry("spoof", "nobody.knows", vec![0x80]);
    f.push(("reason", "failed".into()));
    f.push(("origin", "elsewhere".into()));
    let _: String = env
        .raw
        .xadd(env.stream("shop", "low"), false, None, "*", f)
        .await
        .expect("xadd");
    eventually(Duration::from_secs(10), "dead-lettered", || async {
        env.xlen(&env.dlq("shop")).await == 1
    })
    .await;
    let entries: Vec<(String, Vec<(String, Value)>)> = env
        .raw
        .xrange(env.dlq("shop"), "-", "+", None)
        .await
        .expect("xrange");
    let reasons: Vec<String> = entries[0]
        .1
        .iter()
        .filter(|(k, _)| k == "reason")
        .filter_map(|(_, v)| v.as_string())
        .collect();
    assert_eq!(reasons, vec!["unknown_type".to_string()]);
    let origins = entries[0].1.iter().filter(|(k, _)| k == "origin").count();
    assert_eq!(origins, 1);
    running.shutdown().await.expect("clean shutdown");
}

/// An entry's `id` becomes a status key and a log field: a huge id or one with a line break
/// is dead-lettered as `bad_entry` with a short, one-line error, and writes no status.
#[tokio::test]
async fn hostile_job_ids_are_dead_lettered_without_a_status() {
    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(order::handler())
            .build()
            .expect("worker"),
    );
    let payload = rmp_serde::to_vec_named(&Order {
        id: 1,
        items: vec![],
    })
    .unwrap_or_default();
    let huge = "i".repeat(1024 * 1024);
    for id in [
        huge.as_str(),
        "x\n2026-12-04T00:00:00Z  INFO forged line",
        "",
    ] {
        let _: String = env
            .raw
            .xadd(
                env.stream("shop", "normal"),
                false,
                None,
                "*",
                entry(id, "shop.order", payload.clone()),
            )
            .await
            .expect("xadd");
    }
    let good = env
        .client
        .enqueue(order::job(Order {
            id: 2,
            items: vec![],
        }))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "three dead letters", || async {
        env.xlen(&env.dlq("shop")).await == 3
    })
    .await;
    eventually(Duration::from_secs(10), "the good job ran", || async {
        support::runs(good.as_str()) == 1
    })
    .await;
    // A run is recorded as it starts: its acknowledgement may still be on the way.
    eventually(
        Duration::from_secs(10),
        "the good job succeeded",
        || async { env.state(good.as_str()).await == Some(stevedore::JobState::Succeeded) },
    )
    .await;
    for d in env.dead_letters("shop").await {
        assert_eq!(d.get("reason").map(String::as_str), Some("bad_entry"));
        let error = d.get("error").cloned().unwrap_or_default();
        assert!(error.starts_with("field `id`"), "{error:.200}");
        assert!(error.len() < 300 && !error.contains('\n'), "{error:.400}");
    }
    // No status was written for the hostile ids; the good job's success was recorded (in
    // its queue's done bucket: it never needed a status hash).
    let statuses: Vec<String> = env
        .raw
        .custom(
            fred::cmd!("KEYS"),
            vec![format!("{}:{{shop}}:job:*", env.prefix)],
        )
        .await
        .expect("keys");
    assert_eq!(statuses, Vec::<String>::new());
    running.shutdown().await.expect("the worker survived");
}
