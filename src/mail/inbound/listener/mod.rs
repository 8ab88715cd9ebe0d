//! The inbound mail listener: a small, strict SMTP (RFC 5321) and LMTP
//! (RFC 2033) server, hand-written on tokio. It speaks the protocol and
//! enforces the limits; what happens to a recipient and a message is the
//! [`Delivery`]'s business (DESIGN.md "Flows": e-mail → LMTP/SMTP listener →
//! parse → authenticate → route → iSchedule POST).
//!
//! Extensions: PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
//! ENHANCEDSTATUSCODES (RFC 2034/3463); SMTP only: STARTTLS (RFC 3207) and
//! AUTH PLAIN/LOGIN (RFC 4954, only over TLS or from loopback).
//!
//! After DATA, LMTP answers once per recipient. SMTP answers once for all:
//! the first temporary failure if there is one (the sending MTA retries the
//! whole message; nothing else would retry it), else 250 if any recipient
//! took the message (the permanent failures are reported to the envelope
//! sender through [`Delivery::report_failures`], i.e. a DSN), else the first
//! permanent failure.
//!
//! The public types are here; the work is split by concern so each part can
//! be read and tested alone: `framing` reads lines and the message data
//! and buffers replies (the byte level, where smuggling is stopped),
//! `session` is the command state machine, `auth` the SMTP AUTH
//! exchange, and `address` the syntax of paths and mailboxes.
//!
//! Deliberate strictness:
//! * lines (commands and message lines) longer than
//!   [`Limits::max_line_bytes`] including CRLF are refused (500 5.5.2);
//! * a message line may end in a bare LF (stored as CRLF), but only
//!   `<CRLF>.<CRLF>` ends the data: `<LF>.<LF>`, `<LF>.<CRLF>` and
//!   `<CRLF>.<LF>` are ordinary text, so nothing can be smuggled past a
//!   front MTA that reads the message differently ("SMTP smuggling");
//! * input pipelined behind STARTTLS is discarded (RFC 3207, CVE-2011-0411);
//! * addresses are ASCII (no SMTPUTF8), paths at most 256 octets;
//! * a connection that opens with an HTTP request line is closed at once.

mod address;
mod auth;
mod framing;
mod session;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use self::session::Session;
use crate::smtp::SmtpReply;

/// The tracing target of everything the listener logs.
const TARGET: &str = "ischedule::mail";

/// Which protocol a [`Listener`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 5321: EHLO/HELO, one reply after DATA, STARTTLS and AUTH.
    Smtp,
    /// RFC 2033: LHLO, one reply per recipient after DATA.
    Lmtp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Smtp => "SMTP",
            Protocol::Lmtp => "LMTP",
        })
    }
}

/// What one connection may do (DESIGN.md "Bounded everything").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message (after dot-unstuffing, CRLF line ends); advertised as
    /// `SIZE`. Larger: 552 5.3.4 at MAIL (`SIZE=`) or after the data.
    pub max_message_bytes: usize,
    /// Recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Longest command or message line, CRLF included (RFC 5321: 1000).
    pub max_line_bytes: usize,
    /// How long the server waits for a command (or an AUTH response), and
    /// for the client to take a reply.
    pub command_timeout: Duration,
    /// How long receiving the whole message (after 354) may take.
    pub data_timeout: Duration,
    /// Bad commands (syntax, unknown, out of order, failed AUTH, overlong
    /// line) after which the connection is closed with 421 4.7.0.
    pub max_errors: usize,
    /// How long one session may last, whatever it does; then 421 4.7.0.
    pub session_timeout: Duration,
    /// Command lines per session, NOOP, RSET and HELP included; then 421 4.7.0.
    pub max_commands: usize,
    /// After the listener is told to stop: how long a session waiting for
    /// a command may still begin one (zero: "421 4.3.2" at once).
    pub stop_drain: Duration,
}

/// How many sessions a listener holds at once.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    pub total: usize,
    /// From one client address; more get 421 4.7.0 and are closed.
    pub per_client: usize,
}

impl Default for Limits {
    /// 10 MiB, 100 recipients, 1000-octet lines, 5 min per command,
    /// 10 min for the data, 10 errors, 10 min and 1000 commands per session;
    /// sessions stop at once when told to.
    fn default() -> Self {
        Limits {
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
            max_line_bytes: 1000,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            max_errors: 10,
            session_timeout: Duration::from_secs(10 * 60),
            max_commands: 1000,
            stop_drain: Duration::ZERO,
        }
    }
}

/// The envelope of the transaction in progress.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The reverse-path without brackets; `""` for the null sender `<>`.
    pub mail_from: String,
    /// Accepted recipients, in RCPT order (at RCPT time: those before the
    /// one being checked).
    pub recipients: Vec<String>,
    /// The EHLO/HELO/LHLO argument.
    pub helo: String,
    /// The peer's address.
    pub client: SocketAddr,
    /// Whether the session is under TLS (after STARTTLS).
    pub tls: bool,
    /// The user a successful AUTH named.
    pub authenticated_as: Option<String>,
}

