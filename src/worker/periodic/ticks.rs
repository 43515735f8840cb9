//! The ticks of a cron schedule, and which tick a worker claims next: pure time logic,
//! tested without Redis.

use chrono::{DateTime, TimeZone, Utc};

/// The ticks of a schedule, in ms since the epoch. Ticks fall on whole seconds.
pub(super) trait Ticks: Send + Sync {
    /// The first tick strictly after `ms`, if there is one.
    fn next_after(&self, ms: i64) -> Option<i64>;
    /// The newest tick at or before `ms`, if there is one.
    fn latest_until(&self, ms: i64) -> Option<i64>;
}

pub(super) struct CronTicks<Z> {
    pub(super) schedule: cron::Schedule,
    pub(super) zone: Z,
}

impl<Z: TimeZone + Send + Sync> Ticks for CronTicks<Z> {
    fn next_after(&self, ms: i64) -> Option<i64> {
        let at = DateTime::<Utc>::from_timestamp_millis(ms)?.with_timezone(&self.zone);
        self.schedule
            .after(&at)
            .next()
            .map(|t| t.timestamp_millis())
    }

    fn latest_until(&self, ms: i64) -> Option<i64> {
        // Ticks are whole seconds: the newest one strictly before the next whole second.
        let bound = (ms.div_euclid(1000) + 1) * 1000;
        let at = DateTime::<Utc>::from_timestamp_millis(bound)?.with_timezone(&self.zone);
        self.schedule
            .after(&at)
            .next_back()
            .map(|t| t.timestamp_millis())
    }
}

/// Where a schedule stands when its worker starts: ticks up to the returned time are
/// settled. With catch-up and a known newest claimed tick, that tick (so a missed one
/// after it is due at once); otherwise now (only future ticks run).
pub(super) fn settled_at_start(catch_up: bool, now: i64, last_claimed: Option<i64>) -> i64 {
    match last_claimed {
        Some(last) if catch_up => last.min(now),
        _ => now,
    }
}

