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

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

/// The tracing target of everything the listener logs.
const TARGET: &str = "ischedule::mail";
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Longest reverse-path or forward-path, brackets excluded (RFC 5321 4.5.3.1.3).
const MAX_PATH: usize = 256;
/// Reply lines are cut to this many octets before CRLF (RFC 5321 4.5.3.1.5: 512 with CRLF).
const MAX_REPLY_LINE: usize = 510;
/// How long closing a connection (TLS close_notify, FIN) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
}

impl Default for Limits {
    /// 10 MiB, 100 recipients, 1000-octet lines, 5 min per command,
    /// 10 min for the data, 10 errors.
    fn default() -> Self {
        Limits {
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 100,
            max_line_bytes: 1000,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            max_errors: 10,
        }
    }
}

/// One SMTP/LMTP reply: `250 2.0.0 text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The basic reply code (RFC 5321 4.2).
    pub code: u16,
    /// The enhanced status code `class.subject.detail` (RFC 3463).
    pub enhanced: Option<(u8, u16, u16)>,
    /// One line of text; control characters are sent as spaces.
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<(u8, u16, u16)>, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// 2xx: the recipient took the message.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Neither 2xx nor 4xx (5xx, or a code that makes no sense after DATA):
    /// do not try again.
    pub fn is_permanent(&self) -> bool {
        !self.is_positive() && !self.is_transient()
    }
}

