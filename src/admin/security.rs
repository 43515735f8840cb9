//! Who may use the admin server: its auth policy, the hosts it answers for, and the
//! refusal of requests that another web site makes a browser send.
//!
//! - **Auth policy**, chosen when the config is made: a token that guards every API call,
//!   reads included ([`AdminConfig::with_token`], optionally with a read-only token), no
//!   token but only for clients on this machine ([`AdminConfig::loopback_only`]), or no
//!   auth at all for a server behind a proxy that authenticates
//!   ([`AdminConfig::insecure_no_auth`]).
//! - **Host check** against DNS rebinding: a request's `Host` must be an IP address, a
//!   loopback name (`localhost`) or a name given to [`AdminConfig::allowed_hosts`].
//! - **Cross-origin refusal**: a request that changes data is refused when the browser
//!   says it comes from another site (`Sec-Fetch-Site`) or from another origin (`Origin`),
//!   and a body must be sent as `Content-Type: application/json`, which no HTML form can
//!   send and no other site can send without a preflight this server never approves.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::limits::{DEFAULT_BODY_LIMIT, DEFAULT_REQUEST_TIMEOUT};
use crate::Metrics;

/// Who may call the API.
#[derive(Clone)]
pub(super) enum Auth {
    /// `Authorization: Bearer <token>` on every API call; `read` also for GET.
    Token {
        full: Arc<str>,
        read: Option<Arc<str>>,
    },
    /// No token; only clients on a loopback address.
    LoopbackOnly,
    /// No token, from anywhere: a proxy in front authenticates.
    None,
}

/// Settings of the admin router, starting with its auth policy: there is no default, so
/// a server open to its network is always a choice written in the code.
#[derive(Clone)]
#[must_use]
pub struct AdminConfig {
    pub(super) auth: Auth,
    pub(super) hosts: Option<Vec<String>>,
    pub(super) body_limit: usize,
    pub(super) request_timeout: Duration,
    pub(super) metrics: Option<Metrics>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::Token { read, .. } if read.is_some() => "token *** (and a read-only token)",
            Auth::Token { .. } => "token ***",
            Auth::LoopbackOnly => "loopback only",
            Auth::None => "none",
        };
        f.debug_struct("AdminConfig")
            .field("auth", &auth)
            .field("hosts", &self.hosts)
            .field("body_limit", &self.body_limit)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl AdminConfig {
    fn with_auth(auth: Auth) -> Self {
        AdminConfig {
            auth,
            hosts: Some(Vec::new()),
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            metrics: None,
        }
    }

    /// Every API call needs `Authorization: Bearer <token>`, reads included (dead letters
    /// hold whatever personal data jobs carry). The dashboard page, the OpenAPI document
    /// and `/metrics`, `/healthz`, `/readyz` stay open: they hold no job data. An empty
    /// token matches nothing: every API call is then refused.
    pub fn with_token(token: impl Into<String>) -> Self {
        AdminConfig::with_auth(Auth::Token {
            full: Arc::from(token.into()),
            read: None,
        })
    }

    /// No token, and only clients on this machine (a loopback peer address) are served;
    /// others get 403. The router must see the peer's address: serve it with
    /// [`serve`](super::serve), or with axum's `into_make_service_with_connect_info`.
    pub fn loopback_only() -> Self {
        AdminConfig::with_auth(Auth::LoopbackOnly)
    }

    /// No token, for anyone who can reach the server: only behind a proxy that
    /// authenticates, or on a network where everyone may enqueue, replay and purge.
    pub fn insecure_no_auth() -> Self {
        AdminConfig::with_auth(Auth::None)
    }

    /// Also accepts `token` for reads (GET) only: for dashboards and scripts that look but
    /// must not change anything. Only with [`with_token`](Self::with_token); ignored
    /// otherwise.
    pub fn read_token(mut self, token: impl Into<String>) -> Self {
        if let Auth::Token { read, .. } = &mut self.auth {
            let t: String = token.into();
            *read = (!t.is_empty()).then(|| Arc::from(t));
        }
        self
    }

    /// Host names the server answers for besides IP addresses and `localhost` (say, the
    /// public name behind a proxy); a request with another `Host` gets 403, which stops DNS
    /// rebinding. Names are compared without their port and case.
    pub fn allowed_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        if let Some(list) = &mut self.hosts {
            list.extend(hosts.into_iter().map(|h| h.into().to_ascii_lowercase()));
        }
        self
    }

    /// Answers whatever the `Host` header says: for a proxy in front that checks it.
    pub fn allow_any_host(mut self) -> Self {
        self.hosts = None;
        self
    }

    /// Largest request body (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How long one request may take, its body included (default 30 s): 408 past it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Serves these metrics at `/metrics` (default: metrics of its own that sample every
    /// known queue).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        matches!(self.auth, Auth::Token { .. })
    }
}

