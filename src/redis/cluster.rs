//! Routing on a Redis Cluster, by this library rather than by a clustered client.
//!
//! A clustered `fred` client is one task holding the connections to every primary: when
//! one primary dies, that client re-reads the cluster and reconnects to every node it
//! lists, fails while the dead one is still listed, and holds every command, for every
//! node, until the failover is over. So with a cluster URL (`redis-cluster://`,
//! `rediss-cluster://`) the store routes each command itself, over a non-cluster client (a
//! pool) per primary: a dead primary stops only the commands of its own slots.
//!
//! - The slot map (16384 slots to a primary) is read with `CLUSTER SLOTS` from any node that
//!   answers: first the connected primaries, then every address known (the URL's seeds and
//!   every node seen in a map so far). It is read on first use and again when a command
//!   meets `MOVED`, `ASK`, `CLUSTERDOWN`, `TRYAGAIN`, a lost connection or a timeout, or
//!   when the primary of a slot is not connected. Reads are single-flight (one at a
//!   time; whoever waited for one in progress takes its outcome) and at most one per
//!   [`REFRESH_EVERY`].
//! - `ASK` is treated as `MOVED`: the map is read again and the command sent to the primary
//!   it names. A slot being migrated (live resharding) is served once the migration is over
//!   and the map says so; until then the commands of that slot fail and are retried.
//! - A node's pool is created on first use, with the configuration of every other
//!   connection (auth, TLS, timeouts), and quit when a map no longer lists the node as a
//!   primary.
//! - A command for a primary that is not connected fails at once (after one read of the
//!   map, in case the slot has a new primary) instead of waiting for a reconnection: the
//!   caller retries later, when the failover is over and the map names the new primary.
//!   A command already sent when a primary dies waits at most the command timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::conn::Connector;
use super::fail;

/// The number of hash slots of a Redis Cluster.
pub(super) const SLOTS: usize = 16384;

/// At most one read of the slot map per this long.
pub(super) const REFRESH_EVERY: Duration = Duration::from_millis(150);

/// How long one node may take to connect and answer `CLUSTER SLOTS`.
const ASK_DEADLINE: Duration = Duration::from_secs(1);

/// Marks a slot no primary serves in [`SlotMap::slots`].
const NO_NODE: u16 = u16::MAX;

/// The hash slot of `key` (`{hash tag}` rule).
pub(super) fn slot_of(key: &[u8]) -> u16 {
    fred::util::redis_keyslot(key)
}

/// One primary, and its pool once connected.
pub(super) struct Node {
    host: String,
    port: u16,
    pool: tokio::sync::OnceCell<Pool>,
}

impl Node {
    fn new(host: String, port: u16) -> Self {
        Node {
            host,
            port,
            pool: tokio::sync::OnceCell::new(),
        }
    }

    /// `host:port`.
    pub(super) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub(super) fn host(&self) -> &str {
        &self.host
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    fn same(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host == host
    }
}

/// Which primary serves each slot.
struct SlotMap {
    /// Per slot, the index of its primary in `nodes` ([`NO_NODE`]: none).
    slots: Box<[u16]>,
    nodes: Vec<Arc<Node>>,
}

impl SlotMap {
    fn empty() -> Self {
        SlotMap {
            slots: vec![NO_NODE; SLOTS].into_boxed_slice(),
            nodes: Vec::new(),
        }
    }

    fn node(&self, slot: u16) -> Option<&Arc<Node>> {
        let at = *self.slots.get(slot as usize)?;
        self.nodes.get(at as usize)
    }
}

/// A range of slots and the address of its primary, as `CLUSTER SLOTS` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotRange {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) host: String,
    pub(super) port: u16,
}

/// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replicas...], ...]`.
/// An empty or `?` host means the node that answered (`asked`).
pub(super) fn parse_slots(reply: &Value, asked: &str) -> crate::Result<Vec<SlotRange>> {
    let bad = |why: &str| crate::Error::Decode(format!("CLUSTER SLOTS reply: {why}"));
    let Value::Array(ranges) = reply else {
        return Err(bad("not an array"));
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad("a range is not an array"));
        };
        let slot = |v: Option<&Value>| -> crate::Result<u16> {
            v.and_then(Value::as_i64)
                .filter(|n| (0..SLOTS as i64).contains(n))
                .map(|n| n as u16)
                .ok_or_else(|| bad("a slot number is missing or out of range"))
        };
        let (start, end) = (slot(parts.first())?, slot(parts.get(1))?);
        let Some(Value::Array(primary)) = parts.get(2) else {
            return Err(bad("a range has no primary"));
        };
        let host = primary
            .first()
            .and_then(Value::as_string)
            .ok_or_else(|| bad("a primary has no host"))?;
        let port = primary
            .get(1)
            .and_then(Value::as_i64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("a primary has no port"))?;
        let host = match host.as_str() {
            "" | "?" => asked.to_string(),
            _ => host,
        };
        if start > end {
            return Err(bad("a range ends before it starts"));
        }
        out.push(SlotRange {
            start,
            end,
            host,
            port,
        });
    }
    Ok(out)
}

/// A redirection the server answered instead of running a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Redirect {
    /// `ASK` (a slot being migrated) rather than `MOVED`.
    pub(super) ask: bool,
    pub(super) slot: u16,
    /// `host:port` of the node to ask.
    pub(super) to: String,
}

/// Reads `MOVED <slot> <host:port>` or `ASK <slot> <host:port>`.
pub(super) fn parse_redirect(message: &str) -> Option<Redirect> {
    let mut parts = message.split_whitespace();
    let ask = match parts.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot: u16 = parts
        .next()?
        .parse()
        .ok()
        .filter(|s| (*s as usize) < SLOTS)?;
    let to = parts.next()?;
    to.rsplit_once(':')?.1.parse::<u16>().ok()?;
    Some(Redirect {
        ask,
        slot,
        to: to.to_string(),
    })
}

/// Whether an error says the slot map may be stale: a redirection, a cluster that is down
/// or busy, a lost connection or a timeout.
pub(super) fn stale_map(e: &crate::Error) -> bool {
    match e {
        crate::Error::Connection(_) | crate::Error::Timeout(_) => true,
        crate::Error::Redis(m) => redirected(m) || is_cluster_busy(m),
        _ => false,
    }
}

/// `MOVED` or `ASK`: the server did not run the command, it may go again elsewhere.
pub(super) fn redirected(message: &str) -> bool {
    parse_redirect(message).is_some()
}

fn is_cluster_busy(message: &str) -> bool {
    message.starts_with("CLUSTERDOWN") || message.starts_with("TRYAGAIN")
}

/// The slot map and a pool per primary.
pub(super) struct Cluster {
    connector: Connector,
    pool_size: usize,
    map: RwLock<Arc<SlotMap>>,
    /// Bumped by every read of the map (successful or not).
    generation: AtomicU64,
    /// Held while the map is read; the time of the last read.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// A background read is under way.
    refreshing: AtomicBool,
    /// Every address known: the URL's seeds and every node seen in a map.
    known: std::sync::Mutex<Vec<(String, u16)>>,
}

impl Cluster {
    /// Reads the slot map from the URL's seeds; fails when no node answers.
    pub(super) async fn connect(
        connector: Connector,
        seeds: Vec<(String, u16)>,
        pool_size: usize,
    ) -> crate::Result<Arc<Cluster>> {
        let cluster = Arc::new(Cluster {
            connector,
            pool_size,
            map: RwLock::new(Arc::new(SlotMap::empty())),
            generation: AtomicU64::new(0),
            refresh: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
            known: std::sync::Mutex::new(seeds),
        });
        cluster.refresh_after(0).await?;
        Ok(cluster)
    }

