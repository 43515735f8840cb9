//! Rate limits and concurrency limits, fleet-wide: at most `n` jobs per period, or at most
//! `k` jobs running at once, of a queue, of a job type, or of each key a job type derives
//! from its payload (a customer, a tenant).
//!
//! Limits live in Redis (`<prefix>:limits`), so every worker reads the same ones: a worker
//! records the limits its handlers and builder declare when it starts, an operator may set
//! or remove one at any time ([`Client::set_rate_limit`](crate::Client::set_rate_limit)),
//! and every worker follows within about a second. Workers take tokens for a fetched batch
//! in one script call per queue (a token bucket per limit, in Redis); a job that finds no
//! token is not run and not failed: it waits in the queue's scheduled set, with its
//! attempt count unchanged, for the time its tokens were reserved for. See the README's
//! "Rate limits" and docs/architecture.md, "Rate limits".

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{Client, Error, Result};

/// At most `count` jobs per `per`, in bursts of up to `burst` (default `count`).
///
/// Written `"50/s"`, `"100/1m"`, `"10/500ms"`, and `"50/s burst 100"` for another burst
/// (humantime periods: `ms`, `s`, `m`, `h`; a bare unit is one of it).
///
/// ```
/// use std::time::Duration;
/// use stevedore::RateLimit;
///
/// let limit: RateLimit = "50/s".parse().unwrap();
/// assert_eq!(limit, RateLimit::new(50, Duration::from_secs(1)));
/// assert_eq!(limit.burst(), 50);
/// assert_eq!("10/1m burst 1".parse::<RateLimit>().unwrap().to_string(), "10/1m burst 1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateLimit {
    count: u32,
    per: Duration,
    burst: Option<u32>,
}

/// The longest period a limit may have.
const MAX_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

impl RateLimit {
    /// `count` jobs per `per`. Checked where it is used: a count of 0, or a period of zero
    /// or longer than a week, is refused there with [`Error::InvalidConfig`] or
    /// [`Error::InvalidInput`].
    pub const fn new(count: u32, per: Duration) -> Self {
        RateLimit {
            count,
            per,
            burst: None,
        }
    }

    /// `count` jobs per second.
    pub const fn per_second(count: u32) -> Self {
        RateLimit::new(count, Duration::from_secs(1))
    }

    /// At most `burst` jobs at once after an idle time (default: the count). A burst of 1
    /// spaces jobs evenly, one each `per / count`.
    pub const fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Jobs per period.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub const fn per(&self) -> Duration {
        self.per
    }

    /// Jobs that may start at once after an idle time.
    pub const fn burst(&self) -> u32 {
        match self.burst {
            Some(b) => b,
            None => self.count,
        }
    }

    /// Why this is not a limit, if it is not one.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.count == 0 {
            return Err(format!(
                "a rate limit of 0 jobs per {} lets nothing run: pause the queue instead",
                humantime::format_duration(self.per)
            ));
        }
        if self.per.is_zero() {
            return Err("a rate limit's period must be longer than zero".into());
        }
        if self.per > MAX_PERIOD {
            return Err(format!(
                "a rate limit's period may be at most 7 days, not {}",
                humantime::format_duration(self.per)
            ));
        }
        if self.burst == Some(0) {
            return Err("a rate limit's burst must be at least 1".into());
        }
        Ok(())
    }

    /// Milliseconds between two jobs at the steady rate.
    pub(crate) fn interval_ms(&self) -> f64 {
        self.per.as_secs_f64() * 1000.0 / f64::from(self.count.max(1))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.per;
        let period = if per.subsec_nanos() == 0 && per.as_secs().is_multiple_of(3600) {
            format!("{}h", per.as_secs() / 3600)
        } else if per.subsec_nanos() == 0 && per.as_secs().is_multiple_of(60) {
            format!("{}m", per.as_secs() / 60)
        } else if per.subsec_nanos() == 0 {
            format!("{}s", per.as_secs())
        } else {
            format!("{}ms", per.as_millis())
        };
        write!(f, "{}/{period}", self.count)?;
        if let Some(b) = self.burst.filter(|b| *b != self.count) {
            write!(f, " burst {b}")?;
        }
        Ok(())
    }
}

impl FromStr for RateLimit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "invalid rate limit {s:?}: {why} (examples: \"50/s\", \"100/1m\", \"10/500ms burst 1\")"
            ))
        };
        let mut words = s.split_whitespace();
        let rate = words.next().ok_or_else(|| bad("it is empty".into()))?;
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some("burst"), Some(n), None) => Some(
                n.parse::<u32>()
                    .map_err(|_| bad(format!("burst {n:?} is not a whole number")))?,
            ),
            _ => {
                return Err(bad(
                    "expected `<count>/<period>` and an optional `burst <n>`".into(),
                ));
            }
        };
        let (count, period) = rate
            .split_once('/')
            .ok_or_else(|| bad("expected `<count>/<period>`".into()))?;
        let count = count
            .parse::<u32>()
            .map_err(|_| bad(format!("count {count:?} is not a whole number")))?;
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            period.to_string()
        } else {
            format!("1{period}")
        };
        let per = humantime::parse_duration(&period).map_err(|e| bad(e.to_string()))?;
        let limit = RateLimit { count, per, burst };
        limit.check().map_err(bad)?;
        Ok(limit)
    }
}

