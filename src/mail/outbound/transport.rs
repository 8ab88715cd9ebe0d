//! Sending one iMIP message to one recipient over SMTP, and classifying what
//! happened so the iSchedule sender gets a per-recipient answer.
//!
//! One SMTP transaction per recipient, so every recipient gets the server's
//! own reply. lettre speaks the protocol (EHLO, STARTTLS, AUTH, MAIL, RCPT,
//! DATA, dot-stuffing); this module decides where to connect and keeps a small
//! pool of idle relay connections itself instead of using lettre's pool,
//! because lettre bounds only the TCP connect by its timeout and puts a
//! connection whose send was cancelled back into its pool mid-transaction,
//! where the next message would read the previous one's replies. Here a
//! connection is owned by the send using it: when [`Transport::send`] runs out
//! of time the connection is dropped with it, and only connections that ended
//! a transaction cleanly are parked for reuse.

use std::error::Error as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::transport::smtp::Error as SmtpError;
use lettre::Address;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use url::Url;

use crate::discovery::resolver::DnsFailure;
use crate::discovery::{DnsResolver, Origin, TargetPolicy};
use crate::metrics::{self, MailOutcome};
use crate::scheduling::peer_slots::PeerSlots;
use crate::smtp::{
    AcceptedBy, Deferral, EnhancedStatus, Outcome, ReplyCode, Route, RouteError, Security,
    SmtpReply,
};

/// Idle relay connections kept for reuse.
const MAX_IDLE: usize = 10;
/// An idle relay connection older than this is closed rather than reused
/// (well inside the 5 minutes RFC 5321 4.5.3.2.7 lets a server wait).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a background QUIT may take before the connection is just closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sessions open at once to one server unless [`Transport::with_max_sessions_per_host`]
/// says otherwise.
const DEFAULT_SESSIONS_PER_HOST: usize = 10;

/// Why a [`Transport`] cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the SMTP timeout must be more than zero")]
    ZeroTimeout,
    #[error("'{0}' is not a host name or IP address to give in EHLO")]
    HeloName(String),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("cannot create the outbox folder {}: {source}", dir.display())]
    Outbox { dir: PathBuf, source: io::Error },
    #[error("relay {host}: cannot set up TLS: {source}")]
    Tls { host: String, source: SmtpError },
}

/// Why no session with one server could be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot connect: no answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Tcp(io::Error),
    #[error("cannot set TCP_NODELAY: {0}")]
    NoDelay(io::Error),
    /// Connecting, the greeting or EHLO, as lettre words it.
    #[error("{0}")]
    Session(SmtpError),
    #[error("STARTTLS: {0}")]
    StartTls(SmtpError),
    #[error("AUTH: {0}")]
    Auth(SmtpError),
}

/// Why no session with the relay could be opened.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("{label}: {source}")]
    Dns { label: String, source: DnsFailure },
    #[error("{label}: {host} has no address record")]
    NoAddress { label: String, host: String },
    /// Every address failed; `addr` is named when there were several.
    #[error("{label}: {}", attempts.iter().map(|(addr, e)| match addr {
        Some(addr) => format!("{addr}: {e}"),
        None => e.to_string(),
    }).collect::<Vec<_>>().join("; "))]
    Unreachable {
        label: String,
        attempts: Vec<(Option<SocketAddr>, ConnectError)>,
    },
}

/// Sends mail the way its [`Route`] says. Share it (it is `Sync`): relay
/// connections are pooled across sends.
pub struct Transport {
    route: Route,
    resolver: Arc<DnsResolver>,
    hello: ClientId,
    timeout: Duration,
    direct_port: u16,
    /// Set for [`Route::Relay`].
    relay: Option<Relay>,
    /// Checks the MX addresses of [`Route::Direct`]: recipient domains
    /// (and so their MX records) are chosen by whoever sends the invitation.
    policy: TargetPolicy,
    /// Bounds the SMTP sessions open at once to each server.
    sessions: PeerSlots<String>,
}

/// A relay server, resolved from its URL once.
struct Relay {
    /// Host name or IP (no brackets): looked up with the bridge's resolver,
    /// named to TLS.
    host: String,
    port: u16,
    /// `relay host:port`, for messages.
    label: String,
    tls: Tls,
    credentials: Option<Credentials>,
    /// Connections that ended their last transaction cleanly, newest last.
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// Connections held by sends: see [`Held`].
    in_use: AtomicUsize,
}

