//! The bridge as a domain's single entry point: requests that are not
//! iSchedule go unchanged to the configured origin (a real Cyrus CalDAV
//! server here), iSchedule is answered by the bridge itself, on plain HTTP
//! and on a `[[server.tls]]` listener.

mod support;

use std::path::Path;
use std::process::Command;

use support::{free_port, http, ical_day, run_cli, Bridge, Certs, Cyrus, HttpResponse};

/// `bob:x` (Cyrus accepts any password).
const BOB: &str = "Basic Ym9iOng=";

const PROPFIND: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
    <D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/><D:displayname/></D:prop></D:propfind>\n";

/// The `<serial-number>` of a capabilities document.
fn serial_of(xml: &str) -> u64 {
    let start = xml
        .find("<serial-number>")
        .unwrap_or_else(|| panic!("no serial-number in {xml}"))
        + "<serial-number>".len();
    let end = start + xml[start..].find('<').expect("</serial-number>");
    xml[start..end].trim().parse().expect("numeric serial")
}

/// The capabilities serial `check` reports for a config file.
fn serial_from_check(config: &Path) -> u64 {
    let out = run_cli(&["check", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let at = text
        .find("capabilities serial ")
        .unwrap_or_else(|| panic!("no serial in:\n{text}"))
        + "capabilities serial ".len();
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad serial in:\n{text}"))
}

fn propfind(port: u16) -> HttpResponse {
    http(
        port,
        "PROPFIND",
        "/dav/calendars/user/bob/",
        &[
            ("Authorization", BOB),
            ("Depth", "0"),
            ("Content-Type", "application/xml; charset=utf-8"),
        ],
        PROPFIND.as_bytes(),
    )
}

/// Every value of header `name`, joined with ", ".
fn all_values(r: &HttpResponse, name: &str) -> String {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cyrus and a bridge whose origin is Cyrus's plain HTTP port.
fn bridge_in_front_of_cyrus() -> (Cyrus, Bridge) {
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let port = free_port();
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\norigin = \"http://127.0.0.1:{}\"\n",
            cyrus.http_port
        ),
    );
    (cyrus, bridge)
}

#[test]
fn caldav_requests_are_proxied_unchanged_to_the_origin() {
    let (cyrus, bridge) = bridge_in_front_of_cyrus();

    // PROPFIND with credentials and a body.
    let direct = propfind(cyrus.http_port);
    let proxied = propfind(bridge.port);
    assert_eq!(direct.status, 207, "{}", direct.text());
    assert_eq!(proxied.status, 207, "{}\n{}", proxied.text(), bridge.log());
    let text = proxied.text();
    assert!(
        text.contains("multistatus") && text.contains("/dav/calendars/user/bob/"),
        "{text}"
    );
    assert_eq!(text, direct.text(), "the body is Cyrus's own");
    assert_eq!(
        proxied.header("Content-Type"),
        direct.header("Content-Type"),
        "{:?}",
        proxied.headers
    );
    assert_eq!(
        proxied.header("iSchedule-Version"),
        None,
        "a proxied answer is not the bridge's"
    );

    // OPTIONS on a CalDAV collection is the origin's (DAV classes), not
    // the bridge's iSchedule OPTIONS.
    let direct = http(
        cyrus.http_port,
        "OPTIONS",
        "/dav/calendars/user/bob/",
        &[("Authorization", BOB)],
        b"",
    );
    let proxied = http(
        bridge.port,
        "OPTIONS",
        "/dav/calendars/user/bob/",
        &[("Authorization", BOB)],
        b"",
    );
    assert_eq!(proxied.status, direct.status, "{}", proxied.text());
    let dav = all_values(&proxied, "DAV");
    assert!(dav.contains("calendar-access"), "{:?}", proxied.headers);
    assert_eq!(dav, all_values(&direct, "DAV"));
    assert_eq!(all_values(&proxied, "Allow"), all_values(&direct, "Allow"));

    // Without credentials Cyrus itself challenges. (Its realm parameter
    // depends on whether the connection served an authenticated request
    // before, and the bridge pools upstream connections: compare the scheme.)
    let direct = http(cyrus.http_port, "GET", "/dav/calendars/user/bob/", &[], b"");
    let proxied = http(bridge.port, "GET", "/dav/calendars/user/bob/", &[], b"");
    assert_eq!(direct.status, 401, "{}", direct.text());
    assert_eq!(proxied.status, 401, "{}", proxied.text());
    assert!(
        proxied
            .header("WWW-Authenticate")
            .is_some_and(|c| c.starts_with("Basic")),
        "{:?}",
        proxied.headers
    );
    // Cyrus's own 401 page, which names the Host the client sent: the
    // bridge passes it on unchanged.
    let same_page = |proxied: &HttpResponse, direct: &HttpResponse| {
        let text = proxied.text();
        assert!(
            text.contains(&format!("Server at 127.0.0.1 Port {}", bridge.port)),
            "{text}"
        );
        assert_eq!(
            text.replace(
                &format!("Port {}", bridge.port),
                &format!("Port {}", cyrus.http_port)
            ),
            direct.text()
        );
    };
    same_page(&proxied, &direct);

    // A plain GET of a path Cyrus does not have.
    let direct = http(cyrus.http_port, "GET", "/no/such/thing.txt", &[], b"");
    let proxied = http(bridge.port, "GET", "/no/such/thing.txt", &[], b"");
    assert_eq!(proxied.status, direct.status);
    assert_eq!(proxied.status, 404);
    same_page(&proxied, &direct);
    assert!(
        !proxied.text().contains("no origin is configured"),
        "{}",
        proxied.text()
    );

    // A request body reaches the origin: PUT an event through the bridge
    // and read it back from Cyrus directly.
    let uid = format!("pass-through-{}@example.com", free_port());
    let day = ical_day(10);
    let event = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bridge test//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:{}T120000Z\r\nDTSTART:{day}T130000Z\r\nDTEND:{day}T140000Z\r\n\
         SUMMARY:Through the bridge\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        ical_day(0)
    );
    let path = "/dav/calendars/user/bob/Default/pass-through.ics";
    let put = http(
        bridge.port,
        "PUT",
        path,
        &[
            ("Authorization", BOB),
            ("Content-Type", "text/calendar; charset=utf-8"),
        ],
        event.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}\n{}", put.text(), bridge.log());
    let got = http(cyrus.http_port, "GET", path, &[("Authorization", BOB)], b"");
    assert_eq!(got.status, 200, "{}", got.text());
    let text = got.text();
    assert!(
        text.contains(&format!("UID:{uid}")) && text.contains("SUMMARY:Through the bridge"),
        "{text}"
    );
}

