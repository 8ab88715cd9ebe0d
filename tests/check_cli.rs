//! `ischedule-bridge check --config FILE`: a summary and exit 0 for a valid
//! configuration, one line naming file, key and reason (and exit 1) for a
//! broken one.

mod support;

use std::path::{Path, PathBuf};

use support::{run_cli, Certs};
use tempfile::TempDir;

/// What one `check` run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout:\n{}--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn check(path: &Path) -> Run {
    let out = run_cli(&["check", "--config", path.to_str().unwrap()]);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `toml` to `bridge.toml` in a fresh folder and checks it.
fn check_text(toml: &str) -> (Run, TempDir, PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, toml).expect("write bridge.toml");
    (check(&path), dir, path)
}

/// Asserts `check` failed with exactly one line
/// `error: <file>: <key>: <why>` whose reason contains each of `why`.
fn assert_error(toml: &str, key: &str, why: &[&str]) {
    let (run, _dir, path) = check_text(toml);
    assert_eq!(run.code, Some(1), "{toml}\n{run}");
    assert!(run.stdout.is_empty(), "no summary for a bad file: {run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {run}");
    let prefix = if key.is_empty() {
        format!("error: {}: ", path.display())
    } else {
        format!("error: {}: {key}: ", path.display())
    };
    let line = lines[0];
    assert!(
        line.starts_with(&prefix),
        "expected {prefix:?}...\n{toml}\n{run}"
    );
    let reason = &line[prefix.len()..];
    for w in why {
        assert!(reason.contains(w), "reason lacks {w:?}: {line}\n{toml}");
    }
}

#[test]
fn valid_config_prints_a_summary_and_exits_zero() {
    let certs = Certs::generate(&["localhost", "127.0.0.1"]);
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:8008\", \"[::1]:8009\"]\n\
         origin = \"http://127.0.0.1:8080\"\n\
         [[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [dns]\nnameservers = [\"127.0.0.1:5353\", \"10.0.0.1\"]\nstrip_subdomains = true\n\
         [tls]\nca_file = \"{ca}\"\n\
         [domains]\nlocal = [\"example.com\", \"Calendar.Example.ORG\"]\n\
         [limits]\nmax_recipients = 7\n\
         [[route]]\ndomain = \"*.partner.example\"\nto = \"https://cal.partner.example/ischedule\"\n\
         [[route]]\naddress = \"mailto:boss@corp.example\"\nto = \"http://127.0.0.1:9/ischedule\"\n",
        cert = certs.cert.display(),
        key = certs.key.display(),
        ca = certs.ca.display(),
    );
    let (run, _dir, path) = check_text(&toml);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stderr.is_empty(), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("{}: OK", path.display()), "{run}");
    for expected in [
        format!(
            "  listen: [127.0.0.1:8008, [::1]:8009], TLS 127.0.0.1:8443 ({})",
            certs.cert.display()
        ),
        "  receiver path: /ischedule and /.well-known/ischedule".into(),
        "  origin (pass-through): http://127.0.0.1:8080/".into(),
        "  DNS: [127.0.0.1:5353, 10.0.0.1:53], sub-domain stripping on".into(),
        "  local domains: example.com, calendar.example.org".into(),
        "  local senders: 127.0.0.0/8, ::1/128".into(),
        "  static routes: 2".into(),
        "    #0 domain *.partner.example -> https://cal.partner.example/ischedule".into(),
        "    #1 address mailto:boss@corp.example -> http://127.0.0.1:9/ischedule".into(),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "no {expected:?}:\n{run}"
        );
    }
    let limits = lines
        .iter()
        .find(|l| l.starts_with("  limits: "))
        .unwrap_or_else(|| panic!("no limits line:\n{run}"));
    assert!(
        limits.starts_with("  limits: 1048576 bytes, 7 recipients per POST; capabilities serial "),
        "{limits}"
    );
}

