//! iMIP to iSchedule through the running bridge: replies by mail back to a
//! real Cyrus organizer, Cyrus using the bridge as its smarthost to reach
//! another Cyrus over iSchedule (the migration path), forged senders
//! refused, a receiver that is down answered 451 until it is back, and the
//! `ingest` command for MTA pipe transports.

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    calendar_part, counting_receiver, eventually, free_port, http, ical_day, itip, partstat,
    posts_received, put_event, schedule_post, statuses, swaks, Bridge, Certs, Cyrus, Dns, SmtpSink,
    Zone, AUTH,
};

const BOB: &str = "mailto:bob@cyrus.test";
const CAROL: &str = "mailto:carol@mail.test";

/// A REPLY as carol's client writes it: her ATTENDEE only, ACCEPTED, to
/// the ORGANIZER the invitation named (maybe a reply token address).
fn reply_mail(dir: &Path, uid: &str, organizer: &str, to: &str, name: &str) -> PathBuf {
    let day = ical_day(10);
    let calendar = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Mail client//EN\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n\
         DTSTAMP:{}T130000Z\r\nDTSTART:{day}T130000Z\r\nDTEND:{day}T140000Z\r\nORGANIZER:{organizer}\r\n\
         ATTENDEE;PARTSTAT=ACCEPTED:{CAROL}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        ical_day(0)
    );
    let mail = format!(
        "From: Carol <carol@mail.test>\r\nTo: {to}\r\nSubject: Accepted: Design meeting\r\nMessage-ID: <{name}@mail.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/calendar; charset=UTF-8; method=REPLY\r\n\r\n{calendar}"
    );
    let path = dir.join(format!("{name}.eml"));
    std::fs::write(&path, mail).unwrap();
    path
}

/// Edge mode in front of bob's Cyrus: token reply routing, mail relayed to
/// the sink, a mail `listener` (`smtp_listen` or `lmtp_listen`) for what
/// comes back, and cyrus.test routed to `receiver` (Cyrus unless given).
struct Edge {
    cyrus: Cyrus,
    sink: SmtpSink,
    dns: Dns,
    bridge: Bridge,
    mail_port: u16,
}

impl Edge {
    fn start(listener: &str, receiver: Option<u16>) -> Edge {
        let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
        let sink = SmtpSink::start();
        let dns = Dns::start(
            &Zone::new()
                .authoritative("mail.test")
                .authoritative("cyrus.test"),
        );
        let (port, mail_port) = (free_port(), free_port());
        let receiver = receiver.unwrap_or(cyrus.http_port);
        let bridge = Bridge::start(
            port,
            &format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
                 [imip]\nreply_routing = \"token\"\ntoken_domain = \"bridge.test\"\n\
                 [smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"calendar-bridge@bridge.test\"\n\
                 [mail]\n{listener} = \"127.0.0.1:{mail_port}\"\n\
                 [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{receiver}/ischedule\"\n",
                dns.port, sink.port
            ),
        );
        Edge {
            cyrus,
            sink,
            dns,
            bridge,
            mail_port,
        }
    }
}

/// Sends the invitation through the bridge by iSchedule, as Cyrus's
/// iSchedule sender would, and returns the reply address it carries.
fn invite_carol_by_mail(bridge: &Bridge, sink: &SmtpSink, uid: &str) -> String {
    let body = itip("REQUEST", "VEVENT", BOB, &[(CAROL, "NEEDS-ACTION")], uid);
    let r = schedule_post(
        bridge.port,
        BOB,
        &[CAROL],
        &body,
        Some(&format!("{uid}-invite")),
    );
    assert_eq!(statuses(&r)[0].1, "1.1;Sent", "{}", r.text());
    let mail = sink.messages().pop().expect("the invitation mail");
    let (_, headers) = calendar_part(&mail);
    headers
        .lines()
        .find_map(|l| l.strip_prefix("Reply-To: "))
        .expect("a Reply-To with the token address")
        .trim()
        .to_string()
}