/// A relay connection held by one send, counted in [`Relay::in_use`] from
/// the moment it is taken from the pool or opened until it is parked or
/// dropped (also when a timeout drops the send mid-transaction). Counting
/// the connections themselves, not the session slots: a slot may already
/// belong to the next send before that send has taken the connection
/// parked for it, and counting it as busy would close that connection.
struct Held<'a>(&'a Relay);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Transport {
    /// `helo_name` is the EHLO name (default: the host name, else
    /// `[127.0.0.1]`). `timeout` bounds each [`send`](Transport::send) to a
    /// relay or MX, from DNS to the reply after DATA; each TCP connect gets a
    /// third of it, so an unreachable MX leaves time for the next. For an
    /// outbox the folder is created here.
    pub fn new(
        route: Route,
        resolver: Arc<DnsResolver>,
        helo_name: Option<String>,
        timeout: Duration,
    ) -> Result<Transport, TransportError> {
        if timeout.is_zero() {
            return Err(TransportError::ZeroTimeout);
        }
        let hello = match helo_name {
            None => ClientId::default(),
            Some(name) => client_id(&name)?,
        };
        route.check()?;
        let relay = match &route {
            Route::Relay { url, credentials } => Some(Relay::new(url, credentials.as_ref())?),
            Route::Direct => None,
            Route::Outbox { dir } => {
                fs::create_dir_all(dir).map_err(|source| TransportError::Outbox {
                    dir: dir.clone(),
                    source,
                })?;
                None
            }
        };
        Ok(Transport {
            route,
            resolver,
            hello,
            timeout,
            direct_port: 25,
            relay,
            policy: TargetPolicy::default(),
            sessions: PeerSlots::new(DEFAULT_SESSIONS_PER_HOST),
        })
    }

    /// Which MX addresses [`Route::Direct`] may connect to (default: public
    /// ones only).
    pub fn with_target_policy(mut self, policy: TargetPolicy) -> Transport {
        self.policy = policy;
        self
    }

    /// SMTP sessions open at once to one relay or MX address (at least 1).
    pub fn with_max_sessions_per_host(mut self, sessions: usize) -> Transport {
        self.sessions = PeerSlots::new(sessions);
        self
    }

    /// The port MX hosts are contacted on in [`Route::Direct`] (default 25):
    /// for tests, which cannot listen on 25, and for sites whose MX hosts
    /// take mail on another port.
    pub fn with_direct_port(mut self, port: u16) -> Transport {
        self.direct_port = port;
        self
    }

    pub fn route(&self) -> &Route {
        &self.route
    }

    /// One message to ONE recipient: one SMTP transaction, so the recipient
    /// gets its own reply. `envelope_from` may be empty (null reverse-path).
    /// `message` is sent as is (CRLF line ends expected; lettre dot-stuffs).
    /// Never panics; bounded by the timeout (outbox writes excepted).
    pub async fn send(&self, envelope_from: &str, recipient: &str, message: &[u8]) -> Outcome {
        let outcome = self.transaction(envelope_from, recipient, message).await;
        metrics::get().mail(match &outcome {
            Outcome::Accepted { .. } => MailOutcome::Accepted,
            Outcome::Written { .. } => MailOutcome::Written,
            Outcome::Temporary { .. } => MailOutcome::Temporary,
            Outcome::Permanent { .. } => MailOutcome::Permanent,
        });
        outcome
    }