#[test]
fn ischedule_paths_are_answered_by_the_bridge_not_the_origin() {
    let (cyrus, bridge) = bridge_in_front_of_cyrus();
    let serial = serial_from_check(&bridge.dir().join("bridge.toml"));
    let cyrus_caps = http(
        cyrus.http_port,
        "GET",
        "/ischedule?action=capabilities",
        &[],
        b"",
    );
    assert_eq!(cyrus_caps.status, 200);
    let cyrus_serial = serial_of(&cyrus_caps.text());
    assert_ne!(serial, cyrus_serial, "the two serials must differ to tell");

    // Both the well-known URI and the configured path (/ischedule, which is
    // also Cyrus's receiver path) are the bridge's, however they are spelt:
    // a spelling passed through would reach Cyrus's own receiver.
    for path in [
        "/.well-known/ischedule?action=capabilities",
        "/ischedule?action=capabilities",
        "/ischedule/?action=capabilities",
        "//ischedule?action=capabilities",
        "/%69schedule?action=capabilities",
        "/./ischedule?action=capabilities",
        "/.well-known/ischedule/?action=capabilities",
    ] {
        let r = http(bridge.port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("iSchedule-Version"), Some("1.0"), "{path}");
        assert_eq!(
            r.header("iSchedule-Capabilities"),
            Some(serial.to_string().as_str()),
            "{path}"
        );
        let text = r.text();
        assert!(text.contains("query-result"), "{path}: {text}");
        assert_eq!(serial_of(&text), serial, "{path}: {text}");
        assert_ne!(text, cyrus_caps.text(), "{path}");
    }
    // Below the receiver path, or in another letter case: the bridge's name
    // space, answered 404 by the bridge rather than by the origin.
    for path in ["/ischedule/x", "/ISCHEDULE", "/.ischedule-bridge/queue7"] {
        let r = http(bridge.port, "POST", path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.text().starts_with("not an iSchedule resource"),
            "{path}: {}",
            r.text()
        );
    }
    // Cyrus answers the well-known URI with a redirect; the bridge never
    // passes it through.
    let direct = http(
        cyrus.http_port,
        "GET",
        "/.well-known/ischedule?action=capabilities",
        &[],
        b"",
    );
    assert!(
        (300..400).contains(&direct.status),
        "Cyrus redirects: {}",
        direct.status
    );
}

