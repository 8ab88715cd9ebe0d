//! The inbound mail listener (`mail::inbound::listener`) against real clients:
//! swaks (Debian `swaks`, with `libnet-ssleay-perl` for its TLS) and Python's
//! smtplib, SMTP and LMTP; and the DSNs of `mail::outbound::dsn` checked by Python's
//! `email` package. Nothing is skipped: a missing client fails the test.
//!
//! The test delivery takes every recipient at RCPT except `denied*` (550
//! 5.7.1), and after DATA answers `temp*` with 451 4.4.1, `bad*` with 550
//! 5.1.1 and the rest with 250 2.0.0; it records what it got.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ischedule_bridge::mail::inbound::listener::{
    Connections, Delivery, Envelope, Limits, Listener, Protocol,
};
use ischedule_bridge::mail::outbound::dsn;
use ischedule_bridge::smtp::{EnhancedStatus, SmtpReply};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use support::Certs;
use tokio_rustls::rustls;

const HOST: &str = "mx.test";

/// One `report_failures` call, with the DSN built from it.
#[derive(Debug, Clone)]
struct Report {
    envelope: Envelope,
    failed: Vec<(String, SmtpReply)>,
    dsn: Vec<u8>,
}

#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
    reported: Mutex<Vec<Report>>,
}

#[async_trait::async_trait]
impl Delivery for Recorder {
    async fn accept_recipient(&self, _: &Envelope, recipient: &str) -> Result<(), SmtpReply> {
        if recipient.starts_with("denied") {
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
        envelope
            .recipients
            .iter()
            .map(|r| {
                if r.starts_with("temp") {
                    SmtpReply::new(
                        451,
                        Some(EnhancedStatus::new(4, 4, 1)),
                        "receiver unreachable",
                    )
                } else if r.starts_with("bad") {
                    SmtpReply::new(
                        550,
                        Some(EnhancedStatus::new(5, 1, 1)),
                        "no such calendar user",
                    )
                } else {
                    SmtpReply::new(250, Some(EnhancedStatus::new(2, 0, 0)), "delivered")
                }
            })
            .collect()
    }

    async fn report_failures(
        &self,
        envelope: &Envelope,
        message: &[u8],
        failed: &[(String, SmtpReply)],
    ) -> bool {
        let dsn = dsn::build(HOST, &envelope.mail_from, message, failed);
        self.reported.lock().unwrap().push(Report {
            envelope: envelope.clone(),
            failed: failed.to_vec(),
            dsn,
        });
        true
    }

    fn check_credentials(&self, user: &str, password: &str) -> bool {
        user == "alice" && password == "secret"
    }
}

/// A [`Listener`] on a free loopback port, on its own runtime.
struct Server {
    port: u16,
    delivery: Arc<Recorder>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
    /// Runs the listener; dropped with the server, which ends what is left.
    _rt: tokio::runtime::Runtime,
}

struct Options {
    protocol: Protocol,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            protocol: Protocol::Smtp,
            limits: Limits::default(),
            tls: None,
            max_connections: 16,
        }
    }
}

impl Server {
    fn smtp() -> Server {
        Server::start(Options::default())
    }