    async fn transaction(&self, envelope_from: &str, recipient: &str, message: &[u8]) -> Outcome {
        let envelope = match envelope(envelope_from, recipient) {
            Ok(envelope) => envelope,
            Err(refused) => return refused,
        };
        if let Route::Outbox { dir } = &self.route {
            return write_outbox(dir, envelope_from, recipient, message).await;
        }
        // `relay` is set exactly for Route::Relay.
        let work = async {
            match &self.relay {
                Some(relay) => self.via_relay(relay, &envelope, message).await,
                None => self.direct(&envelope, recipient, message).await,
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Temporary {
                reason: Deferral::Failure(format!(
                    "{}: no result within {} s",
                    match &self.relay {
                        Some(relay) => relay.label.clone(),
                        None => format!("the mail servers of {}", domain_of(recipient)),
                    },
                    self.timeout.as_secs_f64()
                )),
            },
        }
    }

    async fn via_relay(&self, relay: &Relay, envelope: &Envelope, message: &[u8]) -> Outcome {
        let slot = self.sessions.acquire(&relay.label).await;
        let mut conn = match relay.reuse().await {
            Some(conn) => conn,
            None => match self.connect_relay(relay).await {
                Ok(conn) => conn,
                Err(e) => {
                    return Outcome::Temporary {
                        reason: Deferral::Failure(e.to_string()),
                    }
                }
            },
        };
        let held = relay.hold();
        let outcome = transaction(
            &mut conn,
            envelope,
            message,
            AcceptedBy::Relay,
            &relay.label,
        )
        .await;
        // Parked while the slot is still held, so the next send to take the
        // slot finds the connection.
        relay.park(conn, held, self.sessions.per_peer());
        drop(slot);
        outcome
    }

    /// A new session with the relay, trying each of its addresses.
    async fn connect_relay(&self, relay: &Relay) -> Result<AsyncSmtpConnection, RelayError> {
        let label = || relay.label.clone();
        let ips = self
            .resolver
            .ips(&relay.host)
            .await
            .map_err(|source| RelayError::Dns {
                label: label(),
                source,
            })?;
        if ips.is_empty() {
            return Err(RelayError::NoAddress {
                label: label(),
                host: relay.host.clone(),
            });
        }
        let mut attempts = Vec::new();
        let several = ips.len() > 1;
        for ip in ips {
            let addr = SocketAddr::new(ip, relay.port);
            match self
                .open(addr, &relay.tls, relay.credentials.as_ref())
                .await
            {
                Ok(conn) => return Ok(conn),
                Err(e) => attempts.push((several.then_some(addr), e)),
            }
        }
        Err(RelayError::Unreachable {
            label: label(),
            attempts,
        })
    }

    /// RFC 5321 5.1: the MX hosts by preference (ties in DNS order), else the
    /// domain itself; every address of each until one takes the session. The
    /// first server that answers the transaction decides the outcome.
    async fn direct(&self, envelope: &Envelope, recipient: &str, message: &[u8]) -> Outcome {
        let domain = domain_of(recipient);
        let (hosts, implicit) = match self.exchanges(&domain).await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let mut failures = Vec::new();
        let (mut any_address, mut dns_failed, mut any_allowed) = (false, false, false);
        for host in &hosts {
            let ips = match self.resolver.ips(host).await {
                Ok(ips) => ips,
                Err(e) => {
                    dns_failed = true;
                    failures.push(e.to_string());
                    continue;
                }
            };
            if ips.is_empty() {
                failures.push(format!("{host} has no address record"));
            }
            for ip in ips {
                any_address = true;
                let addr = SocketAddr::new(ip, self.direct_port);
                if let Err(refusal) = self.policy.check(Origin::Learnt, addr) {
                    failures.push(format!("{host} ({addr}) not contacted: {refusal}"));
                    continue;
                }
                any_allowed = true;
                let slot = self.sessions.acquire(&addr.to_string()).await;
                match self.open(addr, &opportunistic(host), None).await {
                    Ok(mut conn) => {
                        let label = format!("{host} ({addr})");
                        let outcome =
                            transaction(&mut conn, envelope, message, AcceptedBy::Mx, &label).await;
                        quit_later(conn, Some(slot));
                        return outcome;
                    }
                    Err(e) => failures.push(format!("{host} ({addr}): {e}")),
                }
            }
        }
        // Addresses that will never be allowed: retrying would only fill
        // the queue with mail for a domain that points into a private network.
        if any_address && !any_allowed && !dns_failed {
            return refused(
                550,
                EnhancedStatus::new(5, 4, 4),
                format!(
                    "no mail server of {domain} may be contacted: {}",
                    failures.join("; ")
                ),
            );
        }
        if implicit && !any_address && !dns_failed {
            return refused(
                550,
                EnhancedStatus::new(5, 1, 2),
                format!("{domain} has no MX and no address record"),
            );
        }
        Outcome::Temporary {
            reason: Deferral::Failure(format!(
                "no mail server of {domain} took the message: {}",
                failures.join("; ")
            )),
        }
    }

    /// The hosts to try for `domain`, and whether they are the implicit MX
    /// (the domain itself). Address literals (`[192.0.2.1]`) are used as is.
    async fn exchanges(&self, domain: &str) -> Result<(Vec<String>, bool), Outcome> {
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip = literal
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
                .map_or(literal, |_| &literal[5..]);
            return Ok((vec![ip.to_string()], false));
        }
        let mut mx = self
            .resolver
            .mx(domain)
            .await
            .map_err(|e| Outcome::Temporary {
                reason: Deferral::Failure(e.to_string()),
            })?;
        if let [(_, host)] = mx.as_slice() {
            if host == "." {
                return Err(refused(
                    556,
                    EnhancedStatus::new(5, 1, 10),
                    format!("{domain} accepts no mail (null MX)"),
                ));
            }
        }
        mx.retain(|(_, host)| host != ".");
        if mx.is_empty() {
            return Ok((vec![domain.to_string()], true));
        }
        mx.sort_by_key(|(preference, _)| *preference);
        Ok((mx.into_iter().map(|(_, host)| host).collect(), false))
    }

