//! iSchedule to iMIP through the running bridge, against the real aiosmtpd
//! sink (shared/peers/smtp-sink.py: `reject*` 550 5.1.1, `tempfail*` 451),
//! a real DNS server, and Cyrus where a native receiver is needed.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    calendar_part, free_port, http, itip, run_cli, schedule_post, shared_dir, statuses, Bridge,
    Cyrus, Dns, HttpResponse, SmtpSink, Zone,
};

const ORGANIZER: &str = "mailto:bernard@example.com";

/// The sink, a DNS server where mail.test has no SRV record, and a bridge
/// relaying to the sink; `extra` is appended to the bridge's config.
struct World {
    sink: SmtpSink,
    _dns: Dns,
    bridge: Bridge,
}

impl World {
    fn start(extra: &str) -> World {
        let sink = SmtpSink::start();
        let dns = Dns::start(
            &Zone::new()
                .authoritative("mail.test")
                .authoritative("cyrus.test"),
        );
        let port = free_port();
        let bridge = Bridge::start(port, &config(port, dns.port, sink.port, extra));
        World {
            sink,
            _dns: dns,
            bridge,
        }
    }
}

fn config(port: u16, dns: u16, sink: u16, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{dns}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
         [smtp]\nrelay = \"smtp://127.0.0.1:{sink}\"\nfrom = \"calendar-bridge@bridge.test\"\ntimeout_secs = 5\n\
         [queue]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n{extra}"
    )
}

/// Waits until `ready` holds, at most `secs`.
fn eventually(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ready()
}

/// The organizer invites `to`, everyone NEEDS-ACTION, in one POST.
fn invite(port: u16, to: &[&str], uid: &str, message_id: Option<&str>) -> HttpResponse {
    let attendees: Vec<(&str, &str)> = to.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
    let body = itip("REQUEST", "VEVENT", ORGANIZER, &attendees, uid);
    schedule_post(port, ORGANIZER, to, &body, message_id)
}

fn validate(mails: &[std::path::PathBuf]) -> String {
    let out = Command::new("python3")
        .arg(shared_dir().join("peers/validate-imip.py"))
        .args(mails)
        .output()
        .expect("python3 validate-imip.py");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "validator refused:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn every_method_and_component_becomes_valid_imip_carrying_the_posted_object() {
    let w = World::start("");
    let methods = [
        "PUBLISH",
        "REQUEST",
        "REPLY",
        "ADD",
        "CANCEL",
        "REFRESH",
        "COUNTER",
        "DECLINECOUNTER",
    ];
    let mut posted = Vec::new();
    for component in ["VEVENT", "VTODO"] {
        for method in methods {
            let attendee = format!(
                "mailto:{}-{}@mail.test",
                method.to_lowercase(),
                component.to_lowercase()
            );
            let from_attendee = matches!(method, "REPLY" | "REFRESH" | "COUNTER");
            let uid = format!("{method}-{component}@example.com");
            // A reply goes from the attendee to an organizer with no receiver.
            let organizer = if from_attendee {
                "mailto:organizer@mail.test"
            } else {
                ORGANIZER
            };
            let partstat = if method == "REPLY" {
                "ACCEPTED"
            } else {
                "NEEDS-ACTION"
            };
            let body = itip(method, component, organizer, &[(&attendee, partstat)], &uid);
            let (originator, recipient) = if from_attendee {
                (attendee.as_str(), organizer)
            } else {
                (ORGANIZER, attendee.as_str())
            };
            let r = schedule_post(w.bridge.port, originator, &[recipient], &body, Some(&uid));
            assert_eq!(r.status, 200, "{method} {component}: {}", r.text());
            assert_eq!(
                statuses(&r)[0].1,
                "1.1;Sent",
                "{method} {component}: {}",
                r.text()
            );
            posted.push((method, component, body));
        }
    }
    let mails = w.sink.messages();
    assert_eq!(mails.len(), 16, "one mail per POST");
    let report = validate(&mails);
    assert_eq!(
        report.lines().filter(|l| l.starts_with("OK ")).count(),
        16,
        "{report}"
    );
    for mail in &mails {
        let (calendar, headers) = calendar_part(mail);
        let calendar = String::from_utf8(calendar).expect("UTF-8 calendar");
        let (method, component, body) = posted
            .iter()
            .find(|(m, c, _)| calendar.contains(&format!("UID:{m}-{c}@example.com")))
            .expect("a mail for each POST");
        assert_eq!(
            &calendar, body,
            "{method} {component}: the calendar part is the posted object, byte for byte"
        );
        assert!(
            headers.contains("Auto-Submitted: auto-generated"),
            "{headers}"
        );
        assert!(
            headers.contains("calendar-bridge@bridge.test"),
            "From is the bridge's own address: {headers}"
        );
    }
}