    fn start(options: Options) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let tcp = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().unwrap().port();
        let delivery = Arc::new(Recorder::default());
        let listener = Arc::new(Listener::new(
            options.protocol,
            options.limits,
            Connections {
                total: options.max_connections,
                per_client: options.max_connections,
            },
            HOST.to_owned(),
            options.tls,
            delivery.clone(),
        ));
        let (shutdown, stop) = tokio::sync::watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::channel();
        // The listener serves connections; accepting them is its owner's
        // business (Pingora's in the bridge): here a plain accept loop.
        rt.spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            let mut stopping = stop.clone();
            loop {
                tokio::select! {
                    _ = stopping.wait_for(|&s| s) => break,
                    Ok((tcp, client)) = tcp.accept() => {
                        let (listener, stop) = (listener.clone(), stop.clone());
                        sessions.spawn(async move { listener.serve_connection(tcp, client, stop).await });
                    }
                }
            }
            drop(tcp);
            while sessions.join_next().await.is_some() {}
            let _ = done_tx.send(());
        });
        Server {
            port,
            delivery,
            shutdown: Some(shutdown),
            done: Some(done),
            _rt: rt,
        }
    }

    /// Tells the listener to stop, stops accepting and waits (at most
    /// 10 s) for the sessions to end.
    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(true);
        }
        if let Some(done) = self.done.take() {
            done.recv_timeout(Duration::from_secs(10))
                .expect("the sessions end after shutdown");
        }
    }

    fn delivered(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.delivery.delivered.lock().unwrap().clone()
    }

    fn reported(&self) -> Vec<Report> {
        self.delivery.reported.lock().unwrap().clone()
    }

    /// Runs swaks against this server (`--helo client.test`); returns
    /// whether it succeeded and its transcript.
    fn swaks(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--helo", "client.test", "--timeout", "20"])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run swaks ({e}): apt-get install swaks (scripts/test installs it)")
            });
        let transcript = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !transcript.contains("TLS not available"),
            "swaks lacks TLS support: apt-get install libnet-ssleay-perl\n{transcript}"
        );
        (out.status.success(), transcript)
    }

    /// Runs a Python script with `PORT` set to this server's port; returns
    /// its stdout, panicking with its output if it fails.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .env("PORT", self.port.to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "python failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn connect(&self) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(true);
        }
    }
}

/// A bare TCP client for byte-exact checks.
struct RawClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawClient {
    fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }

    /// One reply line without CRLF; "<EOF>" when the server closed.
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => "<EOF>".to_owned(),
            Ok(_) => line.trim_end_matches(['\r', '\n']).to_owned(),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => "<EOF>".to_owned(),
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Every reply line until the server closes.
    fn rest(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.line() {
                l if l == "<EOF>" => return lines,
                l => lines.push(l),
            }
        }
    }
}

fn file(dir: &Path, name: &str, content: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_string_lossy().into_owned()
}

fn tls_acceptor(certs: &Certs) -> tokio_rustls::TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.cert)
        .expect("read leaf.pem")
        .collect::<Result<_, _>>()
        .expect("parse leaf.pem");
    let key = PrivateKeyDer::from_pem_file(&certs.key).expect("read leaf.key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

const INVITE: &str = "From: organizer@remote.example\n\
To: alice@example.com\n\
Subject: Invitation: design meeting\n\
Message-ID: <inv-42@remote.example>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
\n\
.leading dot\n\
..two dots\n\
.\n\
last line\n";

fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

#[test]
fn swaks_plain_transaction_is_delivered_as_sent() {
    let server = Server::smtp();
    let dir = tempfile::tempdir().unwrap();
    // swaks ends the last line itself
    let data = file(dir.path(), "invite.eml", INVITE.trim_end().as_bytes());
    let (ok, transcript) = server.swaks(&[
        "--from",
        "organizer@remote.example",
        "--to",
        "alice@example.com",
        "--data",
        &format!("@{data}"),
    ]);
    assert!(ok, "{transcript}");
    assert!(transcript.contains("<-  220 mx.test ESMTP"), "{transcript}");
    assert!(transcript.contains("<-  250-PIPELINING"), "{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0 message accepted"),
        "{transcript}"
    );
    assert!(
        transcript.contains(" -> ..leading dot"),
        "swaks stuffs dots:\n{transcript}"
    );

    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    let (envelope, message) = &delivered[0];
    assert_eq!(envelope.mail_from, "organizer@remote.example");
    assert_eq!(envelope.recipients, ["alice@example.com"]);
    assert_eq!(envelope.helo, "client.test");
    assert!(envelope.client.ip().is_loopback());
    assert!(!envelope.tls);
    assert_eq!(envelope.authenticated_as, None);
    assert_eq!(String::from_utf8_lossy(message), crlf(INVITE));
    assert!(server.reported().is_empty());
}

