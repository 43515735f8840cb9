use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stevedore::admin::{AdminConfig, router, serve};
use stevedore::{JobContext, JobError, RawJob, Worker, WorkerBuilder, job_handler};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{self, Running, TestEnv, eventually};

/// Headless Chromium through chromedriver, and page helpers that wait with a deadline.
mod browser;

use browser::{Browser, browser_available};

const TOKEN: &str = "t";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chore {
    n: u32,
}

#[job_handler(name = "ui.ok", queue = "ui", max_attempts = 3)]
async fn succeeds(_c: Chore, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Ok(())
}

/// Dead-letters a job the first time it runs; once replayed, it succeeds.
#[job_handler(name = "ui.doomed", queue = "ui")]
async fn doomed(_c: Chore, ctx: JobContext) -> Result<(), JobError> {
    let first = support::runs(ctx.id()) == 0;
    support::record(ctx.id(), ctx.attempt());
    if first {
        Err(JobError::permanent("the account was deleted"))
    } else {
        Ok(())
    }
}

#[job_handler(name = "ui.broken", queue = "ui")]
async fn broken(_c: Chore, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Err(JobError::permanent("no such template"))
}

/// Markup that would run a script if it were ever parsed as HTML. No double quotes, so
/// the API's messages (which quote names Rust's way) show them unchanged.
const HOSTILE_ERROR: &str =
    "<img src=x onerror=window.__xss='error'><script>window.__xss='script'</script>";
const HOSTILE_TYPE: &str = "<img src=x onerror=window.__xss='type'>";
const HOSTILE_WORKER: &str = "<img src=x onerror=window.__xss='worker'>";
const HOSTILE_PAYLOAD: &str = "<img src=x onerror=window.__xss='payload'>";
const HOSTILE_ID: &str = "<img src=x onerror=window.__xss='lookup'>";
const HOSTILE_HOOK: &str = "http://example.com/<img src=x onerror=window.__xss='hook'>";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    note: String,
}

#[job_handler(name = "ui.hostile", queue = "ui-x", max_attempts = 1)]
async fn hostile(_n: Note, _ctx: JobContext) -> Result<(), JobError> {
    Err(JobError::permanent(format!(
        "upstream said {HOSTILE_ERROR}"
    )))
}

/// A test's Redis, its worker, and the admin router (token [`TOKEN`]) on a loopback port.
struct App {
    env: TestEnv,
    worker: Running,
    server: CancellationToken,
    url: String,
}