#[test]
fn smtp_replies_map_to_request_status_and_a_deferred_mail_is_delivered_later() {
    let mut w = World::start("");
    let to = [
        "mailto:reject1@mail.test",
        "mailto:tempfail1@mail.test",
        "mailto:carol@mail.test",
    ];
    let r = invite(w.bridge.port, &to, "map@example.com", Some("map-1"));
    let s = statuses(&r);
    assert_eq!(
        s.iter().map(|(_, st)| st.as_str()).collect::<Vec<_>>(),
        ["3.7;Invalid calendar user", "1.0;Pending", "1.1;Sent"],
        "{}",
        r.text()
    );
    let text = r.text();
    assert!(
        text.contains("550 5.1.1 No such user here"),
        "the SMTP reply is quoted: {text}"
    );
    assert!(text.contains("451"), "{text}");
    assert_eq!(w.sink.messages().len(), 1);

    // The server recovers: the queued mail goes out with the next retry.
    w.sink.restart_accepting_everyone();
    assert!(
        eventually(20, || w.sink.messages().len() == 2),
        "queued mail not delivered:\n{}",
        w.bridge.log()
    );
    assert!(w.bridge.log().contains("delivered"), "{}", w.bridge.log());
}

#[test]
fn sink_down_during_the_post_is_pending_then_delivered() {
    let mut w = World::start("");
    w.sink.stop();
    let to = ["mailto:carol@mail.test"];
    let r = invite(w.bridge.port, &to, "down@example.com", Some("down-1"));
    assert_eq!(statuses(&r)[0].1, "1.0;Pending", "{}", r.text());
    w.sink.restart();
    assert!(
        eventually(20, || w.sink.messages().len() == 1),
        "{}",
        w.bridge.log()
    );
}

#[test]
fn a_crash_between_queueing_and_delivery_loses_nothing() {
    let mut w = World::start("");
    w.sink.stop();
    let to = ["mailto:carol@mail.test", "mailto:dave@mail.test"];
    let r = invite(w.bridge.port, &to, "crash@example.com", Some("crash-1"));
    assert!(
        statuses(&r).iter().all(|(_, s)| s == "1.0;Pending"),
        "{}",
        r.text()
    );
    // SIGKILL: no shutdown, nothing flushed; only what was committed survives.
    let (port, dir) = w.bridge.crash();
    w.sink.restart();
    let bridge = Bridge::start_in(port, dir);
    assert!(
        eventually(20, || w.sink.messages().len() == 2),
        "{}",
        bridge.log()
    );
    w.bridge = bridge;
}

#[test]
fn a_repeated_post_sends_exactly_one_mail_and_answers_the_same() {
    let w = World::start("");
    let to = ["mailto:carol@mail.test"];
    let body = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &[(to[0], "NEEDS-ACTION")],
        "again@example.com",
    );
    let first = schedule_post(w.bridge.port, ORGANIZER, &to, &body, Some("again-1"));
    let second = schedule_post(w.bridge.port, ORGANIZER, &to, &body, Some("again-1"));
    assert_eq!(statuses(&first), statuses(&second));
    assert_eq!(statuses(&first)[0].1, "1.1;Sent");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.sink.messages().len(), 1, "{}", w.bridge.log());
    assert!(
        w.bridge.log().contains("repeated=true"),
        "{}",
        w.bridge.log()
    );
    // Without an iSchedule-Message-ID nothing identifies a retry: two mails.
    schedule_post(w.bridge.port, ORGANIZER, &to, &body, None);
    assert!(eventually(5, || w.sink.messages().len() == 2));
}

#[test]
fn native_mail_and_rejected_recipients_in_one_post() {
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let w = World::start(&format!(
        "[[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
        cyrus.http_port
    ));
    let to = [
        "mailto:bob@cyrus.test",
        "mailto:carol@mail.test",
        "mailto:reject9@mail.test",
    ];
    let r = invite(w.bridge.port, &to, "mixed@example.com", Some("mixed-1"));
    let got: Vec<(String, String)> = statuses(&r);
    let expected = [
        ("mailto:bob@cyrus.test", "2.0"),
        ("mailto:carol@mail.test", "1.1"),
        ("mailto:reject9@mail.test", "3.7"),
    ];
    assert_eq!(got.len(), 3, "{}", r.text());
    for ((recipient, status), (want_recipient, want_status)) in got.iter().zip(expected) {
        assert_eq!(recipient, want_recipient);
        assert!(
            status.starts_with(want_status),
            "{recipient}: {status}\n{}",
            r.text()
        );
    }
    assert_eq!(w.sink.messages().len(), 1, "only carol gets mail");
}

