//! Two bridges on one real PostgreSQL (`[store] url`): one queue worked by
//! both without sending twice, surviving a SIGKILL of either; idempotency
//! records shared; and a database outage answered with temporary failures
//! that say why, then recovered from without a restart.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::{free_port, itip, schedule_post, statuses, swaks, Bridge, Dns, SmtpSink, Zone};

const ORGANIZER: &str = "mailto:bernard@example.com";

fn config(port: u16, dns: u16, sink: u16, url: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{dns}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
         [smtp]\nrelay = \"smtp://127.0.0.1:{sink}\"\nfrom = \"calendar-bridge@bridge.test\"\ntimeout_secs = 2\n\
         [timeouts]\nrequest_secs = 2\nreceiver_secs = 2\n\
         [queue]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n\
         [store]\nurl = \"{url}\"\nconnect_timeout_secs = 2\n{extra}"
    )
}

fn invite(port: u16, to: &str, uid: &str) -> Vec<(String, String)> {
    let body = itip("REQUEST", "VEVENT", ORGANIZER, &[(to, "NEEDS-ACTION")], uid);
    statuses(&schedule_post(port, ORGANIZER, &[to], &body, Some(uid)))
}

fn eventually(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    ready()
}

/// How many mails the sink holds for each of `addresses`.
fn per_recipient(sink: &SmtpSink, addresses: &[String]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = addresses.iter().map(|a| (a.clone(), 0)).collect();
    for mail in sink.messages() {
        let text = String::from_utf8_lossy(&std::fs::read(&mail).unwrap()).into_owned();
        for address in addresses {
            if text.contains(&format!("<{address}>")) || text.contains(&format!("To: {address}")) {
                *counts.get_mut(address).unwrap() += 1;
            }
        }
    }
    counts
}

#[test]
fn a_queue_filled_through_a_killed_bridge_is_delivered_exactly_once_by_the_other() {
    let pg = Postgres::start();
    let url = pg.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut sink = SmtpSink::start();
    let dns = Dns::start(&Zone::new().authoritative("mail.test"));
    let (port_a, port_b) = (free_port(), free_port());
    let a = Bridge::start(port_a, &config(port_a, dns.port, sink.port, &url, ""));
    let b = Bridge::start(port_b, &config(port_b, dns.port, sink.port, &url, ""));

    // Idempotency is shared: B answers a repeat of A's POST from the record.
    let first = invite(port_a, "mailto:carol@mail.test", "shared-once");
    assert_eq!(first[0].1, "1.1;Sent", "{first:?}\n{}", a.log());
    let again = invite(port_b, "mailto:carol@mail.test", "shared-once");
    assert_eq!(again, first);
    assert!(b.log().contains("repeated=true"), "{}", b.log());
    assert_eq!(sink.messages().len(), 1, "the repeat sent nothing");

    // The relay answers 451 for tempfail*: POSTs through both bridges
    // queue their mail in the one shared queue, and both retry it.
    let total = 24;
    let mut addresses = Vec::new();
    for n in 0..total {
        let address = format!("tempfail{n}@mail.test");
        let port = if n % 3 == 2 { port_b } else { port_a };
        let answer = invite(port, &format!("mailto:{address}"), &format!("queued-{n}"));
        assert_eq!(answer[0].1, "1.0;Pending", "{answer:?}");
        addresses.push(address);
    }
    let queued = pg.query(&db, "SELECT count(*) FROM queue");
    assert_eq!(queued, total.to_string());
    // Both have been retrying: let some passes go by, then crash A
    // (SIGKILL: what it claimed is released only by the lease running out).
    std::thread::sleep(Duration::from_secs(2));
    let a_log = a.log();
    let (_, _a_dir) = a.crash();
    sink.restart_accepting_everyone();

    let started = Instant::now();
    let all_there = eventually(90, || sink.messages().len() == total + 1);
    let delivered_in = started.elapsed();
    // Late duplicates would come after the first copies: wait a little more.
    std::thread::sleep(Duration::from_secs(3));
    let counts = per_recipient(&sink, &addresses);
    let left = pg.query(&db, "SELECT count(*) FROM queue");
    println!(
        "queued {total} (via A and B), A killed; B delivered in {:.1} s; sink holds {} mails \
         (+1 from the idempotency check); per recipient: {:?}; left in the queue: {left}",
        delivered_in.as_secs_f64(),
        sink.messages().len() - 1,
        counts.values().collect::<Vec<_>>()
    );
    assert!(
        all_there,
        "not all delivered: {counts:?}\n--- B:\n{}\n--- A:\n{a_log}",
        b.log()
    );
    assert!(
        counts.values().all(|&c| c == 1),
        "each queued mail exactly once: {counts:?}"
    );
    assert_eq!(sink.messages().len(), total + 1);
    assert_eq!(left, "0", "{}", b.log());
    assert!(b.log().contains("delivered"), "{}", b.log());
}