#[test]
fn shipped_default_config_passes_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge-rules/default.toml");
    let run = check(&path);
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("{}: OK", path.display()), "{run}");
    for expected in [
        "  listen: [127.0.0.1:8008]",
        "  origin (pass-through): none",
        "  DNS: system resolver, sub-domain stripping off",
        "  local domains: none",
        "  static routes: 0",
    ] {
        assert!(lines.contains(&expected), "no {expected:?}:\n{run}");
    }
}

#[test]
fn toml_syntax_error_names_the_line() {
    assert_error(
        "[server]\nlisten = \"127.0.0.1:8008\"\n[limits\nmax_recipients = 5\n",
        "",
        &["TOML syntax", "line 3"],
    );
}

#[test]
fn unknown_key_is_an_error() {
    assert_error(
        "[server]\nlistn = 1\n",
        "server.listn",
        &["unknown field `listn`", "listen", "line 2"],
    );
    assert_error(
        "[sever]\nlisten = \"127.0.0.1:1\"\n",
        "sever",
        &["unknown field"],
    );
}

#[test]
fn wrong_type_is_an_error() {
    assert_error(
        "\n[limits]\nmax_recipients = \"many\"\n",
        "limits.max_recipients",
        &["invalid type", "\"many\"", "line 3"],
    );
    assert_error(
        "[dns]\nstrip_subdomains = \"yes\"\n",
        "dns.strip_subdomains",
        &["expected a boolean"],
    );
}

#[test]
fn bad_nameserver_address_is_an_error() {
    assert_error(
        "[dns]\nnameservers = [\"127.0.0.1:53\", \"localhost:53\"]\n",
        "dns.nameservers[1]",
        &["'localhost:53'", "not an IP:port socket address"],
    );
}

#[test]
fn route_to_must_be_http_or_https() {
    assert_error(
        "[[route]]\ndomain = \"a.example\"\nto = \"https://a.example/ischedule\"\n\
         [[route]]\ndomain = \"b.example\"\nto = \"ftp://b.example/ischedule\"\n",
        "route[1].to",
        &["'ftp://b.example/ischedule'", "http:// or https://"],
    );
}

#[test]
fn route_with_domain_and_address_is_an_error() {
    assert_error(
        "[[route]]\ndomain = \"a.example\"\naddress = \"mailto:x@a.example\"\n\
         to = \"https://a.example/ischedule\"\n",
        "route[0].domain",
        &["either domain or address, not both"],
    );
}

#[test]
fn missing_ca_file_is_an_error() {
    // Relative paths are taken from the config file's folder.
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, "[tls]\nca_file = \"missing-ca.pem\"\n").unwrap();
    let run = check(&path);
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "error: {}: tls.ca_file: file '{}' does not exist",
            path.display(),
            dir.path().join("missing-ca.pem").display()
        ),
        "{run}"
    );
    // ...and an existing one there is accepted.
    std::fs::write(dir.path().join("missing-ca.pem"), "").unwrap();
    let run = check(&path);
    assert_eq!(run.code, Some(0), "{run}");
}

#[test]
fn zero_max_recipients_is_an_error() {
    assert_error(
        "[limits]\nmax_recipients = 0\n",
        "limits.max_recipients",
        &["between 1 and"],
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("no-such.toml");
    let run = check(&path);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run}");
    assert!(
        lines[0].starts_with(&format!("error: {}: cannot read: ", path.display())),
        "{run}"
    );
}

#[test]
fn unusable_tls_certificate_is_an_error() {
    // The files exist but hold no certificate or key: `serve` cannot use
    // them, so `check` must not call the configuration OK.
    let dir = TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("junk.pem"), "not a PEM file\n").unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:8008\"\n\
         [[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"junk.pem\"\nkey = \"junk.pem\"\n",
    )
    .unwrap();
    let run = check(&path);
    assert_eq!(run.code, Some(1), "{run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run}");
    assert!(
        lines[0].starts_with(&format!("error: {}: server.tls[0].", path.display()))
            && lines[0].contains("junk.pem"),
        "{run}"
    );
}

