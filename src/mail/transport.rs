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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::Error as SmtpError;
use lettre::Address;
use tokio::net::TcpStream;
use url::Url;

use crate::discovery::DnsResolver;

/// Idle relay connections kept for reuse.
const MAX_IDLE: usize = 10;
/// An idle relay connection older than this is closed rather than reused
/// (well inside the 5 minutes RFC 5321 4.5.3.2.7 lets a server wait).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a background QUIT may take before the connection is just closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How outbound mail leaves the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A relay/submission server. `url` is `scheme://host[:port]` without
    /// credentials: `smtp://` (port 25; STARTTLS when offered, certificate not
    /// checked: protects against eavesdropping only), `smtp+starttls://`
    /// (port 587; STARTTLS required, certificate checked against the
    /// webpki roots) or `smtps://` (port 465; implicit TLS, checked likewise).
    /// Credentials need one of the TLS schemes.
    Relay {
        url: Url,
        credentials: Option<(String, String)>,
    },
    /// Straight to the recipient domain's MX (RFC 5321 5.1: MX by preference,
    /// the domain's own address when it has no MX), port 25 unless
    /// [`Transport::with_direct_port`] says otherwise, opportunistic STARTTLS
    /// (certificate not checked, as MTAs do between themselves).
    Direct,
    /// No mail server configured: each message is written to
    /// `<dir>/<stem>.eml`, byte for byte, next to `<dir>/<stem>.envelope`
    /// holding `{"from": "...", "to": "..."}` (the SMTP envelope, which the
    /// headers do not carry), so a fresh install works without SMTP and an
    /// admin can still send what piled up. The envelope is written first and
    /// each file appears whole (written aside, then renamed); `<stem>` is
    /// `<unix seconds>.<nanoseconds>.<pid>.<sequence>`.
    Outbox { dir: PathBuf },
}

impl Route {
    /// `None` (no relay configured) writes to `outbox`; `"direct"` delivers to
    /// MX hosts; anything else must be a relay URL. Credentials in the URL
    /// (`smtps://user:pass@host`, percent-encoded) are moved to
    /// `credentials`. The error says why, without repeating a password.
    pub fn parse(value: Option<&str>, outbox: &Path) -> Result<Route, String> {
        let Some(value) = value else {
            return Ok(Route::Outbox {
                dir: outbox.to_path_buf(),
            });
        };
        let value = value.trim();
        if value.eq_ignore_ascii_case("direct") {
            return Ok(Route::Direct);
        }
        let shown = redact(value);
        let mut url = Url::parse(value).map_err(|e| {
            format!(
                "'{shown}' is neither \"direct\" nor an smtp://, smtp+starttls:// or smtps:// URL: {e}"
            )
        })?;
        if security(url.scheme()).is_none() {
            return Err(format!(
                "'{shown}': the scheme must be smtp, smtp+starttls or smtps, not {}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("'{shown}' names no host"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "'{shown}': a relay is scheme://host[:port], without path, query or fragment \
                 (the EHLO name is configured on its own)"
            ));
        }
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(format!("'{shown}' has a password but no user name")),
            (_, None) => return Err(format!("'{shown}' has a user name but no password")),
            (user, Some(password)) => {
                let (user, password) = (percent_decode(user)?, percent_decode(password)?);
                url.set_username("")
                    .and_then(|()| url.set_password(None))
                    .map_err(|()| format!("'{shown}': cannot take the credentials out"))?;
                Some((user, password))
            }
        };
        let route = Route::Relay { url, credentials };
        check_relay(&route)?;
        Ok(route)
    }
}

/// The outcome of one message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 250 after DATA.
    Accepted { by: AcceptedBy, reply: String },
    /// Outbox: the `.eml` file written.
    Written { path: PathBuf },
    /// 4xx at any step, connection failure, TLS failure, timeout: keep and
    /// retry. `reply` is the server's reply (`451 4.3.0 ...`) or what went
    /// wrong (`relay 127.0.0.1:25: cannot connect: ...`). A refusal while
    /// setting up the session (greeting, EHLO, STARTTLS, AUTH) is temporary
    /// too, whatever its code: it is about the bridge's set-up, not this
    /// recipient, and the message is kept until the admin mends it.
    Temporary { reply: String },
    /// 5xx to MAIL, RCPT or DATA: give up for this recipient. `enhanced` is
    /// the RFC 3463 code at the start of the reply text, `reply` the whole
    /// reply (`550 5.1.1 No such user here`), to quote to the sender.
    /// Refusals the bridge makes itself use the same form: an address that
    /// does not parse (553 5.1.3, or 501 5.5.4 for the envelope sender), a
    /// domain with neither MX nor address (550 5.1.2), a null MX (556
    /// 5.1.10), 8-bit content or a non-ASCII address for a server without
    /// 8BITMIME (554 5.6.3) or SMTPUTF8 (553 5.6.7).
    Permanent {
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        reply: String,
    },
}

