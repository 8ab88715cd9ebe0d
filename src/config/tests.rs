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
fn store_is_redb_by_default_or_postgres_by_url_never_both() {
    let c = parse("").unwrap();
    assert!(
        matches!(&c.store, StoreLocation::Redb(p) if p.ends_with("state")),
        "{:?}",
        c.store
    );

    let c = parse(
        "[store]\nurl = \"postgres://bridge:s3cret@db.example:5433/bridge\"\npool_size = 3\n",
    )
    .unwrap();
    let StoreLocation::Postgres(pg) = &c.store else {
        panic!("{:?}", c.store)
    };
    assert_eq!(pg.pool_size, 3);
    assert_eq!(pg.connect_timeout, Duration::from_secs(5));
    assert_eq!(
        pg.url.secret(),
        "postgres://bridge:s3cret@db.example:5433/bridge"
    );
    // Shown anywhere (Debug of the whole config, Display): no password.
    let shown = format!("{c:?} {}", pg.url);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("postgres://bridge:***@db.example:5433/bridge"),
        "{shown}"
    );

    let e = parse("[store]\npath = \"state\"\nurl = \"postgres://db.example/b\"\n").unwrap_err();
    assert_eq!(e.key, "store.url");
    assert!(e.why.contains("store.path and store.url"), "{e}");

    for bad in ["mysql://db.example/b", "postgres:///b", "not a url"] {
        let e = parse(&format!("[store]\nurl = \"{bad}\"\n")).unwrap_err();
        assert_eq!(e.key, "store.url", "{bad}: {e}");
    }
    let e =
        parse("[store]\nurl = \"postgres://u:pw1@db.example/b?sslmode=sideways\"\n").unwrap_err();
    assert!(e.why.contains("not a usable PostgreSQL URL"), "{e}");
    assert!(!e.why.contains("pw1"), "{e}");

    let e = parse("[store]\npool_size = 0\nurl = \"postgres://db.example/b\"\n").unwrap_err();
    assert_eq!(e.key, "store.pool_size");
    let e = parse("[store]\npool_size = 4\n").unwrap_err();
    assert_eq!(e.key, "store.pool_size");
    assert!(e.why.contains("PostgreSQL only"), "{e}");
}
