//! The HTTP API and the web dashboard, as one axum router (cargo feature `admin`).
//!
//! Reads are open; every mutating request (`POST`, `DELETE`) needs
//! `Authorization: Bearer <token>` when a token is configured. Errors are JSON
//! `{"error": "<kind>", "message": "..."}` with a status that says what to do: 400 (body is
//! not JSON), 401 (token), 404 (unknown job, queue or dead letter), 409 (duplicate unique
//! job), 413 (body or payload too large), 422 (valid JSON, invalid values), 503 (Redis
//! unreachable or refusing). A submit answers 2xx only once Redis acknowledged the write.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::security::{AdminConfig, Guard, require_token};
use super::{Admin, JsonJob};
use crate::dlq::{DeadLetterFilter, DeadLetterQuery, DeadReason};
use crate::{Error, Health, Metrics};

/// Request bodies larger than this are refused with 413 unless set otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// A request that takes longer than this is answered 408 unless set otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that does not finish sending its request headers within this is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An API request whose Redis calls take longer than this is answered 503: Redis is down
/// or stalled. (A submit answered so may still have been written: retry it with a unique
/// key to be safe.)
pub const REDIS_DEADLINE: Duration = Duration::from_secs(5);

const DASHBOARD: &str = include_str!("../../assets/dashboard.html");

#[derive(Clone)]
struct AppState {
    admin: Admin,
    body_limit: usize,
}

/// The HTTP API under `/api/v1`, the web dashboard at `/`, the OpenAPI document at
/// `/api/v1/openapi.json`, and `/metrics`, `/healthz`, `/readyz`.
///
/// Must be called inside a Tokio runtime: without [`AdminConfig::metrics`], the router's
/// own metrics sample every known queue in the background.
pub fn router(admin: Admin, config: AdminConfig) -> Router {
    let metrics = match config.metrics.clone() {
        Some(m) => m,
        None => {
            let m = Metrics::new();
            m.watch_all_queues(admin.client());
            m
        }
    };
    let guard = Arc::new(Guard {
        auth: config.auth.clone(),
        hosts: config.hosts.clone().map(Arc::from),
    });
    let state = AppState {
        admin: admin.clone(),
        body_limit: config.body_limit,
    };
    let api = Router::new()
        .route("/jobs", post(submit_job))
        .route("/jobs/{id}", get(job_status))
        .route("/stats", get(stats))
        .route("/queues", get(queues))
        .route("/queues/{queue}", get(queue))
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
        .route("/queues/{queue}/dlq", get(dlq_list))
        .route("/queues/{queue}/dlq/replay", post(dlq_replay))
        .route("/queues/{queue}/dlq/purge", post(dlq_purge))
        .route(
            "/queues/{queue}/dlq/{entry}",
            get(dlq_show).delete(dlq_delete),
        )
        .route("/queues/{queue}/dlq/{entry}/replay", post(dlq_replay_one))
        .route("/workers", get(workers))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            redis_deadline,
        ))
        .layer(middleware::from_fn_with_state(guard.clone(), require_token))
        .with_state(state);
    Router::new()
        .route("/", get(dashboard))
        .nest("/api/v1", api)
        .merge(crate::http::router(
            metrics,
            Health::for_client(admin.client().clone()),
        ))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(guard, guard_fn))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(middleware::from_fn(json_errors))
}

use super::security::guard as guard_fn;

