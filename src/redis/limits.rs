//! Rate limits: what is declared (`<prefix>:limits`, a hash of scope → limit), and their
//! token buckets (`lua/limit.lua`, one string per limit and queue, or per key).

use std::collections::HashMap;

use fred::prelude::*;

use super::Store;

/// One token bucket as `lua/limit.lua` takes it: its key and the limit's shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) key: String,
    /// Milliseconds between two jobs at the steady rate.
    pub(crate) interval_ms: f64,
    /// How far ahead of the steady rate a burst may run, in ms: interval × (burst − 1).
    pub(crate) tolerance_ms: f64,
}

impl Bucket {
    fn args(&self, into: &mut Vec<Value>) {
        into.push(Value::from(format!("{:.3}", self.interval_ms)));
        into.push(Value::from(format!("{:.3}", self.tolerance_ms)));
    }
}

/// Jobs that need a token of each of the same buckets (indexes into the bucket list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    pub(crate) buckets: Vec<usize>,
    pub(crate) jobs: u32,
}

impl Store {
    /// Every declared limit: field (`queue:<q>`, `type:<t>`, `key:<t>`) → limit as written.
    pub(crate) async fn rate_limits(&self) -> crate::Result<HashMap<String, String>> {
        let key = self.keys.limits();
        let conn = self.node(&key).await?;
        conn.hgetall(key).await.map_err(|e| self.fail(e))
    }

    /// Records limits (field → limit as written), replacing what those fields held.
    pub(crate) async fn set_rate_limits(&self, limits: &[(String, String)]) -> crate::Result<()> {
        if limits.is_empty() {
            return Ok(());
        }
        let key = self.keys.limits();
        let conn = self.node(&key).await?;
        conn.hset::<(), _, _>(key, limits.to_vec())
            .await
            .map_err(|e| self.fail(e))
    }

    /// Removes the limit under `field`; false when there was none.
    pub(crate) async fn remove_rate_limit(&self, field: &str) -> crate::Result<bool> {
        let key = self.keys.limits();
        let conn = self.node(&key).await?;
        let n: u32 = conn.hdel(key, field).await.map_err(|e| self.fail(e))?;
        Ok(n > 0)
    }

    /// Takes a token of each of its buckets for every job of `classes`, in order, in one
    /// call of `lua/limit.lua`. Every bucket must carry the same hash tag. Returns, per
    /// class, the ms from now (Redis' clock) at which each of its jobs may start: 0 for
    /// now; a later time is reserved for that job. The reply is short when most may start
    /// now: per class, that count, then only the others' waits.
    pub(crate) async fn take_tokens(
        &self,
        buckets: &[Bucket],
        classes: &[Class],
    ) -> crate::Result<Vec<Vec<u64>>> {
        let keys: Vec<String> = buckets.iter().map(|b| b.key.clone()).collect();
        let mut args: Vec<Value> = vec!["take".into()];
        for b in buckets {
            b.args(&mut args);
        }
        for c in classes {
            args.push(Value::from(c.buckets.len() as i64));
            args.extend(c.buckets.iter().map(|i| Value::from(*i as i64 + 1)));
            args.push(Value::from(i64::from(c.jobs)));
        }
        let reply: Vec<i64> = self.run(&self.scripts.limit, keys, args).await?;
        let bad = || {
            crate::Error::Decode(format!(
                "limit.lua's reply does not fit the {} classes asked",
                classes.len()
            ))
        };
        let mut it = reply.into_iter();
        let mut out = Vec::with_capacity(classes.len());
        for c in classes {
            let jobs = c.jobs as usize;
            let now = usize::try_from(it.next().ok_or_else(bad)?).map_err(|_| bad())?;
            if now > jobs {
                return Err(bad());
            }
            let mut waits = vec![0u64; now];
            for _ in now..jobs {
                waits.push(it.next().ok_or_else(bad)?.max(0) as u64);
            }
            out.push(waits);
        }
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(out)
    }

    /// Lets no job of `buckets` start for `for_ms` from now (a downstream said "slow
    /// down"); tokens already reserved for later stay reserved.
    pub(crate) async fn pause_buckets(&self, buckets: &[Bucket], for_ms: u64) -> crate::Result<()> {
        if buckets.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = buckets.iter().map(|b| b.key.clone()).collect();
        let mut args: Vec<Value> = vec!["pause".into(), Value::from(for_ms as i64)];
        for b in buckets {
            b.args(&mut args);
        }
        let _: i64 = self.run(&self.scripts.limit, keys, args).await?;
        Ok(())
    }
}