    pub(super) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The current generation of the map: pass it to [`refresh_after`](Self::refresh_after)
    /// once a command routed with this map failed.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self) -> Arc<SlotMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The primary serving `slot` in the current map.
    fn lookup(&self, slot: u16) -> Option<Arc<Node>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.node(slot).cloned()
    }

    /// Every primary of the current map.
    pub(super) fn primaries(&self) -> Vec<Arc<Node>> {
        self.current().nodes.clone()
    }

    /// The primary of `slot`, reading the map again once when none serves it.
    pub(super) async fn primary(&self, slot: u16) -> crate::Result<Arc<Node>> {
        if let Some(n) = self.lookup(slot) {
            return Ok(n);
        }
        let seen = self.generation();
        let _ = self.refresh_after(seen).await;
        self.lookup(slot).ok_or_else(|| {
            crate::Error::Connection(format!("no cluster primary serves slot {slot}"))
        })
    }

    /// A connected client of `node`'s pool, creating the pool on first use.
    pub(super) async fn client_of(&self, node: &Node) -> crate::Result<Client> {
        let pool = node
            .pool
            .get_or_try_init(|| {
                self.connector
                    .node_pool(&node.host, node.port, self.pool_size)
            })
            .await?;
        let c = pool.next_connected();
        if c.is_connected() {
            Ok(c.clone())
        } else {
            Err(crate::Error::Connection(format!(
                "cluster node {} is not connected",
                node.addr()
            )))
        }
    }

    /// A connected client of the primary serving `slot`. When that primary is not
    /// connected, the map is read again (the slot may have a new primary): if it still is
    /// not, this fails at once rather than wait for a reconnection.
    pub(super) async fn client(&self, slot: u16) -> crate::Result<(Arc<Node>, Client)> {
        let seen = self.generation();
        let node = self.primary(slot).await?;
        match self.client_of(&node).await {
            Ok(c) => return Ok((node, c)),
            Err(_) => {
                let _ = self.refresh_after(seen).await;
            }
        }
        let node = self.primary(slot).await?;
        let c = self.client_of(&node).await.map_err(|e| {
            crate::Error::Connection(format!(
                "the primary of slot {slot} ({}) is unreachable: {e}",
                node.addr()
            ))
        })?;
        Ok((node, c))
    }

    /// Reads the map again in the background when `e` says it may be stale (at most one
    /// read under way).
    pub(super) fn note(self: &Arc<Self>, e: &crate::Error) {
        if !stale_map(e) || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let seen = self.generation();
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.refresh_after(seen).await;
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// Reads the map again unless it was read since generation `seen` (then that read's
    /// outcome stands), waiting for the one under way and for [`REFRESH_EVERY`] since the
    /// last.
    pub(super) async fn refresh_after(&self, seen: u64) -> crate::Result<()> {
        let mut last = self.refresh.lock().await;
        if self.generation() != seen {
            return Ok(());
        }
        if let Some(t) = *last {
            let wait = REFRESH_EVERY.saturating_sub(t.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let read = self.read_map().await;
        *last = Some(Instant::now());
        let outcome = read.map(|ranges| self.install(ranges));
        self.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Asks the connected primaries, then every known address, for the slot map.
    async fn read_map(&self) -> crate::Result<Vec<SlotRange>> {
        let slots_cmd = || CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
        let mut asked: Vec<(String, u16)> = Vec::new();
        let mut last_error = None;
        for node in self.current().nodes.iter() {
            let Some(pool) = node.pool.get() else {
                continue;
            };
            let c = pool.next_connected();
            if !c.is_connected() {
                continue;
            }
            asked.push((node.host.clone(), node.port));
            let reply = tokio::time::timeout(
                ASK_DEADLINE,
                c.custom::<Value, _>(slots_cmd(), vec!["SLOTS"]),
            )
            .await;
            match reply {
                Ok(Ok(v)) => match parse_slots(&v, &node.host) {
                    Ok(r) if !r.is_empty() => return Ok(r),
                    Ok(_) => {}
                    Err(e) => last_error = Some(e),
                },
                Ok(Err(e)) => last_error = Some(fail(e)),
                Err(_) => {}
            }
        }
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (host, port) in known {
            if asked.iter().any(|(h, p)| *h == host && *p == port) {
                continue;
            }
            let answer = tokio::time::timeout(2 * ASK_DEADLINE, async {
                let c = self.connector.probe_at(&host, port, ASK_DEADLINE).await?;
                let reply = c.custom::<Value, _>(slots_cmd(), vec!["SLOTS"]).await;
                let _ = tokio::time::timeout(ASK_DEADLINE, c.quit()).await;
                parse_slots(&reply.map_err(fail)?, &host)
            })
            .await;
            match answer {
                Ok(Ok(r)) if !r.is_empty() => return Ok(r),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {}
            }
        }
        Err(crate::Error::Connection(format!(
            "no cluster node answered CLUSTER SLOTS{}",
            last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )))
    }

    /// Makes `ranges` the map, keeping the pools of the primaries still listed and quitting
    /// the others.
    fn install(&self, ranges: Vec<SlotRange>) {
        let old = self.current();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut slots = vec![NO_NODE; SLOTS].into_boxed_slice();
        for r in &ranges {
            let at = match nodes.iter().position(|n| n.same(&r.host, r.port)) {
                Some(at) => at,
                None => {
                    let node = old
                        .nodes
                        .iter()
                        .find(|n| n.same(&r.host, r.port))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Node::new(r.host.clone(), r.port)));
                    nodes.push(node);
                    nodes.len() - 1
                }
            };
            for s in r.start..=r.end {
                slots[s as usize] = at as u16;
            }
        }
        {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for n in &nodes {
                if !known.iter().any(|(h, p)| n.same(h, *p)) {
                    known.push((n.host.clone(), n.port));
                }
            }
        }
        let dropped: Vec<Arc<Node>> = old
            .nodes
            .iter()
            .filter(|o| !nodes.iter().any(|n| Arc::ptr_eq(n, o)))
            .cloned()
            .collect();
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(SlotMap { slots, nodes });
        for node in dropped {
            if let Some(pool) = node.pool.get().cloned() {
                tracing::debug!(node = %node.addr(), "cluster node no longer a primary; closing its connections");
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), pool.quit()).await;
                });
            }
        }
    }
}

