//! Sender authentication of inbound iMIP mail (DKIM, SPF, DMARC via mail-auth)
//! against a real DNS server: dnsmasq, authoritative for `test`, so that every
//! name not listed below gets NXDOMAIN at once.
//!
//! Domains:
//! - `org.test`: RSA DKIM key `sel`, DMARC p=reject, SPF `ip4:127.0.0.1 -all`
//! - `bank.test`: DMARC p=reject, SPF `ip4:192.0.2.1 -all` (never 127.0.0.1)
//! - `plain.test`: Ed25519 DKIM key `ed`, no DMARC record, no SPF
//! - `relaxed.test`: RSA DKIM key `sel`, DMARC p=none

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ischedule_bridge::imip::authenticate::{AuthError, Authenticator, Verdict};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::SpfResult;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{free_port, Dns, Zone};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const MTA: &str = "bridge.example.com";

/// Test keys, made once per test binary with the `openssl` CLI.
struct Keys {
    /// RSA 2048, PKCS#8 PEM.
    rsa_pem: String,
    /// base64 SubjectPublicKeyInfo, for `k=rsa; p=` (about 400 characters).
    rsa_public: String,
    /// Ed25519, PKCS#8 DER.
    ed_der: Vec<u8>,
    /// base64 of the raw 32-byte public key, for `k=ed25519; p=` (RFC 8463).
    ed_public: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let (rsa, ed) = (path("rsa.pem"), path("ed.der"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &rsa,
        ]);
        let rsa_spki = openssl(&["pkey", "-in", &rsa, "-pubout", "-outform", "DER"]);
        openssl(&[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-outform",
            "DER",
            "-out",
            &ed,
        ]);
        let ed_spki = openssl(&[
            "pkey", "-inform", "DER", "-in", &ed, "-pubout", "-outform", "DER",
        ]);
        assert_eq!(ed_spki.len(), 44, "Ed25519 SubjectPublicKeyInfo");
        Keys {
            rsa_pem: std::fs::read_to_string(Path::new(&rsa)).expect("read rsa.pem"),
            rsa_public: base64(&rsa_spki),
            ed_der: std::fs::read(Path::new(&ed)).expect("read ed.der"),
            ed_public: base64(&ed_spki[12..]),
        }
    })
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A TXT record of one or more character-strings: dnsmasq (and DNS) limit each
/// string to 255 bytes, and DKIM verifiers concatenate them (RFC 6376 3.6.2.2).
fn txt(zone: Zone, name: &str, text: &str) -> Zone {
    let parts: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", std::str::from_utf8(c).expect("ASCII record")))
        .collect();
    zone.raw_line(&format!("txt-record={name},{}", parts.join(",")))
}

fn zone() -> Zone {
    let k = keys();
    let rsa_key = format!("v=DKIM1; k=rsa; p={}", k.rsa_public);
    let zone = Zone::new().authoritative("test");
    let zone = txt(zone, "sel._domainkey.org.test", &rsa_key);
    let zone = txt(zone, "_dmarc.org.test", "v=DMARC1; p=reject");
    let zone = txt(zone, "org.test", "v=spf1 ip4:127.0.0.1 -all");
    let zone = txt(zone, "_dmarc.bank.test", "v=DMARC1; p=reject");
    let zone = txt(zone, "bank.test", "v=spf1 ip4:192.0.2.1 -all");
    let zone = txt(
        zone,
        "ed._domainkey.plain.test",
        &format!("v=DKIM1; k=ed25519; p={}", k.ed_public),
    );
    let zone = txt(zone, "sel._domainkey.relaxed.test", &rsa_key);
    txt(zone, "_dmarc.relaxed.test", "v=DMARC1; p=none")
}

struct Fixture {
    dns: Dns,
    auth: Authenticator,
}

fn fixture() -> Fixture {
    let dns = Dns::start(&zone());
    let ns = SocketAddr::from((Ipv4Addr::LOCALHOST, dns.port));
    let auth = Authenticator::new(&[ns], Duration::from_secs(2)).expect("authenticator");
    Fixture { dns, auth }
}

impl Fixture {
    async fn verify(&self, message: &[u8], ip: IpAddr, helo: &str, mail_from: &str) -> Verdict {
        let started = Instant::now();
        let verdict = self
            .auth
            .verify(message, ip, helo, mail_from, MTA)
            .await
            .unwrap_or_else(|e| panic!("verify: {e}\n--- dnsmasq:\n{}", self.dns.log()));
        // Every answer is local: nothing may wait for a timeout.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "verify took {:?}\n--- dnsmasq:\n{}",
            started.elapsed(),
            self.dns.log()
        );
        verdict
    }
}

fn message(from: &str, body: &str) -> String {
    format!(
        "From: Alice Example <{from}>\r\n\
         To: bob@example.com\r\n\
         Subject: Invitation: Design meeting\r\n\
         Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n\
         Message-ID: <m1@{}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/calendar; method=REQUEST; charset=UTF-8\r\n\
         \r\n\
         {body}",
        from.rsplit_once('@').map_or("x", |(_, d)| d)
    )
}

