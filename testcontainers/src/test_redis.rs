//! [`TestRedis`]: a server for one test from the environment, a container or a process.

use std::fmt;
use std::time::{Duration, Instant};

use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::ContainerAsync;

use crate::announce::{LOG_PREFIX, announce, forced_note, redact};
use crate::container::{self, ContainerFailure, ImageRef};
use crate::settings::{Settings, URL_ENV};
use crate::{KitError, RedisServer, RedisSource};

/// A Redis server for one test, from wherever this machine offers one (see the crate docs).
///
/// Dropping it stops what it started: the container is removed, the process killed. A server
/// from `STEVEDORE_TEST_REDIS_URL` is left alone.
pub struct TestRedis {
    url: String,
    source: RedisSource,
    guard: Guard,
}

/// What a [`TestRedis`] must stop when dropped.
enum Guard {
    /// Nothing: a shared server from the environment.
    None,
    /// A container, removed when dropped (an `Option` so that `Drop` can take it).
    Container(Option<Box<ContainerAsync<Redis>>>),
    /// A child process, killed when dropped.
    Process(RedisServer),
}

impl fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TestRedis");
        d.field("url", &redact(&self.url))
            .field("source", &self.source);
        match &self.guard {
            Guard::None => {}
            Guard::Container(c) => {
                d.field("container", &c.as_ref().map(|c| c.id().to_owned()));
            }
            Guard::Process(p) => {
                d.field("process", p);
            }
        }
        d.finish()
    }
}

impl TestRedis {
    /// Gets a Redis for a test.
    ///
    /// Order: 1) `STEVEDORE_TEST_REDIS_URL` if set (a shared server: callers isolate by key
    /// prefix); 2) a container of `redis:7` (or `STEVEDORE_TEST_REDIS_IMAGE`) through
    /// testcontainers when an engine may answer (`DOCKER_HOST`, else the default socket
    /// `/var/run/docker.sock`), on a free local port mapped explicitly; 3) a `redis-server`
    /// process (from `PATH`, or `STEVEDORE_REDIS_SERVER`) on a free loopback port in a temp
    /// dir. `STEVEDORE_TEST_REDIS_SOURCE=env|container|process` forces one path and makes its
    /// failure an error. Logs one line on stderr saying which path it took and, after a
    /// fallback, why.
    pub async fn start() -> Result<TestRedis, KitError> {
        Self::start_with(Settings::from_env()?).await
    }

    /// The URL to connect to, `redis://HOST:PORT` (`redis://127.0.0.1:PORT` unless the env
    /// URL or a remote `DOCKER_HOST` says otherwise).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where this server came from.
    pub fn source(&self) -> RedisSource {
        self.source
    }

