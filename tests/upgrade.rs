//! Zero-downtime upgrade: a new bridge process started with `serve
//! --upgrade` takes the listening sockets (HTTP, admin, SMTP) from the
//! running one, which gets SIGQUIT, finishes what it has and exits; the
//! new one takes over the redb store once the old one let go of it.
//!
//! Under load all along: iSchedule POSTs over fresh and kept-alive
//! connections (each mailed through the aiosmtpd sink, so every one writes
//! to the store), and iMIP mail over SMTP relayed to the sink as next hop.
//! Not one request may fail and not one mail be refused, and every mail
//! accepted must reach the sink.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{eventually, free_port, itip, statuses, Bridge, Dns, HttpResponse, SmtpSink, Zone};

const ORGANIZER: &str = "mailto:bob@bridge.test";
const POST_ATTENDEE: &str = "mailto:carol@remote.test";
const MAIL_ATTENDEE: &str = "dave@remote.test";
/// Every read and write of the clients; above the store handover's bound.
const IO_TIMEOUT: Duration = Duration::from_secs(40);

/// Before SIGQUIT, while both processes run, after the old one exited.
const PHASES: [&str; 3] = ["before", "handover", "after"];

/// What the load generators saw, per phase.
#[derive(Default)]
struct Tally {
    phase: AtomicUsize,
    stop: AtomicBool,
    posts_fresh: [AtomicUsize; 3],
    posts_kept_alive: [AtomicUsize; 3],
    mails: [AtomicUsize; 3],
    /// Connections the server closed (Connection: close) that the
    /// kept-alive client then replaced: the old process saying goodbye.
    reconnects: AtomicUsize,
    failures: Mutex<Vec<String>>,
    refusals: Mutex<Vec<String>>,
    accepted_mails: Mutex<BTreeSet<usize>>,
    accepted_posts: Mutex<BTreeSet<usize>>,
}

impl Tally {
    fn phase(&self) -> usize {
        self.phase.load(Ordering::SeqCst)
    }
    fn sum(counts: &[AtomicUsize; 3]) -> usize {
        counts.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

/// Kills the new bridge when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn post_request(port: u16, n: usize, close: bool) -> Vec<u8> {
    let body = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &[(POST_ATTENDEE, "NEEDS-ACTION")],
        &format!("upgrade-post-{n}"),
    )
    .replace(
        "SUMMARY:Design meeting",
        &format!("SUMMARY:Upgrade post {n}"),
    );
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST /.well-known/ischedule HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\niSchedule-Version: 1.0\r\n\
         iSchedule-Message-ID: upgrade-post-{n}\r\nOriginator: {ORGANIZER}\r\nRecipient: {POST_ATTENDEE}\r\n\
         Content-Type: text/calendar; component=VEVENT; method=REQUEST\r\n{connection}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one response; also says whether the server keeps the connection.
fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<(HttpResponse, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = response.header("content-length") {
        let len = len.parse().unwrap_or(0);
        response.body = vec![0; len];
        r.read_exact(&mut response.body)?;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    }
    let keep = !response
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"));
    Ok((response, keep))
}

fn connect(port: u16) -> io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(BufReader::new(stream))
}

/// Why a POST's answer is not the expected one, if it is not.
fn judge(answer: io::Result<(HttpResponse, bool)>) -> Result<bool, String> {
    let (response, keep) = answer.map_err(|e| format!("no answer: {e}"))?;
    let got = statuses(&response);
    let expected = [(POST_ATTENDEE.to_string(), "1.1;Sent".to_string())];
    if response.status != 200 || got != expected {
        return Err(format!("HTTP {}: {}", response.status, response.text()));
    }
    Ok(keep)
}

/// POSTs on a new connection each, until told to stop.
fn fresh_posts(port: u16, tally: &Tally, first: usize) {
    let mut n = first;
    while !tally.stop.load(Ordering::SeqCst) {
        let phase = tally.phase();
        let answer = connect(port).and_then(|mut c| {
            c.get_mut().write_all(&post_request(port, n, true))?;
            read_response(&mut c)
        });
        match judge(answer) {
            Ok(_) => {
                tally.posts_fresh[phase].fetch_add(1, Ordering::SeqCst);
                tally.accepted_posts.lock().unwrap().insert(n);
            }
            Err(why) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("fresh #{n}: {why}")),
        }
        n += 1;
    }
}

