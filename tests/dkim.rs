//! DKIM between domains through the running bridge, against real peers:
//! keys published by dnsmasq (TXT, split into several strings as a
//! 2048-bit key must be) and by another bridge at its well-known URI,
//! Cyrus as the receiver behind the bridge, two bridges trusting each
//! other's signatures, and dkimpy verifying the signature on the mail the
//! bridge writes.
//!
//! Outsiders post from 127.0.0.1, which `senders.allow` does not cover.
//! Their requests are signed here with the crate's signer (the
//! canonicalisation itself is checked against CalendarServer's fixtures
//! and OpenSSL in src/dkim/tests.rs), then tampered with.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ischedule_bridge::dkim::{KeyMethod, Signer, SigningKey};
use support::{
    free_port, http, itip, run_cli, schedule_post, statuses, Bridge, Cyrus, Dns, HttpResponse, Zone,
};
use tempfile::TempDir;

const SECRET: &str = "dkim-test-secret-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A fresh key, written where a bridge configuration can name it.
fn key_file(dir: &Path, name: &str) -> (SigningKey, PathBuf) {
    let key = SigningKey::generate(2048).expect("generate key");
    let path = dir.join(name);
    std::fs::write(&path, key.to_pkcs8_pem().expect("PEM")).expect("write key");
    (key, path)
}

/// A key record as dnsmasq serves it: a TXT string holds at most 255
/// bytes, so a 2048-bit key's record is several strings of one record.
fn publish(zone: Zone, domain: &str, selector: &str, record: &str) -> Zone {
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    zone.raw_line(&format!(
        "txt-record={selector}._domainkey.{domain},{}",
        strings.join(",")
    ))
}

/// An iSchedule request as a remote server sends it.
#[derive(Clone)]
struct Post {
    headers: Vec<(String, String)>,
    body: String,
}

impl Post {
    fn new(originator: &str, recipients: &[&str], body: String) -> Post {
        let method = body
            .lines()
            .find_map(|l| l.strip_prefix("METHOD:"))
            .unwrap_or("REQUEST");
        let headers = [
            ("iSchedule-Version", "1.0".to_string()),
            ("iSchedule-Message-ID", format!("dkim-test-{}", free_port())),
            ("Originator", originator.to_string()),
            ("Recipient", recipients.join(", ")),
            (
                "Content-Type",
                format!("text/calendar; component=VEVENT; method={method}"),
            ),
            ("Cache-Control", "no-cache, no-transform".to_string()),
        ];
        Post {
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            body,
        }
    }

    fn sign(
        mut self,
        key: &SigningKey,
        domain: &str,
        selector: &str,
        q: KeyMethod,
        at: u64,
    ) -> Post {
        let view: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let signer = Signer {
            domain,
            selector,
            key,
            methods: &[q],
            lifetime: Duration::from_secs(3600),
        };
        let value = signer.sign(&view, self.body.as_bytes(), at).expect("sign");
        self.headers.push(("DKIM-Signature".into(), value));
        self
    }

    fn set(mut self, name: &str, value: &str) -> Post {
        for (n, v) in &mut self.headers {
            if n.eq_ignore_ascii_case(name) {
                *v = value.to_string();
            }
        }
        self
    }

    fn send(&self, port: u16) -> HttpResponse {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        http(
            port,
            "POST",
            "/.well-known/ischedule",
            &headers,
            self.body.as_bytes(),
        )
    }
}

fn invitation(organizer: &str, attendees: &[&str], uid: &str) -> String {
    let list: Vec<(&str, &str)> = attendees.iter().map(|a| (*a, "NEEDS-ACTION")).collect();
    itip("REQUEST", "VEVENT", organizer, &list, uid)
}

fn assert_refused(r: &HttpResponse, description: &str) {
    let text = r.text();
    assert_eq!(r.status, 403, "{text}");
    assert!(text.contains("<verification-failed/>"), "{text}");
    assert!(
        text.contains(description),
        "the description should say {description:?}: {text}"
    );
}

fn auth(user: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:x")))
}

