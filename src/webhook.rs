//! Webhooks: an HTTP POST for each job of a queue or job type that succeeds or dies
//! (README, "Webhooks").
//!
//! A delivery is a job itself (type `stevedore.webhook`), written by the script that ends
//! the job, in the same step, onto the job's queue: it is never lost, it retries with the
//! worker's backoff, and it is dead-lettered like any job once its attempts are spent.
//! Every worker runs deliveries for its queues. Each request is signed with the hook's
//! secret: `Stevedore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
//!
//! Hooks are kept in `<prefix>:webhooks` (scope → JSON); the scripts read a per-queue copy
//! of which events fire (`{q}:hooks`), which [`Client::set_webhook`] writes for the known
//! queues and every worker keeps current for its own queues each control round (about a
//! second).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::handler::{HandlerOptions, JobHandler};
use crate::{Client, Error, JobContext, JobError, Result};

/// The job type of webhook deliveries.
pub const DELIVERY_TYPE: &str = "stevedore.webhook";
/// Attempts a delivery gets, by default.
pub const DELIVERY_ATTEMPTS: u32 = 8;
/// Longest timeout a hook may set.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// When a hook fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookEvent {
    /// A job succeeded.
    Succeeded,
    /// A job was dead-lettered (any reason).
    Dead,
}

impl WebhookEvent {
    /// The name in requests and in Redis: `succeeded`, `dead`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Succeeded => "succeeded",
            WebhookEvent::Dead => "dead",
        }
    }
}

/// Whose jobs a hook is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookScope {
    /// Every job of a queue (all its partitions).
    Queue(String),
    /// Every job of a type, in whatever queue.
    Type(String),
}

impl WebhookScope {
    /// The field of `<prefix>:webhooks` and of `{q}:hooks`: `queue` / `type:<t>` in a
    /// queue's copy, `queue:<q>` / `type:<t>` in the hash.
    fn field(&self) -> String {
        match self {
            WebhookScope::Queue(q) => format!("queue:{q}"),
            WebhookScope::Type(t) => format!("type:{t}"),
        }
    }

    fn parse(field: &str) -> Option<WebhookScope> {
        let (kind, name) = field.split_once(':')?;
        match kind {
            "queue" => Some(WebhookScope::Queue(name.to_string())),
            "type" => Some(WebhookScope::Type(name.to_string())),
            _ => None,
        }
    }

    fn check(&self) -> Result<()> {
        match self {
            WebhookScope::Queue(q) => crate::names::validate_name("queue", q),
            WebhookScope::Type(t) => crate::names::validate_name("job type", t),
        }
    }
}

/// A webhook: where to POST, for which events, signed with which secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    url: String,
    events: Vec<WebhookEvent>,
    secret: String,
    timeout_ms: u64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"***")
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl Webhook {
    /// A hook POSTing to `url` (http or https) on success and on death, signed with
    /// `secret`, with a 10 s timeout per request.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Webhook {
            url: url.into(),
            events: vec![WebhookEvent::Succeeded, WebhookEvent::Dead],
            secret: secret.into(),
            timeout_ms: 10_000,
        }
    }

    /// Fires on these events only.
    pub fn events(mut self, events: &[WebhookEvent]) -> Self {
        self.events = events.to_vec();
        self
    }

    /// How long one request may take (at most 5 min); past it the delivery is retried.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    fn check(&self) -> Result<()> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| Error::InvalidInput(format!("webhook url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::InvalidInput(
                "webhook url: the scheme must be http or https".into(),
            ));
        }
        if self.secret.is_empty() {
            return Err(Error::InvalidInput(
                "webhook secret: it must not be empty (receivers check the signature)".into(),
            ));
        }
        if self.events.is_empty() {
            return Err(Error::InvalidInput(
                "webhook events: name at least one".into(),
            ));
        }
        if self.timeout_ms == 0 || Duration::from_millis(self.timeout_ms) > MAX_TIMEOUT {
            return Err(Error::InvalidInput(
                "webhook timeout: from 1 ms to 5 min".into(),
            ));
        }
        Ok(())
    }

    fn events_text(&self) -> String {
        let mut names: Vec<&str> = self.events.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.join(",")
    }
}

