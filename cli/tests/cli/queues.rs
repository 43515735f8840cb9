use serde_json::Value;

use crate::support::{Env, queue_info};

#[tokio::test]
async fn enqueued_jobs_show_in_queues_stats_and_job_status() {
    let env = Env::start().await;
    let urgent = env
        .ok(&[
            "enqueue",
            "mail.send",
            "-q",
            "mail",
            "--payload",
            r#"{"to":"ada"}"#,
            "--priority",
            "high",
        ])
        .await;
    let urgent = urgent.trim();
    assert!(
        urgent.starts_with("mail:h-") && !urgent.contains(char::is_whitespace),
        "one job id, named by its entry in the high stream: {urgent:?}"
    );
    let later = env
        .json(&[
            "enqueue",
            "mail.send",
            "-q",
            "mail",
            "--delay",
            "1h",
            "--max-attempts",
            "2",
        ])
        .await;
    assert_eq!(later["duplicate"], false);
    let later = later["id"].as_str().expect("id").to_string();

    let bulk = env
        .ok(&[
            "enqueue",
            "mail.digest",
            "-q",
            "mail",
            "--count",
            "500",
            "--priority",
            "low",
        ])
        .await;
    assert!(
        bulk.starts_with("enqueued 500 mail.digest jobs on mail: first "),
        "{bulk}"
    );
    let bulk = env
        .json(&["enqueue", "mail.digest", "-q", "mail", "-n", "1500"])
        .await;
    assert_ne!(bulk["first"], bulk["last"]);

    let queues = env.json(&["queues"]).await;
    let mail = queue_info(&queues, "mail");
    assert_eq!(mail["paused"], false);
    assert_eq!(mail["stats"]["ready"]["high"], 1);
    assert_eq!(mail["stats"]["ready"]["low"], 500);
    assert_eq!(mail["stats"]["ready"]["normal"], 1500);
    assert_eq!(mail["stats"]["scheduled"], 1);
    let table = env.ok(&["queues"]).await;
    let header = table.lines().next().expect("a header");
    assert!(
        header.starts_with("QUEUE") && header.contains("READY"),
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..6],
        ["mail", "active", "2001", "0", "1", "0"],
        "{table}"
    );

    let stats = env.json(&["stats"]).await;
    assert_eq!(stats["queues"], 1);
    assert_eq!(stats["ready"], 2001);
    assert_eq!(stats["scheduled"], 1);
    let human = env.ok(&["stats"]).await;
    assert!(
        human
            .lines()
            .any(|l| l.split_whitespace().eq(["ready", "2001"])),
        "{human}"
    );

    let status = env.json(&["job", urgent]).await;
    assert_eq!(status["state"], "queued");
    assert_eq!(status["type"], "mail.send");
    assert_eq!(status["queue"], "mail");
    let status = env.json(&["job", &later]).await;
    assert_eq!(status["state"], "scheduled");
    assert_eq!(status["max_attempts"], 2);
    let human = env.ok(&["job", &later]).await;
    assert!(human.contains("state         scheduled"), "{human}");
}

#[tokio::test]
async fn a_unique_key_admits_one_job() {
    let env = Env::start().await;
    let args = [
        "enqueue",
        "report.build",
        "-q",
        "reports",
        "--unique",
        "r-11",
        "--unique-ttl",
        "1h",
    ];
    let first = env.json(&args).await;
    let again = env.json(&args).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(again["duplicate"], true);
    assert_eq!(first["id"], again["id"]);
    let queues = env.json(&["queues"]).await;
    assert_eq!(
        queue_info(&queues, "reports")["stats"]["ready"]["normal"],
        1
    );
}

#[tokio::test]
async fn pause_and_resume_show_in_queues() {
    let env = Env::start().await;
    env.ok(&["enqueue", "x.y", "-q", "work"]).await;
    let paused = |v: Value| queue_info(&v, "work")["paused"].clone();
    assert_eq!(paused(env.json(&["queues"]).await), false);

    assert_eq!(env.ok(&["pause", "work"]).await, "work: paused\n");
    assert_eq!(paused(env.json(&["queues"]).await), true);
    assert!(env.ok(&["queues"]).await.contains("paused"));
    let again = env.json(&["pause", "work"]).await;
    assert_eq!(again["changed"], false);
    assert_eq!(env.json(&["stats"]).await["paused"], 1);

    assert_eq!(env.ok(&["resume", "work"]).await, "work: resumed\n");
    assert_eq!(paused(env.json(&["queues"]).await), false);
    env.fails(&["pause", "nowhere"], 1, "unknown queue \"nowhere\"")
        .await;
}

#[tokio::test]
async fn partitions_are_shown_set_on_an_empty_queue_and_refused_on_a_busy_one() {
    let env = Env::start().await;
    let shown = env.json(&["partitions", "orders"]).await;
    assert_eq!(
        (shown["partitions"].clone(), shown["changed"].clone()),
        (1.into(), false.into())
    );
    let set = env.json(&["partitions", "orders", "3"]).await;
    assert_eq!(
        (set["partitions"].clone(), set["changed"].clone()),
        (3.into(), true.into())
    );
    let names: Vec<String> = set["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names.iter().all(|n| n.starts_with("orders~")), "{names:?}");
    let text = env.ok(&["partitions", "orders"]).await;
    assert!(text.starts_with("orders: 3 partitions: "), "{text}");

    // Jobs go into the partitions; the queue is listed once, with their sum.
    env.ok(&["enqueue", "order.ship", "-q", "orders", "-n", "6"])
        .await;
    let queues: Value = env.json(&["queues"]).await;
    assert_eq!(queues.as_array().map(Vec::len), Some(1), "{queues}");
    let q = queue_info(&queues, "orders");
    assert_eq!(
        (
            q["stats"]["ready"]["normal"].clone(),
            q["stats"]["partitions"].clone()
        ),
        (6.into(), 3.into())
    );
    let table = env.ok(&["queues"]).await;
    assert!(table.contains("orders (3 partitions)"), "{table}");
    // One partition key, one partition.
    let mut parts = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let id = env
            .ok(&[
                "enqueue",
                "order.ship",
                "-q",
                "orders",
                "--partition-key",
                "c-17",
            ])
            .await;
        parts.insert(id.split_once(':').map(|(p, _)| p.to_string()));
    }
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(
        parts.iter().flatten().all(|p| names.contains(p)),
        "{parts:?}"
    );
    // A partition counts alone by its name; a busy queue keeps its count.
    let one = env.json(&["partitions", &names[0]]).await;
    assert_eq!(one["partitions"], 1, "{one}");
    env.fails(&["partitions", "orders", "2"], 1, "still holds 10 jobs")
        .await;
    env.fails(&["partitions", "orders", "0"], 2, "1 to 128 partitions")
        .await;
}

