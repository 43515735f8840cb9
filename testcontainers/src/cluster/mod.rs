//! A Redis Cluster of local `redis-server` processes, formed by the kit over RESP (no
//! `redis-cli` needed).

mod view;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::future::{join_all, try_join_all};
use tokio::time::Instant;

use crate::KitError;
use crate::process::{RedisServer, default_program};
use view::{
    SlotRange, add_slots, call, cluster_slots, describe, expect_ok, info_field, node_state, poll,
    unexpected,
};

/// How many hash slots a Redis Cluster has.
const SLOTS: u32 = 16384;
/// The loopback address every node listens on.
const HOST: &str = "127.0.0.1";
/// Primaries of a cluster made with the defaults.
const DEFAULT_PRIMARIES: usize = 3;
/// `cluster-node-timeout` of a cluster made with the defaults.
const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long forming a cluster (after its processes answer PING) may take.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
/// How often the kit looks again while it waits for the cluster.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many times a node is started with a new cluster bus port when that port was taken.
const BUS_PORT_ATTEMPTS: usize = 3;

/// A Redis Cluster of local `redis-server` processes that a test owns: primaries, each with
/// its replicas, on free loopback ports, each process in its own temp dir.
///
/// The kit starts every node with `--cluster-enabled yes --cluster-config-file nodes.conf
/// --cluster-node-timeout <ms> --cluster-replica-validity-factor 0
/// --repl-diskless-sync-delay 0 --repl-ping-replica-period 1 --cluster-port <free port>`
/// (plus what
/// [`RedisClusterBuilder::arg`] adds), assigns the 16384 slots evenly to
/// the primaries, introduces the nodes to each other, attaches the replicas, and waits until
/// every node reports `cluster_state:ok`, every replica's link to its primary is up, and
/// every node sees the same slots map. A validity factor of 0 lets a replica take over
/// however long it was cut off; `cluster-require-full-coverage` keeps Redis's default
/// (`yes`): while a primary is down and not yet replaced, the whole cluster refuses
/// commands. A sync delay of 0 lets a replica (a new one, or one that rejoins) get its data
/// at once rather than after Redis's default 5 s; a replication PING every second (default:
/// 10 s) gets a new replica into `CLUSTER SLOTS`, which lists only replicas whose
/// replication offset is not 0, within a second even when nothing is written.
///
/// Nodes can be SIGKILLed ([`kill`](Self::kill)) and restarted on the same port and dir
/// ([`restart`](Self::restart)), where a node finds its `nodes.conf` and rejoins (a failed
/// over primary as a replica of the node that replaced it).
/// [`wait_for_failover`](Self::wait_for_failover) waits for a replica to take over the slots
/// of a killed primary. Every process is killed when the `RedisCluster` is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), stevedore_testcontainers::KitError> {
/// use std::time::Duration;
///
/// use stevedore_testcontainers::RedisCluster;
///
/// let mut cluster = RedisCluster::builder().primaries(3).replicas(1).start().await?;
/// // Connect a cluster client to cluster.url(): redis-cluster://127.0.0.1:P1?node=...
/// let slot = cluster.slot_of("{user42}:jobs");
/// let primary = cluster.primary_of_slot(slot).await?;
/// cluster.kill(primary)?; // SIGKILL, like a crash
/// let promoted = cluster.wait_for_failover(primary, Duration::from_secs(30)).await?;
/// assert_eq!(cluster.primary_of_slot(slot).await?, promoted);
/// cluster.restart(primary).await?; // it comes back as a replica of `promoted`
/// cluster.wait_ok(Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    /// In start order: the primaries as formed, then the replicas.
    nodes: Vec<Node>,
    node_timeout: Duration,
    /// The slot ranges each primary served when the kit last saw the cluster healthy (a
    /// node's entry stays when it stops serving slots), so that a failover can be awaited
    /// after it has happened.
    served: Mutex<HashMap<u16, Vec<(u16, u16)>>>,
}

