//! Issue 9, the network side: attacks on the running bridge with real
//! listeners, real DNS (dnsmasq), real mail servers (aiosmtpd), and what the
//! bridge must do instead. Each test names what it reproduced on the code
//! before the fix.

mod support;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    free_port, itip, run_cli, schedule_post, statuses, Bridge, Dns, HttpResponse, SmtpSink, Zone,
};

const ORGANIZER: &str = "mailto:bernard@example.com";

/// A TCP listener that only counts the connections made to it: where an
/// attacker would like the bridge to connect.
struct Counter {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Counter {
    fn start(ip: Ipv4Addr) -> Counter {
        let listener = TcpListener::bind((ip, 0)).expect("bind counter");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Counter { port, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An attacker's receiver at a static route: answers every request with a
/// redirect to `location`.
fn redirector(location: String) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind redirector");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

fn config(port: u16, dns: u16, extra: &str) -> String {
    config_with(port, dns, "", "", extra)
}

/// `server` and `dns` are more keys of those tables; `extra` more tables.
fn config_with(port: u16, dns: u16, server: &str, dns_keys: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}[dns]\nnameservers = [\"127.0.0.1:{dns}\"]\n{dns_keys}\
         [timeouts]\nconnect_secs = 2\nreceiver_secs = 5\n{extra}"
    )
}

fn invite(port: u16, to: &[&str], uid: &str) -> HttpResponse {
    let attendees: Vec<(&str, &str)> = to.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
    let body = itip("REQUEST", "VEVENT", ORGANIZER, &attendees, uid);
    schedule_post(port, ORGANIZER, to, &body, None)
}

/// The `response-description` of each response, in order.
fn descriptions(r: &HttpResponse) -> Vec<String> {
    r.text()
        .split("<response-description>")
        .skip(1)
        .map(|d| d.split('<').next().unwrap_or_default().to_string())
        .collect()
}

fn eventually(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    ready()
}

// ---- item 7: requests into the private network ----

/// Before: the SRV target's loopback address was used as found, so a
/// recipient domain of the attacker's choice made the bridge connect to the
/// bridge host's own services (the counter saw a connection per attempt).
#[test]
fn srv_and_redirect_targets_in_private_ranges_are_never_contacted() {
    let srv_target = Counter::start(Ipv4Addr::LOCALHOST);
    let metadata = Counter::start(Ipv4Addr::new(127, 0, 0, 2));
    let redirect_port = redirector(format!(
        "http://metadata.evil.test:{}/latest/meta-data",
        metadata.port
    ));
    let dns = Dns::start(
        &Zone::new()
            .authoritative("evil.test")
            .srv("evil.test", "internal.evil.test", srv_target.port, 0, 10)
            .a("internal.evil.test", Ipv4Addr::LOCALHOST)
            .a("metadata.evil.test", Ipv4Addr::new(127, 0, 0, 2)),
    );
    let port = free_port();
    // The static route is the admin's (and may be on loopback); where it
    // redirects to is not.
    let bridge = Bridge::start(
        port,
        &config(
            port,
            dns.port,
            &format!(
                "[imip]\nmode = \"native-only\"\n\
                 [[route]]\ndomain = \"redirect.test\"\nto = \"http://127.0.0.1:{redirect_port}/ischedule\"\n"
            ),
        ),
    );
    let r = invite(
        port,
        &["mailto:bob@evil.test", "mailto:carol@redirect.test"],
        "ssrf-1@example.com",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = statuses(&r);
    assert!(s.iter().all(|(_, st)| st.starts_with("5.1;")), "{s:?}");
    let d = descriptions(&r);
    // A local sender sees what was refused and which key would allow it.
    assert!(
        d[0].contains("127.0.0.1 is loopback, not a public address"),
        "{d:?}"
    );
    assert!(d[1].contains("127.0.0.2 is loopback"), "{d:?}");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(srv_target.connections(), 0, "the SRV target was contacted");
    assert_eq!(
        metadata.connections(),
        0,
        "the redirect target was contacted"
    );
    assert!(bridge.log().contains("learnt address refused"));
}

/// Before: with loopback allowed for internal receivers, an SRV record
/// naming the bridge's own listener made it post to itself (it answered its
/// own TLS handshake with an HTTP error, after a connection per attempt).
#[test]
fn the_bridge_never_connects_to_its_own_listener_even_in_an_allowed_range() {
    let port = free_port();
    let dns = Dns::start(
        &Zone::new()
            .authoritative("loop.test")
            .srv("loop.test", "self.loop.test", port, 0, 10)
            .a("self.loop.test", Ipv4Addr::LOCALHOST),
    );
    let _bridge = Bridge::start(
        port,
        &config_with(
            port,
            dns.port,
            "",
            "allow_private_targets = [\"127.0.0.0/8\"]\n",
            "[imip]\nmode = \"native-only\"\n",
        ),
    );
    let r = invite(port, &["mailto:bob@loop.test"], "loop-1@example.com");
    let d = descriptions(&r);
    assert_eq!(statuses(&r)[0].1, "5.1;Service unavailable", "{d:?}");
    assert!(
        d[0].contains(&format!(
            "127.0.0.1:{port} is one of this bridge's own listening addresses"
        )),
        "{d:?}"
    );
}

/// Before: `smtp.relay = "direct"` spoke SMTP to whatever the recipient
/// domain's MX resolved to, loopback included (the counter saw a session per
/// attempt, and a 4xx kept the mail queued to retry it for days).
#[test]
fn mx_hosts_in_private_ranges_get_no_smtp_session() {
    let mx = Counter::start(Ipv4Addr::LOCALHOST);
    let dns = Dns::start(
        &Zone::new()
            .authoritative("mx-evil.test")
            .mx("mx-evil.test", "mail.mx-evil.test", 10)
            .a("mail.mx-evil.test", Ipv4Addr::LOCALHOST),
    );
    let port = free_port();
    let bridge = Bridge::start(
        port,
        &config(
            port,
            dns.port,
            &format!(
                "[imip]\nmode = \"imip-only\"\n\
                 [smtp]\nrelay = \"direct\"\ndirect_port = {}\nfrom = \"bridge@bridge.test\"\ntimeout_secs = 5\n",
                mx.port
            ),
        ),
    );
    let r = invite(port, &["mailto:carol@mx-evil.test"], "mx-1@example.com");
    let (s, d) = (statuses(&r), descriptions(&r));
    assert_eq!(s[0].1, "5.1;Service unavailable", "{d:?}");
    assert!(
        d[0].contains("not contacted: 127.0.0.1 is loopback"),
        "{d:?}"
    );
    // Refused for good: nothing waits in the queue to try again.
    let list = run_cli(&[
        "queue",
        "--config",
        &bridge.dir().join("bridge.toml").to_string_lossy(),
        "--json",
        "list",
    ]);
    assert!(list.status.success(), "{list:?}");
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
    assert_eq!(mx.connections(), 0, "the MX on loopback was contacted");
}

/// (Unsigned, so signatures are not required here: this is about what an
/// outsider reads, not who it is.)
/// Before: an outsider learnt the internal receiver's address, port and the
/// connection error ("receiver not reached: http://127.0.0.1:PORT
/// unreachable: ... Connection refused") from the schedule-response.
#[test]
fn outsiders_get_generic_descriptions_and_the_log_keeps_the_detail() {
    let dns = Dns::start(&Zone::new().authoritative("remote.test"));
    let closed = free_port();
    let port = free_port();
    let bridge = Bridge::start(
        port,
        &config(
            port,
            dns.port,
            &format!(
                "[senders]\nallow = [\"10.99.0.0/16\"]\n[domains]\nlocal = [\"local.test\"]\n\
                 [imip]\nmode = \"native-only\"\n\
                 [dkim]\nverify = \"off\"\n\
                 [[route]]\ndomain = \"local.test\"\nto = \"http://127.0.0.1:{closed}/ischedule\"\n"
            ),
        ),
    );
    let organizer = "mailto:mallory@remote.test";
    let body = itip(
        "REQUEST",
        "VEVENT",
        organizer,
        &[("mailto:bob@local.test", "NEEDS-ACTION")],
        "outsider-1@remote.test",
    );
    let r = schedule_post(port, organizer, &["mailto:bob@local.test"], &body, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r)[0].1, "5.1;Service unavailable");
    assert_eq!(descriptions(&r), ["receiver not reachable"]);
    assert!(!r.text().contains("127.0.0.1"), "{}", r.text());
    assert!(!r.text().contains(&closed.to_string()), "{}", r.text());
    let log = bridge.log();
    assert!(
        log.contains(&format!("127.0.0.1:{closed}")),
        "the log keeps the detail:\n{log}"
    );
}

// ---- item 8: HTTP connections ----

/// The soft limit on open files of this process.
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

/// Reads without blocking: true once the peer closed (what it sent before
/// is added to `seen`), false while it is open.
fn closed_by_peer(stream: &mut TcpStream, seen: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Before: no cap at all (every one of the 2,000 connections stayed open
/// with nothing sent), and a header trickled a byte at a time was never
/// timed out, since Pingora's 60 s timeout restarts with each read.
#[test]
fn idle_and_trickling_connections_do_not_starve_posts_or_mail() {
    let attackers = open_file_limit().saturating_sub(300).min(2000);
    assert!(attackers >= 200, "too few file descriptors to test");
    let dns = Dns::start(&Zone::new().authoritative("example.org"));
    let (port, smtp) = (free_port(), free_port());
    let _bridge = Bridge::start(
        port,
        &config_with(
            port,
            dns.port,
            "header_timeout_secs = 3\nmax_connections_per_client = 64\n",
            "",
            &format!("[mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\n"),
        ),
    );
    // The first 64 take every place this client has and trickle a header.
    let started = Instant::now();
    let mut tricklers: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET /.well-known/ischedule?action=capabilities HTTP/1.1\r\nX-Slow: ")
                .expect("write");
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut idle: Vec<TcpStream> = (0..attackers - 64)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for s in idle.iter_mut().chain(tricklers.iter_mut()) {
        s.set_nonblocking(true).expect("nonblocking");
    }
    // Beyond the per-client cap: a 503 and closed.
    let mut refused = 0;
    let mut saw_503 = false;
    let all_refused = eventually(15, || {
        refused = 0;
        for s in idle.iter_mut() {
            let mut seen = Vec::new();
            if closed_by_peer(s, &mut seen) {
                refused += 1;
                saw_503 |= seen.starts_with(b"HTTP/1.1 503");
            }
        }
        refused == idle.len()
    });
    assert!(
        all_refused,
        "{refused} of {} over the cap were closed",
        idle.len()
    );
    assert!(saw_503, "no 503 answer seen");

    // Meanwhile a calendar server on another address still gets through...
    let body = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &[("mailto:carol@example.org", "NEEDS-ACTION")],
        "starved-1@example.com",
    );
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--interface", "127.0.0.2"])
        .args(["-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "iSchedule-Version: 1.0"])
        .args(["-H", &format!("Originator: {ORGANIZER}")])
        .args(["-H", "Recipient: mailto:carol@example.org"])
        .args([
            "-H",
            "Content-Type: text/calendar; component=VEVENT; method=REQUEST",
        ])
        .args(["--data-binary", &body])
        .arg(format!("http://127.0.0.1:{port}/.well-known/ischedule"))
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        answer.ends_with("\n200"),
        "legitimate POST failed: {answer}"
    );
    assert!(answer.contains("1.0;Pending"), "{answer}");
    // ...and so does a mail session.
    let mut mail = TcpStream::connect(("127.0.0.1", smtp)).expect("smtp connect");
    mail.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 256];
    let n = mail.read(&mut greeting).expect("greeting");
    assert!(greeting[..n].starts_with(b"220"), "{:?}", &greeting[..n]);
    mail.write_all(b"EHLO client.test\r\n").unwrap();
    let n = mail.read(&mut greeting).expect("ehlo");
    assert!(greeting[..n].starts_with(b"250"), "{:?}", &greeting[..n]);
    mail.write_all(b"QUIT\r\n").unwrap();

    // The tricklers lose their places at the header deadline, however
    // steadily they send.
    let closed_all = eventually(8, || {
        let mut open = 0;
        for s in tricklers.iter_mut() {
            if !closed_by_peer(s, &mut Vec::new()) && s.write_all(b"a").is_ok() {
                open += 1;
            }
        }
        open == 0
    });
    let took = started.elapsed();
    assert!(
        closed_all,
        "trickling connections still open after {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // And the client's places are free again.
    assert!(eventually(5, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /.well-known/ischedule?action=capabilities HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .is_ok()
                && {
                    let mut head = [0u8; 12];
                    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
                }
        })
    }));
}

// ---- item 10: store growth ----

/// Before: a 300-octet UID (and any property of any length) was taken and
/// became part of a reply-token key in the store.
#[test]
fn overlong_uids_and_properties_are_refused_naming_the_property() {
    let dns = Dns::start(&Zone::new().authoritative("example.org"));
    let port = free_port();
    let _bridge = Bridge::start(port, &config(port, dns.port, ""));
    let uid = "u".repeat(300);
    let r = invite(port, &["mailto:carol@example.org"], &uid);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("<invalid-calendar-data/>"),
        "{}",
        r.text()
    );
    assert!(
        r.text()
            .contains("the UID value is 300 octets long; at most 255 are accepted"),
        "{}",
        r.text()
    );
    let attendees = [("mailto:carol@example.org", "NEEDS-ACTION")];
    let body = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &attendees,
        "long-location-1",
    )
    .replace(
        "SUMMARY:",
        &format!("LOCATION:{}\r\nSUMMARY:", "x".repeat(9000)),
    );
    let r = schedule_post(port, ORGANIZER, &["mailto:carol@example.org"], &body, None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("the LOCATION value is 9000 octets"),
        "{}",
        r.text()
    );
}

