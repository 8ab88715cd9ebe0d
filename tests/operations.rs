//! What an operator watches: the admin listener's `/metrics`, read by
//! Prometheus' own parser (`promtool check metrics`, Debian's `prometheus`
//! package), with the counters moving as traffic goes through, and the
//! health checks.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{free_port, http, itip, schedule_post, Bridge};

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