/// Commands for several nodes, queued as one pipeline per node and sent concurrently; the
/// replies come back in the order the commands were queued.
pub(super) struct Batch {
    pipes: Vec<(Option<Arc<Node>>, fred::clients::Pipeline<Client>)>,
    /// Per command queued, the index of its pipeline.
    order: Vec<usize>,
}

impl Batch {
    /// One pipeline on `client`, for every command (a single server).
    pub(super) fn single(client: &Client) -> Self {
        Batch {
            pipes: vec![(None, client.pipeline())],
            order: Vec::new(),
        }
    }

    /// No pipeline yet: one per node as commands are queued.
    pub(super) fn routed() -> Self {
        Batch {
            pipes: Vec::new(),
            order: Vec::new(),
        }
    }

    /// The pipeline of `node` (`None`: the single one) for the next command: queue exactly
    /// one command on it.
    pub(super) fn pipe(
        &mut self,
        node: Option<(Arc<Node>, Client)>,
    ) -> &fred::clients::Pipeline<Client> {
        let at = match node {
            None => 0,
            Some((node, client)) => match self
                .pipes
                .iter()
                .position(|(n, _)| n.as_ref().is_some_and(|n| Arc::ptr_eq(n, &node)))
            {
                Some(at) => at,
                None => {
                    self.pipes.push((Some(node), client.pipeline()));
                    self.pipes.len() - 1
                }
            },
        };
        self.order.push(at);
        &self.pipes[at].1
    }

