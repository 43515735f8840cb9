//! Operator control over HTTP: cancel, delete, run now, purge; batches; webhooks.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::admin::errors::{ApiError, ApiResult, json_body, ok};
use crate::control::{CancelOutcome, Purge, RetryNowOutcome};
use crate::webhook::{Webhook, WebhookEvent, WebhookScope};

/// The routes under `/api/v1` of job control, batches and webhooks.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/retry", post(retry_now))
        .route("/queues/{queue}/purge", post(purge))
        .route("/batches/{id}", get(batch))
        .route("/webhooks", get(webhooks))
        .route(
            "/webhooks/{scope}/{name}",
            put(set_webhook).delete(remove_webhook),
        )
}

/// The body of a cancel, optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// A body that may be empty.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json_body(body)
    }
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::not_found(&format!(
        "no job {} (never enqueued here, deleted, or its status expired)",
        crate::error::excerpt(id)
    ))
}

/// Maps `UnknownJob` to a 404 naming the job.
fn job_error(id: &str, e: crate::Error) -> ApiError {
    match e {
        crate::Error::UnknownJob(_) => unknown_job(id),
        e => e.into(),
    }
}

async fn cancel(State(st): State<AppState>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let b: CancelBody = optional_body(&body)?;
    let by = b.by.unwrap_or_else(|| "http".to_string());
    let reason = b.reason.unwrap_or_default();
    let out = st
        .admin
        .client()
        .cancel(&id, &by, &reason)
        .await
        .map_err(|e| job_error(&id, e))?;
    ok(match out {
        CancelOutcome::Cancelled { was } => {
            json!({ "outcome": "cancelled", "state": was.as_str() })
        }
        CancelOutcome::Requested => json!({ "outcome": "requested", "state": "cancelling" }),
        CancelOutcome::AlreadyEnded(s) => {
            json!({ "outcome": "already_ended", "state": s.as_str() })
        }
    })
}

pub(super) async fn delete_job(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let was = st
        .admin
        .client()
        .delete(&id)
        .await
        .map_err(|e| job_error(&id, e))?;
    ok(json!({ "deleted": true, "was": was.as_str() }))
}

async fn retry_now(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let out = st
        .admin
        .client()
        .retry_now(&id)
        .await
        .map_err(|e| job_error(&id, e))?;
    ok(match out {
        RetryNowOutcome::Due { was } => json!({ "outcome": "due", "state": was.as_str() }),
        RetryNowOutcome::NotScheduled(s) => {
            json!({ "outcome": "not_scheduled", "state": s.as_str() })
        }
    })
}

/// The body of a purge, optional: every waiting job by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    priority: Option<String>,
    #[serde(default, rename = "type")]
    job_type: Option<String>,
    #[serde(default)]
    ready: Option<bool>,
    #[serde(default)]
    scheduled: Option<bool>,
}

async fn purge(State(st): State<AppState>, Path(queue): Path<String>, body: Bytes) -> ApiResult {
    let b: PurgeBody = optional_body(&body)?;
    let mut what = Purge::all();
    if let Some(p) = b.priority {
        what = what.priority(p.parse()?);
    }
    if let Some(t) = b.job_type {
        what = what.job_type(t);
    }
    match (b.ready.unwrap_or(true), b.scheduled.unwrap_or(true)) {
        (true, true) => {}
        (true, false) => what = what.ready_only(),
        (false, true) => what = what.scheduled_only(),
        (false, false) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "ready and scheduled are both false: nothing to purge",
            ));
        }
    }
    let purged = st.admin.client().purge(&queue, what).await?;
    ok(json!({ "queue": queue, "ready": purged.ready, "scheduled": purged.scheduled }))
}

async fn batch(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match st.admin.client().batch(&id).await? {
        Some(b) => ok(json!(b)),
        None => Err(ApiError::not_found(&format!(
            "no batch {} (never created, or it expired)",
            crate::error::excerpt(&id)
        ))),
    }
}

async fn webhooks(State(st): State<AppState>) -> ApiResult {
    ok(json!({ "webhooks": st.admin.client().webhooks().await? }))
}

fn scope(kind: &str, name: String) -> Result<WebhookScope, ApiError> {
    match kind {
        "queue" => Ok(WebhookScope::Queue(name)),
        "type" => Ok(WebhookScope::Type(name)),
        other => Err(ApiError::not_found(&format!(
            "no webhook scope {} (queue or type)",
            crate::error::excerpt(other)
        ))),
    }
}

/// The body of a webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    secret: String,
    #[serde(default)]
    events: Option<Vec<WebhookEvent>>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

async fn set_webhook(
    State(st): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let scope = scope(&kind, name)?;
    let b: WebhookBody = json_body(&body)?;
    let mut hook = Webhook::new(b.url, b.secret);
    if let Some(events) = b.events {
        hook = hook.events(&events);
    }
    if let Some(ms) = b.timeout_ms {
        hook = hook.timeout(std::time::Duration::from_millis(ms));
    }
    st.admin.client().set_webhook(scope.clone(), hook).await?;
    ok(json!({ "set": true, "webhook": scope }))
}

async fn remove_webhook(
    State(st): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult {
    let scope = scope(&kind, name)?;
    let removed = st.admin.client().remove_webhook(scope.clone()).await?;
    ok(json!({ "removed": removed, "webhook": scope }))
}