/// One node of a [`RedisCluster`].
#[derive(Debug)]
struct Node {
    server: RedisServer,
    /// The cluster bus port (`--cluster-port`).
    bus_port: u16,
    /// `CLUSTER MYID`; kept across restarts in `nodes.conf`.
    id: String,
    /// Killed through [`RedisCluster::kill`] and not restarted since.
    down: bool,
}

/// Configures a [`RedisCluster`] before starting it. Made by [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start() is awaited"]
pub struct RedisClusterBuilder {
    primaries: usize,
    replicas: usize,
    node_timeout: Duration,
    program: Option<PathBuf>,
    args: Vec<String>,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        Self {
            primaries: DEFAULT_PRIMARIES,
            replicas: 0,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            program: None,
            args: Vec::new(),
        }
    }
}

impl RedisClusterBuilder {
    /// How many primaries share the 16384 slots (default 3; at least 1).
    pub fn primaries(mut self, n: usize) -> Self {
        self.primaries = n;
        self
    }

    /// How many replicas each primary gets (default 0). A primary without a replica cannot
    /// fail over.
    pub fn replicas(mut self, per_primary: usize) -> Self {
        self.replicas = per_primary;
        self
    }

    /// `cluster-node-timeout` (default 1 s, rounded to whole milliseconds, at least 1 ms):
    /// how long a node may not answer before it is considered failing. A failover takes
    /// roughly twice this plus up to a second of election delay.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Runs this binary instead of `redis-server` (or `$STEVEDORE_REDIS_SERVER`), e.g. a
    /// `valkey-server`. It must be Redis 7 or later (for `--cluster-port` and
    /// `CLUSTER ADDSLOTSRANGE`), or Valkey.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Adds one extra argument for every node, e.g.
    /// `.arg("--cluster-require-full-coverage").arg("no")`.
    ///
    /// Extra arguments come after the kit's, so they override them (but don't override
    /// `--port`, `--bind`, `--dir`, `--cluster-enabled`, `--cluster-config-file` or
    /// `--cluster-port`: the kit relies on them).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Starts `primaries × (1 + replicas)` nodes, forms the cluster and waits until it is
    /// healthy (at most 30 s after the processes answer PING).
    ///
    /// Fails with [`KitError::InvalidCluster`] for no primary, with
    /// [`KitError::ClusterTimeout`] naming what was still missing if the cluster did not
    /// form in time, and as [`RedisServer::start`] does if a process does not start.
    pub async fn start(self) -> Result<RedisCluster, KitError> {
        if self.primaries == 0 {
            return Err(KitError::InvalidCluster(
                "a cluster needs at least one primary (3 is usual)".to_owned(),
            ));
        }
        if self.primaries > SLOTS as usize {
            return Err(KitError::InvalidCluster(format!(
                "{} primaries for {SLOTS} slots: each primary needs at least one slot",
                self.primaries
            )));
        }
        let total = self
            .primaries
            .checked_mul(self.replicas.saturating_add(1))
            .ok_or_else(|| KitError::InvalidCluster("too many nodes".to_owned()))?;
        let program = self.program.clone().unwrap_or_else(default_program);
        let timeout_ms = self.node_timeout.as_millis().max(1);
        let mut common = vec![
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            "nodes.conf".to_owned(),
            "--cluster-node-timeout".to_owned(),
            timeout_ms.to_string(),
            "--cluster-replica-validity-factor".to_owned(),
            "0".to_owned(),
            // A primary starts a full sync at once instead of waiting 5 s for more replicas.
            "--repl-diskless-sync-delay".to_owned(),
            "0".to_owned(),
            // Redis lists a replica in CLUSTER SLOTS only once its replication offset is not
            // 0: with no writes, that is after the primary's first replication PING.
            "--repl-ping-replica-period".to_owned(),
            "1".to_owned(),
        ];
        common.extend(self.args.iter().cloned());

        let bus_ports = distinct_free_ports(total)?;
        let started = try_join_all(
            bus_ports
                .into_iter()
                .map(|bus| start_node(&program, &common, bus)),
        )
        .await?;
        let ids = try_join_all(started.iter().map(|(server, _)| async move {
            let port = server.port();
            call(port, &["CLUSTER", "MYID"])
                .await?
                .text()
                .ok_or_else(|| unexpected(port, "CLUSTER MYID", "a node id"))
        }))
        .await?;
        let nodes = started
            .into_iter()
            .zip(ids)
            .map(|((server, bus_port), id)| Node {
                server,
                bus_port,
                id,
                down: false,
            })
            .collect();
        let cluster = RedisCluster {
            nodes,
            node_timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(u64::MAX)),
            served: Mutex::new(HashMap::new()),
        };
        // On any error below, dropping `cluster` kills the processes.
        cluster.form(self.primaries, self.replicas).await?;
        Ok(cluster)
    }
}