/// Before: with the relay down every POST added to the queue without end.
/// Now the queue stops at `queue.max_messages`: the recipient over it is
/// answered 5.1 naming the full queue (so the sender keeps the message and
/// retries), and nothing queued is lost.
#[test]
fn a_full_queue_answers_5_1_and_loses_nothing() {
    let mut sink = SmtpSink::start();
    sink.stop();
    let dns = Dns::start(&Zone::new().authoritative("mail.test"));
    let port = free_port();
    let bridge = Bridge::start(
        port,
        &config(
            port,
            dns.port,
            &format!(
                "[smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"bridge@bridge.test\"\ntimeout_secs = 3\n\
                 [queue]\nfirst_retry_secs = 1\nmax_retry_secs = 1\nmax_messages = 2\n",
                sink.port
            ),
        ),
    );
    let to = [
        "mailto:a@mail.test",
        "mailto:b@mail.test",
        "mailto:c@mail.test",
    ];
    let attendees: Vec<(&str, &str)> = to.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
    let body = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &attendees,
        "full-1@example.com",
    );
    let r = schedule_post(port, ORGANIZER, &to, &body, Some("full-queue-1"));
    let (s, d) = (statuses(&r), descriptions(&r));
    let pending = s.iter().filter(|(_, st)| st.starts_with("1.0;")).count();
    let full: Vec<_> = (0..3).filter(|&i| s[i].1.starts_with("5.1;")).collect();
    assert_eq!((pending, full.len()), (2, 1), "{s:?} {d:?}");
    assert!(
        d[full[0]].contains("the outbound mail queue is full (2 messages"),
        "{d:?}"
    );
    // The relay comes back: the two queued mails go out, and the sender's
    // retry of the same POST delivers the third (the other two are answered
    // from the record, not mailed again).
    sink.restart();
    assert!(
        eventually(20, || sink.messages().len() == 2),
        "queued mail not delivered:\n{}",
        bridge.log()
    );
    let retry = schedule_post(port, ORGANIZER, &to, &body, Some("full-queue-1"));
    let s = statuses(&retry);
    assert!(s[full[0]].1.starts_with("1.1;"), "{s:?}");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.messages().len(), 3, "each recipient exactly once");
}