/// The dashboard page, with headers that keep other sites from framing it (a framed page
/// with a token entered could be clicked into purging) and from sniffing it.
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(DASHBOARD),
    )
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, with a header-read timeout
/// ([`HEADER_READ_TIMEOUT`]) against clients that never finish their request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // The peer's address, for AdminConfig::loopback_only.
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// An API error: a status and a JSON body.
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            extra: None,
        }
    }

    fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (status, kind) = match &e {
            Error::InvalidName { .. } | Error::InvalidInput(_) | Error::Encode(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            Error::InvalidConfig(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::UnknownQueue(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Connection(_) | Error::Timeout(_) | Error::Redis(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE
        {
            tracing::warn!(error = %message, "admin API request failed");
        }
        ApiError::new(status, kind, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.kind, "message": self.message });
        if let (Some((k, v)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.insert(k.to_string(), v);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED
            && let Ok(v) = header::HeaderValue::from_str("Bearer")
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    Ok(axum::Json(value).into_response())
}

/// Reads the body first (413 past the limit; a slow body meets the request timeout, 408),
/// then gives the handler [`REDIS_DEADLINE`] for its Redis calls: 503 past it.
async fn redis_deadline(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, st.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {} bytes", st.body_limit),
            )
            .into_response();
        }
    };
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    match tokio::time::timeout(REDIS_DEADLINE, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
            format!(
                "redis did not answer within {}",
                humantime::format_duration(REDIS_DEADLINE)
            ),
        )
        .into_response(),
    }
}

/// Gives every error the JSON shape `{"error", "message"}`, also those the framework
/// answers by itself (413, 408, 405...) with plain text or nothing.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (kind, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is too large"),
        StatusCode::REQUEST_TIMEOUT => (
            "timeout",
            "the request took too long (its body arrived too slowly, or the server was busy)",
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this path does not take that method")
        }
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    let mut out = ApiError::new(status, kind, message).into_response();
    if let Some(allow) = resp.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

/// Parses a JSON body whatever its content type (curl's `-d` sends a form type): 400 when
/// it is not JSON, 422 when it is JSON of the wrong shape.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request needs a JSON body",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not JSON: {e}"),
            )
        }
    })
}

async fn submit_job(State(st): State<AppState>, body: Bytes) -> ApiResult {
    let job: JsonJob = json_body(&body)?;
    let done = st.admin.enqueue_json(job).await?;
    if done.duplicate {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "duplicate",
            "a job with this unique key exists; nothing was enqueued",
        );
        e.extra = Some(("id", json!(done.id.as_str())));
        return Err(e);
    }
    Ok((StatusCode::CREATED, axum::Json(json!({ "id": done.id }))).into_response())
}

async fn job_status(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match st.admin.client().status(&id).await? {
        Some(s) => ok(json!(s)),
        None => Err(ApiError::not_found(&format!(
            "no job {} (never enqueued here, or its status expired)",
            crate::error::excerpt(&id)
        ))),
    }
}

async fn stats(State(st): State<AppState>) -> ApiResult {
    ok(json!(st.admin.stats().await?))
}

async fn queues(State(st): State<AppState>) -> ApiResult {
    ok(json!(st.admin.queues().await?))
}

async fn queue(State(st): State<AppState>, Path(queue): Path<String>) -> ApiResult {
    ok(json!(st.admin.queue(&queue).await?))
}

async fn workers(State(st): State<AppState>) -> ApiResult {
    ok(json!(st.admin.workers().await?))
}

async fn pause(State(st): State<AppState>, Path(queue): Path<String>) -> ApiResult {
    let changed = st.admin.pause(&queue).await?;
    ok(json!({ "queue": queue, "paused": true, "changed": changed }))
}

async fn resume(State(st): State<AppState>, Path(queue): Path<String>) -> ApiResult {
    let changed = st.admin.resume(&queue).await?;
    ok(json!({ "queue": queue, "paused": false, "changed": changed }))
}

/// Dead-letter filters, from the query string or a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterParams {
    #[serde(rename = "type")]
    job_type: Option<String>,
    reason: Option<String>,
    /// Unix ms.
    since: Option<u64>,
    /// Unix ms.
    until: Option<u64>,
    limit: Option<usize>,
    before: Option<String>,
    /// `false`: leave payloads out of a list (the dashboard reads one when it is opened).
    payloads: Option<bool>,
    #[serde(default)]
    dry_run: bool,
}