/// Why `running` is no concurrency limit for `scope`, if it is not one.
pub(crate) fn check_running(scope: &LimitScope, running: u32) -> std::result::Result<(), String> {
    if running == 0 {
        return Err(format!(
            "a concurrency limit of 0 for {scope} lets nothing run: pause the queue instead"
        ));
    }
    Ok(())
}

/// What a rate or concurrency limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitScope {
    /// Every job of a queue (of all its partitions, when it is partitioned).
    Queue(String),
    /// The jobs of one type, on each queue that holds them.
    Type(String),
    /// The jobs of one type, for each key its handler derives from the payload
    /// (`#[job_handler(limit_key = "customer_id")]`), counted apart per key.
    Key(String),
}

impl LimitScope {
    /// The field of `<prefix>:limits` the limit is stored under: `queue:<name>`,
    /// `type:<name>` or `key:<type>`.
    pub fn field(&self) -> String {
        match self {
            LimitScope::Queue(q) => format!("queue:{q}"),
            LimitScope::Type(t) => format!("type:{t}"),
            LimitScope::Key(t) => format!("key:{t}"),
        }
    }

    /// Reads a field of `<prefix>:limits` back (`None` for one this version does not know,
    /// or whose name is not a queue name or job type: written by hand).
    pub fn from_field(field: &str) -> Option<LimitScope> {
        let (kind, name) = field.split_once(':')?;
        let name = name.to_string();
        let scope = match kind {
            "queue" => LimitScope::Queue(name),
            "type" => LimitScope::Type(name),
            "key" => LimitScope::Key(name),
            _ => return None,
        };
        scope.check().ok()?;
        Some(scope)
    }

    /// A scope as the HTTP API and the CLI name it: `kind` is `queue`, `type` or `key`.
    /// [`Error::InvalidInput`] for another kind, [`Error::InvalidName`] for a name that is
    /// not a queue name or job type.
    pub fn parse(kind: &str, name: &str) -> Result<LimitScope> {
        let scope = match kind {
            "queue" => LimitScope::Queue(name.to_string()),
            "type" => LimitScope::Type(name.to_string()),
            "key" => LimitScope::Key(name.to_string()),
            other => {
                return Err(Error::InvalidInput(format!(
                    "unknown limit scope {:?}: use queue, type or key",
                    crate::error::excerpt(other)
                )));
            }
        };
        scope.check()?;
        Ok(scope)
    }

    /// `queue`, `type` or `key`.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitScope::Queue(_) => "queue",
            LimitScope::Type(_) => "type",
            LimitScope::Key(_) => "key",
        }
    }

    /// The queue or job type it names.
    pub fn name(&self) -> &str {
        match self {
            LimitScope::Queue(n) | LimitScope::Type(n) | LimitScope::Key(n) => n,
        }
    }

    /// Checks the name it holds.
    pub(crate) fn check(&self) -> Result<()> {
        match self {
            LimitScope::Queue(q) => crate::names::validate_name("queue", q),
            LimitScope::Type(t) | LimitScope::Key(t) => crate::names::validate_name("job type", t),
        }
    }
}

impl fmt::Display for LimitScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitScope::Queue(q) => write!(f, "queue {q:?}"),
            LimitScope::Type(t) => write!(f, "job type {t:?}"),
            LimitScope::Key(t) => write!(f, "each key of job type {t:?}"),
        }
    }
}

/// The field of `<prefix>:limits` a concurrency limit of `scope` is stored under:
/// `concurrency:<scope field>`.
pub(crate) fn concurrency_field(scope: &LimitScope) -> String {
    format!("concurrency:{}", scope.field())
}

impl Client {
    /// Sets the concurrency limit of `scope` in Redis: at most `running` of its jobs run at
    /// once across every worker. Every worker follows within about a second. A job that
    /// finds the limit full waits in the scheduled set, its attempt count unchanged, and
    /// asks again (sooner when it is fresh, at most every 2 s). A place is held for as long
    /// as its job runs, renewed with the job's lease, so a killed worker's places are free
    /// again once its lease runs out.
    ///
    /// ```no_run
    /// # async fn run(client: stevedore::Client) -> stevedore::Result<()> {
    /// use stevedore::LimitScope;
    ///
    /// // Two calls to the partner's API at a time, whichever worker makes them.
    /// client
    ///     .set_concurrency_limit(LimitScope::Type("partner.call".into()), 2)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`Error::InvalidInput`] for 0 (pause the queue instead), [`Error::InvalidName`] for
    /// a scope whose name is not a queue name or job type.
    pub async fn set_concurrency_limit(&self, scope: LimitScope, running: u32) -> Result<()> {
        scope.check()?;
        check_running(&scope, running).map_err(Error::InvalidInput)?;
        self.store()
            .set_limit_fields(&[(concurrency_field(&scope), running.to_string())])
            .await
    }