#[tokio::test]
async fn limits_are_listed_set_and_removed() {
    let env = Env::start().await;
    env.ok(&["enqueue", "mail.send", "-q", "mail"]).await;
    let out = env
        .ok(&[
            "limits",
            "set",
            "queue",
            "mail",
            "--rate",
            "10/s",
            "--max-running",
            "3",
        ])
        .await;
    let row = out.lines().nth(1).unwrap_or_default();
    for cell in ["queue", "mail", "10/1s", "3", "10", "0"] {
        assert!(row.split_whitespace().any(|c| c == cell), "{cell} in {out}");
    }
    let list = env.json(&["limits"]).await;
    assert_eq!(list[0]["rate"], "10/1s", "{list}");
    assert_eq!(list[0]["max_running"], 3, "{list}");
    assert_eq!(list[0]["queues"][0]["queue"], "mail", "{list}");
    assert_eq!(list[0]["queues"][0]["tokens"], 10.0, "{list}");
    assert_eq!(list[0]["queues"][0]["running"], 0, "{list}");

    env.fails(
        &["limits", "set", "type", "mail.nope", "--rate", "5/s"],
        2,
        "unknown job type",
    )
    .await;
    env.fails(&["limits", "set", "queue", "mail"], 2, "nothing to change")
        .await;
    env.fails(
        &["limits", "set", "queue", "mail", "--rate", "0/s"],
        2,
        "lets nothing run",
    )
    .await;
    env.fails(
        &["limits", "set", "queue", "mail", "--max-running", "0"],
        2,
        "lets nothing run",
    )
    .await;
    env.fails(
        &["limits", "set", "tenant", "x", "--rate", "1/s"],
        2,
        "use queue, type or key",
    )
    .await;

    let left = env
        .json(&["limits", "remove", "queue", "mail", "--rate"])
        .await;
    assert_eq!(left[0]["rate"], Value::Null, "{left}");
    assert_eq!(left[0]["max_running"], 3, "{left}");
    env.ok(&["limits", "remove", "queue", "mail"]).await;
    let none = env.ok(&["limits"]).await;
    assert!(none.starts_with("no limits under prefix"), "{none}");
}

#[tokio::test]
async fn a_full_queue_exits_75_and_a_waiting_enqueue_gets_in_when_room_is_made() {
    let env = Env::start().await;
    let set = env
        .json(&["limits", "set", "queue", "jobs", "--capacity", "2"])
        .await;
    assert_eq!(set[0]["capacity"], 2, "{set}");
    env.ok(&["enqueue", "work.do", "-q", "jobs", "-n", "2"])
        .await;
    // A refusal writes no job: it leaves the queue's full mark and counts itself.
    for (args, says) in [
        (vec!["enqueue", "work.do", "-q", "jobs"], "is full"),
        (
            vec!["enqueue", "work.do", "-q", "jobs", "-n", "3"],
            "nothing was enqueued",
        ),
        (
            vec![
                "enqueue",
                "work.do",
                "-q",
                "jobs",
                "--wait-for-room",
                "300ms",
            ],
            "is full",
        ),
    ] {
        let run = env.run(&args).await;
        assert_eq!(run.code, Some(75), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with("error: ") && run.stderr.contains(says),
            "{args:?}: {run:?}"
        );
    }
    let list = env.json(&["limits"]).await;
    assert_eq!(list[0]["capacity"], 2, "{list}");
    assert_eq!(list[0]["queues"][0]["waiting"], 2, "{list}");
    // One, three, and the waiting enqueue's first try and its last, at the deadline.
    assert_eq!(list[0]["queues"][0]["refused"], 6, "{list}");

    // A waiting enqueue hears the room a raised capacity makes.
    let waiting = env
        .command(&["enqueue", "work.do", "-q", "jobs", "--wait-for-room", "20s"])
        .output();
    let raise = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        env.ok(&["limits", "set", "queue", "jobs", "--capacity", "3"])
            .await
    };
    let (out, _) = tokio::join!(waiting, raise);
    let out = out.expect("the binary runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list = env.json(&["limits"]).await;
    assert_eq!(list[0]["queues"][0]["waiting"], 3, "{list}");

    env.fails(
        &["limits", "set", "queue", "jobs", "--capacity", "0"],
        2,
        "at least 1",
    )
    .await;
    env.fails(
        &["limits", "set", "type", "work.do", "--capacity", "5"],
        2,
        "bounds a queue",
    )
    .await;
    let left = env
        .json(&["limits", "remove", "queue", "jobs", "--capacity"])
        .await;
    assert!(left.as_array().is_some_and(Vec::is_empty), "{left}");
    env.ok(&["enqueue", "work.do", "-q", "jobs"]).await;
}
