//! The mail side of issue 9, tried as an attacker would against the running
//! bridge: real listeners, dnsmasq, Cyrus behind counting front bridges,
//! the aiosmtpd sink as relay, swaks and `ingest` as clients. The attacker
//! is an outsider: `mail.local_clients` is empty (or does not hold the
//! address the attack claims). Each test says what it reproduced on the
//! code before the defence, and checks what the peers received, not only
//! the SMTP reply.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use support::{
    calendar_part, counting_receiver, eventually, free_port, http, itip, partstat, posts_received,
    put_event, schedule_post, statuses, swaks, Bridge, Cyrus, Dns, SmtpSink, Zone,
};

const BOB: &str = "mailto:bob@cyrus.test";
const CAROL: &str = "mailto:carol@mail.test";
/// What every failure REPLY's iSchedule-Message-ID starts with.
const FAILURE_POST: &str = "ischedule-bridge-failure";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A mail carrying one iTIP object, as a mail client writes it.
fn itip_mail(from: &str, to: &str, message_id: &str, calendar: &str) -> String {
    let method = calendar
        .lines()
        .find_map(|l| l.strip_prefix("METHOD:"))
        .unwrap_or("REQUEST")
        .trim();
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Calendar\r\nDate: Mon, 1 Jan 2029 10:00:00 +0000\r\n\
         Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/calendar; charset=UTF-8; method={method}\r\n\r\n{calendar}"
    )
}

/// A REPLY from `attendee` (ACCEPTED) to `organizer` about `uid`.
fn reply(organizer: &str, attendee: &str, uid: &str) -> String {
    itip("REPLY", "VEVENT", organizer, &[(attendee, "ACCEPTED")], uid)
}

/// A delivery report (RFC 3464) for `failed`, returning a mail with
/// `message_id` that quoted `calendar`, as a remote MTA writes it.
fn dsn(message_id: &str, failed: &str, calendar: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mail.test\r\nTo: calendar-bridge@bridge.test\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <dsn-{failed}@mail.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n\
         --b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.mail.test\r\n\r\n\
         Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable\r\n\r\n\
         --b1\r\nContent-Type: message/rfc822\r\n\r\n\
         From: calendar-bridge@bridge.test\r\nTo: {failed}\r\nMessage-ID: <{message_id}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n\r\n\
         {calendar}\r\n--b1--\r\n"
    )
}

/// Failure REPLYs a counting front bridge received.
fn failure_posts(front: &Bridge) -> usize {
    posts_received(front, FAILURE_POST)
}