#[test]
fn token_reply_routing_rewrites_the_organizer_and_keeps_the_token_for_updates() {
    let w = World::start("[imip]\nreply_routing = \"token\"\ntoken_domain = \"bridge.test\"\n");
    let to = ["mailto:carol@mail.test"];
    let first = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &[(to[0], "NEEDS-ACTION")],
        "token@example.com",
    );
    let update = first.replace(
        "SUMMARY:Design meeting",
        "SUMMARY:Design meeting (moved)\r\nSEQUENCE:1",
    );
    for (body, id) in [(&first, "token-1"), (&update, "token-2")] {
        let r = schedule_post(w.bridge.port, ORGANIZER, &to, body, Some(id));
        assert_eq!(statuses(&r)[0].1, "1.1;Sent", "{}", r.text());
    }
    let mails = w.sink.messages();
    assert_eq!(mails.len(), 2);
    let mut tokens = Vec::new();
    for (mail, posted) in mails.iter().zip([&first, &update]) {
        let (calendar, headers) = calendar_part(mail);
        let calendar = String::from_utf8(calendar).unwrap();
        let line = calendar
            .lines()
            .find(|l| l.starts_with("ORGANIZER"))
            .unwrap()
            .to_string();
        let address = line.rsplit_once("mailto:").unwrap().1.to_string();
        assert!(
            line.starts_with("ORGANIZER;CN=Bernard Desruisseaux:mailto:ischedule+"),
            "CN kept: {line}"
        );
        assert!(address.ends_with("@bridge.test"), "{address}");
        assert!(
            headers.contains(&format!("Reply-To: {address}")),
            "{headers}"
        );
        // Apart from the documented ORGANIZER edit, the object is as posted.
        let restored = calendar.replace(
            &line,
            "ORGANIZER;CN=Bernard Desruisseaux:mailto:bernard@example.com",
        );
        assert!(
            posted.contains(&restored) || restored == **posted,
            "only ORGANIZER changed"
        );
        tokens.push(address);
    }
    assert_eq!(tokens[0], tokens[1], "an update keeps the reply address");
}

#[test]
fn freebusy_for_a_mail_only_recipient_is_5_3() {
    let w = World::start("");
    let to = ["mailto:carol@mail.test"];
    let r = schedule_post(
        w.bridge.port,
        ORGANIZER,
        &to,
        &itip(
            "REQUEST",
            "VFREEBUSY",
            ORGANIZER,
            &[(to[0], "")],
            "fb@example.com",
        ),
        Some("fb-1"),
    );
    let s = statuses(&r);
    assert_eq!(s[0].1, "5.3;No scheduling support for user", "{}", r.text());
    assert!(
        r.text()
            .contains("free-busy needs a native iSchedule receiver"),
        "{}",
        r.text()
    );
    assert!(w.sink.messages().is_empty());
}

#[test]
fn fallback_modes_decide_what_happens_when_the_receiver_is_down() {
    let dead = free_port();
    let w = World::start(&format!(
        "[[route]]\ndomain = \"down.test\"\nto = \"http://127.0.0.1:{dead}/ischedule\"\nmode = \"native-then-imip\"\n\
         [[route]]\ndomain = \"strict.test\"\nto = \"http://127.0.0.1:{dead}/ischedule\"\nmode = \"native-only\"\n\
         [[route]]\ndomain = \"mailonly.test\"\nmode = \"imip-only\"\n"
    ));
    let to = [
        "mailto:a@down.test",
        "mailto:b@strict.test",
        "mailto:c@mailonly.test",
    ];
    let r = invite(w.bridge.port, &to, "fallback@example.com", Some("fb-2"));
    let s = statuses(&r);
    assert_eq!(
        s[0].1,
        "1.1;Sent",
        "native-then-imip falls back to mail: {}",
        r.text()
    );
    assert!(
        s[1].1.starts_with("5.1"),
        "native-only reports the failure: {}",
        r.text()
    );
    assert_eq!(s[2].1, "1.1;Sent", "imip-only: {}", r.text());
    assert!(r.text().contains("sent by mail instead"), "{}", r.text());
    assert_eq!(w.sink.messages().len(), 2);
    let log = w.bridge.log();
    assert!(
        log.contains("\"route\":\"rule[0] domain down.test then imip\""),
        "the decision is logged: {log}"
    );
}