/// The tick to claim next, given that ticks up to `settled` are settled: the first tick
/// after `settled` if it is still to come, else the newest tick due by `now` (several
/// missed ticks collapse into that one). `late` is true when the tick is already due.
pub(super) fn next_tick(ticks: &dyn Ticks, settled: i64, now: i64) -> Option<NextTick> {
    let next = ticks.next_after(settled)?;
    if next > now {
        return Some(NextTick {
            at: next,
            late: false,
        });
    }
    let at = ticks.latest_until(now).unwrap_or(next).max(next);
    Some(NextTick { at, late: true })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NextTick {
    pub(super) at: i64,
    pub(super) late: bool,
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;

    use super::super::*;
    use super::*;

    fn ticks(expr: &str) -> Arc<dyn Ticks> {
        let schedule = cron::Schedule::from_str(expr).expect("valid expression");
        Arc::new(CronTicks {
            schedule,
            zone: Utc,
        })
    }

    /// 2024-01-01T00:00:00Z, a Monday.
    const T0: i64 = 1_704_067_200_000;

    #[test]
    fn next_tick_is_strictly_after() {
        let t = ticks("*/5 * * * * *");
        assert_eq!(t.next_after(T0), Some(T0 + 5_000));
        assert_eq!(t.next_after(T0 - 1), Some(T0));
        assert_eq!(t.next_after(T0 + 4_999), Some(T0 + 5_000));
        assert_eq!(t.next_after(T0 + 5_000), Some(T0 + 10_000));
    }

    #[test]
    fn latest_tick_is_at_or_before() {
        let t = ticks("*/5 * * * * *");
        assert_eq!(t.latest_until(T0), Some(T0));
        assert_eq!(t.latest_until(T0 + 1), Some(T0));
        assert_eq!(t.latest_until(T0 + 4_999), Some(T0));
        assert_eq!(t.latest_until(T0 + 5_000), Some(T0 + 5_000));
        assert_eq!(t.latest_until(T0 - 1), Some(T0 - 5_000));
        let daily = ticks("0 0 0 * * *");
        assert_eq!(daily.latest_until(T0 + 36_000_000), Some(T0));
    }

    #[test]
    fn time_zones_shift_ticks() {
        let paris_winter = chrono::FixedOffset::east_opt(3600).expect("offset");
        let t: Arc<dyn Ticks> = Arc::new(CronTicks {
            schedule: cron::Schedule::from_str("0 0 9 * * *").expect("valid"),
            zone: paris_winter,
        });
        // 09:00 at UTC+1 is 08:00 UTC.
        assert_eq!(t.next_after(T0), Some(T0 + 8 * 3_600_000));
        assert_eq!(
            ticks("0 0 9 * * *").next_after(T0),
            Some(T0 + 9 * 3_600_000)
        );
    }

    #[test]
    fn on_time_ticks_wait_and_are_not_late() {
        let t = ticks("*/5 * * * * *");
        let settled = settled_at_start(true, T0 + 2_000, Some(T0));
        assert_eq!(
            next_tick(&*t, settled, T0 + 2_000),
            Some(NextTick {
                at: T0 + 5_000,
                late: false
            })
        );
    }

    #[test]
    fn an_outage_catches_up_with_the_latest_missed_tick_only() {
        let t = ticks("* * * * * *");
        // Last claimed 10 s ago: nine ticks missed, one catch-up for the latest.
        let now = T0 + 10_300;
        let settled = settled_at_start(true, now, Some(T0));
        assert_eq!(
            next_tick(&*t, settled, now),
            Some(NextTick {
                at: T0 + 10_000,
                late: true
            })
        );
        // Once that one is settled, the next regular tick waits.
        assert_eq!(
            next_tick(&*t, T0 + 10_000, now),
            Some(NextTick {
                at: T0 + 11_000,
                late: false
            })
        );
    }

    #[test]
    fn no_catch_up_when_nothing_was_missed_new_or_disabled() {
        let t = ticks("*/5 * * * * *");
        let now = T0 + 7_000;
        // The latest due tick (T0 + 5 s) was claimed: wait for the next.
        let settled = settled_at_start(true, now, Some(T0 + 5_000));
        assert!(!next_tick(&*t, settled, now).expect("tick").late);
        // A new schedule (nothing claimed ever) starts with its next tick.
        let settled = settled_at_start(true, now, None);
        assert!(!next_tick(&*t, settled, now).expect("tick").late);
        // Catch-up off: the missed ticks are skipped.
        let settled = settled_at_start(false, now, Some(T0 - 60_000));
        assert_eq!(
            next_tick(&*t, settled, now),
            Some(NextTick {
                at: T0 + 10_000,
                late: false
            })
        );
        // A newest tick in the future (Redis' clock went back) does not stall planning.
        assert_eq!(settled_at_start(true, now, Some(now + 999_000)), now);
    }

    #[test]
    fn a_stalled_worker_collapses_missed_ticks() {
        let t = ticks("*/5 * * * * *");
        // Settled T0, then the process stalled for a minute.
        assert_eq!(
            next_tick(&*t, T0, T0 + 60_001),
            Some(NextTick {
                at: T0 + 60_000,
                late: true
            })
        );
    }

    #[test]
    fn default_names_are_stable_and_tell_apart() {
        let a = default_name("emails", "email.digest", "0 */5 * * * *", "UTC");
        assert_eq!(
            a,
            default_name("emails", "email.digest", "0 */5 * * * *", "UTC")
        );
        assert!(a.starts_with("email.digest-"), "{a}");
        assert_eq!(a.len(), "email.digest-".len() + 10);
        assert!(check_name(&a).is_ok());
        assert_ne!(
            a,
            default_name("other", "email.digest", "0 */5 * * * *", "UTC")
        );
        assert_ne!(
            a,
            default_name("emails", "email.other", "0 */5 * * * *", "UTC")
        );
        assert_ne!(
            a,
            default_name("emails", "email.digest", "0 */10 * * * *", "UTC")
        );
        assert_ne!(
            a,
            default_name("emails", "email.digest", "0 */5 * * * *", "+01:00")
        );
        // Pinned: a default name must not change between releases, or schedules would
        // lose their history on upgrade.
        assert_eq!(default_name("q", "t", "* * * * * *", "UTC"), "t-e0d3cdaec2");
    }

    #[test]
    fn names_are_checked() {
        for ok in ["nightly", "report.hourly-v2", "a_b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(101);
        for bad in ["", "a b", "a:b", "{q}", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_expressions_are_refused_with_the_parsers_reason() {
        let job = crate::RawJob::new("t", "q", &1).expect("job");
        for (expr, hint) in [
            ("not a cron", "invalid cron expression"),
            ("*/5 * * * *", "seconds field"),
            ("61 * * * * *", "invalid cron expression"),
            ("0 0 0 30 2 * 2020", "never run"),
        ] {
            let err = Periodic::new(expr, job.clone())
                .into_schedule(1024)
                .err()
                .unwrap_or_default();
            assert!(err.contains(hint), "{expr:?}: {err}");
            assert!(!err.contains('\n'), "{expr:?}: {err}");
            assert!(err.contains(expr), "{expr:?}: {err}");
        }
        let s = Periodic::new("  0  */5 * * * * ", job)
            .into_schedule(1024)
            .expect("valid");
        assert_eq!(s.expr, "0 */5 * * * *");
        assert_eq!(s.queue, "q");
        assert_eq!(s.job_type, "t");
    }
}
