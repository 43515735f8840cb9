//! What the nodes of a cluster say, over the kit's RESP client: `CLUSTER SLOTS`,
//! `CLUSTER INFO`, `INFO replication`, and the calls that form the cluster.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{HOST, POLL_INTERVAL};
use crate::KitError;
use crate::resp::{self, Reply};

/// A run of slots and who serves it, as one node's `CLUSTER SLOTS` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotRange {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) primary: u16,
    pub(super) replicas: BTreeSet<u16>,
}

/// What one node says about the cluster and itself.
pub(super) struct NodeState {
    pub(super) cluster_state: String,
    pub(super) view: Vec<SlotRange>,
    /// The primary's port, if this node is a replica.
    pub(super) replica_of: Option<u16>,
    /// `master_link_status:up` (replicas only).
    pub(super) link_up: bool,
}

/// Asks the node on `port` for `CLUSTER INFO`, `CLUSTER SLOTS` and `INFO replication`.
pub(super) async fn node_state(port: u16) -> Result<NodeState, String> {
    let text = |reply: Reply, command: &str| {
        reply
            .text()
            .ok_or_else(|| format!("{HOST}:{port} answered {command} with no text"))
    };
    let info = text(
        call(port, &["CLUSTER", "INFO"])
            .await
            .map_err(|e| e.to_string())?,
        "CLUSTER INFO",
    )?;
    let view = cluster_slots(port).await.map_err(|e| e.to_string())?;
    let replication = text(
        call(port, &["INFO", "replication"])
            .await
            .map_err(|e| e.to_string())?,
        "INFO replication",
    )?;
    let replica_of = if info_field(&replication, "role") == Some("slave") {
        Some(
            info_field(&replication, "master_port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
        )
    } else {
        None
    };
    Ok(NodeState {
        cluster_state: info_field(&info, "cluster_state")
            .unwrap_or("(missing)")
            .to_owned(),
        view,
        replica_of,
        link_up: info_field(&replication, "master_link_status") == Some("up"),
    })
}

/// One node's `CLUSTER SLOTS`, sorted by first slot, replicas as a set of ports.
pub(super) async fn cluster_slots(port: u16) -> Result<Vec<SlotRange>, KitError> {
    let reply = call(port, &["CLUSTER", "SLOTS"]).await?;
    parse_cluster_slots(&reply).ok_or_else(|| {
        unexpected(
            port,
            "CLUSTER SLOTS",
            &format!("an array of slot ranges, got {reply:?}"),
        )
    })
}

/// Decodes a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id, ..], replicas..], ..]`.
pub(super) fn parse_cluster_slots(reply: &Reply) -> Option<Vec<SlotRange>> {
    let node_port = |r: &Reply| u16::try_from(r.array()?.get(1)?.integer()?).ok();
    let mut view = Vec::new();
    for range in reply.array()? {
        let items = range.array()?;
        view.push(SlotRange {
            start: u16::try_from(items.first()?.integer()?).ok()?,
            end: u16::try_from(items.get(1)?.integer()?).ok()?,
            primary: node_port(items.get(2)?)?,
            replicas: items
                .get(3..)?
                .iter()
                .map(node_port)
                .collect::<Option<_>>()?,
        });
    }
    view.sort_by_key(|r| r.start);
    Some(view)
}

/// `0-5460@40001[40004] 5461-10922@40002[40005] ...`, for error messages.
pub(super) fn describe(view: &[SlotRange]) -> String {
    if view.is_empty() {
        return "no slots".to_owned();
    }
    let mut out = String::new();
    for r in view {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{}-{}@{}", r.start, r.end, r.primary);
        if !r.replicas.is_empty() {
            let replicas: Vec<String> = r.replicas.iter().map(u16::to_string).collect();
            let _ = write!(out, "[{}]", replicas.join(","));
        }
    }
    out
}

/// The value of `field:value` in an `INFO` or `CLUSTER INFO` text.
pub(super) fn info_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim())
    })
}

