//! Mutated SMTP/LMTP sessions and mutated mail never crash the bridge, never
//! hang a session, and every refusal says why.
//!
//! One bridge with both mail listeners, one dnsmasq authoritative for
//! `test` (every other name is REFUSED at once, so nothing leaves the host),
//! and a deterministic xorshift64* generator. Two loops, each bounded by
//! time: the first drives the command parser with mutated command lines
//! (verbs, paths, parameters, XCLIENT, AUTH, bytes), the second delivers
//! mutated messages of `shared/corpus/imip/` (real iMIP mail and bounces)
//! through SMTP and LMTP. Every reply must come within a deadline, be a
//! well-formed reply line, and carry a text after its code when it is a
//! refusal; at the end the bridge still runs and logged no panic.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{free_port, shared_dir, Bridge, Dns, Zone};

/// Each loop runs at most this long.
const BUDGET: Duration = Duration::from_secs(18);
/// Longest wait for one reply: a session that says nothing for this long hangs.
const REPLY_DEADLINE: Duration = Duration::from_secs(15);

/// xorshift64*: deterministic randomness without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Default)]
struct Tally {
    sessions: usize,
    commands: usize,
    messages: usize,
    /// Reply code class ("2xx", "4xx", ...) → count.
    classes: BTreeMap<String, usize>,
    /// Sessions the bridge closed (421, or end of stream after a reply).
    closed: usize,
    hangs: Vec<String>,
    malformed: Vec<String>,
    without_reason: Vec<String>,
}

impl Tally {
    /// Checks one reply (all its lines); `what` names the input for failures.
    fn reply(&mut self, lines: &[String], what: &str) {
        let Some(last) = lines.last() else {
            return;
        };
        let well_formed = lines.iter().enumerate().all(|(i, l)| {
            let b = l.as_bytes();
            let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
            b.len() >= 3
                && b[..3].iter().all(u8::is_ascii_digit)
                && (b.len() == 3 || b[3] == sep)
                && (b'2'..=b'5').contains(&b[0])
        });
        if !well_formed {
            self.malformed.push(format!("{what}: {lines:?}"));
            return;
        }
        *self.classes.entry(format!("{}xx", &last[..1])).or_default() += 1;
        let refusal = last.starts_with('4') || last.starts_with('5');
        // The reason: text after the code and the enhanced code, if any.
        let text = last[3..].trim();
        let reason = match text.split_once(' ') {
            Some((first, rest)) if first.chars().all(|c| c.is_ascii_digit() || c == '.') => rest,
            _ if text.chars().all(|c| c.is_ascii_digit() || c == '.') => "",
            _ => text,
        };
        if refusal && reason.trim().is_empty() {
            self.without_reason.push(format!("{what}: {last}"));
        }
    }
}

/// One client session, reading every reply within [`REPLY_DEADLINE`].
struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

enum Reply {
    Lines(Vec<String>),
    Closed,
    Hang,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            match self.reader.read_until(b'\n', &mut raw) {
                Ok(0) => {
                    return if lines.is_empty() {
                        Reply::Closed
                    } else {
                        Reply::Lines(lines)
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Reply::Hang
                }
                Err(_) => return Reply::Closed,
            }
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Reply::Lines(lines);
            }
        }
    }
}

fn bridge() -> (Bridge, Dns, u16, u16) {
    let dns = Dns::start(
        &Zone::new()
            .authoritative("test")
            .txt("mail.test", "v=spf1 ip4:127.0.0.1 -all")
            .txt("_dmarc.mail.test", "v=DMARC1; p=reject"),
    );
    let (port, smtp, lmtp) = (free_port(), free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"example.org\", \"cyrus.test\"]\n\
             [imip]\ntoken_domain = \"bridge.test\"\n\
             [timeouts]\nconnect_secs = 1\nreceiver_secs = 2\nrequest_secs = 3\ndns_secs = 1\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nlmtp_listen = \"127.0.0.1:{lmtp}\"\n\
             max_message_bytes = 200000\nmax_connections_per_client = 50\n\
             delivery_timeout_secs = 10\nmax_commands = 200\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            dns.port,
            free_port()
        ),
    );
    (bridge, dns, smtp, lmtp)
}

fn assert_healthy(bridge: &Bridge, tally: &Tally) {
    let log = bridge.log();
    assert!(!log.contains("panicked"), "the bridge panicked:\n{log}");
    let caps = support::http(
        bridge.port,
        "GET",
        "/.well-known/ischedule?action=capabilities",
        &[],
        b"",
    );
    assert_eq!(caps.status, 200, "the bridge no longer answers\n{log}");
    assert!(tally.hangs.is_empty(), "sessions hung: {:#?}", tally.hangs);
    assert!(
        tally.malformed.is_empty(),
        "malformed replies: {:#?}",
        tally.malformed
    );
    assert!(
        tally.without_reason.is_empty(),
        "refusals without a reason: {:#?}",
        tally.without_reason
    );
}

