//! Bounds on the HTTP listeners' connections: how many are open at once, in
//! all and per client address, and how long a request header may take.
//!
//! Pingora 0.9 has neither: its `ConnectionFilter` sees a connection's
//! address at accept but never hears that it closed, so it cannot count, and
//! its header timeout restarts with every read, so a client trickling one
//! byte a minute holds a connection for ever. So the Pingora HTTP app is
//! wrapped: [`Guarded`] admits each connection against [`ConnectionLimits`]
//! (the slot is held until the connection ends, keep-alive requests
//! included), reads every request header itself under one deadline, and
//! hands the complete header to Pingora as the session's already-read bytes
//! (`set_pipelined_prefix`), so Pingora parses it without another read.
//! TLS listeners admit after Pingora's handshake, which Pingora bounds to
//! 60 s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config;
use crate::metrics;
use crate::proxy::in_flight::InFlight;

/// Pingora's own keep-alive: how long a reused connection may wait, idle,
/// for its next request's first byte.
const KEEPALIVE_IDLE_SECS: u64 = 60;
/// Pingora refuses request headers larger than this anyway.
const MAX_HEAD_BYTES: usize = 1 << 20;
/// What a client over a limit is told, before the connection is closed.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\nConnection: close\r\n\r\n\
too many connections, try later";
/// Writing [`OVER_LIMIT`] must not become a slot of its own.
const OVER_LIMIT_WRITE: Duration = Duration::from_secs(1);
/// At most one log line per this interval about refused connections, so a
/// flood does not become a flood of log lines.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    #[error("{max} connections are open (server.max_connections)")]
    Total { max: usize },
    #[error("{ip} has {max} connections open (server.max_connections_per_client)")]
    Client { ip: IpAddr, max: usize },
}

/// The open connections, counted in all and per client address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_client: usize,
    header_timeout: Duration,
    /// After a stop, how long an idle connection may still begin a request.
    drain: Duration,
    open: Mutex<Open>,
    refusals: Mutex<Refusals>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Only clients with a connection open have an entry.
    per_client: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Refusals {
    since_logged: u64,
    logged_at: Option<Instant>,
}

/// One admitted connection; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    client: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(server: &config::Server) -> ConnectionLimits {
        ConnectionLimits {
            max_total: server.max_connections,
            max_per_client: server.max_connections_per_client,
            header_timeout: server.header_timeout,
            drain: server.drain(),
            open: Mutex::new(Open::default()),
            refusals: Mutex::new(Refusals {
                since_logged: 0,
                logged_at: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `client` (unknown for Unix sockets,
    /// which only count in all).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, OverLimit> {
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(OverLimit::Total {
                max: self.max_total,
            });
        }
        if let Some(ip) = client {
            let count = open.per_client.entry(ip).or_default();
            if *count >= self.max_per_client {
                return Err(OverLimit::Client {
                    ip,
                    max: self.max_per_client,
                });
            }
            *count += 1;
        }
        open.total += 1;
        Ok(Slot {
            limits: self.clone(),
            client,
        })
    }

    /// Logs a refusal, or counts it toward the next line when one was
    /// logged less than [`REFUSAL_LOG_EVERY`] ago.
    fn log_refusal(&self, why: &OverLimit) {
        let mut r = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        r.since_logged += 1;
        if r.logged_at
            .is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(target: "ischedule::connections", refused = r.since_logged, why = %why, "connections refused");
        r.since_logged = 0;
        r.logged_at = Some(Instant::now());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.client {
            if let Some(count) = open.per_client.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.per_client.remove(&ip);
                }
            }
        }
    }
}

/// Pingora's HTTP app behind the connection limits and the header deadline.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Arc<ConnectionLimits>,
    in_flight: InFlight,
}

impl<A> Guarded<A> {
    /// Each connection counts in `in_flight` until it ends.
    pub fn new(inner: A, limits: ConnectionLimits, in_flight: InFlight) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            limits: Arc::new(limits),
            in_flight,
        }
    }
}