/// aiosmtpd with a handler that holds each DATA for 0.5 s and records the
/// most transactions it saw at once.
struct SlowRelay {
    port: u16,
    child: Child,
    max_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl SlowRelay {
    fn start() -> SlowRelay {
        const SCRIPT: &str = r#"
import asyncio, sys, time
from aiosmtpd.controller import Controller
state = {'now': 0, 'max': 0}
class Slow:
    async def handle_DATA(self, server, session, envelope):
        state['now'] += 1
        state['max'] = max(state['max'], state['now'])
        open(sys.argv[2], 'w').write(str(state['max']))
        await asyncio.sleep(0.5)
        state['now'] -= 1
        return '250 2.0.0 OK'
relay = Controller(Slow(), hostname='127.0.0.1', port=int(sys.argv[1]))
relay.start()
print('ready', flush=True)
while True: time.sleep(3600)
"#;
        let dir = tempfile::TempDir::new().expect("temp dir");
        let port = free_port();
        let max_file = dir.path().join("max");
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT, &port.to_string()])
            .arg(&max_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd");
        let mut ready = String::new();
        let mut out = child.stdout.take().expect("stdout");
        let mut byte = [0u8; 1];
        // To the end of the line: a pipe closed before Python's last byte
        // is out kills it with a broken pipe.
        while !ready.ends_with('\n') && out.read(&mut byte).is_ok_and(|n| n == 1) {
            ready.push(byte[0] as char);
        }
        assert!(ready.contains("ready"), "aiosmtpd did not start: {ready}");
        SlowRelay {
            port,
            child,
            max_file,
            _dir: dir,
        }
    }