/// Who said 250.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptedBy {
    Relay,
    Mx,
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
    ) -> Result<Transport, String> {
        if timeout.is_zero() {
            return Err("the SMTP timeout must be more than zero".into());
        }
        let hello = match helo_name {
            None => ClientId::default(),
            Some(name) => client_id(&name)?,
        };
        check_relay(&route)?;
        let relay = match &route {
            Route::Relay { url, credentials } => Some(Relay::new(url, credentials.as_ref())?),
            Route::Direct => None,
            Route::Outbox { dir } => {
                fs::create_dir_all(dir).map_err(|e| {
                    format!("cannot create the outbox folder {}: {e}", dir.display())
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
        })
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
                reply: format!(
                    "{}: no result within {} s",
                    match &self.relay {
                        Some(relay) => relay.label.clone(),
                        None => format!("the mail servers of {}", domain_of(recipient)),
                    },
                    self.timeout.as_secs_f64()
                ),
            },
        }
    }

    async fn via_relay(&self, relay: &Relay, envelope: &Envelope, message: &[u8]) -> Outcome {
        let mut conn = match relay.reuse().await {
            Some(conn) => conn,
            None => match self.connect_relay(relay).await {
                Ok(conn) => conn,
                Err(reply) => return Outcome::Temporary { reply },
            },
        };
        let outcome = transaction(
            &mut conn,
            envelope,
            message,
            AcceptedBy::Relay,
            &relay.label,
        )
        .await;
        relay.park(conn);
        outcome
    }

    /// A new session with the relay, trying each of its addresses.
    async fn connect_relay(&self, relay: &Relay) -> Result<AsyncSmtpConnection, String> {
        let ips = self
            .resolver
            .ips(&relay.host)
            .await
            .map_err(|e| format!("{}: {e}", relay.label))?;
        if ips.is_empty() {
            return Err(format!(
                "{}: {} has no address record",
                relay.label, relay.host
            ));
        }
        let mut failures = Vec::new();
        let several = ips.len() > 1;
        for ip in ips {
            let addr = SocketAddr::new(ip, relay.port);
            match self
                .open(addr, &relay.tls, relay.credentials.as_ref())
                .await
            {
                Ok(conn) => return Ok(conn),
                Err(e) if several => failures.push(format!("{addr}: {e}")),
                Err(e) => failures.push(e),
            }
        }
        Err(format!("{}: {}", relay.label, failures.join("; ")))
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
        let (mut any_address, mut dns_failed) = (false, false);
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
                match self.open(addr, &opportunistic(host), None).await {
                    Ok(mut conn) => {
                        let label = format!("{host} ({addr})");
                        let outcome =
                            transaction(&mut conn, envelope, message, AcceptedBy::Mx, &label).await;
                        quit_later(conn);
                        return outcome;
                    }
                    Err(e) => failures.push(format!("{host} ({addr}): {e}")),
                }
            }
        }
        if implicit && !any_address && !dns_failed {
            return Outcome::Permanent {
                code: 550,
                enhanced: Some((5, 1, 2)),
                reply: format!("550 5.1.2 {domain} has no MX and no address record"),
            };
        }
        Outcome::Temporary {
            reply: format!(
                "no mail server of {domain} took the message: {}",
                failures.join("; ")
            ),
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
                reply: e.to_string(),
            })?;
        if let [(_, host)] = mx.as_slice() {
            if host == "." {
                return Err(Outcome::Permanent {
                    code: 556,
                    enhanced: Some((5, 1, 10)),
                    reply: format!("556 5.1.10 {domain} accepts no mail (null MX)"),
                });
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
    ) -> Result<AsyncSmtpConnection, String> {
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
            .map_err(|e| e.to_string())?,
            _ => {
                let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| {
                        format!(
                            "cannot connect: no answer within {} s",
                            connect_timeout.as_secs_f64()
                        )
                    })?
                    .map_err(|e| format!("cannot connect: {e}"))?;
                tcp.set_nodelay(true)
                    .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        let secured = match tls {
            Tls::Required(params) => conn.starttls(params.clone(), &self.hello).await,
            Tls::Opportunistic(params) if conn.can_starttls() => {
                conn.starttls(params.clone(), &self.hello).await
            }
            _ => Ok(()),
        };
        secured.map_err(|e| format!("STARTTLS: {e}"))?;
        if let Some(credentials) = credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(|e| format!("AUTH: {e}"))?;
        }
        Ok(conn)
    }
}