/// Why no request header was handed on.
#[derive(Debug, thiserror::Error)]
enum NoHead {
    #[error("closed before a request")]
    Closed,
    #[error("no complete request header within {0:?}")]
    Timeout(Duration),
    #[error("request header larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("reading the request header: {0}")]
    Io(std::io::Error),
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _busy = self.in_flight.enter();
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match self.limits.admit(client) {
            Ok(slot) => slot,
            Err(why) => {
                self.limits.log_refusal(&why);
                let _ = tokio::time::timeout(OVER_LIMIT_WRITE, stream.write_all(OVER_LIMIT)).await;
                return None;
            }
        };
        let _open = metrics::get().connection(metrics::Listener::Http);
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            // HTTP/2 (never offered by the bridge's listeners) multiplexes
            // requests Pingora reads itself: counted, but not read here.
            return self.inner.process_new(stream, shutdown).await;
        }
        let header_timeout = self.limits.header_timeout;
        let mut settings: Option<HttpPersistentSettings> = None;
        // The first request's header is due within the timeout of the
        // connection's start: an idle new connection is closed just as fast.
        let mut wait = Wait {
            first_byte: Instant::now() + header_timeout,
            then: None,
        };
        loop {
            let head = match read_head(&mut stream, wait, shutdown, self.limits.drain).await {
                Ok(head) => head,
                Err(NoHead::Closed) => return None,
                Err(why) => {
                    tracing::debug!(target: "ischedule::connections", client = ?client, why = %why, "connection closed");
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(Some(KEEPALIVE_IDLE_SECS));
                    session.set_keepalive_reuses_remaining(
                        self.inner
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(head);
            let reused = self.inner.process_new_http(session, shutdown).await?;
            (stream, settings) = reused.consume();
            wait = Wait {
                first_byte: Instant::now() + Duration::from_secs(KEEPALIVE_IDLE_SECS),
                then: Some(header_timeout),
            };
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// How long [`read_head`] waits: for the first byte until `first_byte`,
/// and, when `then` is set, for the rest until `then` after the first byte
/// (else until `first_byte` too).
#[derive(Debug, Clone, Copy)]
struct Wait {
    first_byte: Instant,
    then: Option<Duration>,
}

/// Reads until a whole request header is in the buffer, within `wait`.
/// Bytes past the header (a body's start) stay in the buffer for Pingora.
/// Once the server stops, a connection still waiting for a request's first
/// byte gets `drain` more (its client may have sent it already; it is
/// answered with `Connection: close`), then is closed, so that the process
/// is left with no work and can hand the store over.
async fn read_head(
    stream: &mut Stream,
    wait: Wait,
    shutdown: &ShutdownWatch,
    drain: Duration,
) -> Result<BytesMut, NoHead> {
    let started = Instant::now();
    let mut deadline = wait.first_byte;
    let mut shutdown = shutdown.clone();
    let mut draining = false;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if head_complete(&buf) {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(NoHead::TooLarge);
        }
        let empty = buf.is_empty();
        if empty && !draining && *shutdown.borrow_and_update() {
            draining = true;
            deadline = deadline.min(Instant::now() + drain);
        }
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut buf)) => read,
            Ok(()) = shutdown.changed(), if empty && !draining => continue,
        };
        match read {
            Err(_) => return Err(NoHead::Timeout(started.elapsed())),
            // As Pingora: a client leaving before it sent anything is normal.
            Ok(Err(_)) | Ok(Ok(0)) if empty => return Err(NoHead::Closed),
            Ok(Err(e)) => return Err(NoHead::Io(e)),
            Ok(Ok(0)) => return Err(NoHead::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(_)) => {
                if let Some(then) = wait.then.filter(|_| empty) {
                    deadline = Instant::now() + then;
                }
            }
        }
    }
}

/// Whether `buf` holds a request line and headers up to the empty line
/// (CRLF or bare LF, as Pingora's parser accepts; empty lines before the
/// request line are skipped, RFC 9112 2.2, so they cannot stand for one).
fn head_complete(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    // One pass from line end to line end: this runs on every read of every
    // request, and two sliding-window scans cost as much as parsing.
    let mut rest = &buf[start..];
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        rest = &rest[end + 1..];
        if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_client: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total: total,
            max_per_client: per_client,
            header_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(1),
            open: Mutex::new(Open::default()),
            refusals: Mutex::new(Refusals {
                since_logged: 0,
                logged_at: None,
            }),
        })
    }

    #[test]
    fn caps_count_per_client_and_in_all_and_free_on_drop() {
        let limits = limits(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(Some(a)).unwrap();
        let _a2 = limits.admit(Some(a)).unwrap();
        assert_eq!(
            limits.admit(Some(a)).unwrap_err(),
            OverLimit::Client { ip: a, max: 2 }
        );
        let _b1 = limits.admit(Some(b)).unwrap();
        assert_eq!(
            limits.admit(Some(b)).unwrap_err(),
            OverLimit::Total { max: 3 }
        );
        drop(a1);
        let _a3 = limits.admit(Some(a)).unwrap();
        assert_eq!(limits.lock().per_client.len(), 2);
    }

    #[test]
    fn a_header_is_complete_at_its_empty_line() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\nHost: x\n\nbody"));
        assert!(head_complete(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
        assert!(!head_complete(b"\r\n\r\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!head_complete(b""));
    }
}
