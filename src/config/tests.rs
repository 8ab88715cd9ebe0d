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

/// The effective configuration (`check`): every key printed, secrets not.
mod effective_config {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::super::effective::{self, REDACTED};
    use super::super::file::{self, File};
    use super::*;

    /// Stands for every secret of `EVERY_KEY`; it must never be printed.
    const SECRET: &str = "s3cret-never-printed-0123";

    /// Every key of `file.rs`, each set to a value other than its default,
    /// in the form the bridge prints it back (absolute paths, lower-case
    /// domains, CIDR blocks, normalised URLs). `{dir}` is the test folder,
    /// `{public_key}` a DKIM public key.
    const EVERY_KEY: &str = r#"
[server]
listen = ["127.0.0.1:18008", "[::1]:18009"]
path = "/cal/ischedule"
origin = "http://127.0.0.1:8080/"
admin_listen = "127.0.0.1:18010"
max_connections = 500
max_connections_per_client = 50
header_timeout_secs = 2.5
upgrade_sock = "{dir}/up.sock"
pid_file = "{dir}/bridge.pid"
grace_period_secs = 3
shutdown_timeout_secs = 4
handover_timeout_secs = 40

[[server.tls]]
listen = "127.0.0.1:18443"
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"

[dns]
nameservers = ["127.0.0.1:5353"]
strip_subdomains = true
negative_ttl_secs = 60
max_ttl_secs = 3600
allow_private_targets = ["10.0.0.0/8"]

[tls]
ca_file = "{dir}/ca.pem"

[domains]
local = ["example.com", "example.org"]

[senders]
allow = ["192.0.2.0/24"]
secret_header = "X-Other-Secret"
shared_secret = "{secret}"

[limits]
max_content_length = 2048
max_recipients = 7
max_instances = 500
min_date_time = "19900101T000000Z"
max_date_time = "20900101T000000Z"
max_redirects = 5
max_response_bytes = 8192
max_requests_per_receiver = 16
inline_attachments = true

[timeouts]
connect_secs = 1.5
receiver_secs = 20.0
request_secs = 40.0
dns_secs = 2.0

[capabilities]
administrator = "mailto:admin@example.com"
unreadable_retry_secs = 90.0

[imip]
mode = "imip-only"
reply_routing = "token"
token_prefix = "cal"
token_domain = "reply.example.com"
token_lifetime_days = 30

[smtp]
relay = "smtps://bridge%40example.com:{secret}@relay.example:465"
from = "cal@example.com"
helo = "bridge.example.com"
direct_port = 2525
status_map = "{dir}/status-map.toml"
timeout_secs = 12.5
max_sessions_per_host = 3

[queue]
first_retry_secs = 30
max_retry_secs = 600
max_age_secs = 86400
max_messages = 500

[idempotency]
window_secs = 3600

[store]
path = "{dir}/store"

[mail]
smtp_listen = "127.0.0.1:2525"
lmtp_listen = "127.0.0.1:2424"
hostname = "mx.example.com"
max_message_bytes = 1048576
max_recipients = 20
max_connections = 30
max_connections_per_client = 5
session_timeout_secs = 300
max_commands = 200
delivery_timeout_secs = 60
local_clients = ["192.0.2.10/32"]
accept = ["dmarc"]
next_hop = "smtp+starttls://hop.example:2526"
tls_cert = "{dir}/cert.pem"
tls_key = "{dir}/key.pem"

[[mail.users]]
name = "calendar"
password = "{secret}"

[dkim]
lifetime_secs = 600
verify = "optional"

[[dkim.keys]]
domain = "example.com"
selector = "bridge"
private_key = "{dir}/key.pem"
methods = ["private-exchange"]

[[dkim.trusted]]
domain = "partner.example"
selector = "s1"
public_key = "{public_key}"

[[route]]
domain = "*.partner.example"
to = "https://bridge:{secret}@cal.partner.example/ischedule"
mode = "native-only"
reply_routing = "organizer-domain"
accept = ["token"]
dkim = "off"

[[route]]
address = "mailto:boss@corp.example"
mode = "imip-only"
"#;