impl Relay {
    fn new(url: &Url, credentials: Option<&(String, String)>) -> Result<Relay, String> {
        let (security, default_port) =
            security(url.scheme()).ok_or_else(|| format!("{url}: not an SMTP URL"))?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(default_port);
        let checked = || {
            TlsParameters::new(host.clone())
                .map_err(|e| format!("relay {host}: cannot set up TLS: {e}"))
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
        })
    }

    /// The newest idle connection that still answers NOOP; stale ones are
    /// closed on the way.
    async fn reuse(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.lock_idle().pop()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                quit_later(conn);
                continue;
            }
            if conn.test_connected().await {
                return Some(conn);
            }
            // The server went away meanwhile: nothing to say QUIT to.
        }
    }

    /// Keeps a connection for the next send if its transaction ended cleanly
    /// (lettre breaks off the session after any refusal or I/O error).
    fn park(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        } else {
            drop(idle);
            quit_later(conn);
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// STARTTLS when offered, certificate not checked.
    Opportunistic,
    /// STARTTLS required, certificate checked.
    StartTls,
    /// TLS from the first byte, certificate checked.
    Implicit,
}

/// The security and default port of a relay URL scheme.
fn security(scheme: &str) -> Option<(Security, u16)> {
    match scheme {
        "smtp" => Some((Security::Opportunistic, 25)),
        "smtp+starttls" => Some((Security::StartTls, 587)),
        "smtps" => Some((Security::Implicit, 465)),
        _ => None,
    }
}

/// Credentials only over a session TLS protects for sure.
fn check_relay(route: &Route) -> Result<(), String> {
    if let Route::Relay {
        url,
        credentials: Some(_),
    } = route
    {
        if security(url.scheme()).is_some_and(|(s, _)| s == Security::Opportunistic) {
            return Err(format!(
                "relay {}: credentials need smtp+starttls:// or smtps://; over smtp:// \
                 they could be sent unencrypted or to an impostor",
                url.host_str().unwrap_or_default()
            ));
        }
    }
    Ok(())
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
/// lettre broke off already is just dropped).
fn quit_later(mut conn: AsyncSmtpConnection) {
    if conn.has_broken() {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
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
        return Outcome::Permanent {
            code: 553,
            enhanced: Some((5, 6, 7)),
            reply: format!(
                "553 5.6.7 the addresses are not ASCII and {server} does not offer SMTPUTF8"
            ),
        };
    }
    if !message.is_ascii() && !info.supports_feature(Extension::EightBitMime) {
        return Outcome::Permanent {
            code: 554,
            enhanced: Some((5, 6, 3)),
            reply: format!(
                "554 5.6.3 the message has 8-bit content and {server} does not offer 8BITMIME"
            ),
        };
    }
    match conn.send(envelope, message).await {
        Ok(response) => Outcome::Accepted {
            by,
            reply: reply_text(&response),
        },
        Err(e) => refusal(&e, server),
    }
}

/// A failed transaction as an [`Outcome`]: 5xx permanent, everything else
/// (4xx, I/O, TLS, protocol errors) temporary.
fn refusal(e: &SmtpError, server: &str) -> Outcome {
    let Some(code) = e.status() else {
        return Outcome::Temporary {
            reply: format!("{server}: {e}"),
        };
    };
    // lettre keeps the reply text (all lines joined) as the error's source.
    let text = e.source().map(|s| s.to_string()).unwrap_or_default();
    let reply = format!("{} {text}", u16::from(code)).trim_end().to_string();
    match parse_reply(&reply) {
        Some((code, enhanced)) if e.is_permanent() => Outcome::Permanent {
            code,
            enhanced,
            reply,
        },
        _ => Outcome::Temporary { reply },
    }
}

fn reply_text(response: &Response) -> String {
    let text: Vec<&str> = response.message().collect();
    format!("{} {}", u16::from(response.code()), text.join(" "))
        .trim_end()
        .to_string()
}

/// class.subject.detail, as in `Outcome::Permanent`.
type Enhanced = (u8, u16, u16);

/// The basic code and the RFC 3463 enhanced status code of a reply such as
/// `550 5.1.1 No such user` or `550-5.1.1 No such user`. The enhanced code
/// counts only when its class agrees with the basic code (RFC 2034 4).
fn parse_reply(reply: &str) -> Option<(u16, Option<Enhanced>)> {
    let digits = reply
        .get(..3)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?;
    let code: u16 = digits.parse().ok().filter(|c| (200..=599).contains(c))?;
    let rest = &reply[3..];
    if !(rest.is_empty() || rest.starts_with([' ', '-'])) {
        return None;
    }
    let number = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let enhanced = rest
        .get(1..)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|word| {
            let mut parts = word.split('.');
            let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
            let ok = parts.next().is_none()
                && class.len() == 1
                && class.parse::<u16>().ok()? == code / 100
                && matches!(class, "2" | "4" | "5")
                && number(subject)
                && number(detail);
            ok.then(|| {
                Some((
                    class.parse().ok()?,
                    subject.parse().ok()?,
                    detail.parse().ok()?,
                ))
            })
            .flatten()
        });
    Some((code, enhanced))
}