#[test]
fn forged_bounces_post_nothing_and_a_real_one_waits_for_the_organizers_receiver() {
    // Before: any DSN whose quoted Message-ID ended in @bridge.test was
    // answered 250 and a REPLY with REQUEST-STATUS:5.1 was posted toward
    // the organizer the quote named (here victim.test's receiver), in the
    // name of whichever attendee the DSN named; and a real bounce was 250
    // even when the organizer's receiver was down, so the notice was lost.
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let sink = SmtpSink::start();
    let dns = Dns::start(
        &Zone::new()
            .authoritative("mail.test")
            .authoritative("cyrus.test")
            .authoritative("victim.test"),
    );
    let (port, smtp, front_port) = (free_port(), free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n\
             [imip]\nreply_routing = \"token\"\ntoken_domain = \"bridge.test\"\n\
             [smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"calendar-bridge@bridge.test\"\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{front_port}/ischedule\"\n\
             [[route]]\ndomain = \"victim.test\"\nto = \"http://127.0.0.1:{front_port}/ischedule\"\n",
            dns.port, sink.port
        ),
    );
    let front = counting_receiver(front_port, &cyrus);
    put_event(&cyrus, "bob", "bounced", CAROL);
    let invitation = itip(
        "REQUEST",
        "VEVENT",
        BOB,
        &[(CAROL, "NEEDS-ACTION")],
        "bounced",
    );
    let r = schedule_post(port, BOB, &[CAROL], &invitation, Some("bounced-invite"));
    assert_eq!(statuses(&r)[0].1, "1.1;Sent", "{}", r.text());
    let (_, headers) = calendar_part(&sink.messages().pop().expect("the invitation"));
    let sent_id = headers
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("Message-ID")
        .trim()
        .trim_matches(['<', '>'])
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let bounce = |name: &str, text: String| {
        let path = write(dir.path(), name, &text);
        swaks(smtp, "<>", &["calendar-bridge@bridge.test"], &path, &[])
    };
    let victim = itip(
        "REQUEST",
        "VEVENT",
        "mailto:ceo@victim.test",
        &[(CAROL, "NEEDS-ACTION")],
        "bounced",
    );

    // A Message-ID in the token domain the bridge never sent.
    let (ok, t) = bounce(
        "forged.eml",
        dsn("forged-1@bridge.test", "carol@mail.test", &victim),
    );
    assert!(!ok, "{t}");
    assert!(
        t.contains("<** 550 5.7.1 a delivery report about <forged-1@bridge.test>, which this bridge did not send"),
        "{t}"
    );
    // The real Message-ID, but another attendee than it went to.
    let (ok, t) = bounce("other.eml", dsn(&sent_id, "dave@mail.test", &victim));
    assert!(!ok, "{t}");
    assert!(
        t.contains("for dave@mail.test, but that mail went to carol@mail.test only"),
        "{t}"
    );
    // The real Message-ID and attendee, quoting another event.
    let other_event = itip(
        "REQUEST",
        "VEVENT",
        BOB,
        &[(CAROL, "NEEDS-ACTION")],
        "other",
    );
    let (ok, t) = bounce("event.eml", dsn(&sent_id, "carol@mail.test", &other_event));
    assert!(!ok && t.contains("quoting event other"), "{t}");
    assert_eq!(failure_posts(&front), 0, "{}", front.log());

    // A real bounce while the organizer's receiver is down: 451, so the
    // reporting MTA keeps it. Its quote names victim.test as organizer;
    // the REPLY still goes to the organizer the bridge recorded.
    drop(front);
    let (ok, t) = bounce("real.eml", dsn(&sent_id, "carol@mail.test", &victim));
    assert!(!ok, "{t}");
    assert!(
        t.contains("<** 451 4.4.1 the failure REPLY to the organizer could not be posted"),
        "{t}\n{}",
        bridge.log()
    );
    let front = counting_receiver(front_port, &cyrus);
    let (ok, t) = bounce("real.eml", dsn(&sent_id, "carol@mail.test", &victim));
    assert!(ok, "the MTA's retry: {t}\n{}", bridge.log());
    assert!(
        bridge.log().contains(
            "reply=250 2.0.0 delivery report turned into a REPLY to the organizer: posted"
        ),
        "{}",
        bridge.log()
    );
    let log = front.log();
    let posts: Vec<&str> = log.lines().filter(|l| l.contains(FAILURE_POST)).collect();
    println!("failure REPLYs received: {}", posts.len());
    assert_eq!(posts.len(), 1, "{log}");
    assert!(
        posts[0].contains("bob@cyrus.test") && !posts[0].contains("victim.test"),
        "{}",
        posts[0]
    );
}

#[test]
fn a_verified_strangers_reply_is_not_relayed_to_an_organizer_elsewhere() {
    // Before: carol, DMARC-verified for mail.test, mailed bob@cyrus.test a
    // REPLY whose ORGANIZER was ceo@victim.test, and the bridge posted it
    // to victim.test's receiver (counted by the front bridge there).
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let dns = Dns::start(
        &Zone::new()
            .authoritative("test")
            .txt("mail.test", "v=spf1 ip4:127.0.0.1 -all")
            .txt("_dmarc.mail.test", "v=DMARC1; p=reject"),
    );
    let (port, smtp, front_port) = (free_port(), free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n[mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n\
             [[route]]\ndomain = \"victim.test\"\nto = \"http://127.0.0.1:{front_port}/ischedule\"\n",
            dns.port, cyrus.http_port
        ),
    );
    let front = counting_receiver(front_port, &cyrus);
    let dir = tempfile::tempdir().unwrap();
    let send = |name: &str, organizer: &str| {
        let mail = itip_mail(
            "carol@mail.test",
            "bob@cyrus.test",
            &format!("{name}@mail.test"),
            &reply(organizer, CAROL, "relay"),
        );
        let path = write(dir.path(), name, &mail);
        swaks(smtp, "carol@mail.test", &["bob@cyrus.test"], &path, &[])
    };
    let (ok, t) = send("elsewhere", "mailto:ceo@victim.test");
    assert!(!ok, "{t}");
    assert!(
        t.contains("<** 550 5.7.1 relaying denied: a REPLY from outside may only go to an organizer in a local domain; ORGANIZER mailto:ceo@victim.test is not in one"),
        "{t}\n{}",
        bridge.log()
    );
    let (ok, t) = send("unaddressed", "mailto:alice@cyrus.test");
    assert!(!ok, "{t}");
    assert!(
        t.contains(
            "names ORGANIZER mailto:alice@cyrus.test, but the mail is addressed to bob@cyrus.test"
        ),
        "{t}"
    );
    assert_eq!(posts_received(&front, "@mail.test"), 0, "{}", front.log());

    // The same stranger answering the local organizer it wrote to is fine.
    put_event(&cyrus, "bob", "relay", CAROL);
    let (ok, t) = send("honest", BOB);
    assert!(ok, "{t}\n{}", bridge.log());
    assert_eq!(
        partstat(&cyrus, "relay", "carol@mail.test").as_deref(),
        Some("ACCEPTED")
    );
}