/// POSTs one after another on one connection, replaced only when the
/// server says it closes it.
fn kept_alive_posts(port: u16, tally: &Tally, first: usize) {
    let mut n = first;
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !tally.stop.load(Ordering::SeqCst) {
        let phase = tally.phase();
        let c = match conn.take() {
            Some(c) => Ok(c),
            None => connect(port),
        };
        let answer = c.and_then(|mut c| {
            c.get_mut().write_all(&post_request(port, n, false))?;
            read_response(&mut c).map(|(r, keep)| ((r, keep), c))
        });
        let (answer, c) = match answer {
            Ok((r, c)) => (Ok(r), Some(c)),
            Err(e) => (Err(e), None),
        };
        match judge(answer) {
            Ok(keep) => {
                tally.posts_kept_alive[phase].fetch_add(1, Ordering::SeqCst);
                tally.accepted_posts.lock().unwrap().insert(n);
                if keep {
                    conn = c;
                } else {
                    tally.reconnects.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(why) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("kept-alive #{n}: {why}")),
        }
        n += 1;
    }
}

/// One SMTP reply (the last line of a multi-line one).
fn smtp_reply(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.trim_end().to_string());
        }
    }
}

/// Sends invitation `n` as bob's calendar client would; Err says which
/// step was refused, and how.
fn send_mail(port: u16, n: usize) -> Result<(), String> {
    let mut c = connect(port).map_err(|e| format!("connect: {e}"))?;
    let calendar = itip(
        "REQUEST",
        "VEVENT",
        ORGANIZER,
        &[(&format!("mailto:{MAIL_ATTENDEE}"), "NEEDS-ACTION")],
        &format!("upgrade-mail-{n}"),
    );
    let message = format!(
        "From: bob@bridge.test\r\nTo: {MAIL_ATTENDEE}\r\nSubject: Invitation {n}\r\n\
         Message-ID: <upgrade-mail-{n}@bridge.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n\r\n{calendar}.\r\n"
    );
    let steps: [(&str, String, &str); 6] = [
        ("greeting", String::new(), "220"),
        ("EHLO", "EHLO client.test\r\n".into(), "250"),
        ("MAIL", "MAIL FROM:<bob@bridge.test>\r\n".into(), "250"),
        ("RCPT", format!("RCPT TO:<{MAIL_ATTENDEE}>\r\n"), "250"),
        ("DATA", "DATA\r\n".into(), "354"),
        ("message", message, "250"),
    ];
    for (step, send, expect) in steps {
        if !send.is_empty() {
            c.get_mut()
                .write_all(send.as_bytes())
                .map_err(|e| format!("{step}: {e}"))?;
        }
        let reply = smtp_reply(&mut c).map_err(|e| format!("{step}: {e}"))?;
        if !reply.starts_with(expect) {
            return Err(format!("{step}: {reply}"));
        }
    }
    // Accepted: what QUIT gets (221, or 421 from a process going away)
    // changes nothing.
    let _ = c.get_mut().write_all(b"QUIT\r\n");
    let _ = smtp_reply(&mut c);
    Ok(())
}

fn mails(port: u16, tally: &Tally) {
    let mut n = 0;
    while !tally.stop.load(Ordering::SeqCst) {
        let phase = tally.phase();
        match send_mail(port, n) {
            Ok(()) => {
                tally.mails[phase].fetch_add(1, Ordering::SeqCst);
                tally.accepted_mails.lock().unwrap().insert(n);
            }
            Err(why) => tally
                .refusals
                .lock()
                .unwrap()
                .push(format!("mail #{n}: {why}")),
        }
        n += 1;
    }
}

fn get(port: u16, path: &str) -> Option<HttpResponse> {
    let mut c = connect(port).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    c.get_mut().write_all(request.as_bytes()).ok()?;
    read_response(&mut c).ok().map(|(r, _)| r)
}