const BODY: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n\
                    BEGIN:VEVENT\r\nUID:auth-1\r\nSUMMARY:Design meeting\r\n\
                    END:VEVENT\r\nEND:VCALENDAR\r\n";

const SIGNED: [&str; 6] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Type",
];

fn sign_rsa(message: &str, domain: &str) -> String {
    let der = PrivatePkcs8KeyDer::from_pem_slice(keys().rsa_pem.as_bytes()).expect("PKCS#8 PEM");
    let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).expect("RSA key");
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector("sel")
        .headers(SIGNED)
        .sign(message.as_bytes())
        .expect("sign");
    format!("{}{message}", signature.to_header())
}

fn sign_ed25519(message: &str, domain: &str) -> String {
    // openssl writes PKCS#8 v1 (no public key inside): ring wants "maybe unchecked".
    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&keys().ed_der).expect("Ed25519 key");
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector("ed")
        .headers(SIGNED)
        .sign(message.as_bytes())
        .expect("sign");
    format!("{}{message}", signature.to_header())
}

#[tokio::test]
async fn the_long_dkim_key_is_served_as_several_strings() {
    let f = fixture();
    // TXT is 16; the answer must hold the whole key, split into strings of <= 255.
    let answer = f.dns.query("sel._domainkey.org.test", 16).expect("query");
    assert_eq!(answer[3] & 0x0f, 0, "rcode NOERROR");
    let tail = &keys().rsa_public[keys().rsa_public.len() - 40..];
    assert!(
        answer.windows(tail.len()).any(|w| w == tail.as_bytes()),
        "key tail missing from the answer"
    );
}

#[tokio::test]
async fn signed_from_an_spf_permitted_host_passes_everything() {
    let f = fixture();
    let signed = sign_rsa(&message("alice@org.test", BODY), "org.test");
    let v = f
        .verify(
            signed.as_bytes(),
            LOCALHOST,
            "mx.org.test",
            "alice@org.test",
        )
        .await;
    assert_eq!(
        v,
        Verdict {
            from_domain: Some("org.test".into()),
            dkim: vec![("org.test".into(), true)],
            spf: Some(("org.test".into(), SpfResult::Pass)),
            dmarc_pass: true,
            reason:
                "DMARC pass for org.test (aligned DKIM d=org.test, aligned SPF pass for org.test)"
                    .into(),
        }
    );
    assert!(v.authenticated());

    // The same message as handed over with bare LF (ingest) still verifies.
    let lf = signed.replace("\r\n", "\n");
    let v = f
        .verify(lf.as_bytes(), LOCALHOST, "mx.org.test", "<alice@org.test>")
        .await;
    assert_eq!(v.dkim, vec![("org.test".into(), true)], "{}", v.reason);
}

#[tokio::test]
async fn altered_body_fails_dkim_but_aligned_spf_still_passes_dmarc() {
    let f = fixture();
    let signed = sign_rsa(&message("alice@org.test", BODY), "org.test");
    let altered = signed.replace("SUMMARY:Design meeting", "SUMMARY:Pay this invoice");
    let v = f
        .verify(
            altered.as_bytes(),
            LOCALHOST,
            "mx.org.test",
            "alice@org.test",
        )
        .await;
    assert_eq!(v.dkim, vec![("org.test".into(), false)]);
    assert_eq!(v.spf, Some(("org.test".into(), SpfResult::Pass)));
    assert!(v.authenticated(), "{}", v.reason);
    assert_eq!(
        v.reason,
        "DMARC pass for org.test (aligned SPF pass for org.test); \
         also dkim=fail d=org.test (body hash mismatch)"
    );
}

#[tokio::test]
async fn unsigned_mail_from_a_host_spf_refuses_is_not_authenticated() {
    let f = fixture();
    let plain = message("alice@org.test", BODY);
    let v = f
        .verify(
            plain.as_bytes(),
            OTHER_IP,
            "mx.elsewhere.test",
            "alice@org.test",
        )
        .await;
    assert!(!v.authenticated());
    assert_eq!(v.dkim, vec![]);
    assert_eq!(v.spf, Some(("org.test".into(), SpfResult::Fail)));
    assert_eq!(
        v.reason,
        "no aligned DKIM or SPF pass for org.test: dkim=none (no signature), \
         spf=fail (127.0.0.2 not permitted by org.test) (DMARC policy p=reject)"
    );

    // From the right host, but MAIL FROM a domain without SPF: nothing aligns.
    let v = f
        .verify(
            plain.as_bytes(),
            LOCALHOST,
            "mx.org.test",
            "bounce@other.test",
        )
        .await;
    assert!(!v.authenticated());
    assert_eq!(v.spf, Some(("other.test".into(), SpfResult::None)));
    assert_eq!(
        v.reason,
        "no aligned DKIM or SPF pass for org.test: dkim=none (no signature), \
         spf=none (no SPF record for other.test) (DMARC policy p=reject)"
    );
}

