//! Soak and fault test (issue 9): about a minute of POSTs to a mix of native
//! (Cyrus, by static route) and mail recipients (the aiosmtpd sink as relay)
//! while the relay flaps between accepting, answering 4xx (the sink's
//! `tempfail*` recipients) and being down, the receiver goes down and comes
//! back, and the bridge is killed with SIGKILL and restarted twice.
//!
//! At the end every mail the bridge accepted (1.0 or 1.1) was delivered
//! exactly once or reported to its organizer, nothing it refused was
//! delivered, and every native answer matches what Cyrus recorded: a 2.0
//! means the invitation is in bob's scheduling inbox, a failure that it is
//! not. Faults are injected between POSTs (the driver is one thread), so the
//! outcome does not depend on timing: a SIGKILL in the middle of a POST or
//! of an SMTP transaction is at-least-once territory, tested elsewhere.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{
    free_port, http, itip, run_cli, schedule_post, statuses, Bridge, Cyrus, Dns, SmtpSink, Zone,
};

const ORGANIZER: &str = "mailto:alice@cyrus.test";
const NATIVE: &str = "mailto:bob@cyrus.test";
const TRAFFIC: Duration = Duration::from_secs(55);
const BOB: (&str, &str) = ("Authorization", "Basic Ym9iOng="); // bob:x

/// What happens to the peers, at seconds into the traffic.
#[derive(Debug, Clone, Copy)]
enum Fault {
    RelayDown,
    /// The sink: accepts, but 451 for `tempfail*` and 550 for `reject*`.
    RelayFlaky,
    RelayAcceptsAll,
    ReceiverDown,
    ReceiverUp,
    /// SIGKILL and restart; only while the relay is down, so no SMTP
    /// transaction is cut between the relay's 250 and the queue's commit.
    CrashBridge,
}

const PLAN: [(u64, Fault); 11] = [
    (6, Fault::RelayDown),
    (11, Fault::CrashBridge),
    (15, Fault::RelayFlaky),
    (20, Fault::ReceiverDown),
    (23, Fault::ReceiverUp),
    (27, Fault::RelayDown),
    (31, Fault::CrashBridge),
    (35, Fault::RelayAcceptsAll),
    (41, Fault::RelayDown),
    (45, Fault::RelayFlaky),
    (50, Fault::RelayAcceptsAll),
];

#[derive(Debug)]
struct Answer {
    uid: String,
    recipient: String,
    status: String,
}

/// The envelope recipient of each message the sink stored (aiosmtpd's
/// Mailbox handler adds `X-RcptTo`).
fn delivered(sink: &SmtpSink) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for path in sink.messages() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let rcpt = text
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix("X-RcptTo: "))
            .unwrap_or("?")
            .trim()
            .to_ascii_lowercase();
        *count.entry(rcpt).or_insert(0) += 1;
    }
    count
}

/// bob's scheduling inbox, all calendar data in one answer.
fn bobs_inbox(cyrus: &Cyrus) -> String {
    let query = br#"<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"/></C:filter>
</C:calendar-query>"#;
    let r = http(
        cyrus.http_port,
        "REPORT",
        "/dav/calendars/user/bob/Inbox/",
        &[BOB, ("Depth", "1"), ("Content-Type", "application/xml")],
        query,
    );
    assert_eq!(r.status, 207, "REPORT on bob's inbox: {}", r.text());
    r.text().replace("\r\n ", "")
}