/// Starts one node with `--cluster-port bus`, with another bus port if that one was taken.
async fn start_node(
    program: &Path,
    common: &[String],
    mut bus: u16,
) -> Result<(RedisServer, u16), KitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Always a bus port of the kit's: the default (port + 10000) is past 65535 for the
        // upper part of the ephemeral port range, and Redis then refuses to start.
        let mut builder = RedisServer::builder()
            .program(program)
            .arg("--cluster-port")
            .arg(bus.to_string());
        for a in common {
            builder = builder.arg(a.clone());
        }
        match builder.start().await {
            Ok(server) => return Ok((server, bus)),
            Err(KitError::RedisServerExited { log_tail, .. })
                if attempt < BUS_PORT_ATTEMPTS && log_tail.contains("Address already in use") =>
            {
                bus = crate::process::free_port()?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `n` distinct free loopback ports (all bound at once, then let go).
fn distinct_free_ports(n: usize) -> Result<Vec<u16>, KitError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((HOST, 0)))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ports)
}

impl RedisCluster {
    /// A builder, to choose the number of primaries and replicas, the node timeout, the
    /// binary or extra arguments before starting.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// Starts a cluster of three primaries without replicas, node timeout 1 s; the same as
    /// `RedisCluster::builder().start()`.
    pub async fn start() -> Result<RedisCluster, KitError> {
        Self::builder().start().await
    }

