//! Where a [`TestRedis`](crate::TestRedis) came from: [`RedisSource`].

use std::fmt;
use std::str::FromStr;

use crate::KitError;

/// Where a [`TestRedis`](crate::TestRedis) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisSource {
    /// A server named by `STEVEDORE_TEST_REDIS_URL`, shared with others: isolate by key prefix.
    Env,
    /// A container started through testcontainers, owned by this
    /// [`TestRedis`](crate::TestRedis).
    Container,
    /// A local `redis-server` process, owned by this [`TestRedis`](crate::TestRedis).
    Process,
}

impl RedisSource {
    /// The lower-case name: `"env"`, `"container"` or `"process"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Container => "container",
            Self::Process => "process",
        }
    }
}

impl fmt::Display for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RedisSource {
    type Err = KitError;

    /// Parses `env`, `container` or `process` (case-insensitive, surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "env" => Ok(Self::Env),
            "container" => Ok(Self::Container),
            "process" => Ok(Self::Process),
            _ => Err(KitError::InvalidSource(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn source_names_round_trip() -> TestResult {
        for s in [
            RedisSource::Env,
            RedisSource::Container,
            RedisSource::Process,
        ] {
            assert_eq!(s.to_string().parse::<RedisSource>()?, s);
        }
        assert_eq!(
            " Container ".parse::<RedisSource>()?,
            RedisSource::Container
        );
        assert!(matches!(
            "docker".parse::<RedisSource>(),
            Err(KitError::InvalidSource(_))
        ));
        Ok(())
    }
}
