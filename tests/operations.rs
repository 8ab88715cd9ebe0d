//! What an operator watches: the admin listener's `/metrics`, read by
//! Prometheus' own parser (`promtool check metrics`, Debian's `prometheus`
//! package), with the counters moving as traffic goes through, and the
//! health checks.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{
    eventually, free_port, http, itip, schedule_post, swaks, Bridge, Cyrus, Dns, SmtpSink, Zone,
};

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by scripts/test)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the exposition: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_parse_and_move_with_traffic_and_health_answers() {
    let (port, admin) = (free_port(), free_port());
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [imip]\nmode = \"imip-only\"\n"
        ),
    );
    assert_eq!(http(admin, "GET", "/healthz", &[], b"").status, 200);
    let ready = http(admin, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{}", ready.text());

    let before = http(admin, "GET", "/metrics", &[], b"").text();
    promtool_check(&before);
    let organizer = "mailto:bob@example.com";
    let body = itip(
        "REQUEST",
        "VEVENT",
        organizer,
        &[("mailto:carol@example.org", "NEEDS-ACTION")],
        "metrics-1",
    );
    let r = schedule_post(port, organizer, &["mailto:carol@example.org"], &body, None);
    assert_eq!(r.status, 200, "{}", r.text());
    // No Recipient header: refused.
    let refused = http(
        port,
        "POST",
        "/ischedule",
        &[("iSchedule-Version", "1.0")],
        b"x",
    );
    assert_eq!(refused.status, 400);

    let after = http(admin, "GET", "/metrics", &[], b"").text();
    promtool_check(&after);
    for (series, moved) in [
        ("ischedule_posts_total{outcome=\"scheduled\"}", 1.0),
        ("ischedule_posts_total{outcome=\"rejected\"}", 1.0),
        (
            "ischedule_recipient_status_total{class=\"1\",path=\"imip\"}",
            1.0,
        ),
    ] {
        let delta = metric(&after, series) - metric(&before, series);
        println!("{series}: +{delta}");
        assert_eq!(delta, moved, "{series}");
    }
    assert_eq!(http(admin, "GET", "/elsewhere", &[], b"").status, 404);
}