/// A hook as [`Client::webhooks`] lists it (its secret is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WebhookInfo {
    /// Whose jobs it is for.
    #[serde(flatten)]
    pub scope: WebhookScope,
    /// Where it POSTs.
    pub url: String,
    /// When it fires.
    pub events: Vec<WebhookEvent>,
    /// Per request, in ms.
    pub timeout_ms: u64,
}

impl Client {
    /// Sets (or replaces) the hook of `scope`. Workers deliver for it within about a
    /// second; the known queues at once.
    ///
    /// Errors: [`Error::InvalidInput`] for a url that is not http(s), an empty secret, no
    /// events, or a timeout out of range; [`Error::InvalidName`] for a bad scope name.
    ///
    /// ```no_run
    /// # async fn demo(client: stevedore::Client) -> stevedore::Result<()> {
    /// use stevedore::webhook::{Webhook, WebhookEvent, WebhookScope};
    /// client
    ///     .set_webhook(
    ///         WebhookScope::Type("invoice.send".into()),
    ///         Webhook::new("https://example.com/hooks/jobs", "s3cret").events(&[WebhookEvent::Dead]),
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_webhook(&self, scope: WebhookScope, hook: Webhook) -> Result<()> {
        scope.check()?;
        hook.check()?;
        let json = serde_json::to_string(&hook).map_err(|e| Error::InvalidInput(e.to_string()))?;
        self.store().set_webhook(&scope.field(), &json).await?;
        self.sync_known_queues().await
    }

    /// Removes the hook of `scope`; false when there was none. Deliveries already written
    /// are dropped when they run.
    pub async fn remove_webhook(&self, scope: WebhookScope) -> Result<bool> {
        scope.check()?;
        let had = self.store().remove_webhook(&scope.field()).await?;
        self.sync_known_queues().await?;
        Ok(had)
    }

    /// Every hook, by scope (secrets left out).
    pub async fn webhooks(&self) -> Result<Vec<WebhookInfo>> {
        let all = self.store().webhooks().await?;
        let mut out = Vec::new();
        for (field, json) in all.into_iter().collect::<BTreeMap<_, _>>() {
            let (Some(scope), Ok(hook)) = (
                WebhookScope::parse(&field),
                serde_json::from_str::<Webhook>(&json),
            ) else {
                continue;
            };
            out.push(WebhookInfo {
                scope,
                url: hook.url,
                events: hook.events,
                timeout_ms: hook.timeout_ms,
            });
        }
        Ok(out)
    }

    /// Writes every known queue's copy of the events that fire.
    async fn sync_known_queues(&self) -> Result<()> {
        let hooks = self.store().webhooks().await?;
        let queues = self.store().known_queues().await?;
        for q in queues {
            self.store()
                .sync_queue_hooks(&q, &queue_hooks(&hooks, &q))
                .await?;
        }
        Ok(())
    }
}

/// What `{q}:hooks` of queue (or partition) `queue` should hold, from the hooks hash:
/// `queue` / `type:<t>` → the events, comma-separated.
pub(crate) fn queue_hooks(
    hooks: &HashMap<String, String>,
    queue: &str,
) -> BTreeMap<String, String> {
    let base = crate::names::queue_of(queue);
    let mut out = BTreeMap::new();
    for (field, json) in hooks {
        let Ok(hook) = serde_json::from_str::<Webhook>(json) else {
            continue;
        };
        match WebhookScope::parse(field) {
            Some(WebhookScope::Queue(q)) if q == base => {
                out.insert("queue".to_string(), hook.events_text());
            }
            Some(WebhookScope::Type(t)) => {
                out.insert(format!("type:{t}"), hook.events_text());
            }
            _ => {}
        }
    }
    out
}