#[test]
fn python_smtplib_transaction_is_delivered_as_sent() {
    let server = Server::smtp();
    let out = server.python(
        r#"
import os, smtplib, sys
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as s:
    code, text = s.ehlo("py.test")
    print(code, "size" in s.esmtp_features, "pipelining" in s.esmtp_features)
    msg = sys.argv[1].replace("\n", "\r\n").encode()
    refused = s.sendmail("organizer@remote.example", ["alice@example.com", "bob@example.com"], msg)
    print("refused", refused)
"#,
        &[INVITE],
    );
    assert_eq!(out, "250 True True\nrefused {}\n");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].0.recipients,
        ["alice@example.com", "bob@example.com"]
    );
    assert_eq!(delivered[0].0.helo, "py.test");
    assert_eq!(String::from_utf8_lossy(&delivered[0].1), crlf(INVITE));
}

#[test]
fn lmtp_answers_once_per_recipient() {
    let server = Server::start(Options {
        protocol: Protocol::Lmtp,
        ..Options::default()
    });
    // swaks speaks LMTP and prints every reply after the final dot
    let (_, transcript) = server.swaks(&[
        "--protocol",
        "LMTP",
        "--from",
        "organizer@remote.example",
        "--to",
        "alice@example.com,temp-bob@example.com,bad-carol@example.com",
    ]);
    assert!(transcript.contains("<-  220 mx.test LMTP"), "{transcript}");
    assert!(transcript.contains(" -> LHLO client.test"), "{transcript}");
    let after_dot = transcript
        .split("\n -> .\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no final dot in:\n{transcript}"));
    let replies: Vec<&str> = after_dot
        .lines()
        .filter(|l| l.starts_with("<-  ") || l.starts_with("<** "))
        .take(3)
        .map(|l| &l[4..])
        .collect();
    assert_eq!(
        replies,
        [
            "250 2.0.0 delivered",
            "451 4.4.1 receiver unreachable",
            "550 5.1.1 no such calendar user"
        ],
        "{transcript}"
    );

    // Python's smtplib.LMTP reads the first reply after DATA; the others follow.
    let out = server.python(
        r#"
import os, smtplib
s = smtplib.LMTP("127.0.0.1", int(os.environ["PORT"]))
print(*s.ehlo("py.test"))
s.mail("organizer@remote.example")
for r in ["alice@example.com", "temp-bob@example.com", "bad-carol@example.com"]:
    print(*s.rcpt(r))
print(*s.data(b"Subject: x\r\n\r\nhello\r\n"))
print(*s.getreply())
print(*s.getreply())
s.quit()
"#,
        &[],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("250 b'mx.test greets py.test"),
        "{out}"
    );
    assert_eq!(
        lines[1..],
        [
            "250 b'2.1.5 recipient OK'",
            "250 b'2.1.5 recipient OK'",
            "250 b'2.1.5 recipient OK'",
            "250 b'2.0.0 delivered'",
            "451 b'4.4.1 receiver unreachable'",
            "550 b'5.1.1 no such calendar user'",
        ],
        "{out}"
    );
    assert_eq!(server.delivered().len(), 2);
    assert!(server.reported().is_empty(), "LMTP needs no DSN");
}

#[test]
fn smtp_mixed_outcome_is_accepted_and_the_failures_reported() {
    let server = Server::smtp();
    let (ok, transcript) = server.swaks(&[
        "--from",
        "organizer@remote.example",
        "--to",
        "alice@example.com,bad-bob@example.com,bad-carol@example.com",
    ]);
    assert!(ok, "{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0 message accepted for some recipients"),
        "{transcript}"
    );
    let reported = server.reported();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].envelope.mail_from, "organizer@remote.example");
    let failed: Vec<String> = reported[0]
        .failed
        .iter()
        .map(|(rcpt, reply)| format!("{rcpt}: {reply}"))
        .collect();
    assert_eq!(
        failed,
        [
            "bad-bob@example.com: 550 5.1.1 no such calendar user",
            "bad-carol@example.com: 550 5.1.1 no such calendar user"
        ]
    );

    // A temporary failure defers the whole message: only the sending MTA's
    // retry can get it there, and a 250 would stop that.
    let (ok, transcript) = server.swaks(&[
        "--from",
        "organizer@remote.example",
        "--to",
        "alice@example.com,bad-bob@example.com,temp-carol@example.com",
    ]);
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains("<** 451 4.4.1 receiver unreachable"),
        "{transcript}"
    );
    assert_eq!(server.reported().len(), 1, "no DSN for a deferred message");

    // the null sender gets no DSN (RFC 5321 6.1: never bounce a bounce)
    let out = server.python(
        r#"
import os, smtplib
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as s:
    print(s.sendmail("", ["alice@example.com", "bad-bob@example.com"], b"Subject: bounce\r\n\r\nx\r\n"))
"#,
        &[],
    );
    assert_eq!(out, "{}\n");
    assert_eq!(server.delivered().len(), 3);
    assert_eq!(server.delivered()[2].0.mail_from, "");
    assert_eq!(server.reported().len(), 1, "no DSN for <>");
}

