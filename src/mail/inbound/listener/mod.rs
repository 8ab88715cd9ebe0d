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
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

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
    /// 10 min for the data, 10 errors, 10 min and 1000 commands per session.
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

/// An SMTP or LMTP server; see the module documentation.
pub struct Listener {
    inner: Arc<Inner>,
}

struct Inner {
    protocol: Protocol,
    limits: Limits,
    hostname: String,
    tls: Option<TlsAcceptor>,
    delivery: Arc<dyn Delivery>,
}

impl Listener {
    /// `hostname` is the name in the greeting and replies; `tls` enables
    /// STARTTLS (SMTP only).
    pub fn new(
        protocol: Protocol,
        limits: Limits,
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
        }
    }

    /// Serves until `shutdown` resolves; each connection in its own task; at
    /// most `connections.total` at once and `connections.per_client` from
    /// one address (extra connections get "421 4.7.0 too many connections"
    /// naming the limit, and are closed).
    ///
    /// On shutdown it stops accepting, sends sessions that wait for a command
    /// "421 4.3.2" and waits for those in a transaction's DATA or delivery to
    /// finish it (bounded by `data_timeout` plus the delivery) before
    /// returning. Dropping the future instead aborts every session at once.
    pub async fn serve(
        &self,
        listener: TcpListener,
        connections: Connections,
        shutdown: impl Future<Output = ()>,
    ) {
        let max_connections = connections.total;
        let permits = Arc::new(Semaphore::new(max_connections));
        let per_client = ClientSlots::new(connections.per_client);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        let protocol = self.inner.protocol;
        info!(target: TARGET, %protocol, listen = ?listener.local_addr().ok(), max_connections, "mail listener started");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = sessions.join_next(), if !sessions.is_empty() => log_join(done),
                accepted = listener.accept() => {
                    let (tcp, client) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // EMFILE and the like: back off instead of spinning.
                            warn!(target: TARGET, %protocol, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Some(slot) = per_client.take(client.ip()) else {
                        warn!(target: TARGET, %protocol, %client, per_client = connections.per_client, "too many connections from this client, refused");
                        let text = format!("421 4.7.0 too many connections from {} (limit {} per client)\r\n", client.ip(), connections.per_client);
                        // A fresh socket's send buffer is empty: this does not block.
                        let _ = tcp.try_write(text.as_bytes());
                        continue;
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        warn!(target: TARGET, %protocol, %client, max_connections, "too many connections, refused");
                        let text = format!("421 4.7.0 too many connections (limit {max_connections})\r\n");
                        let _ = tcp.try_write(text.as_bytes());
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let session = Session::new(self.inner.clone(), tcp, client, stop_rx.clone());
                    sessions.spawn(async move {
                        session.run().await;
                        drop((permit, slot));
                    });
                }
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let open = sessions.len();
        if open > 0 {
            info!(target: TARGET, %protocol, open, "mail listener stopping, waiting for sessions");
        }
        while let Some(done) = sessions.join_next().await {
            log_join(done);
        }
        info!(target: TARGET, %protocol, "mail listener stopped");
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

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        error!(target: TARGET, error = %e, "mail session task failed");
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