#[test]
fn a_reply_by_mail_reaches_the_organizer_at_cyrus() {
    let Edge {
        cyrus,
        sink,
        dns: _dns,
        bridge,
        mail_port: smtp,
    } = Edge::start("smtp_listen", None);
    put_event(&cyrus, "bob", "roundtrip", CAROL);
    assert_eq!(
        partstat(&cyrus, "roundtrip", "carol@mail.test").as_deref(),
        Some("NEEDS-ACTION")
    );

    let reply_to = invite_carol_by_mail(&bridge, &sink, "roundtrip");
    assert!(
        reply_to.starts_with("ischedule+") && reply_to.ends_with("@bridge.test"),
        "{reply_to}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mail = reply_mail(
        dir.path(),
        "roundtrip",
        &format!("mailto:{reply_to}"),
        &reply_to,
        "r1",
    );
    let (ok, transcript) = swaks(smtp, "carol@mail.test", &[&reply_to], &mail, &[]);
    assert!(ok, "{transcript}\n{}", bridge.log());
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
    assert_eq!(
        partstat(&cyrus, "roundtrip", "carol@mail.test").as_deref(),
        Some("ACCEPTED"),
        "{}",
        bridge.log()
    );
}

#[test]
fn a_bounce_of_the_bridges_own_mail_becomes_a_failure_reply_to_the_organizer() {
    let Edge {
        cyrus,
        sink,
        dns: _dns,
        bridge,
        mail_port: smtp,
    } = Edge::start("smtp_listen", None);
    put_event(&cyrus, "bob", "bounced", CAROL);
    invite_carol_by_mail(&bridge, &sink, "bounced");
    let original = std::fs::read(sink.messages().pop().unwrap()).unwrap();
    let original = String::from_utf8_lossy(&original)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    // What carol's mail server sends back later (RFC 3464), written by hand.
    let dsn = format!(
        "From: MAILER-DAEMON@mail.test\r\nTo: calendar-bridge@bridge.test\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <dsn-1@mail.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nThe mail to carol could not be delivered.\r\n\
         --b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.mail.test\r\n\r\n\
         Final-Recipient: rfc822; carol@mail.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable\r\n\r\n\
         --b1\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--b1--\r\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsn.eml");
    std::fs::write(&path, dsn).unwrap();
    assert!(!stamped(&cyrus, "bounced"), "no REPLY applied yet");
    let (ok, transcript) = swaks(smtp, "<>", &["calendar-bridge@bridge.test"], &path, &[]);
    assert!(ok, "{transcript}\n{}", bridge.log());
    assert!(
        transcript.contains(" -> MAIL FROM:<>"),
        "a DSN has the null sender: {transcript}"
    );
    assert!(
        bridge
            .log()
            .contains("turned into a REPLY to the organizer"),
        "{}",
        bridge.log()
    );
    assert!(
        stamped(&cyrus, "bounced"),
        "the organizer's event took the failure REPLY\n{}",
        bridge.log()
    );
}

/// Cyrus stamps an attendee with the DTSTAMP of each REPLY it applies.
fn stamped(cyrus: &Cyrus, uid: &str) -> bool {
    let r = http(
        cyrus.http_port,
        "GET",
        &format!("/dav/calendars/user/bob/Default/{uid}.ics"),
        &[AUTH],
        b"",
    );
    r.text().replace("\r\n ", "").lines().any(|l| {
        l.starts_with("ATTENDEE")
            && l.contains("X-DTSTAMP=")
            && l.ends_with("mailto:carol@mail.test")
    })
}

#[test]
fn cyrus_with_the_bridge_as_smarthost_reaches_another_domain_over_ischedule() {
    let certs = Certs::generate(&["ischedule.cyrus2.test"]);
    let remote = Cyrus::start("cyrus2.test", &["alice"], Some(&certs));
    let dns = Dns::start(
        &Zone::new()
            .authoritative("cyrus.test")
            .authoritative("cyrus2.test")
            .srv(
                "cyrus2.test",
                "ischedule.cyrus2.test",
                remote.tls_port.unwrap(),
                0,
                1,
            )
            .a("ischedule.cyrus2.test", Ipv4Addr::LOCALHOST),
    );
    let (port, smtp) = (free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
             [tls]\nca_file = \"{}\"\n[domains]\nlocal = [\"cyrus.test\"]\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nlocal_clients = [\"127.0.0.1/32\"]\n",
            dns.port,
            certs.ca.display()
        ),
    );
    let local = Cyrus::start_with_smtp("cyrus.test", &["bob"], None, smtp);
    put_event(&local, "bob", "migration", "mailto:alice@cyrus2.test");
    // Cyrus sends its iMIP invitation to the bridge, which delivers it to
    // the other domain's receiver over iSchedule and answers Cyrus 250.
    let delivered = eventually(20, || {
        bridge.log().lines().any(|l| {
            l.contains("inbound")
                && l.contains("rcpt=alice@cyrus2.test")
                && l.contains("reply=250 2.0.0 2.0")
        })
    });
    assert!(delivered, "{}", bridge.log());
    let inbox = http(
        remote.http_port,
        "PROPFIND",
        "/dav/calendars/user/alice/Inbox/",
        &[("Authorization", "Basic YWxpY2U6eA=="), ("Depth", "1")],
        b"",
    );
    let hrefs: Vec<String> = inbox
        .text()
        .split("<D:href>")
        .skip(2)
        .filter_map(|h| h.split('<').next().map(str::to_string))
        .collect();
    let found = hrefs.iter().any(|href| {
        http(
            remote.http_port,
            "GET",
            href,
            &[("Authorization", "Basic YWxpY2U6eA==")],
            b"",
        )
        .text()
        .contains("UID:migration")
    });
    assert!(
        found,
        "the invitation is in alice's inbox at cyrus2.test: {hrefs:?}\n{}",
        inbox.text()
    );
    assert!(
        !bridge.log().contains("relayed to the next hop"),
        "iSchedule, not mail"
    );
}