/// The SMTP envelope, or the bridge's own refusal of an address that does
/// not parse.
fn envelope(from: &str, to: &str) -> Result<Envelope, Outcome> {
    let from = match from {
        "" => None,
        from => Some(from.parse::<Address>().map_err(|e| Outcome::Permanent {
            code: 501,
            enhanced: Some((5, 5, 4)),
            reply: format!("501 5.5.4 the envelope sender <{from}> is not a mail address: {e}"),
        })?),
    };
    let refused = |why: String| Outcome::Permanent {
        code: 553,
        enhanced: Some((5, 1, 3)),
        reply: format!("553 5.1.3 <{to}> is not a mail address: {why}"),
    };
    let to = to.parse::<Address>().map_err(|e| refused(e.to_string()))?;
    Envelope::new(from, vec![to]).map_err(|e| refused(e.to_string()))
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
            reply: format!("cannot write to the outbox: {e}"),
        },
        Err(e) => Outcome::Temporary {
            reply: format!("writing to the outbox failed: {e}"),
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

fn client_id(name: &str) -> Result<ClientId, String> {
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
                Err(format!(
                    "'{name}' is not a host name or IP address to give in EHLO"
                ))
            }
        }
    }
}

/// `%XX` escapes of URL user info -> text.
fn percent_decode(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next(), bytes.next()];
            let value = match hex {
                [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok()),
                _ => None,
            };
            out.push(value.ok_or("a bad %-escape in the relay URL's user info")?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| "the relay URL's user info is not UTF-8 once decoded".into())
}