#[test]
fn given_up_mail_is_reported_to_the_organizers_receiver() {
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    // `extra` continues the [queue] table first: give up after 2 s.
    let w = World::start(&format!(
        "max_age_secs = 2\n[[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
        cyrus.http_port
    ));
    let organizer = "mailto:bob@cyrus.test";
    let to = ["mailto:tempfail7@mail.test"];
    let invitation = itip(
        "REQUEST",
        "VEVENT",
        organizer,
        &[(to[0], "NEEDS-ACTION")],
        "giveup@example.com",
    );
    // The organizer's own copy of the event, as his calendar client stored it.
    let stored = invitation.replace("METHOD:REQUEST\r\n", "");
    let put = http(
        cyrus.http_port,
        "PUT",
        "/dav/calendars/user/bob/Default/giveup.ics",
        &[
            ("Authorization", "Basic Ym9iOng="),
            ("Content-Type", "text/calendar"),
        ],
        stored.as_bytes(),
    );
    assert!(
        matches!(put.status, 201 | 204),
        "CalDAV PUT: {} {}",
        put.status,
        put.text()
    );
    let r = schedule_post(w.bridge.port, organizer, &to, &invitation, Some("giveup-1"));
    assert_eq!(statuses(&r)[0].1, "1.0;Pending", "{}", r.text());
    assert!(
        eventually(30, || w
            .bridge
            .log()
            .contains("failure reported to the organizer")),
        "{}",
        w.bridge.log()
    );
    let log = w.bridge.log();
    let line = log
        .lines()
        .find(|l| l.contains("failure reported to the organizer"))
        .unwrap();
    assert!(
        line.contains(&format!(
            "at http://127.0.0.1:{}/ischedule",
            cyrus.http_port
        )),
        "posted to Cyrus: {line}"
    );
    assert!(
        line.contains("outcome=posted: 2.0"),
        "Cyrus accepted the REPLY: {line}"
    );
    assert!(log.contains("given up"), "{log}");
    let event = http(
        cyrus.http_port,
        "GET",
        "/dav/calendars/user/bob/Default/giveup.ics",
        &[("Authorization", "Basic Ym9iOng=")],
        b"",
    );
    // Cyrus stamps an attendee with the DTSTAMP of each REPLY it applies.
    let unfolded = event.text().replace("\r\n ", "");
    assert!(
        unfolded.lines().any(|l| l.starts_with("ATTENDEE")
            && l.contains("X-DTSTAMP=")
            && l.ends_with("mailto:tempfail7@mail.test")),
        "the organizer's event took the failure REPLY:\n{unfolded}"
    );
}

#[test]
fn the_queue_command_lists_retries_and_drops_while_the_bridge_runs_and_after() {
    let mut w = World::start("");
    w.sink.stop();
    let to = ["mailto:carol@mail.test", "mailto:dave@mail.test"];
    invite(w.bridge.port, &to, "queue@example.com", Some("q-1"));
    let config = w.bridge.dir().join("bridge.toml");
    let config = config.to_str().unwrap();
    let cli = |args: &[&str]| {
        let out = run_cli(&[&["queue", "--config", config], args].concat());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // The running bridge holds the store: the command asks it.
    let (ok, list) = cli(&["list"]);
    assert!(
        ok && list.contains("carol@mail.test") && list.contains("dave@mail.test"),
        "{list}"
    );
    let (ok, json) = cli(&["--json", "list"]);
    assert!(ok, "{json}");
    let entries: serde_json::Value = serde_json::from_str(&json).unwrap();
    let id_of = |who: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["recipient"] == who)
            .unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let (carol, dave) = (id_of("carol@mail.test"), id_of("dave@mail.test"));
    let (ok, out) = cli(&["drop", &dave.to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["drop", &dave.to_string()]);
    assert!(
        !ok && out.contains(&format!("no queued message #{dave}")),
        "{out}"
    );
    let (ok, out) = cli(&["retry", &carol.to_string()]);
    assert!(ok, "{out}");
    let (_, list) = cli(&["list"]);
    assert!(
        list.contains("carol@mail.test") && !list.contains("dave@mail.test"),
        "{list}"
    );

    // Stopped bridge: the command opens the store itself.
    let (port, dir) = w.bridge.crash();
    let config = dir.path().join("bridge.toml");
    let out = run_cli(&["queue", "--config", config.to_str().unwrap(), "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("carol@mail.test"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.sink.restart();
    w.bridge = Bridge::start_in(port, dir);
    assert!(
        eventually(20, || w.sink.messages().len() == 1),
        "{}",
        w.bridge.log()
    );
}

#[test]
fn the_embedded_default_writes_mail_to_the_outbox() {
    let port = free_port();
    let bridge = Bridge::start(
        port,
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[imip]\nmode = \"imip-only\"\n"),
    );
    let to = ["mailto:carol@mail.test"];
    let r = schedule_post(
        port,
        ORGANIZER,
        &to,
        &itip(
            "REQUEST",
            "VEVENT",
            ORGANIZER,
            &[(to[0], "NEEDS-ACTION")],
            "outbox@example.com",
        ),
        Some("o-1"),
    );
    assert_eq!(statuses(&r)[0].1, "1.0;Pending", "{}", r.text());
    let outbox: Vec<_> = std::fs::read_dir(bridge.dir().join("outbox"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(outbox.len(), 1);
    validate(&outbox);
}