const VERBS: &[&str] = &[
    "EHLO",
    "HELO",
    "LHLO",
    "MAIL FROM:",
    "RCPT TO:",
    "DATA",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "HELP",
    "XCLIENT",
    "AUTH",
    "STARTTLS",
    "BDAT",
    "ETRN",
    "GET",
    "mail from:",
    "rcpt to:",
];

const PATHS: &[&str] = &[
    "<bob@example.org>",
    "<carol@mail.test>",
    "<>",
    "<@a.test,@b.test:bob@example.org>",
    "<x@[127.0.0.1]>",
    "<x@[IPv6:::1]>",
    "<ischedule+aaaaaaaaaaaaaaaaaaaa@bridge.test>",
    "<calendar-bridge@localhost>",
    "<Postmaster>",
    "bob@example.org",
    "<bob@example.org",
    "<a b@c.d>",
    "<é@example.org>",
];

const PARAMS: &[&str] = &[
    "",
    " SIZE=100",
    " SIZE=99999999999",
    " SIZE=x",
    " BODY=8BITMIME",
    " BODY=BINARYMIME",
    " AUTH=<>",
    " NOTIFY=NEVER",
    " FOO",
    " =",
];

const XCLIENT_ARGS: &[&str] = &[
    "ADDR=192.0.2.1",
    "ADDR=IPV6:2001:db8::1 HELO=mx.test",
    "ADDR=[UNAVAILABLE] HELO=[TEMPUNAVAIL]",
    "ADDR=999.1.1.1",
    "LOGIN=alice",
    "HELO=a+zz",
    "PORT=70000",
    "",
    "ADDR",
    "NAME=x PROTO=ESMTP ADDR=127.0.0.9",
];

/// One mutated command line (without CRLF).
fn command(rng: &mut Rng) -> Vec<u8> {
    let verb = *rng.pick(VERBS);
    let mut line = match verb {
        "MAIL FROM:" | "RCPT TO:" | "mail from:" | "rcpt to:" => {
            format!("{verb}{}{}", rng.pick(PATHS), rng.pick(PARAMS))
        }
        "XCLIENT" => format!("XCLIENT {}", rng.pick(XCLIENT_ARGS)),
        "AUTH" => format!(
            "AUTH {}",
            rng.pick(&[
                "PLAIN",
                "LOGIN",
                "PLAIN AGFsaWNlAHNlY3JldA==",
                "CRAM-MD5",
                "PLAIN ===="
            ])
        ),
        "EHLO" | "HELO" | "LHLO" => format!(
            "{verb} {}",
            rng.pick(&["client.test", "", "[127.0.0.1]", "x y"])
        ),
        "GET" => "GET / HTTP/1.1".into(),
        _ => verb.to_string(),
    }
    .into_bytes();
    // Byte-level damage now and then.
    match rng.below(10) {
        0 => line.insert(rng.below(line.len() + 1), rng.next() as u8),
        1 if !line.is_empty() => {
            let at = rng.below(line.len());
            line.truncate(at);
        }
        2 => line.extend(std::iter::repeat_n(b'A', rng.below(1200))),
        3 => line = line.to_ascii_lowercase(),
        _ => {}
    }
    line
}