/// The URL with any user info hidden, for messages.
fn redact(value: &str) -> String {
    match value.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => value.to_string(),
            }
        }
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(value: &str) -> Result<Route, String> {
        Route::parse(Some(value), Path::new("/o"))
    }

    /// The bridge shares one Transport between tasks and spawns its sends.
    #[allow(dead_code)]
    fn shareable(t: &Transport) -> impl std::future::Future<Output = Outcome> + Send + '_ {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Transport>();
        t.send("", "a@x.test", b"")
    }

    #[test]
    fn route_parse() {
        assert_eq!(
            Route::parse(None, Path::new("/var/outbox")),
            Ok(Route::Outbox {
                dir: PathBuf::from("/var/outbox")
            })
        );
        assert_eq!(relay("direct"), Ok(Route::Direct));
        assert_eq!(relay(" Direct "), Ok(Route::Direct));
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com",
            "smtp://mail.example.com/",
            "smtp+starttls://mail.example.com:587",
            "smtps://[::1]:465",
        ] {
            let Ok(Route::Relay { url, credentials }) = relay(ok) else {
                panic!("{ok}: {:?}", relay(ok));
            };
            assert_eq!(credentials, None);
            assert!(url.as_str().starts_with(url.scheme()), "{url}");
        }
        let Ok(Route::Relay { url, credentials }) =
            relay("smtps://bridge%40x:p%3Ass%20w@smtp.x.test:465")
        else {
            panic!()
        };
        assert_eq!(
            credentials,
            Some(("bridge@x".to_string(), "p:ss w".to_string()))
        );
        assert_eq!(
            url.as_str(),
            "smtps://smtp.x.test:465",
            "credentials out of the URL"
        );
        assert!(relay("smtp+starttls://u:p@h").is_ok());

        for (bad, why) in [
            ("", "neither"),
            ("mail.example.com", "neither"),
            ("http://mail.example.com", "scheme must be"),
            ("smtp://", "names no host"),
            ("smtp://h:25/ehlo.name", "without path"),
            ("smtp://h?tls=required", "without path"),
            ("smtp://u:secret@h", "credentials need"),
            ("smtps://u@h", "no password"),
            ("smtps://:secret@h", "no user name"),
            ("smtps://u:%zz@h", "%-escape"),
            ("smtp://h:99999", "neither"),
        ] {
            let e = relay(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "password repeated: {e}");
        }
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
    fn replies_and_enhanced_codes() {
        assert_eq!(
            parse_reply("550 5.1.1 No such user here"),
            Some((550, Some((5, 1, 1))))
        );
        assert_eq!(
            parse_reply("550-5.1.1 first line"),
            Some((550, Some((5, 1, 1))))
        );
        assert_eq!(
            parse_reply("452 4.3.1 Insufficient"),
            Some((452, Some((4, 3, 1))))
        );
        assert_eq!(
            parse_reply("250 2.0.0 Ok: queued"),
            Some((250, Some((2, 0, 0))))
        );
        assert_eq!(
            parse_reply("556 5.1.10 null MX"),
            Some((556, Some((5, 1, 10))))
        );
        assert_eq!(
            parse_reply("554 5.123.999 x"),
            Some((554, Some((5, 123, 999))))
        );
        assert_eq!(parse_reply("550 Mailbox unavailable"), Some((550, None)));
        assert_eq!(parse_reply("550"), Some((550, None)));
        assert_eq!(parse_reply("550 4.1.1 class disagrees"), Some((550, None)));
        assert_eq!(parse_reply("550 5.1 too short"), Some((550, None)));
        assert_eq!(parse_reply("550 5.1.1.1 too long"), Some((550, None)));
        assert_eq!(parse_reply("550 5.1234.1 part too long"), Some((550, None)));
        assert_eq!(parse_reply("550 3.1.1 bad class"), Some((550, None)));
        assert_eq!(parse_reply("5501 x"), None);
        assert_eq!(parse_reply("abc"), None);
        assert_eq!(parse_reply("150 x"), None);
    }

    #[test]
    fn addresses_the_bridge_refuses_itself() {
        assert!(envelope("", "a@x.test").is_ok());
        assert!(envelope("bridge@x.test", "a@x.test").is_ok());
        let Err(Outcome::Permanent {
            code,
            enhanced,
            reply,
        }) = envelope("b@x.test", "not an address")
        else {
            panic!()
        };
        assert_eq!((code, enhanced), (553, Some((5, 1, 3))));
        assert!(reply.starts_with("553 5.1.3 <not an address>"), "{reply}");
        let Err(Outcome::Permanent { code, enhanced, .. }) = envelope("bogus", "a@x.test") else {
            panic!()
        };
        assert_eq!((code, enhanced), (501, Some((5, 5, 4))));
    }

    #[test]
    fn helo_names_and_helpers() {
        assert_eq!(
            client_id("bridge.example.com"),
            Ok(ClientId::Domain("bridge.example.com".into()))
        );
        assert_eq!(
            client_id("192.0.2.1"),
            Ok(ClientId::Ipv4("192.0.2.1".parse().unwrap()))
        );
        assert!(matches!(client_id("::1"), Ok(ClientId::Ipv6(_))));
        assert!(client_id("bad name").is_err());
        assert!(client_id("").is_err());
        assert!(client_id("a..b").is_err());
        assert_eq!(domain_of("Alice@Example.COM"), "example.com");
        assert_eq!(redact("smtps://u:secret@h:465/x"), "smtps://***@h:465/x");
        assert_eq!(redact("smtp://h@x/a@b"), "smtp://***@x/a@b");
        assert_eq!(redact("smtp://h"), "smtp://h");
        assert_eq!(percent_decode("a%2Fb%c3%a9"), Ok("a/bé".to_string()));
        assert!(percent_decode("%4").is_err());
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