/// What a delivery job carries (written by the scripts, MessagePack).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The hook's scope field (`queue` or `type:<t>`).
    pub scope: String,
    /// `succeeded` or `dead`.
    pub event: String,
    /// The job that ended.
    pub job_id: String,
    /// Its type.
    pub job_type: String,
    /// Its queue (the partition, for a partitioned queue).
    pub queue: String,
    /// Its result (JSON, for `succeeded`) or its error (for `dead`).
    #[serde(default)]
    pub detail: String,
    /// When it ended (ms since the epoch, Redis' clock).
    pub at_ms: u64,
}

/// The built-in handler of `stevedore.webhook`, registered on every worker.
pub(crate) struct Deliver {
    client: Client,
    /// Made at the first delivery: building one loads the system's root certificates,
    /// which a worker that never delivers should not pay for.
    http: std::sync::OnceLock<reqwest::Client>,
}

impl Deliver {
    pub(crate) fn new(client: Client) -> Self {
        Deliver {
            client,
            http: std::sync::OnceLock::new(),
        }
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes a key of any length.
        Err(_) => return String::new(),
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={unix_seconds},v1={hex}")
}

impl JobHandler for Deliver {
    type Payload = Delivery;
    const NAME: &'static str = DELIVERY_TYPE;
    const QUEUE: &'static str = "";
    const OPTIONS: HandlerOptions = HandlerOptions::new().max_attempts(DELIVERY_ATTEMPTS);

    fn handle(&self, d: Delivery, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let client = self.client.clone();
        let http = self.http.get_or_init(reqwest::Client::new).clone();
        Box::pin(async move {
            let field = match d.scope.as_str() {
                "queue" => format!("queue:{}", crate::names::queue_of(&d.queue)),
                other => other.to_string(),
            };
            let Some(json) = client
                .store()
                .webhook(&field)
                .await
                .map_err(|e| JobError::retry(format!("reading the hook: {e}")))?
            else {
                tracing::info!(hook = %field, job_id = %d.job_id, "webhook removed; delivery dropped");
                return Ok(());
            };
            let hook: Webhook = serde_json::from_str(&json)
                .map_err(|e| JobError::permanent(format!("hook {field} does not read: {e}")))?;
            let result = if d.event == "succeeded" && !d.detail.is_empty() {
                serde_json::from_str::<serde_json::Value>(&d.detail).ok()
            } else {
                None
            };
            let error = (d.event != "succeeded").then_some(d.detail.as_str());
            let body = serde_json::to_vec(&serde_json::json!({
                "event": d.event,
                "job_id": d.job_id,
                "job_type": d.job_type,
                "queue": d.queue,
                "at_ms": d.at_ms,
                "result": result,
                "error": error,
                "delivery_id": ctx.id(),
                "attempt": ctx.attempt(),
            }))
            .map_err(|e| JobError::permanent(e.to_string()))?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let sent = http
                .post(&hook.url)
                .timeout(Duration::from_millis(hook.timeout_ms))
                .header("content-type", "application/json")
                .header(
                    "user-agent",
                    concat!("stevedore/", env!("CARGO_PKG_VERSION")),
                )
                .header("stevedore-event", d.event.as_str())
                .header("stevedore-delivery", ctx.id())
                .header("stevedore-signature", signature(&hook.secret, now, &body))
                .body(body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    return Err(JobError::retry(format!(
                        "POST {} failed: {}",
                        hook.url,
                        crate::error::one_line(&e.to_string(), 300)
                    )));
                }
            };
            let status = response.status();
            let _ = ctx.set_result(&serde_json::json!({ "status": status.as_u16() }));
            if status.is_success() {
                return Ok(());
            }
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let why = format!("POST {} answered {status}", hook.url);
            match (status.as_u16(), retry_after) {
                (429 | 503, Some(after)) => Err(JobError::retry_after(why, after)),
                (408 | 429, _) | (500..=599, _) => Err(JobError::retry(why)),
                // The receiver refuses this delivery: sending it again changes nothing.
                _ => Err(JobError::permanent(why)),
            }
        })
    }
}