    fn max_at_once(&self) -> usize {
        std::fs::read_to_string(&self.max_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Before: one POST with many mail recipients opened one SMTP session per
/// recipient at once (the relay saw 8 transactions at a time).
#[test]
fn smtp_sessions_per_relay_are_bounded() {
    let relay = SlowRelay::start();
    let dns = Dns::start(&Zone::new().authoritative("mail.test"));
    let port = free_port();
    let _bridge = Bridge::start(
        port,
        &config(
            port,
            dns.port,
            &format!(
                "[smtp]\nrelay = \"smtp://127.0.0.1:{}\"\nfrom = \"bridge@bridge.test\"\n\
                 timeout_secs = 20\nmax_sessions_per_host = 2\n",
                relay.port
            ),
        ),
    );
    let to: Vec<String> = (0..8).map(|i| format!("mailto:u{i}@mail.test")).collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let r = invite(port, &to, "sessions-1@example.com");
    let s = statuses(&r);
    assert!(
        s.iter().all(|(_, st)| st.starts_with("1.1;")),
        "{s:?} {:?}",
        descriptions(&r)
    );
    assert_eq!(relay.max_at_once(), 2, "transactions at once at the relay");
}

/// An iSchedule receiver that holds each POST for 0.3 s before answering
/// 2.0 for the POST's recipient, and records the most requests it had at
/// once. Capabilities GETs get 404, which the bridge takes leniently.
struct SlowReceiver {
    port: u16,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
}

impl SlowReceiver {
    fn start() -> SlowReceiver {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let receiver = SlowReceiver {
            port,
            now: Arc::default(),
            max: Arc::default(),
            posts: Arc::default(),
        };
        let (now, max, posts) = (
            receiver.now.clone(),
            receiver.max.clone(),
            receiver.posts.clone(),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (now, max, posts) = (now.clone(), max.clone(), posts.clone());
                thread::spawn(move || {
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(at_once, Ordering::SeqCst);
                    let _ = Self::answer(stream, &posts);
                    now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        receiver
    }

    /// One request per connection (`Connection: close`), so connections
    /// at once are requests at once.
    fn answer(mut stream: TcpStream, posts: &AtomicUsize) -> io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte)? == 1 {
            request.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&request).into_owned();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let mut body = vec![0u8; header("Content-Length").parse().unwrap_or(0)];
        stream.read_exact(&mut body)?;
        if !head.starts_with("POST ") {
            return stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        thread::sleep(Duration::from_millis(300));
        posts.fetch_add(1, Ordering::SeqCst);
        let answer = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><schedule-response \
             xmlns=\"urn:ietf:params:xml:ns:ischedule\"><response><recipient>{}</recipient>\
             <request-status>2.0;Success</request-status></response></schedule-response>",
            header("Recipient")
        );
        stream.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{answer}",
                answer.len()
            )
            .as_bytes(),
        )
    }
}

/// Before: a burst of POSTs to one domain opened a connection to its
/// receiver per POST at once (here 6: every POST waited at the receiver
/// together).
#[test]
fn requests_per_receiver_are_bounded_and_the_rest_wait_their_turn() {
    let receiver = SlowReceiver::start();
    let port = free_port();
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[limits]\nmax_requests_per_receiver = 2\n\
             [[route]]\ndomain = \"slow.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            receiver.port
        ),
    );
    let posts: Vec<_> = (0..6)
        .map(|i| {
            thread::spawn(move || {
                let to = format!("mailto:user{i}@slow.test");
                invite(port, &[to.as_str()], &format!("burst-{i}@example.com"))
            })
        })
        .collect();
    for (i, post) in posts.into_iter().enumerate() {
        let r = post.join().expect("client thread");
        assert_eq!(
            statuses(&r),
            vec![(
                format!("mailto:user{i}@slow.test"),
                "2.0;Success".to_string()
            )],
            "{:?}",
            descriptions(&r)
        );
    }
    assert_eq!(
        receiver.posts.load(Ordering::SeqCst),
        6,
        "every POST arrived"
    );
    assert_eq!(
        receiver.max.load(Ordering::SeqCst),
        2,
        "requests at once at the receiver"
    );
}
