//! An axum router for operations: `/metrics`, `/healthz` and `/readyz` (cargo feature
//! `http`, on by default).
//!
//! Serve it on its own port, as `examples/worker.rs --metrics-addr` does:
//!
//! ```no_run
//! # async fn run(metrics: stevedore::Metrics, health: stevedore::Health) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! axum::serve(listener, stevedore::http::router(metrics, health)).await
//! # }
//! ```
//!
//! or merge it into the application's own router:
//! `app.merge(stevedore::http::router(metrics, health))`.
//!
//! | path | answers |
//! |---|---|
//! | `GET /metrics` | the metrics in the OpenMetrics text format |
//! | `GET /healthz` | `200` when Redis answers a PING within 2 s, else `503`; JSON body |
//! | `GET /readyz` | `200` when the worker runs, every queue's consume loop reads and Redis answers, else `503`; JSON body |

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::{Health, Metrics};

#[derive(Clone)]
struct Ops {
    metrics: Metrics,
    health: Health,
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops { metrics, health })
}

async fn serve_metrics(State(ops): State<Ops>) -> Response {
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        ops.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(ops): State<Ops>) -> Response {
    match ops.health.ping().await {
        Ok(took) => (
            StatusCode::OK,
            axum::Json(json!({ "status": "ok", "redis_ping_ms": took.as_secs_f64() * 1000.0 })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let r = ops.health.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(r)).into_response()
}
