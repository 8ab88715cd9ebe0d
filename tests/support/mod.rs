//! Integration-test harness: real peers on loopback (dnsmasq, Cyrus httpd, the bridge
//! itself), throwaway certificates, and a tiny blocking HTTP/1.1 client.
//!
//! Every test file includes it with `mod support;`. A peer that cannot start makes the
//! test panic with the peer's log: tests never skip. Only std, `tempfile` and `base64` are used.
#![allow(dead_code)] // each test binary uses a different subset

pub mod postgres;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The shared/ checkout (peers/, spec/, corpus/): `$ISCHEDULE_SHARED`, else `../shared`
/// next to the crate.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("ISCHEDULE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        dir.join("peers").is_dir(),
        "shared dir {} has no peers/: check out shared/ next to the repo or set ISCHEDULE_SHARED",
        dir.display()
    );
    dir
}

/// A loopback port free for both TCP and UDP, never handed out twice in one test binary.
pub fn free_port() -> u16 {
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local_addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && taken.insert(port) {
            return port;
        }
    }
}

/// The UTC date `days` from today as iCalendar `YYYYMMDD`, for events in the future
/// (Cyrus ignores scheduling for events more than about a week in the past).
pub fn ical_day(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let today = (now.as_secs() / 86_400) as i64;
    let (year, month, day) = ischedule_bridge::itip::datetime::civil_from_days(today + days);
    format!("{year:04}{month:02}{day:02}")
}

/// Polls `ready` every 50 ms until it is true or `secs` have passed.
fn wait_until(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    false
}

/// Runs a helper command to completion; panics with its output if it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// The records of a test DNS zone, as dnsmasq configuration lines.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    lines: Vec<String>,
}

impl Zone {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer everything under `domain` locally: unknown names get NXDOMAIN at once.
    pub fn authoritative(self, domain: &str) -> Self {
        self.raw_line(&format!("local=/{domain}/"))
    }

    /// `_ischedules._tcp.<domain>` SRV pointing at `target:port`.
    pub fn srv(self, domain: &str, target: &str, port: u16, priority: u16, weight: u16) -> Self {
        self.raw_line(&format!(
            "srv-host=_ischedules._tcp.{domain},{target},{port},{priority},{weight}"
        ))
    }

    /// One TXT string at `name`, e.g. `.txt("_ischedules._tcp.example.org", "path=/ischedule")`.
    pub fn txt(self, name: &str, text: &str) -> Self {
        assert!(
            !text.contains(['"', '\\', '\n']),
            "unsupported TXT text {text:?}"
        );
        self.raw_line(&format!("txt-record={name},\"{text}\""))
    }

    /// An MX record: mail for `domain` goes to `host` (lower `preference` first).
    pub fn mx(self, domain: &str, host: &str, preference: u16) -> Self {
        self.raw_line(&format!("mx-host={domain},{host},{preference}"))
    }

    /// An A record (exact name, no wildcard).
    pub fn a(self, host: &str, ip: Ipv4Addr) -> Self {
        self.raw_line(&format!("host-record={host},{ip}"))
    }

    /// TTL of every answer from this zone (dnsmasq's default is 0).
    pub fn ttl(self, secs: u32) -> Self {
        self.raw_line(&format!("local-ttl={secs}"))
    }

    /// Any other dnsmasq option, e.g. `"mx-host=example.org,mail.example.org,10"`.
    pub fn raw_line(mut self, line: &str) -> Self {
        self.lines.push(line.to_owned());
        self
    }
}