#[test]
fn a_database_outage_defers_posts_and_mail_saying_why_and_recovery_needs_no_restart() {
    let mut pg = Postgres::start();
    let url = pg.database();
    let sink = SmtpSink::start();
    let dns = Dns::start(&Zone::new().authoritative("mail.test"));
    let (port, smtp) = (free_port(), free_port());
    let listen = format!("[mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\n");
    let bridge = Bridge::start(port, &config(port, dns.port, sink.port, &url, &listen));

    pg.stop();
    // A POST: every recipient a temporary failure naming the cause; nothing sent.
    let answer = invite(port, "mailto:carol@mail.test", "outage-1");
    assert_eq!(answer[0].1, "5.1;Service unavailable", "{answer:?}");
    let body = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &[("mailto:carol@mail.test", "NEEDS-ACTION")],
        "outage-1",
    );
    let r = schedule_post(
        port,
        ORGANIZER,
        &["mailto:carol@mail.test"],
        &body,
        Some("outage-1"),
    );
    assert!(
        r.text().contains("state store unavailable: recall: "),
        "{}",
        r.text()
    );
    // Mail that needs the store (a delivery report, checked against the
    // records of sent mail) is deferred with 4xx, saying why.
    let dir = tempfile::tempdir().unwrap();
    let dsn = dir.path().join("dsn.eml");
    std::fs::write(
        &dsn,
        "From: MAILER-DAEMON@mail.test\r\nTo: calendar-bridge@bridge.test\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <dsn-outage@mail.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n\
         --b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.mail.test\r\n\r\n\
         Final-Recipient: rfc822; carol@mail.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
         --b1\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <never-sent@bridge.test>\r\n\
         From: calendar-bridge@bridge.test\r\nTo: carol@mail.test\r\nSubject: x\r\n\r\nx\r\n--b1--\r\n",
    )
    .unwrap();
    let (ok, transcript) = swaks(smtp, "<>", &["calendar-bridge@bridge.test"], &dsn, &[]);
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains("<** 451 4.3.0") && transcript.contains("state store unavailable"),
        "{transcript}\n{}",
        bridge.log()
    );
    assert_eq!(sink.messages().len(), 0);

    // The database is back: the same bridge answers for real, the POST's
    // retry is sent once, and the report gets a final answer.
    pg.restart();
    let answer = invite(port, "mailto:carol@mail.test", "outage-1");
    assert_eq!(answer[0].1, "1.1;Sent", "{answer:?}\n{}", bridge.log());
    let (ok, transcript) = swaks(smtp, "<>", &["calendar-bridge@bridge.test"], &dsn, &[]);
    assert!(!ok, "a report of mail never sent is refused: {transcript}");
    assert!(transcript.contains("<** 550 5.7.1"), "{transcript}");
    assert_eq!(sink.messages().len(), 1);
}