#[test]
fn dsn_is_valid_for_python_email() {
    let server = Server::smtp();
    let dir = tempfile::tempdir().unwrap();
    let data = file(dir.path(), "invite.eml", INVITE.as_bytes());
    let (ok, transcript) = server.swaks(&[
        "--from",
        "organizer@remote.example",
        "--to",
        "alice@example.com,bad-bob@example.com,bad-carol@example.com",
        "--data",
        &format!("@{data}"),
    ]);
    assert!(ok, "{transcript}");
    let reported = server.reported();
    let dsn_file = file(dir.path(), "dsn.eml", &reported[0].dsn);
    let out = server.python(
        r#"
import email, sys
from email import policy
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=policy.default)
for part in m.walk():
    assert not part.defects, (part.get_content_type(), part.defects)
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status"
print("from", m["From"].addresses[0].addr_spec)
print("to", m["To"].addresses[0].addr_spec)
print("subject", m["Subject"])
print("auto", m["Auto-Submitted"])
print("date", m["Date"].datetime is not None)
parts = list(m.iter_parts())
print("parts", *[p.get_content_type() for p in parts])
assert "bad-bob@example.com" in parts[0].get_content()
blocks = parts[1].get_payload()
print("mta", blocks[0]["Reporting-MTA"], "|", blocks[0]["Arrival-Date"] is not None)
for b in blocks[1:]:
    print("rcpt", b["Final-Recipient"], "|", b["Action"], "|", b["Status"], "|", b["Diagnostic-Code"])
headers = parts[2].get_content()
print("orig", email.message_from_string(headers)["Message-ID"], "BODY" if "two dots" in headers else "no body")
"#,
        &[&dsn_file],
    );
    assert_eq!(
        out,
        "from MAILER-DAEMON@mx.test\n\
         to organizer@remote.example\n\
         subject Undelivered calendar message\n\
         auto auto-replied\n\
         date True\n\
         parts text/plain message/delivery-status text/rfc822-headers\n\
         mta dns; mx.test | True\n\
         rcpt rfc822; bad-bob@example.com | failed | 5.1.1 | smtp; 550 5.1.1 no such calendar user\n\
         rcpt rfc822; bad-carol@example.com | failed | 5.1.1 | smtp; 550 5.1.1 no such calendar user\n\
         orig <inv-42@remote.example> no body\n"
    );
}

#[test]
fn smtp_all_failed_answers_the_first_failure() {
    let server = Server::smtp();
    for (to, want) in [
        (
            "bad-a@example.com,temp-b@example.com",
            "451 4.4.1 receiver unreachable",
        ),
        (
            "bad-a@example.com,bad-b@example.com",
            "550 5.1.1 no such calendar user",
        ),
        (
            "temp-a@example.com,temp-b@example.com",
            "451 4.4.1 receiver unreachable",
        ),
    ] {
        let (ok, transcript) = server.swaks(&["--from", "o@remote.example", "--to", to]);
        assert!(!ok, "{transcript}");
        assert!(
            transcript.contains(&format!("<** {want}")),
            "{to}:\n{transcript}"
        );
    }
    assert_eq!(server.delivered().len(), 3);
    assert!(
        server.reported().is_empty(),
        "nothing was accepted, nothing to report"
    );
}