    /// Keys `EVERY_KEY` cannot give a value in effect, and why.
    const NEVER_IN_EFFECT: &[(&str, &str)] = &[
        (
            "smtp.outbox",
            "unused with smtp.relay; the default's round trip prints it",
        ),
        (
            "store.url",
            "excludes store.path; postgres_store_prints_back_without_its_password covers it",
        ),
        ("store.pool_size", "PostgreSQL only, as store.url"),
        (
            "store.connect_timeout_secs",
            "PostgreSQL only, as store.url",
        ),
    ];

    /// A folder with the files `EVERY_KEY` names, and its text there.
    fn every_key() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::TempDir::new().unwrap();
        let key = crate::dkim::SigningKey::generate(2048).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("key.pem", &pem);
        // Only PEM framing is checked, not the certificate inside.
        write(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        write("ca.pem", "");
        write(
            "status-map.toml",
            include_str!("../../bridge-rules/status-map.toml"),
        );
        let text = EVERY_KEY
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{secret}", SECRET)
            .replace("{public_key}", &key.public_key().to_base64());
        (dir, text, pem.to_string())
    }

    fn printed(text: &str, base: &Path) -> String {
        let config = Config::parse(text, "t.toml", base).unwrap();
        effective::config(&config).unwrap()
    }

    /// Each key path (`route[].to`) with its values, one per array element.
    fn leaves(value: &Value, path: &str, out: &mut BTreeMap<String, Vec<Value>>) {
        let at = |key: &str| {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        };
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| leaves(v, &at(k), out)),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => items
                .iter()
                .for_each(|v| leaves(v, &format!("{path}[]"), out)),
            _ => out.entry(path.to_string()).or_default().push(value.clone()),
        }
    }

    fn leaves_of(file: &File) -> BTreeMap<String, Vec<Value>> {
        let mut out = BTreeMap::new();
        leaves(&serde_json::to_value(file).unwrap(), "", &mut out);
        out
    }

    /// The round trip that notices a forgotten key: what is printed for
    /// `EVERY_KEY` reads back as `EVERY_KEY` itself (secrets redacted), has
    /// a value for every key of `file.rs`, and none of those values is the
    /// default one (so a key printed as a constant is noticed too).
    #[test]
    fn every_key_is_printed_as_set() {
        let (dir, text, _) = every_key();
        let out = printed(&text, dir.path());
        let back = file::parse(&out, "printed").unwrap_or_else(|e| panic!("{e}\n{out}"));
        let expected = leaves_of(&file::parse(&text.replace(SECRET, REDACTED), "t.toml").unwrap());
        let printed_leaves = leaves_of(&back);
        let differing: Vec<String> = expected
            .keys()
            .chain(printed_leaves.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|path| expected.get(*path) != printed_leaves.get(*path))
            .map(|path| {
                format!(
                    "{path}: set {:?}, printed {:?}",
                    expected.get(path),
                    printed_leaves.get(path)
                )
            })
            .collect();
        assert!(differing.is_empty(), "{differing:#?}\nprinted:\n{out}");

        let unset: Vec<&String> = printed_leaves
            .iter()
            .filter(|(_, values)| {
                values
                    .iter()
                    .all(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
            })
            .map(|(path, _)| path)
            .filter(|path| !NEVER_IN_EFFECT.iter().any(|(k, _)| k == path))
            .collect();
        assert!(
            unset.is_empty(),
            "keys without a value: print them in effective.rs and set them in EVERY_KEY: {unset:?}\n{out}"
        );

        let defaults = leaves_of(&file::parse(&printed("", dir.path()), "default").unwrap());
        let as_default: Vec<&String> = printed_leaves
            .iter()
            .filter(|(path, values)| defaults.get(*path) == Some(values))
            .map(|(path, _)| path)
            .filter(|path| !NEVER_IN_EFFECT.iter().any(|(k, _)| k == path))
            .collect();
        assert!(
            as_default.is_empty(),
            "EVERY_KEY must set these to a value other than the default: {as_default:?}"
        );
    }

    #[test]
    fn secrets_and_private_keys_are_never_printed() {
        let (dir, text, pem) = every_key();
        let out = printed(&text, dir.path());
        assert!(!out.contains(SECRET), "{out}");
        assert!(!out.contains("PRIVATE KEY"), "{out}");
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!out.contains(line), "a line of the private key: {out}");
        }
        // Where the secrets were, the placeholder: shared secret, relay
        // password, route URL password, mail user password.
        assert_eq!(out.matches(REDACTED).count(), 4, "{out}");
        assert!(out.contains(&format!(
            "private_key = \"{}/key.pem\"",
            dir.path().display()
        )));
    }

    /// Copied back with the secrets written in, the printed configuration is
    /// the same configuration: printing it again gives the same text.
    #[test]
    fn printed_configuration_reads_back_the_same() {
        let (dir, text, _) = every_key();
        let out = printed(&text, dir.path());
        assert_eq!(printed(&out.replace(REDACTED, SECRET), dir.path()), out);
        let default = printed(DEFAULT_TOML, dir.path());
        assert_eq!(printed(&default, dir.path()), default);
    }

    /// The placeholder is refused wherever a secret goes, so a printed
    /// configuration cannot run with a password everyone knows.
    #[test]
    fn the_placeholder_is_not_a_secret() {
        for (text, key) in [
            (
                format!("[senders]\nshared_secret = \"{REDACTED}\"\n"),
                "senders.shared_secret",
            ),
            (
                format!("[[mail.users]]\nname = \"a\"\npassword = \"{REDACTED}\"\n"),
                "mail.users[0].password",
            ),
            (
                format!("[smtp]\nrelay = \"smtps://a:{REDACTED}@relay.example\"\n"),
                "smtp.relay",
            ),
            (
                format!("[mail]\nnext_hop = \"smtps://a:{REDACTED}@hop.example\"\n"),
                "mail.next_hop",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.why.contains("in place of a secret"), "{e}");
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let out = printed(
            "[domains]\nlocal = [\"example.com\"]\n",
            Path::new("/etc/bridge"),
        );
        let back = file::parse(&out, "printed").unwrap();
        assert_eq!(
            back.smtp.from.as_deref(),
            Some("calendar-bridge@example.com")
        );
        assert_eq!(back.imip.token_domain.as_deref(), Some("example.com"));
        assert_eq!(back.queue.max_age_secs, Some(5 * 86_400));
        assert_eq!(back.timeouts.request_secs, Some(60.0));
        assert_eq!(back.store.path.as_deref(), Some("/etc/bridge/state"));
        assert_eq!(back.smtp.outbox.as_deref(), Some("/etc/bridge/outbox"));
        // Nothing in effect, nothing printed.
        assert_eq!(back.smtp.relay, None);
        assert_eq!(back.server.origin, None);
        assert_eq!(back.senders.shared_secret, None);
    }
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

#[test]
fn postgres_store_prints_back_without_its_password() {
    let c = parse(
        "[store]\nurl = \"postgres://bridge:s3cret@db.example:5433/bridge\"\npool_size = 3\nconnect_timeout_secs = 2.5\n",
    )
    .unwrap();
    let out = super::effective::config(&c).unwrap();
    assert!(!out.contains("s3cret"), "{out}");
    for line in [
        "url = \"postgres://bridge:<redacted>@db.example:5433/bridge\"",
        "pool_size = 3",
        "connect_timeout_secs = 2.5",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // Copied back as printed, the placeholder is refused as the password.
    let e = parse(&out).unwrap_err();
    assert_eq!(e.key, "store.url", "{e}");
    assert!(e.why.contains("in place of a secret"), "{e}");
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