    /// Connects, says EHLO, secures and authenticates the session as `tls`
    /// and `credentials` ask.
    ///
    /// The TCP connection is made here with `TCP_NODELAY`: lettre's own
    /// connect leaves Nagle's algorithm on, and as DATA writes the body and
    /// the final "." separately, every message then waits for the server's
    /// delayed ACK (about 40 ms on Linux; 1.5 ms with it off, on loopback).
    /// Implicit TLS (`smtps://`) has to go through lettre's connect, so it
    /// still pays that wait.
    async fn open(
        &self,
        addr: SocketAddr,
        tls: &Tls,
        credentials: Option<&Credentials>,
    ) -> Result<AsyncSmtpConnection, ConnectError> {
        let connect_timeout = self.timeout / 3;
        let mut conn = match tls {
            Tls::Wrapper(params) => AsyncSmtpConnection::connect_tokio1(
                addr,
                Some(connect_timeout),
                &self.hello,
                Some(params.clone()),
                None,
            )
            .await
            .map_err(ConnectError::Session)?,
            _ => {
                let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| ConnectError::Timeout(connect_timeout))?
                    .map_err(ConnectError::Tcp)?;
                tcp.set_nodelay(true).map_err(ConnectError::NoDelay)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(ConnectError::Session)?
            }
        };
        let secured = match tls {
            Tls::Required(params) => conn.starttls(params.clone(), &self.hello).await,
            Tls::Opportunistic(params) if conn.can_starttls() => {
                conn.starttls(params.clone(), &self.hello).await
            }
            _ => Ok(()),
        };
        secured.map_err(ConnectError::StartTls)?;
        if let Some(credentials) = credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(ConnectError::Auth)?;
        }
        Ok(conn)
    }
}