#[test]
fn ingest_hands_the_real_client_to_the_running_bridge() {
    // Before: `ingest --client-ip 192.0.2.66` handing the mail to the
    // running bridge over LMTP lost the address, so the bridge judged the
    // mail as coming from 127.0.0.1, which `local_clients` trusts: a forged
    // REPLY "from" a local attendee was posted to the organizer.
    let cyrus = Cyrus::start("cyrus.test", &["bob", "dave"], None);
    let dns = Dns::start(&Zone::new().authoritative("test"));
    let (port, lmtp, front_port) = (free_port(), free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n\
             [mail]\nlmtp_listen = \"127.0.0.1:{lmtp}\"\nlocal_clients = [\"127.0.0.0/8\"]\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{front_port}/ischedule\"\n\
             [store]\npath = \"state\"\n",
            dns.port
        ),
    );
    let front = counting_receiver(front_port, &cyrus);
    // The embedded store, whatever ISB_TEST_STORE says: the hand-off is
    // for a store the running bridge holds locked (a shared PostgreSQL
    // store is used by `ingest` itself).
    let dave = "mailto:dave@cyrus.test";
    put_event(&cyrus, "bob", "xclient", dave);
    let dir = tempfile::tempdir().unwrap();
    let config = bridge.dir().join("bridge.toml");
    let ingest = |name: &str, client_ip: &str| {
        let mail = itip_mail(
            "dave@cyrus.test",
            "bob@cyrus.test",
            &format!("{name}@cyrus.test"),
            &reply(BOB, dave, "xclient"),
        );
        let path = write(dir.path(), name, &mail);
        let out = Command::new(env!("CARGO_BIN_EXE_ischedule-bridge"))
            .args(["ingest", "--config", config.to_str().unwrap()])
            .args(["--sender", "dave@cyrus.test", "--rcpt", "bob@cyrus.test"])
            .args(["--client-ip", client_ip, "--helo", "mx.evil.test"])
            .stdin(std::fs::File::open(path).unwrap())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = ingest("outside", "192.0.2.66");
    assert_eq!(code, Some(65), "{err}\n{}", bridge.log());
    assert!(err.contains("550 5.7.1 sender not authenticated"), "{err}");
    assert!(
        bridge.log().contains("client=192.0.2.66:0"),
        "the listener judged the real client\n{}",
        bridge.log()
    );
    assert_eq!(posts_received(&front, "outside@cyrus.test"), 0);
    assert_eq!(
        partstat(&cyrus, "xclient", "dave@cyrus.test").as_deref(),
        Some("NEEDS-ACTION")
    );

    // Piped from an address local_clients does hold, it is local.
    let (code, err) = ingest("inside", "127.0.0.5");
    assert_eq!(code, Some(0), "{err}\n{}", bridge.log());
    assert_eq!(posts_received(&front, "inside@cyrus.test"), 1);
    assert_eq!(
        partstat(&cyrus, "xclient", "dave@cyrus.test").as_deref(),
        Some("ACCEPTED")
    );
}

/// An Ed25519 DKIM key for `ed._domainkey.mail.test`: (PKCS#8 DER, the
/// base64 public key for the TXT record).
fn dkim_key() -> &'static (Vec<u8>, String) {
    static KEY: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let der = dir.path().join("ed.der");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl {args:?}");
            out.stdout
        };
        let der = der.to_str().unwrap();
        run(&[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-outform",
            "DER",
            "-out",
            der,
        ]);
        let spki = run(&[
            "pkey", "-inform", "DER", "-in", der, "-pubout", "-outform", "DER",
        ]);
        let public =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &spki[12..]);
        (std::fs::read(der).unwrap(), public)
    })
}