#[test]
fn posts_survive_a_flapping_relay_a_restarting_receiver_and_two_crashes() {
    let wall = Instant::now();
    let mut sink = SmtpSink::start();
    let cyrus = Cyrus::start("cyrus.test", &["alice", "bob"], None);
    let dns = Dns::start(&Zone::new().authoritative("mail.test"));
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
         [timeouts]\nconnect_secs = 2\nreceiver_secs = 5\n\
         [smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"calendar-bridge@bridge.test\"\ntimeout_secs = 3\n\
         [queue]\nfirst_retry_secs = 1\nmax_retry_secs = 2\nmax_age_secs = 3600\n\
         [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\nmode = \"native-only\"\n",
        dns.port, sink.port, cyrus.http_port
    );
    let mut bridge = Some(Bridge::start(port, &config));
    let config_path = bridge
        .as_ref()
        .expect("bridge")
        .dir()
        .join("bridge.toml")
        .to_string_lossy()
        .into_owned();

    let mut answers: Vec<Answer> = Vec::new();
    let mut plan = PLAN.iter().peekable();
    let (mut posts, mut crashes) = (0usize, 0usize);
    let start = Instant::now();
    while start.elapsed() < TRAFFIC {
        while let Some((_, fault)) = plan.next_if(|(at, _)| start.elapsed().as_secs() >= *at) {
            match fault {
                Fault::RelayDown => sink.stop(),
                Fault::RelayFlaky => sink.restart(),
                Fault::RelayAcceptsAll => sink.restart_accepting_everyone(),
                Fault::ReceiverDown => cyrus.halt(),
                Fault::ReceiverUp => cyrus.resume(),
                Fault::CrashBridge => {
                    let (port, dir) = bridge.take().expect("bridge").crash();
                    bridge = Some(Bridge::start_in(port, dir));
                    crashes += 1;
                }
            }
        }
        let i = posts;
        let uid = format!("soak-{i}@example.com");
        let mail = match i % 4 {
            0 | 1 => format!("mailto:user{i}@mail.test"),
            2 => format!("mailto:tempfail{i}@mail.test"),
            _ => format!("mailto:reject{i}@mail.test"),
        };
        let to: Vec<&str> = if i % 4 == 0 {
            vec![NATIVE, &mail]
        } else {
            vec![&mail]
        };
        let attendees: Vec<(&str, &str)> = to.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
        let body = itip("REQUEST", "VEVENT", ORGANIZER, &attendees, &uid);
        let r = schedule_post(port, ORGANIZER, &to, &body, Some(&format!("soak-{i}")));
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
        for (recipient, status) in statuses(&r) {
            answers.push(Answer {
                uid: uid.clone(),
                recipient,
                status,
            });
        }
        posts += 1;
        sleep(Duration::from_millis(40));
    }
    assert_eq!(crashes, 2);
    let bridge = bridge.expect("bridge");

    // The relay accepts everyone now: let the queue drain.
    let drained = (0..50).any(|_| {
        let list = run_cli(&["queue", "--config", &config_path, "--json", "list"]);
        let empty = list.status.success() && String::from_utf8_lossy(&list.stdout).trim() == "[]";
        if !empty {
            sleep(Duration::from_millis(500));
        }
        empty
    });
    assert!(drained, "the queue did not drain:\n{}", bridge.log());

    let log = bridge.log();
    let reported: BTreeSet<String> = log
        .lines()
        .filter(|l| l.contains("failure reported to the organizer"))
        .filter_map(|l| {
            let at = l.find("attendee=")? + "attendee=".len();
            let rest = &l[at..];
            Some(
                rest[..rest.find(' ').unwrap_or(rest.len())]
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect();
    let delivered = delivered(&sink);
    let inbox = bobs_inbox(&cyrus);

    let (mut accepted, mut delivered_once, mut reported_count) = (0, 0, 0);
    let (mut native_checked, mut problems) = (0, Vec::new());
    for a in &answers {
        if a.recipient == NATIVE {
            native_checked += 1;
            let recorded = inbox.contains(&format!("UID:{}", a.uid));
            let ok = a.status.starts_with("2.0") == recorded;
            if !ok || !(a.status.starts_with("2.0") || a.status.starts_with("5.1")) {
                problems.push(format!(
                    "native {} answered {} but recorded={recorded}",
                    a.uid, a.status
                ));
            }
            continue;
        }
        let email = a.recipient.trim_start_matches("mailto:").to_string();
        let times = delivered.get(&email).copied().unwrap_or(0);
        let was_reported = reported.contains(&a.recipient);
        if a.status.starts_with("1.0") || a.status.starts_with("1.1") {
            accepted += 1;
            match (times, was_reported) {
                (1, false) => delivered_once += 1,
                (0, true) => reported_count += 1,
                _ => problems.push(format!(
                    "{} answered {}: delivered {times} times, reported: {was_reported}",
                    a.recipient, a.status
                )),
            }
        } else if times > 0 || was_reported {
            problems.push(format!(
                "{} answered {} yet delivered {times} times (reported: {was_reported})",
                a.recipient, a.status
            ));
        }
    }
    let duplicates = delivered.values().filter(|&&n| n > 1).count();
    println!(
        "soak: {posts} POSTs, {accepted} mails accepted, {delivered_once} delivered once, \
         {duplicates} duplicates, {reported_count} reported to the organizer, \
         {native_checked} native answers checked against Cyrus; {crashes} crashes; {:.0} s wall",
        wall.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "{problems:#?}\n--- bridge log:\n{log}");
    assert_eq!(duplicates, 0);
    assert!(posts > 100, "too little traffic: {posts} POSTs");
    assert!(reported_count > 0 && delivered_once > 0 && native_checked > 0);
}
