//! Just enough RESP for the kit: an inline `PING` to tell whether a server is up, and a tiny
//! client that sends one command and reads one RESP2 reply (to form a Redis Cluster).

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

/// How long one [`command`] (connect + write + read the whole reply) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest reply [`command`] reads (a `CLUSTER NODES` of a few nodes is far smaller).
const MAX_REPLY: usize = 16 << 20;

/// One decoded RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`, without the `-`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`, `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`, `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple or bulk string reply (lossy UTF-8), `None` for anything else.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The value of an integer reply, `None` for anything else.
    pub(crate) fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of a (non-null) array reply, `None` for anything else.
    pub(crate) fn array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// Runs one command against `host:port` on a fresh connection and reads its whole reply
/// (an error reply is `Ok(Reply::Error(..))`). Gives up after 2 s with `TimedOut`.
pub(crate) async fn command(host: &str, port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let attempt = async {
        let mut stream = TcpStream::connect((host, port)).await?;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        stream.write_all(&out).await?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0_u8; 8192];
        loop {
            if let Some((reply, _)) = parse(&buf).map_err(std::io::Error::other)? {
                return Ok(reply);
            }
            if buf.len() > MAX_REPLY {
                return Err(std::io::Error::other("reply larger than 16 MiB"));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a whole reply",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no reply from {host}:{port} within {COMMAND_TIMEOUT:?}"),
        )),
    }
}

/// Decodes one reply from the start of `buf`: `Ok(None)` if `buf` holds only part of it,
/// else the reply and how many bytes it took.
fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..eol]);
    let after = eol + 2;
    let bad = || format!("unexpected reply line {line:?}");
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    let length = || rest.parse::<i64>().map_err(|_| bad());
    Ok(Some(match kind {
        "+" => (Reply::Simple(rest.to_owned()), after),
        "-" => (Reply::Error(rest.to_owned()), after),
        ":" => (Reply::Integer(length()?), after),
        "$" => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok(Some((Reply::Bulk(None), after)));
            };
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            (Reply::Bulk(Some(buf[after..end].to_vec())), end + 2)
        }
        "*" => {
            let Ok(count) = usize::try_from(length()?) else {
                return Ok(Some((Reply::Array(None), after)));
            };
            let mut items = Vec::with_capacity(count.min(1024));
            let mut at = after;
            for _ in 0..count {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(Some(items)), at)
        }
        _ => return Err(bad()),
    }))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! For the tests: host and port of a URL, and waiting for a server to go away.

    pub(crate) use super::{Reply, command};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_decoded_whole_or_not_at_all() {
        let text = b"*3\r\n:1\r\n*2\r\n$3\r\nfoo\r\n$-1\r\n+OK\r\nrest";
        let (reply, used) = parse(text).expect("valid").expect("whole");
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"foo".to_vec())),
                    Reply::Bulk(None)
                ])),
                Reply::Simple("OK".into()),
            ]))
        );
        assert_eq!(&text[used..], b"rest");
        for end in 0..used {
            assert_eq!(parse(&text[..end]), Ok(None), "prefix of {end} bytes");
        }
        assert_eq!(
            parse(b"-ERR no\r\n"),
            Ok(Some((Reply::Error("ERR no".into()), 9)))
        );
        assert_eq!(parse(b"*-1\r\n"), Ok(Some((Reply::Array(None), 5))));
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
    }

    #[test]
    fn reply_accessors() {
        assert_eq!(
            Reply::Bulk(Some(b"a".to_vec())).text().as_deref(),
            Some("a")
        );
        assert_eq!(Reply::Simple("b".into()).text().as_deref(), Some("b"));
        assert_eq!(Reply::Integer(3).text(), None);
        assert_eq!(Reply::Integer(3).integer(), Some(3));
        assert!(Reply::Array(None).array().is_none());
    }
}