#[tokio::test]
async fn forged_from_signed_by_another_domain_is_not_aligned() {
    let f = fixture();
    let forged = sign_rsa(&message("ceo@bank.test", BODY), "org.test");
    let v = f
        .verify(
            forged.as_bytes(),
            LOCALHOST,
            "mx.org.test",
            "alice@org.test",
        )
        .await;
    assert_eq!(v.from_domain.as_deref(), Some("bank.test"));
    assert_eq!(v.dkim, vec![("org.test".into(), true)]);
    assert_eq!(v.spf, Some(("org.test".into(), SpfResult::Pass)));
    assert!(!v.authenticated());
    assert_eq!(
        v.reason,
        "no aligned DKIM or SPF pass for bank.test: dkim=pass d=org.test \
         (not aligned with bank.test), spf=pass (org.test, not aligned with bank.test) \
         (DMARC policy p=reject)"
    );
}

#[tokio::test]
async fn no_dmarc_record_but_aligned_dkim_pass_is_authenticated() {
    let f = fixture();
    let signed = sign_ed25519(&message("carol@plain.test", BODY), "plain.test");
    let v = f
        .verify(
            signed.as_bytes(),
            OTHER_IP,
            "mx.plain.test",
            "carol@plain.test",
        )
        .await;
    assert_eq!(v.dkim, vec![("plain.test".into(), true)]);
    assert_eq!(v.spf, Some(("plain.test".into(), SpfResult::None)));
    assert!(v.authenticated(), "{}", v.reason);
    assert_eq!(
        v.reason,
        "no DMARC record for plain.test; authenticated by aligned DKIM d=plain.test \
         (treated as DMARC pass with policy none)"
    );

    // Without the signature nothing vouches for plain.test.
    let v = f
        .verify(
            message("carol@plain.test", BODY).as_bytes(),
            OTHER_IP,
            "mx.plain.test",
            "carol@plain.test",
        )
        .await;
    assert!(!v.authenticated());
    assert!(
        v.reason
            .starts_with("no DMARC record for plain.test and no DKIM pass for d=plain.test"),
        "{}",
        v.reason
    );
}

#[tokio::test]
async fn policy_none_with_aligned_dkim_pass_is_authenticated_and_says_so() {
    let f = fixture();
    let signed = sign_rsa(&message("dave@relaxed.test", BODY), "relaxed.test");
    let v = f
        .verify(
            signed.as_bytes(),
            OTHER_IP,
            "mx.relaxed.test",
            "dave@relaxed.test",
        )
        .await;
    assert!(v.authenticated(), "{}", v.reason);
    assert_eq!(
        v.reason,
        "DMARC pass for relaxed.test (aligned DKIM d=relaxed.test); \
         policy p=none, accepted because an aligned check passed; \
         also spf=none (no SPF record for relaxed.test)"
    );
}

#[tokio::test]
async fn null_sender_is_checked_by_its_helo_domain() {
    let f = fixture();
    let plain = message("alice@org.test", BODY);
    let v = f
        .verify(plain.as_bytes(), LOCALHOST, "org.test", "<>")
        .await;
    assert_eq!(v.spf, Some(("org.test".into(), SpfResult::Pass)));
    assert!(v.authenticated(), "{}", v.reason);
    assert_eq!(
        v.reason,
        "DMARC pass for org.test (aligned SPF pass for org.test)"
    );

    // An address literal as HELO is no SPF identity.
    let v = f
        .verify(plain.as_bytes(), LOCALHOST, "[127.0.0.1]", "")
        .await;
    assert!(!v.authenticated());
    assert_eq!(v.spf, Some(("[127.0.0.1]".into(), SpfResult::None)));
    assert!(
        v.reason.contains("spf=none ([127.0.0.1] is not a domain)"),
        "{}",
        v.reason
    );
}

#[tokio::test]
async fn two_from_fields_are_refused() {
    let f = fixture();
    let two = format!("From: ceo@bank.test\r\n{}", message("alice@org.test", BODY));
    let signed = sign_rsa(&two, "org.test");
    let v = f
        .verify(
            signed.as_bytes(),
            LOCALHOST,
            "mx.org.test",
            "alice@org.test",
        )
        .await;
    assert!(!v.authenticated());
    assert_eq!(
        v.reason,
        "message has 2 From header fields (RFC 5322 allows one)"
    );
}

#[tokio::test]
async fn dns_failure_is_temporary_not_a_refusal() {
    // Nobody answers on this port: the outcome is unknown, not negative.
    let ns = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let auth = Authenticator::new(&[ns], Duration::from_millis(300)).expect("authenticator");
    let plain = message("alice@org.test", BODY);
    let started = Instant::now();
    let err = auth
        .verify(
            plain.as_bytes(),
            LOCALHOST,
            "mx.org.test",
            "alice@org.test",
            MTA,
        )
        .await
        .expect_err("no DNS, no verdict");
    assert!(matches!(err, AuthError::Temporary(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("DMARC check for org.test hit a DNS error"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_message_without_header_fields_is_an_error() {
    let f = fixture();
    let err = f
        .auth
        .verify(b"", LOCALHOST, "mx.org.test", "alice@org.test", MTA)
        .await
        .expect_err("empty message");
    assert!(matches!(err, AuthError::Unparseable), "{err:?}");
}