    /// A URL that names every node, the form fred's `Config::from_url` reads as a cluster:
    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3...`.
    pub fn url(&self) -> String {
        let mut url = String::from("redis-cluster://");
        for (i, node) in self.nodes.iter().enumerate() {
            let sep = match i {
                0 => "",
                1 => "?node=",
                _ => "&node=",
            };
            let _ = write!(url, "{sep}{HOST}:{}", node.server.port());
        }
        url
    }

    /// The ports of every node, in start order: the primaries as formed, then the replicas
    /// (the first replica of each primary, then the second, ...). Roles change on failover:
    /// ask [`primaries`](Self::primaries) and [`replicas`](Self::replicas) for the current
    /// ones.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.server.port()).collect()
    }

    /// The node listening on `port`, for its [`dir`](RedisServer::dir) (with `redis.log` and
    /// `nodes.conf`) or its [`url`](RedisServer::url).
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes
            .iter()
            .find(|n| n.server.port() == port)
            .map(|n| &n.server)
    }

    /// The `cluster-node-timeout` the nodes run with.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// The ports of the primaries that serve slots, sorted, as the first live node that
    /// answers sees them. A killed primary stays in this list until a replica has taken over
    /// (see [`wait_for_failover`](Self::wait_for_failover)).
    pub async fn primaries(&self) -> Result<Vec<u16>, KitError> {
        let view = self.any_view().await?;
        let ports: BTreeSet<u16> = view.iter().map(|r| r.primary).collect();
        Ok(ports.into_iter().collect())
    }

    /// The ports of the replicas attached to a primary that serves slots, sorted, as the
    /// first live node that answers sees them (a replica marked as failed is not listed).
    pub async fn replicas(&self) -> Result<Vec<u16>, KitError> {
        let view = self.any_view().await?;
        let ports: BTreeSet<u16> = view
            .iter()
            .flat_map(|r| r.replicas.iter().copied())
            .collect();
        Ok(ports.into_iter().collect())
    }

    /// The hash slot of `key`, computed here as Redis does (`CRC16(key) mod 16384`, of the
    /// part between the first `{` and the next `}` if that part is not empty).
    pub fn slot_of(&self, key: impl AsRef<[u8]>) -> u16 {
        key_slot(key.as_ref())
    }

    /// The port of the primary that serves `slot`, as the first live node that answers sees
    /// it (asked each time: it changes on failover).
    pub async fn primary_of_slot(&self, slot: u16) -> Result<u16, KitError> {
        if u32::from(slot) >= SLOTS {
            return Err(KitError::InvalidCluster(format!(
                "slot {slot} is out of range (0-16383)"
            )));
        }
        let (port, view) = self.any_view_with_port().await?;
        view.iter()
            .find(|r| (r.start..=r.end).contains(&slot))
            .map(|r| r.primary)
            .ok_or_else(|| KitError::ClusterCommand {
                port,
                command: "CLUSTER SLOTS".to_owned(),
                error: format!("no node serves slot {slot}"),
            })
    }

    /// SIGKILLs the node on `port` (like a crash) and waits for the process to exit. Does
    /// nothing to a node that is already down.
    pub fn kill(&mut self, port: u16) -> Result<(), KitError> {
        let node = self.node_mut(port)?;
        node.server.kill()?;
        node.down = true;
        Ok(())
    }

    /// Kills the node on `port` if it runs, then starts it again on the same port and in the
    /// same dir, and waits until it answers PING. It reads its `nodes.conf` and rejoins the
    /// cluster with its old id (a primary that was failed over comes back as a replica of the
    /// node that replaced it); its data is gone (no AOF, no RDB) and comes back from its
    /// primary by a full sync. To wait until it has rejoined, call
    /// [`wait_ok`](Self::wait_ok).
    pub async fn restart(&mut self, port: u16) -> Result<(), KitError> {
        let node = self.node_mut(port)?;
        node.server.restart().await?;
        node.down = false;
        Ok(())
    }

    /// Waits until the cluster is healthy: every node not killed through
    /// [`kill`](Self::kill) answers and reports `cluster_state:ok`, all of them see the same
    /// slots map, every slot is served by a live primary, every live node and no killed one is
    /// in that map (as a primary or an attached replica), and every live replica has
    /// `master_link_status:up`. After it, [`primaries`](Self::primaries) and
    /// [`replicas`](Self::replicas) list exactly the live nodes.
    ///
    /// A node that is not killed through [`kill`](Self::kill) but does not answer (it exited
    /// by itself) keeps the cluster from being healthy.
    ///
    /// Fails with [`KitError::ClusterTimeout`], naming what was still missing, after
    /// `deadline`.
    pub async fn wait_ok(&self, deadline: Duration) -> Result<(), KitError> {
        let view = poll(
            deadline,
            "healthy (cluster_state:ok and the same slots map on every live node, every slot \
             served by a live primary, every replica linked)",
            || self.healthy_view(),
        )
        .await?;
        self.remember(&view);
        Ok(())
    }

    /// Waits until the slots `old_primary` served are served by another live primary and the
    /// cluster is healthy again (as in [`wait_ok`](Self::wait_ok)); returns that primary's
    /// port, a former replica of `old_primary`.
    ///
    /// Call it after [`kill`](Self::kill)ing a primary that has a replica; it also works
    /// after the failover has happened, for a primary the kit saw serving slots. A failover
    /// needs a majority of the primaries alive to elect the replica: with one primary, or
    /// two, there is none. With the default node timeout of 1 s it takes 2-3 s.
    ///
    /// Fails with [`KitError::InvalidCluster`] if `old_primary` never served slots, and with
    /// [`KitError::ClusterTimeout`] after `deadline`.
    pub async fn wait_for_failover(
        &self,
        old_primary: u16,
        deadline: Duration,
    ) -> Result<u16, KitError> {
        self.node_ref(old_primary)?;
        let mut old_slots: BTreeSet<(u16, u16)> = self
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&old_primary)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let states = join_all(self.live_ports().into_iter().map(node_state)).await;
        for state in states.into_iter().flatten() {
            old_slots.extend(
                state
                    .view
                    .iter()
                    .filter(|r| r.primary == old_primary)
                    .map(|r| (r.start, r.end)),
            );
        }
        if old_slots.is_empty() {
            return Err(KitError::InvalidCluster(format!(
                "{HOST}:{old_primary} serves no slots, and the kit never saw it serve any: \
                 only a primary fails over"
            )));
        }
        let old_slots = &old_slots;
        let (port, view) = poll(
            deadline,
            &format!(
                "failed over from {HOST}:{old_primary} (its slots served by another live \
                 primary, the cluster healthy again)"
            ),
            move || async move {
                let view = self.healthy_view().await?;
                let mut owners = BTreeSet::new();
                for &(start, end) in old_slots {
                    owners.extend(
                        view.iter()
                            .filter(|r| r.start <= end && start <= r.end)
                            .map(|r| r.primary),
                    );
                }
                match owners.iter().copied().collect::<Vec<_>>().as_slice() {
                    [port] if *port != old_primary => Ok((*port, view)),
                    [port] => Err(format!("{HOST}:{port} still serves its slots")),
                    many => Err(format!("its slots are served by {many:?}")),
                }
            },
        )
        .await?;
        self.remember(&view);
        Ok(port)
    }

    /// Whether every live replica is linked to its primary and has received everything its
    /// primary has written (its `slave_repl_offset` is at its primary's
    /// `master_repl_offset`), right now. Poll it to wait until a write is on the replicas, or
    /// send `WAIT` to the primary.
    pub async fn replicas_caught_up(&self) -> Result<bool, KitError> {
        let live = self.live_ports();
        let infos = try_join_all(live.iter().map(|&port| async move {
            let text = call(port, &["INFO", "replication"])
                .await?
                .text()
                .ok_or_else(|| unexpected(port, "INFO replication", "a bulk string"))?;
            Ok::<_, KitError>((port, text))
        }))
        .await?;
        let offsets: HashMap<u16, u64> = infos
            .iter()
            .filter(|(_, text)| info_field(text, "role") == Some("master"))
            .filter_map(|(port, text)| {
                Some((*port, info_field(text, "master_repl_offset")?.parse().ok()?))
            })
            .collect();
        for (_, text) in infos
            .iter()
            .filter(|(_, text)| info_field(text, "role") == Some("slave"))
        {
            if info_field(text, "master_link_status") != Some("up") {
                return Ok(false);
            }
            let primary = info_field(text, "master_port").and_then(|p| p.parse::<u16>().ok());
            let offset = info_field(text, "slave_repl_offset").and_then(|o| o.parse::<u64>().ok());
            match (primary.and_then(|p| offsets.get(&p)), offset) {
                (Some(&wanted), Some(got)) if got >= wanted => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Forms the cluster out of the fresh nodes: the first `primaries` nodes get the slots,
    /// the others become their replicas, in turn.
    async fn form(&self, primaries: usize, replicas: usize) -> Result<(), KitError> {
        let started = Instant::now();
        let remaining = || FORM_DEADLINE.saturating_sub(started.elapsed());
        // Distinct config epochs up front, as redis-cli does, so that the nodes need not
        // resolve collisions.
        try_join_all(self.nodes.iter().enumerate().map(|(i, node)| async move {
            let epoch = (i + 1).to_string();
            expect_ok(node.server.port(), &["CLUSTER", "SET-CONFIG-EPOCH", &epoch]).await
        }))
        .await?;
        try_join_all(self.nodes[..primaries].iter().enumerate().map(|(i, node)| {
            let (start, end) = share(i, primaries);
            add_slots(node.server.port(), start, end)
        }))
        .await?;
        let Some((first, others)) = self.nodes.split_first() else {
            return Ok(());
        };
        for node in others {
            let port = node.server.port().to_string();
            let bus = node.bus_port.to_string();
            expect_ok(first.server.port(), &["CLUSTER", "MEET", HOST, &port, &bus]).await?;
        }
        let total = self.nodes.len();
        poll(
            remaining(),
            &format!("joined (every node knowing all {total} nodes)"),
            || self.all_know_all(),
        )
        .await?;
        let mut expected: Vec<SlotRange> = Vec::with_capacity(primaries);
        for (i, primary) in self.nodes[..primaries].iter().enumerate() {
            let (start, end) = share(i, primaries);
            let mut range = SlotRange {
                start,
                end,
                primary: primary.server.port(),
                replicas: BTreeSet::new(),
            };
            for k in 0..replicas {
                let Some(replica) = self.nodes.get(primaries + k * primaries + i) else {
                    continue;
                };
                expect_ok(
                    replica.server.port(),
                    &["CLUSTER", "REPLICATE", &primary.id],
                )
                .await?;
                range.replicas.insert(replica.server.port());
            }
            expected.push(range);
        }
        let expected = &expected;
        let view = poll(
            remaining(),
            "formed (cluster_state:ok and the same slots map on every node, every replica \
             linked to its primary and listed by every node)",
            move || async move {
                let view = self.healthy_view().await?;
                if view == *expected {
                    Ok(view)
                } else {
                    Err(format!(
                        "the nodes agree on {} but the kit formed {}",
                        describe(&view),
                        describe(expected)
                    ))
                }
            },
        )
        .await?;
        self.remember(&view);
        Ok(())
    }

    /// `Ok` once every node's `CLUSTER NODES` lists every node, none in handshake.
    async fn all_know_all(&self) -> Result<(), String> {
        let total = self.nodes.len();
        let answers = join_all(self.nodes.iter().map(|n| async move {
            let port = n.server.port();
            (port, call(port, &["CLUSTER", "NODES"]).await)
        }))
        .await;
        for (port, answer) in answers {
            let text = answer
                .map_err(|e| e.to_string())?
                .text()
                .ok_or_else(|| format!("{HOST}:{port} answered CLUSTER NODES with no text"))?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let pending = lines
                .iter()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_none_or(|flags| flags.contains("handshake") || flags.contains("noaddr"))
                })
                .count();
            if lines.len() != total || pending > 0 {
                return Err(format!(
                    "{HOST}:{port} knows {} of {total} nodes ({pending} in handshake)",
                    lines.len()
                ));
            }
        }
        Ok(())
    }

    /// The slots map every live node agrees on, if the cluster is healthy (see
    /// [`wait_ok`](Self::wait_ok)); else what is missing.
    async fn healthy_view(&self) -> Result<Vec<SlotRange>, String> {
        let live = self.live_ports();
        if live.is_empty() {
            return Err("every node is down".to_owned());
        }
        let states = join_all(live.iter().map(|&p| node_state(p)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        // The causes first (a primary down, nodes that disagree), then the symptoms
        // (cluster_state:fail).
        let mut pairs = live.iter().zip(&states);
        let (first, view) = pairs
            .next()
            .map(|(port, state)| (*port, &state.view))
            .ok_or("no node answered")?;
        for (port, state) in pairs {
            if state.view != *view {
                return Err(format!(
                    "{HOST}:{first} sees {} but {HOST}:{port} sees {}",
                    describe(view),
                    describe(&state.view)
                ));
            }
        }
        let mut listed = BTreeSet::new();
        for range in view {
            if !live.contains(&range.primary) {
                return Err(format!(
                    "slots {}-{} are still served by {HOST}:{}, which is down",
                    range.start, range.end, range.primary
                ));
            }
            if let Some(dead) = range.replicas.iter().find(|r| !live.contains(r)) {
                return Err(format!(
                    "{HOST}:{dead} is down but still listed as a replica (until the nodes \
                     mark it as failed)"
                ));
            }
            listed.insert(range.primary);
            listed.extend(range.replicas.iter().copied());
        }
        let covered: u32 = view
            .iter()
            .map(|r| u32::from(r.end).saturating_sub(u32::from(r.start)) + 1)
            .sum();
        if covered != SLOTS {
            return Err(format!(
                "{covered} of {SLOTS} slots are served: {}",
                describe(view)
            ));
        }
        for (port, state) in live.iter().zip(&states) {
            if state.cluster_state != "ok" {
                return Err(format!(
                    "{HOST}:{port} says cluster_state:{}",
                    state.cluster_state
                ));
            }
            if let Some(primary) = state.replica_of
                && !state.link_up
            {
                return Err(format!(
                    "replica {HOST}:{port} is not linked to its primary {HOST}:{primary} yet"
                ));
            }
        }
        if let Some(missing) = live.iter().find(|p| !listed.contains(p)) {
            return Err(format!(
                "{HOST}:{missing} is neither a primary with slots nor a listed replica yet \
                 (map: {})",
                describe(view)
            ));
        }
        Ok(view.clone())
    }

    /// The slots map of the first live node that answers, and that node's port.
    async fn any_view_with_port(&self) -> Result<(u16, Vec<SlotRange>), KitError> {
        let mut last = None;
        for port in self.live_ports() {
            match cluster_slots(port).await {
                Ok(view) => return Ok((port, view)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| KitError::ClusterCommand {
            port: 0,
            command: "CLUSTER SLOTS".to_owned(),
            error: "every node of the cluster is down".to_owned(),
        }))
    }

    async fn any_view(&self) -> Result<Vec<SlotRange>, KitError> {
        Ok(self.any_view_with_port().await?.1)
    }

    /// Records which slots each primary of a healthy `view` serves.
    fn remember(&self, view: &[SlotRange]) {
        let mut by_primary: HashMap<u16, Vec<(u16, u16)>> = HashMap::new();
        for r in view {
            by_primary
                .entry(r.primary)
                .or_default()
                .push((r.start, r.end));
        }
        self.served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(by_primary);
    }

    /// Ports of the nodes not killed through [`kill`](Self::kill).
    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| !n.down)
            .map(|n| n.server.port())
            .collect()
    }

    fn node_ref(&self, port: u16) -> Result<&Node, KitError> {
        self.nodes
            .iter()
            .find(|n| n.server.port() == port)
            .ok_or(KitError::UnknownClusterNode(port))
    }

    fn node_mut(&mut self, port: u16) -> Result<&mut Node, KitError> {
        self.nodes
            .iter_mut()
            .find(|n| n.server.port() == port)
            .ok_or(KitError::UnknownClusterNode(port))
    }
}

/// The slots `(first, last)` primary `i` of `primaries` (at most 16384) gets: an even share.
fn share(i: usize, primaries: usize) -> (u16, u16) {
    let (i, n) = (i as u64, primaries.max(1) as u64);
    let slots = u64::from(SLOTS);
    let slot = |s: u64| u16::try_from(s).unwrap_or(u16::MAX);
    (
        slot(i * slots / n),
        slot(((i + 1) * slots / n).saturating_sub(1)),
    )
}

/// The hash slot of `key` as Redis computes it (CRC16 of the hash tag, if any, mod 16384).
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    fred::util::redis_keyslot(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_of_matches_known_cluster_keyslot_answers() {
        // Answers of CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn slots_are_shared_evenly() {
        assert_eq!(share(0, 1), (0, 16383));
        assert_eq!(
            (0..3).map(|i| share(i, 3)).collect::<Vec<_>>(),
            vec![(0, 5460), (5461, 10921), (10922, 16383)]
        );
        assert_eq!(share(16383, 16384), (16383, 16383));
    }

    #[tokio::test]
    async fn zero_primaries_is_an_error() {
        let err = RedisCluster::builder()
            .primaries(0)
            .start()
            .await
            .expect_err("no primary");
        assert!(matches!(err, KitError::InvalidCluster(_)), "{err:?}");
    }
}