/// dnsmasq serving a [`Zone`] on `127.0.0.1:port` (UDP and TCP); killed on drop.
pub struct Dns {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

impl Dns {
    pub fn start(zone: &Zone) -> Dns {
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("dnsmasq.conf");
        let records = zone.lines.join("\n");
        fs::write(
            &conf,
            format!(
                "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                 no-daemon\npid-file=\nlog-queries\n{records}\n"
            ),
        )
        .expect("write dnsmasq.conf");
        let bin = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let log = fs::File::create(dir.path().join("dnsmasq.log")).expect("dnsmasq.log");
        let child = Command::new(bin)
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} (apt-get install dnsmasq-base): {e}"));
        let mut dns = Dns { port, child, dir };
        let up = wait_until(10, || {
            dns.child.try_wait().ok().flatten().is_some() || dns.query("ready.invalid", 1).is_ok()
        });
        let exited = dns.child.try_wait().ok().flatten();
        assert!(
            up && exited.is_none(),
            "dnsmasq did not answer on port {port} (exit: {exited:?}):\n{}",
            dns.log()
        );
        dns
    }

    /// Sends one recursive query for `name` (`qtype` 1 = A, 16 = TXT, 33 = SRV) over UDP
    /// and returns the raw response message.
    pub fn query(&self, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
        static NEXT_ID: AtomicU16 = AtomicU16::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut msg = Vec::with_capacity(name.len() + 18);
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
        for label in name.trim_end_matches('.').split('.') {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.push(0);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&1u16.to_be_bytes()); // class IN
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        sock.send_to(&msg, ("127.0.0.1", self.port))?;
        let mut buf = vec![0; 4096];
        loop {
            let n = sock.recv(&mut buf)?;
            if n >= 12 && buf[..2] == id.to_be_bytes() {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    /// What dnsmasq logged so far, including every query it answered.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("dnsmasq.log"))
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway CA and a leaf certificate signed by it (PEM files in `dir`).
pub struct Certs {
    pub dir: TempDir,
    /// CA certificate: the trust anchor to give clients.
    pub ca: PathBuf,
    /// Leaf certificate (serverAuth) for the names given to [`Certs::generate`].
    pub cert: PathBuf,
    /// Unencrypted PKCS#8 key of the leaf.
    pub key: PathBuf,
}

impl Certs {
    /// Makes the CA and a leaf for `names` (DNS names, or IP addresses) with the
    /// `openssl` CLI, and checks that the leaf verifies against the CA.
    pub fn generate(names: &[&str]) -> Certs {
        assert!(!names.is_empty(), "a certificate needs at least one name");
        let dir = TempDir::new().expect("temp dir");
        let p = |f: &str| dir.path().join(f);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-days",
                "30",
                "-subj",
                "/CN=ischedule-bridge test CA",
            ])
            .args(ec)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")));
        run(Command::new("openssl")
            .args(["req", "-new", "-subj", &format!("/CN={}", names[0])])
            .args(ec)
            .arg("-keyout")
            .arg(p("leaf.key"))
            .arg("-out")
            .arg(p("leaf.csr")));
        let san: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        fs::write(
            p("leaf.ext"),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n",
                san.join(",")
            ),
        )
        .expect("write leaf.ext");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", "2", "-in"])
            .arg(p("leaf.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("leaf.ext"))
            .arg("-out")
            .arg(p("leaf.pem")));
        run(Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(p("ca.pem"))
            .arg(p("leaf.pem")));
        let (ca, cert, key) = (p("ca.pem"), p("leaf.pem"), p("leaf.key"));
        Certs { dir, ca, cert, key }
    }
}

/// `shared/peers/smtp-sink.py` (aiosmtpd) on `127.0.0.1:port`: a real SMTP server that
/// stores what it accepts in a Maildir and fails on purpose by recipient local part
/// (`tempfail*` 451 at RCPT, `reject*` 550 5.1.1 at RCPT, `datafail*` 452 at DATA).
/// [`SmtpSink::stop`] and [`SmtpSink::restart`] keep port and Maildir, for "server down,
/// then up again" tests. Killed on drop.
pub struct SmtpSink {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl SmtpSink {
    /// Starts the sink on a free port and waits until it prints "ready" (at most 15 s);
    /// panics with its output if python3 or aiosmtpd is missing or it does not come up.
    pub fn start() -> SmtpSink {
        let mut sink = SmtpSink {
            port: free_port(),
            child: None,
            dir: TempDir::new().expect("temp dir"),
        };
        sink.restart();
        sink
    }

    /// The Maildir the sink delivers to.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// The messages delivered so far (files in `MAILDIR/new`), sorted by name.
    pub fn messages(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = match fs::read_dir(self.maildir().join("new")) {
            Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot list {}/new: {e}", self.maildir().display()),
        };
        files.sort();
        files
    }

    /// Kills the sink; the port refuses connections until [`SmtpSink::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Replaces the sink, on the same port and Maildir, by aiosmtpd's own
    /// `Mailbox` handler, which accepts every recipient: mail deferred by
    /// `tempfail*` then gets through, as when a real server recovers.
    pub fn restart_accepting_everyone(&mut self) {
        self.stop();
        let log = fs::File::create(self.dir.path().join("aiosmtpd.log")).expect("aiosmtpd.log");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 -m aiosmtpd: {e}"));
        self.child = Some(child);
        let port = self.port;
        if !wait_until(15, || TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            self.stop();
            panic!("aiosmtpd did not listen on port {port}");
        }
    }

    /// (Re)starts the sink on the same port and Maildir and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        let script = shared_dir().join("peers/smtp-sink.py");
        let log_path = self.dir.path().join("smtp-sink.log");
        let log = fs::File::create(&log_path).expect("smtp-sink.log");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(self.port.to_string())
            .arg(self.maildir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 {} (install python3): {e}",
                    script.display()
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Reads to EOF so the sink never blocks on a full pipe.
            for line in io::BufRead::lines(io::BufReader::new(stdout)).map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => return,
                Ok(_) => continue,
                Err(why) => {
                    self.stop();
                    panic!(
                        "smtp-sink on port {} did not print \"ready\" ({why:?}); it needs python3 \
                         with aiosmtpd (pip install aiosmtpd, or apt-get install python3-aiosmtpd)\n\
                         --- its output:\n{}",
                        self.port,
                        read_log(&log_path)
                    );
                }
            }
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pids of live processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// Sends `sig` to `pid` (shell builtin `kill`: procps may be absent).
fn kill(sig: &str, pid: u32) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{sig} {pid}"))
        .stderr(Stdio::null())
        .status();
}

/// Cyrus IMAP httpd as a real iSchedule receiver for `domain`, started by
/// `shared/peers/cyrus-ischedule.sh`; iSchedule at `http://127.0.0.1:{http_port}/ischedule`
/// (and HTTPS on `tls_port`). Stopped, with all its processes, on drop.
pub struct Cyrus {
    pub http_port: u16,
    pub tls_port: Option<u16>,
    /// Where Cyrus sends the iMIP mail it originates; nothing listens unless a test does.
    pub smtp_port: u16,
    pub domain: String,
    base: PathBuf,
    _dir: TempDir,
}

impl Cyrus {
    /// Starts Cyrus serving calendar users `<user>@<domain>` (each with a provisioned
    /// calendar home), with HTTPS too if `tls` is given.
    pub fn start(domain: &str, users: &[&str], tls: Option<&Certs>) -> Cyrus {
        Cyrus::start_with_smtp(domain, users, tls, free_port())
    }

    /// As [`Cyrus::start`], with Cyrus sending the iMIP mail it originates to
    /// 127.0.0.1:`smtp_port` (e.g. the bridge's SMTP listener as smarthost).
    pub fn start_with_smtp(
        domain: &str,
        users: &[&str],
        tls: Option<&Certs>,
        smtp_port: u16,
    ) -> Cyrus {
        let dir = TempDir::new().expect("temp dir");
        // The cyrus user must reach BASEDIR: every ancestor needs o+x.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
        for anc in dir.path().ancestors() {
            let mode = fs::metadata(anc)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            assert!(
                mode & 0o001 != 0,
                "{} is not o+x, so the cyrus user cannot reach its base dir: set TMPDIR elsewhere",
                anc.display()
            );
        }
        let base = dir.path().join("cyrus");
        let (http_port, imap_port) = (free_port(), free_port());
        let tls_port = tls.map(|_| free_port());
        let script_log = dir.path().join("script.log");
        let log = fs::File::create(&script_log).expect("script.log");
        let mut cmd = Command::new(shared_dir().join("peers/cyrus-ischedule.sh"));
        // Cyrus master signals its whole process group when it stops: in a
        // group of its own it cannot take down other tests' instances.
        cmd.process_group(0);
        cmd.arg(&base)
            .args([http_port, imap_port, smtp_port].map(|p| p.to_string()))
            .args(users)
            .env("CYRUS_DOMAIN", domain)
            // master inherits these: a pipe would never reach EOF while Cyrus runs
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if let (Some(certs), Some(port)) = (tls, tls_port) {
            cmd.env("TLS_PORT", port.to_string())
                .env("TLS_CERT", &certs.cert)
                .env("TLS_KEY", &certs.key);
        }
        let status = cmd.status().expect("run cyrus-ischedule.sh");
        let cyrus = Cyrus {
            http_port,
            tls_port,
            smtp_port,
            domain: domain.to_owned(),
            base,
            _dir: dir,
        };
        let failed = |why: String| {
            format!(
                "Cyrus for {domain} did not start: {why}\n--- script output:\n{}\n--- master log:\n{}",
                read_log(&script_log),
                read_log(&cyrus.base.join("master.log"))
            )
        };
        if !status.success() {
            panic!(
                "{}",
                failed(format!("cyrus-ischedule.sh exited with {status}"))
            );
        }
        let caps = "/ischedule?action=capabilities";
        let http_up = wait_until(15, || {
            request(http_port, "GET", caps, &[], b"").is_ok_and(|r| r.status == 200)
        });
        if !http_up {
            panic!(
                "{}",
                failed(format!("no 200 for GET {caps} on port {http_port}"))
            );
        }
        if let Some(port) = tls_port {
            // -k: only the handshake and the answer matter here, tests check the names.
            let url = format!("https://127.0.0.1:{port}{caps}");
            let mut last = String::new();
            let https_up = wait_until(15, || {
                let out = Command::new("curl")
                    .args(["-sSkf", "-o", "/dev/null", "--max-time", "5", &url])
                    .output()
                    .expect("run curl");
                last = String::from_utf8_lossy(&out.stderr).into_owned();
                out.status.success()
            });
            if !https_up {
                panic!("{}", failed(format!("no 200 for {url}: {last}")));
            }
        }
        cyrus
    }
}

impl Cyrus {
    /// Stops Cyrus (master and every child) as a receiver going down would;
    /// ports and data stay for [`Cyrus::resume`].
    pub fn halt(&self) {
        let master = fs::read_to_string(self.base.join("master.bgpid")).unwrap_or_default();
        if let Ok(pid) = master.trim().parse() {
            kill("TERM", pid);
        }
        // master stops its httpd/imapd children; wait for all, then force what is left.
        let needle = self.base.to_string_lossy().into_owned();
        if !wait_until(10, || pids_mentioning(&needle).is_empty()) {
            for pid in pids_mentioning(&needle) {
                kill("KILL", pid);
            }
        }
    }

    /// Starts Cyrus again after [`Cyrus::halt`], on the same ports and data,
    /// and waits until its iSchedule receiver answers (at most 15 s).
    pub fn resume(&self) {
        let file = |name: &str| self.base.join(name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file("resume.log"))
            .expect("resume.log");
        // In the background, as cyrus-ischedule.sh starts it: master runs
        // until halted, and its pid goes where `halt` finds it.
        let status = Command::new("sh")
            .arg("-c")
            .arg(
                "/usr/lib/cyrus/bin/master -C \"$0/imapd.conf\" -M \"$0/cyrus.conf\" \
                  -p \"$0/master.pid\" -L \"$0/master.log\" & echo $! > \"$0/master.bgpid\"",
            )
            .arg(&self.base)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .status()
            .expect("run cyrus master");
        assert!(status.success(), "starting cyrus master: {status}");
        let caps = "/ischedule?action=capabilities";
        let port = self.http_port;
        assert!(
            wait_until(15, || request(port, "GET", caps, &[], b"")
                .is_ok_and(|r| r.status == 200)),
            "Cyrus did not come back on port {port}:\n{}",
            read_log(&file("master.log"))
        );
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The bridge binary under test (Cargo sets the variable for integration tests).
fn bridge_bin() -> &'static str {
    match option_env!("CARGO_BIN_EXE_ischedule-bridge") {
        Some(bin) => bin,
        None => {
            panic!("CARGO_BIN_EXE_ischedule-bridge unset: only the bridge crate's tests run it")
        }
    }
}

/// `ischedule-bridge serve` with a test's config; killed on drop.
pub struct Bridge {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

impl Bridge {
    /// Writes `config_toml` to a temp dir (also the bridge's working directory, so relative
    /// paths such as `state` land there) and runs the bridge until `GET
    /// /.well-known/ischedule?action=capabilities` on `port` answers 200 (at most 15 s).
    /// `port` must be the one the config's `[server] listen` names.
    ///
    /// With `ISB_TEST_STORE=postgres` a config without a `[store]` table
    /// gets one naming a fresh PostgreSQL database (see [`postgres`]).
    pub fn start(port: u16, config_toml: &str) -> Bridge {
        let dir = TempDir::new().expect("temp dir");
        let config = dir.path().join("bridge.toml");
        let has_store = config_toml.lines().any(|l| l.trim() == "[store]");
        let config_toml = if postgres::wanted() && !has_store {
            let url = postgres::shared_url();
            format!("{config_toml}\n[store]\nurl = \"{url}\"\n")
        } else {
            config_toml.to_string()
        };
        fs::write(&config, config_toml).expect("write bridge.toml");
        Bridge::start_in(port, dir)
    }

    /// Kills the bridge with SIGKILL, as a crash would: nothing is flushed or
    /// shut down. Returns its directory (config, log, state) for
    /// [`Bridge::start_in`].
    pub fn crash(mut self) -> (u16, TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, TempDir::new().expect("temp dir"));
        (self.port, dir)
    }

    /// Runs the bridge in `dir`, which holds its `bridge.toml`: a new one,
    /// or the directory a crashed bridge left (its state included).
    pub fn start_in(port: u16, dir: TempDir) -> Bridge {
        let config = dir.path().join("bridge.toml");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("bridge.log"))
            .expect("bridge.log");
        let child = Command::new(bridge_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn ischedule-bridge");
        let mut bridge = Bridge { port, child, dir };
        let caps = "/.well-known/ischedule?action=capabilities";
        let mut last = String::from("no answer");
        let up = wait_until(15, || {
            if let Ok(Some(status)) = bridge.child.try_wait() {
                last = format!("the bridge exited with {status}");
                return true;
            }
            match request(port, "GET", caps, &[], b"") {
                Ok(r) if r.status == 200 => return true,
                Ok(r) => last = format!("last answer {}: {}", r.status, r.text()),
                Err(e) => last = format!("last error: {e}"),
            }
            false
        });
        if !up || bridge.child.try_wait().ok().flatten().is_some() {
            panic!(
                "bridge not ready on port {port} ({last})\n--- log:\n{}",
                bridge.log()
            );
        }
        bridge
    }

    /// Everything the bridge wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("bridge.log"))
    }

    /// The bridge's working directory (holds its config, log and relative state paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bridge's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The bridge's exit status if it has exited (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the bridge binary with `args` to completion.
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(bridge_bin())
        .args(args)
        .output()
        .expect("run ischedule-bridge")
}

/// A parsed HTTP response; the body is already de-chunked.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port` with `Connection: close` and `Content-Length`
/// (and `Host`, unless `headers` has one); panics if there is no well-formed response.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port}: {e}"))
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += &format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let raw = http_raw(port, &[head.as_bytes(), body].concat())?;
    parse_response(&raw, method == "HEAD").map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{why} in {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

/// Sends `raw` bytes to `127.0.0.1:port` and returns everything received until the server
/// closes (30 s read timeout). A response that arrives before a reset still counts.
pub fn http_raw(port: u16, raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let written = stream.write_all(raw);
    let mut out = Vec::new();
    let read = stream.read_to_end(&mut out);
    match read {
        Ok(_) if out.is_empty() => written.map(|()| out),
        Ok(_) => Ok(out),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !out.is_empty() => Ok(out),
        Err(e) => Err(e),
    }
}

fn parse_response(raw: &[u8], head_only: bool) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .ok_or_else(|| format!("bad header line {l:?}"))?;
            Ok((n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect::<Result<_, String>>()?;
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if head_only || status == 204 || status == 304 {
        return Ok(resp);
    }
    resp.body = if resp
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        rest.get(..len)
            .ok_or_else(|| format!("body has {} of {len} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("unterminated chunk size")?;
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            return Ok(body); // trailers, if any, are ignored
        }
        let chunk = rest.get(eol + 2..eol + 2 + size).ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        rest = rest.get(eol + 4 + size..).ok_or("chunk without CRLF")?;
    }
}

/// An iTIP object for tests, CRLF line ends, ten days from today
/// (receivers ignore the past). `attendees` are `(address, partstat)`.
pub fn itip(
    method: &str,
    component: &str,
    organizer: &str,
    attendees: &[(&str, &str)],
    uid: &str,
) -> String {
    let day = ical_day(10);
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//ischedule-bridge tests//EN".into(),
        format!("METHOD:{method}"),
        format!("BEGIN:{component}"),
        format!("UID:{uid}"),
        format!("DTSTAMP:{}T120000Z", ical_day(0)),
        format!("DTSTART:{day}T130000Z"),
    ];
    lines.push(match component {
        "VTODO" => format!("DUE:{day}T140000Z"),
        _ => format!("DTEND:{day}T140000Z"),
    });
    if component != "VFREEBUSY" {
        lines.push("SUMMARY:Design meeting".into());
    }
    lines.push(format!("ORGANIZER;CN=Bernard Desruisseaux:{organizer}"));
    for (address, partstat) in attendees {
        let params = if component == "VFREEBUSY" {
            String::new()
        } else {
            format!(";PARTSTAT={partstat};RSVP=TRUE")
        };
        lines.push(format!("ATTENDEE{params}:{address}"));
    }
    lines.extend([
        format!("END:{component}"),
        "END:VCALENDAR".into(),
        String::new(),
    ]);
    lines.join("\r\n")
}

/// An iSchedule POST to the bridge's well-known URI.
pub fn schedule_post(
    port: u16,
    originator: &str,
    recipients: &[&str],
    body: &str,
    message_id: Option<&str>,
) -> HttpResponse {
    let method = body
        .lines()
        .find_map(|l| l.strip_prefix("METHOD:"))
        .unwrap_or("REQUEST");
    let component = ["VEVENT", "VTODO", "VFREEBUSY"]
        .into_iter()
        .find(|c| body.contains(&format!("BEGIN:{c}")))
        .unwrap_or("VEVENT");
    let content_type = format!("text/calendar; component={component}; method={method}");
    let recipient = recipients.join(", ");
    let mut headers = vec![
        ("iSchedule-Version", "1.0"),
        ("Originator", originator),
        ("Recipient", recipient.as_str()),
        ("Cache-Control", "no-cache, no-transform"),
        ("Content-Type", content_type.as_str()),
    ];
    if let Some(id) = message_id {
        headers.push(("iSchedule-Message-ID", id));
    }
    http(
        port,
        "POST",
        "/.well-known/ischedule",
        &headers,
        body.as_bytes(),
    )
}

/// The `(recipient, request-status)` pairs of a schedule-response, in order.
pub fn statuses(r: &HttpResponse) -> Vec<(String, String)> {
    let text = r.text();
    text.split("<response>")
        .skip(1)
        .map(|resp| {
            let field = |name: &str| {
                let open = format!("<{name}>");
                let start = resp.find(&open).map(|i| i + open.len()).unwrap_or(0);
                let end = resp[start..].find('<').map_or(start, |i| start + i);
                resp[start..end].to_string()
            };
            (field("recipient"), field("request-status"))
        })
        .collect()
}

/// Sends one mail with swaks to 127.0.0.1:`port` and returns whether the
/// transaction succeeded and its transcript; `extra` are more swaks options.
pub fn swaks(port: u16, from: &str, to: &[&str], data: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--from",
            from,
            "--to",
            &to.join(","),
        ])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .args(extra)
        .output()
        .expect("swaks is required (scripts/test installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The decoded text/calendar part and the header lines of a stored mail,
/// read by Python's email package (independent of the bridge's MIME code).
pub fn calendar_part(mail: &Path) -> (Vec<u8>, String) {
    const READ: &str = "import email,sys\n\
        m = email.message_from_binary_file(open(sys.argv[1], 'rb'))\n\
        p = [p for p in m.walk() if p.get_content_type() == 'text/calendar'][0]\n\
        sys.stderr.write(''.join(f'{k}: {v}\\n' for k, v in m.items()))\n\
        sys.stdout.buffer.write(p.get_payload(decode=True))\n";
    let out = Command::new("python3")
        .args(["-c", READ])
        .arg(mail)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// CalDAV credentials of bob, Cyrus's organizer in the tests.
pub const AUTH: (&str, &str) = ("Authorization", "Basic Ym9iOng="); // bob:x

/// Polls `ready` every 200 ms for at most `secs` seconds.
pub fn eventually(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    ready()
}

/// Bob's own copy of the event in Cyrus, as his calendar client stored it.
pub fn put_event(cyrus: &Cyrus, user: &str, uid: &str, attendee: &str) {
    let event = itip(
        "REQUEST",
        "VEVENT",
        &format!("mailto:{user}@{}", cyrus.domain),
        &[(attendee, "NEEDS-ACTION")],
        uid,
    )
    .replace("METHOD:REQUEST\r\n", "");
    let path = format!("/dav/calendars/user/{user}/Default/{uid}.ics");
    let credentials = format!("{user}:x");
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials)
    );
    let r = http(
        cyrus.http_port,
        "PUT",
        &path,
        &[("Authorization", &auth), ("Content-Type", "text/calendar")],
        event.as_bytes(),
    );
    assert!(
        matches!(r.status, 201 | 204),
        "CalDAV PUT {path}: {} {}",
        r.status,
        r.text()
    );
}

/// The PARTSTAT of `attendee` in bob's copy of event `uid`.
pub fn partstat(cyrus: &Cyrus, uid: &str, attendee: &str) -> Option<String> {
    let r = http(
        cyrus.http_port,
        "GET",
        &format!("/dav/calendars/user/bob/Default/{uid}.ics"),
        &[AUTH],
        b"",
    );
    let unfolded = r.text().replace("\r\n ", "");
    let line = unfolded
        .lines()
        .find(|l| l.starts_with("ATTENDEE") && l.to_ascii_lowercase().ends_with(attendee))?;
    let value = line.split(';').find_map(|p| p.strip_prefix("PARTSTAT="))?;
    Some(value.split([':', ';']).next()?.to_string())
}

/// A receiver in front of Cyrus that counts what it is sent: a second
/// bridge, whose log has one `scheduled` line per POST it answered.
pub fn counting_receiver(port: u16, cyrus: &Cyrus) -> Bridge {
    Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            cyrus.http_port
        ),
    )
}

pub fn posts_received(receiver: &Bridge, message_id: &str) -> usize {
    receiver
        .log()
        .lines()
        .filter(|l| l.contains("scheduled") && l.contains(message_id))
        .count()
}