fn dkim_signed(message: &str) -> String {
    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&dkim_key().0).expect("Ed25519 key");
    let signature = DkimSigner::from_key(key)
        .domain("mail.test")
        .selector("ed")
        .headers(["From", "To", "Subject", "Message-ID", "Content-Type"])
        .sign(message.as_bytes())
        .expect("sign");
    format!("{}{message}", signature.to_header())
}

#[test]
fn no_backscatter_to_a_forged_envelope_sender_and_no_address_literals() {
    // Before: carol's REQUEST, DKIM-signed by mail.test, was sent with
    // MAIL FROM:<target@victim.test>; one attendee failed, so a DSN went
    // to victim.test (the sink took it) though nothing showed that the
    // envelope sender was real. And user@[127.0.0.1] was taken at RCPT.
    let cyrus = Cyrus::start("cyrus.test", &["bob", "dave"], None);
    let sink = SmtpSink::start();
    let dns = Dns::start(
        &Zone::new()
            .authoritative("test")
            .txt(
                "ed._domainkey.mail.test",
                &format!("v=DKIM1; k=ed25519; p={}", dkim_key().1),
            )
            .txt("_dmarc.mail.test", "v=DMARC1; p=reject"),
    );
    let (port, smtp) = (free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n\
             [smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"calendar-bridge@bridge.test\"\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            dns.port, sink.port, cyrus.http_port
        ),
    );
    let to = ["mailto:dave@cyrus.test", "mailto:nobody@cyrus.test"];
    let attendees: Vec<(&str, &str)> = to.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
    let calendar = itip("REQUEST", "VEVENT", CAROL, &attendees, "backscatter");
    let mail = dkim_signed(&itip_mail(
        "carol@mail.test",
        "dave@cyrus.test, nobody@cyrus.test",
        "backscatter-1@mail.test",
        &calendar,
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "invite.eml", &mail);
    let rcpts = ["dave@cyrus.test", "nobody@cyrus.test"];
    let (ok, t) = swaks(smtp, "target@victim.test", &rcpts, &path, &[]);
    assert!(ok, "{t}\n{}", bridge.log());
    assert!(
        t.contains("<-  250 2.0.0 message accepted for some recipients\n"),
        "no DSN is promised: {t}\n{}",
        bridge.log()
    );
    assert!(
        eventually(5, || bridge
            .log()
            .contains("delivery status notification suppressed")),
        "{}",
        bridge.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sink.messages(),
        Vec::<PathBuf>::new(),
        "nothing mailed to victim.test"
    );
    assert!(
        bridge
            .log()
            .contains("reason=spf=none (no SPF record for victim.test)"),
        "{}",
        bridge.log()
    );

    for (from, rcpt, expected) in [
        (
            "carol@mail.test",
            "dave@[127.0.0.1]",
            "<** 553 5.1.3 recipient dave@[127.0.0.1] refused: address literals are not accepted",
        ),
        (
            "carol@[IPv6:::1]",
            "dave@cyrus.test",
            "<** 553 5.1.7 sender carol@[IPv6:::1] refused: address literals are not accepted",
        ),
    ] {
        let (ok, t) = swaks(smtp, from, &[rcpt], &path, &[]);
        assert!(!ok && t.contains(expected), "{t}");
    }
    assert_eq!(sink.messages(), Vec::<PathBuf>::new());
}

/// A connection to the mail listener from `local` (a loopback address
/// other than 127.0.0.1 is another client), past its greeting.
fn connect_from(local: Ipv4Addr, port: u16) -> (BufReader<TcpStream>, TcpStream, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((local, 0))).unwrap();
        let stream = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .unwrap();
        stream.into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let greeting = line(&mut reader);
    (reader, stream, greeting)
}

fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => "<EOF>".into(),
        Ok(_) => line.trim_end().to_string(),
    }
}