#[test]
fn a_forged_sender_is_refused_and_nothing_is_posted() {
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    // Authoritative for all of `test`: DMARC also asks the organizational
    // domain, which must answer NXDOMAIN, not REFUSED.
    let dns = Dns::start(
        &Zone::new()
            .authoritative("test")
            .txt("mail.test", "v=spf1 -all")
            .txt("_dmarc.mail.test", "v=DMARC1; p=reject"),
    );
    let (port, smtp) = (free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n[mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            dns.port, cyrus.http_port
        ),
    );
    put_event(&cyrus, "bob", "forged", CAROL);
    let dir = tempfile::tempdir().unwrap();
    // Claims to be carol, but mail.test's SPF and DMARC say otherwise and no token vouches.
    let mail = reply_mail(dir.path(), "forged", BOB, "bob@cyrus.test", "f1");
    let (ok, transcript) = swaks(smtp, "carol@mail.test", &["bob@cyrus.test"], &mail, &[]);
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains("<** 550 5.7.1 sender not authenticated"),
        "{transcript}"
    );
    assert!(
        transcript.contains("spf=fail"),
        "the reason names what failed: {transcript}"
    );
    assert!(
        !bridge.log().contains("translated to iSchedule"),
        "{}",
        bridge.log()
    );
    assert_eq!(
        partstat(&cyrus, "forged", "carol@mail.test").as_deref(),
        Some("NEEDS-ACTION")
    );
}

#[test]
fn a_receiver_that_is_down_gets_451_and_the_retried_mail_goes_through() {
    // The organizer's receiver is a second bridge in front of Cyrus, not running yet.
    let front = free_port();
    let Edge {
        cyrus,
        sink,
        dns: _dns,
        bridge,
        mail_port: smtp,
    } = Edge::start("smtp_listen", Some(front));
    put_event(&cyrus, "bob", "retry", CAROL);
    let reply_to = invite_carol_by_mail(&bridge, &sink, "retry");
    let dir = tempfile::tempdir().unwrap();
    let mail = reply_mail(
        dir.path(),
        "retry",
        &format!("mailto:{reply_to}"),
        &reply_to,
        "r2",
    );
    let (ok, transcript) = swaks(smtp, "carol@mail.test", &[&reply_to], &mail, &[]);
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains("<** 451 4.4.1"),
        "the sending MTA keeps the mail: {transcript}"
    );

    let _front = Bridge::start(
        front,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{front}\"\n[[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            cyrus.http_port
        ),
    );
    let (ok, transcript) = swaks(smtp, "carol@mail.test", &[&reply_to], &mail, &[]);
    assert!(ok, "the MTA's retry: {transcript}\n{}", bridge.log());
    assert_eq!(
        partstat(&cyrus, "retry", "carol@mail.test").as_deref(),
        Some("ACCEPTED")
    );
}