/// Every iTIP object in `user`'s scheduling Inbox at Cyrus, as text.
fn inbox(cyrus: &Cyrus, user: &str) -> String {
    let auth = auth(user);
    let listing = http(
        cyrus.http_port,
        "PROPFIND",
        &format!("/dav/calendars/user/{user}/Inbox/"),
        &[("Authorization", &auth), ("Depth", "1")],
        b"",
    );
    listing
        .text()
        .split("<D:href>")
        .skip(2)
        .filter_map(|h| h.split('<').next())
        .map(|href| {
            http(
                cyrus.http_port,
                "GET",
                href,
                &[("Authorization", &auth)],
                b"",
            )
            .text()
        })
        .collect()
}

fn eventually(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    ready()
}

const CAROL: &str = "mailto:carol@partner.test";
const BOB: &str = "mailto:bob@cyrus.test";
const ALICE: &str = "mailto:alice@cyrus.test";

/// A bridge in front of Cyrus for cyrus.test that requires signatures
/// from everyone else; partner.test publishes key `s1` in DNS, a revoked
/// `old`, and key `web` at its own iSchedule host (another bridge).
struct World {
    dir: TempDir,
    cyrus: Cyrus,
    dns: Dns,
    bridge: Bridge,
    _partner: Bridge,
    dns_key: SigningKey,
    web_key: SigningKey,
}

impl World {
    fn start() -> World {
        let dir = TempDir::new().expect("temp dir");
        let cyrus = Cyrus::start("cyrus.test", &["bob", "alice"], None);
        let (dns_key, _) = key_file(dir.path(), "s1.pem");
        let (web_key, web_path) = key_file(dir.path(), "web.pem");
        let zone = Zone::new()
            .authoritative("partner.test")
            .authoritative("cyrus.test");
        let zone = publish(zone, "partner.test", "s1", &dns_key.public_key().record());
        let zone = publish(zone, "partner.test", "old", "v=DKIM1; k=rsa; p=");
        let dns = Dns::start(&zone);
        let partner_port = free_port();
        let partner = Bridge::start(
            partner_port,
            &format!(
                "[server]\nlisten = \"127.0.0.1:{partner_port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
                 [[dkim.keys]]\ndomain = \"partner.test\"\nselector = \"web\"\nprivate_key = \"{}\"\n",
                dns.port,
                web_path.display()
            ),
        );
        let port = free_port();
        let bridge = Bridge::start(
            port,
            &format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
                 [timeouts]\ndns_secs = 1\n[domains]\nlocal = [\"cyrus.test\"]\n\
                 [senders]\nallow = [\"10.99.0.0/16\"]\n[imip]\nmode = \"native-only\"\n\
                 [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n\
                 [[route]]\ndomain = \"partner.test\"\nto = \"http://127.0.0.1:{partner_port}/ischedule\"\n",
                dns.port, cyrus.http_port
            ),
        );
        World {
            dir,
            cyrus,
            dns,
            bridge,
            _partner: partner,
            dns_key,
            web_key,
        }
    }
}