#[test]
fn one_client_cannot_hold_the_smtp_listener() {
    // Before: 100 sessions in all and none per address, a fresh 5-minute
    // timer per line, and NOOP free: one client could take every session
    // and keep each for ever with a NOOP now and then.
    let (port, smtp) = (free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nmax_connections_per_client = 2\n\
             session_timeout_secs = 3\nmax_commands = 20\n"
        ),
    );
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let (_r1, _s1, first) = connect_from(attacker, smtp);
    let (_r2, _s2, second) = connect_from(attacker, smtp);
    let (mut r3, _s3, third) = connect_from(attacker, smtp);
    assert!(
        first.starts_with("220 ") && second.starts_with("220 "),
        "{first} / {second}"
    );
    assert_eq!(
        third,
        "421 4.7.0 too many connections from 127.0.0.2 (limit 2 per client)"
    );
    assert_eq!(line(&mut r3), "<EOF>");
    // Someone else still gets in.
    let (_r, _s, other) = connect_from(Ipv4Addr::LOCALHOST, smtp);
    assert!(other.starts_with("220 "), "{other}");

    // NOOP costs a command like any other. (From other addresses: the
    // sessions just dropped may not have given their slots back yet.)
    let (mut reader, mut stream, _) = connect_from(Ipv4Addr::new(127, 0, 0, 3), smtp);
    let mut last = String::new();
    let mut sent = 0;
    while sent < 100 {
        stream.write_all(b"NOOP\r\n").unwrap();
        sent += 1;
        last = line(&mut reader);
        if !last.starts_with("250") {
            break;
        }
    }
    assert_eq!(sent, 21, "{last}");
    assert!(
        last.starts_with("421 4.7.0 ") && last.contains("too many commands (limit 20 per session)"),
        "{last}"
    );

    // A NOOP every half second does not keep a session past its lifetime.
    let started = Instant::now();
    let (mut reader, mut stream, _) = connect_from(Ipv4Addr::new(127, 0, 0, 4), smtp);
    let last = loop {
        stream.write_all(b"NOOP\r\n").unwrap();
        let reply = line(&mut reader);
        if !reply.starts_with("250") || started.elapsed() > Duration::from_secs(15) {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let lasted = started.elapsed();
    println!("session ended after {:.1} s: {last}", lasted.as_secs_f64());
    assert!(
        last.starts_with("421 4.7.0 ")
            && last.contains("session time limit reached (3 s per session)"),
        "{last}\n{}",
        bridge.log()
    );
    assert!(lasted < Duration::from_secs(6), "{lasted:?}");
}

#[test]
fn many_dkim_signatures_cost_five_checks_and_a_slow_delivery_is_deferred_not_lost() {
    // Before: all 40 signatures were checked (40 key lookups in the DNS
    // log), and one delivery could take as long as its receivers: here the
    // organizer's front bridge holds the POST for 30 s, and the mail
    // waited for it.
    let cyrus = Cyrus::start("cyrus.test", &["bob", "dave"], None);
    let dns = Dns::start(
        &Zone::new()
            .authoritative("test")
            .txt("mail.test", "v=spf1 ip4:127.0.0.1 -all")
            .txt("_dmarc.mail.test", "v=DMARC1; p=reject"),
    );
    let (port, smtp, front_port, silent_port) =
        (free_port(), free_port(), free_port(), free_port());
    // Accepts connections and never answers: the receiver behind the front.
    let silent = std::net::TcpListener::bind(("127.0.0.1", silent_port)).unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(8).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n\
             [timeouts]\nreceiver_secs = 30\nrequest_secs = 60\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\ndelivery_timeout_secs = 2\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{front_port}/ischedule\"\n",
            dns.port
        ),
    );
    let dir = tempfile::tempdir().unwrap();

    let unsigned = itip_mail(
        "carol@mail.test",
        "dave@cyrus.test",
        "many-sigs@mail.test",
        &itip(
            "REQUEST",
            "VEVENT",
            CAROL,
            &[("mailto:dave@cyrus.test", "NEEDS-ACTION")],
            "sigs",
        ),
    );
    // One real signature, copied under 40 selectors that have no key: each
    // copy's body hash is right, so each would cost a key lookup.
    let real = dkim_signed(&unsigned);
    let header = &real[..real.len() - unsigned.len()];
    assert!(header.contains("s=ed;"), "{header}");
    let mut signed = unsigned.clone();
    for n in 0..40 {
        signed = header.replacen("s=ed;", &format!("s=s{n};"), 1) + &signed;
    }
    let path = write(dir.path(), "sigs.eml", &signed);
    // From 127.0.0.1 but with a MAIL FROM outside mail.test's SPF: only DKIM could vouch.
    let (ok, t) = swaks(smtp, "carol@other.test", &["dave@cyrus.test"], &path, &[]);
    assert!(
        !ok && t.contains("<** 550 5.7.1 sender not authenticated"),
        "{t}"
    );
    let key_lookups = dns
        .log()
        .lines()
        .filter(|l| l.contains("query[TXT]") && l.contains("._domainkey.mail.test"))
        .count();
    println!("DKIM key lookups for 40 signatures: {key_lookups}");
    assert!((1..=5).contains(&key_lookups), "{}", dns.log());

    // The organizer's front bridge forwards to a receiver that never answers.
    let front = Bridge::start(
        front_port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{front_port}\"\n[timeouts]\nreceiver_secs = 30\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{silent_port}/ischedule\"\n"
        ),
    );
    put_event(&cyrus, "bob", "slow", CAROL);
    let path = write(
        dir.path(),
        "slow.eml",
        &itip_mail(
            "carol@mail.test",
            "bob@cyrus.test",
            "slow-1@mail.test",
            &reply(BOB, CAROL, "slow"),
        ),
    );
    let started = Instant::now();
    let (ok, t) = swaks(smtp, "carol@mail.test", &["bob@cyrus.test"], &path, &[]);
    let waited = started.elapsed();
    println!("deferred after {:.1} s", waited.as_secs_f64());
    assert!(!ok, "{t}");
    assert!(
        t.contains("<** 451 4.4.7 delivery took longer than 2 s (mail.delivery_timeout_secs)"),
        "{t}\n{}",
        bridge.log()
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    drop(front);
    // The MTA's retry reaches the organizer once the receiver answers.
    let front = counting_receiver(front_port, &cyrus);
    let (ok, t) = swaks(smtp, "carol@mail.test", &["bob@cyrus.test"], &path, &[]);
    assert!(ok, "{t}\n{}", bridge.log());
    assert_eq!(posts_received(&front, "slow-1@mail.test"), 1);
    assert_eq!(
        partstat(&cyrus, "slow", "carol@mail.test").as_deref(),
        Some("ACCEPTED")
    );
}

