//! Everything that speaks Redis: connections, the stream commands, the Lua scripts and
//! the key names.
//!
//! The rest of the library calls these functions and never builds a command itself, so
//! the data model in `DESIGN.md` and the README can be checked against this one module.

mod enqueue;
pub(crate) mod keys;
pub(crate) mod scripts;
pub(crate) mod stats;

pub(crate) use enqueue::{JobWrite, write_jobs};

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;

use crate::Priority;
use crate::error::redact_url;

/// One entry read from a stream: its id and fields (`None` for an entry whose data was
/// deleted while it was pending).
pub(crate) type Entry = (String, Option<Fields>);

/// An entry's fields and values, in the order Redis returned them. An entry has a handful
/// of fields, so a scan finds one faster than a hash map is built.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fields(Vec<Value>);

impl Fields {
    /// The value of field `name` (the last, should it repeat: what a map of the entry holds).
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .chunks_exact(2)
            .rev()
            .find(|pair| pair[0].as_bytes() == Some(name.as_bytes()))
            .map(|pair| &pair[1])
    }
}

impl<K: Into<Value>> FromIterator<(K, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Self {
        Fields(pairs.into_iter().flat_map(|(k, v)| [k.into(), v]).collect())
    }
}

fn unexpected(what: &str) -> Error {
    Error::new(
        ErrorKind::Parse,
        format!("unexpected XREADGROUP reply: {what}"),
    )
}

/// The entries of one stream's part of an XREADGROUP reply: `[[id, [field, value, ...]
/// or nil], ...]`.
fn entries_of(reply: Value) -> Result<Vec<Entry>, Error> {
    reply
        .into_array()
        .into_iter()
        .map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts
                .next()
                .and_then(Value::into_string)
                .ok_or_else(|| unexpected("an entry without an id"))?;
            let fields = match parts.next() {
                None | Some(Value::Null) => None,
                Some(fields) => Some(Fields(fields.into_array())),
            };
            Ok((id, fields))
        })
        .collect()
}

/// An XREADGROUP reply, `nil` or `[[stream, entries], ...]`: entries per stream, in the
/// order the streams were asked for. Read straight from the reply, without building a map
/// per entry.
fn read_reply(reply: Value) -> Result<Vec<(String, Vec<Entry>)>, Error> {
    if reply.is_null() {
        return Ok(Vec::new());
    }
    reply
        .into_array()
        .into_iter()
        .map(|stream| {
            let mut parts = stream.into_array().into_iter();
            let name = parts
                .next()
                .and_then(Value::into_string)
                .ok_or_else(|| unexpected("a stream without a name"))?;
            Ok((name, entries_of(parts.next().unwrap_or(Value::Null))?))
        })
        .collect()
}

/// Certificate files for TLS connections (`rediss://`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    /// PEM certificates trusted besides the system's roots (a private CA).
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// PEM certificate chain and private key presented to the server (mutual TLS).
    pub(crate) client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_cert.is_none()
    }

    /// A rustls client configuration (ring) from the system roots and these files.
    fn client_config(&self) -> crate::Result<rustls::ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &std::path::Path, why: String| {
            crate::Error::InvalidConfig(format!("TLS file {}: {why}", path.display()))
        };
        let certs_of = |path: &std::path::Path| -> crate::Result<Vec<CertificateDer<'static>>> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(path, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(path, e.to_string()))?;
            if certs.is_empty() {
                return Err(bad(path, "holds no PEM certificate".into()));
            }
            Ok(certs)
        };
        let mut roots = rustls::RootCertStore::empty();
        // The system's roots, as a rediss:// URL without a CA file gets them; unreadable
        // ones are skipped (a private CA file may be all there is).
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &self.ca_file {
            for cert in certs_of(path)? {
                roots
                    .add(cert)
                    .map_err(|e| bad(path, format!("not a usable CA certificate: {e}")))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::Error::InvalidConfig(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = certs_of(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    bad(
                        key,
                        format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    bad(
                        cert,
                        format!("the certificate and key do not go together: {e}"),
                    )
                })
            }
        }
    }
}

/// Builds connections that all share one configuration and reconnect policy.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    /// Deadline of one command on the pool (`Duration::ZERO`: none).
    command_timeout: Duration,
}

impl Connector {
    pub(crate) fn from_url(url: &str) -> crate::Result<Self> {
        const SCHEMES: [&str; 6] = [
            "redis",
            "rediss",
            "redis-cluster",
            "rediss-cluster",
            "redis-sentinel",
            "rediss-sentinel",
        ];
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
        if !SCHEMES.contains(&scheme) {
            return Err(crate::Error::InvalidUrl {
                url: redact_url(url),
                reason: format!("the scheme must be one of {}", SCHEMES.join(", ")),
            });
        }
        let config = Config::from_url(url).map_err(|e| crate::Error::InvalidUrl {
            url: redact_url(url),
            reason: e.details().to_string(),
        })?;
        Ok(Connector {
            config,
            command_timeout: Duration::ZERO,
        })
    }