impl App {
    async fn start(worker: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> App {
        let env = TestEnv::start().await;
        let built = worker(Worker::builder(env.client.clone()))
            .build()
            .expect("worker builds");
        let worker = support::spawn(built);
        let app = router(env.client.admin(), AdminConfig::with_token(TOKEN));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let server = CancellationToken::new();
        tokio::spawn(serve(listener, app, server.clone().cancelled_owned()));
        App {
            env,
            worker,
            server,
            url: format!("http://{addr}/"),
        }
    }

    async fn stop(self) {
        self.server.cancel();
        self.worker.shutdown().await.expect("worker stops");
    }

    async fn paused(&self, queue: &str) -> bool {
        self.env
            .client
            .admin()
            .is_paused(queue)
            .await
            .expect("is_paused")
    }
}

/// Fills the submit form and sends it; returns the new job's id as the page shows it.
async fn submit(b: &Browser, job_type: &str, queue: &str, payload: &str) -> String {
    b.fill("#job-type", job_type).await;
    b.fill("#job-queue", queue).await;
    b.fill("#job-payload", payload).await;
    // The previous confirmation goes first, so the id read below is the new job's.
    b.js(
        "document.getElementById('submit-msg').textContent = '';",
        vec![],
    )
    .await;
    b.click("#job-submit").await;
    b.wait_text("#submit-msg", "the enqueue's confirmation", |t| {
        t.starts_with("Enqueued job ")
    })
    .await;
    b.text("#submit-id").await.expect("the job id link")
}

#[tokio::test]
async fn the_dashboard_shows_queues_and_operates_them_in_a_real_browser() {
    let Some((chromium, driver)) =
        browser_available("the_dashboard_shows_queues_and_operates_them_in_a_real_browser")
    else {
        return;
    };
    let started = Instant::now();
    let app = App::start(|w| {
        w.consumer_name("ui-worker-1")
            .concurrency(4)
            .handler(succeeds::handler())
            .handler(doomed::handler())
            .handler(broken::handler())
    })
    .await;
    let b = Browser::start(chromium, driver).await;
    let browser_up = started.elapsed();
    b.open(&app.url).await;

    // Reads need the token too: the page says so until it is entered.
    b.wait_text("#conn", "the message for a 401 on reads", |t| {
        t.contains("needs an API token")
    })
    .await;
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;

    // The totals, the queue and the worker show up.
    b.wait_number("#t-workers", "one live worker", |n| n == 1)
        .await;
    b.wait_for("#queues tr[data-queue='ui']", "queue ui in the queue table")
        .await;
    b.wait_text("#workers tbody td", "the worker's id", |t| {
        t == "ui-worker-1"
    })
    .await;
    assert_eq!(b.text("#t-succeeded").await.as_deref(), Some("0"));

    // Without the token a change is refused, and the page says what to do.
    b.click("#token-clear").await;
    b.click("#queues tr[data-queue='ui'] button.pause").await;
    b.wait_text("#notice-text", "the message for a 401", |t| {
        t.contains("needs an API token")
    })
    .await;
    assert!(!app.paused("ui").await);
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;
    b.wait_text("#token-state", "the token kept", |t| {
        t.contains("token set")
    })
    .await;

    // A job submitted through the form runs, and the totals move.
    b.fill("#job-max-attempts", "2").await;
    b.select("#job-priority", "high").await;
    let id = submit(&b, "ui.ok", "ui", r#"{"n": 1}"#).await;
    b.wait_number(
        "#t-succeeded",
        "the succeeded total counting the job",
        |n| n >= 1,
    )
    .await;
    assert_eq!(support::values::<u32>(&id), vec![1], "the job ran once");
    b.wait_number(
        "#queues tr[data-queue='ui'] td:nth-child(11)",
        "the queue's succeeded count",
        |n| n >= 1,
    )
    .await;

    // Looked up by id.
    b.fill("#lookup-id", &id).await;
    b.click("#lookup-go").await;
    b.wait_text("#lookup-state", "the job's state", |t| t == "succeeded")
        .await;
    let details = b.text("#lookup-result").await.unwrap_or_default();
    assert!(
        details.contains("ui.ok") && details.contains("1 of 2"),
        "lookup shows type and attempts: {details}"
    );
    b.fill("#job-max-attempts", "").await;
    b.select("#job-priority", "").await;

    // A job that fails for good is listed in the dead letters, with its details and
    // payload; replayed, it runs again and leaves the list.
    let doomed_id = submit(&b, "ui.doomed", "ui", r#"{"n": 2}"#).await;
    b.wait_number("#t-dead", "one dead letter", |n| n == 1)
        .await;
    b.click("#queues tr[data-queue='ui'] button.show-dlq").await;
    b.wait_text(
        "#dlq tbody td:nth-child(2)",
        "the dead letter's type",
        |t| t == "ui.doomed",
    )
    .await;
    b.wait_text(
        "#dlq tbody td:nth-child(4)",
        "the dead letter's error",
        |t| t.contains("the account was deleted"),
    )
    .await;
    b.click("#dlq tbody tr button.show").await;
    b.wait_text("#dlq-d-payload", "the payload", |t| t.contains(r#""n": 2"#))
        .await;
    let fields = b.text("#dlq-d-fields").await.unwrap_or_default();
    assert!(
        fields.contains(&doomed_id),
        "details show the job id: {fields}"
    );
    b.click("#dlq tbody tr button.replay").await;
    b.wait_text("#dlq-msg", "the replay's confirmation", |t| {
        t.starts_with("Replayed dead letter")
    })
    .await;
    b.wait_number("#t-dead", "no dead letters", |n| n == 0)
        .await;
    b.wait_text("#dlq-empty", "an empty dead-letter list", |t| {
        t == "No dead letters in ui."
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the replayed job runs again",
        || async { support::runs(&doomed_id) == 2 },
    )
    .await;

    // Replay and purge by filter: the page counts first (a dry run), then asks.
    for n in [3, 4] {
        submit(&b, "ui.doomed", "ui", &format!(r#"{{"n": {n}}}"#)).await;
    }
    submit(&b, "ui.broken", "ui", r#"{"n": 5}"#).await;
    b.wait_text("#dlq-summary", "three dead letters", |t| {
        t.starts_with("3 dead letters in ui;")
    })
    .await;
    b.fill("#dlq-type", "ui.doomed").await;
    b.click("#dlq-apply").await;
    b.wait_text("#dlq-summary", "the filtered list", |t| {
        t.contains("showing 2 matching type ui.doomed")
    })
    .await;
    b.click("#dlq-replay-matching").await;
    b.wait_text("#dlq-confirm-text", "the replay's confirm step", |t| {
        t.starts_with("Replay 2 dead letters of ui matching type ui.doomed?")
    })
    .await;
    assert_eq!(
        app.env
            .client
            .dead_letters("ui")
            .expect("dlq")
            .count()
            .await
            .expect("count"),
        3,
        "a dry run changes nothing"
    );
    b.click("#dlq-confirm-yes").await;
    b.wait_text("#dlq-msg", "the replay's result", |t| {
        t == "Replayed 2 dead letters of ui matching type ui.doomed."
    })
    .await;
    b.wait_number("#t-dead", "one dead letter left", |n| n == 1)
        .await;
    b.fill("#dlq-type", "").await;
    b.select("#dlq-reason", "failed").await;
    b.click("#dlq-purge-matching").await;
    b.wait_text("#dlq-confirm-text", "the purge's confirm step", |t| {
        t.starts_with("Purge 1 dead letter of ui matching reason failed?")
    })
    .await;
    b.click("#dlq-confirm-yes").await;
    b.wait_text("#dlq-msg", "the purge's result", |t| {
        t == "Purged 1 dead letter of ui matching reason failed."
    })
    .await;
    b.wait_number("#t-dead", "no dead letters", |n| n == 0)
        .await;

    // Pause and resume.
    let state = "#queues tr[data-queue='ui'] td:nth-child(2)";
    b.click("#queues tr[data-queue='ui'] button.pause").await;
    b.wait_text(state, "the queue paused", |t| t == "paused")
        .await;
    assert!(app.paused("ui").await);
    b.wait_text(
        "#queues tr[data-queue='ui'] button.pause",
        "a resume button",
        |t| t == "Resume",
    )
    .await;
    b.click("#queues tr[data-queue='ui'] button.pause").await;
    b.wait_text(state, "the queue active again", |t| t == "active")
        .await;
    assert!(!app.paused("ui").await);

    b.close().await;
    app.stop().await;
    eprintln!(
        "dashboard browser test: {:.1} s (browser ready after {:.1} s)",
        started.elapsed().as_secs_f64(),
        browser_up.as_secs_f64()
    );
}

#[tokio::test]
async fn the_dashboard_shows_sets_and_removes_limits_in_a_real_browser() {
    let Some((chromium, driver)) =
        browser_available("the_dashboard_shows_sets_and_removes_limits_in_a_real_browser")
    else {
        return;
    };
    let app = App::start(|w| {
        w.handler(succeeds::handler()).rate_limit(
            stevedore::LimitScope::Type("ui.ok".into()),
            stevedore::RateLimit::per_second(5),
        )
    })
    .await;
    let b = Browser::start(chromium, driver).await;
    b.open(&app.url).await;
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;
    // The worker's declared limit shows, on the queue its worker consumes.
    b.wait_text(
        "#limits tr[data-limit='type:ui.ok']",
        "the declared rate limit",
        |t| t.contains("5/1s") && t.contains("ui.ok on ui"),
    )
    .await;
    // A limit that is none is refused, and the page says why.
    b.select("#limit-scope", "queue").await;
    b.fill("#limit-name", "ui").await;
    b.fill("#limit-rate", "0/s").await;
    b.click("#limit-set").await;
    b.wait_text("#limit-msg", "the refusal", |t| {
        t.contains("lets nothing run")
    })
    .await;
    // A concurrency limit on the queue, set from the page, reaches Redis and the table.
    b.fill("#limit-rate", "").await;
    b.fill("#limit-max-running", "2").await;
    b.click("#limit-set").await;
    b.wait_text("#limit-msg", "the confirmation", |t| {
        t.contains("at most 2 running")
    })
    .await;
    b.wait_for(
        "#limits tr[data-limit='queue:ui']",
        "the queue's limit in the table",
    )
    .await;
    let client = &app.env.client;
    assert_eq!(
        client.concurrency_limits().await.expect("limits"),
        vec![(stevedore::LimitScope::Queue("ui".into()), 2)]
    );
    // Removing takes a second click.
    b.click("#limits tr[data-limit='queue:ui'] button.remove")
        .await;
    assert_eq!(client.concurrency_limits().await.expect("limits").len(), 1);
    b.click("#limits tr[data-limit='queue:ui'] button.remove")
        .await;
    b.wait_text("#limit-msg", "the removal", |t| {
        t.contains("Removed the limits")
    })
    .await;
    assert!(
        client
            .concurrency_limits()
            .await
            .expect("limits")
            .is_empty()
    );
    assert_eq!(client.rate_limits().await.expect("limits").len(), 1);
    // A capacity, set from the page on a queue no worker drains: the table shows it full.
    b.fill("#limit-max-running", "").await;
    b.fill("#limit-name", "ui-bounded").await;
    b.fill("#limit-capacity", "1").await;
    b.click("#limit-set").await;
    b.wait_text("#limit-msg", "the confirmation", |t| {
        t.contains("capacity 1")
    })
    .await;
    assert_eq!(
        client.queue_capacity("ui-bounded").await.expect("capacity"),
        Some(1)
    );
    let job = stevedore::RawJob::new("ui.ok", "ui-bounded", &1).expect("job");
    client.enqueue(job.clone()).await.expect("room for one");
    assert!(matches!(
        client.enqueue(job).await,
        Err(stevedore::Error::QueueFull { .. })
    ));
    b.wait_text(
        "#limits tr.full[data-limit='queue:ui-bounded']",
        "the full queue marked in the table, with its refusal",
        |t| t.contains("1 (1 refused)"),
    )
    .await;
    // A job the rate limit holds back: its lookup says what it waits for (the lookup
    // follows it while it has not ended, so a fetch that comes later is seen too).
    let jobs: Vec<_> = (0..60).map(|n| succeeds::job(Chore { n })).collect();
    let ids = client.enqueue_bulk(jobs).await.expect("enqueue");
    let last = ids.last().expect("sixty ids");
    b.fill("#lookup-id", last.as_str()).await;
    b.click("#lookup-go").await;
    b.wait_text("#lookup-result", "what the job waits for", |t| {
        t.contains("Waiting forrate limit of job type") && t.contains("5/1s")
    })
    .await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_cancels_runs_now_deletes_and_purges_with_a_confirm_step() {
    let Some((chromium, driver)) =
        browser_available("the_dashboard_cancels_runs_now_deletes_and_purges_with_a_confirm_step")
    else {
        return;
    };
    // The worker consumes `ui`; the jobs below wait on `ui-held`, which no worker drains.
    let app = App::start(|w| w.handler(succeeds::handler())).await;
    let client = &app.env.client;
    let held = |n: u64| stevedore::RawJob::new("ui.ok", "ui-held", &n).expect("job");
    let doomed = client.enqueue(held(1)).await.expect("enqueue");
    let later = client
        .enqueue(held(2).delay(std::time::Duration::from_secs(3600)))
        .await
        .expect("enqueue");
    for n in 3..6 {
        client.enqueue(held(n)).await.expect("enqueue");
    }
    let b = Browser::start(chromium, driver).await;
    b.open(&app.url).await;
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;

    // Cancel: asks first; "Keep it" changes nothing.
    b.fill("#lookup-id", doomed.as_str()).await;
    b.click("#lookup-go").await;
    b.wait_text("#lookup-state", "the job's state", |t| t == "queued")
        .await;
    b.click("#lookup-cancel").await;
    b.wait_text("#lookup-confirm-text", "the confirm step", |t| {
        t.contains("never runs")
    })
    .await;
    b.click("#lookup-confirm-no").await;
    assert_eq!(
        client
            .status(doomed.as_str())
            .await
            .expect("status")
            .map(|s| s.state),
        Some(stevedore::JobState::Queued)
    );
    b.click("#lookup-cancel").await;
    b.fill("#lookup-reason", "wrong customer").await;
    b.click("#lookup-confirm-yes").await;
    b.wait_text("#lookup-msg", "the cancel's confirmation", |t| {
        t.contains("Cancelled: it will not run")
    })
    .await;
    b.wait_text("#lookup-state", "the new state", |t| t == "cancelled")
        .await;
    b.wait_text("#lookup-result", "who and why", |t| {
        t.contains("dashboard") && t.contains("wrong customer")
    })
    .await;
    let s = client
        .status(doomed.as_str())
        .await
        .expect("status")
        .expect("known");
    assert_eq!(s.state, stevedore::JobState::Cancelled);
    assert_eq!(s.cancelled_by.as_deref(), Some("dashboard"));

    // Run now (scheduled only), then delete with its confirm step.
    b.fill("#lookup-id", later.as_str()).await;
    b.click("#lookup-go").await;
    b.wait_text("#lookup-state", "the job's state", |t| t == "scheduled")
        .await;
    b.click("#lookup-retry").await;
    b.wait_text("#lookup-msg", "run now's confirmation", |t| {
        t.contains("Due now")
    })
    .await;
    // The page's refreshes look the job up again (it is queued now) and keep what the
    // action said: two refreshes later (the first one's lookup has ended), it still shows.
    for _ in 0..2 {
        let shown = b.text("#conn").await.unwrap_or_default();
        b.wait_text("#conn", "a refresh of the page", |t| {
            t != shown && t.contains("updated")
        })
        .await;
    }
    assert!(
        b.text("#lookup-msg")
            .await
            .unwrap_or_default()
            .contains("Due now"),
        "a refresh cleared run now's confirmation"
    );
    b.click("#lookup-delete").await;
    b.click("#lookup-confirm-yes").await;
    b.wait_text("#lookup-msg", "the delete's confirmation", |t| {
        t.contains("Deleted")
    })
    .await;
    assert_eq!(client.status(later.as_str()).await.expect("status"), None);

    // Purge takes a second click; the three jobs left on ui-held go.
    b.wait_for(
        "#queues tr[data-queue='ui-held'] button.purge",
        "the queue's purge button",
    )
    .await;
    b.click("#queues tr[data-queue='ui-held'] button.purge")
        .await;
    assert_eq!(
        client
            .queue_stats("ui-held")
            .await
            .expect("stats")
            .ready
            .total(),
        3,
        "the first click only asks"
    );
    b.click("#queues tr[data-queue='ui-held'] button.purge")
        .await;
    b.wait_text("#notice-text", "the purge's confirmation", |t| {
        t.contains("Purged queue ui-held")
    })
    .await;
    assert_eq!(
        client
            .queue_stats("ui-held")
            .await
            .expect("stats")
            .ready
            .total(),
        0
    );
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn text_from_redis_is_shown_as_text_never_as_markup() {
    let Some((chromium, driver)) =
        browser_available("text_from_redis_is_shown_as_text_never_as_markup")
    else {
        return;
    };
    let app = App::start(|w| w.consumer_name(HOSTILE_WORKER).handler(hostile::handler())).await;
    let env = &app.env;
    // A handler error and a payload with markup, and an entry written by hand whose job
    // type is markup (the worker dead-letters it as a bad entry, type kept).
    env.client
        .enqueue(hostile::job(Note {
            note: HOSTILE_PAYLOAD.into(),
        }))
        .await
        .expect("enqueue");
    let _: String = env
        .raw
        .xadd(
            env.stream("ui-x", "normal"),
            false,
            None,
            "*",
            vec![
                ("id", Value::from("hand-written")),
                ("type", HOSTILE_TYPE.into()),
                ("attempt", "1".into()),
                ("max_attempts", "1".into()),
                ("enqueued_at", "1700000000000".into()),
                ("payload", Value::Bytes(vec![0x80].into())),
            ],
        )
        .await
        .expect("xadd by hand");
    let dlq = env.client.dead_letters("ui-x").expect("dlq");
    eventually(Duration::from_secs(10), "two dead letters", || async {
        dlq.count().await.expect("count") == 2
    })
    .await;
    let page = dlq.list(&Default::default()).await.expect("list");
    let hostile_entry = page
        .jobs
        .iter()
        .find(|j| j.job_type.as_deref() == Some("ui.hostile"))
        .expect("the handler's dead letter")
        .entry_id
        .clone();

    env.client
        .set_webhook(
            stevedore::webhook::WebhookScope::Queue("ui-x".into()),
            stevedore::webhook::Webhook::new(HOSTILE_HOOK, "s"),
        )
        .await
        .expect("a hook whose url holds markup");

    let b = Browser::start(chromium, driver).await;
    b.open(&app.url).await;
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;
    b.wait_text("#workers tbody td", "the worker's id as text", |t| {
        t == HOSTILE_WORKER
    })
    .await;
    b.wait_text("#webhooks tbody", "the hook's url as text", |t| {
        t.contains(HOSTILE_HOOK)
    })
    .await;
    // The queue with the most dead letters is shown without asking.
    b.wait_text("#dlq tbody", "the hand-written type as text", |t| {
        t.contains(HOSTILE_TYPE)
    })
    .await;
    b.wait_text("#dlq tbody", "the handler's error as text", |t| {
        t.contains(HOSTILE_ERROR)
    })
    .await;
    b.click(&format!(
        "#dlq tr[data-entry='{hostile_entry}'] button.show"
    ))
    .await;
    b.wait_text("#dlq-d-payload", "the payload as text", |t| {
        t.contains(HOSTILE_PAYLOAD)
    })
    .await;
    b.wait_text("#dlq-d-fields", "the error in the details", |t| {
        t.contains(HOSTILE_ERROR)
    })
    .await;
    // An API error quoting what was typed is shown as text too.
    b.fill("#lookup-id", HOSTILE_ID).await;
    b.click("#lookup-go").await;
    b.wait_text("#lookup-msg", "the 404 message", |t| t.contains(HOSTILE_ID))
        .await;
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;
    b.fill("#job-type", HOSTILE_TYPE).await;
    b.click("#job-submit").await;
    b.wait_text("#submit-msg", "the refusal of a bad job type", |t| {
        t.starts_with("Not enqueued:") && t.contains(HOSTILE_TYPE)
    })
    .await;

    let found = b
        .js(
            "return {imgs: document.querySelectorAll('img').length, \
                     scripts: document.querySelectorAll('script').length, \
                     xss: window.__xss === undefined ? null : String(window.__xss)};",
            vec![],
        )
        .await;
    assert_eq!(
        found,
        json!({"imgs": 0, "scripts": 1, "xss": null}),
        "no element was made from data and nothing ran"
    );
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_sets_and_removes_webhooks_and_follows_a_batch() {
    let Some((chromium, driver)) =
        browser_available("the_dashboard_sets_and_removes_webhooks_and_follows_a_batch")
    else {
        return;
    };
    use stevedore::webhook::{WebhookEvent, WebhookScope};
    let app = App::start(|w| w.handler(succeeds::handler())).await;
    let client = &app.env.client;
    let b = Browser::start(chromium, driver).await;
    b.open(&app.url).await;
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;
    b.wait_for("#webhooks-empty:not([hidden])", "the empty webhook table")
        .await;

    // A hook that is not http(s) is refused, and the page says why.
    b.select("#webhook-scope", "queue").await;
    b.fill("#webhook-name", "ui").await;
    b.fill("#webhook-url", "ftp://example.com/hooks").await;
    b.fill("#webhook-secret", "s3cret-of-the-test").await;
    b.click("#webhook-set").await;
    b.wait_text("#webhook-msg", "the refusal", |t| {
        t.starts_with("Could not set the webhook") && t.contains("http or https")
    })
    .await;
    assert!(client.webhooks().await.expect("webhooks").is_empty());

    // Set from the page: it reaches Redis and the table, and its secret shows nowhere.
    b.fill("#webhook-url", "http://127.0.0.1:9/hooks").await;
    b.select("#webhook-events", "dead").await;
    b.fill("#webhook-timeout", "2000").await;
    b.click("#webhook-set").await;
    b.wait_text("#webhook-msg", "the confirmation", |t| {
        t.starts_with("Set: the webhook of queue ui")
    })
    .await;
    b.wait_text(
        "#webhooks tr[data-hook='queue:ui']",
        "the hook in the table",
        |t| {
            t.contains("http://127.0.0.1:9/hooks") && t.contains("dead") && !t.contains("succeeded")
        },
    )
    .await;
    let hooks = client.webhooks().await.expect("webhooks");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].scope, WebhookScope::Queue("ui".into()));
    assert_eq!(hooks[0].events, vec![WebhookEvent::Dead]);
    assert_eq!(hooks[0].timeout_ms, 2000);
    let secret_shown = b
        .js(
            "return document.body.innerText.includes('s3cret-of-the-test') \
                 || document.getElementById('webhook-secret').value !== '';",
            vec![],
        )
        .await;
    assert_eq!(secret_shown, json!(false), "the secret left the page");

    // Removing takes a second click.
    b.click("#webhooks tr[data-hook='queue:ui'] button.remove")
        .await;
    assert_eq!(client.webhooks().await.expect("webhooks").len(), 1);
    b.click("#webhooks tr[data-hook='queue:ui'] button.remove")
        .await;
    b.wait_text("#webhook-msg", "the removal", |t| {
        t.contains("Removed the webhook of queue ui")
    })
    .await;
    assert!(client.webhooks().await.expect("webhooks").is_empty());
    b.wait_for("#webhooks-empty:not([hidden])", "the empty table again")
        .await;

    // A batch with a job that waits for its time: the page shows it running, then
    // follows it to done on its own once that job is made due.
    let batch = client
        .enqueue_batch(
            stevedore::flow::Batch::new()
                .job(succeeds::job(Chore { n: 1 }))
                .job(succeeds::job(Chore { n: 2 }).delay(Duration::from_secs(3600))),
        )
        .await
        .expect("batch");
    b.fill("#batch-id", &batch.id).await;
    b.click("#batch-go").await;
    b.wait_text("#batch-result", "the running batch", |t| {
        t.contains("running") && t.contains("Pending1") && t.contains("Succeeded1")
    })
    .await;
    client
        .retry_now(batch.jobs[1].as_str())
        .await
        .expect("run the scheduled job now");
    b.wait_text("#batch-result", "the batch done, without a click", |t| {
        t.contains("done") && t.contains("Succeeded2") && t.contains("Pending0")
    })
    .await;
    for id in &batch.jobs {
        assert_eq!(support::runs(id.as_str()), 1);
    }
    // An unknown batch says so.
    b.fill("#batch-id", "ui:b-no-such-batch").await;
    b.click("#batch-go").await;
    b.wait_text("#batch-msg", "the 404", |t| t.contains("no batch"))
        .await;
    b.wait_for("#batch-result[hidden]", "the old result hidden")
        .await;
    b.close().await;
    app.stop().await;
}

/// Writes a screenshot of the dashboard after a few minutes of mixed traffic to the path
/// in `STEVEDORE_SCREENSHOT` (relative to the crate root), for the README:
/// `STEVEDORE_SCREENSHOT=docs/dashboard.png cargo test --test it dashboard_ui::screenshot`
/// (`STEVEDORE_SCREENSHOT_SECS` sets how long the traffic runs first, default 300, so the
/// chart's five minutes are full). Does nothing without it, so CI never rewrites the picture.
#[tokio::test]
async fn screenshot_of_the_dashboard_with_traffic() {
    let Ok(path) = std::env::var("STEVEDORE_SCREENSHOT") else {
        eprintln!(
            "screenshot_of_the_dashboard_with_traffic: STEVEDORE_SCREENSHOT not set, no picture taken"
        );
        return;
    };
    let Some((chromium, driver)) = browser_available("screenshot_of_the_dashboard_with_traffic")
    else {
        return;
    };
    let secs: u64 = std::env::var("STEVEDORE_SCREENSHOT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let app = App::start(|w| {
        w.consumer_name("web-7f3c-1")
            .concurrency(16)
            .handler(demo::send_email::handler())
            .handler(demo::resize::handler())
            .handler(demo::report::handler())
    })
    .await;
    let second = Worker::builder(app.env.client.clone())
        .consumer_name("web-7f3c-2")
        .concurrency(8)
        .handler(demo::send_email::handler())
        .handler(demo::resize::handler())
        .build()
        .expect("second worker");
    let second = support::spawn(second);
    let b = Browser::start(chromium, driver).await;
    b.open(&app.url).await;
    b.fill("#token", TOKEN).await;
    b.click("#token-save").await;

    let client = app.env.client.clone();
    let stop = CancellationToken::new();
    let traffic = tokio::spawn(demo::traffic(client.clone(), stop.clone()));
    // The traffic runs for the chart's window; nothing here waits for a condition.
    tokio::time::sleep(Duration::from_secs(secs)).await;

    // A backlog on a paused queue, a finished job looked up, and a dead letter in full.
    for n in 0..40 {
        client
            .enqueue(RawJob::new("crm.sync", "sync", &json!({"account": n})).expect("job"))
            .await
            .expect("enqueue");
    }
    client.admin().pause("sync").await.expect("pause");
    b.wait_text(
        "#queues tr[data-queue='sync'] td:nth-child(2)",
        "sync paused",
        |t| t == "paused",
    )
    .await;
    let looked_up = client
        .enqueue(demo::send_email::job(demo::Email::new(7)))
        .await
        .expect("enqueue");
    b.fill("#lookup-id", looked_up.as_str()).await;
    b.click("#lookup-go").await;
    b.wait_text("#lookup-state", "a finished job", |t| t == "succeeded")
        .await;
    b.click("#queues tr[data-queue='resize'] button.show-dlq")
        .await;
    b.wait_for("#dlq tbody tr button.show", "a dead letter")
        .await;
    b.click("#dlq tbody tr button.show").await;
    b.wait_for("#dlq-details:not([hidden])", "the details")
        .await;
    b.js("window.scrollTo(0, 0);", vec![]).await;
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    b.screenshot(&out).await;
    eprintln!("wrote {}", out.display());

    stop.cancel();
    traffic.await.expect("traffic task");
    b.close().await;
    second.shutdown().await.expect("worker stops");
    app.stop().await;
}

/// Handlers with believable names and payloads, and traffic for the screenshot.
mod demo {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};
    use stevedore::{Client, JobContext, JobError, Priority, RawJob, job_handler};
    use tokio_util::sync::CancellationToken;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct Email {
        to: String,
        template: String,
    }

    impl Email {
        pub(super) fn new(n: u64) -> Email {
            Email {
                to: format!("user{n}@example.com"),
                template: if n.is_multiple_of(4) {
                    "receipt"
                } else {
                    "welcome"
                }
                .into(),
            }
        }
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct Image {
        upload: String,
        width: u32,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct Report {
        month: u32,
    }

    #[job_handler(
        name = "email.send",
        queue = "emails",
        max_attempts = 4,
        backoff = "fixed",
        backoff_base = "1s"
    )]
    pub(super) async fn send_email(e: Email, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(20 + e.to.len() as u64 % 5 * 10)).await;
        if e.to.starts_with("user1") && e.to.ends_with("3@example.com") {
            return Err(JobError::retry("smtp: 421 4.7.0 try again later"));
        }
        Ok(())
    }

    #[job_handler(
        name = "image.resize",
        queue = "resize",
        max_attempts = 2,
        backoff = "fixed",
        backoff_base = "1s"
    )]
    pub(super) async fn resize(i: Image, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(80)).await;
        if i.upload.ends_with(".heic") {
            return Err(JobError::permanent(format!(
                "decode {}: unsupported format",
                i.upload
            )));
        }
        Ok(())
    }

    #[job_handler(
        name = "report.build",
        queue = "reports",
        timeout = "1s",
        max_attempts = 1
    )]
    pub(super) async fn report(r: Report, _ctx: JobContext) -> Result<(), JobError> {
        let ms = if r.month.is_multiple_of(4) { 1500 } else { 300 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }

    /// Enqueues a rising and falling load with some failures until `stop`.
    pub(super) async fn traffic(client: Client, stop: CancellationToken) {
        let mut i: u64 = 0;
        while !stop.is_cancelled() {
            i += 1;
            let burst = [3, 6, 10, 7, 4, 8][((i / 40) % 6) as usize];
            for k in 0..burst {
                let n = i * 10 + k;
                let p = if n.is_multiple_of(7) {
                    Priority::High
                } else {
                    Priority::Normal
                };
                let _ = client
                    .enqueue(send_email::job(Email::new(n)).priority(p))
                    .await;
                if n.is_multiple_of(3) {
                    let ext = if n.is_multiple_of(997) { "heic" } else { "jpg" };
                    let image = Image {
                        upload: format!("uploads/{n}.{ext}"),
                        width: 640,
                    };
                    let _ = client
                        .enqueue(resize::job(image).priority(Priority::Low))
                        .await;
                }
            }
            if i.is_multiple_of(25) {
                let month = (i / 25) as u32;
                let _ = client.enqueue(report::job(Report { month })).await;
                if let Ok(job) = RawJob::new("report.monthly", "reports", &month) {
                    let _ = client.enqueue(job.delay(Duration::from_secs(3600))).await;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}
