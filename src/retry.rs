//! Retry policies: how long a failed job waits before its next attempt.
//!
//! A policy turns the number of the attempt that just failed into a delay. Exponential
//! backoff with jitter is the default, so a flapping dependency is not hammered and many
//! jobs failing together do not come back in lockstep. The delay is measured on Redis'
//! clock: the retry script adds it to Redis `TIME`.

use std::time::Duration;

/// How delays grow from one attempt to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// `base × 2^(n−1)`: 1 s, 2 s, 4 s, ... with a 1 s base.
    Exponential,
    /// `base × n`: 1 s, 2 s, 3 s, ... with a 1 s base.
    Linear,
    /// `base` every time.
    Fixed,
}

/// When to run a failed job again. Decides only the delay; `max_attempts` decides whether.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    backoff: Backoff,
    base: Duration,
    cap: Duration,
    jitter: bool,
}

impl Default for RetryPolicy {
    /// Exponential from 1 s, capped at 10 minutes, with jitter.
    fn default() -> Self {
        RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(600))
    }
}

impl RetryPolicy {
    /// `base × 2^(n−1)` after the n-th failed attempt, at most `cap`, with jitter.
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        RetryPolicy {
            backoff: Backoff::Exponential,
            base,
            cap,
            jitter: true,
        }
    }

    /// `step × n` after the n-th failed attempt, at most `cap`, with jitter.
    pub const fn linear(step: Duration, cap: Duration) -> Self {
        RetryPolicy {
            backoff: Backoff::Linear,
            base: step,
            cap,
            jitter: true,
        }
    }

    /// Always `delay`, without jitter.
    pub const fn fixed(delay: Duration) -> Self {
        RetryPolicy {
            backoff: Backoff::Fixed,
            base: delay,
            cap: delay,
            jitter: false,
        }
    }

    /// Turns jitter on or off. With jitter, a delay `d` becomes a uniform pick from
    /// `[d/2, d]` ("equal jitter"): retries spread out but still grow.
    pub const fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The growth rule.
    pub const fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The delay before the next attempt after attempt `failed` (from 1) failed, before
    /// jitter.
    pub fn nominal_delay(&self, failed: u32) -> Duration {
        let n = failed.max(1);
        let d = match self.backoff {
            Backoff::Fixed => self.base,
            Backoff::Linear => self.base.saturating_mul(n),
            Backoff::Exponential => {
                let factor = 2u32.checked_pow(n - 1).unwrap_or(u32::MAX);
                self.base.saturating_mul(factor)
            }
        };
        d.min(self.cap.max(self.base))
    }

    /// The delay to wait, with jitter drawn from `unit` (a number in `[0, 1)`).
    pub fn delay_with(&self, failed: u32, unit: f64) -> Duration {
        let d = self.nominal_delay(failed);
        if !self.jitter {
            return d;
        }
        let unit = unit.clamp(0.0, 1.0);
        d.mul_f64(0.5 + 0.5 * unit)
    }

    /// The delay to wait after attempt `failed`, jittered randomly.
    pub fn delay(&self, failed: u32) -> Duration {
        self.delay_with(failed, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let p = RetryPolicy::exponential(S, Duration::from_secs(10)).with_jitter(false);
        let got: Vec<u64> = (1..=6).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(10), "no overflow");
    }

    #[test]
    fn linear_and_fixed() {
        let l = RetryPolicy::linear(S, Duration::from_secs(3)).with_jitter(false);
        assert_eq!(
            (1..=5).map(|n| l.delay(n).as_secs()).collect::<Vec<_>>(),
            vec![1, 2, 3, 3, 3]
        );
        let f = RetryPolicy::fixed(Duration::from_millis(250));
        assert!((1..=5).all(|n| f.delay(n) == Duration::from_millis(250)));
    }

    /// Property: for any attempt and any random draw, a jittered delay lies in
    /// `[nominal/2, nominal]`, the nominal delay never decreases, and never passes the cap.
    #[test]
    fn jittered_delays_stay_within_half_and_full_of_a_monotone_capped_nominal() {
        let policies = [
            RetryPolicy::default(),
            RetryPolicy::exponential(Duration::from_millis(10), Duration::from_secs(5)),
            RetryPolicy::linear(Duration::from_millis(7), Duration::from_millis(100)),
            RetryPolicy::fixed(Duration::from_millis(3)),
        ];
        for p in policies {
            let mut last = Duration::ZERO;
            for n in 1..=64u32 {
                let nominal = p.nominal_delay(n);
                assert!(nominal >= last, "{p:?} attempt {n}");
                assert!(nominal <= p.cap.max(p.base));
                last = nominal;
                for _ in 0..200 {
                    let d = p.delay(n);
                    assert!(
                        d <= nominal && d >= nominal / 2,
                        "{p:?} attempt {n}: {d:?} vs {nominal:?}"
                    );
                }
                assert_eq!(p.delay_with(n, 1.0), nominal);
                assert_eq!(
                    p.delay_with(n, 0.0),
                    if p.jitter { nominal / 2 } else { nominal }
                );
            }
        }
    }
}
