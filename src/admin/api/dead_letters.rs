//! Dead letters: list (paged, filtered, bounded in size), show, delete and replay one,
//! replay or purge all that match a filter.

use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::Error;
use crate::admin::errors::{ApiError, ApiResult, json_body, ok};
use crate::admin::limits::{LIST_PAGE_BYTES, LIST_PAYLOAD_LIMIT};
use crate::dlq::{DeadLetterFilter, DeadLetterQuery, DeadReason};

/// The routes under `/api/v1` of a queue's dead letters.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/queues/{queue}/dlq", get(dlq_list))
        .route("/queues/{queue}/dlq/replay", post(dlq_replay))
        .route("/queues/{queue}/dlq/purge", post(dlq_purge))
        .route(
            "/queues/{queue}/dlq/{entry}",
            get(dlq_show).delete(dlq_delete),
        )
        .route("/queues/{queue}/dlq/{entry}/replay", post(dlq_replay_one))
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
