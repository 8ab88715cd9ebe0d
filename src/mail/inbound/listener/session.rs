//! The command state machine of one SMTP/LMTP session: greeting, EHLO,
//! MAIL, RCPT, DATA and the rest, the envelope they build, and the one reply
//! SMTP gives after DATA. Bytes, lines and TLS are `framing`'s; AUTH is in
//! `auth`, whose methods extend [`Session`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::address::{is_address_literal, parse_path, strip_prefix_ci, valid_mailbox};
use super::auth::auth_allowed;
use super::framing::{Connection, Data, Input, TlsFailure};
use super::{Envelope, Inner, Limits, Protocol, TARGET};
use crate::mail::inbound::xclient::Xclient;
use crate::metrics::{self, InboundVerdict};
use crate::smtp::{EnhancedStatus, SmtpReply};

/// What a session does after a command.
pub(super) enum Flow {
    Continue,
    Close,
}

struct Transaction {
    mail_from: String,
    recipients: Vec<String>,
}

/// What one session may still spend: commands, and time. Every command
/// line counts (NOOP, RSET and HELP too), so a client cannot hold a session
/// for ever by keeping each read short.
pub(super) struct Budget {
    commands: usize,
    max_commands: usize,
    lifetime: Duration,
    ends_at: Instant,
}

/// The budget a session ran out of; displays as the reason given in the 421.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exhausted {
    Commands(usize),
    Lifetime(Duration),
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exhausted::Commands(n) => write!(f, "too many commands (limit {n} per session)"),
            Exhausted::Lifetime(d) => {
                write!(
                    f,
                    "session time limit reached ({} s per session)",
                    d.as_secs_f64()
                )
            }
        }
    }
}

impl Budget {
    pub(super) fn new(limits: &Limits, now: Instant) -> Budget {
        Budget {
            commands: 0,
            max_commands: limits.max_commands,
            lifetime: limits.session_timeout,
            ends_at: now + limits.session_timeout,
        }
    }

    /// Counts one command; past the limit the session must end.
    pub(super) fn charge(&mut self) -> Result<(), Exhausted> {
        self.commands += 1;
        if self.commands > self.max_commands {
            return Err(Exhausted::Commands(self.max_commands));
        }
        Ok(())
    }

    /// When a read of at most `wait` from `now` must end: never past the
    /// session's end.
    pub(super) fn deadline(&self, now: Instant, wait: Duration) -> Instant {
        (now + wait).min(self.ends_at)
    }

    /// Whether the session's time is up at `now`.
    pub(super) fn expired(&self, now: Instant) -> Option<Exhausted> {
        (now >= self.ends_at).then_some(Exhausted::Lifetime(self.lifetime))
    }
}