/// What the listener hands its recipients and messages to.
#[async_trait::async_trait]
pub trait Delivery: Send + Sync + 'static {
    /// Checks a recipient at RCPT time (cheap: syntax, local policy).
    /// Err = the reply to send (e.g. 550 5.7.1 relaying denied).
    async fn accept_recipient(&self, envelope: &Envelope, recipient: &str)
        -> Result<(), SmtpReply>;
    /// The message after DATA: exactly one reply per envelope recipient, in
    /// order (a missing one counts as 451 4.3.0, extra ones are ignored).
    /// The listener does not bound how long this takes: do it here.
    async fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Vec<SmtpReply>;
    /// SMTP only, mixed outcome: the message was accepted (250) for some
    /// recipients; report the failed ones to the envelope sender (a DSN, see
    /// [`crate::mail::outbound::dsn::build`]) if it may be believed, and
    /// say whether a report will go. Never called for the null sender. The
    /// 250 is sent after this returns.
    async fn report_failures(
        &self,
        envelope: &Envelope,
        message: &[u8],
        failed: &[(String, SmtpReply)],
    ) -> bool;
    /// SMTP AUTH PLAIN/LOGIN: true if the credentials are valid.
    fn check_credentials(&self, user: &str, password: &str) -> bool;
}

/// An SMTP or LMTP server; see the module documentation. It does not
/// accept connections itself: whoever owns the listening socket (the
/// Pingora adapter in `proxy::mail_listeners`, which hands its socket to
/// a new process on upgrade) passes each one to [`Listener::serve_connection`],
/// whatever its transport.
pub struct Listener {
    inner: Arc<Inner>,
    connections: Connections,
    permits: Arc<Semaphore>,
    per_client: ClientSlots,
}

struct Inner {
    protocol: Protocol,
    limits: Limits,
    hostname: String,
    tls: Option<TlsAcceptor>,
    delivery: Arc<dyn Delivery>,
}

/// Writing the refusal of a connection over the limits must not become a
/// session of its own.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

impl Listener {
    /// `hostname` is the name in the greeting and replies; `tls` enables
    /// STARTTLS (SMTP only); at most `connections.total` sessions at once
    /// and `connections.per_client` from one address.
    pub fn new(
        protocol: Protocol,
        limits: Limits,
        connections: Connections,
        hostname: String,
        tls: Option<TlsAcceptor>,
        delivery: Arc<dyn Delivery>,
    ) -> Listener {
        let hostname: String = hostname.chars().filter(|c| c.is_ascii_graphic()).collect();
        let hostname = if hostname.is_empty() {
            "localhost".to_owned()
        } else {
            hostname
        };
        Listener {
            inner: Arc::new(Inner {
                protocol,
                limits,
                hostname,
                tls,
                delivery,
            }),
            connections,
            permits: Arc::new(Semaphore::new(connections.total)),
            per_client: ClientSlots::new(connections.per_client),
        }
    }

    /// Serves one connection from `client` until it ends. A connection
    /// over the limits gets "421 4.7.0 too many connections" naming the
    /// limit, and is closed.
    ///
    /// `stop` turning true means the listener is shutting down (or handing
    /// its socket to a new process): a session waiting for a command may
    /// still start one within [`Limits::stop_drain`] of it, so that a
    /// client that just connected gets its mail through; past that, or
    /// once a transaction ended, it is told "421 4.3.2". A transaction's
    /// DATA and delivery always finish.
    pub async fn serve_connection<S>(
        &self,
        mut stream: S,
        client: SocketAddr,
        stop: watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let protocol = self.inner.protocol;
        let connections = self.connections;
        let refusal = match (
            self.per_client.take(client.ip()),
            self.permits.clone().try_acquire_owned(),
        ) {
            (Some(slot), Ok(permit)) => {
                Session::new(self.inner.clone(), stream, client, stop)
                    .run()
                    .await;
                drop((permit, slot));
                return;
            }
            (None, _) => {
                warn!(target: TARGET, %protocol, %client, per_client = connections.per_client, "too many connections from this client, refused");
                format!(
                    "421 4.7.0 too many connections from {} (limit {} per client)\r\n",
                    client.ip(),
                    connections.per_client
                )
            }
            (Some(_), Err(_)) => {
                warn!(target: TARGET, %protocol, %client, max_connections = connections.total, "too many connections, refused");
                format!(
                    "421 4.7.0 too many connections (limit {})\r\n",
                    connections.total
                )
            }
        };
        let _ = tokio::time::timeout(REFUSAL_WRITE, stream.write_all(refusal.as_bytes())).await;
    }
}

/// Sessions per client address, so that one client cannot take every slot.
#[derive(Clone)]
struct ClientSlots {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One session's place in [`ClientSlots`], given back when dropped.
struct ClientSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ClientSlots {
    fn new(limit: usize) -> ClientSlots {
        ClientSlots {
            limit,
            open: Arc::default(),
        }
    }

    fn take(&self, ip: IpAddr) -> Option<ClientSlot> {
        // An IPv4 client may arrive on a dual-stack socket as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // Forget the address, or the map grows with every client ever seen.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_slots_are_counted_per_address_and_given_back() {
        let slots = ClientSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let second = slots.take(mapped).unwrap();
        assert!(
            slots.take(a).is_none(),
            "the mapped form is the same client"
        );
        let other = slots.take(b);
        assert!(other.is_some(), "another client is not affected");
        drop(first);
        let third = slots.take(a);
        assert!(third.is_some());
        drop((second, third, other));
        assert!(slots.open.lock().unwrap().is_empty(), "nothing left behind");
    }
}