#[test]
fn without_origin_other_paths_are_404_with_an_explanation() {
    let port = free_port();
    let _bridge = Bridge::start(port, &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"));
    for (method, path) in [
        ("GET", "/index.html"),
        ("PROPFIND", "/dav/calendars/user/bob/"),
    ] {
        let r = http(port, method, path, &[("Depth", "0")], b"");
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert!(
            r.text().contains("not an iSchedule resource") && r.text().contains("no origin"),
            "{method} {path}: {}",
            r.text()
        );
    }
    let caps = http(
        port,
        "GET",
        "/.well-known/ischedule?action=capabilities",
        &[],
        b"",
    );
    assert_eq!(caps.status, 200);
}

/// `curl` against the TLS listener, trusting only the test CA; returns
/// (status, headers text, body).
fn curl(certs: &Certs, url: &str, extra: &[&str]) -> (u16, String, String) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&certs.ca)
        .arg("-D")
        .arg(&head)
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    assert!(
        out.status.success(),
        "curl {url} failed: {}\n{headers}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {headers:?}"));
    (
        status,
        headers,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn tls_listener_serves_capabilities_and_scheduling() {
    let certs = Certs::generate(&["localhost", "127.0.0.1"]);
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let (port, tls_port) = (free_port(), free_port());
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            certs.cert.display(),
            certs.key.display(),
            cyrus.http_port
        ),
    );
    let serial = serial_from_check(&bridge.dir().join("bridge.toml"));

    let caps = "/.well-known/ischedule?action=capabilities";
    let (status, headers, body) = curl(&certs, &format!("https://127.0.0.1:{tls_port}{caps}"), &[]);
    assert_eq!(status, 200, "{headers}{body}\n{}", bridge.log());
    assert_eq!(
        header(&headers, "iSchedule-Version"),
        Some("1.0"),
        "{headers}"
    );
    assert_eq!(
        header(&headers, "iSchedule-Capabilities"),
        Some(serial.to_string().as_str()),
        "{headers}"
    );
    assert_eq!(serial_of(&body), serial, "{body}");
    // The certificate's DNS name works too.
    let (status, headers, _) = curl(
        &certs,
        &format!("https://localhost:{tls_port}{caps}"),
        &["--resolve", &format!("localhost:{tls_port}:127.0.0.1")],
    );
    assert_eq!(status, 200, "{headers}");

    // A scheduling POST over TLS, routed to Cyrus.
    let day = ical_day(10);
    let invitation = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example Corp.//EN\r\nMETHOD:REQUEST\r\n\
         BEGIN:VEVENT\r\nDTSTAMP:{}T200200Z\r\nORGANIZER:mailto:bernard@example.com\r\n\
         DTSTART:{day}T130000Z\r\nDTEND:{day}T140000Z\r\nSUMMARY:Over TLS\r\n\
         UID:tls-{}@example.com\r\n\
         ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR:mailto:bernard@example.com\r\n\
         ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@cyrus.test\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n",
        ical_day(0),
        free_port()
    );
    let dir = tempfile::TempDir::new().expect("temp dir");
    let body_file = dir.path().join("invitation.ics");
    std::fs::write(&body_file, &invitation).unwrap();
    let data = format!("@{}", body_file.display());
    let (status, headers, body) = curl(
        &certs,
        &format!("https://127.0.0.1:{tls_port}/.well-known/ischedule"),
        &[
            "-X",
            "POST",
            "--data-binary",
            &data,
            "-H",
            "iSchedule-Version: 1.0",
            "-H",
            "iSchedule-Message-ID: 0B8C1C1E-TLS-TEST",
            "-H",
            "Originator: mailto:bernard@example.com",
            "-H",
            "Recipient: mailto:bob@cyrus.test",
            "-H",
            "Cache-Control: no-cache, no-transform",
            "-H",
            "Content-Type: text/calendar; component=VEVENT; method=REQUEST",
        ],
    );
    assert_eq!(status, 200, "{headers}{body}\n{}", bridge.log());
    assert_eq!(
        header(&headers, "iSchedule-Version"),
        Some("1.0"),
        "{headers}"
    );
    assert!(body.contains("schedule-response"), "{body}");
    assert!(
        body.contains("<recipient>mailto:bob@cyrus.test</recipient>"),
        "{body}"
    );
    assert!(
        body.contains("<request-status>2.0"),
        "{body}\n{}",
        bridge.log()
    );
    // The plain listener keeps working beside the TLS one.
    assert_eq!(http(port, "GET", caps, &[], b"").status, 200);
}

#[test]
fn unusable_tls_certificate_stops_serve_with_an_error() {
    // Files that exist but hold no certificate or key: the bridge must not
    // keep running without listeners; it must exit non-zero and say why.
    let dir = tempfile::TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("junk.pem"), "not a PEM file\n").unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"junk.pem\"\nkey = \"junk.pem\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ischedule-bridge"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn ischedule-bridge");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let plain_listener_up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!(
            "serve still running after 10 s (plain listener answering: {plain_listener_up}):\n{text}"
        )
    });
    assert!(!status.success(), "{status}\n{text}");
    assert!(
        text.contains("junk.pem"),
        "the error names the file:\n{text}"
    );
}

/// An origin that records the head of every request it gets and answers
/// 200: what the bridge forwards, as the origin sees it.
fn recording_origin() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, seen)
}

#[test]
fn the_shared_secret_never_reaches_the_origin() {
    let (origin, seen) = recording_origin();
    let port = free_port();
    let secret = "0123456789abcdef-secret";
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\norigin = \"http://127.0.0.1:{origin}\"\n\
             [senders]\nshared_secret = \"{secret}\"\n"
        ),
    );
    let r = http(
        port,
        "GET",
        "/dav/calendars/bob/",
        &[("X-Bridge-Secret", secret), ("X-Other", "kept")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("get /dav/calendars/bob/ "), "{head}");
    assert!(head.contains("x-other: kept"), "{head}");
    assert!(
        !head.contains("x-bridge-secret") && !head.contains(secret),
        "the origin saw the secret: {head}"
    );
}