    /// Sends every pipeline at once; one result per command, in the order queued.
    pub(super) async fn try_all(self) -> Vec<Result<Value, fred::error::Error>> {
        let replies =
            futures::future::join_all(self.pipes.iter().map(|(_, p)| p.try_all::<Value>())).await;
        let mut replies: Vec<std::vec::IntoIter<Result<Value, fred::error::Error>>> =
            replies.into_iter().map(Vec::into_iter).collect();
        self.order
            .iter()
            .map(|&at| {
                replies[at].next().unwrap_or_else(|| {
                    Err(fred::error::Error::new(
                        fred::error::ErrorKind::Unknown,
                        "a pipelined command lost its reply",
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::from(s)
    }

    #[test]
    fn slots_reply_reads_ranges_and_the_asked_host_stands_for_an_empty_one() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::from(0i64),
                Value::from(5460i64),
                Value::Array(vec![bulk("10.0.0.1"), Value::from(7001i64), bulk("id1")]),
                Value::Array(vec![bulk("10.0.0.4"), Value::from(7004i64), bulk("id4")]),
            ]),
            Value::Array(vec![
                Value::from(5461i64),
                Value::from(16383i64),
                Value::Array(vec![bulk(""), Value::from(7002i64)]),
            ]),
        ]);
        let r = parse_slots(&reply, "seed").expect("parsed");
        assert_eq!(
            r,
            vec![
                SlotRange {
                    start: 0,
                    end: 5460,
                    host: "10.0.0.1".into(),
                    port: 7001
                },
                SlotRange {
                    start: 5461,
                    end: 16383,
                    host: "seed".into(),
                    port: 7002
                },
            ]
        );
    }

    #[test]
    fn malformed_slots_replies_are_decode_errors() {
        for reply in [
            Value::from("nope"),
            Value::Array(vec![Value::from(1i64)]),
            Value::Array(vec![Value::Array(vec![Value::from(0i64)])]),
            Value::Array(vec![Value::Array(vec![
                Value::from(0i64),
                Value::from(99999i64),
                Value::Array(vec![bulk("h"), Value::from(1i64)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::from(10i64),
                Value::from(5i64),
                Value::Array(vec![bulk("h"), Value::from(1i64)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::from(0i64),
                Value::from(5i64),
                Value::Array(vec![bulk("h")]),
            ])]),
        ] {
            assert!(
                matches!(parse_slots(&reply, "x"), Err(crate::Error::Decode(_))),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn redirections_read_and_other_errors_do_not() {
        assert_eq!(
            parse_redirect("MOVED 3999 127.0.0.1:6381"),
            Some(Redirect {
                ask: false,
                slot: 3999,
                to: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            parse_redirect("ASK 12 [::1]:7000"),
            Some(Redirect {
                ask: true,
                slot: 12,
                to: "[::1]:7000".into()
            })
        );
        for m in [
            "MOVED",
            "MOVED x 1.2.3.4:5",
            "MOVED 20000 h:1",
            "MOVED 1 h",
            "ERR MOVED 1 h:2",
            "NOSCRIPT",
        ] {
            assert_eq!(parse_redirect(m), None, "{m}");
        }
        assert!(stale_map(&crate::Error::Redis("MOVED 1 h:2".into())));
        assert!(stale_map(&crate::Error::Redis(
            "CLUSTERDOWN The cluster is down".into()
        )));
        assert!(stale_map(&crate::Error::Redis("TRYAGAIN".into())));
        assert!(stale_map(&crate::Error::Connection("x".into())));
        assert!(!stale_map(&crate::Error::Redis("NOGROUP".into())));
    }

    #[test]
    fn slots_follow_hash_tags() {
        assert_eq!(slot_of(b"p:{alpha}:high"), slot_of(b"{alpha}"));
        assert_eq!(slot_of(b"{alpha}"), 865);
        assert_eq!(slot_of(b"{delta}"), 9053);
    }
}
