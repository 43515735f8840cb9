//! Periodic schedules: claiming a tick so that exactly one worker enqueues it.

use fred::prelude::*;

use super::Store;

/// What a claim of a periodic tick came to (`lua/cron_claim.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CronClaim {
    /// This worker claimed the tick: it enqueues the tick's job.
    Claimed,
    /// Someone claimed this tick (or a newer one) already.
    Taken,
    /// The tick is not due yet on Redis' clock.
    NotDue,
    /// A read only (no tick was given).
    Read,
}

/// The reply of a claim: the outcome, Redis' now and the newest claimed tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CronState {
    pub(crate) claim: CronClaim,
    /// Redis' clock, in ms.
    pub(crate) now_ms: i64,
    /// The newest claimed tick (after this call), if any.
    pub(crate) last: Option<i64>,
}

impl Store {
    /// Claims `tick` (ms since the epoch) of schedule `name` of `queue` for `consumer`, or
    /// only reads the schedule's state when `tick` is `None`.
    pub(crate) async fn cron_claim(
        &self,
        queue: &str,
        name: &str,
        tick: Option<i64>,
        consumer: &str,
    ) -> crate::Result<CronState> {
        let (status, now_ms, last): (i64, i64, i64) = self
            .run(
                &self.scripts.cron_claim,
                vec![self.keys.cron(queue)],
                vec![
                    Value::from(name),
                    Value::from(tick.unwrap_or(-1)),
                    Value::from(consumer),
                ],
            )
            .await?;
        let claim = match status {
            1 => CronClaim::Claimed,
            0 => CronClaim::Taken,
            -1 => CronClaim::NotDue,
            2 => CronClaim::Read,
            other => {
                return Err(crate::Error::Decode(format!(
                    "cron claim: unknown status {other}"
                )));
            }
        };
        Ok(CronState {
            claim,
            now_ms,
            last: (last >= 0).then_some(last),
        })
    }
}