/// The numbers after `marker` in every mail the sink holds.
fn numbers_after(sink: &SmtpSink, marker: &str) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    for mail in sink.messages() {
        let text = fs::read_to_string(&mail).unwrap_or_default();
        for (i, _) in text.match_indices(marker) {
            let digits: String = text[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                found.insert(n);
            }
        }
    }
    found
}

/// Seconds since midnight UTC, as the bridge's log lines start
/// (`2026-12-03T07:12:00.123456Z`).
fn seconds_of_day(t: std::time::SystemTime) -> f64 {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    (since.as_secs() % 86_400) as f64 + f64::from(since.subsec_micros()) / 1e6
}

/// When the first log line containing `needle` was written.
fn log_time(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let clock = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = clock.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

fn pid_in(file: &Path) -> Option<u32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn an_upgrade_under_load_fails_no_request_and_refuses_no_mail() {
    let started = Instant::now();
    let sink = SmtpSink::start();
    // remote.test publishes no iSchedule receiver: POSTs to it are mailed
    // (relay: the sink), mail to it goes on to the next hop (the sink).
    let dns = Dns::start(&Zone::new().authoritative("remote.test"));
    let (port, smtp, admin) = (free_port(), free_port(), free_port());
    let mut old = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"bridge.test\"]\n\
             [smtp]\nrelay = \"smtp://127.0.0.1:{sink}\"\nfrom = \"calendar-bridge@bridge.test\"\n\
             [mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\nlocal_clients = [\"127.0.0.1/32\"]\n\
             next_hop = \"smtp://127.0.0.1:{sink}\"\n",
            dns.port,
            sink = sink.port
        ),
    );
    let dir = old.dir().to_path_buf();
    let pid_file = dir.join("state/bridge.pid");
    assert_eq!(
        pid_in(&pid_file),
        Some(old.pid()),
        "the pid file names the bridge"
    );
    assert!(
        eventually(10, || get(admin, "/readyz")
            .is_some_and(|r| r.status == 200)),
        "{}",
        old.log()
    );

    let tally = Arc::new(Tally::default());
    let load: Vec<_> = [0, 1, 2]
        .into_iter()
        .map(|kind| {
            let tally = tally.clone();
            thread::spawn(move || match kind {
                0 => fresh_posts(port, &tally, 0),
                1 => kept_alive_posts(port, &tally, 1_000_000),
                _ => mails(smtp, &tally),
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(2));

    // A monitoring client keeping its admin connection open (as a
    // Prometheus scraper does): it must not keep the old process's store.
    let mut scraper = connect(admin).unwrap();
    scraper
        .get_mut()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (metrics, kept) = read_response(&mut scraper).unwrap();
    assert!(metrics.status == 200 && kept, "{}", metrics.text());

    // A calendar server's pooled connection, idle after one request: the
    // old process closes it after the drain, or its work would never end.
    let mut pooled = connect(port).unwrap();
    pooled
        .get_mut()
        .write_all(
            b"GET /.well-known/ischedule?action=capabilities HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .unwrap();
    let (caps, kept) = read_response(&mut pooled).unwrap();
    assert!(caps.status == 200 && kept, "{}", caps.text());

    // What systemd's ExecReload does: the new process, then SIGQUIT.
    let new_log = fs::File::create(dir.join("bridge-new.log")).unwrap();
    let new = Command::new(env!("CARGO_BIN_EXE_ischedule-bridge"))
        .args(["serve", "--config", "bridge.toml", "--upgrade"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(new_log.try_clone().unwrap())
        .stderr(new_log)
        .spawn()
        .expect("spawn the new bridge");
    let mut new = KillOnDrop(new);
    let new_pid = new.0.id();
    assert!(
        eventually(10, || dir.join("state/upgrade.sock").exists()),
        "the new bridge does not wait on its upgrade socket:\n{}",
        fs::read_to_string(dir.join("bridge-new.log")).unwrap_or_default()
    );
    let quit = Command::new("kill")
        .args(["-QUIT", &old.pid().to_string()])
        .status()
        .expect("kill");
    assert!(quit.success());
    let upgraded = Instant::now();
    let quit_at = seconds_of_day(std::time::SystemTime::now());
    tally.phase.store(1, Ordering::SeqCst);

    // The readiness probe while both run: whoever accepts answers.
    let mut readiness = BTreeSet::new();
    let old_status = loop {
        if let Some(status) = old.exited() {
            break status;
        }
        assert!(
            upgraded.elapsed() < Duration::from_secs(30),
            "the old bridge did not exit:\n{}",
            old.log()
        );
        if let Some(r) = get(admin, "/readyz") {
            readiness.insert(format!("{} {}", r.status, r.text().trim()));
        }
        thread::sleep(Duration::from_millis(100));
    };
    let old_lasted = upgraded.elapsed();
    tally.phase.store(2, Ordering::SeqCst);
    // The new process takes the store as soon as the old one let go.
    let ready_in = Instant::now();
    assert!(
        eventually(10, || get(admin, "/readyz")
            .is_some_and(|r| r.status == 200)),
        "the new bridge never got ready"
    );
    let ready_in = ready_in.elapsed();
    thread::sleep(Duration::from_secs(3));
    tally.stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    let new_log = || fs::read_to_string(dir.join("bridge-new.log")).unwrap_or_default();

    let count = |c: &[AtomicUsize; 3]| {
        PHASES
            .iter()
            .zip(c)
            .map(|(p, n)| format!("{p} {}", n.load(Ordering::SeqCst)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let failures = tally.failures.lock().unwrap().clone();
    let refusals = tally.refusals.lock().unwrap().clone();
    println!(
        "old bridge pid {} exited {old_status} {:.1} s after SIGQUIT; new bridge pid {new_pid}",
        old.pid(),
        old_lasted.as_secs_f64()
    );
    println!(
        "POSTs answered 200 1.1;Sent, fresh connections: {}",
        count(&tally.posts_fresh)
    );
    println!("POSTs answered 200 1.1;Sent, kept-alive connection: {} (reconnected {} times after Connection: close)", count(&tally.posts_kept_alive), tally.reconnects.load(Ordering::SeqCst));
    println!("mails accepted over SMTP: {}", count(&tally.mails));
    println!(
        "failed requests: {}, refused mails: {}",
        failures.len(),
        refusals.len()
    );
    println!("/readyz while both ran: {readiness:?}; 200 from the new bridge {:.2} s after the old one exited", ready_in.as_secs_f64());
    let released = log_time(&old.log(), "store released for the next process");
    let taken = log_time(&new_log(), "store taken over from the previous process");
    println!(
        "store released by the old bridge {} s and taken over by the new one {} s after SIGQUIT",
        released.map_or("?".into(), |t| format!("{:.1}", t - quit_at)),
        taken.map_or("?".into(), |t| format!("{:.1}", t - quit_at)),
    );
    for f in failures.iter().chain(&refusals).take(10) {
        println!("  {f}");
    }

    assert!(
        old_status.success(),
        "old bridge: {old_status}\n{}",
        old.log()
    );
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new bridge died:\n{}",
        new_log()
    );
    assert!(
        failures.is_empty() && refusals.is_empty(),
        "{} failed requests, {} refused mails:\n{}\n--- old:\n{}\n--- new:\n{}",
        failures.len(),
        refusals.len(),
        failures
            .iter()
            .chain(&refusals)
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        old.log(),
        new_log()
    );
    for (what, counts) in [
        ("fresh POSTs", &tally.posts_fresh),
        ("kept-alive POSTs", &tally.posts_kept_alive),
        ("mails", &tally.mails),
    ] {
        for (phase, n) in PHASES.iter().zip(counts) {
            assert!(
                n.load(Ordering::SeqCst) > 0,
                "no {what} {phase} the upgrade"
            );
        }
    }
    drop(scraper);
    let mut rest = Vec::new();
    let closed = pooled.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)),
        "the idle pooled connection was not closed: {closed:?} {rest:?}"
    );
    // The old process let go of the store once its work was done, before
    // its grace period ran out, idle admin connection or not: the new one
    // had it before the old exited. (A shared PostgreSQL store has no
    // handover: both processes use it throughout.)
    let handover = !support::postgres::wanted();
    if handover {
        let taken = taken.expect("the new bridge logs when it took the store") - quit_at;
        assert!(
            released.is_some() && taken < old_lasted.as_secs_f64(),
            "store taken {taken:.1} s after SIGQUIT, the old bridge exited after {old_lasted:?}\n{}",
            old.log()
        );
    }
    // The new process serves, holds the store and says it is ready.
    assert_eq!(
        pid_in(&pid_file),
        Some(new_pid),
        "the pid file names the new bridge"
    );
    assert_eq!(
        new_log().contains("store taken over from the previous process"),
        handover,
        "{}",
        new_log()
    );
    let ready = get(admin, "/readyz").expect("the new bridge's admin listener");
    assert_eq!(ready.status, 200, "{}", ready.text());
    // Every mail accepted went on: the POSTs' invitations and the relayed mail.
    let (posts, mailed) = (
        tally.accepted_posts.lock().unwrap().clone(),
        tally.accepted_mails.lock().unwrap().clone(),
    );
    let all_in_sink = eventually(20, || {
        posts.is_subset(&numbers_after(&sink, "Subject: Invitation: Upgrade post "))
            && mailed.is_subset(&numbers_after(&sink, "Message-ID: <upgrade-mail-"))
    });
    println!(
        "in the sink: {} invitations of {} POSTs, {} of {} relayed mails; total wall time {:.1} s",
        numbers_after(&sink, "Subject: Invitation: Upgrade post ")
            .intersection(&posts)
            .count(),
        posts.len(),
        numbers_after(&sink, "Message-ID: <upgrade-mail-")
            .intersection(&mailed)
            .count(),
        mailed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(all_in_sink, "some accepted mail did not reach the sink");
    assert!(Tally::sum(&tally.mails) > 0);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// The unit in deploy/ is what systemd would load: `systemd-analyze
/// verify` (Debian package systemd) finds no error and no warning in it,
/// with the installed binary's path pointing at the one under test. Its
/// PIDFile= is where the bridge writes its pid with the state directory
/// the unit documents, or systemd would lose the service after a reload.
#[test]
fn the_systemd_unit_verifies_and_follows_the_pid_file() {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ischedule-bridge.service"),
    )
    .expect("deploy/ischedule-bridge.service");
    let reloads: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecReload="))
        .collect();
    assert!(reloads[0].contains(" check --config "), "{reloads:?}");
    assert!(
        reloads[1].contains(" serve --config ")
            && reloads[1].contains("--upgrade")
            && reloads[1].contains("kill -QUIT"),
        "{reloads:?}"
    );
    let config = ischedule_bridge::config::Config::parse(
        "[store]\npath = \"/var/lib/ischedule-bridge\"\n",
        "bridge.toml",
        Path::new("/etc/ischedule-bridge"),
    )
    .unwrap();
    let pid_file = format!("PIDFile={}", config.server.pid_file.display());
    assert!(
        unit.lines().any(|l| l == pid_file),
        "the unit has no {pid_file}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ischedule-bridge.service");
    fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/ischedule-bridge",
            env!("CARGO_BIN_EXE_ischedule-bridge"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("systemd-analyze verify: {} {said}", out.status);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// Pingora binds when its services start and, while an address is in
/// use, retries and then runs on without it; so a bridge starting alone
/// checks its addresses first, and a mail port in use stops it at once.
#[test]
fn a_fresh_start_on_a_port_in_use_stops_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp = taken.local_addr().unwrap().port();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("bridge.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[mail]\nsmtp_listen = \"127.0.0.1:{smtp}\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ischedule-bridge"))
        .args(["serve", "--config", "bridge.toml"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    assert!(
        eventually(10, || child.0.try_wait().unwrap().is_some()),
        "the bridge runs on although 127.0.0.1:{smtp} is taken"
    );
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "mail.smtp_listen: cannot listen on 127.0.0.1:{smtp}"
        )),
        "{stderr}"
    );
}
