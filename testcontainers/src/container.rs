//! The container path: the official `redis` image through testcontainers.

use std::convert::Infallible;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::core::IntoContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt, TestcontainersError};

use crate::KitError;
use crate::process::free_port;
use crate::resp::{self, WaitError};

/// The socket testcontainers uses when `DOCKER_HOST` is unset.
pub(crate) const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Image name used unless `STEVEDORE_TEST_REDIS_IMAGE` says otherwise.
pub(crate) const DEFAULT_IMAGE_NAME: &str = "redis";
/// Image tag used unless `STEVEDORE_TEST_REDIS_IMAGE` says otherwise (the module's own
/// default, 5.0, lacks XAUTOCLAIM).
pub(crate) const DEFAULT_IMAGE_TAG: &str = "7";
/// The port Redis listens on inside the container.
const REDIS_PORT: u16 = 6379;
/// How long the container may take to answer our PING once testcontainers saw
/// "Ready to accept connections".
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How many containers to try, each on another host port, when the port picked is taken
/// by the time the engine binds it or the started container's port never answers.
const PORT_ATTEMPTS: usize = 3;

/// An image reference, `name:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub(crate) name: String,
    pub(crate) tag: String,
}

impl ImageRef {
    /// Parses `name:tag`; the name may contain a registry with a port (`host:5000/redis:7`).
    pub(crate) fn parse(s: &str) -> Result<Self, KitError> {
        let invalid = || KitError::InvalidImage(s.to_owned());
        let (name, tag) = s.rsplit_once(':').ok_or_else(invalid)?;
        if name.is_empty() || tag.is_empty() || tag.contains('/') {
            return Err(invalid());
        }
        Ok(Self {
            name: name.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl Default for ImageRef {
    fn default() -> Self {
        Self {
            name: DEFAULT_IMAGE_NAME.to_owned(),
            tag: DEFAULT_IMAGE_TAG.to_owned(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// Decides, without calling testcontainers, whether an engine may be there.
///
/// `Ok` names the engine (for the log line); `Err` says why the container path is skipped.
pub(crate) fn probe_engine(
    docker_host: Option<&str>,
    default_socket: &Path,
) -> Result<String, String> {
    match docker_host {
        Some(host) => Ok(format!("DOCKER_HOST={host}")),
        None if default_socket.exists() => Ok(default_socket.display().to_string()),
        None => Err(format!(
            "DOCKER_HOST is unset and {} does not exist",
            default_socket.display()
        )),
    }
}

/// The host to connect to for a port published by the engine: the engine's own host for a
/// `tcp://`/`http(s)://` `DOCKER_HOST` that is not loopback, else 127.0.0.1.
pub(crate) fn published_host(docker_host: Option<&str>) -> String {
    let loopback = "127.0.0.1".to_owned();
    let Some((scheme, rest)) = docker_host.and_then(|h| h.split_once("://")) else {
        return loopback;
    };
    if !matches!(scheme, "tcp" | "http" | "https") {
        return loopback;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    match host {
        "" | "localhost" | "127.0.0.1" | "::1" => loopback,
        other => other.to_owned(),
    }
}

/// Why the container path failed.
#[derive(Debug)]
pub(crate) enum ContainerFailure {
    /// testcontainers could not talk to the engine (or the engine refused the request):
    /// `TestcontainersError::Client`. Worth falling back from, unless the path was forced.
    Client(TestcontainersError),
    /// Anything else (the container started but never became ready, ...).
    Other(KitError),
}

impl ContainerFailure {
    /// Turns the failure into the error reported when the container path was the only option.
    pub(crate) fn into_kit_error(self, image: &ImageRef) -> KitError {
        match self {
            Self::Client(e) => KitError::Container {
                image: image.to_string(),
                source: Box::new(e),
            },
            Self::Other(e) => e,
        }
    }
}

/// A running Redis container and the URL it answers on.
pub(crate) struct StartedContainer {
    pub(crate) container: ContainerAsync<Redis>,
    pub(crate) url: String,
}

/// Starts `image` with container port 6379 published on a free host port, and waits for the
/// module's "Ready to accept connections" and then for our own PING.
pub(crate) async fn start(
    image: &ImageRef,
    docker_host: Option<&str>,
) -> Result<StartedContainer, ContainerFailure> {
    let host = published_host(docker_host);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port().map_err(ContainerFailure::Other)?;
        // Map the port ourselves and never ask testcontainers for it: podman 4 reports
        // published ports with an empty HostIp, which testcontainers skips (PortNotExposed).
        let request = Redis::default()
            .with_name(image.name.clone())
            .with_tag(image.tag.clone())
            .with_mapped_port(port, REDIS_PORT.tcp());
        let container = match request.start().await {
            Ok(container) => container,
            Err(e) if attempt < PORT_ATTEMPTS && is_port_conflict(&e) => continue,
            Err(e @ TestcontainersError::Client(_)) => return Err(ContainerFailure::Client(e)),
            Err(e) => {
                return Err(ContainerFailure::Other(KitError::Container {
                    image: image.to_string(),
                    source: Box::new(e),
                }));
            }
        };
        match resp::wait_for_pong(&host, port, READY_DEADLINE, || Ok::<(), Infallible>(())).await {
            Ok(()) => {
                return Ok(StartedContainer {
                    container,
                    url: format!("redis://{}:{port}", url_host(&host)),
                });
            }
            // A container whose published port never answers (its port forwarder did not
            // come up, on a loaded machine) is removed, and another started on another port.
            Err(WaitError::Timeout { .. }) if attempt < PORT_ATTEMPTS => {
                drop(container);
                continue;
            }
            Err(WaitError::Timeout { last }) => {
                return Err(ContainerFailure::Other(KitError::NotReady {
                    addr: format!("{host}:{port} (container {})", container.id()),
                    waited: READY_DEADLINE,
                    last_error: last,
                }));
            }
            Err(WaitError::Gone(never)) => match never {},
        }
    }
}

/// Wraps an IPv6 literal in brackets for use in a URL.
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Whether starting failed because the host port was taken between picking and binding it.
fn is_port_conflict(e: &TestcontainersError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("address already in use") || text.contains("port is already allocated")
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn image_refs_parse() -> TestResult {
        assert_eq!(ImageRef::parse("redis:7")?.to_string(), "redis:7");
        let r = ImageRef::parse("registry.local:5000/redis:7.2")?;
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("registry.local:5000/redis", "7.2")
        );
        for bad in ["redis", "registry.local:5000/redis", ":7", "redis:"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ImageRef::default().to_string(), "redis:7");
        Ok(())
    }

    #[test]
    fn published_host_follows_remote_docker_host_only() {
        assert_eq!(published_host(None), "127.0.0.1");
        assert_eq!(published_host(Some("unix:///run/podman.sock")), "127.0.0.1");
        assert_eq!(published_host(Some("tcp://localhost:2375")), "127.0.0.1");
        assert_eq!(published_host(Some("tcp://docker:2376")), "docker");
        assert_eq!(published_host(Some("tcp://[fd00::1]:2375")), "fd00::1");
    }
}