#[test]
fn signed_requests_are_delivered_and_every_forgery_is_refused_for_its_own_reason() {
    let w = World::start();
    let port = w.bridge.port;
    let at = now();
    let to_bob = |uid: &str| Post::new(CAROL, &[BOB], invitation(CAROL, &[BOB], uid));

    // Valid: key from DNS (several TXT strings), and from the well-known URI.
    let r = to_bob("dkim-dns")
        .sign(&w.dns_key, "partner.test", "s1", KeyMethod::DnsTxt, at)
        .send(port);
    assert_eq!(
        statuses(&r),
        [(BOB.to_string(), "2.0;Success".to_string())],
        "{}",
        r.text()
    );
    let r = to_bob("dkim-web")
        .sign(
            &w.web_key,
            "partner.test",
            "web",
            KeyMethod::HttpWellKnown,
            at,
        )
        .send(port);
    assert_eq!(
        statuses(&r),
        [(BOB.to_string(), "2.0;Success".to_string())],
        "{}",
        r.text()
    );
    assert!(
        w.bridge
            .log()
            .contains("verified carol@partner.test (DKIM d=partner.test s=web"),
        "{}",
        w.bridge.log()
    );

    let signed =
        |uid: &str| to_bob(uid).sign(&w.dns_key, "partner.test", "s1", KeyMethod::DnsTxt, at);
    assert_refused(
        &to_bob("dkim-unsigned").send(port),
        "no DKIM-Signature header",
    );

    let mut tampered = signed("dkim-body");
    tampered.body = tampered
        .body
        .replace("Design meeting", "Design meeting moved");
    assert_refused(&tampered.send(port), "the body hash (bh=) does not match");

    let both = Post::new(
        CAROL,
        &[BOB],
        invitation(CAROL, &[BOB, ALICE], "dkim-header"),
    )
    .sign(&w.dns_key, "partner.test", "s1", KeyMethod::DnsTxt, at)
    .set("Recipient", &format!("{BOB}, {ALICE}"));
    assert_refused(&both.send(port), "the signature (b=) does not verify");

    let expired = to_bob("dkim-expired").sign(
        &w.dns_key,
        "partner.test",
        "s1",
        KeyMethod::DnsTxt,
        at - 7200,
    );
    assert_refused(&expired.send(port), "the DKIM-Signature expired");

    let future = to_bob("dkim-future").sign(
        &w.dns_key,
        "partner.test",
        "s1",
        KeyMethod::DnsTxt,
        at + 1000,
    );
    assert_refused(&future.send(port), "s in the future");

    let other = to_bob("dkim-domain").sign(&w.dns_key, "other.test", "s1", KeyMethod::DnsTxt, at);
    assert_refused(
        &other.send(port),
        "d=other.test is not the Originator's domain (partner.test)",
    );

    let twice = signed("dkim-twice").sign(&w.dns_key, "partner.test", "s1", KeyMethod::DnsTxt, at);
    assert_refused(&twice.send(port), "2 DKIM-Signature headers");

    let unknown =
        to_bob("dkim-unknown").sign(&w.dns_key, "partner.test", "nosuch", KeyMethod::DnsTxt, at);
    assert_refused(
        &unknown.send(port),
        "no public key for s=nosuch d=partner.test: dns/txt: nothing at TXT nosuch._domainkey.partner.test",
    );

    let revoked =
        to_bob("dkim-revoked").sign(&w.dns_key, "partner.test", "old", KeyMethod::DnsTxt, at);
    assert_refused(&revoked.send(port), "is revoked (empty p=)");

    // A signature does not lift the no-open-relay rules.
    let relay = Post::new(
        CAROL,
        &["mailto:dave@partner.test"],
        invitation(CAROL, &["mailto:dave@partner.test"], "dkim-relay"),
    )
    .sign(&w.dns_key, "partner.test", "s1", KeyMethod::DnsTxt, at)
    .send(port);
    assert_eq!(relay.status, 403, "{}", relay.text());
    assert!(
        relay.text().contains("<originator-denied/>"),
        "{}",
        relay.text()
    );

    // Cyrus got the two valid invitations and nothing else.
    let delivered = inbox(&w.cyrus, "bob");
    assert!(
        delivered.contains("UID:dkim-dns") && delivered.contains("UID:dkim-web"),
        "{delivered}"
    );
    for refused in [
        "unsigned", "body", "header", "expired", "future", "domain", "twice", "unknown", "revoked",
        "relay",
    ] {
        assert!(
            !delivered.contains(&format!("UID:dkim-{refused}")),
            "dkim-{refused} reached Cyrus"
        );
    }
    assert!(!inbox(&w.cyrus, "alice").contains("UID:dkim-header"));

    // DNS down: the key cannot be fetched, nothing is decided: 503, retry.
    let World {
        dns,
        bridge,
        dns_key,
        dir,
        ..
    } = w;
    drop(dns);
    let r = to_bob("dkim-dns-down")
        .sign(&dns_key, "partner.test", "fresh", KeyMethod::DnsTxt, now())
        .send(bridge.port);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("60"));
    assert!(r.text().contains("try again later"), "{}", r.text());
    drop(dir);
}

/// The organizer's own copy of the event, stored as a calendar client
/// does, so a REPLY has something to update.
fn store(cyrus: &Cyrus, user: &str, event: &str, uid: &str) {
    let path = format!("/dav/calendars/user/{user}/Default/{uid}.ics");
    let r = http(
        cyrus.http_port,
        "PUT",
        &path,
        &[
            ("Authorization", &auth(user)),
            ("Content-Type", "text/calendar"),
        ],
        event.replace("METHOD:REQUEST\r\n", "").as_bytes(),
    );
    assert!(
        matches!(r.status, 201 | 204),
        "PUT {path}: {} {}",
        r.status,
        r.text()
    );
}

/// The stored copy of event `uid`, unfolded.
fn stored(cyrus: &Cyrus, user: &str, uid: &str) -> String {
    let path = format!("/dav/calendars/user/{user}/Default/{uid}.ics");
    http(
        cyrus.http_port,
        "GET",
        &path,
        &[("Authorization", &auth(user))],
        b"",
    )
    .text()
    .replace("\r\n ", "")
}