impl FilterParams {
    /// The filter; 422 for a reason stevedore never writes (it would match nothing).
    fn filter(&self) -> Result<DeadLetterFilter, ApiError> {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let reason = match self.reason.as_deref() {
            None => None,
            Some(r) => match DeadReason::ALL.into_iter().find(|k| k.as_str() == r) {
                Some(k) => Some(k),
                None => {
                    let names: Vec<&str> = DeadReason::ALL.iter().map(DeadReason::as_str).collect();
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        format!(
                            "reason {}: use one of {}",
                            crate::error::excerpt(r),
                            names.join(", ")
                        ),
                    ));
                }
            },
        };
        Ok(DeadLetterFilter {
            job_type: self.job_type.clone(),
            reason,
            since: self.since.map(at),
            until: self.until.map(at),
        })
    }
}

/// A dead letter's payload appears in a list only up to this size; a larger one is left
/// out (`"payload": null`, `"payload_truncated": true`, its `payload_bytes`), and
/// `GET .../dlq/{entry}` has it whole.
pub const LIST_PAYLOAD_LIMIT: usize = 16 * 1024;
/// A dead-letter page stops taking entries once its JSON passes this size; `next`
/// continues from there.
pub const LIST_PAGE_BYTES: usize = 1024 * 1024;
/// Dead letters read from Redis per round trip while a page is built, so a page of large
/// payloads is never held whole in memory.
const LIST_READ: usize = 10;

/// A dead letter as JSON, its payload included only when `payload_limit` allows (a larger
/// one is not even decoded).
fn dead_json(mut job: crate::dlq::DeadJob, payload_limit: usize) -> Value {
    let size = job.payload.len();
    let cut = size > payload_limit;
    if cut {
        job.payload = Bytes::new();
    }
    let mut v = json!(job);
    if let (true, Some(map)) = (cut, v.as_object_mut()) {
        map.insert("payload".into(), Value::Null);
        map.insert("payload_bytes".into(), json!(size));
        map.insert("payload_truncated".into(), json!(true));
    }
    v
}

async fn dlq_list(
    State(st): State<AppState>,
    Path(queue): Path<String>,
    params: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(params) = params
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.body_text()))?;
    known(&st, &queue).await?;
    let dlq = st.admin.client().dead_letters(&queue)?;
    let filter = params.filter()?;
    let limit = match params.limit.unwrap_or(0) {
        0 => crate::dlq::DEFAULT_LIMIT,
        n => n.min(crate::dlq::MAX_LIMIT),
    };
    let payload_limit = if params.payloads.unwrap_or(true) {
        LIST_PAYLOAD_LIMIT
    } else {
        0
    };
    let total = dlq.count().await?;
    // Read a few at a time, each entry shrunk before the next read, until the page is
    // full or big enough.
    let mut jobs: Vec<Value> = Vec::new();
    let mut bytes = 0usize;
    let mut before = params.before.clone();
    let next = loop {
        let query = DeadLetterQuery {
            filter: filter.clone(),
            limit: (limit - jobs.len()).min(LIST_READ),
            before: before.clone(),
        };
        let page = dlq.list_scanning(&query, LIST_READ as u64 + 1).await?;
        let mut full = false;
        for job in page.jobs {
            let id = job.entry_id.clone();
            let v = dead_json(job, payload_limit);
            let n = serde_json::to_vec(&v).map_or(0, |b| b.len());
            if bytes + n > LIST_PAGE_BYTES && !jobs.is_empty() {
                full = true;
                break;
            }
            bytes += n;
            jobs.push(v);
            before = Some(id);
        }
        if full || jobs.len() >= limit {
            // More may follow: the next page says so when there is none.
            break if full || page.next.is_some() {
                before.clone()
            } else {
                None
            };
        }
        match page.next {
            Some(n) => before = Some(n),
            None => break None,
        }
    };
    let mut body = json!({ "queue": queue, "total": total, "jobs": jobs, "next": next });
    if !filter.is_empty()
        && let Some(map) = body.as_object_mut()
    {
        // How many match the filter, over all pages: the page itself when it is the only
        // one, else a scan (asked for only when filtering).
        let matching = if params.before.is_none() && next.is_none() {
            jobs_len(map)
        } else {
            st.admin.count_dead(&queue, &filter).await?
        };
        map.insert("matching".into(), json!(matching));
    }
    ok(body)
}