#[test]
fn a_given_up_mail_stays_queued_until_the_organizer_is_told() {
    // Before: giving up removed the queue entry first, then posted the
    // failure REPLY once; with the organizer's receiver down the notice was
    // gone for good (queue empty, nothing ever posted).
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let sink = SmtpSink::start();
    let dns = Dns::start(&Zone::new().authoritative("mail.test"));
    let (port, front_port) = (free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"calendar-bridge@bridge.test\"\n\
             [queue]\nfirst_retry_secs = 1\nmax_retry_secs = 2\nmax_age_secs = 0\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{front_port}/ischedule\"\n",
            dns.port, sink.port
        ),
    );
    let attendee = "mailto:tempfail@mail.test";
    put_event(&cyrus, "bob", "given-up", attendee);
    let invitation = itip(
        "REQUEST",
        "VEVENT",
        BOB,
        &[(attendee, "NEEDS-ACTION")],
        "given-up",
    );
    let r = schedule_post(port, BOB, &[attendee], &invitation, Some("given-up-invite"));
    assert_eq!(statuses(&r)[0].1, "1.0;Pending", "{}", r.text());
    // Given up, and its report tried while the receiver is down.
    assert!(
        eventually(15, || bridge
            .log()
            .contains("failure reported to the organizer")),
        "{}",
        bridge.log()
    );
    let queue = http(port, "GET", "/.ischedule-bridge/queue", &[], b"");
    assert!(
        queue
            .text()
            .contains("\"recipient\":\"tempfail@mail.test\""),
        "the notice is still queued: {}",
        queue.text()
    );
    let front = counting_receiver(front_port, &cyrus);
    assert!(
        eventually(20, || failure_posts(&front) == 1),
        "{}\n{}",
        bridge.log(),
        front.log()
    );
    assert!(
        eventually(10, || !http(
            port,
            "GET",
            "/.ischedule-bridge/queue",
            &[],
            b""
        )
        .text()
        .contains("tempfail@mail.test")),
        "settled once reported"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(failure_posts(&front), 1, "reported once: {}", front.log());
}