/// Every family the issue names moves when its traffic goes through: a
/// native receiver (Cyrus) for latency and the capability cache, mail to a
/// relay (aiosmtpd) that accepts one recipient and defers another for the
/// outcomes and the queue, the receiver's host name asked again for the
/// DNS cache, inbound SMTP for the verdicts, and a held connection.
#[test]
fn each_family_moves_with_its_own_traffic() {
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let sink = SmtpSink::start();
    // The receiver's host name is looked up for each request to it: the
    // first asks dnsmasq, the next are answered from the cache.
    let dns = Dns::start(
        &Zone::new()
            .authoritative("mail.test")
            .a("receiver.cyrus.test", std::net::Ipv4Addr::LOCALHOST)
            .ttl(300),
    );
    let (port, admin, smtp) = (free_port(), free_port(), free_port());
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
             [domains]\nlocal = [\"bridge.test\"]\n\
             [smtp]\nrelay = \"smtp://127.0.0.1:{}\"\ntimeout_secs = 5\n\
             [queue]\nfirst_retry_secs = 600\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nlocal_clients = [\"127.0.0.1/32\"]\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://receiver.cyrus.test:{}/ischedule\"\n",
            dns.port, sink.port, cyrus.http_port
        ),
    );
    let scrape = || {
        let text = http(admin, "GET", "/metrics", &[], b"").text();
        promtool_check(&text);
        text
    };
    let before = scrape();

    let organizer = "mailto:bernard@example.com";
    for n in 0..2 {
        let to = [
            "mailto:bob@cyrus.test",
            "mailto:carol@mail.test",
            "mailto:tempfail@mail.test",
        ];
        let attendees: Vec<(&str, &str)> = to.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
        let body = itip(
            "REQUEST",
            "VEVENT",
            organizer,
            &attendees,
            &format!("families-{n}"),
        );
        let r = schedule_post(port, organizer, &to, &body, None);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Four mails: two accepted by the relay, two deferred and kept.
    assert!(eventually(20, || {
        let text = scrape();
        metric(&text, "ischedule_mail_outcomes_total{outcome=\"accepted\"}") >= 2.0
            && metric(
                &text,
                "ischedule_mail_outcomes_total{outcome=\"temporary\"}",
            ) >= 2.0
    }));

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.eml");
    std::fs::write(
        &plain,
        "From: alice@bridge.test\r\nTo: dave@mail.test\r\nSubject: lunch\r\n\r\nNo calendar here.\r\n",
    )
    .unwrap();
    let (ok, t) = swaks(smtp, "alice@bridge.test", &["dave@mail.test"], &plain, &[]);
    assert!(!ok && t.contains("<** 550 5.6.0"), "{t}");

    // A connection that has sent nothing yet is open all the same.
    let held = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let after = eventually(5, || {
        metric(&scrape(), "ischedule_open_connections{listener=\"http\"}") >= 1.0
    });
    assert!(after, "the held connection is not counted");
    let after = scrape();
    drop(held);

    let moved = |series: &str| metric(&after, series) - metric(&before, series);
    for (series, at_least) in [
        (
            "ischedule_receiver_request_seconds_count{request=\"capabilities\"}",
            1.0,
        ),
        (
            "ischedule_receiver_request_seconds_count{request=\"post\"}",
            2.0,
        ),
        ("ischedule_capability_cache_total{result=\"fetched\"}", 1.0),
        ("ischedule_capability_cache_total{result=\"hit\"}", 1.0),
        ("ischedule_dns_cache_total{result=\"miss\"}", 1.0),
        ("ischedule_dns_cache_total{result=\"hit\"}", 1.0),
        (
            "ischedule_recipient_status_total{class=\"2\",path=\"native\"}",
            2.0,
        ),
        (
            "ischedule_recipient_status_total{class=\"1\",path=\"imip\"}",
            4.0,
        ),
        ("ischedule_mail_outcomes_total{outcome=\"accepted\"}", 2.0),
        ("ischedule_mail_outcomes_total{outcome=\"temporary\"}", 2.0),
        ("ischedule_inbound_mail_total{verdict=\"refused\"}", 1.0),
    ] {
        let delta = moved(series);
        println!("{series}: +{delta}");
        assert!(
            delta >= at_least,
            "{series} moved by {delta}, expected at least {at_least}"
        );
    }
    // The two deferred mails wait in the queue for their retry in 10 minutes.
    assert_eq!(metric(&after, "ischedule_queue_messages"), 2.0, "{after}");
    assert!(metric(&after, "ischedule_queue_oldest_age_seconds") < 60.0);
    println!(
        "queue: {} messages, oldest {} s",
        metric(&after, "ischedule_queue_messages"),
        metric(&after, "ischedule_queue_oldest_age_seconds")
    );
}

/// A receiver whose capabilities cannot be read is still sent messages
/// (the spec's lenient path), but it is asked for them once per
/// `capabilities.unreadable_retry_secs`, not before every POST. The
/// receiver is a second bridge asked at a path it does not serve: 404 to
/// the capabilities request and to the POSTs alike.
#[test]
fn unreadable_capabilities_are_asked_for_once_per_window() {
    let (receiver_port, port, admin) = (free_port(), free_port(), free_port());
    let _receiver = Bridge::start(
        receiver_port,
        &format!("[server]\nlisten = \"127.0.0.1:{receiver_port}\"\n"),
    );
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [capabilities]\nunreadable_retry_secs = 300\n\
             [[route]]\ndomain = \"elsewhere.test\"\nto = \"http://127.0.0.1:{receiver_port}/not-ischedule\"\n"
        ),
    );
    let asked = |series: &str| metric(&http(admin, "GET", "/metrics", &[], b"").text(), series);
    let gets = "ischedule_receiver_request_seconds_count{request=\"capabilities\"}";
    let posts = "ischedule_receiver_request_seconds_count{request=\"post\"}";
    let (gets_before, posts_before) = (asked(gets), asked(posts));
    let organizer = "mailto:bernard@example.com";
    let to = ["mailto:zoe@elsewhere.test"];
    for n in 0..5 {
        let body = itip(
            "REQUEST",
            "VEVENT",
            organizer,
            &[(to[0], "NEEDS-ACTION")],
            &format!("unreadable-{n}"),
        );
        let r = schedule_post(port, organizer, &to, &body, None);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (gets, posts) = (asked(gets) - gets_before, asked(posts) - posts_before);
    println!(
        "5 POSTs to a receiver without capabilities: {gets} capability requests, {posts} POSTs"
    );
    assert_eq!(posts, 5.0, "every message is still sent");
    assert_eq!(gets, 1.0, "the unreadable answer is remembered");
}
