//! Exponential backoff between attempts to reach Redis: the fetch loops' reconnects, the
//! promoter's failed promotions and the retried settle scripts all wait with this.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Delays that double from `first` up to `max`, until [`reset`](Self::reset).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Option<Duration>,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: None,
        }
    }

    /// The delay to wait now; the one after it doubles (up to the maximum).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next.unwrap_or(self.first);
        self.next = Some((d * 2).min(self.max));
        d
    }

    /// Sleeps the next delay.
    pub(crate) async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Sleeps the next delay; false when `stop` fired meanwhile.
    pub(crate) async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Starts over from the first delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_maximum_and_start_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
