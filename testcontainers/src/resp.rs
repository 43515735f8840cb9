//! Just enough RESP to tell whether a server is up: an inline `PING`, expecting `+PONG`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one PING attempt (connect + write + read) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `PING\r\n` to `host:port` and returns `Ok(())` if the first reply line is `+PONG`.
///
/// The error is a short human-readable reason (connection refused, `-LOADING ...`, timeout).
pub(crate) async fn ping(host: &str, port: u16) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        stream
            .write_all(b"PING\r\n")
            .await
            .map_err(|e| format!("write PING: {e}"))?;
        let mut reply = Vec::with_capacity(32);
        let mut chunk = [0_u8; 64];
        while !reply.windows(2).any(|w| w == b"\r\n") {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read PING reply: {e}"))?;
            if n == 0 {
                return Err("connection closed before a PING reply".to_owned());
            }
            reply.extend_from_slice(&chunk[..n]);
            if reply.len() > 4096 {
                break;
            }
        }
        if reply.starts_with(b"+PONG") {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&reply);
            Err(format!("PING answered {:?}", text.trim_end()))
        }
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("PING to {host}:{port} timed out")),
    }
}

/// Polls [`ping`] every 10 ms until it succeeds or `deadline` has passed.
///
/// `still_alive` is called before each attempt; returning `Err` stops the wait at once (used to
/// notice a child process that exited). On timeout the error is the last PING failure.
pub(crate) async fn wait_for_pong<E>(
    host: &str,
    port: u16,
    deadline: Duration,
    mut still_alive: impl FnMut() -> Result<(), E>,
) -> Result<(), WaitError<E>> {
    let started = tokio::time::Instant::now();
    loop {
        still_alive().map_err(WaitError::Gone)?;
        let last = match ping(host, port).await {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        if started.elapsed() >= deadline {
            return Err(WaitError::Timeout { last });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Why [`wait_for_pong`] gave up.
#[derive(Debug)]
pub(crate) enum WaitError<E> {
    /// `still_alive` reported that the server is gone.
    Gone(E),
    /// The deadline passed; `last` is the last PING failure.
    Timeout { last: String },
}

#[cfg(test)]
pub(crate) mod test_support {
    //! For the tests: a tiny RESP client (send a command as an array of bulk strings, read one
    //! reply), and waiting for a server to go away.

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    /// One decoded reply (only the kinds the tests need).
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Reply {
        Simple(String),
        Error(String),
        Integer(i64),
        Bulk(Option<Vec<u8>>),
    }

    /// Runs one command against `host:port` on a fresh connection.
    pub(crate) async fn command(host: &str, port: u16, args: &[&str]) -> std::io::Result<Reply> {
        let stream = TcpStream::connect((host, port)).await?;
        let mut stream = BufReader::new(stream);
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        stream.get_mut().write_all(&out).await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let line = line.trim_end_matches("\r\n");
        let bad = || std::io::Error::other(format!("unexpected reply {line:?}"));
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(rest.parse().map_err(|_| bad())?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let len = usize::try_from(len).map_err(|_| bad())?;
                    let mut buf = vec![0_u8; len + 2];
                    stream.read_exact(&mut buf).await?;
                    buf.truncate(len);
                    Reply::Bulk(Some(buf))
                }
            }
            _ => return Err(bad()),
        })
    }

    /// Host and port of a `redis://host:port` URL.
    pub(crate) fn host_port(url: &str) -> (String, u16) {
        let rest = url.trim_start_matches("redis://");
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (host, port) = rest.rsplit_once(':').expect("url has a port");
        let port = port.trim_end_matches('/').parse().expect("numeric port");
        (host.trim_matches(['[', ']']).to_owned(), port)
    }

    /// Polls `host:port` until it no longer answers PING (5 s at most); false if it still does.
    pub(crate) async fn wait_until_down(host: &str, port: u16) -> bool {
        for _ in 0..500 {
            if super::ping(host, port).await.is_err() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }
}