/// Where `check` starts printing the effective configuration; from there
/// on, its output is a configuration file.
const EFFECTIVE_HEADING: &str = "# effective configuration (defaults filled in)";
/// What `check` prints in place of a secret.
const REDACTED: &str = "<redacted>";

/// The effective configuration part of a successful `check`.
fn effective(run: &Run) -> &str {
    assert_eq!(run.code, Some(0), "{run}");
    let at = run
        .stdout
        .find(EFFECTIVE_HEADING)
        .unwrap_or_else(|| panic!("no effective configuration:\n{run}"));
    &run.stdout[at..]
}

/// `effective` written to a file of its own and checked again prints
/// itself: nothing was lost or changed on the way.
fn assert_reads_back_the_same(effective: &str) {
    let (again, _dir, _) = check_text(effective);
    assert_eq!(self::effective(&again), effective, "{again}");
}

#[test]
fn check_prints_the_shipped_defaults_effective_configuration() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge-rules/default.toml");
    let run = check(&path);
    let printed = effective(&run);
    // The summary comes first, as before.
    assert!(
        run.stdout.starts_with(&format!("{}: OK\n", path.display())),
        "{run}"
    );
    let table: toml::Table = printed.parse().unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(
        table["server"]["listen"][0].as_str(),
        Some("127.0.0.1:8008")
    );
    assert_reads_back_the_same(printed);
}

#[test]
fn check_prints_the_defaults_it_fills_in() {
    let (run, dir, _) = check_text("[domains]\nlocal = [\"example.com\", \"example.org\"]\n");
    let table: toml::Table = effective(&run).parse().unwrap();
    let value = |section: &str, key: &str| table[section][key].clone();
    assert_eq!(
        value("smtp", "from").as_str(),
        Some("calendar-bridge@example.com")
    );
    assert_eq!(value("imip", "token_domain").as_str(), Some("example.com"));
    assert_eq!(
        value("queue", "max_age_secs").as_integer(),
        Some(5 * 86_400)
    );
    assert_eq!(value("timeouts", "request_secs").as_float(), Some(60.0));
    assert_eq!(value("dkim", "verify").as_str(), Some("require"));
    // Relative paths are taken from the file's folder, and printed absolute.
    let state = dir.path().join("state");
    assert_eq!(value("store", "path").as_str(), state.to_str());
    // No relay: mail goes to the outbox, and no relay key is printed.
    assert!(table["smtp"].get("relay").is_none(), "{run}");
}