    /// Removes the concurrency limit of `scope`; false when it had none.
    pub async fn remove_concurrency_limit(&self, scope: &LimitScope) -> Result<bool> {
        scope.check()?;
        self.store()
            .remove_limit_field(&concurrency_field(scope))
            .await
    }

    /// Every concurrency limit in Redis, sorted by scope. One that does not read (written
    /// by hand) is left out.
    pub async fn concurrency_limits(&self) -> Result<Vec<(LimitScope, u32)>> {
        let mut out: Vec<(LimitScope, u32)> = self
            .store()
            .limit_fields()
            .await?
            .into_iter()
            .filter_map(|(field, value)| {
                let scope = LimitScope::from_field(field.strip_prefix("concurrency:")?)?;
                let n: u32 = value.trim().parse().ok()?;
                (n > 0).then_some((scope, n))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Sets the rate limit of `scope` in Redis, replacing the one it had; every worker
    /// follows within about a second. A worker that declares a limit for the same scope
    /// (in its builder or a handler's attribute) writes its own again when it starts.
    ///
    /// ```no_run
    /// # async fn run(client: stevedore::Client) -> stevedore::Result<()> {
    /// use stevedore::{LimitScope, RateLimit};
    ///
    /// client
    ///     .set_rate_limit(LimitScope::Type("email.send".into()), "100/s".parse()?)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`Error::InvalidInput`] for a limit that is none (0 jobs, a period of zero), and
    /// [`Error::InvalidName`] for a scope whose name is not a queue name or job type.
    pub async fn set_rate_limit(&self, scope: LimitScope, limit: RateLimit) -> Result<()> {
        scope.check()?;
        limit
            .check()
            .map_err(|why| Error::InvalidInput(format!("rate limit of {scope}: {why}")))?;
        self.store()
            .set_limit_fields(&[(scope.field(), limit.to_string())])
            .await
    }

    /// Removes the rate limit of `scope`; false when it had none. Workers follow within
    /// about a second.
    pub async fn remove_rate_limit(&self, scope: &LimitScope) -> Result<bool> {
        scope.check()?;
        self.store().remove_limit_field(&scope.field()).await
    }

    /// Every rate limit in Redis, sorted by scope. One that does not read (written by
    /// hand) is left out.
    pub async fn rate_limits(&self) -> Result<Vec<(LimitScope, RateLimit)>> {
        let mut out: Vec<(LimitScope, RateLimit)> = self
            .store()
            .limit_fields()
            .await?
            .into_iter()
            .filter_map(|(field, value)| {
                Some((LimitScope::from_field(&field)?, value.parse().ok()?))
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_and_print_back() {
        for (text, count, ms, burst, shown) in [
            ("50/s", 50, 1000, 50, "50/1s"),
            ("50/1s", 50, 1000, 50, "50/1s"),
            ("100/1m", 100, 60_000, 100, "100/1m"),
            ("10/500ms burst 1", 10, 500, 1, "10/500ms burst 1"),
            ("3/2h burst 3", 3, 7_200_000, 3, "3/2h"),
        ] {
            let l: RateLimit = text.parse().expect("a limit");
            assert_eq!(l.count(), count, "{text}");
            assert_eq!(l.per(), Duration::from_millis(ms), "{text}");
            assert_eq!(l.burst(), burst, "{text}");
            assert_eq!(l.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<RateLimit>().expect("a limit").burst(), burst);
        }
    }

    #[test]
    fn bad_limits_say_why() {
        for (text, why) in [
            ("0/s", "lets nothing run"),
            ("5/0s", "longer than zero"),
            ("5/8days", "at most 7 days"),
            ("5/s burst 0", "burst must be at least 1"),
            ("-5/s", "not a whole number"),
            ("5", "expected `<count>/<period>`"),
            ("5/fortnight", "invalid rate limit"),
            ("5/s burst", "optional `burst <n>`"),
            ("", "empty"),
        ] {
            let e = text.parse::<RateLimit>().expect_err("refused");
            assert!(matches!(e, Error::InvalidInput(_)), "{text}: {e}");
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        assert!(RateLimit::new(0, Duration::from_secs(1)).check().is_err());
        assert!(RateLimit::per_second(1).with_burst(0).check().is_err());
    }

    #[test]
    fn scopes_round_trip_through_their_field() {
        for s in [
            LimitScope::Queue("emails".into()),
            LimitScope::Type("email.send".into()),
            LimitScope::Key("email.send".into()),
        ] {
            assert_eq!(LimitScope::from_field(&s.field()), Some(s.clone()));
        }
        assert_eq!(LimitScope::from_field("other:x"), None);
        assert_eq!(LimitScope::from_field("type:<img src=x>"), None);
        assert_eq!(LimitScope::from_field("queue:a:b"), None);
    }
}