/// Assigns slots `start..=end` to the node on `port` (`CLUSTER ADDSLOTSRANGE`, Redis 7).
pub(super) async fn add_slots(port: u16, start: u16, end: u16) -> Result<(), KitError> {
    let (start, end) = (start.to_string(), end.to_string());
    expect_ok(port, &["CLUSTER", "ADDSLOTSRANGE", &start, &end]).await
}

/// Runs `args` on the node on `port`; an error reply or no reply is a
/// [`KitError::ClusterCommand`].
pub(super) async fn call(port: u16, args: &[&str]) -> Result<Reply, KitError> {
    let name = || args.iter().take(2).copied().collect::<Vec<_>>().join(" ");
    match resp::command(HOST, port, args).await {
        Ok(Reply::Error(error)) => Err(KitError::ClusterCommand {
            port,
            command: name(),
            error,
        }),
        Ok(reply) => Ok(reply),
        Err(e) => Err(KitError::ClusterCommand {
            port,
            command: name(),
            error: e.to_string(),
        }),
    }
}

/// Runs `args` and expects `+OK`.
pub(super) async fn expect_ok(port: u16, args: &[&str]) -> Result<(), KitError> {
    match call(port, args).await? {
        Reply::Simple(s) if s == "OK" => Ok(()),
        other => Err(unexpected(
            port,
            &args.iter().take(2).copied().collect::<Vec<_>>().join(" "),
            &format!("+OK, got {other:?}"),
        )),
    }
}

pub(super) fn unexpected(port: u16, command: &str, wanted: &str) -> KitError {
    KitError::ClusterCommand {
        port,
        command: command.to_owned(),
        error: format!("unexpected reply: wanted {wanted}"),
    }
}

/// Calls `check` every 50 ms until it is `Ok` or `deadline` has passed; then a
/// [`KitError::ClusterTimeout`] with `awaited` and `check`'s last error.
pub(super) async fn poll<T, F, Fut>(
    deadline: Duration,
    awaited: &str,
    mut check: F,
) -> Result<T, KitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if started.elapsed() >= deadline {
            return Err(KitError::ClusterTimeout {
                awaited: awaited.to_owned(),
                waited: deadline,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_slots_reply_is_decoded() {
        let node = |port: i64| {
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"127.0.0.1".to_vec())),
                Reply::Integer(port),
                Reply::Bulk(Some(b"id".to_vec())),
                Reply::Array(Some(vec![])),
            ]))
        };
        let reply = Reply::Array(Some(vec![
            Reply::Array(Some(vec![
                Reply::Integer(8192),
                Reply::Integer(16383),
                node(7002),
            ])),
            Reply::Array(Some(vec![
                Reply::Integer(0),
                Reply::Integer(8191),
                node(7001),
                node(7004),
                node(7003),
            ])),
        ]));
        let view = parse_cluster_slots(&reply).expect("a valid reply");
        assert_eq!(
            view,
            vec![
                SlotRange {
                    start: 0,
                    end: 8191,
                    primary: 7001,
                    replicas: [7003, 7004].into(),
                },
                SlotRange {
                    start: 8192,
                    end: 16383,
                    primary: 7002,
                    replicas: BTreeSet::new(),
                },
            ]
        );
        assert_eq!(describe(&view), "0-8191@7001[7003,7004] 8192-16383@7002");
        assert!(parse_cluster_slots(&Reply::Simple("OK".into())).is_none());
    }

    #[test]
    fn info_fields_are_found() {
        let text = "# Replication\r\nrole:slave\r\nmaster_port:7001\r\nmaster_link_status:up\r\n";
        assert_eq!(info_field(text, "role"), Some("slave"));
        assert_eq!(info_field(text, "master_port"), Some("7001"));
        assert_eq!(info_field(text, "master"), None);
    }
}