fn jobs_len(map: &serde_json::Map<String, Value>) -> u64 {
    map.get("jobs")
        .and_then(Value::as_array)
        .map_or(0, |a| a.len() as u64)
}

async fn dlq_show(
    State(st): State<AppState>,
    Path((queue, entry)): Path<(String, String)>,
) -> ApiResult {
    known(&st, &queue).await?;
    match st.admin.client().dead_letters(&queue)?.get(&entry).await? {
        // Whole, up to the payload limit (a hand-written entry may hold more).
        Some(j) => ok(dead_json(j, st.admin.client().payload_limit())),
        None => Err(ApiError::not_found(&format!(
            "no dead letter {} in queue {}",
            crate::error::excerpt(&entry),
            crate::error::excerpt(&queue)
        ))),
    }
}

async fn dlq_delete(
    State(st): State<AppState>,
    Path((queue, entry)): Path<(String, String)>,
) -> ApiResult {
    if st
        .admin
        .client()
        .dead_letters(&queue)?
        .purge(&entry)
        .await?
    {
        ok(json!({ "purged": 1 }))
    } else {
        Err(ApiError::not_found(&format!(
            "no dead letter {} in queue {}",
            crate::error::excerpt(&entry),
            crate::error::excerpt(&queue)
        )))
    }
}

async fn dlq_replay_one(
    State(st): State<AppState>,
    Path((queue, entry)): Path<(String, String)>,
) -> ApiResult {
    match st
        .admin
        .client()
        .dead_letters(&queue)?
        .replay(&entry)
        .await?
    {
        Some(id) => ok(json!({ "replayed": 1, "id": id })),
        None => Err(ApiError::not_found(&format!(
            "no dead letter {} in queue {}",
            crate::error::excerpt(&entry),
            crate::error::excerpt(&queue)
        ))),
    }
}

async fn dlq_replay(
    State(st): State<AppState>,
    Path(queue): Path<String>,
    body: Bytes,
) -> ApiResult {
    bulk(&st, &queue, &body, true).await
}

async fn dlq_purge(
    State(st): State<AppState>,
    Path(queue): Path<String>,
    body: Bytes,
) -> ApiResult {
    bulk(&st, &queue, &body, false).await
}

/// Replays or purges the dead letters matching the body's filter (`{}` for all); with
/// `"dry_run": true`, only counts them.
async fn bulk(st: &AppState, queue: &str, body: &Bytes, replay: bool) -> ApiResult {
    let params: FilterParams = if body.is_empty() {
        FilterParams::default()
    } else {
        json_body(body)?
    };
    if params.limit.is_some() || params.before.is_some() || params.payloads.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "limit, before and payloads apply to listing only",
        ));
    }
    known(st, queue).await?;
    let dlq = st.admin.client().dead_letters(queue)?;
    let filter = params.filter()?;
    let verb = if replay { "replayed" } else { "purged" };
    if params.dry_run {
        let n = st.admin.count_dead(queue, &filter).await?;
        return ok(json!({ "dry_run": true, "matching": n }));
    }
    let n = if replay {
        dlq.replay_matching(&filter).await?
    } else {
        dlq.purge_matching(&filter).await?
    };
    let mut out = serde_json::Map::new();
    out.insert(verb.to_string(), json!(n));
    ok(Value::Object(out))
}

/// 404 unless `queue` is known (so a typo is not an empty dead-letter list).
async fn known(st: &AppState, queue: &str) -> Result<(), ApiError> {
    if st.admin.queue_exists(queue).await? {
        Ok(())
    } else {
        Err(Error::UnknownQueue(queue.to_string()).into())
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::DOCUMENT,
    )
        .into_response()
}
