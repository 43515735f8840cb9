//! Connections: the URL, TLS, timeouts and reconnect policy every connection shares.

use std::time::Duration;

use fred::prelude::*;

use super::fail;
use crate::error::redact_url;

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
    /// Connections to `url`. A TLS URL (`rediss://`, `rediss-cluster://`,
    /// `rediss-sentinel://`) verifies the server against the system's roots that can be
    /// read plus the certificates of `tls.ca_file`, and presents `tls.client_cert` when
    /// given, always with ring as the crypto provider (never the process default, which is
    /// ambiguous when the application links another). TLS files with a plain URL are an
    /// error: the caller expects TLS and would not get it.
    pub(crate) fn new(url: &str, tls: &TlsFiles) -> crate::Result<Self> {
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
        let uses_tls = scheme.starts_with("rediss");
        if !uses_tls && !tls.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "TLS options (a CA file or a client certificate) were given with a URL that \
                 does not use TLS: use a rediss:// URL"
                    .into(),
            ));
        }
        // A TLS scheme is parsed as its plain twin and given this library's TLS setup: the
        // client library's default one takes the process-wide crypto provider and fails on
        // any system root it cannot read.
        let parsed = match uses_tls {
            true => Config::from_url(&format!("redis{}", &url["rediss".len()..])),
            false => Config::from_url(url),
        };
        let mut config = parsed.map_err(|e| crate::Error::InvalidUrl {
            url: redact_url(url),
            reason: e.details().to_string(),
        })?;
        if uses_tls {
            config.tls = Some(fred::types::config::TlsConfig {
                connector: fred::types::config::TlsConnector::from(tls.client_config()?),
                hostnames: fred::types::config::TlsHostMapping::None,
            });
        }
        Ok(Connector {
            config,
            command_timeout: Duration::ZERO,
        })
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
        let pool = builder.build_pool(size.max(1)).map_err(fail)?;
        pool.init().await.map_err(fail)?;
        Ok(pool)
    }

    /// A client of its own for one blocking read loop, connected. Blocking reads must never
    /// share a connection: every other command on it would wait for the read. A command
    /// sent while its read is blocked (the QUIT at shutdown) first unblocks the read with
    /// `CLIENT UNBLOCK`, so no entry is delivered to a loop that stopped listening.
    pub(crate) async fn dedicated(&self) -> crate::Result<Client> {
        let mut builder = self.builder();
        builder.with_config(|c| c.blocking = Blocking::Interrupt);
        let client = builder.build().map_err(fail)?;
        client.init().await.map_err(fail)?;
        Ok(client)
    }
}

/// Per-node connections of a cluster (see `super::cluster`): the same configuration with
/// the server replaced by one node's address.
impl Connector {
    /// The seed nodes of a cluster URL (`redis-cluster://`, `rediss-cluster://`); `None`
    /// for a single server or sentinel URL.
    pub(super) fn cluster_seeds(&self) -> Option<Vec<(String, u16)>> {
        match &self.config.server {
            fred::types::config::ServerConfig::Clustered { hosts, .. } => {
                Some(hosts.iter().map(|s| (s.host.to_string(), s.port)).collect())
            }
            _ => None,
        }
    }

    /// A builder for a non-cluster client of node `host:port`: a node that is down makes its
    /// commands wait at most the command timeout (the client reconnects every second at
    /// most, and the router fails fast on a disconnected node, see `super::cluster`).
    fn node_builder(&self, host: &str, port: u16, connect_timeout: Duration) -> Builder {
        let mut config = self.config.clone();
        config.server = fred::types::config::ServerConfig::new_centralized(host, port);
        let mut b = Builder::from_config(config);
        b.with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.max_command_attempts = 3;
            c.tcp.nodelay = Some(true);
        })
        .with_performance_config(|p| p.default_command_timeout = Duration::ZERO)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2));
        b
    }

    /// A pool of `size` connections to node `host:port`, connected.
    pub(super) async fn node_pool(
        &self,
        host: &str,
        port: u16,
        size: usize,
    ) -> crate::Result<Pool> {
        let mut builder = self.node_builder(host, port, Duration::from_secs(2));
        let timeout = self.command_timeout;
        builder.with_performance_config(|p| p.default_command_timeout = timeout);
        let pool = builder.build_pool(size.max(1)).map_err(fail)?;
        pool.init().await.map_err(fail)?;
        Ok(pool)
    }

    /// A client of its own for blocking reads on node `host:port`, connected (see
    /// [`dedicated`](Self::dedicated)).
    pub(super) async fn dedicated_at(&self, host: &str, port: u16) -> crate::Result<Client> {
        let mut builder = self.node_builder(host, port, Duration::from_secs(2));
        builder.with_config(|c| c.blocking = Blocking::Interrupt);
        let client = builder.build().map_err(fail)?;
        client.init().await.map_err(fail)?;
        Ok(client)
    }

    /// A short-lived client of node `host:port` that asks one question (the slot map):
    /// connects within `deadline` or fails, never reconnects.
    pub(super) async fn probe_at(
        &self,
        host: &str,
        port: u16,
        deadline: Duration,
    ) -> crate::Result<Client> {
        let mut builder = self.node_builder(host, port, deadline);
        builder.with_performance_config(|p| p.default_command_timeout = deadline);
        builder.set_policy(ReconnectPolicy::new_constant(1, 0));
        let client = builder.build().map_err(fail)?;
        client.init().await.map_err(fail)?;
        Ok(client)
    }
}

impl Connector {
    /// A pub/sub client that resubscribes by itself after a reconnect, connected.
    pub(crate) async fn subscriber(&self) -> crate::Result<fred::clients::SubscriberClient> {
        let client = self.builder().build_subscriber_client().map_err(fail)?;
        client.init().await.map_err(fail)?;
        // Detached: resubscribes after every reconnect until the client is dropped.
        drop(client.manage_subscriptions());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::{Connector, TlsFiles};

    #[test]
    fn every_tls_scheme_gets_tls_and_no_plain_scheme_does() {
        for url in [
            "rediss://h:6380",
            "rediss://u:pw@h:6380/2",
            "rediss-cluster://h:7000?node=h:7001",
        ] {
            let c = Connector::new(url, &TlsFiles::default()).expect("a TLS url");
            assert!(c.config.uses_tls(), "{url}");
        }
        for url in ["redis://h:6379", "redis-cluster://h:7000"] {
            let c = Connector::new(url, &TlsFiles::default()).expect("a plain url");
            assert!(!c.config.uses_tls(), "{url}");
        }
        let c = Connector::new("rediss://u:pw@h:6380/2", &TlsFiles::default()).expect("url");
        assert_eq!(c.config.server.hosts()[0].port, 6380);
        assert_eq!(c.config.database, Some(2));
    }
}