impl Relay {
    fn new(url: &Url, credentials: Option<&(String, String)>) -> Result<Relay, TransportError> {
        let security = Security::of_scheme(url.scheme()).ok_or_else(|| RouteError::Scheme {
            shown: url.to_string(),
            scheme: url.scheme().to_string(),
        })?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(security.default_port());
        let checked = || {
            TlsParameters::new(host.clone()).map_err(|source| TransportError::Tls {
                host: host.clone(),
                source,
            })
        };
        let tls = match security {
            Security::Opportunistic => opportunistic(&host),
            Security::StartTls => Tls::Required(checked()?),
            Security::Implicit => Tls::Wrapper(checked()?),
        };
        let label = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("relay [{host}]:{port}"),
            _ => format!("relay {host}:{port}"),
        };
        Ok(Relay {
            host,
            port,
            label,
            tls,
            credentials: credentials.map(|(u, p)| Credentials::new(u.clone(), p.clone())),
            idle: Mutex::new(Vec::new()),
            in_use: AtomicUsize::new(0),
        })
    }

    /// The newest idle connection that still answers NOOP; stale ones are
    /// closed on the way.
    async fn reuse(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.lock_idle().pop()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                quit_later(conn, None);
                continue;
            }
            if conn.test_connected().await {
                return Some(conn);
            }
            // The server went away meanwhile: nothing to say QUIT to.
        }
    }

    fn hold(&self) -> Held<'_> {
        self.in_use.fetch_add(1, Ordering::SeqCst);
        Held(self)
    }

    /// Keeps a connection for the next send if its transaction ended cleanly
    /// (lettre breaks off the session after any refusal or I/O error) and
    /// the idle connections and those in use (this one included) stay
    /// within `per_host`: a send takes a slot first and reuses an idle
    /// connection before it opens one, so the bound holds for open sessions
    /// (but for a send that found none idle and is still connecting when
    /// another parks one).
    fn park(&self, conn: AsyncSmtpConnection, held: Held<'_>, per_host: usize) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.lock_idle();
        let room =
            idle.len() < MAX_IDLE && idle.len() + self.in_use.load(Ordering::SeqCst) <= per_host;
        // Released under the idle lock, where every park reads both counts:
        // a connection moving from held to idle is never counted twice, which
        // would make another park find the pool full and close its own.
        drop(held);
        if room {
            idle.push((conn, Instant::now()));
        } else {
            drop(idle);
            quit_later(conn, None);
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// STARTTLS if offered, without checking the certificate (RFC 7435
/// opportunistic security: encryption against eavesdroppers, and no worse
/// than plain text when the peer's certificate is self-signed).
fn opportunistic(host: &str) -> Tls {
    TlsParameters::builder(host.to_string())
        .certificate_store(CertificateStore::None)
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build()
        .map_or(Tls::None, Tls::Opportunistic)
}

/// Closes a connection politely without making anyone wait for it (one
/// lettre broke off already is just dropped); its session slot, if it holds
/// one, is freed once it is closed.
fn quit_later(mut conn: AsyncSmtpConnection, slot: Option<OwnedSemaphorePermit>) {
    if conn.has_broken() {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
        drop(slot);
    });
}

/// One MAIL/RCPT/DATA transaction on an open session.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
    by: AcceptedBy,
    server: &str,
) -> Outcome {
    let info = conn.server_info();
    let ascii = |a: &Address| AsRef::<str>::as_ref(a).is_ascii();
    let addresses_ascii = envelope.to().iter().all(ascii) && envelope.from().is_none_or(ascii);
    if !addresses_ascii && !info.supports_feature(Extension::SmtpUtfEight) {
        return refused(
            553,
            EnhancedStatus::new(5, 6, 7),
            format!("the addresses are not ASCII and {server} does not offer SMTPUTF8"),
        );
    }
    if !message.is_ascii() && !info.supports_feature(Extension::EightBitMime) {
        return refused(
            554,
            EnhancedStatus::new(5, 6, 3),
            format!("the message has 8-bit content and {server} does not offer 8BITMIME"),
        );
    }
    match conn.send(envelope, message).await {
        Ok(response) => {
            let text: Vec<&str> = response.message().collect();
            match ReplyCode::new(u16::from(response.code())) {
                Some(code) => Outcome::Accepted {
                    by,
                    reply: SmtpReply::from_text(code, &text.join(" ")),
                },
                None => Outcome::Temporary {
                    reason: Deferral::Failure(format!(
                        "{server}: not an SMTP reply code: {}",
                        response.code()
                    )),
                },
            }
        }
        Err(e) => refusal(&e, server),
    }
}

/// A refusal the bridge makes itself, worded like a server's.
fn refused(code: u16, enhanced: EnhancedStatus, text: String) -> Outcome {
    Outcome::Permanent {
        reply: SmtpReply::new(code, Some(enhanced), text),
    }
}

/// A failed transaction as an [`Outcome`]: 5xx permanent, everything else
/// (4xx, I/O, TLS, protocol errors) temporary.
fn refusal(e: &SmtpError, server: &str) -> Outcome {
    let Some(code) = e.status().and_then(|code| ReplyCode::new(u16::from(code))) else {
        return Outcome::Temporary {
            reason: Deferral::Failure(format!("{server}: {e}")),
        };
    };
    // lettre keeps the reply text (all lines joined) as the error's source.
    let text = e.source().map(|s| s.to_string()).unwrap_or_default();
    let reply = SmtpReply::from_text(code, &text);
    if e.is_permanent() {
        Outcome::Permanent { reply }
    } else {
        Outcome::Temporary {
            reason: Deferral::Reply(reply),
        }
    }
}

/// The SMTP envelope, or the bridge's own refusal of an address that does
/// not parse.
fn envelope(from: &str, to: &str) -> Result<Envelope, Outcome> {
    let from = match from {
        "" => None,
        from => Some(from.parse::<Address>().map_err(|e| {
            refused(
                501,
                EnhancedStatus::new(5, 5, 4),
                format!("the envelope sender <{from}> is not a mail address: {e}"),
            )
        })?),
    };
    let not_an_address = |why: String| {
        refused(
            553,
            EnhancedStatus::new(5, 1, 3),
            format!("<{to}> is not a mail address: {why}"),
        )
    };
    let to = to
        .parse::<Address>()
        .map_err(|e| not_an_address(e.to_string()))?;
    Envelope::new(from, vec![to]).map_err(|e| not_an_address(e.to_string()))
}

/// The domain part of an address, lower-cased.
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(address, |(_, domain)| domain)
        .to_ascii_lowercase()
}

