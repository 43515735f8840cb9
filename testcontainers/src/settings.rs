//! What [`TestRedis::start`](crate::TestRedis::start) reads from the environment.

use std::path::PathBuf;

use crate::container::{self, ImageRef};
use crate::process::{self, RedisServer, RedisServerBuilder};
use crate::{KitError, RedisSource};

/// Env var: URL of a Redis server to use instead of starting one.
pub(crate) const URL_ENV: &str = "STEVEDORE_TEST_REDIS_URL";
/// Env var: forces one source (`env`, `container`, `process`).
pub(crate) const SOURCE_ENV: &str = "STEVEDORE_TEST_REDIS_SOURCE";
/// Env var: the container image, `name:tag`.
pub(crate) const IMAGE_ENV: &str = "STEVEDORE_TEST_REDIS_IMAGE";

/// What [`TestRedis::start`](crate::TestRedis::start) reads from the environment (separate
/// so tests can set it).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) forced: Option<RedisSource>,
    pub(crate) env_url: Option<String>,
    pub(crate) docker_host: Option<String>,
    pub(crate) default_socket: PathBuf,
    pub(crate) image: Option<String>,
    pub(crate) program: PathBuf,
}

impl Settings {
    pub(crate) fn from_env() -> Result<Settings, KitError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(Settings {
            forced: var(SOURCE_ENV).map(|s| s.parse()).transpose()?,
            env_url: var(URL_ENV),
            docker_host: var("DOCKER_HOST"),
            default_socket: PathBuf::from(container::DEFAULT_SOCKET),
            image: var(IMAGE_ENV),
            program: process::default_program(),
        })
    }

    pub(crate) fn image(&self) -> Result<ImageRef, KitError> {
        match &self.image {
            Some(s) => ImageRef::parse(s.trim()),
            None => Ok(ImageRef::default()),
        }
    }

    pub(crate) fn process_builder(&self) -> RedisServerBuilder {
        RedisServer::builder().program(self.program.clone())
    }
}