impl fmt::Display for Reply {
    /// `250 2.0.0 text` (`250 text` without an enhanced code); control
    /// characters in the text become spaces, so a reply is always one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.code)?;
        if let Some((class, subject, detail)) = self.enhanced {
            write!(f, " {class}.{subject}.{detail}")?;
        }
        if !self.text.is_empty() {
            f.write_str(" ")?;
            for c in self.text.chars() {
                let c = if c.is_control() { ' ' } else { c };
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
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
    async fn accept_recipient(&self, envelope: &Envelope, recipient: &str) -> Result<(), Reply>;
    /// The message after DATA: exactly one reply per envelope recipient, in
    /// order (a missing one counts as 451 4.3.0, extra ones are ignored).
    /// The listener does not bound how long this takes: do it here.
    async fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Vec<Reply>;
    /// SMTP only, mixed outcome: the message was accepted (250) for some
    /// recipients; report the failed ones to the envelope sender (a DSN, see
    /// [`super::dsn::build`]). Never called for the null sender. The 250 is
    /// sent after this returns.
    async fn report_failures(
        &self,
        envelope: &Envelope,
        message: &[u8],
        failed: &[(String, Reply)],
    );
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
    /// most `max_connections` at once (extra connections get "421 4.7.0 too
    /// many connections" and are closed).
    ///
    /// On shutdown it stops accepting, sends sessions that wait for a command
    /// "421 4.3.2" and waits for those in a transaction's DATA or delivery to
    /// finish it (bounded by `data_timeout` plus the delivery) before
    /// returning. Dropping the future instead aborts every session at once.
    pub async fn serve(
        &self,
        listener: TcpListener,
        max_connections: usize,
        shutdown: impl Future<Output = ()>,
    ) {
        let permits = Arc::new(Semaphore::new(max_connections));
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
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        warn!(target: TARGET, %protocol, %client, max_connections, "too many connections, refused");
                        // A fresh socket's send buffer is empty: this does not block.
                        let _ = tcp.try_write(b"421 4.7.0 too many connections\r\n");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let session = Session::new(self.inner.clone(), tcp, client, stop_rx.clone());
                    sessions.spawn(async move {
                        session.run().await;
                        drop(permit);
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

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        error!(target: TARGET, error = %e, "mail session task failed");
    }
}

/// Resolves once the listener shuts down (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// The connection, plain or after STARTTLS.
enum Io<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// During a TLS handshake, and after a failed one.
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read_buf(buf).await,
            Io::Tls(s) => s.read_buf(buf).await,
            Io::Closed => Ok(0),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Io::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Io::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Io::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.shutdown().await,
            Io::Tls(s) => s.shutdown().await,
            Io::Closed => Ok(()),
        }
    }
}

/// What reading a line gave.
enum Input {
    /// A line without its CRLF / LF; `crlf` tells which it had.
    Line {
        line: BytesMut,
        crlf: bool,
    },
    /// A line over the limit (read to its end and dropped).
    TooLong {
        crlf: bool,
    },
    Eof,
    Timeout,
    /// The listener is shutting down.
    Stop,
}

/// What a session does after a command.
enum Flow {
    Continue,
    Close,
}

/// The outcome of reading the message after 354.
enum Data {
    Complete(Vec<u8>),
    TooBig,
    LineTooLong,
    Timeout,
    Eof,
}

struct Transaction {
    mail_from: String,
    recipients: Vec<String>,
}

struct Session<S> {
    inner: Arc<Inner>,
    io: Io<S>,
    rbuf: BytesMut,
    /// Replies not sent yet: flushed when the session needs more input, so
    /// pipelined commands get their replies in one write (RFC 2920).
    wbuf: Vec<u8>,
    client: SocketAddr,
    stop: watch::Receiver<bool>,
    helo: Option<String>,
    /// EHLO/LHLO (not HELO): ESMTP parameters are allowed.
    esmtp: bool,
    tls: bool,
    authenticated_as: Option<String>,
    transaction: Option<Transaction>,
    errors: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn new(inner: Arc<Inner>, stream: S, client: SocketAddr, stop: watch::Receiver<bool>) -> Self {
        Session {
            inner,
            io: Io::Plain(stream),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            client,
            stop,
            helo: None,
            esmtp: false,
            tls: false,
            authenticated_as: None,
            transaction: None,
            errors: 0,
        }
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    async fn run(mut self) {
        let protocol = self.inner.protocol;
        debug!(target: TARGET, %protocol, client = %self.client, "connection opened");
        let kind = match protocol {
            Protocol::Smtp => "ESMTP",
            Protocol::Lmtp => "LMTP",
        };
        let greeting = format!("220 {} {kind} ischedule-bridge ready", self.inner.hostname);
        self.raw_line(&greeting);
        loop {
            let deadline = Instant::now() + self.limits().command_timeout;
            let flow = match self.read_line(deadline, true).await {
                Ok(Input::Line { line, .. }) => self.command(&line).await,
                Ok(Input::TooLong { .. }) => Ok(self.bad(500, (5, 5, 2), "line too long")),
                Ok(Input::Eof) => Ok(Flow::Close),
                Ok(Input::Timeout) => Ok(self.timed_out("idle timeout")),
                Ok(Input::Stop) => Ok(self.shutting_down()),
                Err(e) => Err(e),
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => break,
                Err(e) => {
                    debug!(target: TARGET, %protocol, client = %self.client, error = %e, "connection failed");
                    break;
                }
            }
        }
        let _ = self.flush().await;
        let _ = timeout(CLOSE_TIMEOUT, self.io.shutdown()).await;
        debug!(target: TARGET, %protocol, client = %self.client, "connection closed");
    }

    // ---- output ----------------------------------------------------------

    fn raw_line(&mut self, line: &str) {
        let mut end = line.len().min(MAX_REPLY_LINE);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        self.wbuf.extend_from_slice(&line.as_bytes()[..end]);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    fn reply(&mut self, reply: &Reply) {
        self.raw_line(&reply.to_string());
    }

    fn send(&mut self, code: u16, enhanced: (u8, u16, u16), text: &str) {
        self.reply(&Reply::new(code, Some(enhanced), text));
    }

    /// Replies to a bad command and counts it; closes after too many.
    fn bad(&mut self, code: u16, enhanced: (u8, u16, u16), text: &str) -> Flow {
        self.send(code, enhanced, text);
        self.errors += 1;
        if self.errors >= self.limits().max_errors.max(1) {
            warn!(target: TARGET, protocol = %self.inner.protocol, client = %self.client, errors = self.errors, "too many errors, closing");
            let text = format!("{} too many errors", self.inner.hostname);
            self.send(421, (4, 7, 0), &text);
            return Flow::Close;
        }
        Flow::Continue
    }

    fn timed_out(&mut self, what: &str) -> Flow {
        debug!(target: TARGET, protocol = %self.inner.protocol, client = %self.client, what, "timeout");
        let text = format!("{} {what}, closing connection", self.inner.hostname);
        self.send(421, (4, 4, 2), &text);
        Flow::Close
    }

    fn shutting_down(&mut self) -> Flow {
        let text = format!("{} shutting down", self.inner.hostname);
        self.send(421, (4, 3, 2), &text);
        Flow::Close
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match timeout(self.limits().command_timeout, self.io.write_all(&self.wbuf)).await {
            Ok(written) => written?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
        self.wbuf.clear();
        Ok(())
    }

    // ---- input -----------------------------------------------------------

    /// The next line, at most `max_line_bytes` with its line end. Flushes
    /// pending replies before it waits for the client. `interruptible`: give
    /// up with [`Input::Stop`] when the listener shuts down.
    async fn read_line(&mut self, deadline: Instant, interruptible: bool) -> io::Result<Input> {
        let max = self.limits().max_line_bytes.max(3);
        let mut discarding = false;
        loop {
            if let Some(lf) = self.rbuf.iter().position(|&b| b == b'\n') {
                let mut line = self.rbuf.split_to(lf + 1);
                line.truncate(lf);
                let crlf = line.last() == Some(&b'\r');
                if crlf {
                    line.truncate(lf - 1);
                }
                if discarding || line.len() + 2 > max {
                    return Ok(Input::TooLong { crlf });
                }
                return Ok(Input::Line { line, crlf });
            }
            if self.rbuf.len() >= max {
                // Too long whatever follows: drop it and look for the line end.
                discarding = true;
                self.rbuf.clear();
            }
            self.flush().await?;
            self.rbuf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                () = stopped(&mut self.stop), if interruptible => return Ok(Input::Stop),
                read = timeout_at(deadline, self.io.read_buf(&mut self.rbuf)) => match read {
                    Err(_) => return Ok(Input::Timeout),
                    Ok(Ok(0)) => return Ok(Input::Eof),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                },
            }
        }
    }

    /// Reads the message after 354 up to `<CRLF>.<CRLF>`: dot-unstuffed,
    /// line ends as CRLF; over the size or line limit it reads on to the end
    /// and keeps nothing.
    async fn read_data(&mut self) -> io::Result<Data> {
        let deadline = Instant::now() + self.limits().data_timeout;
        let max = self.limits().max_message_bytes;
        let mut message = Vec::new();
        let (mut too_big, mut too_long) = (false, false);
        // The DATA command line counts as the CRLF before a leading ".".
        let mut after_crlf = true;
        loop {
            match self.read_line(deadline, false).await? {
                Input::Line { line, crlf } => {
                    if crlf && after_crlf && line[..] == b"."[..] {
                        break;
                    }
                    after_crlf = crlf;
                    if too_big || too_long {
                        continue;
                    }
                    let text = match line.strip_prefix(b".") {
                        Some(rest) if !rest.is_empty() => rest,
                        _ => &line[..],
                    };
                    if message.len() + text.len() + 2 > max {
                        too_big = true;
                        message = Vec::new();
                        continue;
                    }
                    message.extend_from_slice(text);
                    message.extend_from_slice(b"\r\n");
                }
                Input::TooLong { crlf } => {
                    after_crlf = crlf;
                    too_long = true;
                    message = Vec::new();
                }
                Input::Eof => return Ok(Data::Eof),
                Input::Timeout => return Ok(Data::Timeout),
                Input::Stop => unreachable!("DATA is not interruptible"),
            }
        }
        Ok(if too_long {
            Data::LineTooLong
        } else if too_big {
            Data::TooBig
        } else {
            Data::Complete(message)
        })
    }

    // ---- commands --------------------------------------------------------

    async fn command(&mut self, line: &[u8]) -> io::Result<Flow> {
        let Ok(line) = std::str::from_utf8(line) else {
            return Ok(self.bad(500, (5, 5, 2), "syntax error: not UTF-8"));
        };
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Ok(self.bad(500, (5, 5, 2), "syntax error: control character"));
        }
        let (verb, args) = match line.split_once(' ') {
            Some((verb, args)) => (verb, args.trim()),
            None => (line.trim_end(), ""),
        };
        let verb = verb.to_ascii_uppercase();
        let smtp = self.inner.protocol == Protocol::Smtp;
        match verb.as_str() {
            "EHLO" if smtp => Ok(self.ehlo(args, true)),
            "HELO" if smtp => Ok(self.ehlo(args, false)),
            "LHLO" if !smtp => Ok(self.ehlo(args, true)),
            "STARTTLS" if smtp => self.starttls(args).await,
            "AUTH" if smtp => self.auth(args).await,
            "MAIL" => Ok(self.mail(args)),
            "RCPT" => Ok(self.rcpt(args).await),
            "DATA" => self.data(args).await,
            "RSET" => {
                if !args.is_empty() {
                    return Ok(self.bad(501, (5, 5, 4), "syntax: RSET"));
                }
                self.transaction = None;
                self.send(250, (2, 0, 0), "reset");
                Ok(Flow::Continue)
            }
            "NOOP" => {
                self.send(250, (2, 0, 0), "OK");
                Ok(Flow::Continue)
            }
            "QUIT" => {
                let text = format!("{} closing connection", self.inner.hostname);
                self.send(221, (2, 0, 0), &text);
                Ok(Flow::Close)
            }
            "VRFY" => {
                self.send(
                    252,
                    (2, 5, 0),
                    "cannot VRFY user, but will accept message and attempt delivery",
                );
                Ok(Flow::Continue)
            }
            "HELP" => {
                let commands = if smtp {
                    "EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
                } else {
                    "LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
                };
                self.send(214, (2, 0, 0), &format!("commands: {commands}"));
                Ok(Flow::Continue)
            }
            "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" | "OPTIONS" if !args.is_empty() => {
                // A browser or proxy talking HTTP: stop before its lines are
                // taken for commands (cross-protocol attacks).
                warn!(target: TARGET, protocol = %self.inner.protocol, client = %self.client, verb, "HTTP request on the mail port, closing");
                self.send(421, (4, 7, 0), "this is not an HTTP server");
                Ok(Flow::Close)
            }
            _ => Ok(self.bad(500, (5, 5, 1), "command unrecognized")),
        }
    }

    fn ehlo(&mut self, args: &str, extended: bool) -> Flow {
        if args.is_empty() || args.len() > 255 {
            return self.bad(501, (5, 5, 4), "syntax: EHLO hostname");
        }
        self.helo = Some(args.to_owned());
        self.esmtp = extended;
        self.transaction = None;
        let host = self.inner.hostname.clone();
        if !extended {
            self.raw_line(&format!("250 {host}"));
            return Flow::Continue;
        }
        let mut lines = vec![
            format!("{host} greets {args}"),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.limits().max_message_bytes),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.inner.protocol == Protocol::Smtp {
            if self.inner.tls.is_some() && !self.tls {
                lines.push("STARTTLS".to_owned());
            }
            if auth_allowed(self.tls, self.client) {
                lines.push("AUTH PLAIN LOGIN".to_owned());
            }
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.raw_line(&format!("250{sep}{line}"));
        }
        Flow::Continue
    }

    async fn starttls(&mut self, args: &str) -> io::Result<Flow> {
        let Some(acceptor) = self.inner.tls.clone() else {
            return Ok(self.bad(502, (5, 5, 1), "STARTTLS not available"));
        };
        if self.tls {
            return Ok(self.bad(503, (5, 5, 1), "already under TLS"));
        }
        if !args.is_empty() {
            return Ok(self.bad(501, (5, 5, 4), "syntax: STARTTLS"));
        }
        self.send(220, (2, 0, 0), "ready to start TLS");
        self.flush().await?;
        if !self.rbuf.is_empty() {
            warn!(target: TARGET, client = %self.client, bytes = self.rbuf.len(), "discarding input pipelined behind STARTTLS");
            self.rbuf.clear();
        }
        let Io::Plain(stream) = std::mem::replace(&mut self.io, Io::Closed) else {
            return Ok(Flow::Close);
        };
        match timeout(self.limits().command_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                self.io = Io::Tls(Box::new(tls));
                // RFC 3207 4.2: forget everything the client said before.
                self.tls = true;
                self.helo = None;
                self.esmtp = false;
                self.authenticated_as = None;
                self.transaction = None;
                Ok(Flow::Continue)
            }
            Ok(Err(e)) => {
                info!(target: TARGET, client = %self.client, error = %e, "TLS handshake failed");
                Ok(Flow::Close)
            }
            Err(_) => {
                info!(target: TARGET, client = %self.client, "TLS handshake timed out");
                Ok(Flow::Close)
            }
        }
    }