/// Issue 9, item 3, as an attacker would try it: a verified partner
/// answers a local organizer's invitation for itself and, in the same
/// REPLY, for a colleague who has not answered. Refused before anything
/// reaches Cyrus; the organizer's copy shows only what carol said herself.
#[test]
fn a_verified_reply_answers_only_for_its_own_attendee() {
    let w = World::start();
    let port = w.bridge.port;
    let dave = "mailto:dave@partner.test";
    let uid = "dkim-reply-for-two";
    store(&w.cyrus, "bob", &invitation(BOB, &[CAROL, dave], uid), uid);
    let signed = |reply: String| {
        Post::new(CAROL, &[BOB], reply)
            .sign(&w.dns_key, "partner.test", "s1", KeyMethod::DnsTxt, now())
            .send(port)
    };
    let partstat = |copy: &str, who: &str| {
        copy.lines()
            .find(|l| l.starts_with("ATTENDEE") && l.ends_with(who))
            .and_then(|l| l.split("PARTSTAT=").nth(1))
            .map(|p| p.split([';', ':']).next().unwrap_or_default().to_string())
    };

    let forged = itip(
        "REPLY",
        "VEVENT",
        BOB,
        &[(CAROL, "ACCEPTED"), (dave, "DECLINED")],
        uid,
    );
    let r = signed(forged);
    let text = r.text();
    assert_eq!(r.status, 400, "{text}");
    assert!(text.contains("<invalid-scheduling-message/>"), "{text}");
    assert!(
        text.contains("must name exactly one ATTENDEE, the Originator answering for itself"),
        "{text}"
    );

    // Carol's own answer goes through and is applied, so the copy below
    // would show the forged one had it been delivered.
    let r = signed(itip("REPLY", "VEVENT", BOB, &[(CAROL, "ACCEPTED")], uid));
    assert_eq!(
        statuses(&r),
        [(BOB.to_string(), "2.0;Success".to_string())],
        "{}",
        r.text()
    );
    assert!(
        eventually(10, || partstat(&stored(&w.cyrus, "bob", uid), CAROL)
            .as_deref()
            == Some("ACCEPTED")),
        "{}",
        stored(&w.cyrus, "bob", uid)
    );
    let copy = stored(&w.cyrus, "bob", uid);
    assert_eq!(
        partstat(&copy, dave).as_deref(),
        Some("NEEDS-ACTION"),
        "{copy}"
    );
}

#[test]
fn optional_policy_takes_unsigned_invitations_but_not_cancellations() {
    let dns = Dns::start(&Zone::new().authoritative("partner.test"));
    let cyrus = Cyrus::start("cyrus.test", &["bob"], None);
    let port = free_port();
    let _bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"cyrus.test\"]\n[senders]\nallow = [\"10.99.0.0/16\"]\n\
             [dkim]\nverify = \"optional\"\n\
             [[route]]\ndomain = \"cyrus.test\"\nto = \"http://127.0.0.1:{}/ischedule\"\n",
            dns.port, cyrus.http_port
        ),
    );
    let body = invitation(CAROL, &[BOB], "dkim-optional");
    let r = schedule_post(port, CAROL, &[BOB], &body, Some("dkim-optional"));
    assert_eq!(
        statuses(&r),
        [(BOB.to_string(), "2.0;Success".to_string())],
        "{}",
        r.text()
    );
    let cancel = body.replace("METHOD:REQUEST", "METHOD:CANCEL");
    let r = schedule_post(port, CAROL, &[BOB], &cancel, Some("dkim-optional-cancel"));
    assert_refused(&r, "cancellations need a DKIM signature of partner.test");
}

/// One domain's Cyrus with its bridge in front.
struct Side {
    domain: &'static str,
    user: &'static str,
    cyrus: Cyrus,
    bridge: Bridge,
}

impl Side {
    fn address(&self) -> String {
        format!("mailto:{}@{}", self.user, self.domain)
    }

    fn store(&self, event: &str, uid: &str) {
        store(&self.cyrus, self.user, event, uid);
    }

    fn stored(&self, uid: &str) -> String {
        stored(&self.cyrus, self.user, uid)
    }

