//! The HTTP API and the web dashboard, as one axum router (cargo feature `admin`).
//!
//! Reads are open; every mutating request (`POST`, `DELETE`) needs
//! `Authorization: Bearer <token>` when a token is configured. Errors are JSON
//! `{"error": "<kind>", "message": "..."}` with a status that says what to do: 400 (body is
//! not JSON), 401 (token), 404 (unknown job, queue or dead letter), 409 (duplicate unique
//! job), 413 (body or payload too large), 422 (valid JSON, invalid values), 503 (Redis
//! unreachable or refusing). A submit answers 2xx only once Redis acknowledged the write.

mod control;
mod dead_letters;
mod flow;
mod jobs;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::Admin;
use super::errors::ApiError;
use super::limits::{HEADER_READ_TIMEOUT, REDIS_DEADLINE};
use super::security::{AdminConfig, Guard, guard as guard_fn, require_token};
use crate::{Health, Metrics};

const DASHBOARD: &str = include_str!("../../../assets/dashboard.html");

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
        .merge(jobs::routes())
        .merge(control::routes())
        .merge(dead_letters::routes())
        .merge(flow::routes())
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

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::DOCUMENT,
    )
        .into_response()
}