#[test]
fn swaks_pipelining() {
    let server = Server::smtp();
    let (ok, transcript) = server.swaks(&[
        "--pipeline",
        "--from",
        "o@remote.example",
        "--to",
        "alice@example.com,denied-x@elsewhere.example,bob@example.com",
    ]);
    assert!(ok, "{transcript}");
    // swaks sends MAIL, the RCPTs and DATA in one go, then reads the replies
    let sent = transcript.find(" -> DATA").expect("DATA sent");
    let first_reply = transcript.find("<-  250 2.1.0").expect("MAIL accepted");
    assert!(sent < first_reply, "not pipelined:\n{transcript}");
    let replies: Vec<&str> = transcript[sent..]
        .lines()
        .filter(|l| l.starts_with("<-  ") || l.starts_with("<** "))
        .take(6)
        .collect();
    assert_eq!(
        replies,
        [
            "<-  250 2.1.0 sender OK",
            "<-  250 2.1.5 recipient OK",
            "<** 550 5.7.1 relaying denied",
            "<-  250 2.1.5 recipient OK",
            "<-  354 end data with <CR><LF>.<CR><LF>",
            "<-  250 2.0.0 message accepted",
        ],
        "{transcript}"
    );
    assert_eq!(
        server.delivered()[0].0.recipients,
        ["alice@example.com", "bob@example.com"]
    );
}

#[test]
fn a_whole_session_in_one_packet_is_answered_in_order() {
    let server = Server::smtp();
    let mut c = server.connect();
    c.send(
        b"EHLO raw.test\r\nMAIL FROM:<o@remote.example>\r\nRCPT TO:<a@example.com>\r\n\
          RCPT TO:<denied@x.example>\r\nNOOP\r\nRSET\r\nMAIL FROM:<o@remote.example>\r\n\
          RCPT TO:<b@example.com>\r\nDATA\r\n",
    );
    c.send(b"Subject: one\r\n\r\n..x\r\n.\r\nMAIL FROM:<p@remote.example>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
    c.send(b"Subject: two\r\n\r\ny\r\n.\r\nQUIT\r\n");
    let lines: Vec<String> = c
        .rest()
        .into_iter()
        .filter(|l| !l.starts_with("250-"))
        .collect();
    assert_eq!(
        lines,
        [
            "220 mx.test ESMTP ischedule-bridge ready",
            "250 AUTH PLAIN LOGIN",
            "250 2.1.0 sender OK",
            "250 2.1.5 recipient OK",
            "550 5.7.1 relaying denied",
            "250 2.0.0 OK",
            "250 2.0.0 reset",
            "250 2.1.0 sender OK",
            "250 2.1.5 recipient OK",
            "354 end data with <CR><LF>.<CR><LF>",
            "250 2.0.0 message accepted",
            "250 2.1.0 sender OK",
            "250 2.1.5 recipient OK",
            "354 end data with <CR><LF>.<CR><LF>",
            "250 2.0.0 message accepted",
            "221 2.0.0 mx.test closing connection",
        ]
    );
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].0.recipients, ["b@example.com"]);
    assert_eq!(delivered[0].1, b"Subject: one\r\n\r\n.x\r\n");
    assert_eq!(delivered[1].0.mail_from, "p@remote.example");
}

#[test]
fn size_over_the_limit_at_mail_and_at_data() {
    let server = Server::start(Options {
        limits: Limits {
            max_message_bytes: 2000,
            ..Limits::default()
        },
        ..Options::default()
    });
    // smtplib declares SIZE= when the server offers SIZE: refused at MAIL
    let big = format!("Subject: big\r\n\r\n{}", "0123456789abcdef\r\n".repeat(200));
    let out = server.python(
        r#"
import os, smtplib, sys
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as s:
    s.ehlo("py.test")
    print("SIZE", s.esmtp_features["size"])
    try:
        s.sendmail("o@remote.example", ["alice@example.com"], sys.argv[1].encode())
    except smtplib.SMTPSenderRefused as e:
        print(e.smtp_code, e.smtp_error.decode())
"#,
        &[&big],
    );
    assert_eq!(
        out,
        "SIZE 2000\n552 5.3.4 message size exceeds fixed maximum message size\n"
    );

    // swaks declares no SIZE: refused after the data
    let dir = tempfile::tempdir().unwrap();
    let data = file(dir.path(), "big.eml", big.as_bytes());
    let (ok, transcript) = server.swaks(&[
        "--from",
        "o@remote.example",
        "--to",
        "alice@example.com",
        "--data",
        &format!("@{data}"),
    ]);
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("<-  250-SIZE 2000"), "{transcript}");
    assert!(
        transcript.contains("<** 552 5.3.4 message size exceeds fixed maximum message size"),
        "{transcript}"
    );
    assert!(server.delivered().is_empty());
}

