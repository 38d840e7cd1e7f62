//! POSTs audit events to an HTTP endpoint (falcosidekick's input), on a thread of its own.
//!
//! One event per request: a JSON body with `Content-Type: application/json`, which is what
//! falcosidekick's `/` endpoint takes from Falco. Plain `http://` only. A failed request is
//! retried with exponential backoff a bounded number of times, then counted as failed; the
//! queue in front is bounded too, so a dead endpoint costs dropped HTTP deliveries (counted),
//! never a blocked audit writer.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::writer::Counters;
use super::AuditError;

/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Retries, timeouts and queue size of the HTTP sink.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Events waiting for delivery before new ones are dropped (and counted).
    pub queue_capacity: usize,
    /// Attempts per event, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time, at most 5 s.
    pub backoff: Duration,
    /// Connect, read and write timeout of one attempt.
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            queue_capacity: 1024,
            attempts: 3,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A parsed `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    host: String,
    port: u16,
    path: String,
}

impl HttpTarget {
    /// Parses the URL; `https://` and anything else is an error saying what is supported.
    pub fn parse(url: &str) -> Result<HttpTarget, AuditError> {
        let bad = |why: &str| AuditError::Url {
            url: url.to_owned(),
            reason: why.to_owned(),
        };
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("only plain http:// is supported; put a TLS proxy or falcosidekick on the node")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        if host.is_empty() || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad(
                "empty host, or spaces or control characters in the path",
            ));
        }
        Ok(HttpTarget {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, 80)),
    }
}

/// The sending side of the HTTP thread.
pub(crate) struct HttpSink {
    tx: SyncSender<String>,
    counters: Arc<Counters>,
}

impl HttpSink {
    pub(crate) fn spawn(target: HttpTarget, opts: HttpOptions, counters: Arc<Counters>) -> Self {
        let (tx, rx) = mpsc::sync_channel(opts.queue_capacity.max(1));
        let thread_counters = counters.clone();
        let spawned = thread::Builder::new()
            .name("vigil-audit-http".into())
            .spawn(move || deliver_all(rx, &target, &opts, &thread_counters));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "audit HTTP thread did not start; deliveries dropped");
        }
        HttpSink { tx, counters }
    }

    /// Hands a line over; never blocks.
    pub(crate) fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            let total = Counters::add(&self.counters.http_dropped, 1);
            if total == 1 || total.is_power_of_two() {
                tracing::warn!(dropped = total, "audit HTTP queue full: deliveries dropped");
            }
        }
    }
}

fn deliver_all(rx: Receiver<String>, target: &HttpTarget, opts: &HttpOptions, c: &Counters) {
    for line in rx {
        match deliver(target, opts, line.trim_end().as_bytes(), &c.http_retries) {
            Ok(()) => _ = Counters::add(&c.http_sent, 1),
            Err(e) => {
                let total = Counters::add(&c.http_failed, 1);
                if total == 1 || total.is_power_of_two() {
                    let url = format!("http://{}{}", target.host_header(), target.path);
                    tracing::error!(url = %url, error = %e, failed = total,
                        "audit HTTP delivery failed after retries");
                }
            }
        }
    }
}

/// Why one attempt failed, and whether another could succeed.
#[derive(Debug)]
enum Attempt {
    /// Network trouble, timeouts, 5xx and 429.
    Retry(String),
    /// Another 4xx: the same body will be refused again.
    Permanent(String),
}

fn deliver(
    target: &HttpTarget,
    opts: &HttpOptions,
    body: &[u8],
    retries: &AtomicU64,
) -> Result<(), String> {
    let mut backoff = opts.backoff;
    for attempt in 1..=opts.attempts.max(1) {
        match post(target, body, opts.timeout) {
            Ok(()) => return Ok(()),
            Err(Attempt::Permanent(why)) => return Err(why),
            Err(Attempt::Retry(why)) if attempt == opts.attempts.max(1) => return Err(why),
            Err(Attempt::Retry(_)) => {
                Counters::add(retries, 1);
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    Err("no attempt made".to_owned())
}

fn post(target: &HttpTarget, body: &[u8], timeout: Duration) -> Result<(), Attempt> {
    let mut stream =
        connect(target, timeout).map_err(|e| Attempt::Retry(format!("connect: {e}")))?;
    let io = |what: &str, e: io::Error| Attempt::Retry(format!("{what}: {e}"));
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io("set timeout", e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| io("set timeout", e))?;

    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nUser-Agent: vigil/{}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_header(),
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| io("send", e))?;
    stream.write_all(body).map_err(|e| io("send", e))?;

    let mut status = String::new();
    // Only the status line matters; never read more than 1 KiB of an answer.
    let limited = io::Read::take(stream, 1024);
    BufReader::new(limited)
        .read_line(&mut status)
        .map_err(|e| io("read", e))?;
    classify(status.trim_end())
}

fn classify(status_line: &str) -> Result<(), Attempt> {
    let code: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Attempt::Retry(format!("bad HTTP status line {status_line:?}")))?;
    match code {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(Attempt::Retry(format!("HTTP {code}"))),
        _ => Err(Attempt::Permanent(format!("HTTP {code}: {status_line}"))),
    }
}

fn connect(target: &HttpTarget, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_and_refuses_the_rest() {
        let t = HttpTarget::parse("http://127.0.0.1:2801/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 2801, "/")
        );
        assert_eq!(t.host_header(), "127.0.0.1:2801");
        let t = HttpTarget::parse("http://sidekick.falco").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.host_header().as_str()),
            (80, "/", "sidekick.falco")
        );
        let t = HttpTarget::parse("http://[::1]:9/in/put?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9, "/in/put?x=1")
        );
        assert_eq!(t.host_header(), "[::1]:9");
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://h:port/",
            "http://h/a b",
            "x",
        ] {
            let err = HttpTarget::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn classifies_statuses() {
        assert!(classify("HTTP/1.1 200 OK").is_ok());
        assert!(classify("HTTP/1.0 204 No Content").is_ok());
        assert!(matches!(
            classify("HTTP/1.1 503 Busy"),
            Err(Attempt::Retry(_))
        ));
        assert!(matches!(
            classify("HTTP/1.1 429 Slow down"),
            Err(Attempt::Retry(_))
        ));
        assert!(matches!(
            classify("HTTP/1.1 400 Bad"),
            Err(Attempt::Permanent(_))
        ));
        assert!(matches!(classify("garbage"), Err(Attempt::Retry(_))));
    }
}
