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