#[test]
fn too_many_recipients_get_452() {
    let server = Server::start(Options {
        limits: Limits {
            max_recipients: 3,
            ..Limits::default()
        },
        ..Options::default()
    });
    let out = server.python(
        r#"
import os, smtplib
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as s:
    rcpts = ["r%d@example.com" % i for i in range(1, 6)]
    print(s.sendmail("o@remote.example", rcpts, b"Subject: many\r\n\r\nx\r\n"))
"#,
        &[],
    );
    assert_eq!(
        out,
        "{'r4@example.com': (452, b'4.5.3 too many recipients'), \
         'r5@example.com': (452, b'4.5.3 too many recipients')}\n"
    );
    assert_eq!(
        server.delivered()[0].0.recipients,
        ["r1@example.com", "r2@example.com", "r3@example.com"]
    );
}

#[test]
fn denied_recipient_is_refused_at_rcpt() {
    let server = Server::smtp();
    let (ok, transcript) = server.swaks(&[
        "--from",
        "o@remote.example",
        "--to",
        "denied@elsewhere.example",
    ]);
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains(" -> RCPT TO:<denied@elsewhere.example>"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<** 550 5.7.1 relaying denied"),
        "{transcript}"
    );
    assert!(!transcript.contains(" -> DATA"), "{transcript}");
    assert!(server.delivered().is_empty());
}

#[test]
fn starttls_and_auth_plain_with_swaks() {
    let certs = Certs::generate(&["localhost", "127.0.0.1"]);
    let server = Server::start(Options {
        tls: Some(tls_acceptor(&certs)),
        ..Options::default()
    });
    let (ok, transcript) = server.swaks(&[
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "secret",
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.com",
    ]);
    assert!(ok, "{transcript}");
    assert!(transcript.contains("<-  250-STARTTLS"), "{transcript}");
    assert!(
        transcript.contains("<-  220 2.0.0 ready to start TLS"),
        "{transcript}"
    );
    assert!(
        transcript.contains("=== TLS started with cipher"),
        "{transcript}"
    );
    // after STARTTLS: no second STARTTLS, AUTH offered, and it works
    assert!(!transcript.contains("<~  250-STARTTLS"), "{transcript}");
    assert!(
        transcript.contains("<~  250 AUTH PLAIN LOGIN"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<~  235 2.7.0 authentication successful"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<~  250 2.0.0 message accepted"),
        "{transcript}"
    );
    let delivered = server.delivered();
    assert!(delivered[0].0.tls);
    assert_eq!(delivered[0].0.authenticated_as.as_deref(), Some("alice"));

    let (ok, transcript) = server.swaks(&[
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "wrong",
        "--to",
        "bob@example.com",
    ]);
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains("<~* 535 5.7.8 authentication credentials invalid"),
        "{transcript}"
    );
    assert_eq!(server.delivered().len(), 1);
}

#[test]
fn starttls_and_auth_with_python_verifying_the_certificate() {
    let certs = Certs::generate(&["localhost", "127.0.0.1"]);
    let server = Server::start(Options {
        tls: Some(tls_acceptor(&certs)),
        ..Options::default()
    });
    let ca = certs.ca.to_string_lossy().into_owned();
    let out = server.python(
        r#"
import os, smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for mech in ["PLAIN", "LOGIN"]:
    with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as s:
        s.ehlo("py.test")
        print("before", s.has_extn("starttls"), s.esmtp_features.get("auth").strip())
        print(*s.starttls(context=ctx))
        s.ehlo("py.test")
        print("after", s.has_extn("starttls"), s.esmtp_features.get("auth").strip(), s.sock.version().startswith("TLS"))
        s.user, s.password = "alice", "secret"
        print(*s.auth(mech, getattr(s, "auth_" + mech.lower())))
        print(s.sendmail("alice@example.com", ["bob@example.com"], b"Subject: tls\r\n\r\nx\r\n"))
"#,
        &[&ca],
    );
    let once = "before True PLAIN LOGIN\n\
                220 b'2.0.0 ready to start TLS'\n\
                after False PLAIN LOGIN True\n\
                235 b'2.7.0 authentication successful'\n\
                {}\n";
    assert_eq!(out, once.repeat(2));
    for (envelope, _) in server.delivered() {
        assert!(envelope.tls);
        assert_eq!(envelope.authenticated_as.as_deref(), Some("alice"));
    }
}