    async fn auth(&mut self, args: &str) -> io::Result<Flow> {
        if self.helo.is_none() || !self.esmtp {
            return Ok(self.bad(503, (5, 5, 1), "send EHLO first"));
        }
        if self.authenticated_as.is_some() {
            return Ok(self.bad(503, (5, 5, 1), "already authenticated"));
        }
        if self.transaction.is_some() {
            return Ok(self.bad(503, (5, 5, 1), "AUTH not allowed during a mail transaction"));
        }
        if !auth_allowed(self.tls, self.client) {
            return Ok(self.bad(
                538,
                (5, 7, 11),
                "encryption required for requested authentication mechanism",
            ));
        }
        let (mechanism, initial) = match args.split_once(' ') {
            Some((m, i)) => (m, Some(i.trim())),
            None => (args, None),
        };
        let credentials = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => i.to_owned(),
                    None => match self.auth_response("").await? {
                        Ok(r) => r,
                        Err(flow) => return Ok(flow),
                    },
                };
                match auth_decode(&response) {
                    Ok(plain) => plain_credentials(&plain),
                    Err(e) => return Ok(self.auth_failed(e)),
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => i.to_owned(),
                    // base64 "Username:"
                    None => match self.auth_response("VXNlcm5hbWU6").await? {
                        Ok(r) => r,
                        Err(flow) => return Ok(flow),
                    },
                };
                let user = match auth_decode(&user) {
                    Ok(u) => u,
                    Err(e) => return Ok(self.auth_failed(e)),
                };
                // base64 "Password:"
                let password = match self.auth_response("UGFzc3dvcmQ6").await? {
                    Ok(r) => r,
                    Err(flow) => return Ok(flow),
                };
                match auth_decode(&password) {
                    Ok(p) => match (String::from_utf8(user), String::from_utf8(p)) {
                        (Ok(u), Ok(p)) => Some((u, p)),
                        _ => None,
                    },
                    Err(e) => return Ok(self.auth_failed(e)),
                }
            }
            "" => return Ok(self.bad(501, (5, 5, 4), "syntax: AUTH mechanism")),
            _ => return Ok(self.bad(504, (5, 5, 4), "unrecognized authentication type")),
        };
        let verified = credentials
            .filter(|(user, password)| self.inner.delivery.check_credentials(user, password));
        match verified {
            Some((user, _)) => {
                info!(target: TARGET, client = %self.client, user, "authenticated");
                self.authenticated_as = Some(user);
                self.send(235, (2, 7, 0), "authentication successful");
                Ok(Flow::Continue)
            }
            None => {
                info!(target: TARGET, client = %self.client, "authentication failed");
                Ok(self.bad(535, (5, 7, 8), "authentication credentials invalid"))
            }
        }
    }

    /// Sends `334 <challenge>` and reads the client's response line; `Err`
    /// carries how the session goes on when there is none.
    async fn auth_response(&mut self, challenge: &str) -> io::Result<Result<String, Flow>> {
        self.raw_line(&format!("334 {challenge}"));
        let deadline = Instant::now() + self.limits().command_timeout;
        Ok(match self.read_line(deadline, true).await? {
            Input::Line { line, .. } => Ok(String::from_utf8_lossy(&line).trim().to_owned()),
            Input::TooLong { .. } => {
                Err(self.bad(500, (5, 5, 6), "authentication exchange line is too long"))
            }
            Input::Eof => Err(Flow::Close),
            Input::Timeout => Err(self.timed_out("idle timeout")),
            Input::Stop => Err(self.shutting_down()),
        })
    }

    fn auth_failed(&mut self, why: AuthDecodeError) -> Flow {
        match why {
            AuthDecodeError::Cancelled => self.bad(501, (5, 0, 0), "authentication cancelled"),
            AuthDecodeError::Base64 => self.bad(501, (5, 5, 2), "cannot decode response"),
        }
    }

    fn mail(&mut self, args: &str) -> Flow {
        if self.helo.is_none() {
            let hello = match self.inner.protocol {
                Protocol::Smtp => "send EHLO/HELO first",
                Protocol::Lmtp => "send LHLO first",
            };
            return self.bad(503, (5, 5, 1), hello);
        }
        if self.transaction.is_some() {
            return self.bad(503, (5, 5, 1), "nested MAIL command");
        }
        let Some(rest) = strip_prefix_ci(args, "FROM:") else {
            return self.bad(501, (5, 5, 4), "syntax: MAIL FROM:<address>");
        };
        let Some((from, params)) = parse_path(rest) else {
            return self.bad(501, (5, 1, 7), "bad sender address syntax");
        };
        if !from.is_empty() && !valid_mailbox(&from) {
            return self.bad(501, (5, 1, 7), "bad sender address syntax");
        }
        for param in params.split_whitespace() {
            if !self.esmtp {
                return self.bad(555, (5, 5, 4), "parameters need EHLO");
            }
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => {
                    let Some(size) = Some(value)
                        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())
                    else {
                        return self.bad(501, (5, 5, 4), "bad SIZE parameter");
                    };
                    if size > self.limits().max_message_bytes as u64 {
                        self.send(
                            552,
                            (5, 3, 4),
                            "message size exceeds fixed maximum message size",
                        );
                        return Flow::Continue;
                    }
                }
                "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
                // RFC 4954 5: the submitter's identity; accepted and ignored.
                "AUTH" if self.inner.protocol == Protocol::Smtp && !value.is_empty() => {}
                _ => return self.bad(555, (5, 5, 4), "unsupported MAIL parameter"),
            }
        }
        self.transaction = Some(Transaction {
            mail_from: from,
            recipients: Vec::new(),
        });
        self.send(250, (2, 1, 0), "sender OK");
        Flow::Continue
    }

    async fn rcpt(&mut self, args: &str) -> Flow {
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            return self.bad(503, (5, 5, 1), "need MAIL first");
        };
        let Some(rest) = strip_prefix_ci(args, "TO:") else {
            return self.bad(501, (5, 5, 4), "syntax: RCPT TO:<address>");
        };
        let Some((to, params)) = parse_path(rest) else {
            return self.bad(501, (5, 1, 3), "bad recipient address syntax");
        };
        if !valid_mailbox(&to) && !to.eq_ignore_ascii_case("postmaster") {
            return self.bad(501, (5, 1, 3), "bad recipient address syntax");
        }
        if !params.is_empty() {
            return self.bad(555, (5, 5, 4), "unsupported RCPT parameter");
        }
        if count >= self.limits().max_recipients {
            self.send(452, (4, 5, 3), "too many recipients");
            return Flow::Continue;
        }
        let envelope = self.envelope();
        match self.inner.delivery.accept_recipient(&envelope, &to).await {
            Ok(()) => {
                if let Some(t) = self.transaction.as_mut() {
                    t.recipients.push(to);
                }
                self.send(250, (2, 1, 5), "recipient OK");
            }
            Err(reply) => self.reply(&reply),
        }
        Flow::Continue
    }

    async fn data(&mut self, args: &str) -> io::Result<Flow> {
        if !args.is_empty() {
            return Ok(self.bad(501, (5, 5, 4), "syntax: DATA"));
        }
        match &self.transaction {
            None => return Ok(self.bad(503, (5, 5, 1), "need MAIL first")),
            Some(t) if t.recipients.is_empty() => {
                self.send(554, (5, 5, 1), "no valid recipients");
                return Ok(Flow::Continue);
            }
            Some(_) => {}
        }
        self.reply(&Reply::new(354, None, "end data with <CR><LF>.<CR><LF>"));
        let data = self.read_data().await?;
        let envelope = self.envelope();
        self.transaction = None;
        let message = match data {
            Data::Complete(message) => message,
            Data::TooBig => {
                let r = Reply::new(
                    552,
                    Some((5, 3, 4)),
                    "message size exceeds fixed maximum message size",
                );
                return Ok(self.reject_message(&envelope, r));
            }
            Data::LineTooLong => {
                let r = Reply::new(500, Some((5, 5, 2)), "line too long");
                return Ok(self.reject_message(&envelope, r));
            }
            Data::Timeout => {
                self.log_transaction(&envelope, 0, "timeout during DATA");
                return Ok(self.timed_out("timeout waiting for data"));
            }
            Data::Eof => {
                self.log_transaction(&envelope, 0, "connection lost during DATA");
                return Ok(Flow::Close);
            }
        };
        let mut replies = self.inner.delivery.deliver(&envelope, &message).await;
        let wanted = envelope.recipients.len();
        if replies.len() != wanted {
            error!(target: TARGET, got = replies.len(), wanted, "Delivery::deliver returned the wrong number of replies");
            replies.resize(
                wanted,
                Reply::new(451, Some((4, 3, 0)), "internal error: no delivery status"),
            );
        }
        let outcome = match self.inner.protocol {
            Protocol::Lmtp => {
                for reply in &replies {
                    self.reply(reply);
                }
                replies
                    .iter()
                    .map(|r| r.code.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            Protocol::Smtp => {
                let failed: Vec<(String, Reply)> = envelope
                    .recipients
                    .iter()
                    .zip(&replies)
                    .filter(|(_, r)| !r.is_positive())
                    .map(|(rcpt, r)| (rcpt.clone(), r.clone()))
                    .collect();
                let summary = smtp_summary(&replies, envelope.mail_from.is_empty());
                let mut outcome = summary.to_string();
                if summary.is_positive() && !failed.is_empty() {
                    let codes: Vec<String> =
                        failed.iter().map(|(_, r)| r.code.to_string()).collect();
                    if envelope.mail_from.is_empty() {
                        outcome += &format!("; failed {} (null sender: no DSN)", codes.join(","));
                    } else {
                        outcome += &format!("; failed {}, DSN", codes.join(","));
                        self.inner
                            .delivery
                            .report_failures(&envelope, &message, &failed)
                            .await;
                    }
                }
                self.reply(&summary);
                outcome
            }
        };
        self.log_transaction(&envelope, message.len(), &outcome);
        Ok(Flow::Continue)
    }

    /// Refuses a whole message after its data: once for SMTP, once per
    /// recipient for LMTP.
    fn reject_message(&mut self, envelope: &Envelope, reply: Reply) -> Flow {
        let times = match self.inner.protocol {
            Protocol::Smtp => 1,
            Protocol::Lmtp => envelope.recipients.len(),
        };
        for _ in 0..times {
            self.reply(&reply);
        }
        self.log_transaction(envelope, 0, &reply.to_string());
        Flow::Continue
    }

    fn log_transaction(&self, envelope: &Envelope, bytes: usize, outcome: &str) {
        info!(
            target: TARGET,
            protocol = %self.inner.protocol,
            client = %envelope.client,
            helo = %envelope.helo,
            tls = envelope.tls,
            auth = envelope.authenticated_as.as_deref().unwrap_or(""),
            from = %envelope.mail_from,
            recipients = envelope.recipients.len(),
            bytes,
            outcome,
            "mail transaction"
        );
    }

    fn envelope(&self) -> Envelope {
        let (mail_from, recipients) = match &self.transaction {
            Some(t) => (t.mail_from.clone(), t.recipients.clone()),
            None => (String::new(), Vec::new()),
        };
        Envelope {
            mail_from,
            recipients,
            helo: self.helo.clone().unwrap_or_default(),
            client: self.client,
            tls: self.tls,
            authenticated_as: self.authenticated_as.clone(),
        }
    }
}

/// The one SMTP reply after DATA for per-recipient `replies`: all 2xx → 250;
/// some 2xx → 250 (the rest go into a DSN); none → the first permanent
/// failure, else the first temporary one.
fn smtp_summary(replies: &[Reply], null_sender: bool) -> Reply {
    if replies.iter().all(Reply::is_positive) {
        return Reply::new(250, Some((2, 0, 0)), "message accepted");
    }
    // Only a deferred message is retried by the sending MTA: a temporary
    // failure defers it all. Recipients that already got it are answered
    // from the idempotency record on the retry, so nothing is sent twice.
    if let Some(temporary) = replies.iter().find(|r| r.is_transient()) {
        return temporary.clone();
    }
    if replies.iter().any(Reply::is_positive) {
        let text = if null_sender {
            "message accepted for some recipients"
        } else {
            "message accepted for some recipients, the others are reported in a DSN"
        };
        return Reply::new(250, Some((2, 0, 0)), text);
    }
    replies
        .iter()
        .find(|r| r.is_permanent())
        .or_else(|| replies.first())
        .cloned()
        .unwrap_or_else(|| Reply::new(554, Some((5, 5, 1)), "no valid recipients"))
}

/// AUTH is offered over TLS, or in the clear to a loopback client only.
fn auth_allowed(tls: bool, client: SocketAddr) -> bool {
    tls || client.ip().to_canonical().is_loopback()
}

/// `s` without `prefix` (ASCII case-insensitive).
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `<path> params` (space after the colon tolerated) → the address without
/// brackets or source route, and the parameter text. Only the bracket
/// syntax and the length are checked here.
fn parse_path(s: &str) -> Option<(String, &str)> {
    let inner = s.trim_start().strip_prefix('<')?;
    let end = inner.find('>')?;
    let (path, after) = (&inner[..end], &inner[end + 1..]);
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    // RFC 5321 4.1.2: an obsolete source route "@a,@b:" is ignored.
    let address = match path.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => path,
    };
    (address.len() <= MAX_PATH).then(|| (address.to_owned(), after.trim()))
}

