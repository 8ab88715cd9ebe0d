use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("."))
}

#[test]
fn embedded_default_is_valid_and_safe() {
    let c = Config::embedded().unwrap();
    assert_eq!(c.server.listen, vec!["127.0.0.1:8008".parse().unwrap()]);
    assert!(c.dns.nameservers.is_empty());
    assert!(c.local_domains.is_empty());
    assert!(c.senders.allow.iter().all(|n| n.addr().is_loopback()));
    assert!(!c.dns.strip_subdomains);
}

#[test]
fn errors_name_file_key_and_reason() {
    let e = parse("[dns]\nnameservers = [\"127.0.0.1:x\"]\n").unwrap_err();
    assert_eq!(e.file, "test.toml");
    assert_eq!(e.key, "dns.nameservers[0]");
    assert!(e.why.contains("127.0.0.1:x"), "{e}");

    let e = parse("[[route]]\ndomain = \"a.example\"\nto = \"ftp://x\"\n").unwrap_err();
    assert_eq!(e.key, "route[0].to");

    let e = parse("[[route]]\nto = \"https://x.example/\"\n").unwrap_err();
    assert_eq!(e.key, "route[0]");

    let e = parse("[tls]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap_err();
    assert_eq!(e.key, "tls.ca_file");
}

#[test]
fn unknown_keys_and_bad_types_are_errors_with_a_line() {
    let e = parse("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
    assert!(e.why.contains("listn") && e.why.contains("line 3"), "{e}");
    let e = parse("[limits]\nmax_recipients = \"many\"\n").unwrap_err();
    assert_eq!(e.key, "limits.max_recipients", "{e}");
    let e = parse("[limits\n").unwrap_err();
    assert!(e.why.starts_with("TOML syntax"), "{e}");
}

#[test]
fn routes_match_domains_subdomains_and_addresses() {
    let c = parse(
        "[[route]]\naddress = \"mailto:Boss@Corp.example\"\nto = \"http://127.0.0.1:9/a\"\n\
         [[route]]\ndomain = \"*.partner.example\"\nto = \"https://p.example/ischedule\"\n",
    )
    .unwrap();
    let addr = |s| CalAddress::parse(s).unwrap();
    assert!(c.routes[0]
        .matcher
        .matches(&addr("mailto:boss@corp.example")));
    assert!(!c.routes[0]
        .matcher
        .matches(&addr("mailto:other@corp.example")));
    assert!(c.routes[1]
        .matcher
        .matches(&addr("mailto:a@partner.example")));
    assert!(c.routes[1]
        .matcher
        .matches(&addr("mailto:a@x.partner.example")));
    assert!(!c.routes[1]
        .matcher
        .matches(&addr("mailto:a@xpartner.example")));
}

#[test]
fn limits_and_timeouts_are_bounded() {
    assert_eq!(
        parse("[limits]\nmax_recipients = 0\n").unwrap_err().key,
        "limits.max_recipients"
    );
    assert_eq!(
        parse("[timeouts]\nconnect_secs = -1\n").unwrap_err().key,
        "timeouts.connect_secs"
    );
    let e = parse(
        "[limits]\nmin_date_time = \"20300101T000000Z\"\nmax_date_time = \"20200101T000000Z\"\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "limits.max_date_time");
}

#[test]
fn dkim_keys_policies_and_their_errors() {
    let dir = tempfile::TempDir::new().unwrap();
    let key = crate::dkim::SigningKey::generate(2048).unwrap();
    std::fs::write(dir.path().join("k.pem"), key.to_pkcs8_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    let at = |text: &str| Config::parse(text, "test.toml", dir.path());
    let keys = "[[dkim.keys]]\ndomain = \"One.Test\"\nselector = \"s1\"\nprivate_key = \"k.pem\"\n";
    let c = at(&format!(
        "{keys}[[route]]\ndomain = \"partner.test\"\nto = \"https://p.test/\"\ndkim = \"optional\"\n"
    ))
    .unwrap();
    let k = c.signing_key("one.test").unwrap();
    assert_eq!(k.methods, [KeyMethod::DnsTxt, KeyMethod::HttpWellKnown]);
    assert_eq!(k.key.public_key(), key.public_key());
    assert_eq!(c.dkim.verify, DkimPolicy::Require);
    assert_eq!(c.dkim.lifetime, Duration::from_secs(3600));
    let partner = CalAddress::parse("mailto:x@partner.test").unwrap();
    let other = CalAddress::parse("mailto:x@other.test").unwrap();
    assert_eq!(c.dkim_policy_for(&partner), DkimPolicy::Optional);
    assert_eq!(c.dkim_policy_for(&other), DkimPolicy::Require);

    let error = |text: &str| at(text).unwrap_err();
    let e = error(&keys.replace("k.pem", "bad.pem"));
    assert_eq!(e.key, "dkim.keys[0].private_key");
    assert!(e.why.contains("not a PEM private key"), "{e}");
    let e = error(&format!("{keys}methods = [\"dns\"]\n"));
    assert_eq!(e.key, "dkim.keys[0].methods[0]");
    let e = error(&format!("{keys}{}", &keys));
    assert_eq!(e.key, "dkim.keys[1].selector");
    let e = error("[dkim]\nverify = \"maybe\"\n");
    assert_eq!(e.key, "dkim.verify");
    let e = error("[dkim]\nlifetime_secs = 5\n");
    assert_eq!(e.key, "dkim.lifetime_secs");
    let e =
        error("[[dkim.trusted]]\ndomain = \"p.test\"\nselector = \"s\"\npublic_key = \"AAAA\"\n");
    assert_eq!(e.key, "dkim.trusted[0].public_key");
}

#[test]
fn the_bridge_writes_from_the_first_local_domain_unless_told() {
    let parse = |text: &str| Config::parse(text, "t.toml", Path::new(".")).unwrap();
    let c = parse("[domains]\nlocal = [\"example.com\", \"example.org\"]\n");
    assert_eq!(c.smtp.from, "calendar-bridge@example.com");
    assert_eq!(c.imip.token_domain, "example.com");
    let c = parse("");
    assert_eq!(c.smtp.from, "calendar-bridge@localhost");
    let c =
        parse("[domains]\nlocal = [\"example.com\"]\n[smtp]\nfrom = \"cal@mail.example.com\"\n");
    assert_eq!(c.smtp.from, "cal@mail.example.com");
}

#[test]
fn upgrade_keys_default_beside_the_state_and_are_checked() {
    let c = parse("[store]\npath = \"/var/lib/bridge\"\n").unwrap();
    let s = &c.server;
    assert_eq!(s.upgrade_sock, Path::new("/var/lib/bridge/upgrade.sock"));
    assert_eq!(s.pid_file, Path::new("/var/lib/bridge/bridge.pid"));
    assert_eq!(s.grace_period, Duration::from_secs(5));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(s.drain(), Duration::from_secs(1));
    // 5 s handing over, 5 s grace, 5 s stopping, and a margin.
    assert_eq!(s.handover_timeout, Duration::from_secs(25));

    let c =
        parse("[server]\nupgrade_sock = \"/run/b/u.sock\"\npid_file = \"/run/b/pid\"\n").unwrap();
    assert_eq!(c.server.upgrade_sock, Path::new("/run/b/u.sock"));
    assert_eq!(c.server.pid_file, Path::new("/run/b/pid"));

    let long = format!("[server]\nupgrade_sock = \"/{}\"\n", "s".repeat(120));
    let e = parse(&long).unwrap_err();
    assert_eq!(e.key, "server.upgrade_sock", "{e}");
    assert!(e.why.contains("at most 107"), "{e}");

    let e = parse("[server]\ngrace_period_secs = 10\nhandover_timeout_secs = 15\n").unwrap_err();
    assert_eq!(e.key, "server.handover_timeout_secs", "{e}");
    assert!(e.why.contains("20 s"), "{e}");
    let e = parse("[server]\ngrace_period_secs = 0\n").unwrap_err();
    assert_eq!(e.key, "server.grace_period_secs", "{e}");
}
