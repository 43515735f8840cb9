use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore::{JobContext, JobError, Metrics, RawJob, Worker, job_handler};
use tokio::net::TcpListener;

use crate::support::{self, TestEnv, eventually};

/// A `prometheus` server in a temp dir, and a minimal HTTP GET.
mod prometheus;

use prometheus::{Prometheus, http_get, prometheus_available};

const DASHBOARD: &str = "grafana/dashboards/stevedore.json";
const ALERTS: &str = "grafana/alerts.yml";

/// What the dashboard's range variables (`$__rate_interval`...) become: with a 1 s scrape,
/// ten samples.
const WINDOW: &str = "10s";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chore {
    n: u32,
}

#[job_handler(name = "dash.ok", queue = "dash")]
async fn succeeds(_c: Chore, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Ok(())
}

#[job_handler(
    name = "dash.flaky",
    queue = "dash",
    max_attempts = 3,
    backoff = "fixed",
    backoff_base = "50ms"
)]
async fn flaky(_c: Chore, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    if ctx.attempt() < 2 {
        Err(JobError::retry("not yet"))
    } else {
        Ok(())
    }
}

#[job_handler(
    name = "dash.doomed",
    queue = "dash",
    max_attempts = 2,
    backoff = "fixed",
    backoff_base = "50ms"
)]
async fn doomed(_c: Chore, ctx: JobContext) -> Result<(), JobError> {
    support::record(ctx.id(), ctx.attempt());
    Err(JobError::retry("fails every time"))
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_prometheus_scraping_a_worker() {
    if !prometheus_available("every_dashboard_query_returns_data_from_prometheus_scraping_a_worker")
    {
        return;
    }
    let exporter = Exporter::start().await;
    let mut prometheus = Prometheus::start(exporter.addr);
    prometheus.wait_for_target_up(Duration::from_secs(30)).await;
    exporter.run_jobs().await;
    prometheus
        .assert_queries_return_data(dashboard_queries(), exporter.addr, Duration::from_secs(60))
        .await;
    // The alert rules were loaded from the same file and evaluate without error on real
    // series (vector matching errors only show at evaluation).
    prometheus.wait_for_rules_ok(Duration::from_secs(30)).await;
    exporter.running.shutdown().await.expect("worker stops");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let exporter = Exporter::start().await;
    exporter.run_jobs().await;
    let mut wanted = metric_names_in(&read_repo_file(DASHBOARD));
    wanted.extend(metric_names_in(&read_repo_file(ALERTS)));
    // Sampled gauges appear after the sampler's first pass: poll.
    assert_exported(exporter.addr, &wanted, Duration::from_secs(30)).await;
    exporter.running.shutdown().await.expect("worker stops");
}

/// Polls the exporter at `addr` until every name in `wanted` is exported; fails with the
/// missing ones after `timeout`.
async fn assert_exported(addr: SocketAddr, wanted: &BTreeSet<String>, timeout: Duration) {
    assert!(
        !wanted.is_empty(),
        "no stevedore_ metric names found in {DASHBOARD} and {ALERTS}"
    );
    let deadline = Instant::now() + timeout;
    loop {
        let text = match http_get(addr, "/metrics").await {
            Ok((200, text)) => text,
            Ok((status, text)) => panic!("GET /metrics answered {status}: {text}"),
            Err(e) => panic!("GET /metrics failed: {e}"),
        };
        let exposed = exposed_names(&text);
        let missing: Vec<&String> = wanted.difference(&exposed).collect();
        if missing.is_empty() {
            // A histogram counts as used when its buckets are.
            let used = |n: &str| {
                let family = n
                    .strip_suffix("_sum")
                    .or_else(|| n.strip_suffix("_count"))
                    .unwrap_or(n);
                wanted.contains(n) || wanted.contains(&format!("{family}_bucket"))
            };
            let unused: Vec<&String> = exposed
                .iter()
                .filter(|n| n.starts_with("stevedore_") && !used(n))
                .collect();
            if !unused.is_empty() {
                eprintln!("note: exported but not on the dashboard or in the alerts: {unused:?}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "named in {DASHBOARD} or {ALERTS} but not exported within {timeout:?}: {missing:?}\n\
             GET /metrics said:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker with metrics consuming queue `dash`, its HTTP router served on a loopback port.
struct Exporter {
    env: TestEnv,
    client: stevedore::Client,
    addr: SocketAddr,
    running: support::Running,
}

impl Exporter {
    async fn start() -> Exporter {
        let env = TestEnv::start().await;
        let metrics = Metrics::new();
        let client = env.client_with(|b| b.metrics(&metrics)).await;
        // Limits that do not hold the jobs back, so the limit panels have series.
        let worker = Worker::builder(client.clone())
            .concurrency(4)
            .handler(succeeds::handler())
            .handler(flaky::handler())
            .handler(doomed::handler())
            .rate_limit(
                stevedore::LimitScope::Type("dash.ok".into()),
                stevedore::RateLimit::per_second(100),
            )
            .concurrency_limit(stevedore::LimitScope::Type("dash.ok".into()), 4)
            .metrics(&metrics)
            .build()
            .expect("worker");
        let app = stevedore::http::router(metrics.clone(), worker.health());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the metrics listener");
        let addr = listener.local_addr().expect("metrics address");
        tokio::spawn(axum::serve(listener, app).into_future());
        let running = support::spawn(worker);
        Exporter {
            env,
            client,
            addr,
            running,
        }
    }

    /// One job that succeeds, one that fails once and then succeeds, one dead-lettered
    /// after two failed attempts; returns when all three are done.
    async fn run_jobs(&self) {
        let c = &self.client;
        let ok = c
            .enqueue(succeeds::job(Chore { n: 1 }))
            .await
            .expect("enqueue");
        let retried = c
            .enqueue(flaky::job(Chore { n: 2 }))
            .await
            .expect("enqueue");
        let dead = c
            .enqueue(doomed::job(Chore { n: 3 }))
            .await
            .expect("enqueue");
        // A bounded queue with no room: a refusal, and a capacity to sample.
        c.set_queue_capacity("dash-bounded", 1)
            .await
            .expect("capacity");
        let full = RawJob::new("dash.ok", "dash-bounded", &Chore { n: 4 }).expect("job");
        c.enqueue(full.clone()).await.expect("room for one");
        assert!(matches!(
            c.enqueue(full).await,
            Err(stevedore::Error::QueueFull { .. })
        ));
        // An operator's cancel (counted by this producer) and a chain whose second job the
        // worker releases, for the operator and dependents panels.
        let idle = RawJob::new("dash.ok", "dash-idle", &Chore { n: 5 }).expect("job");
        let idle = c.enqueue(idle).await.expect("enqueue");
        c.cancel(idle.as_str(), "dashboard test", "not needed")
            .await
            .expect("cancel");
        let chain = c
            .enqueue_chain(
                stevedore::flow::Chain::new(succeeds::job(Chore { n: 6 }))
                    .then(succeeds::job(Chore { n: 7 })),
            )
            .await
            .expect("chain");
        let env = &self.env;
        eventually(Duration::from_secs(30), "the chain ran", || async {
            support::runs(chain[1].as_str()) == 1
        })
        .await;
        eventually(
            Duration::from_secs(30),
            "a success, a success after a retry, and a dead letter",
            || async {
                support::runs(ok.as_str()) == 1
                    && support::runs(retried.as_str()) == 2
                    && support::runs(dead.as_str()) == 2
                    && env.xlen(&env.dlq("dash")).await == 1
            },
        )
        .await;
    }
}

/// A query of the dashboard: where it is, as written, and as this test sends it.
struct Query {
    place: String,
    expr: String,
    promql: String,
}

/// Every panel query (rows' nested panels too) and the series selector of every
/// `label_values` variable, with Grafana's variables replaced.
fn dashboard_queries() -> Vec<Query> {
    let dashboard: Value =
        serde_json::from_str(&read_repo_file(DASHBOARD)).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    panel_queries(&dashboard["panels"], &mut queries);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = var["query"]["query"].as_str().or(var["query"].as_str());
        let selector = text
            .and_then(|t| t.trim().strip_prefix("label_values("))
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|t| t.rsplit_once(','))
            .map(|(selector, _label)| selector.trim());
        if let Some(selector) = selector {
            queries.push(Query::new(
                format!("variable {}", var["name"]),
                selector.to_string(),
            ));
        }
    }
    assert!(!queries.is_empty(), "no queries found in {DASHBOARD}");
    queries
}

fn panel_queries(panels: &Value, out: &mut Vec<Query>) {
    for panel in panels.as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(Query::new(
                    format!(
                        "panel {} (id {}) query {}",
                        panel["title"], panel["id"], target["refId"]
                    ),
                    expr.to_string(),
                ));
            }
        }
        panel_queries(&panel["panels"], out);
    }
}

impl Query {
    fn new(place: String, expr: String) -> Query {
        let mut promql = expr.clone();
        for (variable, value) in [
            ("${__rate_interval}", WINDOW),
            ("$__rate_interval", WINDOW),
            ("${__interval}", WINDOW),
            ("$__interval", WINDOW),
            ("${__range}", WINDOW),
            ("$__range", WINDOW),
            ("${queue}", ".*"),
            ("$queue", ".*"),
            ("${type}", ".*"),
            ("$type", ".*"),
        ] {
            promql = promql.replace(variable, value);
        }
        assert!(
            !promql.contains('$'),
            "{place} uses a Grafana variable this test does not know: {expr}"
        );
        Query {
            place,
            expr,
            promql,
        }
    }
}

/// Every `stevedore_[a-z_]+` word in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("stevedore_") {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let len = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(text.len() - start);
        names.insert(text[start..start + len].to_string());
    }
    names
}

/// The series names a scrape of `exposition` yields: sample names, plus what each `# TYPE`
/// line promises (a counter family `x` is `x_total`, a histogram `x` is `x_bucket`, `x_sum`
/// and `x_count`), so a family without samples yet still counts.
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" if family.ends_with("_total") => {
                    names.insert(family.to_string());
                }
                "counter" => {
                    names.insert(format!("{family}_total"));
                }
                "histogram" | "gaugehistogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                "summary" => {
                    for suffix in ["", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    names.insert(family.to_string());
                }
            }
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_string());
        }
    }
    names
}

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
