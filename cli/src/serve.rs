//! `serve`: the admin HTTP API, the web dashboard and the health endpoints, from
//! [`stevedore::admin::router`], until Ctrl-C or SIGTERM.
//!
//! With a token, every API call needs it (a read-only token may be added for reads).
//! Without one, the server answers only clients on its own machine, and an address other
//! than a loopback one is refused: anyone who reaches it could replay or purge dead
//! letters. `--allow-no-token` serves anyone without a token, for a trusted network or an
//! authenticating proxy, with a warning at every start so it is never forgotten.

use std::net::SocketAddr;

use anyhow::Context;
use stevedore::Client;
use stevedore::admin::AdminConfig;
use tracing_subscriber::EnvFilter;

use crate::args::ServeArgs;
use crate::failure::Usage;
use crate::output;

/// A checked `serve` command.
pub(crate) struct Plan {
    addr: SocketAddr,
    token: Option<String>,
    read_token: Option<String>,
    allow_no_token: bool,
    allowed_hosts: Vec<String>,
}

impl Plan {
    pub(crate) fn from_args(a: ServeArgs) -> anyhow::Result<Plan> {
        let token = a.token.filter(|t| !t.is_empty());
        if token.is_none() && !a.addr.ip().is_loopback() && !a.allow_no_token {
            return Err(Usage(format!(
                "refusing to serve on {} without a token: anyone who reaches it could \
                 enqueue, pause, replay and purge. Pass --token (or set STEVEDORE_TOKEN), \
                 bind a loopback address, or pass --allow-no-token to accept that",
                a.addr
            ))
            .into());
        }
        Ok(Plan {
            addr: a.addr,
            token,
            read_token: a.read_token.filter(|t| !t.is_empty()),
            allow_no_token: a.allow_no_token,
            allowed_hosts: a.allowed_hosts,
        })
    }

    pub(crate) async fn run(self, client: Client) -> anyhow::Result<()> {
        // Logs go to stderr; RUST_LOG overrides the level.
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // Fails only when a subscriber is already set, which then does the job.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour codes only on a terminal, not in files and log collectors.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();

        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("cannot listen on {}", self.addr))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        match &self.token {
            Some(_) => tracing::info!("every API call needs the bearer token"),
            None if !self.allow_no_token => {
                tracing::info!("no token: only clients on this machine are served")
            }
            None => tracing::warn!(
                "NO TOKEN on a non-loopback address ({addr}): anyone who reaches it can \
                 enqueue, pause, replay and purge (--allow-no-token); set --token or \
                 STEVEDORE_TOKEN unless a proxy in front authenticates"
            ),
        }
        let mut config = match (self.token, self.allow_no_token) {
            (Some(token), _) => AdminConfig::with_token(token),
            (None, true) => AdminConfig::insecure_no_auth(),
            (None, false) => AdminConfig::loopback_only(),
        };
        if let Some(read) = self.read_token {
            config = config.read_token(read);
        }
        config = config.allowed_hosts(self.allowed_hosts);
        let router = stevedore::admin::router(client.admin(), config);
        output::print(&format!(
            "serving the stevedore dashboard on http://{addr}/ (API under /api/v1)\n"
        ))?;
        stevedore::admin::serve(listener, router, stevedore::shutdown_signal())
            .await
            .context("the server stopped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: &str, token: Option<&str>, allow_no_token: bool) -> ServeArgs {
        ServeArgs {
            addr: addr.parse().expect("an address"),
            token: token.map(String::from),
            read_token: None,
            allow_no_token,
            allowed_hosts: Vec::new(),
        }
    }

    #[test]
    fn non_loopback_addresses_need_a_token_or_an_explicit_opt_out() {
        assert!(Plan::from_args(args("127.0.0.1:8080", None, false)).is_ok());
        assert!(Plan::from_args(args("[::1]:8080", None, false)).is_ok());
        assert!(Plan::from_args(args("0.0.0.0:8080", None, false)).is_err());
        assert!(Plan::from_args(args("[::]:8080", Some(""), false)).is_err());
        assert!(Plan::from_args(args("0.0.0.0:8080", Some("s3cret"), false)).is_ok());
        assert!(Plan::from_args(args("0.0.0.0:8080", None, true)).is_ok());
    }
}