#[test]
fn every_section_reads_back_the_same_and_secrets_are_never_printed() {
    let secret = "s3cret-never-printed-0123";
    let certs = Certs::generate(&["localhost", "127.0.0.1"]);
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:8008\"\norigin = \"http://proxy:{secret}@127.0.0.1:8080\"\n\
         admin_listen = \"127.0.0.1:8009\"\n\
         [[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [dns]\nnameservers = [\"10.0.0.1\"]\nstrip_subdomains = true\n\
         [tls]\nca_file = \"{ca}\"\n\
         [domains]\nlocal = [\"Example.COM\"]\n\
         [senders]\nallow = [\"10.1.0.0/16\", \"10.2.0.1\"]\nshared_secret = \"{secret}\"\n\
         [limits]\nmax_recipients = 7\nmin_date_time = \"19900101\"\n\
         [timeouts]\nconnect_secs = 2.5\n\
         [capabilities]\nadministrator = \"mailto:admin@example.com\"\n\
         [imip]\nreply_routing = \"token\"\n\
         [smtp]\nrelay = \"smtp+starttls://bridge:{secret}@relay.example.com\"\n\
         [queue]\nmax_age_secs = 86400\n\
         [idempotency]\nwindow_secs = 600\n\
         [store]\npath = \"var/state\"\n\
         [mail]\nlmtp_listen = \"127.0.0.1:2424\"\nnext_hop = \"direct\"\n\
         tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
         [[mail.users]]\nname = \"calendar\"\npassword = \"{secret}\"\n\
         [dkim]\nverify = \"optional\"\n\
         [[dkim.trusted]]\ndomain = \"partner.example\"\nselector = \"s1\"\npublic_key = \"{public_key}\"\n\
         [[route]]\ndomain = \"*.partner.example\"\nto = \"https://cal:{secret}@cal.partner.example/ischedule\"\ndkim = \"off\"\n\
         [[route]]\naddress = \"mailto:boss@corp.example\"\nmode = \"imip-only\"\n",
        cert = certs.cert.display(),
        key = certs.key.display(),
        ca = certs.ca.display(),
        public_key = PARTNER_PUBLIC_KEY,
    );
    let (run, _dir, _) = check_text(&toml);
    let printed = effective(&run);
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "{run}"
    );
    // Shared secret, origin, relay and route passwords, mail user password.
    let redacted: usize = printed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.matches(REDACTED).count())
        .sum();
    assert_eq!(redacted, 5, "{run}");
    // The summary shows URLs redacted too.
    assert!(
        run.stdout
            .contains("    #0 domain *.partner.example -> https://cal:<redacted>@cal.partner.example/ischedule\n"),
        "{run}"
    );
    let table: toml::Table = printed.parse().unwrap();
    assert_eq!(
        table["smtp"]["relay"].as_str(),
        Some("smtp+starttls://bridge:<redacted>@relay.example.com")
    );
    assert_eq!(table["domains"]["local"][0].as_str(), Some("example.com"));
    assert_eq!(table["dns"]["nameservers"][0].as_str(), Some("10.0.0.1:53"));
    // As printed, the placeholder is refused: the secrets must be written back in.
    let (refused, _dir, _) = check_text(printed);
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stderr.contains("in place of a secret"), "{refused}");
    // With them, it is the same configuration.
    let (again, _dir, _) = check_text(&printed.replace(REDACTED, secret));
    assert_eq!(effective(&again), printed, "{again}");
}

/// A partner's DKIM public key (the `p=` of its record): any RSA key will do.
const PARTNER_PUBLIC_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxo5hHkpAPS29Agh+YlOTor5WzZVfjncs3dd1L4LsQQDg9sXeaqomW0GhwcBvo9wfuT977f6xeY7jjjBd+Cqhd8nu4xn2mcZuILGnx0UWXatUE6dX90ZT2ZseETozNMPUwmTl2E4rSv2N06swuirgLgkVAvdK9AUneeuV2ymG65+9JwWXzudU98dgaQB9ZOurfE6PLeiTadDoF07c30tB1BA+wgMn3/wqXOMBedJv0GZvWNadXcvPFUKh3iIr/xKt3e//6ErO1ixWofzGLuLQD8e0rSWoyYz4OYOlU6Q2YeoqgieeSN/4CwLh00xbBYAQpy2tu8isg73aOxcg+sWfkwIDAQAB";

#[test]
fn store_url_is_checked_without_connecting_and_its_password_never_shown() {
    // Port 1: nothing listens there, and check must not try.
    let (run, _dir, _path) =
        check_text("[store]\nurl = \"postgres://bridge:s3cret@127.0.0.1:1/bridge\"\n");
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains("  store: PostgreSQL postgres://bridge:***@127.0.0.1:1/bridge (pool of 8"),
        "{run}"
    );
    assert!(!format!("{run}").contains("s3cret"), "{run}");
    let (run, _dir, _path) = check_text("");
    assert!(run.stdout.contains("  store: redb in "), "{run}");
    assert_error(
        "[store]\npath = \"state\"\nurl = \"postgres://db.example/b\"\n",
        "store.url",
        &["store.path and store.url"],
    );
    assert_error(
        "[store]\nurl = \"http://db.example/b\"\n",
        "store.url",
        &["postgres://"],
    );
}