    /// A POST from this domain's calendar server (the shared secret makes it local).
    fn post(&self, originator: &str, recipient: &str, body: &str) -> HttpResponse {
        let mut post = Post::new(originator, &[recipient], body.to_string());
        post.headers.push(("X-Bridge-Secret".into(), SECRET.into()));
        post.send(self.bridge.port)
    }
}

#[test]
fn two_bridges_sign_for_their_own_domain_and_require_the_others_signature() {
    let dir = TempDir::new().expect("temp dir");
    let (_, one_path) = key_file(dir.path(), "one.pem");
    let (two_key, two_path) = key_file(dir.path(), "two.pem");
    let zone = Zone::new()
        .authoritative("one.test")
        .authoritative("two.test");
    // two.test publishes in DNS; one.test only at its bridge's well-known URI.
    let dns = Dns::start(&publish(
        zone,
        "two.test",
        "b2",
        &two_key.public_key().record(),
    ));
    let cyrus_one = Cyrus::start("one.test", &["bernard"], None);
    let cyrus_two = Cyrus::start("two.test", &["cyrus"], None);
    let (port_one, port_two) = (free_port(), free_port());
    let config = |port: u16, local: &str, cyrus: u16, other: &str, other_port: u16, key: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
             [domains]\nlocal = [\"{local}\"]\n\
             [senders]\nallow = [\"10.99.0.0/16\"]\nshared_secret = \"{SECRET}\"\n\
             [imip]\nmode = \"native-only\"\n[dkim]\nverify = \"require\"\n{key}\
             [[route]]\ndomain = \"{local}\"\nto = \"http://127.0.0.1:{cyrus}/ischedule\"\n\
             [[route]]\ndomain = \"{other}\"\nto = \"http://127.0.0.1:{other_port}/ischedule\"\n",
            dns.port
        )
    };
    let one = Side {
        domain: "one.test",
        user: "bernard",
        bridge: Bridge::start(
            port_one,
            &config(
                port_one,
                "one.test",
                cyrus_one.http_port,
                "two.test",
                port_two,
                &format!(
                    "[[dkim.keys]]\ndomain = \"one.test\"\nselector = \"b1\"\nprivate_key = \"{}\"\nmethods = [\"http/well-known\"]\n",
                    one_path.display()
                ),
            ),
        ),
        cyrus: cyrus_one,
    };
    let two = Side {
        domain: "two.test",
        user: "cyrus",
        bridge: Bridge::start(
            port_two,
            &config(
                port_two,
                "two.test",
                cyrus_two.http_port,
                "one.test",
                port_one,
                &format!(
                    "[[dkim.keys]]\ndomain = \"two.test\"\nselector = \"b2\"\nprivate_key = \"{}\"\nmethods = [\"dns/txt\"]\n",
                    two_path.display()
                ),
            ),
        ),
        cyrus: cyrus_two,
    };

    for (organizer, attendee) in [(&one, &two), (&two, &one)] {
        let uid = format!("dkim-two-bridges-{}", organizer.domain);
        let (from, to) = (organizer.address(), attendee.address());
        let event = invitation(&from, &[&to], &uid);
        organizer.store(&event, &uid);
        let r = organizer.post(&from, &to, &event);
        assert_eq!(
            statuses(&r),
            [(to.clone(), "2.0;Success".to_string())],
            "{}\n{}",
            r.text(),
            attendee.bridge.log()
        );
        assert!(
            eventually(10, || inbox(&attendee.cyrus, attendee.user)
                .contains(&format!("UID:{uid}"))),
            "the invitation reached {to}'s inbox"
        );
        let reply = itip("REPLY", "VEVENT", &from, &[(&to, "ACCEPTED")], &uid);
        let r = attendee.post(&to, &from, &reply);
        assert_eq!(
            statuses(&r),
            [(from.clone(), "2.0;Success".to_string())],
            "{}\n{}",
            r.text(),
            organizer.bridge.log()
        );
        let accepted = |copy: String| {
            copy.lines()
                .any(|l| l.starts_with("ATTENDEE;PARTSTAT=ACCEPTED") && l.ends_with(&to))
        };
        assert!(
            eventually(10, || accepted(organizer.stored(&uid))),
            "the REPLY updated {from}'s copy:\n{}",
            organizer.stored(&uid)
        );
    }
    // Each side saw the other's requests as DKIM-verified.
    assert!(
        two.bridge.log().contains(
            "verified bernard@one.test (DKIM d=one.test s=b1, key from http://127.0.0.1:"
        ),
        "{}",
        two.bridge.log()
    );
    assert!(
        one.bridge.log().contains(
            "verified cyrus@two.test (DKIM d=two.test s=b2, key from TXT b2._domainkey.two.test"
        ),
        "{}",
        one.bridge.log()
    );
}