/// See [`Route::Outbox`] for the layout.
async fn write_outbox(dir: &Path, from: &str, to: &str, message: &[u8]) -> Outcome {
    let dir = dir.to_path_buf();
    let envelope = serde_json::json!({ "from": from, "to": to }).to_string();
    let message = message.to_vec();
    match tokio::task::spawn_blocking(move || write_files(&dir, &envelope, &message)).await {
        Ok(Ok(path)) => Outcome::Written { path },
        Ok(Err(e)) => Outcome::Temporary {
            reason: Deferral::Failure(format!("cannot write to the outbox: {e}")),
        },
        Err(e) => Outcome::Temporary {
            reason: Deferral::Failure(format!("writing to the outbox failed: {e}")),
        },
    }
}

fn write_files(dir: &Path, envelope: &str, message: &[u8]) -> io::Result<PathBuf> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stem = format!(
        "{}.{:09}.{}.{}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let place = |ext: &str, bytes: &[u8]| -> io::Result<PathBuf> {
        let path = dir.join(format!("{stem}.{ext}"));
        let aside = dir.join(format!(".{stem}.{ext}.tmp"));
        let mut file = fs::File::create(&aside)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&aside, &path)?;
        Ok(path)
    };
    place("envelope", envelope.as_bytes())?;
    place("eml", message)
}

fn client_id(name: &str) -> Result<ClientId, TransportError> {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ClientId::Ipv4(ip)),
        Ok(IpAddr::V6(ip)) => Ok(ClientId::Ipv6(ip)),
        Err(_) => {
            let label = |l: &str| {
                (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if name.len() <= 253 && name.split('.').all(label) {
                Ok(ClientId::Domain(name.to_string()))
            } else {
                Err(TransportError::HeloName(name.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge shares one Transport between tasks and spawns its sends.
    #[allow(dead_code)]
    fn shareable(t: &Transport) -> impl std::future::Future<Output = Outcome> + Send + '_ {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Transport>();
        t.send("", "a@x.test", b"")
    }

    #[test]
    fn relay_defaults() {
        let r = |u: &str| Relay::new(&Url::parse(u).unwrap(), None).unwrap();
        let plain = r("smtp://mail.example.com");
        assert_eq!(
            (plain.port, plain.label.as_str()),
            (25, "relay mail.example.com:25")
        );
        assert!(matches!(plain.tls, Tls::Opportunistic(_)));
        let submission = r("smtp+starttls://mail.example.com");
        assert_eq!(submission.port, 587);
        assert!(matches!(submission.tls, Tls::Required(_)));
        let smtps = r("smtps://[::1]");
        assert_eq!((smtps.port, smtps.host.as_str()), (465, "::1"));
        assert_eq!(smtps.label, "relay [::1]:465");
        assert!(matches!(smtps.tls, Tls::Wrapper(_)));
    }

    #[test]
    fn addresses_the_bridge_refuses_itself() {
        assert!(envelope("", "a@x.test").is_ok());
        assert!(envelope("bridge@x.test", "a@x.test").is_ok());
        let Err(Outcome::Permanent { reply }) = envelope("b@x.test", "not an address") else {
            panic!()
        };
        let reply = reply.to_string();
        assert!(reply.starts_with("553 5.1.3 <not an address>"), "{reply}");
        let Err(Outcome::Permanent { reply }) = envelope("bogus", "a@x.test") else {
            panic!()
        };
        assert!(reply.to_string().starts_with("501 5.5.4 "), "{reply}");
    }

    #[test]
    fn helo_names_and_helpers() {
        assert_eq!(
            client_id("bridge.example.com").ok(),
            Some(ClientId::Domain("bridge.example.com".into()))
        );
        assert_eq!(
            client_id("192.0.2.1").ok(),
            Some(ClientId::Ipv4("192.0.2.1".parse().unwrap()))
        );
        assert!(matches!(client_id("::1"), Ok(ClientId::Ipv6(_))));
        assert!(client_id("bad name").is_err());
        assert!(client_id("").is_err());
        assert!(client_id("a..b").is_err());
        assert_eq!(domain_of("Alice@Example.COM"), "example.com");
    }

    #[test]
    fn outbox_files_are_whole_and_keep_the_envelope() {
        let dir = std::env::temp_dir().join(format!("mail-outbox-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = write_files(
            &dir,
            r#"{"from":"f","to":"t"}"#,
            b"Subject: x\r\n\r\nbody\r\n",
        )
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(path.extension().unwrap(), "eml");
        let envelope = path.with_extension("envelope");
        assert_eq!(
            fs::read_to_string(envelope).unwrap(),
            r#"{"from":"f","to":"t"}"#
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "nothing left aside: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
