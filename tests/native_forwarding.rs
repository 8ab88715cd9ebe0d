//! Native forwarding against a real Cyrus iSchedule receiver found through
//! a real DNS server (dnsmasq) serving SRV, TXT and A records.

mod support;

use std::net::Ipv4Addr;

use support::{
    free_port, http, ical_day, run_cli, statuses, Bridge, Certs, Cyrus, Dns, HttpResponse, Zone,
};

/// Appendix A.1 with future dates (Cyrus ignores the past) and CRLF.
fn invitation(attendees: &[&str]) -> String {
    let day = ical_day(10);
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//Example Corp.//EN".into(),
        "METHOD:REQUEST".into(),
        "BEGIN:VEVENT".into(),
        format!("DTSTAMP:{}T200200Z", ical_day(0)),
        "ORGANIZER:mailto:bernard@example.com".into(),
        format!("DTSTART:{day}T130000Z"),
        format!("DTEND:{day}T140000Z"),
        "SUMMARY:Design meeting".into(),
        format!("UID:{}@example.com", free_port()),
        "ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR;CUTYPE=INDIVIDUAL;CN=Bernard Desruisseaux:mailto:bernard@example.com".into(),
    ];
    for a in attendees {
        lines.push(format!(
            "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;ROLE=REQ-PARTICIPANT;CUTYPE=INDIVIDUAL:{a}"
        ));
    }
    lines.extend(["END:VEVENT".into(), "END:VCALENDAR".into(), String::new()]);
    lines.join("\r\n")
}

/// Appendix A.2 with future dates.
fn freebusy(attendees: &[&str]) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//Example Corp.//EN".into(),
        "METHOD:REQUEST".into(),
        "BEGIN:VFREEBUSY".into(),
        format!("DTSTAMP:{}T200200Z", ical_day(0)),
        "ORGANIZER:mailto:bernard@example.com".into(),
        format!("DTSTART:{}T000000Z", ical_day(10)),
        format!("DTEND:{}T000000Z", ical_day(11)),
        "UID:34222-233@example.com".into(),
    ];
    lines.extend(attendees.iter().map(|a| format!("ATTENDEE:{a}")));
    lines.extend([
        "END:VFREEBUSY".into(),
        "END:VCALENDAR".into(),
        String::new(),
    ]);
    lines.join("\r\n")
}

fn post(port: u16, component: &str, recipients: &[&str], body: &str) -> HttpResponse {
    let content_type = format!("text/calendar; component={component}; method=REQUEST");
    let recipient = recipients.join(", ");
    http(
        port,
        "POST",
        "/.well-known/ischedule",
        &[
            ("iSchedule-Version", "1.0"),
            (
                "iSchedule-Message-ID",
                "798F00BB-5B45-4634-B083-0D0CD3A2BB39",
            ),
            ("Originator", "mailto:bernard@example.com"),
            ("Recipient", &recipient),
            ("Cache-Control", "no-cache, no-transform"),
            ("Content-Type", &content_type),
        ],
        body.as_bytes(),
    )
}

/// Cyrus over HTTPS for cyrus.test, published by SRV; a domain whose SRV
/// target refuses connections; a domain with no SRV record. Native only:
/// mail is the subject of tests/imip_outbound.rs.
struct World {
    _certs: Certs,
    cyrus: Cyrus,
    dns: Dns,
    bridge: Bridge,
}

impl World {
    fn start(txt_path: bool) -> World {
        let certs = Certs::generate(&["ischedule.cyrus.test"]);
        let cyrus = Cyrus::start("cyrus.test", &["bob", "alice"], Some(&certs));
        let dead_port = free_port();
        let mut zone = Zone::new()
            .authoritative("cyrus.test")
            .authoritative("down.test")
            .authoritative("nosrv.test")
            .ttl(120)
            .srv(
                "cyrus.test",
                "ischedule.cyrus.test",
                cyrus.tls_port.unwrap(),
                0,
                10,
            )
            .a("ischedule.cyrus.test", Ipv4Addr::LOCALHOST)
            .srv("down.test", "dead.down.test", dead_port, 0, 10)
            .a("dead.down.test", Ipv4Addr::LOCALHOST);
        if txt_path {
            zone = zone.txt("_ischedules._tcp.cyrus.test", "path=/ischedule");
        }
        let dns = Dns::start(&zone);
        let port = free_port();
        let bridge = Bridge::start(
            port,
            &format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
                 [tls]\nca_file = \"{}\"\n[timeouts]\nconnect_secs = 2\nreceiver_secs = 10\n\
                 [imip]\nmode = \"native-only\"\n",
                dns.port,
                certs.ca.display()
            ),
        );
        World {
            _certs: certs,
            cyrus,
            dns,
            bridge,
        }
    }
}