#[test]
fn overlong_lines_get_500_5_5_2() {
    let server = Server::smtp();
    let long_line = "x".repeat(1500);
    let out = server.python(
        r#"
import os, smtplib, sys
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as s:
    s.ehlo("py.test")
    print(*s.docmd("NOOP " + sys.argv[1]))
    print(*s.noop())
    try:
        s.sendmail("o@remote.example", ["alice@example.com"], ("Subject: long\r\n\r\n" + sys.argv[1] + "\r\n").encode())
    except smtplib.SMTPDataError as e:
        print(e.smtp_code, e.smtp_error.decode())
    print(*s.noop())
"#,
        &[&long_line],
    );
    assert_eq!(
        out,
        "500 b'5.5.2 line too long'\n250 b'2.0.0 OK'\n500 5.5.2 line too long\n250 b'2.0.0 OK'\n"
    );
    assert!(server.delivered().is_empty());
}

#[test]
fn bad_commands_until_max_errors_close_the_connection() {
    let server = Server::start(Options {
        limits: Limits {
            max_errors: 3,
            ..Limits::default()
        },
        ..Options::default()
    });
    let out = server.python(
        r#"
import os, smtplib
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
s.ehlo("py.test")
print(*s.docmd("FROB"))
print(*s.rcpt("a@example.com"))
print(*s.docmd("XYZZY"))
print(*s.getreply())
try:
    print(*s.getreply())
except smtplib.SMTPServerDisconnected:
    print("disconnected")
"#,
        &[],
    );
    assert_eq!(
        out,
        "500 b'5.5.1 command unrecognized'\n\
         503 b'5.5.1 need MAIL first'\n\
         500 b'5.5.1 command unrecognized'\n\
         421 b'4.7.0 mx.test too many errors'\n\
         disconnected\n"
    );
}

#[test]
fn idle_timeout_gets_421() {
    let server = Server::start(Options {
        limits: Limits {
            command_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Options::default()
    });
    let out = server.python(
        r#"
import os, smtplib, time
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
s.ehlo("py.test")
t = time.monotonic()
print(*s.getreply())
print(time.monotonic() - t >= 0.4)
"#,
        &[],
    );
    assert_eq!(
        out,
        "421 b'4.4.2 mx.test idle timeout, closing connection'\nTrue\n"
    );
}

#[test]
fn connections_over_the_limit_get_421() {
    let server = Server::start(Options {
        max_connections: 1,
        ..Options::default()
    });
    let mut first = server.connect();
    assert_eq!(first.line(), "220 mx.test ESMTP ischedule-bridge ready");
    let out = server.python(
        r#"
import os, smtplib
try:
    smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
except smtplib.SMTPConnectError as e:
    print(e.smtp_code, e.smtp_error.decode())
"#,
        &[],
    );
    assert_eq!(
        out,
        "421 4.7.0 too many connections from 127.0.0.1 (limit 1 per client)\n"
    );
    first.send(b"QUIT\r\n");
    assert_eq!(first.rest(), ["221 2.0.0 mx.test closing connection"]);
    // the slot is free again once the session has ended
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = server.connect();
        let greeting = c.line();
        if greeting.starts_with("220 ") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {greeting}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_ends_idle_sessions_and_stops_listening() {
    let mut server = Server::smtp();
    let mut c = server.connect();
    assert!(c.line().starts_with("220 "));
    c.send(b"EHLO raw.test\r\n");
    while c.line().starts_with("250-") {}
    server.stop();
    assert_eq!(c.rest(), ["421 4.3.2 mx.test shutting down"]);
    let refused = TcpStream::connect(("127.0.0.1", server.port));
    match refused {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
        Ok(mut s) => {
            // a connect can race the close; nothing may answer on it
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0; 64];
            assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
        }
    }
    let _ = c.stream.shutdown(Shutdown::Both);
}
