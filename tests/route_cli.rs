//! `ischedule-bridge route`: the routing explanation, as text and as JSON,
//! for addresses looked up in a real DNS server (dnsmasq), static routes,
//! local domains, bad arguments, and a real Cyrus receiver's capabilities.

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::{json, Value};
use support::{free_port, http, run_cli, Certs, Cyrus, Dns, Zone};
use tempfile::TempDir;

/// What one `route` run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Each stdout line parsed as one JSON object (`--json`).
    fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
            .collect()
    }
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

/// A config file in its own temporary folder.
struct ConfigFile {
    _dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(toml: &str) -> ConfigFile {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, toml).expect("write bridge.toml");
        ConfigFile { _dir: dir, path }
    }

    /// `ischedule-bridge route --config <this> ARGS...`
    fn route(&self, args: &[&str]) -> Run {
        let mut all = vec!["route", "--config", self.path.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run_cli(&all);
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A config whose resolver is the one on `port` only (plus `extra` TOML
/// after `[dns]`). The mode is pinned to `native-only`: without a receiver
/// an address gets 5.3 instead of falling back to iMIP mail.
fn config_at(port: u16, extra: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "[imip]\nmode = \"native-only\"\n[dns]\nnameservers = [\"127.0.0.1:{port}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n{extra}"
    ))
}

/// [`config_at`] the test DNS server.
fn config(dns: &Dns, extra: &str) -> ConfigFile {
    config_at(dns.port, extra)
}

/// Runs `route`, asserts it succeeded, and returns the text and the JSON
/// output for the same arguments.
fn both(cfg: &ConfigFile, args: &[&str]) -> (String, Vec<Value>) {
    let text = cfg.route(args);
    assert_eq!(text.code, Some(0), "{text}");
    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(args);
    let json = cfg.route(&json_args);
    assert_eq!(json.code, Some(0), "{json}");
    (text.stdout, json.json())
}

/// `(priority, weight, port, target, ttl)` of the SRV records in a JSON
/// `service`, sorted (the JSON keeps DNS answer order, which varies).
fn records(service: &Value) -> Vec<(u64, u64, u64, String, u64)> {
    let mut out: Vec<_> = service["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records in {service}"))
        .iter()
        .map(|r| {
            (
                r["priority"].as_u64().unwrap(),
                r["weight"].as_u64().unwrap(),
                r["port"].as_u64().unwrap(),
                r["target"].as_str().unwrap().to_string(),
                r["ttl"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `(name, outcome)` of each SRV query in a JSON `discovery`, in order.
fn attempts(v: &Value) -> Vec<(String, String)> {
    v["discovery"]["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts in {v}"))
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The zone used by most tests; every answer has TTL 1234.
///
/// - `example.org`: three SRV records in two priorities, TXT `path=`;
/// - `wk.example`: one SRV record, no TXT (well-known fallback);
/// - `example.net`: one SRV record, found only by stripping from
///   `host.cal.example.net`;
/// - `nosrv.test`: nothing at all;
/// - `none.test`: the single SRV record with target `.`;
/// - `dot.example.com` has target `.` while `example.com` has a receiver.
fn zone() -> Zone {
    Zone::new()
        .authoritative("example.org")
        .authoritative("wk.example")
        .authoritative("example.net")
        .authoritative("nosrv.test")
        .authoritative("none.test")
        .authoritative("example.com")
        .ttl(1234)
        .srv("example.org", "a.example.org", 8443, 10, 60)
        .srv("example.org", "b.example.org", 8444, 10, 40)
        .srv("example.org", "c.example.org", 8445, 20, 0)
        .txt("_ischedules._tcp.example.org", "path=/cal/ischedule")
        .srv("wk.example", "cal.wk.example", 443, 0, 5)
        .srv("example.net", "ischedule.example.net", 8443, 1, 1)
        .srv("none.test", ".", 0, 0, 0)
        .srv("dot.example.com", ".", 0, 0, 0)
        .srv("example.com", "ischedule.example.com", 443, 0, 0)
}

const NO_SUPPORT: &str = "5.3;No scheduling support for user";

#[test]
fn srv_records_of_two_priorities_with_weights_ports_targets_and_ttls() {
    let dns = Dns::start(&zone());
    let cfg = config(&dns, "");
    let (text, json) = both(&cfg, &["--no-capabilities", "mailto:alice@example.org"]);
    assert_eq!(
        text,
        "mailto:alice@example.org\n\
         \x20 mode: native-only\n\
         \x20 SRV _ischedules._tcp.example.org: found\n\
         \x20   priority 10 weight 60 port 8443 target a.example.org (TTL 1234 s)\n\
         \x20   priority 10 weight 40 port 8444 target b.example.org (TTL 1234 s)\n\
         \x20   priority 20 weight 0 port 8445 target c.example.org (TTL 1234 s)\n\
         \x20 path: /cal/ischedule (from TXT path=, TTL 1234 s)\n\
         \x20 => native receiver over HTTPS at example.org \
         (srv:a.example.org:8443,b.example.org:8444,c.example.org:8445/cal/ischedule)\n",
        "{}",
        dns.log()
    );

    assert_eq!(json.len(), 1, "{json:?}");
    let v = &json[0];
    assert_eq!(v["address"], "mailto:alice@example.org");
    assert_eq!(v["rule"], Value::Null);
    assert_eq!(v["capabilities"], Value::Null, "--no-capabilities");
    assert_eq!(v["mode"], "native-only", "{v}");
    assert_eq!(
        attempts(v),
        [("_ischedules._tcp.example.org".to_string(), "found".into())]
    );
    let expected = vec![
        (10, 40, 8444, "b.example.org".to_string(), 1234),
        (10, 60, 8443, "a.example.org".to_string(), 1234),
        (20, 0, 8445, "c.example.org".to_string(), 1234),
    ];
    let service = &v["discovery"]["service"];
    assert_eq!(records(service), expected, "{v}");
    assert_eq!(service["domain"], "example.org");
    let decision = &v["decision"];
    assert_eq!(decision["decision"], "native", "{v}");
    assert_eq!(
        decision["receiver"]["id"],
        "srv:a.example.org:8443,b.example.org:8444,c.example.org:8445/cal/ischedule"
    );
    assert_eq!(decision["receiver"]["target"]["kind"], "srv");
    assert_eq!(
        records(&decision["receiver"]["target"]["service"]),
        expected
    );
}

#[test]
fn txt_path_is_used_and_shown_with_its_ttl() {
    let dns = Dns::start(&zone());
    let cfg = config(&dns, "");
    let (text, json) = both(&cfg, &["--no-capabilities", "mailto:alice@example.org"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&"  path: /cal/ischedule (from TXT path=, TTL 1234 s)"),
        "{text}"
    );
    let service = &json[0]["discovery"]["service"];
    assert_eq!(service["path"], "/cal/ischedule", "{service}");
    assert_eq!(service["path_from"], json!({ "txt": { "ttl": 1234 } }));
}

#[test]
fn without_txt_the_well_known_path_is_used() {
    let dns = Dns::start(&zone());
    let cfg = config(&dns, "");
    let (text, json) = both(&cfg, &["--no-capabilities", "mailto:bob@wk.example"]);
    assert_eq!(
        text,
        "mailto:bob@wk.example\n\
         \x20 mode: native-only\n\
         \x20 SRV _ischedules._tcp.wk.example: found\n\
         \x20   priority 0 weight 5 port 443 target cal.wk.example (TTL 1234 s)\n\
         \x20 path: /.well-known/ischedule (no TXT path=, well-known fallback)\n\
         \x20 => native receiver over HTTPS at wk.example \
         (srv:cal.wk.example:443/.well-known/ischedule)\n"
    );
    let service = &json[0]["discovery"]["service"];
    assert_eq!(service["path"], "/.well-known/ischedule", "{service}");
    assert_eq!(service["path_from"], "well-known");
    assert_eq!(
        json[0]["decision"]["receiver"]["id"],
        "srv:cal.wk.example:443/.well-known/ischedule"
    );
}

#[test]
fn subdomain_stripping_walks_up_to_the_domain_with_srv_records() {
    let dns = Dns::start(&zone());
    let address = "mailto:x@host.cal.example.net";

    let on = config(&dns, "strip_subdomains = true\n");
    let (text, json) = both(&on, &["--no-capabilities", address]);
    assert_eq!(
        text,
        "mailto:x@host.cal.example.net\n\
         \x20 mode: native-only\n\
         \x20 sub-domain stripping: on\n\
         \x20 SRV _ischedules._tcp.host.cal.example.net: no records\n\
         \x20 SRV _ischedules._tcp.cal.example.net: no records\n\
         \x20 SRV _ischedules._tcp.example.net: found\n\
         \x20   priority 1 weight 1 port 8443 target ischedule.example.net (TTL 1234 s)\n\
         \x20 path: /.well-known/ischedule (no TXT path=, well-known fallback)\n\
         \x20 => native receiver over HTTPS at example.net \
         (srv:ischedule.example.net:8443/.well-known/ischedule)\n",
        "{}",
        dns.log()
    );
    let v = &json[0];
    assert_eq!(
        attempts(v),
        [
            (
                "_ischedules._tcp.host.cal.example.net".to_string(),
                "no-records".to_string()
            ),
            (
                "_ischedules._tcp.cal.example.net".into(),
                "no-records".into()
            ),
            ("_ischedules._tcp.example.net".into(), "found".into()),
        ],
        "{v}"
    );
    assert_eq!(v["discovery"]["service"]["domain"], "example.net");
    assert_eq!(v["decision"]["decision"], "native");

    // Off (the default): only the full domain is asked, and it has nothing.
    let off = config(&dns, "");
    let (text, json) = both(&off, &["--no-capabilities", address]);
    assert_eq!(
        text,
        format!(
            "mailto:x@host.cal.example.net\n\
             \x20 mode: native-only\n\
             \x20 SRV _ischedules._tcp.host.cal.example.net: no records\n\
             \x20 => no receiver (no iSchedule receiver: \
             _ischedules._tcp.host.cal.example.net (no SRV record)) => {NO_SUPPORT}\n"
        )
    );
    let v = &json[0];
    assert_eq!(
        attempts(v),
        [(
            "_ischedules._tcp.host.cal.example.net".to_string(),
            "no-records".to_string()
        )]
    );
    assert_eq!(v["discovery"]["service"], Value::Null);
    assert_eq!(v["decision"]["decision"], "no-receiver", "{v}");
    assert!(
        v["decision"]["why"]
            .as_str()
            .unwrap()
            .contains("_ischedules._tcp.host.cal.example.net (no SRV record)"),
        "{v}"
    );
}

#[test]
fn subdomain_stripping_stops_at_a_dot_target() {
    // RFC 2782: target "." says "decidedly not available" at this domain;
    // the parent's receiver must not be used instead.
    let dns = Dns::start(&zone());
    let cfg = config(&dns, "strip_subdomains = true\n");
    let (text, json) = both(&cfg, &["--no-capabilities", "mailto:x@a.dot.example.com"]);
    assert_eq!(
        text,
        format!(
            "mailto:x@a.dot.example.com\n\
             \x20 mode: native-only\n\
             \x20 sub-domain stripping: on\n\
             \x20 SRV _ischedules._tcp.a.dot.example.com: no records\n\
             \x20 SRV _ischedules._tcp.dot.example.com: target \".\": service decidedly not available\n\
             \x20 => no receiver (no iSchedule receiver: \
             _ischedules._tcp.a.dot.example.com (no SRV record), \
             _ischedules._tcp.dot.example.com (target \".\": no service)) => {NO_SUPPORT}\n"
        )
    );
    assert_eq!(
        attempts(&json[0]),
        [
            (
                "_ischedules._tcp.a.dot.example.com".to_string(),
                "no-records".to_string()
            ),
            (
                "_ischedules._tcp.dot.example.com".into(),
                "no-service".into()
            ),
        ]
    );
    assert!(
        !dns.log().contains("_ischedules._tcp.example.com"),
        "example.com must not be asked after a \".\" target:\n{}",
        dns.log()
    );
}

#[test]
fn static_routes_match_first_without_dns() {
    let dns = Dns::start(&zone());
    // example.org has SRV records: a DNS lookup would show up in the
    // output and in dnsmasq's query log.
    let cfg = config(
        &dns,
        "[[route]]\naddress = \"mailto:boss@example.org\"\nto = \"http://127.0.0.1:9/boss\"\n\
         [[route]]\ndomain = \"example.org\"\nto = \"https://static.example/ischedule\"\n\
         [[route]]\naddress = \"mailto:other@example.org\"\nto = \"http://127.0.0.1:9/never\"\n\
         [[route]]\ndomain = \"*.wk.example\"\nto = \"https://sub.example/ischedule\"\n",
    );
    let args = [
        "--no-capabilities",
        "mailto:boss@example.org",
        "MAILTO:Other@Example.ORG",
        "mailto:x@deep.sub.wk.example",
    ];
    let (text, json) = both(&cfg, &args);
    assert_eq!(
        text,
        "mailto:boss@example.org\n\
         \x20 mode: native-only\n\
         \x20 rule: [[route]] #0 (address mailto:boss@example.org) matched\n\
         \x20 => native receiver http://127.0.0.1:9/boss\n\
         MAILTO:Other@Example.ORG\n\
         \x20 mode: native-only\n\
         \x20 rule: [[route]] #1 (domain example.org) matched\n\
         \x20 => native receiver https://static.example/ischedule\n\
         mailto:x@deep.sub.wk.example\n\
         \x20 mode: native-only\n\
         \x20 rule: [[route]] #3 (domain *.wk.example) matched\n\
         \x20 => native receiver https://sub.example/ischedule\n"
    );
    assert_eq!(json.len(), 3);
    assert_eq!(
        json[0]["rule"],
        json!({ "index": 0, "match": "address mailto:boss@example.org" })
    );
    assert_eq!(
        json[1]["rule"],
        json!({ "index": 1, "match": "domain example.org" })
    );
    assert_eq!(json[1]["address"], "MAILTO:Other@Example.ORG");
    assert_eq!(
        json[2]["rule"],
        json!({ "index": 3, "match": "domain *.wk.example" })
    );
    for (v, url) in json.iter().zip([
        "http://127.0.0.1:9/boss",
        "https://static.example/ischedule",
        "https://sub.example/ischedule",
    ]) {
        assert_eq!(v["discovery"], Value::Null, "no DNS: {v}");
        assert_eq!(v["decision"]["decision"], "native", "{v}");
        assert_eq!(
            v["decision"]["receiver"]["target"],
            json!({ "kind": "url", "url": url })
        );
    }
    assert!(
        !dns.log().contains("_ischedules"),
        "static routes must not query DNS:\n{}",
        dns.log()
    );
}

#[test]
fn no_srv_record_and_dot_target_mean_no_receiver() {
    let dns = Dns::start(&zone());
    let cfg = config(&dns, "");
    let (text, json) = both(
        &cfg,
        &[
            "--no-capabilities",
            "mailto:carol@nosrv.test",
            "mailto:dan@none.test",
        ],
    );
    assert_eq!(
        text,
        format!(
            "mailto:carol@nosrv.test\n\
             \x20 mode: native-only\n\
             \x20 SRV _ischedules._tcp.nosrv.test: no records\n\
             \x20 => no receiver (no iSchedule receiver: \
             _ischedules._tcp.nosrv.test (no SRV record)) => {NO_SUPPORT}\n\
             mailto:dan@none.test\n\
             \x20 mode: native-only\n\
             \x20 SRV _ischedules._tcp.none.test: target \".\": service decidedly not available\n\
             \x20 => no receiver (no iSchedule receiver: \
             _ischedules._tcp.none.test (target \".\": no service)) => {NO_SUPPORT}\n"
        )
    );
    assert_eq!(json.len(), 2);
    assert_eq!(
        attempts(&json[0]),
        [(
            "_ischedules._tcp.nosrv.test".to_string(),
            "no-records".to_string()
        )]
    );
    assert_eq!(
        attempts(&json[1]),
        [(
            "_ischedules._tcp.none.test".to_string(),
            "no-service".to_string()
        )]
    );
    for v in &json {
        assert_eq!(v["decision"]["decision"], "no-receiver", "{v}");
        assert_eq!(v["discovery"]["service"], Value::Null, "{v}");
    }
}

#[test]
fn local_domain_without_static_route_has_no_receiver() {
    let dns = Dns::start(&zone());
    // example.org has SRV records, which (for a local domain) point at the
    // bridge itself: following them would loop.
    let cfg = config(
        &dns,
        "[domains]\nlocal = [\"Example.ORG\", \"wk.example\"]\n\
         [[route]]\ndomain = \"wk.example\"\nto = \"http://127.0.0.1:9/caldav-server\"\n",
    );
    let (text, json) = both(
        &cfg,
        &[
            "--no-capabilities",
            "mailto:alice@example.org",
            "mailto:bob@wk.example",
        ],
    );
    assert_eq!(
        text,
        format!(
            "mailto:alice@example.org\n\
             \x20 mode: native-only\n\
             \x20 => no receiver (example.org is a local domain and no [[route]] names its \
             calendar server) => {NO_SUPPORT}\n\
             mailto:bob@wk.example\n\
             \x20 mode: native-only\n\
             \x20 rule: [[route]] #0 (domain wk.example) matched\n\
             \x20 => native receiver http://127.0.0.1:9/caldav-server\n"
        )
    );
    let v = &json[0];
    assert_eq!(
        v["discovery"],
        Value::Null,
        "no DNS for a local domain: {v}"
    );
    assert_eq!(v["decision"]["decision"], "no-receiver");
    assert!(
        v["decision"]["why"]
            .as_str()
            .unwrap()
            .contains("example.org is a local domain"),
        "{v}"
    );
    assert_eq!(json[1]["decision"]["decision"], "native");
    assert!(
        !dns.log().contains("_ischedules._tcp.example.org"),
        "{}",
        dns.log()
    );
}

#[test]
fn subdomain_stripping_does_not_reach_a_local_domain() {
    // With stripping on, sub.example.org (no SRV records) strips to the
    // local domain example.org, whose SRV records point at this bridge:
    // the loop guard must hold there too, or the bridge posts to itself.
    let dns = Dns::start(&zone());
    let cfg = config(
        &dns,
        "strip_subdomains = true\n[domains]\nlocal = [\"example.org\"]\n",
    );
    let (text, json) = both(&cfg, &["--no-capabilities", "mailto:x@sub.example.org"]);
    let v = &json[0];
    assert_eq!(
        v["decision"]["decision"], "no-receiver",
        "the stripped candidate example.org is local:\n{text}"
    );
    assert!(text.ends_with(&format!("{NO_SUPPORT}\n")), "{text}");
    assert!(
        text.contains("example.org is a local domain"),
        "the reason names the local domain:\n{text}"
    );
}

#[test]
fn invalid_address_exits_non_zero_and_names_it() {
    let dns = Dns::start(&zone());
    let cfg = config(&dns, "");
    let run = cfg.route(&[
        "--no-capabilities",
        "not-an-address",
        "mailto:carol@nosrv.test",
        "mailto:@example.org",
    ]);
    assert_eq!(run.code, Some(1), "{run}");
    let errors: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(errors.len(), 2, "{run}");
    assert!(
        errors[0].starts_with("error: not-an-address: ") && errors[0].contains("no scheme"),
        "{run}"
    );
    assert!(
        errors[1].starts_with("error: mailto:@example.org: ")
            && errors[1].contains("local-part@domain"),
        "{run}"
    );
    // The valid address in between is still explained.
    assert_eq!(
        run.stdout,
        format!(
            "mailto:carol@nosrv.test\n\
             \x20 mode: native-only\n\
             \x20 SRV _ischedules._tcp.nosrv.test: no records\n\
             \x20 => no receiver (no iSchedule receiver: \
             _ischedules._tcp.nosrv.test (no SRV record)) => {NO_SUPPORT}\n"
        )
    );
    let json = cfg.route(&["--json", "--no-capabilities", "mailto:bad address"]);
    assert_eq!(json.code, Some(1), "{json}");
    assert!(json.stdout.is_empty(), "{json}");
    assert!(json.stderr.contains("mailto:bad address"), "{json}");

    let none = cfg.route(&[]);
    assert_ne!(none.code, Some(0), "an address is required: {none}");
}

#[test]
fn dns_failure_is_not_no_receiver() {
    // Nothing answers on this port: the lookup times out, which says
    // nothing about the domain (5.1, not 5.3).
    let dead = free_port();
    let cfg = config_at(dead, "[timeouts]\ndns_secs = 0.5\n");
    let run = cfg.route(&["--no-capabilities", "mailto:x@example.org"]);
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run}");
    assert_eq!(lines[1], "  mode: native-only", "{run}");
    assert!(
        lines[2].starts_with("  => DNS failure (DNS lookup of _ischedules._tcp.example.org failed")
            && lines[2].ends_with("=> 5.1;Service unavailable"),
        "{run}"
    );
}

#[test]
fn unreachable_receiver_is_reported_when_asking_capabilities() {
    let dead = free_port();
    let dns = Dns::start(
        &Zone::new()
            .authoritative("down.test")
            .srv("down.test", "dead.down.test", dead, 0, 0)
            .a("dead.down.test", Ipv4Addr::LOCALHOST),
    );
    let cfg = config(&dns, "[timeouts]\nconnect_secs = 2\n");
    let (text, json) = both(&cfg, &["mailto:x@down.test"]);
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("  capabilities: unreachable: "), "{text}");
    assert!(
        json[0]["capabilities"]["unreachable"].is_string(),
        "{}",
        json[0]
    );
}

/// The `<serial-number>` of a capabilities document.
fn serial_of(xml: &str) -> u64 {
    let start = xml.find("<serial-number>").expect("serial-number") + "<serial-number>".len();
    let end = start + xml[start..].find('<').expect("</serial-number>");
    xml[start..end].trim().parse().expect("numeric serial")
}

#[test]
fn capabilities_of_a_real_cyrus_receiver_over_tls() {
    let certs = Certs::generate(&["ischedule.cyrus.test"]);
    let cyrus = Cyrus::start("cyrus.test", &["bob"], Some(&certs));
    let tls_port = cyrus.tls_port.unwrap();
    let dns = Dns::start(
        &Zone::new()
            .authoritative("cyrus.test")
            .ttl(60)
            .srv("cyrus.test", "ischedule.cyrus.test", tls_port, 0, 10)
            .a("ischedule.cyrus.test", Ipv4Addr::LOCALHOST),
    );
    // Cyrus's own serial, read directly over plain HTTP.
    let own = http(
        cyrus.http_port,
        "GET",
        "/ischedule?action=capabilities",
        &[],
        b"",
    );
    assert_eq!(own.status, 200, "{}", own.text());
    let serial = serial_of(&own.text());

    let cfg = config(
        &dns,
        &format!(
            "[tls]\nca_file = \"{}\"\n[timeouts]\nconnect_secs = 2\nreceiver_secs = 10\n",
            certs.ca.display()
        ),
    );
    let (text, json) = both(&cfg, &["mailto:bob@cyrus.test"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&&*format!(
            "    priority 0 weight 10 port {tls_port} target ischedule.cyrus.test (TTL 60 s)"
        )),
        "{text}"
    );
    // No TXT record: the well-known URI, which Cyrus redirects to /ischedule.
    assert!(
        lines.contains(&"  path: /.well-known/ischedule (no TXT path=, well-known fallback)"),
        "{text}"
    );
    let from = format!("https://ischedule.cyrus.test:{tls_port}/ischedule");
    let caps = lines
        .iter()
        .find(|l| l.starts_with("  capabilities from "))
        .unwrap_or_else(|| panic!("no capabilities line:\n{text}"));
    assert!(
        caps.starts_with(&format!(
            "  capabilities from {from}: serial {serial}, versions 1.0, "
        )),
        "serial {serial}: {caps}"
    );
    assert!(
        caps.ends_with(
            ", VEVENT (REQUEST REPLY CANCEL), VTODO (REQUEST REPLY CANCEL), VFREEBUSY (REQUEST)"
        ),
        "Cyrus's own component/method list: {caps}"
    );
    assert_eq!(lines.last(), Some(caps), "{text}");

    let c = &json[0]["capabilities"];
    assert_eq!(c["from"], from, "{c}");
    assert_eq!(c["serial"], serial, "{c}");
    assert_eq!(c["versions"], json!(["1.0"]));
    assert_eq!(
        c["components"],
        json!([
            { "component": "VEVENT", "methods": ["REQUEST", "REPLY", "CANCEL"] },
            { "component": "VTODO", "methods": ["REQUEST", "REPLY", "CANCEL"] },
            { "component": "VFREEBUSY", "methods": ["REQUEST"] },
        ]),
        "{c}"
    );
}