#[test]
fn ingest_delivers_through_the_store_or_the_running_bridge_and_exits_like_sysexits() {
    // ingest finds the LMTP listener in the bridge's configuration.
    let Edge {
        cyrus,
        sink,
        dns: _dns,
        bridge,
        ..
    } = Edge::start("lmtp_listen", None);
    put_event(&cyrus, "bob", "ingest", CAROL);
    let reply_to = invite_carol_by_mail(&bridge, &sink, "ingest");
    let dir = tempfile::tempdir().unwrap();
    let config = bridge.dir().join("bridge.toml");
    let ingest = |mail: &Path, rcpt: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ischedule-bridge"))
            .args([
                "ingest",
                "--config",
                config.to_str().unwrap(),
                "--sender",
                "carol@mail.test",
                "--rcpt",
                rcpt,
            ])
            .stdin(std::fs::File::open(mail).unwrap())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Not a calendar message: EX_DATAERR with the reason.
    let plain = dir.path().join("plain.eml");
    std::fs::write(
        &plain,
        "From: carol@mail.test\r\nSubject: hi\r\n\r\nno calendar here\r\n",
    )
    .unwrap();
    let (code, err) = ingest(&plain, &reply_to);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("no text/calendar"), "{err}");
    // An address the bridge never issued: refused.
    let bogus = reply_mail(
        dir.path(),
        "ingest",
        BOB,
        "ischedule+aaaaaaaaaaaaaaaaaaaa@bridge.test",
        "bogus",
    );
    let (code, err) = ingest(&bogus, "ischedule+aaaaaaaaaaaaaaaaaaaa@bridge.test");
    assert_eq!(code, Some(65), "{err}");
    assert!(
        err.contains("not a reply address this bridge issued"),
        "{err}"
    );
    assert_eq!(
        partstat(&cyrus, "ingest", "carol@mail.test").as_deref(),
        Some("NEEDS-ACTION"),
        "the refused reply must not reach Cyrus"
    );
    // The running bridge holds the store: ingest hands the reply to its LMTP listener.
    let reply = reply_mail(
        dir.path(),
        "ingest",
        &format!("mailto:{reply_to}"),
        &reply_to,
        "i1",
    );
    let (code, err) = ingest(&reply, &reply_to);
    assert_eq!(code, Some(0), "{err}\n{}", bridge.log());
    assert_eq!(
        partstat(&cyrus, "ingest", "carol@mail.test").as_deref(),
        Some("ACCEPTED")
    );

    // The same mail again is a retry: answered from the record, not re-sent.
    let (code, err) = ingest(&reply, &reply_to);
    assert_eq!(code, Some(0), "{err}");

    // Stopped bridge: ingest opens the store itself; Cyrus gone: EX_TEMPFAIL.
    let reply = reply_mail(
        dir.path(),
        "ingest",
        &format!("mailto:{reply_to}"),
        &reply_to,
        "i2",
    );
    let (_port, state) = bridge.crash();
    drop(cyrus);
    let config = state.path().join("bridge.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ischedule-bridge"))
        .args([
            "ingest",
            "--config",
            config.to_str().unwrap(),
            "--sender",
            "carol@mail.test",
            "--rcpt",
            &reply_to,
        ])
        .stdin(std::fs::File::open(&reply).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("451 4.4.1"), "{err}");
}

#[test]
fn a_mixed_smtp_outcome_is_accepted_and_the_failure_reported_by_dsn() {
    let cyrus = Cyrus::start("cyrus.test", &["bob", "dave"], None);
    let sink = SmtpSink::start();
    let dns = Dns::start(&Zone::new().authoritative("cyrus.test"));
    let (port, smtp) = (free_port(), free_port());
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n\
             [smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"calendar-bridge@bridge.test\"\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nlocal_clients = [\"127.0.0.1/32\"]\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            dns.port, sink.port, cyrus.http_port
        ),
    );
    // A local calendar server invites a known and an unknown Cyrus user.
    let dir = tempfile::tempdir().unwrap();
    let path = invitation_mail(
        dir.path(),
        &["mailto:dave@cyrus.test", "mailto:nobody@cyrus.test"],
        "mixed",
        "mixed-1@cyrus.test",
    );
    let (ok, transcript) = swaks(
        smtp,
        "owner@sink.test",
        &["dave@cyrus.test", "nobody@cyrus.test"],
        &path,
        &[],
    );
    assert!(ok, "{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0 message accepted for some recipients"),
        "{transcript}"
    );
    // The report for nobody reaches the envelope sender through the relay.
    assert!(
        eventually(10, || sink.messages().len() == 1),
        "no DSN arrived"
    );
    let dsn = std::fs::read_to_string(&sink.messages()[0]).unwrap();
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; nobody@cyrus.test")
            && dsn.contains("Action: failed"),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Final-Recipient: rfc822; dave@cyrus.test"),
        "only the failure is reported"
    );
}

