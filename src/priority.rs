//! Job priorities, and how a worker splits its free slots between them.
//!
//! Each priority is its own stream, and XREADGROUP's COUNT applies per stream, so a worker
//! decides before each read how many entries to take from each. It hands out free slots
//! by smooth weighted round robin: `high` gets most of them, but every priority with a
//! non-zero weight gets its turn, so `low` is never starved.

use std::fmt;
use std::str::FromStr;

/// How urgent a job is. Each priority of a queue is its own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Taken first: most of a worker's free slots go to `high`.
    High,
    /// The default.
    #[default]
    Normal,
    /// Taken last, but never starved.
    Low,
}

impl Priority {
    /// All priorities, most urgent first (the order a worker dispatches a batch in).
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The lower-case name used in stream keys, the CLI and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Position in [`Priority::ALL`].
    pub(crate) const fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(crate::Error::InvalidConfig(format!(
                "unknown priority {}: use high, normal or low",
                crate::error::excerpt(other)
            ))),
        }
    }
}

/// Relative shares of a worker's free slots per priority.
///
/// The default, 6 : 3 : 1, gives `high` six slots for every one `low` gets while all three
/// have work; a priority whose stream is empty gives its share to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityWeights {
    /// Weight of `high`.
    pub high: u32,
    /// Weight of `normal`.
    pub normal: u32,
    /// Weight of `low`.
    pub low: u32,
}

impl Default for PriorityWeights {
    fn default() -> Self {
        PriorityWeights {
            high: 6,
            normal: 3,
            low: 1,
        }
    }
}

impl PriorityWeights {
    fn get(&self, p: Priority) -> i64 {
        i64::from(match p {
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        })
    }

    /// True when every weight is zero (nothing would ever be fetched).
    pub(crate) fn all_zero(&self) -> bool {
        self.high == 0 && self.normal == 0 && self.low == 0
    }
}

/// Smooth weighted round robin over the three priorities. Its state carries over between
/// calls, so a worker with one free slot at a time still serves `low` one time in ten.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotSplitter {
    weights: PriorityWeights,
    current: [i64; 3],
}

impl SlotSplitter {
    pub(crate) fn new(weights: PriorityWeights) -> Self {
        SlotSplitter {
            weights,
            current: [0; 3],
        }
    }

    /// Splits `free` slots between the priorities marked `open` (streams that may still
    /// have entries). Returns how many entries to read from each, indexed like
    /// [`Priority::ALL`]. Gives nothing when no open priority has a weight.
    pub(crate) fn split(&mut self, free: u32, open: [bool; 3]) -> [u32; 3] {
        let mut out = [0u32; 3];
        let total: i64 = Priority::ALL
            .iter()
            .filter(|p| open[p.index()])
            .map(|p| self.weights.get(*p))
            .sum();
        if total == 0 {
            return out;
        }
        for _ in 0..free {
            let mut best: Option<usize> = None;
            for p in Priority::ALL {
                let i = p.index();
                if !open[i] || self.weights.get(p) == 0 {
                    continue;
                }
                self.current[i] += self.weights.get(p);
                if best.is_none_or(|b| self.current[i] > self.current[b]) {
                    best = Some(i);
                }
            }
            if let Some(b) = best {
                self.current[b] -= total;
                out[b] += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_at_a_time_follows_the_weights_and_never_starves_low() {
        let mut s = SlotSplitter::new(PriorityWeights::default());
        let mut got = [0u32; 3];
        for _ in 0..100 {
            let c = s.split(1, [true; 3]);
            assert_eq!(c.iter().sum::<u32>(), 1);
            for i in 0..3 {
                got[i] += c[i];
            }
        }
        assert_eq!(got, [60, 30, 10]);
    }

    #[test]
    fn low_gets_a_turn_within_every_ten_slots() {
        let mut s = SlotSplitter::new(PriorityWeights::default());
        let mut since_low = 0;
        for _ in 0..1000 {
            let c = s.split(1, [true; 3]);
            if c[2] == 1 {
                since_low = 0;
            } else {
                since_low += 1;
                assert!(since_low < 10, "low waited {since_low} slots");
            }
        }
    }

    #[test]
    fn closed_priorities_give_their_share_to_the_open_ones() {
        let mut s = SlotSplitter::new(PriorityWeights::default());
        assert_eq!(s.split(10, [false, true, true]), [0, 8, 2]);
        assert_eq!(s.split(5, [false, false, true]), [0, 0, 5]);
        assert_eq!(s.split(5, [false, false, false]), [0, 0, 0]);
    }

    /// The fetch loop's rounds (`consume::fetch_ready`) one free slot at a time, with
    /// `normal` empty and `high` and `low` always full: a slot the round robin offers to
    /// `normal` comes back empty and goes to the others in the same fetch, so they share by
    /// their own weights, 6:1 (86:14).
    #[test]
    fn an_empty_priority_gives_its_turns_to_the_others_by_weight() {
        let mut s = SlotSplitter::new(PriorityWeights::default());
        let has_jobs = [true, false, true];
        let mut got = [0u32; 3];
        for _ in 0..10_000 {
            let mut open = [true; 3];
            let mut remaining = 1;
            for _ in 0..3 {
                let shares = s.split(remaining, open);
                let mut taken = 0;
                for i in 0..3 {
                    if shares[i] > 0 && !has_jobs[i] {
                        open[i] = false;
                    } else {
                        got[i] += shares[i];
                        taken += shares[i];
                    }
                }
                remaining -= taken;
                if remaining == 0 || shares.iter().sum::<u32>() == 0 {
                    break;
                }
            }
        }
        let total = f64::from(got[0] + got[2]);
        let high = f64::from(got[0]) / total;
        println!("high {:.1}% low {:.1}%", high * 100.0, (1.0 - high) * 100.0);
        assert!((0.83..0.89).contains(&high), "high share {high}");
    }

    #[test]
    fn a_zero_weight_priority_is_never_read() {
        let w = PriorityWeights {
            high: 1,
            normal: 0,
            low: 1,
        };
        let mut s = SlotSplitter::new(w);
        assert_eq!(s.split(10, [true; 3]), [5, 0, 5]);
        assert_eq!(s.split(10, [false, true, false]), [0, 0, 0]);
    }

    #[test]
    fn priorities_parse_from_their_names() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().ok(), Some(p));
        }
        assert!("urgent".parse::<Priority>().is_err());
    }
}