#[test]
fn a1_invitation_delivered_to_cyrus_user_and_unknown_user_is_3_7() {
    let w = World::start(false);
    let to = ["mailto:bob@cyrus.test", "mailto:nobody@cyrus.test"];
    let r = post(w.bridge.port, "VEVENT", &to, &invitation(&to));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.bridge.log());
    assert_eq!(r.header("Cache-Control"), Some("no-cache, no-transform"));
    assert_eq!(r.header("iSchedule-Version"), Some("1.0"));
    let s = statuses(&r);
    assert_eq!(s.len(), 2, "{}", r.text());
    assert_eq!(s[0].0, "mailto:bob@cyrus.test");
    assert!(
        s[0].1.starts_with("2.0"),
        "{s:?}\n{}\n{}",
        r.text(),
        w.bridge.log()
    );
    assert_eq!(s[1].0, "mailto:nobody@cyrus.test");
    assert!(s[1].1.starts_with("3.7"), "{s:?}");
    // One structured line per POST, naming the receiver and each status.
    let log = w.bridge.log();
    let line = log
        .lines()
        .find(|l| l.contains("scheduled"))
        .expect("a POST log line");
    assert!(
        line.contains("798F00BB")
            && line.contains("srv:ischedule.cyrus.test")
            && line.contains("3.7"),
        "{line}"
    );
}

#[test]
fn a2_freebusy_returns_cyrus_calendar_data() {
    let w = World::start(true);
    let to = ["mailto:bob@cyrus.test"];
    let r = post(w.bridge.port, "VFREEBUSY", &to, &freebusy(&to));
    assert_eq!(r.status, 200, "{}", r.text());
    let s = statuses(&r);
    assert_eq!(
        s,
        vec![(
            "mailto:bob@cyrus.test".to_string(),
            "2.0;Success".to_string()
        )],
        "{}",
        r.text()
    );
    let text = r.text();
    assert!(text.contains("<calendar-data>"), "{text}");
    assert!(
        text.contains("METHOD:REPLY") && text.contains("BEGIN:VFREEBUSY"),
        "{text}"
    );
    assert!(
        text.contains("PRODID:-//CyrusIMAP.org"),
        "the data must be Cyrus's own: {text}"
    );
}

#[test]
fn one_post_three_domains_one_status_each_in_order() {
    let w = World::start(false);
    let to = [
        "mailto:someone@down.test",
        "mailto:bob@cyrus.test",
        "mailto:carol@nosrv.test",
    ];
    let r = post(w.bridge.port, "VEVENT", &to, &invitation(&to));
    assert_eq!(r.status, 200, "{}", r.text());
    let s = statuses(&r);
    let recipients: Vec<&str> = s.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(recipients, to, "{}", r.text());
    assert!(
        s[0].1.starts_with("5.1"),
        "SRV target refusing connections: {s:?}"
    );
    assert!(
        s[1].1.starts_with("2.0"),
        "native via SRV: {s:?}\n{}",
        w.bridge.log()
    );
    assert_eq!(
        s[2].1, "5.3;No scheduling support for user",
        "no SRV record"
    );
    let text = r.text();
    assert!(text.contains("unreachable"), "the 5.1 says why: {text}");
    assert!(
        text.contains("_ischedules._tcp.nosrv.test"),
        "the 5.3 says what was looked up: {text}"
    );
}

#[test]
fn route_explains_srv_txt_and_the_receivers_capabilities() {
    let w = World::start(true);
    let config = w.bridge.dir().join("bridge.toml");
    let out = run_cli(&[
        "route",
        "--config",
        config.to_str().unwrap(),
        "mailto:bob@cyrus.test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = w.cyrus.tls_port.unwrap();
    assert!(
        text.contains(&format!(
            "priority 0 weight 10 port {port} target ischedule.cyrus.test (TTL 120 s)"
        )),
        "{text}"
    );
    assert!(
        text.contains("path: /ischedule (from TXT path=, TTL 120 s)"),
        "{text}"
    );
    assert!(
        text.contains("capabilities from https://ischedule.cyrus.test"),
        "{text}"
    );
    assert!(
        text.contains("VEVENT (REQUEST REPLY CANCEL)"),
        "Cyrus's own list: {text}"
    );
    let _ = &w.dns;
}

#[test]
fn static_routes_follow_redirects_and_split_at_max_recipients() {
    // Bridge B fronts Cyrus over plain HTTP through its well-known URI
    // (Cyrus answers 301 to /ischedule) and advertises max-recipients 1;
    // bridge A routes cyrus.test to B, so it must send one POST per recipient.
    let cyrus = Cyrus::start("cyrus.test", &["bob", "alice"], None);
    let (a_port, b_port) = (free_port(), free_port());
    let b = Bridge::start(
        b_port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{b_port}\"\n[limits]\nmax_recipients = 1\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/.well-known/ischedule\"\n",
            cyrus.http_port
        ),
    );
    let a = Bridge::start(
        a_port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{a_port}\"\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{b_port}/ischedule\"\n"
        ),
    );
    let to = ["mailto:bob@cyrus.test", "mailto:alice@cyrus.test"];
    let r = post(a.port, "VEVENT", &to, &invitation(&to));
    assert_eq!(r.status, 200, "{}", r.text());
    let s = statuses(&r);
    assert_eq!(s.len(), 2);
    assert!(
        s.iter().all(|(_, st)| st.starts_with("2.0")),
        "{s:?}\nA: {}\nB: {}",
        a.log(),
        b.log()
    );
    let posts_at_b = b.log().lines().filter(|l| l.contains("scheduled")).count();
    assert_eq!(
        posts_at_b,
        2,
        "B must receive one POST per recipient:\n{}",
        b.log()
    );
}