    /// Verifies a TLS server against the system's roots plus the certificates of
    /// `tls.ca_file`, and presents `tls.client_cert` when given. Fails when TLS options
    /// come with a plain `redis://` URL: the caller expects TLS and would not get it.
    pub(crate) fn with_tls(mut self, tls: &TlsFiles) -> crate::Result<Self> {
        if tls.is_empty() {
            return Ok(self);
        }
        if !self.config.uses_tls() {
            return Err(crate::Error::InvalidConfig(
                "TLS options (a CA file or a client certificate) were given with a URL that \
                 does not use TLS: use a rediss:// URL"
                    .into(),
            ));
        }
        let client_config = tls.client_config()?;
        self.config.tls = Some(fred::types::config::TlsConfig {
            connector: fred::types::config::TlsConnector::from(client_config),
            hostnames: fred::types::config::TlsHostMapping::None,
        });
        Ok(self)
    }

    fn builder(&self) -> Builder {
        let mut b = Builder::from_config(self.config.clone());
        b.with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.max_command_attempts = 3;
            // Commands are small and latency matters: no Nagle delay (fred leaves it on).
            c.tcp.nodelay = Some(true);
        })
        .with_performance_config(|p| {
            // No client-side timeout: it would leave a blocked read's connection stuck.
            p.default_command_timeout = Duration::ZERO;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        b
    }

    /// Gives every command on the pool this deadline (never blocking reads: they use
    /// [`dedicated`](Self::dedicated) connections).
    pub(crate) fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// A pool for enqueueing and admin calls, connected.
    pub(crate) async fn pool(&self, size: usize) -> crate::Result<Pool> {
        let mut builder = self.builder();
        let timeout = self.command_timeout;
        builder.with_performance_config(|p| p.default_command_timeout = timeout);
        let pool = builder.build_pool(size.max(1))?;
        pool.init().await?;
        Ok(pool)
    }

    /// A client of its own for one blocking read loop, connected. Blocking reads must never
    /// share a connection: every other command on it would wait for the read. A command
    /// sent while its read is blocked (the QUIT at shutdown) first unblocks the read with
    /// `CLIENT UNBLOCK`, so no entry is delivered to a loop that stopped listening.
    pub(crate) async fn dedicated(&self) -> crate::Result<Client> {
        let mut builder = self.builder();
        builder.with_config(|c| c.blocking = Blocking::Interrupt);
        let client = builder.build()?;
        client.init().await?;
        Ok(client)
    }
}

impl Connector {
    /// A pub/sub client that resubscribes by itself after a reconnect, connected.
    pub(crate) async fn subscriber(&self) -> crate::Result<fred::clients::SubscriberClient> {
        let client = self.builder().build_subscriber_client()?;
        client.init().await?;
        // Detached: resubscribes after every reconnect until the client is dropped.
        drop(client.manage_subscriptions());
        Ok(client)
    }
}

/// True for the server's "no such consumer group" error (a restarted server without
/// persistence, or `XGROUP DESTROY`).
pub(crate) fn is_nogroup(e: &Error) -> bool {
    e.details().starts_with("NOGROUP")
}