pub(super) struct Session<S> {
    pub(super) inner: Arc<Inner>,
    pub(super) conn: Connection<S>,
    /// The address the connection comes from; what XCLIENT and AUTH
    /// permissions are checked against.
    pub(super) peer: SocketAddr,
    /// The client the mail is from: the peer, or what XCLIENT said.
    pub(super) client: SocketAddr,
    pub(super) helo: Option<String>,
    /// The HELO name XCLIENT gave; it outlasts the LHLO that follows.
    forwarded_helo: Option<String>,
    /// EHLO/LHLO (not HELO): ESMTP parameters are allowed.
    pub(super) esmtp: bool,
    pub(super) tls: bool,
    pub(super) authenticated_as: Option<String>,
    transaction: Option<Transaction>,
    errors: usize,
    budget: Budget,
    /// Messages received (DATA read) in this session.
    messages: usize,
    /// Once the listener stops: until when commands may still begin, and
    /// how many messages had been received by then.
    drain: Option<(Instant, usize)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) fn new(
        inner: Arc<Inner>,
        stream: S,
        client: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let conn = Connection::new(stream, stop, &inner.limits);
        let budget = Budget::new(&inner.limits, Instant::now());
        Session {
            inner,
            conn,
            peer: client,
            client,
            helo: None,
            forwarded_helo: None,
            esmtp: false,
            tls: false,
            authenticated_as: None,
            transaction: None,
            errors: 0,
            budget,
            messages: 0,
            drain: None,
        }
    }

    pub(super) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(super) fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    pub(super) async fn run(mut self) {
        let protocol = self.inner.protocol;
        let _open = metrics::get().connection(match protocol {
            Protocol::Smtp => metrics::Listener::Smtp,
            Protocol::Lmtp => metrics::Listener::Lmtp,
        });
        debug!(target: TARGET, %protocol, client = %self.client, "connection opened");
        self.greet();
        loop {
            let deadline = self
                .budget
                .deadline(Instant::now(), self.limits().command_timeout);
            let drain_until = self.draining();
            let input = match drain_until {
                Some(until) => self.conn.read_line(deadline.min(until), false).await,
                None => self.conn.read_line(deadline, true).await,
            };
            let charged = match &input {
                Ok(Input::Line { .. } | Input::TooLong { .. }) => self.budget.charge(),
                _ => Ok(()),
            };
            let flow = match (input, charged) {
                (_, Err(exhausted)) => Ok(self.exhausted(exhausted)),
                (Ok(Input::Line { line, .. }), Ok(())) => self.command(&line).await,
                (Ok(Input::TooLong { .. }), Ok(())) => {
                    Ok(self.bad(500, EnhancedStatus::new(5, 5, 2), "line too long"))
                }
                (Ok(Input::Eof), _) => Ok(Flow::Close),
                (Ok(Input::Timeout), _) if drain_until.is_some_and(|u| Instant::now() >= u) => {
                    Ok(self.shutting_down())
                }
                (Ok(Input::Timeout), _) => Ok(match self.budget.expired(Instant::now()) {
                    Some(exhausted) => self.exhausted(exhausted),
                    None => self.timed_out("idle timeout"),
                }),
                // Told to stop while waiting: wait on, within the drain.
                (Ok(Input::Stop), _) if self.draining().is_some() => Ok(Flow::Continue),
                (Ok(Input::Stop), _) => Ok(self.shutting_down()),
                (Err(e), _) => Err(e),
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
        self.conn.close().await;
        debug!(target: TARGET, %protocol, client = %self.client, "connection closed");
    }

    /// While the listener stops, until when this session may still begin
    /// a command: none when it is not stopping, or must stop now (no
    /// drain, the drain is over, or a message came in since the stop, so
    /// a client that sends mail after mail moves on to the new process).
    fn draining(&mut self) -> Option<Instant> {
        if !self.conn.stopping() || self.limits().stop_drain.is_zero() {
            return None;
        }
        let (messages, drain) = (self.messages, self.limits().stop_drain);
        let (until, messages_then) = *self
            .drain
            .get_or_insert_with(|| (Instant::now() + drain, messages));
        (Instant::now() < until && self.messages == messages_then).then_some(until)
    }

    /// The 220 of a new connection, also sent after XCLIENT (Postfix
    /// answers it as if the client had just connected).
    fn greet(&mut self) {
        let kind = match self.inner.protocol {
            Protocol::Smtp => "ESMTP",
            Protocol::Lmtp => "LMTP",
        };
        let greeting = format!("220 {} {kind} ischedule-bridge ready", self.inner.hostname);
        self.conn.write_line(&greeting);
    }

    pub(super) fn reply(&mut self, reply: &SmtpReply) {
        self.conn.write_line(&reply.to_string());
    }

    /// Ends a session that used up its budget, naming the limit.
    fn exhausted(&mut self, exhausted: Exhausted) -> Flow {
        warn!(target: TARGET, protocol = %self.inner.protocol, client = %self.client, limit = %exhausted, "session limit reached, closing");
        let text = format!("{} {exhausted}, closing connection", self.inner.hostname);
        self.send(421, EnhancedStatus::new(4, 7, 0), &text);
        Flow::Close
    }

    pub(super) fn send(&mut self, code: u16, enhanced: EnhancedStatus, text: &str) {
        self.reply(&SmtpReply::new(code, Some(enhanced), text));
    }

    /// Replies to a bad command and counts it; closes after too many.
    pub(super) fn bad(&mut self, code: u16, enhanced: EnhancedStatus, text: &str) -> Flow {
        self.send(code, enhanced, text);
        self.errors += 1;
        if self.errors >= self.limits().max_errors.max(1) {
            warn!(target: TARGET, protocol = %self.inner.protocol, client = %self.client, errors = self.errors, "too many errors, closing");
            let text = format!("{} too many errors", self.inner.hostname);
            self.send(421, EnhancedStatus::new(4, 7, 0), &text);
            return Flow::Close;
        }
        Flow::Continue
    }

    pub(super) fn timed_out(&mut self, what: &str) -> Flow {
        debug!(target: TARGET, protocol = %self.inner.protocol, client = %self.client, what, "timeout");
        let text = format!("{} {what}, closing connection", self.inner.hostname);
        self.send(421, EnhancedStatus::new(4, 4, 2), &text);
        Flow::Close
    }

    pub(super) fn shutting_down(&mut self) -> Flow {
        let text = format!("{} shutting down", self.inner.hostname);
        self.send(421, EnhancedStatus::new(4, 3, 2), &text);
        Flow::Close
    }

    async fn command(&mut self, line: &[u8]) -> io::Result<Flow> {
        let Ok(line) = std::str::from_utf8(line) else {
            return Ok(self.bad(500, EnhancedStatus::new(5, 5, 2), "syntax error: not UTF-8"));
        };
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Ok(self.bad(
                500,
                EnhancedStatus::new(5, 5, 2),
                "syntax error: control character",
            ));
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
            "XCLIENT" => Ok(self.xclient(args)),
            "AUTH" if smtp => self.auth(args).await,
            "MAIL" => Ok(self.mail(args)),
            "RCPT" => Ok(self.rcpt(args).await),
            "DATA" => self.data(args).await,
            "RSET" => {
                if !args.is_empty() {
                    return Ok(self.bad(501, EnhancedStatus::new(5, 5, 4), "syntax: RSET"));
                }
                self.transaction = None;
                self.send(250, EnhancedStatus::new(2, 0, 0), "reset");
                Ok(Flow::Continue)
            }
            "NOOP" => {
                self.send(250, EnhancedStatus::new(2, 0, 0), "OK");
                Ok(Flow::Continue)
            }
            "QUIT" => {
                let text = format!("{} closing connection", self.inner.hostname);
                self.send(221, EnhancedStatus::new(2, 0, 0), &text);
                Ok(Flow::Close)
            }
            "VRFY" => {
                self.send(
                    252,
                    EnhancedStatus::new(2, 5, 0),
                    "cannot VRFY user, but will accept message and attempt delivery",
                );
                Ok(Flow::Continue)
            }
            "HELP" => {
                let commands = if smtp {
                    "EHLO HELO STARTTLS AUTH XCLIENT MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
                } else {
                    "LHLO XCLIENT MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
                };
                self.send(
                    214,
                    EnhancedStatus::new(2, 0, 0),
                    &format!("commands: {commands}"),
                );
                Ok(Flow::Continue)
            }
            "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" | "OPTIONS" if !args.is_empty() => {
                // A browser or proxy talking HTTP: stop before its lines are
                // taken for commands (cross-protocol attacks).
                warn!(target: TARGET, protocol = %self.inner.protocol, client = %self.client, verb, "HTTP request on the mail port, closing");
                self.send(
                    421,
                    EnhancedStatus::new(4, 7, 0),
                    "this is not an HTTP server",
                );
                Ok(Flow::Close)
            }
            _ => Ok(self.bad(500, EnhancedStatus::new(5, 5, 1), "command unrecognized")),
        }
    }

    fn ehlo(&mut self, args: &str, extended: bool) -> Flow {
        if args.is_empty() || args.len() > 255 {
            return self.bad(501, EnhancedStatus::new(5, 5, 4), "syntax: EHLO hostname");
        }
        self.helo = Some(args.to_owned());
        self.esmtp = extended;
        self.transaction = None;
        let host = self.inner.hostname.clone();
        if !extended {
            self.conn.write_line(&format!("250 {host}"));
            return Flow::Continue;
        }
        let mut lines = vec![
            format!("{host} greets {args}"),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.limits().max_message_bytes),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if xclient_allowed(self.peer) {
            lines.push("XCLIENT ADDR PORT HELO NAME REVERSE_NAME PROTO".to_owned());
        }
        if self.inner.protocol == Protocol::Smtp {
            if self.inner.tls.is_some() && !self.tls {
                lines.push("STARTTLS".to_owned());
            }
            if auth_allowed(self.tls, self.peer) {
                lines.push("AUTH PLAIN LOGIN".to_owned());
            }
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.conn.write_line(&format!("250{sep}{line}"));
        }
        Flow::Continue
    }

    async fn starttls(&mut self, args: &str) -> io::Result<Flow> {
        let Some(acceptor) = self.inner.tls.clone() else {
            return Ok(self.bad(502, EnhancedStatus::new(5, 5, 1), "STARTTLS not available"));
        };
        if self.tls {
            return Ok(self.bad(503, EnhancedStatus::new(5, 5, 1), "already under TLS"));
        }
        if !args.is_empty() {
            return Ok(self.bad(501, EnhancedStatus::new(5, 5, 4), "syntax: STARTTLS"));
        }
        self.send(220, EnhancedStatus::new(2, 0, 0), "ready to start TLS");
        self.conn.flush().await?;
        let bytes = self.conn.discard_input();
        if bytes > 0 {
            warn!(target: TARGET, client = %self.client, bytes, "discarding input pipelined behind STARTTLS");
        }
        match self
            .conn
            .start_tls(&acceptor, self.limits().command_timeout)
            .await
        {
            Ok(()) => {
                // RFC 3207 4.2: forget everything the client said before.
                self.tls = true;
                self.helo = None;
                self.esmtp = false;
                self.authenticated_as = None;
                self.transaction = None;
                Ok(Flow::Continue)
            }
            Err(TlsFailure::NotPlain) => Ok(Flow::Close),
            Err(TlsFailure::Handshake(e)) => {
                info!(target: TARGET, client = %self.client, error = %e, "TLS handshake failed");
                Ok(Flow::Close)
            }
            Err(TlsFailure::Timeout) => {
                info!(target: TARGET, client = %self.client, "TLS handshake timed out");
                Ok(Flow::Close)
            }
        }
    }

    /// Takes the client address and HELO name `ingest` passes on, so that
    /// `mail.local_clients` and SPF judge the real client, not loopback.
    fn xclient(&mut self, args: &str) -> Flow {
        if !xclient_allowed(self.peer) {
            let why = format!(
                "XCLIENT refused: only loopback clients may use it, this one is {}",
                self.peer.ip()
            );
            return self.bad(550, EnhancedStatus::new(5, 7, 0), &why);
        }
        if self.transaction.is_some() {
            return self.bad(
                503,
                EnhancedStatus::new(5, 5, 1),
                "XCLIENT not allowed during a mail transaction, only before MAIL",
            );
        }
        let given = match Xclient::parse(args) {
            Ok(given) => given,
            Err(e) => return self.bad(501, EnhancedStatus::new(5, 5, 4), &e.to_string()),
        };
        if let Some(addr) = given.addr {
            self.client = SocketAddr::new(addr, given.port.unwrap_or(0));
        }
        if let Some(helo) = given.helo {
            self.forwarded_helo = Some(helo);
        }
        info!(target: TARGET, protocol = %self.inner.protocol, peer = %self.peer, client = %self.client, helo = self.forwarded_helo.as_deref().unwrap_or(""), "XCLIENT");
        // As after a new connection: the client greets again.
        self.helo = None;
        self.esmtp = false;
        self.greet();
        Flow::Continue
    }

    fn mail(&mut self, args: &str) -> Flow {
        if self.helo.is_none() {
            let hello = match self.inner.protocol {
                Protocol::Smtp => "send EHLO/HELO first",
                Protocol::Lmtp => "send LHLO first",
            };
            return self.bad(503, EnhancedStatus::new(5, 5, 1), hello);
        }
        if self.transaction.is_some() {
            return self.bad(503, EnhancedStatus::new(5, 5, 1), "nested MAIL command");
        }
        let Some(rest) = strip_prefix_ci(args, "FROM:") else {
            return self.bad(
                501,
                EnhancedStatus::new(5, 5, 4),
                "syntax: MAIL FROM:<address>",
            );
        };
        let Some((from, params)) = parse_path(rest) else {
            return self.bad(
                501,
                EnhancedStatus::new(5, 1, 7),
                "bad sender address syntax",
            );
        };
        if !from.is_empty() && !valid_mailbox(&from) {
            return self.bad(
                501,
                EnhancedStatus::new(5, 1, 7),
                "bad sender address syntax",
            );
        }
        if is_address_literal(&from) {
            return self.bad(
                553,
                EnhancedStatus::new(5, 1, 7),
                &format!("sender {from} refused: address literals are not accepted, use a domain"),
            );
        }
        for param in params.split_whitespace() {
            if !self.esmtp {
                return self.bad(555, EnhancedStatus::new(5, 5, 4), "parameters need EHLO");
            }
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => {
                    let Some(size) = Some(value)
                        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())
                    else {
                        return self.bad(501, EnhancedStatus::new(5, 5, 4), "bad SIZE parameter");
                    };
                    if size > self.limits().max_message_bytes as u64 {
                        self.send(
                            552,
                            EnhancedStatus::new(5, 3, 4),
                            "message size exceeds fixed maximum message size",
                        );
                        return Flow::Continue;
                    }
                }
                "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
                // RFC 4954 5: the submitter's identity; accepted and ignored.
                "AUTH" if self.inner.protocol == Protocol::Smtp && !value.is_empty() => {}
                _ => {
                    return self.bad(
                        555,
                        EnhancedStatus::new(5, 5, 4),
                        "unsupported MAIL parameter",
                    )
                }
            }
        }
        self.transaction = Some(Transaction {
            mail_from: from,
            recipients: Vec::new(),
        });
        self.send(250, EnhancedStatus::new(2, 1, 0), "sender OK");
        Flow::Continue
    }

    async fn rcpt(&mut self, args: &str) -> Flow {
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            return self.bad(503, EnhancedStatus::new(5, 5, 1), "need MAIL first");
        };
        let Some(rest) = strip_prefix_ci(args, "TO:") else {
            return self.bad(
                501,
                EnhancedStatus::new(5, 5, 4),
                "syntax: RCPT TO:<address>",
            );
        };
        let Some((to, params)) = parse_path(rest) else {
            return self.bad(
                501,
                EnhancedStatus::new(5, 1, 3),
                "bad recipient address syntax",
            );
        };
        if !valid_mailbox(&to) && !to.eq_ignore_ascii_case("postmaster") {
            return self.bad(
                501,
                EnhancedStatus::new(5, 1, 3),
                "bad recipient address syntax",
            );
        }
        if is_address_literal(&to) {
            return self.bad(
                553,
                EnhancedStatus::new(5, 1, 3),
                &format!("recipient {to} refused: address literals are not accepted, use a domain"),
            );
        }
        if !params.is_empty() {
            return self.bad(
                555,
                EnhancedStatus::new(5, 5, 4),
                "unsupported RCPT parameter",
            );
        }
        if count >= self.limits().max_recipients {
            self.send(452, EnhancedStatus::new(4, 5, 3), "too many recipients");
            return Flow::Continue;
        }
        let envelope = self.envelope();
        match self.inner.delivery.accept_recipient(&envelope, &to).await {
            Ok(()) => {
                if let Some(t) = self.transaction.as_mut() {
                    t.recipients.push(to);
                }
                self.send(250, EnhancedStatus::new(2, 1, 5), "recipient OK");
            }
            Err(reply) => self.reply(&reply),
        }
        Flow::Continue
    }

    async fn data(&mut self, args: &str) -> io::Result<Flow> {
        if !args.is_empty() {
            return Ok(self.bad(501, EnhancedStatus::new(5, 5, 4), "syntax: DATA"));
        }
        match &self.transaction {
            None => return Ok(self.bad(503, EnhancedStatus::new(5, 5, 1), "need MAIL first")),
            Some(t) if t.recipients.is_empty() => {
                self.send(554, EnhancedStatus::new(5, 5, 1), "no valid recipients");
                return Ok(Flow::Continue);
            }
            Some(_) => {}
        }
        self.reply(&SmtpReply::new(
            354,
            None,
            "end data with <CR><LF>.<CR><LF>",
        ));
        let limits = self.limits();
        let (max_bytes, data_timeout) = (limits.max_message_bytes, limits.data_timeout);
        let now = Instant::now();
        let limit = self
            .budget
            .deadline(now, data_timeout)
            .saturating_duration_since(now);
        let data = self.conn.read_data(max_bytes, limit).await?;
        let envelope = self.envelope();
        self.transaction = None;
        self.messages += 1;
        let message = match data {
            Data::Complete(message) => message,
            Data::TooBig => {
                let r = SmtpReply::new(
                    552,
                    Some(EnhancedStatus::new(5, 3, 4)),
                    "message size exceeds fixed maximum message size",
                );
                return Ok(self.reject_message(&envelope, r));
            }
            Data::LineTooLong => {
                let r = SmtpReply::new(500, Some(EnhancedStatus::new(5, 5, 2)), "line too long");
                return Ok(self.reject_message(&envelope, r));
            }
            Data::Timeout => {
                self.log_transaction(&envelope, 0, "timeout during DATA");
                return Ok(match self.budget.expired(Instant::now()) {
                    Some(exhausted) => self.exhausted(exhausted),
                    None => self.timed_out("timeout waiting for data"),
                });
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
                SmtpReply::new(
                    451,
                    Some(EnhancedStatus::new(4, 3, 0)),
                    "internal error: no delivery status",
                ),
            );
        }
        for reply in &replies {
            count_verdict(reply);
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
                let failed: Vec<(String, SmtpReply)> = envelope
                    .recipients
                    .iter()
                    .zip(&replies)
                    .filter(|(_, r)| !r.is_positive())
                    .map(|(rcpt, r)| (rcpt.clone(), r.clone()))
                    .collect();
                let mixed = !failed.is_empty()
                    && replies.iter().any(SmtpReply::is_positive)
                    && !replies.iter().any(SmtpReply::is_transient);
                let null_sender = envelope.mail_from.is_empty();
                let reported = mixed
                    && !null_sender
                    && self
                        .inner
                        .delivery
                        .report_failures(&envelope, &message, &failed)
                        .await;
                let summary = smtp_summary(&replies, reported);
                let mut outcome = summary.to_string();
                if mixed {
                    let codes: Vec<String> =
                        failed.iter().map(|(_, r)| r.code.to_string()).collect();
                    let dsn = match (null_sender, reported) {
                        (true, _) => "null sender: no DSN",
                        (false, true) => "DSN",
                        (false, false) => "DSN suppressed",
                    };
                    outcome += &format!("; failed {} ({dsn})", codes.join(","));
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
    fn reject_message(&mut self, envelope: &Envelope, reply: SmtpReply) -> Flow {
        let times = match self.inner.protocol {
            Protocol::Smtp => 1,
            Protocol::Lmtp => envelope.recipients.len(),
        };
        for _ in 0..times {
            self.reply(&reply);
        }
        for _ in &envelope.recipients {
            count_verdict(&reply);
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
            helo: self
                .forwarded_helo
                .clone()
                .or_else(|| self.helo.clone())
                .unwrap_or_default(),
            client: self.client,
            tls: self.tls,
            authenticated_as: self.authenticated_as.clone(),
        }
    }
}

/// XCLIENT rewrites who the client is, so only a process on this host may
/// use it: `ingest`, run by the local MTA.
fn xclient_allowed(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// The one SMTP reply after DATA for per-recipient `replies`: all 2xx → 250;
/// else any 4xx → the first 4xx (the whole message is deferred, even for
/// the recipients that took it); else some 2xx → 250 (the rest go into a
/// DSN when `reported`); else the first permanent failure.
fn smtp_summary(replies: &[SmtpReply], reported: bool) -> SmtpReply {
    if replies.iter().all(SmtpReply::is_positive) {
        return SmtpReply::new(250, Some(EnhancedStatus::new(2, 0, 0)), "message accepted");
    }
    // Only a deferred message is retried by the sending MTA: a temporary
    // failure defers it all. Recipients that already got it are answered
    // from the idempotency record on the retry, so nothing is sent twice.
    if let Some(temporary) = replies.iter().find(|r| r.is_transient()) {
        return temporary.clone();
    }
    if replies.iter().any(SmtpReply::is_positive) {
        let text = if reported {
            "message accepted for some recipients, the others are reported in a DSN"
        } else {
            "message accepted for some recipients"
        };
        return SmtpReply::new(250, Some(EnhancedStatus::new(2, 0, 0)), text);
    }
    replies
        .iter()
        .find(|r| r.is_permanent())
        .or_else(|| replies.first())
        .cloned()
        .unwrap_or_else(|| {
            SmtpReply::new(
                554,
                Some(EnhancedStatus::new(5, 5, 1)),
                "no valid recipients",
            )
        })
}

/// One recipient's verdict, by the class of the reply it was given.
fn count_verdict(reply: &SmtpReply) {
    metrics::get().inbound(match reply.code.class() {
        2 => InboundVerdict::Accepted,
        4 => InboundVerdict::Deferred,
        _ => InboundVerdict::Refused,
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use std::time::Duration;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

    use super::*;
    use crate::mail::inbound::listener::{Connections, Delivery, Listener};

    #[derive(Default)]
    struct Recorder {
        delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
        reported: Mutex<Vec<Vec<(String, SmtpReply)>>>,
        /// deliver() returns this many replies, when set.
        reply_count: Option<usize>,
    }

    #[async_trait::async_trait]
    impl Delivery for Recorder {
        async fn accept_recipient(&self, _: &Envelope, rcpt: &str) -> Result<(), SmtpReply> {
            if rcpt.starts_with("denied") {
                return Err(SmtpReply::new(
                    550,
                    Some(EnhancedStatus::new(5, 7, 1)),
                    "relaying denied",
                ));
            }
            Ok(())
        }
        async fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Vec<SmtpReply> {
            self.delivered
                .lock()
                .unwrap()
                .push((envelope.clone(), message.to_vec()));
            let mut replies: Vec<SmtpReply> = envelope
                .recipients
                .iter()
                .map(|r| {
                    if r.starts_with("temp") {
                        SmtpReply::new(451, Some(EnhancedStatus::new(4, 4, 1)), "try later")
                    } else if r.starts_with("bad") {
                        SmtpReply::new(550, Some(EnhancedStatus::new(5, 1, 1)), "no such user")
                    } else {
                        SmtpReply::new(250, Some(EnhancedStatus::new(2, 0, 0)), "delivered")
                    }
                })
                .collect();
            if let Some(n) = self.reply_count {
                replies.truncate(n);
            }
            replies
        }
        async fn report_failures(
            &self,
            _: &Envelope,
            _: &[u8],
            failed: &[(String, SmtpReply)],
        ) -> bool {
            self.reported.lock().unwrap().push(failed.to_vec());
            true
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
        let connections = Connections {
            total: 1,
            per_client: 1,
        };
        let listener = Listener::new(
            protocol,
            limits,
            connections,
            "mx.test".into(),
            None,
            delivery.clone(),
        );
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
        STANDARD.encode(data)
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
        assert_eq!(
            h.client.cmd("RCPT TO:<x@[192.0.2.1]>").await,
            "553 5.1.3 recipient x@[192.0.2.1] refused: address literals are not accepted, use a domain"
        );
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
        assert_eq!(reported[0][0].1.code.get(), 550);
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

    #[tokio::test]
    async fn while_draining_a_session_may_finish_its_mail_then_stops() {
        let limits = Limits {
            stop_drain: Duration::from_millis(300),
            ..Limits::default()
        };
        let mut h = start(Protocol::Smtp, limits, "127.0.0.1:1", Recorder::default()).await;
        h.client.cmd("EHLO c").await;
        h.stop.send(true).unwrap();
        // Within the drain, the client that just connected gets its mail in.
        assert!(h.client.cmd("MAIL FROM:<a@b.c>").await.starts_with("250"));
        assert!(h.client.cmd("RCPT TO:<x@mx.test>").await.starts_with("250"));
        assert!(h.client.cmd("DATA").await.starts_with("354"));
        h.client.send("hello\r\n.\r\n").await;
        assert_eq!(h.client.reply().await, "250 2.0.0 message accepted");
        // A message came in since the stop: the next one goes elsewhere.
        assert_eq!(h.client.reply().await, "421 4.3.2 mx.test shutting down");
        assert_eq!(h.delivery.delivered.lock().unwrap().len(), 1);

        // A client that stays silent is told when the drain is over.
        let limits = Limits {
            stop_drain: Duration::from_millis(300),
            ..Limits::default()
        };
        let mut h = start(Protocol::Smtp, limits, "127.0.0.1:1", Recorder::default()).await;
        h.client.cmd("EHLO c").await;
        let stopped = Instant::now();
        h.stop.send(true).unwrap();
        assert_eq!(h.client.reply().await, "421 4.3.2 mx.test shutting down");
        assert!(stopped.elapsed() >= Duration::from_millis(250));
        assert!(h.client.eof().await);
    }

    #[test]
    fn the_budget_counts_every_command_and_ends_with_the_session() {
        let limits = Limits {
            max_commands: 3,
            session_timeout: Duration::from_secs(10),
            ..Limits::default()
        };
        let t0 = Instant::now();
        let mut budget = Budget::new(&limits, t0);
        for _ in 0..3 {
            assert_eq!(budget.charge(), Ok(()));
        }
        assert_eq!(budget.charge(), Err(Exhausted::Commands(3)));
        let long = Duration::from_secs(300);
        assert_eq!(budget.deadline(t0, long), t0 + Duration::from_secs(10));
        let short = Duration::from_secs(1);
        assert_eq!(budget.deadline(t0, short), t0 + short);
        assert_eq!(budget.expired(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            budget.expired(t0 + Duration::from_secs(10)),
            Some(Exhausted::Lifetime(Duration::from_secs(10)))
        );
        assert_eq!(
            Exhausted::Commands(3).to_string(),
            "too many commands (limit 3 per session)"
        );
    }

    #[tokio::test]
    async fn noop_and_rset_count_against_the_command_budget() {
        let limits = Limits {
            max_commands: 3,
            ..Limits::default()
        };
        let mut h = start(Protocol::Smtp, limits, "192.0.2.1:1", Recorder::default()).await;
        assert_eq!(h.client.cmd("NOOP").await, "250 2.0.0 OK");
        assert_eq!(h.client.cmd("RSET").await, "250 2.0.0 reset");
        assert!(h.client.cmd("HELP").await.starts_with("214 "));
        assert_eq!(
            h.client.cmd("NOOP").await,
            "421 4.7.0 mx.test too many commands (limit 3 per session), closing connection"
        );
        assert!(h.client.eof().await);
    }

    #[tokio::test]
    async fn a_busy_session_still_ends_at_its_time_limit() {
        let limits = Limits {
            session_timeout: Duration::from_millis(600),
            command_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let mut h = start(Protocol::Smtp, limits, "192.0.2.1:1", Recorder::default()).await;
        let t0 = Instant::now();
        let mut last = String::new();
        for _ in 0..50 {
            // The session may end while the client sleeps: a write may fail.
            let _ = h.client.w.write_all(b"NOOP\r\n").await;
            last = h.client.reply().await;
            if !last.starts_with("250") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            last,
            "421 4.7.0 mx.test session time limit reached (0.6 s per session), closing connection"
        );
        assert!(t0.elapsed() >= Duration::from_millis(600));
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(h.client.eof().await);
    }

    #[tokio::test]
    async fn xclient_is_for_loopback_only_and_only_before_mail() {
        let mut h = start(
            Protocol::Lmtp,
            Limits::default(),
            "192.0.2.1:1",
            Recorder::default(),
        )
        .await;
        assert!(!h.client.cmd("LHLO c").await.contains("XCLIENT"));
        assert_eq!(
            h.client.cmd("XCLIENT ADDR=198.51.100.1").await,
            "550 5.7.0 XCLIENT refused: only loopback clients may use it, this one is 192.0.2.1"
        );

        let mut h = start(
            Protocol::Lmtp,
            Limits::default(),
            "127.0.0.1:1",
            Recorder::default(),
        )
        .await;
        assert!(h.client.cmd("LHLO c").await.contains("\n250 XCLIENT ADDR"));
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        assert!(h
            .client
            .cmd("XCLIENT ADDR=198.51.100.1")
            .await
            .starts_with("503 5.5.1 XCLIENT not allowed during a mail transaction"));
        h.client.cmd("RSET").await;
        assert_eq!(
            h.client.cmd("XCLIENT ADDR=198.51.100.1 LOGIN=x").await,
            "501 5.5.4 XCLIENT attribute LOGIN is not supported (ADDR, PORT, HELO, NAME, REVERSE_NAME, PROTO are)"
        );
        assert!(h
            .client
            .cmd("XCLIENT ADDR=198.51.100.1 HELO=mx.remote.test")
            .await
            .starts_with("220 mx.test LMTP"));
        assert!(
            h.client.cmd("MAIL FROM:<a@b.c>").await.starts_with("503 "),
            "greet again first"
        );
        h.client.cmd("LHLO ischedule-bridge-ingest").await;
        h.client.cmd("MAIL FROM:<a@b.c>").await;
        h.client.cmd("RCPT TO:<x@mx.test>").await;
        h.client.cmd("DATA").await;
        assert!(h.client.cmd("m\r\n.").await.starts_with("250 "));
        let delivered = h.delivery.delivered.lock().unwrap();
        let envelope = &delivered[0].0;
        assert_eq!(envelope.client.ip().to_string(), "198.51.100.1");
        assert_eq!(
            envelope.helo, "mx.remote.test",
            "the LHLO after it does not replace it"
        );
    }

    #[tokio::test]
    async fn address_literals_are_refused_at_mail_and_rcpt() {
        let mut h = smtp("192.0.2.1:1").await;
        h.client.cmd("EHLO c").await;
        assert_eq!(
            h.client.cmd("MAIL FROM:<a@[IPv6:2001:db8::1]>").await,
            "553 5.1.7 sender a@[IPv6:2001:db8::1] refused: address literals are not accepted, use a domain"
        );
        assert!(h.client.cmd("MAIL FROM:<a@b.c>").await.starts_with("250 "));
        assert!(h
            .client
            .cmd("RCPT TO:<x@[192.0.2.1]>")
            .await
            .starts_with("553 5.1.3 recipient x@[192.0.2.1] refused"));
    }

    #[test]
    fn smtp_summary_rules() {
        let ok = SmtpReply::new(250, Some(EnhancedStatus::new(2, 0, 0)), "ok");
        let temp = SmtpReply::new(451, Some(EnhancedStatus::new(4, 4, 1)), "t");
        let temp2 = SmtpReply::new(452, Some(EnhancedStatus::new(4, 2, 2)), "t2");
        let perm = SmtpReply::new(550, Some(EnhancedStatus::new(5, 1, 1)), "p");
        let perm2 = SmtpReply::new(554, Some(EnhancedStatus::new(5, 6, 0)), "p2");
        let s = |r: &[SmtpReply]| smtp_summary(r, false);
        assert_eq!(
            s(&[ok.clone(), ok.clone()]).to_string(),
            "250 2.0.0 message accepted"
        );
        assert_eq!(s(&[perm.clone(), ok.clone()]).code.get(), 250);
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
        let weird = SmtpReply::new(354, None, "?");
        assert_eq!(
            s(&[perm.clone(), weird.clone()]),
            perm,
            "not 2xx/4xx is permanent"
        );
    }
}
