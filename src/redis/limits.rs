//! Rate and concurrency limits: what is declared (`<prefix>:limits`, a hash of scope →
//! limit), their token buckets and running sets (`lua/limit.lua`: a string per rate limit
//! and queue, or per key; a sorted set per concurrency limit and queue, or per key).

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

/// A concurrency limit's running set as `lua/limit.lua` takes it: its key and how many
/// jobs may run under it at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotSet {
    pub(crate) key: String,
    pub(crate) capacity: u32,
}

/// Jobs that need a token of each of the same buckets and a place in each of the same
/// running sets (indexes into the bucket and set lists); `members` names each job in the
/// sets (one per job, when `sets` is not empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    pub(crate) buckets: Vec<usize>,
    pub(crate) sets: Vec<usize>,
    pub(crate) jobs: u32,
    pub(crate) members: Vec<String>,
}

/// What a job of a batch got from its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Its tokens, for this many ms from now (0: now); its places in the running sets
    /// too when the wait was at most the longest one asked for.
    After(u64),
    /// A running set it needs is full: nothing was taken.
    Full,
}

impl Store {
    /// Every declared limit: field (`queue:<q>`, `type:<t>`, `key:<t>`, and
    /// `concurrency:<scope>`) → limit as written.
    pub(crate) async fn limit_fields(&self) -> crate::Result<HashMap<String, String>> {
        let key = self.keys.limits();
        let conn = self.node(&key).await?;
        conn.hgetall(key).await.map_err(|e| self.fail(e))
    }

    /// Records limits (field → limit as written), replacing what those fields held.
    pub(crate) async fn set_limit_fields(&self, limits: &[(String, String)]) -> crate::Result<()> {
        if limits.is_empty() {
            return Ok(());
        }
        let key = self.keys.limits();
        let conn = self.node(&key).await?;
        conn.hset::<(), _, _>(key, limits.to_vec())
            .await
            .map_err(|e| self.fail(e))
    }

    /// Removes the limit under `field` (rate or concurrency); false when there was none.
    pub(crate) async fn remove_limit_field(&self, field: &str) -> crate::Result<bool> {
        let key = self.keys.limits();
        let conn = self.node(&key).await?;
        let n: u32 = conn.hdel(key, field).await.map_err(|e| self.fail(e))?;
        Ok(n > 0)
    }

    /// Takes a token of each of its buckets and a place in each of its running sets for
    /// every job of `classes`, in order, in one call of `lua/limit.lua`. Every key must
    /// carry the same hash tag. A place is taken only for a job that starts within
    /// `sleep_max_ms` (the others wait elsewhere and ask again), and lasts `lease_ms`
    /// unless renewed. Returns, per class, what each of its jobs got. The reply is short
    /// when most may start now: per class, that count, then only the others' values.
    pub(crate) async fn take_tokens(
        &self,
        buckets: &[Bucket],
        sets: &[SlotSet],
        classes: &[Class],
        lease_ms: u64,
        sleep_max_ms: u64,
    ) -> crate::Result<Vec<Vec<Taken>>> {
        let keys: Vec<String> = buckets
            .iter()
            .map(|b| b.key.clone())
            .chain(sets.iter().map(|s| s.key.clone()))
            .collect();
        let mut args: Vec<Value> = vec![
            "take".into(),
            Value::from(buckets.len() as i64),
            Value::from(sets.len() as i64),
            Value::from(lease_ms as i64),
            Value::from(sleep_max_ms as i64),
        ];
        for b in buckets {
            b.args(&mut args);
        }
        args.extend(sets.iter().map(|s| Value::from(i64::from(s.capacity))));
        for c in classes {
            args.push(Value::from(c.buckets.len() as i64));
            args.extend(c.buckets.iter().map(|i| Value::from(*i as i64 + 1)));
            args.push(Value::from(c.sets.len() as i64));
            args.extend(c.sets.iter().map(|i| Value::from(*i as i64 + 1)));
            args.push(Value::from(i64::from(c.jobs)));
            if !c.sets.is_empty() {
                args.extend(c.members.iter().map(|m| Value::from(m.as_str())));
            }
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
            let mut got = vec![Taken::After(0); now];
            for _ in now..jobs {
                got.push(match it.next().ok_or_else(bad)? {
                    -1 => Taken::Full,
                    w => Taken::After(w.max(0) as u64),
                });
            }
            out.push(got);
        }
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(out)
    }

    /// Gives the members of running set `key` a fresh lease of `lease_ms` (those still
    /// there: a member dropped as expired is not brought back).
    pub(crate) async fn renew_slots(
        &self,
        key: &str,
        members: &[String],
        lease_ms: u64,
    ) -> crate::Result<()> {
        self.on_members(key, members, Some(lease_ms)).await
    }

    /// Removes `members` from running set `key`: their jobs ended.
    pub(crate) async fn release_slots(&self, key: &str, members: &[String]) -> crate::Result<()> {
        self.on_members(key, members, None).await
    }

    /// `lua/limit.lua` in mode `renew` (with a lease) or `release` on `members` of `key`.
    async fn on_members(
        &self,
        key: &str,
        members: &[String],
        renew_ms: Option<u64>,
    ) -> crate::Result<()> {
        let mut args: Vec<Value> = match renew_ms {
            Some(ms) => vec!["renew".into(), Value::from(ms as i64)],
            None => vec!["release".into()],
        };
        args.push(Value::from(members.len() as i64));
        args.extend(members.iter().map(|m| Value::from(m.as_str())));
        let _: i64 = self
            .run(&self.scripts.limit, vec![key.to_string()], args)
            .await?;
        Ok(())
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

    /// What rate buckets and running sets hold now: each bucket's next free time (ms;
    /// `None` while idle), and how many places of each set run out after `now_ms`.
    pub(crate) async fn limit_state(
        &self,
        buckets: &[String],
        sets: &[String],
        now_ms: u64,
    ) -> crate::Result<(Vec<Option<f64>>, Vec<u64>)> {
        let tats = futures::future::try_join_all(buckets.iter().map(|key| async move {
            let conn = self.node(key).await?;
            let v: Option<String> = conn.get(key.as_str()).await.map_err(|e| self.fail(e))?;
            Ok::<_, crate::Error>(v.and_then(|v| v.parse::<f64>().ok()))
        }))
        .await?;
        let counts = futures::future::try_join_all(sets.iter().map(|key| async move {
            let conn = self.node(key).await?;
            let n: u64 = conn
                .zcount(key.as_str(), now_ms as f64, f64::INFINITY)
                .await
                .map_err(|e| self.fail(e))?;
            Ok::<_, crate::Error>(n)
        }))
        .await?;
        Ok((tats, counts))
    }
}
