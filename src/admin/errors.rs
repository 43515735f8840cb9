//! The admin API's errors: JSON `{"error": "<kind>", "message": "..."}` with a status that
//! says what to do, the mapping from stevedore's [`Error`], and reading a JSON body.

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Error;

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

    pub(super) fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// The error with one more field in its JSON body, e.g. the id a duplicate names.
    pub(super) fn with_field(mut self, key: &'static str, value: Value) -> Self {
        self.extra = Some((key, value));
        self
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
            Error::UnknownQueue(_) | Error::UnknownJob(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::QueueNotEmpty { .. } => (StatusCode::CONFLICT, "queue_not_empty"),
            Error::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            e if e.is_redis() => (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable"),
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
        // A full bounded queue: workers make room continually, so a second is a fair wait.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(QUEUE_FULL_RETRY_AFTER),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED
            && let Ok(v) = header::HeaderValue::from_str("Bearer")
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// The `Retry-After` of a 429 (a full bounded queue), in seconds.
const QUEUE_FULL_RETRY_AFTER: &str = "1";

/// What a handler answers: its response, or an [`ApiError`].
pub(super) type ApiResult = Result<Response, ApiError>;

/// A 200 with `value` as its JSON body.
pub(super) fn ok(value: Value) -> ApiResult {
    Ok(axum::Json(value).into_response())
}

/// Parses a JSON body whatever its content type (curl's `-d` sends a form type): 400 when
/// it is not JSON, 422 when it is JSON of the wrong shape.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
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