    async fn start_with(settings: Settings) -> Result<TestRedis, KitError> {
        let started = Instant::now();
        match settings.forced {
            Some(RedisSource::Env) => {
                let url = settings.env_url.clone().ok_or(KitError::EnvUrlMissing)?;
                Ok(Self::from_env_url(url, &forced_note(RedisSource::Env)))
            }
            Some(RedisSource::Container) => {
                let engine = container::probe_engine(
                    settings.docker_host.as_deref(),
                    &settings.default_socket,
                )
                .map_err(|reason| KitError::NoContainerEngine { reason })?;
                let image = settings.image()?;
                match container::start(&image, settings.docker_host.as_deref()).await {
                    Ok(c) => Ok(Self::from_container(
                        c,
                        &image,
                        started.elapsed(),
                        &format!("{engine}; {}", forced_note(RedisSource::Container)),
                    )),
                    Err(e) => Err(e.into_kit_error(&image)),
                }
            }
            Some(RedisSource::Process) => {
                let server = settings.process_builder().start().await?;
                Ok(Self::from_process(
                    server,
                    &settings.program,
                    started.elapsed(),
                    &forced_note(RedisSource::Process),
                ))
            }
            None => {
                if let Some(url) = settings.env_url.clone() {
                    return Ok(Self::from_env_url(url, &format!("{URL_ENV} is set")));
                }
                let mut skipped = Vec::new();
                match container::probe_engine(
                    settings.docker_host.as_deref(),
                    &settings.default_socket,
                ) {
                    Err(why) => skipped.push(format!("no container: {why}")),
                    Ok(engine) => {
                        let image = settings.image()?;
                        match container::start(&image, settings.docker_host.as_deref()).await {
                            Ok(c) => {
                                return Ok(Self::from_container(
                                    c,
                                    &image,
                                    started.elapsed(),
                                    &engine,
                                ));
                            }
                            Err(ContainerFailure::Client(e)) => {
                                skipped.push(format!("no container: {engine}: {e}"));
                            }
                            Err(ContainerFailure::Other(e)) => return Err(e),
                        }
                    }
                }
                match settings.process_builder().start().await {
                    Ok(server) => Ok(Self::from_process(
                        server,
                        &settings.program,
                        started.elapsed(),
                        &skipped.join("; "),
                    )),
                    Err(KitError::RedisServerNotFound { program, source }) => {
                        // The install hint is the outer error's: said once.
                        skipped.push(format!("no process: could not run {program:?}: {source}"));
                        Err(KitError::NoRedisServer {
                            tried: skipped.join("; "),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn from_env_url(url: String, why: &str) -> TestRedis {
        announce(
            RedisSource::Env,
            &format!(
                "{LOG_PREFIX} redis from env {URL_ENV} at {} ({why})",
                redact(&url)
            ),
        );
        TestRedis {
            url,
            source: RedisSource::Env,
            guard: Guard::None,
        }
    }

    fn from_container(
        c: container::StartedContainer,
        image: &ImageRef,
        took: Duration,
        why: &str,
    ) -> TestRedis {
        announce(
            RedisSource::Container,
            &format!(
                "{LOG_PREFIX} redis from container {image} at {} (started in {} ms; {why})",
                c.url,
                took.as_millis()
            ),
        );
        TestRedis {
            url: c.url,
            source: RedisSource::Container,
            guard: Guard::Container(Some(Box::new(c.container))),
        }
    }

    fn from_process(
        server: RedisServer,
        program: &std::path::Path,
        took: Duration,
        why: &str,
    ) -> TestRedis {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!("; {why}")
        };
        announce(
            RedisSource::Process,
            &format!(
                "{LOG_PREFIX} redis from process {} at {} (started in {} ms{why})",
                program.display(),
                server.url(),
                took.as_millis()
            ),
        );
        TestRedis {
            url: server.url(),
            source: RedisSource::Process,
            guard: Guard::Process(server),
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Guard::Container(slot) = &mut self.guard else {
            return;
        };
        let Some(container) = slot.take() else {
            return;
        };
        // testcontainers removes the container from its Drop, which needs a Tokio runtime.
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(container);
            return;
        }
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let _entered = rt.enter();
                drop(container);
            }
            Err(e) => {
                eprintln!(
                    "{LOG_PREFIX} could not remove container {}: no Tokio runtime ({e})",
                    container.id()
                );
                std::mem::forget(container);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::process;
    use crate::resp;
    use crate::resp::test_support::{Reply, command, host_port, wait_until_down};
    use crate::settings::SOURCE_ENV;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn no_engine_settings() -> Settings {
        Settings {
            forced: None,
            env_url: None,
            docker_host: None,
            default_socket: PathBuf::from("/nonexistent/stevedore-test/docker.sock"),
            image: None,
            program: process::default_program(),
        }
    }

    #[tokio::test]
    async fn forced_env_uses_the_url() -> TestResult {
        let server = RedisServer::start().await?;
        let settings = Settings {
            forced: Some(RedisSource::Env),
            env_url: Some(server.url()),
            ..no_engine_settings()
        };
        let redis = TestRedis::start_with(settings).await?;
        assert_eq!(redis.source(), RedisSource::Env);
        assert_eq!(redis.url(), server.url());
        let (host, port) = host_port(redis.url());
        resp::ping(&host, port).await?;
        drop(redis);
        // The env server is not ours: it must still answer.
        resp::ping(&host, port).await?;
        Ok(())
    }

    #[tokio::test]
    async fn forced_env_without_url_is_an_error() {
        let settings = Settings {
            forced: Some(RedisSource::Env),
            ..no_engine_settings()
        };
        let err = TestRedis::start_with(settings).await.expect_err("no URL");
        assert!(matches!(err, KitError::EnvUrlMissing), "{err:?}");
    }

    #[tokio::test]
    async fn forced_container_without_engine_is_an_error() {
        let settings = Settings {
            forced: Some(RedisSource::Container),
            ..no_engine_settings()
        };
        let t = Instant::now();
        let err = TestRedis::start_with(settings)
            .await
            .expect_err("no engine");
        assert!(matches!(err, KitError::NoContainerEngine { .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn unreachable_engine_falls_back_to_process() -> TestResult {
        // testcontainers reads DOCKER_HOST itself (tests can't set env vars), so this only
        // exercises the fallback when the real environment has no engine.
        if std::env::var_os("DOCKER_HOST").is_some()
            || std::path::Path::new(container::DEFAULT_SOCKET).exists()
        {
            eprintln!("skipped: an engine is configured in this environment");
            return Ok(());
        }
        let settings = Settings {
            // Set, but nothing answers there: testcontainers fails with a Client error.
            docker_host: Some("unix:///nonexistent/stevedore-test/docker.sock".into()),
            ..no_engine_settings()
        };
        let redis = TestRedis::start_with(settings).await?;
        assert_eq!(redis.source(), RedisSource::Process);
        Ok(())
    }

    #[tokio::test]
    async fn no_engine_falls_back_to_process() -> TestResult {
        let redis = TestRedis::start_with(no_engine_settings()).await?;
        assert_eq!(redis.source(), RedisSource::Process);
        let (host, port) = host_port(redis.url());
        resp::ping(&host, port).await?;
        drop(redis);
        assert!(wait_until_down(&host, port).await);
        Ok(())
    }

    #[tokio::test]
    async fn nothing_available_is_no_redis_server() {
        let settings = Settings {
            program: PathBuf::from("/nonexistent/redis-server"),
            ..no_engine_settings()
        };
        let err = TestRedis::start_with(settings).await.expect_err("nothing");
        let text = err.to_string();
        assert!(matches!(err, KitError::NoRedisServer { .. }), "{err:?}");
        assert!(text.contains("apt-get install redis-server"), "{text}");
        assert_eq!(text.matches("apt-get install").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn start_works_on_this_machine() -> TestResult {
        let t = Instant::now();
        let redis = TestRedis::start().await?;
        eprintln!(
            "TestRedis::start() from {} took {} ms",
            redis.source(),
            t.elapsed().as_millis()
        );
        if let Ok(forced) = std::env::var(SOURCE_ENV) {
            assert_eq!(redis.source(), forced.parse::<RedisSource>()?);
        }
        let (host, port) = host_port(redis.url());
        resp::ping(&host, port).await?;
        assert_eq!(
            command(&host, port, &["SET", "stevedore-kit:probe", "1"]).await?,
            Reply::Simple("OK".into())
        );
        let source = redis.source();
        drop(redis);
        if source != RedisSource::Env {
            assert!(
                wait_until_down(&host, port).await,
                "{source} still answers after drop"
            );
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_starts_get_separate_servers() -> TestResult {
        let (a, b, c) = tokio::join!(TestRedis::start(), TestRedis::start(), TestRedis::start());
        let (a, b, c) = (a?, b?, c?);
        if a.source() != RedisSource::Env {
            assert_ne!(a.url(), b.url());
            assert_ne!(b.url(), c.url());
            assert_ne!(a.url(), c.url());
        }
        for r in [&a, &b, &c] {
            let (host, port) = host_port(r.url());
            resp::ping(&host, port).await?;
        }
        Ok(())
    }

    #[test]
    fn drop_outside_a_runtime_does_not_panic() -> TestResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let redis = rt.block_on(TestRedis::start())?;
        let (host, port) = host_port(redis.url());
        let source = redis.source();
        drop(redis); // no runtime entered here
        if source != RedisSource::Env {
            assert!(rt.block_on(wait_until_down(&host, port)));
        }
        Ok(())
    }
}
