//! Jobs, queues, stats and workers: submit a job, read its status, list queues and
//! workers, pause and resume a queue.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;

use super::AppState;
use crate::admin::JsonJob;
use crate::admin::errors::{ApiError, ApiResult, json_body, ok};

/// The longest `wait_for_room` a submit may ask for: within the request's deadline for its
/// Redis calls.
const MAX_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(4);

/// The routes under `/api/v1` of jobs, queues, stats and workers.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", post(submit_job))
        .route(
            "/jobs/{id}",
            get(job_status).delete(super::control::delete_job),
        )
        .route("/stats", get(stats))
        .route("/queues", get(queues))
        .route("/queues/{queue}", get(queue))
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
        .route("/workers", get(workers))
}

async fn submit_job(State(st): State<AppState>, body: Bytes) -> ApiResult {
    let job: JsonJob = json_body(&body)?;
    // A request has REDIS_DEADLINE for its Redis calls: a longer wait would end in a 503.
    if job.room_wait()?.is_some_and(|w| w > MAX_ROOM_WAIT) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "wait_for_room is at most {} over HTTP: retry after the 429's Retry-After instead",
                humantime::format_duration(MAX_ROOM_WAIT)
            ),
        ));
    }
    let done = st.admin.enqueue_json(job).await?;
    if done.duplicate {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate",
            "a job with this unique key exists; nothing was enqueued",
        )
        .with_field("id", json!(done.id.as_str())));
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