#[test]
fn mail_is_signed_for_the_from_domain_and_dkimpy_verifies_it() {
    let dir = TempDir::new().expect("temp dir");
    let (key, path) = key_file(dir.path(), "mail.pem");
    let (_, stale_path) = key_file(dir.path(), "stale.pem");
    let record = key.public_key().record();
    let zone = Zone::new()
        .authoritative("bridge.test")
        .authoritative("stale.test")
        .authoritative("mail.test");
    let zone = publish(zone, "bridge.test", "mail", &record);
    // stale.test publishes some other key than the one configured.
    let other = SigningKey::generate(2048)
        .expect("key")
        .public_key()
        .record();
    let dns = Dns::start(&publish(zone, "stale.test", "s", &other));
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\n\
         [smtp]\nfrom = \"calendar-bridge@bridge.test\"\n\
         [imip]\nmode = \"imip-only\"\n\
         [[dkim.keys]]\ndomain = \"bridge.test\"\nselector = \"mail\"\nprivate_key = \"{}\"\n\
         [[dkim.keys]]\ndomain = \"stale.test\"\nselector = \"s\"\nprivate_key = \"{}\"\n",
        dns.port,
        path.display(),
        stale_path.display()
    );
    let bridge = Bridge::start(port, &config);
    let organizer = "mailto:bernard@example.com";
    let r = schedule_post(
        port,
        organizer,
        &["mailto:carol@mail.test"],
        &invitation(organizer, &["mailto:carol@mail.test"], "dkim-mail"),
        Some("dkim-mail"),
    );
    // No relay: the outbox holds the message byte for byte as it would go
    // out (a relay's Maildir would store it re-serialised).
    assert_eq!(statuses(&r)[0].1, "1.0;Pending", "{}", r.text());
    let mails: Vec<PathBuf> = std::fs::read_dir(bridge.dir().join("outbox"))
        .expect("outbox")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    assert_eq!(mails.len(), 1);

    // dkimpy, with its DNS answered by the record dnsmasq publishes.
    const VERIFY: &str = "import dkim, email, email.utils, sys\n\
        raw = open(sys.argv[1], 'rb').read()\n\
        record = sys.argv[2].encode()\n\
        def dns(name, timeout=5):\n\
        \x20   assert name == b'mail._domainkey.bridge.test.', name\n\
        \x20   return record\n\
        ok = dkim.verify(raw, dnsfunc=dns)\n\
        m = email.message_from_bytes(raw)\n\
        tags = dict(t.strip().split('=', 1) for t in ''.join(m['DKIM-Signature'].split()).split(';') if '=' in t)\n\
        sender = email.utils.parseaddr(m['From'])[1]\n\
        print(ok, tags['d'], tags['c'], sender.rsplit('@', 1)[1])\n";
    let out = Command::new("python3")
        .args(["-c", VERIFY])
        .arg(&mails[0])
        .arg(&record)
        .output()
        .expect("python3");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dkimpy (scripts/test installs it): {said}"
    );
    assert_eq!(
        said.trim(),
        "True bridge.test relaxed/relaxed bridge.test",
        "verified and DMARC-aligned"
    );

    // check: the key DNS publishes matches; the stale one does not.
    let toml = bridge.dir().join("bridge.toml");
    let check = run_cli(&["check", "--config", toml.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        text.contains("DNS TXT mail._domainkey.bridge.test: publishes this key"),
        "{text}"
    );
    assert!(
        text.contains("DNS TXT s._domainkey.stale.test: publishes a DIFFERENT key"),
        "{text}"
    );

    // The bridge serves its public key for http/well-known verifiers.
    let served = http(
        port,
        "GET",
        "/.well-known/domainkey/bridge.test/mail",
        &[],
        b"",
    );
    assert_eq!(served.status, 200);
    assert_eq!(served.text().trim(), record);
    assert_eq!(
        http(
            port,
            "GET",
            "/.well-known/domainkey/bridge.test/other",
            &[],
            b""
        )
        .status,
        404
    );
}
