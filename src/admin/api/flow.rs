//! Rate and concurrency limits and queue capacities: list them with what they hold now,
//! set and remove them.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use crate::admin::LimitChange;
use crate::admin::errors::{ApiError, ApiResult, json_body, ok};
use crate::{LimitScope, RateLimit};

/// The routes under `/api/v1` of limits.
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/limits", get(list)).route(
        "/limits/{scope}/{name}",
        axum::routing::post(change).delete(remove),
    )
}

async fn list(State(st): State<AppState>) -> ApiResult {
    ok(json!(st.admin.limits().await?))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// `{"rate": "50/s" | null, "max_running": 2 | null, "capacity": 1000 | null}`: a field
/// left out stays as it is, `null` removes that limit (`capacity` for a queue only).
async fn change(
    State(st): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let scope = LimitScope::parse(&scope, &name)?;
    let body: serde_json::Map<String, Value> = json_body(&body)?;
    if let Some(other) = body
        .keys()
        .find(|k| !matches!(k.as_str(), "rate" | "max_running" | "capacity"))
    {
        return Err(invalid(format!(
            "unknown field {:?}: a limit change has `rate`, `max_running` and `capacity`",
            crate::error::excerpt(other)
        )));
    }
    let mut change = LimitChange::default();
    match body.get("rate") {
        None => {}
        Some(Value::Null) => change = change.rate(None),
        Some(Value::String(s)) => change = change.rate(Some(s.parse::<RateLimit>()?)),
        Some(_) => {
            return Err(invalid(
                "`rate` is a string like \"50/s\" or \"10/1m burst 1\", or null to remove it"
                    .into(),
            ));
        }
    }
    match body.get("max_running") {
        None => {}
        Some(Value::Null) => change = change.max_running(None),
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => change = change.max_running(Some(n)),
            None => {
                return Err(invalid(
                    "`max_running` is a whole number from 1 to 4294967295, or null to remove it"
                        .into(),
                ));
            }
        },
    }
    match body.get("capacity") {
        None => {}
        Some(Value::Null) => change = change.capacity(None),
        Some(v) => match v.as_u64() {
            Some(n) => change = change.capacity(Some(n)),
            None => {
                return Err(invalid(
                    "`capacity` is a whole number of jobs, at least 1, or null to remove it".into(),
                ));
            }
        },
    }
    if change == LimitChange::default() {
        return Err(invalid(
            "nothing to change: give `rate`, `max_running` or `capacity`".into(),
        ));
    }
    st.admin.set_limits(&scope, &change).await?;
    current(&st, &scope).await
}

/// Removes every limit of the scope (and a queue's capacity).
async fn remove(
    State(st): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
) -> ApiResult {
    let scope = LimitScope::parse(&scope, &name)?;
    let mut change = LimitChange::default().rate(None).max_running(None);
    if matches!(scope, LimitScope::Queue(_)) {
        change = change.capacity(None);
    }
    st.admin.set_limits(&scope, &change).await?;
    current(&st, &scope).await
}

/// The scope's row after a change (with no limits when none is left).
async fn current(st: &AppState, scope: &LimitScope) -> ApiResult {
    let row = st
        .admin
        .limits()
        .await?
        .into_iter()
        .find(|r| r.scope == scope.kind() && r.name == scope.name());
    ok(match row {
        Some(r) => json!(r),
        None => json!({
            "scope": scope.kind(),
            "name": scope.name(),
            "rate": null,
            "rate_per_second": null,
            "burst": null,
            "max_running": null,
            "capacity": null,
            "queues": [],
        }),
    })
}