#[test]
fn mutated_command_sessions_are_answered_in_time_with_reasons() {
    let (bridge, _dns, smtp, lmtp) = bridge();
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut tally = Tally::default();
    let started = Instant::now();
    'sessions: while started.elapsed() < BUDGET {
        let port = if rng.chance(50) { smtp } else { lmtp };
        let mut client = Client::connect(port);
        tally.sessions += 1;
        match client.reply() {
            Reply::Lines(lines) => tally.reply(&lines, "greeting"),
            Reply::Closed => {
                tally.closed += 1;
                continue;
            }
            Reply::Hang => {
                tally.hangs.push("greeting".into());
                continue;
            }
        }
        for _ in 0..rng.below(30) + 1 {
            let line = command(&mut rng);
            let what = String::from_utf8_lossy(&line)
                .chars()
                .take(120)
                .collect::<String>();
            let mut bytes = line.clone();
            bytes.extend_from_slice(b"\r\n");
            tally.commands += 1;
            if !client.send(&bytes) {
                tally.closed += 1;
                continue 'sessions;
            }
            match client.reply() {
                Reply::Lines(lines) => {
                    tally.reply(&lines, &what);
                    let last = lines.last().cloned().unwrap_or_default();
                    if last.starts_with("354") {
                        // Some message data, then the end.
                        let body = format!(
                            "Subject: fuzz\r\n\r\n{}\r\n.\r\n",
                            "x".repeat(rng.below(200))
                        );
                        if !client.send(body.as_bytes()) {
                            continue 'sessions;
                        }
                        // LMTP answers per recipient; read what comes.
                        match client.reply() {
                            Reply::Lines(lines) => tally.reply(&lines, "after DATA"),
                            Reply::Hang => tally.hangs.push(format!("{what} then data")),
                            Reply::Closed => {}
                        }
                        // The rest of LMTP's per-recipient replies are read
                        // as answers to the next commands; drain by RSET.
                        let _ = client.send(b"RSET\r\n");
                        let _ = client
                            .stream
                            .set_read_timeout(Some(Duration::from_millis(300)));
                        while let Reply::Lines(lines) = client.reply() {
                            tally.reply(&lines, "drain");
                            if lines.last().is_some_and(|l| l.contains("reset")) {
                                break;
                            }
                        }
                        let _ = client.stream.set_read_timeout(Some(REPLY_DEADLINE));
                    }
                    if last.starts_with("421") || last.starts_with("221") {
                        tally.closed += 1;
                        continue 'sessions;
                    }
                }
                Reply::Closed => {
                    tally.closed += 1;
                    continue 'sessions;
                }
                Reply::Hang => {
                    tally.hangs.push(what);
                    continue 'sessions;
                }
            }
        }
        let _ = client.stream.shutdown(Shutdown::Both);
    }
    println!(
        "command fuzz: {} sessions, {} commands, replies {:?}, {} closed by the bridge, {} hangs, {} malformed, {} refusals without a reason, {:.1} s",
        tally.sessions,
        tally.commands,
        tally.classes,
        tally.closed,
        tally.hangs.len(),
        tally.malformed.len(),
        tally.without_reason.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.commands > 500,
        "too few commands in the time: {}",
        tally.commands
    );
    assert_healthy(&bridge, &tally);
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = shared_dir().join("corpus/imip");
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("MANIFEST.tsv" | "README.md")
            ) {
                let name = path
                    .strip_prefix(&root)
                    .unwrap_or(Path::new(""))
                    .display()
                    .to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 20,
        "the corpus is missing: {}",
        root.display()
    );
    files
}