/// bob's invitation to `to` as his calendar client would mail it, written
/// to `dir/invite.eml`.
fn invitation_mail(dir: &Path, to: &[&str], uid: &str, message_id: &str) -> PathBuf {
    let attendees: Vec<(&str, &str)> = to.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
    let calendar = itip("REQUEST", "VEVENT", BOB, &attendees, uid);
    let header_to: Vec<&str> = to.iter().map(|a| a.trim_start_matches("mailto:")).collect();
    let path = dir.join("invite.eml");
    std::fs::write(
        &path,
        format!(
            "From: bob@cyrus.test\r\nTo: {}\r\nSubject: Invitation\r\n\
             Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n\r\n{calendar}",
            header_to.join(", ")
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_smtp_retry_after_a_deferral_posts_only_to_the_receivers_not_yet_done() {
    let cyrus = Cyrus::start("cyrus.test", &["bob", "dave", "alice"], None);
    let (port, smtp, first, second) = (free_port(), free_port(), free_port(), free_port());
    // dave's receiver is up; alice's is not running yet.
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[domains]\nlocal = [\"cyrus.test\"]\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nlocal_clients = [\"127.0.0.1/32\"]\n\
             [[route]]\naddress = \"mailto:dave@cyrus.test\"\nto = \"http://127.0.0.1:{first}/ischedule\"\n\
             [[route]]\naddress = \"mailto:alice@cyrus.test\"\nto = \"http://127.0.0.1:{second}/ischedule\"\n"
        ),
    );
    let dave_receiver = counting_receiver(first, &cyrus);
    let dir = tempfile::tempdir().unwrap();
    let path = invitation_mail(
        dir.path(),
        &["mailto:dave@cyrus.test", "mailto:alice@cyrus.test"],
        "deferred",
        "deferred-1@cyrus.test",
    );
    let rcpts = ["dave@cyrus.test", "alice@cyrus.test"];

    let (ok, transcript) = swaks(smtp, "bob@cyrus.test", &rcpts, &path, &[]);
    assert!(!ok && transcript.contains("<** 451 4.4.1"), "{transcript}");
    assert_eq!(posts_received(&dave_receiver, "deferred-1@cyrus.test"), 1);

    let alice_receiver = counting_receiver(second, &cyrus);
    let (ok, transcript) = swaks(smtp, "bob@cyrus.test", &rcpts, &path, &[]);
    assert!(ok, "the MTA's retry: {transcript}");
    let (dave_posts, alice_posts) = (
        posts_received(&dave_receiver, "deferred-1@cyrus.test"),
        posts_received(&alice_receiver, "deferred-1@cyrus.test"),
    );
    println!("POSTs received: dave's receiver {dave_posts}, alice's receiver {alice_posts}");
    assert_eq!(dave_posts, 1, "dave's receiver already had the invitation");
    assert_eq!(alice_posts, 1);
}

#[test]
fn the_answer_to_data_does_not_wait_for_the_bridges_own_smtp() {
    // A relay that takes the connection and never says a word: sending the
    // DSN there would hold the 250 for `smtp.timeout_secs`.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay = silent.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let cyrus = Cyrus::start("cyrus.test", &["bob", "dave"], None);
    let (port, smtp) = (free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[domains]\nlocal = [\"cyrus.test\"]\n\
             [smtp]\nrelay = \"smtp://127.0.0.1:{relay}\"\nfrom = \"calendar-bridge@bridge.test\"\ntimeout_secs = 20\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nlocal_clients = [\"127.0.0.1/32\"]\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            cyrus.http_port
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = invitation_mail(
        dir.path(),
        &["mailto:dave@cyrus.test", "mailto:nobody@cyrus.test"],
        "prompt",
        "prompt-1@cyrus.test",
    );
    let started = std::time::Instant::now();
    let (ok, transcript) = swaks(
        smtp,
        "owner@sink.test",
        &["dave@cyrus.test", "nobody@cyrus.test"],
        &path,
        &[],
    );
    let waited = started.elapsed();
    assert!(ok, "{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0 message accepted for some recipients"),
        "{transcript}"
    );
    println!(
        "250 after {:.1} s with the relay silent",
        waited.as_secs_f64()
    );
    assert!(
        waited < Duration::from_secs(10),
        "the 250 waited {waited:?} on the bridge's own SMTP (timeout 20 s)"
    );
    // The promised DSN is in the durable queue, not lost.
    let queue = http(port, "GET", "/.ischedule-bridge/queue", &[], b"");
    assert!(
        queue.text().contains("\"recipient\":\"owner@sink.test\""),
        "{}\n{}",
        queue.text(),
        bridge.log()
    );
}