/// What the guard checks, shared by every request.
#[derive(Clone)]
pub(super) struct Guard {
    pub(super) auth: Auth,
    pub(super) hosts: Option<Arc<[String]>>,
}

fn refuse(status: StatusCode, kind: &'static str, message: &str) -> Response {
    ApiError::new(status, kind, message).into_response()
}

/// The host part of a `Host` header or an origin's authority, lower case, without port.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        return format!("[{}]", rest.split(']').next().unwrap_or_default());
    }
    a.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(a.clone(), |(h, _)| h.to_string())
}

impl Guard {
    fn host_allowed(&self, host: &str) -> bool {
        let Some(names) = &self.hosts else {
            return true;
        };
        let name = host_name(host);
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        name == "localhost"
            || bare.parse::<IpAddr>().is_ok()
            || names.iter().any(|n| host_name(n) == name)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Refuses a request whose `Host` is not allowed, a client off this machine under
/// [`AdminConfig::loopback_only`], and a state-changing request that another site made a
/// browser send, or that is not JSON.
pub(super) async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    // Probes and scrapes hold no job data and come by service names: no host check.
    let ops = matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz");
    let host = header(headers, &header::HOST)
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host.filter(|h| ops || g.host_allowed(h)) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this server does not answer for that Host (add it with AdminConfig::allowed_hosts, or `stevedore serve --allowed-host`)",
        );
    };
    if matches!(g.auth, Auth::LoopbackOnly) {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if !peer.is_some_and(|ip| ip.is_loopback()) {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "without a token this server only answers clients on its own machine",
            );
        }
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(site) = header(headers, &header::HeaderName::from_static("sec-fetch-site"))
            && !matches!(site, "same-origin" | "none")
        {
            return refuse(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "requests that change data are refused when another site sends them",
            );
        }
        if let Some(origin) = header(headers, &header::ORIGIN) {
            let same = origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host.trim()));
            if !same {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "cross_origin",
                    "requests that change data are refused from another origin",
                );
            }
        }
        let has_body = header(headers, &header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0")
            || headers.contains_key(header::TRANSFER_ENCODING);
        let content_type = header(headers, &header::CONTENT_TYPE);
        let json = content_type.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if (has_body || content_type.is_some()) && !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            );
        }
    }
    next.run(req).await
}

/// With [`AdminConfig::with_token`]: every API call needs the token (the read-only token
/// is enough for GET). The OpenAPI document is open.
pub(super) async fn require_token(
    State(g): State<Arc<Guard>>,
    req: Request,
    next: Next,
) -> Response {
    let Auth::Token { full, read } = &g.auth else {
        return next.run(req).await;
    };
    if req.uri().path().ends_with("/openapi.json") {
        return next.run(req).await;
    }
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let given = bearer(req.headers());
    let matches = |t: &Arc<str>| {
        !t.is_empty() && given.is_some_and(|g| constant_time_eq(g.as_bytes(), t.as_bytes()))
    };
    if matches(full) || (reads && read.as_ref().is_some_and(matches)) {
        return next.run(req).await;
    }
    let message = if reads {
        "this server needs a token: send Authorization: Bearer <token>"
    } else {
        "this request changes data: send Authorization: Bearer <token> (a read-only token is not enough)"
    };
    refuse(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_addresses_localhost_or_allowed_names() {
        let g = Guard {
            auth: Auth::None,
            hosts: Some(Arc::from(vec!["jobs.example.com".to_string()])),
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "10.0.0.7",
            "jobs.example.com",
            "Jobs.Example.com:443",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "",
            "jobs.example.com.evil",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        let any = Guard {
            auth: Auth::None,
            hosts: None,
        };
        assert!(any.host_allowed("evil.example"));
    }
}
