//! What Redis says about the work it did: INFO snapshots and their differences.
//!
//! Commands are counted from `INFO commandstats`, which in Redis 7 also counts the commands
//! a Lua script calls, so a script that does ten things counts as eleven commands (the
//! EVALSHA and its ten calls): the honest measure of work for both stevedore and BullMQ.
//! Round trips are the server's socket reads (`total_reads_processed`): a pipeline usually
//! arrives in one read, so this counts round trips, not commands.

use std::collections::BTreeMap;

use fred::prelude::*;
use fred::types::InfoKind;

/// The counters of one INFO snapshot that the benchmark reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Calls per command, lower-case name.
    pub(crate) calls: BTreeMap<String, u64>,
    /// Server time per command (microseconds, calls from scripts included).
    pub(crate) usec: BTreeMap<String, u64>,
    /// Socket reads the server processed.
    pub(crate) reads: u64,
    /// Server CPU time, user + system, in seconds.
    pub(crate) cpu: f64,
    /// Memory in use, bytes.
    pub(crate) used_memory: u64,
}

impl Snapshot {
    pub(crate) async fn take(redis: &Client) -> anyhow::Result<Snapshot> {
        let text: String = redis.info(Some(InfoKind::All)).await?;
        Ok(Snapshot::parse(&text))
    }

    /// The snapshots of several servers (a cluster's primaries) added up.
    pub(crate) fn sum(all: &[Snapshot]) -> Snapshot {
        let mut s = Snapshot::default();
        for one in all {
            for (name, calls) in &one.calls {
                *s.calls.entry(name.clone()).or_default() += calls;
            }
            for (name, usec) in &one.usec {
                *s.usec.entry(name.clone()).or_default() += usec;
            }
            s.reads += one.reads;
            s.cpu += one.cpu;
            s.used_memory += one.used_memory;
        }
        s
    }

    pub(crate) fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "total_reads_processed" => s.reads = value.parse().unwrap_or(0),
                "used_cpu_user" | "used_cpu_sys" => s.cpu += value.parse::<f64>().unwrap_or(0.0),
                "used_memory" => s.used_memory = value.parse().unwrap_or(0),
                _ => {
                    if let Some(name) = key.strip_prefix("cmdstat_") {
                        let stat = |field: &str| {
                            value
                                .split(',')
                                .find_map(|kv| kv.strip_prefix(field))
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0)
                        };
                        let name = name.replace('|', " ");
                        s.usec.insert(name.clone(), stat("usec="));
                        s.calls.insert(name, stat("calls="));
                    }
                }
            }
        }
        s
    }
}

/// What happened between two snapshots, per job.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct PerJob {
    /// Commands per job, Lua-internal calls included.
    pub(crate) commands: f64,
    /// Round trips (server socket reads) per job.
    pub(crate) round_trips: f64,
    /// Server CPU per job, microseconds.
    pub(crate) redis_cpu_us: f64,
    /// Commands per job by name (those above 0.005 per job).
    pub(crate) by_command: BTreeMap<String, f64>,
    /// Server time per job by command, microseconds (a script's time includes the
    /// commands it calls, which are also listed on their own).
    #[serde(default)]
    pub(crate) usec_by_command: BTreeMap<String, f64>,
    /// CPU per job of the process doing the work (the producer when enqueueing, the
    /// workers when draining), microseconds.
    #[serde(default)]
    pub(crate) client_cpu_us: f64,
}

/// Commands the benchmark itself sends while it measures, taken off the totals.
#[derive(Debug, Clone, Default)]
pub(crate) struct Own {
    pub(crate) calls: BTreeMap<&'static str, u64>,
    pub(crate) reads: u64,
}

impl Own {
    pub(crate) fn add(&mut self, command: &'static str, calls: u64) {
        *self.calls.entry(command).or_default() += calls;
    }
}

pub(crate) fn per_job(before: &Snapshot, after: &Snapshot, own: &Own, jobs: usize) -> PerJob {
    let jobs = jobs.max(1) as f64;
    let mut by_command = BTreeMap::new();
    let mut usec_by_command = BTreeMap::new();
    let mut total = 0.0;
    for (name, &calls) in &after.calls {
        if name == "info" {
            continue;
        }
        let mine = own.calls.get(name.as_str()).copied().unwrap_or(0);
        let delta = calls
            .saturating_sub(before.calls.get(name).copied().unwrap_or(0))
            .saturating_sub(mine) as f64;
        total += delta;
        if delta / jobs >= 0.005 {
            by_command.insert(name.clone(), delta / jobs);
            let usec = after
                .usec
                .get(name)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.usec.get(name).copied().unwrap_or(0));
            usec_by_command.insert(name.clone(), usec as f64 / jobs);
        }
    }
    // The INFO call that took `after` was read too.
    let reads = after.reads.saturating_sub(before.reads + own.reads + 1) as f64;
    PerJob {
        commands: total / jobs,
        round_trips: reads / jobs,
        redis_cpu_us: (after.cpu - before.cpu).max(0.0) * 1e6 / jobs,
        by_command,
        usec_by_command,
        client_cpu_us: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_counters() {
        let s = Snapshot::parse(
            "# Stats\r\ntotal_reads_processed:42\r\n# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:0.5\r\n\
             # Memory\r\nused_memory:1000\r\n# Commandstats\r\n\
             cmdstat_xadd:calls=7,usec=10,usec_per_call=1.43,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_client|list:calls=1,usec=1\r\n",
        );
        assert_eq!(s.reads, 42);
        assert_eq!(s.cpu, 2.0);
        assert_eq!(s.used_memory, 1000);
        assert_eq!(s.calls.get("xadd"), Some(&7));
        assert_eq!(s.usec.get("xadd"), Some(&10));
        assert_eq!(s.calls.get("client list"), Some(&1));
    }
}