/// `local@domain` in printable ASCII without spaces; the domain a host name
/// or an address literal.
fn valid_mailbox(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let domain_ok = if let Some(literal) = domain.strip_prefix('[') {
        literal.ends_with(']')
            && literal.len() > 1
            && literal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-]".contains(&b))
    } else {
        domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.is_empty()
        && domain.len() <= 255
        && domain_ok
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

enum AuthDecodeError {
    /// The client answered "*".
    Cancelled,
    Base64,
}

/// An AUTH response: base64, "=" for empty, "*" to cancel.
fn auth_decode(response: &str) -> Result<Vec<u8>, AuthDecodeError> {
    match response {
        "*" => Err(AuthDecodeError::Cancelled),
        "=" => Ok(Vec::new()),
        r => base64_decode(r).ok_or(AuthDecodeError::Base64),
    }
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL password`; an authzid other
/// than the authcid (acting for someone else) is not supported.
fn plain_credentials(message: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut fields = text.split('\0');
    let (authz, user, password) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || user.is_empty() || (!authz.is_empty() && authz != user) {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 with padding (RFC 4648 4); None if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let quads = s.len() / 4;
    let mut out = Vec::with_capacity(quads * 3);
    for (i, quad) in s.chunks(4).enumerate() {
        let mut n = 0u32;
        let mut pad = 0;
        for (j, &c) in quad.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if i == quads - 1 && j >= 2 => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            if pad > 0 && c != b'=' {
                return None;
            }
            n = n << 6 | u32::from(v);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

    use super::*;

    #[derive(Default)]
    struct Recorder {
        delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
        reported: Mutex<Vec<Vec<(String, Reply)>>>,
        /// deliver() returns this many replies, when set.
        reply_count: Option<usize>,
    }

    #[async_trait::async_trait]
    impl Delivery for Recorder {
        async fn accept_recipient(&self, _: &Envelope, rcpt: &str) -> Result<(), Reply> {
            if rcpt.starts_with("denied") {
                return Err(Reply::new(550, Some((5, 7, 1)), "relaying denied"));
            }
            Ok(())
        }
        async fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Vec<Reply> {
            self.delivered
                .lock()
                .unwrap()
                .push((envelope.clone(), message.to_vec()));
            let mut replies: Vec<Reply> = envelope
                .recipients
                .iter()
                .map(|r| {
                    if r.starts_with("temp") {
                        Reply::new(451, Some((4, 4, 1)), "try later")
                    } else if r.starts_with("bad") {
                        Reply::new(550, Some((5, 1, 1)), "no such user")
                    } else {
                        Reply::new(250, Some((2, 0, 0)), "delivered")
                    }
                })
                .collect();
            if let Some(n) = self.reply_count {
                replies.truncate(n);
            }
            replies
        }
        async fn report_failures(&self, _: &Envelope, _: &[u8], failed: &[(String, Reply)]) {
            self.reported.lock().unwrap().push(failed.to_vec());
        }
        fn check_credentials(&self, user: &str, password: &str) -> bool {
            user == "alice" && password == "secret"
        }
    }

    struct Client {
        r: BufReader<ReadHalf<DuplexStream>>,
        w: WriteHalf<DuplexStream>,
    }

    impl Client {
        async fn send(&mut self, data: &str) {
            self.w.write_all(data.as_bytes()).await.unwrap();
        }
        /// One (possibly multi-line) reply, lines joined with '\n'.
        async fn reply(&mut self) -> String {
            let mut all = Vec::new();
            loop {
                let mut line = String::new();
                let n = self.r.read_line(&mut line).await.unwrap();
                if n == 0 {
                    all.push("<EOF>".to_owned());
                    break;
                }
                let line = line.trim_end_matches(['\r', '\n']).to_owned();
                let last = line.as_bytes().get(3) != Some(&b'-');
                all.push(line);
                if last {
                    break;
                }
            }
            all.join("\n")
        }
        async fn cmd(&mut self, line: &str) -> String {
            self.send(&format!("{line}\r\n")).await;
            self.reply().await
        }
        async fn eof(&mut self) -> bool {
            let mut rest = String::new();
            matches!(self.r.read_line(&mut rest).await, Ok(0))
        }
    }

    struct Harness {
        client: Client,
        delivery: Arc<Recorder>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(protocol: Protocol, limits: Limits, peer: &str, delivery: Recorder) -> Harness {
        let delivery = Arc::new(delivery);
        let listener = Listener::new(protocol, limits, "mx.test".into(), None, delivery.clone());
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (stop, stop_rx) = watch::channel(false);
        let session = Session::new(
            listener.inner.clone(),
            theirs,
            peer.parse().unwrap(),
            stop_rx,
        );
        let task = tokio::spawn(session.run());
        let (r, w) = tokio::io::split(ours);
        let mut client = Client {
            r: BufReader::new(r),
            w,
        };
        let greeting = client.reply().await;
        let kind = if protocol == Protocol::Smtp {
            "ESMTP"
        } else {
            "LMTP"
        };
        assert_eq!(
            greeting,
            format!("220 mx.test {kind} ischedule-bridge ready")
        );
        Harness {
            client,
            delivery,
            stop,
            task,
        }
    }

    async fn smtp(peer: &str) -> Harness {
        start(Protocol::Smtp, Limits::default(), peer, Recorder::default()).await
    }

    fn b64(data: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn ehlo_from_a_remote_client_offers_no_auth_in_the_clear() {
        let mut h = smtp("192.0.2.10:40000").await;
        let ehlo = h.client.cmd("EHLO client.example").await;
        assert_eq!(
            ehlo,
            "250-mx.test greets client.example\n250-PIPELINING\n250-SIZE 10485760\n\
             250-8BITMIME\n250 ENHANCEDSTATUSCODES"
        );
        let auth = h
            .client
            .cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0secret")))
            .await;
        assert!(auth.starts_with("538 5.7.11 "), "{auth}");
        assert!(h.client.cmd("STARTTLS").await.starts_with("502 5.5.1 "));
        assert_eq!(
            h.client.cmd("QUIT").await,
            "221 2.0.0 mx.test closing connection"
        );
        assert!(h.client.eof().await);
        h.task.await.unwrap();
    }

    #[tokio::test]
    async fn auth_plain_and_login_from_loopback() {
        for peer in ["127.0.0.1:40000", "[::ffff:127.0.0.1]:40000", "[::1]:40000"] {
            let mut h = smtp(peer).await;
            let ehlo = h.client.cmd("EHLO c").await;
            assert!(ehlo.ends_with("\n250 AUTH PLAIN LOGIN"), "{ehlo}");
            let bad = h
                .client
                .cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wrong")))
                .await;
            assert!(bad.starts_with("535 5.7.8 "), "{bad}");
            // authzid for someone else is refused even with the right password
            let other = h
                .client
                .cmd(&format!("AUTH PLAIN {}", b64(b"bob\0alice\0secret")))
                .await;
            assert!(other.starts_with("535 5.7.8 "), "{other}");
            assert_eq!(h.client.cmd("AUTH PLAIN").await, "334 ");
            assert!(h.client.cmd("*").await.starts_with("501 5.0.0 "));
            assert_eq!(h.client.cmd("AUTH PLAIN").await, "334 ");
            assert!(h.client.cmd("not base64!").await.starts_with("501 5.5.2 "));
            assert_eq!(h.client.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
            assert_eq!(h.client.cmd(&b64(b"alice")).await, "334 UGFzc3dvcmQ6");
            let ok = h.client.cmd(&b64(b"secret")).await;
            assert_eq!(ok, "235 2.7.0 authentication successful");
            assert!(h.client.cmd("AUTH PLAIN =").await.starts_with("503 5.5.1 "));
            h.client.cmd("MAIL FROM:<a@b.example>").await;
            h.client.cmd("RCPT TO:<x@mx.test>").await;
            h.client.cmd("DATA").await;
            assert!(h.client.cmd("hi\r\n.").await.starts_with("250 "));
            let delivered = h.delivery.delivered.lock().unwrap();
            assert_eq!(delivered[0].0.authenticated_as.as_deref(), Some("alice"));
        }
    }

    #[tokio::test]
    async fn lmtp_wants_lhlo_and_answers_per_recipient() {
        let mut h = start(
            Protocol::Lmtp,
            Limits::default(),
            "127.0.0.1:1",
            Recorder::default(),
        )
        .await;
        assert!(h.client.cmd("EHLO c").await.starts_with("500 5.5.1 "));
        assert!(h.client.cmd("HELO c").await.starts_with("500 5.5.1 "));
        assert!(h
            .client
            .cmd("MAIL FROM:<>")
            .await
            .starts_with("503 5.5.1 send LHLO"));
        let lhlo = h.client.cmd("LHLO c").await;
        assert!(
            !lhlo.contains("AUTH") && !lhlo.contains("STARTTLS"),
            "{lhlo}"
        );
        assert!(lhlo.contains("250-PIPELINING"), "{lhlo}");
        assert!(h.client.cmd("STARTTLS").await.starts_with("500 5.5.1 "));
        h.client.cmd("MAIL FROM:<o@remote.example>").await;
        for r in ["a@x.test", "temp@x.test", "bad@x.test"] {
            assert_eq!(
                h.client.cmd(&format!("RCPT TO:<{r}>")).await,
                "250 2.1.5 recipient OK"
            );
        }
        assert!(h.client.cmd("DATA").await.starts_with("354 "));
        h.client.send("Subject: x\r\n\r\nbody\r\n.\r\n").await;
        assert_eq!(h.client.reply().await, "250 2.0.0 delivered");
        assert_eq!(h.client.reply().await, "451 4.4.1 try later");
        assert_eq!(h.client.reply().await, "550 5.1.1 no such user");
        assert!(
            h.delivery.reported.lock().unwrap().is_empty(),
            "no DSN with LMTP"
        );
    }

    #[tokio::test]
    async fn commands_out_of_order() {
        let mut h = smtp("127.0.0.1:1").await;
        assert!(h
            .client
            .cmd("MAIL FROM:<a@b.c>")
            .await
            .starts_with("503 5.5.1 "));
        h.client.cmd("HELO c").await;
        assert!(h
            .client
            .cmd("RCPT TO:<a@b.c>")
            .await
            .starts_with("503 5.5.1 "));
        assert!(h.client.cmd("DATA").await.starts_with("503 5.5.1 "));
        // HELO (not EHLO): no ESMTP parameters
        assert!(h
            .client
            .cmd("MAIL FROM:<a@b.c> SIZE=10")
            .await
            .starts_with("555 5.5.4 "));
        assert_eq!(
            h.client.cmd("MAIL FROM:<a@b.c>").await,
            "250 2.1.0 sender OK"
        );
        assert!(h
            .client
            .cmd("MAIL FROM:<a@b.c>")
            .await
            .starts_with("503 5.5.1 nested"));
        assert_eq!(h.client.cmd("DATA").await, "554 5.5.1 no valid recipients");
        assert!(h
            .client
            .cmd("RCPT TO:<denied@b.c>")
            .await
            .starts_with("550 5.7.1 "));
        assert_eq!(h.client.cmd("DATA").await, "554 5.5.1 no valid recipients");
        assert_eq!(h.client.cmd("RSET").await, "250 2.0.0 reset");
        assert!(h
            .client
            .cmd("RCPT TO:<a@b.c>")
            .await
            .starts_with("503 5.5.1 "));
        assert!(h.client.cmd("VRFY x").await.starts_with("252 2.5.0 "));
        assert!(h.client.cmd("HELP").await.starts_with("214 2.0.0 "));
        assert_eq!(h.client.cmd("NOOP").await, "250 2.0.0 OK");
    }

    #[tokio::test]
    async fn syntax_is_checked() {
        let mut h = start(
            Protocol::Smtp,
            Limits {
                max_errors: 100,
                ..Limits::default()
            },
            "127.0.0.1:1",
            Recorder::default(),
        )
        .await;
        assert!(h.client.cmd("EHLO").await.starts_with("501 5.5.4 "));
        h.client.cmd("EHLO c").await;
        for bad in [
            "MAIL FROM:a@b.c",
            "MAIL FROM:<a@b.c>x",
            "MAIL FROM:<a b@c.d>",
            "MAIL FROM:<a@>",
        ] {
            assert!(h.client.cmd(bad).await.starts_with("501 5.1.7 "), "{bad}");
        }
        assert!(h
            .client
            .cmd("MAIL TO:<a@b.c>")
            .await
            .starts_with("501 5.5.4 "));
        assert!(h
            .client
            .cmd("MAIL FROM:<a@b.c> SIZE=x")
            .await
            .starts_with("501 5.5.4 "));
        assert!(h
            .client
            .cmd("MAIL FROM:<a@b.c> FOO=1")
            .await
            .starts_with("555 5.5.4 "));
        let big = h.client.cmd("MAIL FROM:<a@b.c> SIZE=10485761").await;
        assert_eq!(
            big,
            "552 5.3.4 message size exceeds fixed maximum message size"
        );
        let ok = h
            .client
            .cmd("mail from: <@relay.example:a@b.c> SIZE=100 BODY=8BITMIME")
            .await;
        assert_eq!(ok, "250 2.1.0 sender OK");
        assert!(h.client.cmd("RCPT TO:<>").await.starts_with("501 5.1.3 "));
        assert!(h
            .client
            .cmd("RCPT TO:<x@y.z> NOTIFY=NEVER")
            .await
            .starts_with("555 5.5.4 "));
        assert!(h
            .client
            .cmd("RCPT TO:<Postmaster>")
            .await
            .starts_with("250 "));
        assert!(h
            .client
            .cmd("RCPT TO:<x@[192.0.2.1]>")
            .await
            .starts_with("250 "));
        assert!(h.client.cmd("RSET x").await.starts_with("501 5.5.4 "));
        assert!(h.client.cmd("FROB").await.starts_with("500 5.5.1 "));
        assert!(h.client.cmd("").await.starts_with("500 5.5.1 "));
        h.client.send("NOOP \u{1}\r\n").await;
        assert!(h.client.reply().await.starts_with("500 5.5.2 "));
        h.client.w.write_all(b"NOOP \xff\r\n").await.unwrap();
        assert!(h.client.reply().await.starts_with("500 5.5.2 "));
    }

    #[tokio::test]
    async fn data_is_unstuffed_bare_lf_tolerated_and_only_crlf_dot_crlf_ends_it() {
        let mut h = smtp("127.0.0.1:1").await;
        h.client.cmd("EHLO c").await;
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        assert!(h.client.cmd("DATA").await.starts_with("354 "));
        // "\n.\n", "\n.\r\n" and "\r\n.\n" do not end the data: a smuggled
        // second transaction stays part of the first message.
        h.client
            .send(
                "Subject: t\r\n\r\nbare\nline\n.\nMAIL FROM:<evil@x.y>\r\n..dot\r\n.\n\
                 RCPT TO:<v@mx.test>\n.\r\nDATA\r\n.\r\n",
            )
            .await;
        assert_eq!(h.client.reply().await, "250 2.0.0 message accepted");
        assert_eq!(h.client.cmd("NOOP").await, "250 2.0.0 OK");
        let delivered = h.delivery.delivered.lock().unwrap();
        assert_eq!(delivered.len(), 1);
        assert_eq!(
            String::from_utf8_lossy(&delivered[0].1),
            "Subject: t\r\n\r\nbare\r\nline\r\n.\r\nMAIL FROM:<evil@x.y>\r\n.dot\r\n.\r\n\
             RCPT TO:<v@mx.test>\r\n.\r\nDATA\r\n"
        );
    }

    #[tokio::test]
    async fn empty_message_and_leading_dot_line() {
        let mut h = smtp("127.0.0.1:1").await;
        h.client.cmd("EHLO c").await;
        h.client.cmd("MAIL FROM:<>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("DATA").await;
        assert!(h.client.cmd(".").await.starts_with("250 "));
        let delivered = h.delivery.delivered.lock().unwrap();
        assert_eq!(delivered[0].1, b"");
        assert_eq!(delivered[0].0.mail_from, "");
    }

    #[tokio::test]
    async fn line_limits_for_commands_and_data() {
        let mut h = smtp("127.0.0.1:1").await;
        let long = format!("NOOP {}", "x".repeat(993)); // 998 + CRLF
        assert_eq!(h.client.cmd(&long).await, "250 2.0.0 OK");
        let too_long = format!("NOOP {}", "x".repeat(994));
        assert_eq!(h.client.cmd(&too_long).await, "500 5.5.2 line too long");
        let way_too_long = format!("NOOP {}", "x".repeat(100_000));
        assert_eq!(h.client.cmd(&way_too_long).await, "500 5.5.2 line too long");
        h.client.cmd("EHLO c").await;
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("DATA").await;
        h.client
            .send(&format!("a\r\n{}\r\nb\r\n.\r\n", "y".repeat(5000)))
            .await;
        assert_eq!(h.client.reply().await, "500 5.5.2 line too long");
        // the transaction is over
        assert!(h
            .client
            .cmd("RCPT TO:<x@mx.test>")
            .await
            .starts_with("503 "));
        assert!(h.delivery.delivered.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn too_big_lmtp_message_is_refused_per_recipient() {
        let limits = Limits {
            max_message_bytes: 100,
            ..Limits::default()
        };
        let mut h = start(Protocol::Lmtp, limits, "127.0.0.1:1", Recorder::default()).await;
        h.client.cmd("LHLO c").await;
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("RCPT TO:<y@mx.test>").await;
        h.client.cmd("DATA").await;
        h.client.send(&"0123456789\r\n".repeat(10)).await;
        h.client.send(".\r\n").await;
        let r = "552 5.3.4 message size exceeds fixed maximum message size";
        assert_eq!(h.client.reply().await, r);
        assert_eq!(h.client.reply().await, r);
        assert_eq!(h.client.cmd("NOOP").await, "250 2.0.0 OK");
        assert!(h.delivery.delivered.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn exactly_max_message_bytes_is_accepted() {
        let limits = Limits {
            max_message_bytes: 24,
            ..Limits::default()
        };
        let mut h = start(Protocol::Smtp, limits, "127.0.0.1:1", Recorder::default()).await;
        h.client.cmd("EHLO c").await;
        h.client.cmd("MAIL FROM:<a@b.c> SIZE=24").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("DATA").await;
        assert!(h
            .client
            .cmd("0123456789\r\n0123456789\r\n.")
            .await
            .starts_with("250 "));
    }

    #[tokio::test]
    async fn smtp_mixed_outcome_reports_failures_unless_null_sender() {
        let mut h = smtp("127.0.0.1:1").await;
        h.client.cmd("EHLO c").await;
        for from in ["o@remote.example", ""] {
            h.client.cmd(&format!("MAIL FROM:<{from}>")).await;
            for r in ["ok@x", "bad1@x", "bad2@x"] {
                h.client.cmd(&format!("RCPT TO:<{r}.test>")).await;
            }
            h.client.cmd("DATA").await;
            let reply = h.client.cmd("m\r\n.").await;
            assert!(
                reply.starts_with("250 2.0.0 message accepted for some"),
                "{reply}"
            );
        }
        // A temporary failure defers the whole message instead: no DSN.
        h.client.cmd("MAIL FROM:<o@remote.example>").await;
        for r in ["ok@x", "bad3@x", "temp@x"] {
            h.client.cmd(&format!("RCPT TO:<{r}.test>")).await;
        }
        h.client.cmd("DATA").await;
        let reply = h.client.cmd("m\r\n.").await;
        assert!(reply.starts_with("451 4.4.1"), "{reply}");
        let reported = h.delivery.reported.lock().unwrap();
        assert_eq!(
            reported.len(),
            1,
            "none for the null sender, none when deferred"
        );
        assert_eq!(reported[0].len(), 2);
        assert_eq!(reported[0][0].0, "bad1@x.test");
        assert_eq!(reported[0][0].1.code, 550);
        assert_eq!(reported[0][1].0, "bad2@x.test");
    }

    #[tokio::test]
    async fn missing_replies_from_delivery_count_as_temporary() {
        let recorder = Recorder {
            reply_count: Some(1),
            ..Recorder::default()
        };
        let mut h = start(Protocol::Lmtp, Limits::default(), "127.0.0.1:1", recorder).await;
        h.client.cmd("LHLO c").await;
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("RCPT TO:<y@mx.test>").await;
        h.client.cmd("DATA").await;
        h.client.send("m\r\n.\r\n").await;
        assert!(h.client.reply().await.starts_with("250 "));
        assert!(h.client.reply().await.starts_with("451 4.3.0 "));
    }

    #[tokio::test]
    async fn too_many_errors_close_the_connection() {
        let limits = Limits {
            max_errors: 3,
            ..Limits::default()
        };
        let mut h = start(Protocol::Smtp, limits, "127.0.0.1:1", Recorder::default()).await;
        h.client.send("FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nNOOP\r\n").await;
        assert!(h.client.reply().await.starts_with("500 5.5.1 "));
        assert!(h.client.reply().await.starts_with("500 5.5.1 "));
        assert_eq!(h.client.reply().await, "250 2.0.0 OK");
        assert!(h.client.reply().await.starts_with("500 5.5.1 "));
        assert_eq!(h.client.reply().await, "421 4.7.0 mx.test too many errors");
        assert!(h.client.eof().await);
    }

    #[tokio::test]
    async fn http_requests_are_cut_off() {
        let mut h = smtp("127.0.0.1:1").await;
        h.client
            .send("POST /submit HTTP/1.1\r\nHost: x\r\n\r\nMAIL FROM:<a@b.c>\r\n")
            .await;
        assert!(h.client.reply().await.starts_with("421 4.7.0 "));
        assert!(h.client.eof().await);
    }

    #[tokio::test]
    async fn idle_and_data_timeouts() {
        let limits = Limits {
            command_timeout: Duration::from_millis(300),
            data_timeout: Duration::from_millis(800),
            ..Limits::default()
        };
        let mut h = start(
            Protocol::Smtp,
            limits.clone(),
            "127.0.0.1:1",
            Recorder::default(),
        )
        .await;
        h.client.cmd("EHLO c").await;
        let t0 = Instant::now();
        assert_eq!(
            h.client.reply().await,
            "421 4.4.2 mx.test idle timeout, closing connection"
        );
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert!(h.client.eof().await);

        let mut h = start(Protocol::Smtp, limits, "127.0.0.1:1", Recorder::default()).await;
        h.client.cmd("EHLO c").await;
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("DATA").await;
        // A line every 100 ms keeps every read short, but the whole message
        // must arrive within data_timeout.
        let Client { mut r, mut w } = h.client;
        let t0 = Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..30 {
                if w.write_all(b"slow\r\n").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut reply = String::new();
        r.read_line(&mut reply).await.unwrap();
        let elapsed = t0.elapsed();
        assert!(reply.starts_with("421 4.4.2 "), "{reply}");
        assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        writer.abort();
        assert!(h.delivery.delivered.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn shutdown_ends_idle_sessions() {
        let mut h = smtp("127.0.0.1:1").await;
        h.client.cmd("EHLO c").await;
        h.stop.send(true).unwrap();
        assert_eq!(h.client.reply().await, "421 4.3.2 mx.test shutting down");
        assert!(h.client.eof().await);
        h.task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_data_finish() {
        let mut h = smtp("127.0.0.1:1").await;
        h.client.cmd("EHLO c").await;
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("DATA").await;
        h.client.send("part one\r\n").await;
        h.stop.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.client.send("part two\r\n.\r\n").await;
        assert_eq!(h.client.reply().await, "250 2.0.0 message accepted");
        assert_eq!(h.client.reply().await, "421 4.3.2 mx.test shutting down");
        assert_eq!(h.delivery.delivered.lock().unwrap().len(), 1);
    }

    #[test]
    fn smtp_summary_rules() {
        let ok = Reply::new(250, Some((2, 0, 0)), "ok");
        let temp = Reply::new(451, Some((4, 4, 1)), "t");
        let temp2 = Reply::new(452, Some((4, 2, 2)), "t2");
        let perm = Reply::new(550, Some((5, 1, 1)), "p");
        let perm2 = Reply::new(554, Some((5, 6, 0)), "p2");
        let s = |r: &[Reply]| smtp_summary(r, false);
        assert_eq!(
            s(&[ok.clone(), ok.clone()]).to_string(),
            "250 2.0.0 message accepted"
        );
        assert_eq!(s(&[perm.clone(), ok.clone()]).code, 250);
        assert_eq!(s(&[temp.clone(), temp2.clone()]), temp);
        assert_eq!(
            s(&[temp.clone(), perm2.clone(), perm.clone()]),
            temp,
            "a temporary failure defers all"
        );
        assert_eq!(s(&[perm.clone(), temp.clone()]), temp);
        assert_eq!(
            s(&[ok.clone(), temp.clone()]),
            temp,
            "nobody would retry a 250"
        );
        assert_eq!(s(&[perm2.clone(), perm.clone()]), perm2);
        let weird = Reply::new(354, None, "?");
        assert_eq!(
            s(&[perm.clone(), weird.clone()]),
            perm,
            "not 2xx/4xx is permanent"
        );
    }

    #[test]
    fn reply_display_is_one_line() {
        assert_eq!(
            Reply::new(250, Some((2, 0, 0)), "ok").to_string(),
            "250 2.0.0 ok"
        );
        assert_eq!(Reply::new(250, None, "ok").to_string(), "250 ok");
        assert_eq!(Reply::new(221, None, "").to_string(), "221");
        assert_eq!(
            Reply::new(550, Some((5, 7, 1)), "a\r\nb").to_string(),
            "550 5.7.1 a  b"
        );
    }

    #[test]
    fn paths_and_mailboxes() {
        assert_eq!(parse_path("<a@b.c>"), Some(("a@b.c".into(), "")));
        assert_eq!(
            parse_path(" <a@b.c> SIZE=1  BODY=7BIT"),
            Some(("a@b.c".into(), "SIZE=1  BODY=7BIT"))
        );
        assert_eq!(parse_path("<>"), Some((String::new(), "")));
        assert_eq!(parse_path("<@x,@y:a@b.c>"), Some(("a@b.c".into(), "")));
        assert_eq!(parse_path("a@b.c"), None);
        assert_eq!(parse_path("<a@b.c"), None);
        assert_eq!(parse_path(&format!("<{}@b.c>", "a".repeat(300))), None);
        assert!(valid_mailbox("first.last+tag@sub.example.com"));
        assert!(valid_mailbox("x@[IPv6:2001:db8::1]"));
        for bad in [
            "", "a", "@b.c", "a@", "a b@c.d", "a@b..c", "a@.b", "a@b_c d", "é@b.c",
        ] {
            assert!(!valid_mailbox(bad), "{bad}");
        }
        assert_eq!(strip_prefix_ci("from:<x>", "FROM:"), Some("<x>"));
        assert_eq!(strip_prefix_ci("fr", "FROM:"), None);
        assert_eq!(strip_prefix_ci("fröm:", "FROM:"), None);
    }

    #[test]
    fn base64_and_plain() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        for bad in ["YQ=", "Y===", "YQ==YWJj", "YW=j", "YWJ!"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
        for s in [&b"\0alice\0secret"[..], b"\xff\x00\x10 binary", b"xy"] {
            assert_eq!(base64_decode(&b64(s)).unwrap(), s);
        }
        assert_eq!(
            plain_credentials(b"\0alice\0secret"),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(
            plain_credentials(b"alice\0alice\0secret"),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(plain_credentials(b"bob\0alice\0secret"), None);
        assert_eq!(plain_credentials(b"\0\0secret"), None);
        assert_eq!(plain_credentials(b"alice\0secret"), None);
    }

    #[test]
    fn auth_needs_tls_or_loopback() {
        assert!(auth_allowed(false, "127.0.0.1:1".parse().unwrap()));
        assert!(auth_allowed(false, "[::1]:1".parse().unwrap()));
        assert!(auth_allowed(false, "[::ffff:127.0.0.2]:1".parse().unwrap()));
        assert!(!auth_allowed(false, "192.0.2.1:1".parse().unwrap()));
        assert!(!auth_allowed(
            false,
            "[::ffff:192.0.2.1]:1".parse().unwrap()
        ));
        assert!(auth_allowed(true, "192.0.2.1:1".parse().unwrap()));
    }
}