/// A mutated copy of `message`: header and body damage of the kinds real
/// mail and attackers produce.
fn mutate(rng: &mut Rng, message: &[u8]) -> (Vec<u8>, &'static str) {
    let mut m = message.to_vec();
    let kind = match rng.below(11) {
        0 => {
            for _ in 0..rng.below(8) + 1 {
                if !m.is_empty() {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
            }
            "flipped bytes"
        }
        1 => {
            let at = rng.below(m.len() + 1);
            m.truncate(at);
            "truncated"
        }
        2 => {
            let (a, b) = (rng.below(m.len() + 1), rng.below(m.len() + 1));
            let (a, b) = (a.min(b), a.max(b));
            m.drain(a..b);
            "range deleted"
        }
        3 => {
            let mut headers = Vec::new();
            for n in 0..rng.below(30) + 1 {
                headers.extend_from_slice(
                    format!("DKIM-Signature: v=1; a=rsa-sha256; d=mail.test; s=s{n}; h=from; bh=AAAA; b=AAAA\r\n").as_bytes(),
                );
            }
            headers.extend_from_slice(&m);
            m = headers;
            "DKIM signatures added"
        }
        4 => {
            let text = String::from_utf8_lossy(&m)
                .replace("METHOD:REQUEST", "METHOD:REPLY")
                .replace("method=REQUEST", "method=reply");
            m = text.into_bytes();
            "method changed"
        }
        5 => {
            let text = String::from_utf8_lossy(&m)
                .replace(
                    "multipart/",
                    "multipart/report; report-type=delivery-status; x=",
                )
                .replace("Message-ID: <", "Message-ID: <forged-");
            m = text.into_bytes();
            "made a report"
        }
        6 => {
            let mut nested = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n".to_vec();
            for _ in 0..rng.below(60) {
                nested
                    .extend_from_slice(b"--z\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n");
            }
            nested.extend_from_slice(&m);
            m = nested;
            "deep nesting"
        }
        7 => {
            let text = String::from_utf8_lossy(&m).replace(
                "ORGANIZER",
                "ORGANIZER;CN=x:mailto:victim@elsewhere.test\r\nX-ORGANIZER",
            );
            m = text.into_bytes();
            "organizer elsewhere"
        }
        8 => {
            let text = String::from_utf8_lossy(&m).replace("\r\n", "\n");
            m = text.into_bytes();
            "bare LF"
        }
        9 => {
            let at = rng.below(m.len() + 1);
            let junk: Vec<u8> = (0..rng.below(400)).map(|_| rng.next() as u8).collect();
            m.splice(at..at, junk);
            "junk inserted"
        }
        _ => "unchanged",
    };
    (m, kind)
}

/// `message` dot-stuffed with CRLF line ends and the final dot.
fn data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

const SENDERS: &[&str] = &[
    "carol@mail.test",
    "",
    "mallory@evil.test",
    "bob@example.org",
];
const RECIPIENTS: &[&[&str]] = &[
    &["bob@example.org"],
    &["calendar-bridge@localhost"],
    &["bob@example.org", "alice@example.org"],
    &["dave@cyrus.test"],
    &["ischedule+aaaaaaaaaaaaaaaaaaaa@bridge.test"],
];

#[test]
fn mutated_corpus_mail_is_answered_in_time_with_reasons() {
    let (bridge, _dns, smtp, lmtp) = bridge();
    let corpus = corpus();
    let mut rng = Rng(0x1CA1_E0DA_7A00_0002);
    let mut tally = Tally::default();
    let mut kinds = BTreeMap::<&str, usize>::new();
    let started = Instant::now();
    let mut index = 0;
    while started.elapsed() < BUDGET {
        // The corpus unchanged first, then mutations.
        let (name, original) = &corpus[if index < corpus.len() {
            index
        } else {
            rng.below(corpus.len())
        }];
        let (message, kind) = if index < corpus.len() {
            (original.clone(), "unchanged")
        } else {
            mutate(&mut rng, original)
        };
        index += 1;
        *kinds.entry(kind).or_default() += 1;
        let lmtp_session = rng.chance(50);
        let mut client = Client::connect(if lmtp_session { lmtp } else { smtp });
        let what = format!(
            "{name} ({kind}, {})",
            if lmtp_session { "LMTP" } else { "SMTP" }
        );
        tally.sessions += 1;
        let from = rng.pick(SENDERS);
        let rcpts = *rng.pick(RECIPIENTS);
        let mut script: Vec<String> = vec![
            if lmtp_session {
                "LHLO fuzz.test"
            } else {
                "EHLO fuzz.test"
            }
            .into(),
            format!("MAIL FROM:<{from}>"),
        ];
        script.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>")));
        script.push("DATA".into());
        let mut accepted = 0;
        let mut go_ahead = false;
        let greeting = client.reply();
        if let Reply::Lines(lines) = &greeting {
            tally.reply(lines, &what);
        }
        for command in &script {
            tally.commands += 1;
            if !client.send(format!("{command}\r\n").as_bytes()) {
                break;
            }
            match client.reply() {
                Reply::Lines(lines) => {
                    tally.reply(&lines, &format!("{what}: {command}"));
                    let last = lines.last().cloned().unwrap_or_default();
                    if command.starts_with("RCPT") && last.starts_with('2') {
                        accepted += 1;
                    }
                    go_ahead = last.starts_with("354");
                }
                Reply::Hang => {
                    tally.hangs.push(format!("{what}: {command}"));
                    break;
                }
                Reply::Closed => break,
            }
        }
        if go_ahead && client.send(&data(&message)) {
            tally.messages += 1;
            let replies = if lmtp_session { accepted } else { 1 };
            for _ in 0..replies {
                match client.reply() {
                    Reply::Lines(lines) => tally.reply(&lines, &format!("{what}: after DATA")),
                    Reply::Hang => {
                        tally.hangs.push(format!("{what}: after DATA"));
                        break;
                    }
                    Reply::Closed => break,
                }
            }
        }
        let _ = client.send(b"QUIT\r\n");
        let _ = client.stream.shutdown(Shutdown::Both);
    }
    println!(
        "mail fuzz: {} sessions, {} messages ({} corpus files; mutations {:?}), {} commands, replies {:?}, {} hangs, {} malformed, {} refusals without a reason, {:.1} s",
        tally.sessions,
        tally.messages,
        corpus.len(),
        kinds,
        tally.commands,
        tally.classes,
        tally.hangs.len(),
        tally.malformed.len(),
        tally.without_reason.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.messages >= corpus.len(),
        "too few messages: {}",
        tally.messages
    );
    assert_healthy(&bridge, &tally);
}