/// Creates the consumer group on each stream (creating the streams too), reading from
/// the start so entries added before the group existed are not skipped. An existing
/// group is fine.
pub(crate) async fn ensure_groups(
    client: &Client,
    streams: &[String],
    group: &str,
) -> Result<(), Error> {
    let p = client.pipeline();
    for s in streams {
        let _: () = p.xgroup_create(s.as_str(), group, "0", true).await?;
    }
    for r in p.try_all::<Value>().await {
        match r {
            Err(e) if !e.details().starts_with("BUSYGROUP") => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Reads up to `count` new entries from each of `streams` for `consumer`, blocking up to
/// `block` when none is there (no blocking when `block` is `None`). Streams with nothing new
/// are left out of the reply.
pub(crate) async fn read_group(
    client: &Client,
    group: &str,
    consumer: &str,
    count: u64,
    block: Option<Duration>,
    streams: Vec<String>,
) -> Result<Vec<(String, Vec<Entry>)>, Error> {
    let ids = vec![">"; streams.len()];
    let reply: Value = client
        .xreadgroup(
            group,
            consumer,
            Some(count),
            block.map(|b| b.as_millis() as u64),
            false,
            streams,
            ids,
        )
        .await?;
    read_reply(reply)
}

/// Reads from several streams with a different COUNT each, in one round trip, without
/// blocking. Returns the entries (or the error) per requested stream, in request order:
/// one stream's error does not hide what the others delivered.
pub(crate) async fn read_group_counts(
    client: &Client,
    group: &str,
    consumer: &str,
    requests: &[(String, u64)],
) -> Result<Vec<Result<Vec<Entry>, Error>>, Error> {
    let p = client.pipeline();
    for (stream, count) in requests {
        let _: () = p
            .xreadgroup(
                group,
                consumer,
                Some(*count),
                None,
                false,
                stream.as_str(),
                ">",
            )
            .await?;
    }
    let mut out = Vec::with_capacity(requests.len());
    for r in p.try_all::<Value>().await {
        out.push(r.and_then(read_reply).map(|streams| {
            streams
                .into_iter()
                .next()
                .map(|(_, e)| e)
                .unwrap_or_default()
        }));
    }
    Ok(out)
}

/// The finished entries of one ready stream, with their jobs' status keys and results.
#[derive(Debug, Default)]
pub(crate) struct StreamAcks {
    pub(crate) ids: Vec<String>,
    /// Status key and the handler's result (JSON), for each job that tracks status.
    pub(crate) statuses: Vec<(String, Option<String>)>,
}

/// Entries acknowledged per call of `ack.lua` at most: a script holds the server while it
/// runs, and this many take about a millisecond.
const ACK_BATCH: usize = 256;

/// Acknowledges and deletes finished entries and marks their jobs succeeded: one script
/// call (`ack.lua`) per stream and 256 entries, all calls sent together.
pub(crate) async fn ack_and_delete(
    client: &Client,
    script: &scripts::Script,
    group: &str,
    by_stream: &HashMap<std::sync::Arc<str>, StreamAcks>,
    retention_ms: u64,
) -> Result<(), Error> {
    let now = crate::job::now_ms() as i64;
    let mut calls = Vec::new();
    for (stream, acks) in by_stream {
        // Not every entry has a status (one deleted while pending has none): each call
        // takes as many statuses as it has entries, until none are left.
        let mut statuses = acks.statuses.as_slice();
        for ids in acks.ids.chunks(ACK_BATCH) {
            let (these, rest) = statuses.split_at(statuses.len().min(ids.len()));
            statuses = rest;
            let mut keys = Vec::with_capacity(1 + these.len());
            keys.push(stream.to_string());
            keys.extend(these.iter().map(|(key, _)| key.clone()));
            let mut args: Vec<Value> = Vec::with_capacity(4 + ids.len() + these.len());
            args.extend([
                Value::from(group),
                Value::from(now),
                Value::from(retention_ms as i64),
                Value::from(ids.len() as i64),
            ]);
            args.extend(ids.iter().map(|id| Value::from(id.as_str())));
            args.extend(
                these
                    .iter()
                    .map(|(_, result)| Value::from(result.as_deref().unwrap_or(""))),
            );
            calls.push(scripts::run::<Value>(client, script, keys, args));
        }
    }
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

/// The priority a stream key belongs to, from its suffix.
pub(crate) fn priority_of(stream: &str) -> Option<Priority> {
    Priority::ALL
        .into_iter()
        .find(|p| stream.ends_with(&format!(":{}", p.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_name_and_a_repeated_name_keeps_its_last_value() {
        let f: Fields = [("id", Value::from("a")), ("type", Value::from("t"))]
            .into_iter()
            .chain([("id", Value::from("b"))])
            .collect();
        assert_eq!(f.get("type"), Some(&Value::from("t")));
        assert_eq!(f.get("id"), Some(&Value::from("b")));
        assert_eq!(f.get("payload"), None);
    }

    #[test]
    fn xreadgroup_replies_are_read_with_deleted_entries_and_timeouts() {
        assert!(read_reply(Value::Null).unwrap_or_default().is_empty());
        let reply = Value::Array(vec![Value::Array(vec![
            Value::from("s:{q}:normal"),
            Value::Array(vec![
                Value::Array(vec![
                    Value::from("1-0"),
                    Value::Array(vec![Value::from("id"), Value::from("j1")]),
                ]),
                Value::Array(vec![Value::from("2-0"), Value::Null]),
            ]),
        ])]);
        let streams = read_reply(reply).unwrap_or_default();
        assert_eq!(streams.len(), 1);
        let (name, entries) = &streams[0];
        assert_eq!(name, "s:{q}:normal");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "1-0");
        assert_eq!(
            entries[0].1.as_ref().and_then(|f| f.get("id")),
            Some(&Value::from("j1"))
        );
        assert_eq!(entries[1], ("2-0".to_string(), None));
        assert!(read_reply(Value::Array(vec![Value::Array(vec![])])).is_err());
    }
}
