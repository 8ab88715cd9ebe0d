//! Fixtures from Apple CalendarServer's DKIM tests
//! (txdav/caldav/datastore/scheduling/ischedule/test/test_dkim.py in
//! apple/ccs-calendarserver): its test key pair, its request headers and
//! the canonical forms it expects. The signatures below were computed
//! over CalendarServer's expected canonical text with OpenSSL
//! (`openssl dgst -sha256 -sign`), an implementation independent of the
//! bridge, at the fixed times t=1700000000 and x=1700003600.

use std::time::Duration;

use async_trait::async_trait;

use super::canon::{self, Header};
use super::*;

/// CalendarServer's test private key (PKCS#1 PEM).
const CS_PRIVATE_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEAw7bJxD1k5VSA5AqdfmJ7vj99oKQ4qYtSeJ5HiK6W40dzC++k
LweUWLzeUErgXwcJlyOC6rqVVPBfSJq4l7yPdVqpWUo6s2jnUsSWOfhpre22yc4B
K0QY2Euc3R+gT59eM0mtJPtWaQw5BmQ2GrV6f0OUiKi17jEPasKcxf1qZrWU0+Ik
D2DhUCuRrNb/baUkuIkxoit6M7k7s5X9swT1hE/Eso0gS79FSti1fkDeoPZ296Gu
5uYWdpaLl03Nr0w65Gbw+2v79AcwOyvbZD6y9xYGLWubic0dUeWuhUipZdmQf8Bd
t7cZVgjQX/giQQqqLDFhfNFwapUZDhS7TCtujQIDAQABAoIBADfFuzHFHR+NOT3D
GKaPghvxE+fXZJ5MKbBdypzUxAL4tXxNSkhsrIWtLN1MuSvbYYxEfmZNzYhrB3w1
Oy1ieq9CqsfbM2c1GdaoVvcmJ1d9Sn2vyv19ZmcdBRKulIycKcgL0t+bEEDXTtjX
beOmm8XwiD95dH7wVChkVTDGyq+BxtSY6wav9y15zWnBH7+BAeq3OnKaNIQB0iTI
UA41jWocKYI18/6D5gQTDSoYvKB7saFVGw9IgmmHA/3rYztcHCxUoE15x7wWuwtF
vzQanEt/QwEEFMibNTjvfIUPoeIeQH7MzcD56AL9u/cs8LNeSbappWE7BneQ0ll3
CfTsAQECgYEA/eoDkpPMWxuoSrZ1oXLxeImEAB2EHNs4UV9dmcUkhNeYZP0rv7pL
4jpkNHTRvFeeovy5khXhykb9BUYDuZy6rcELlFxpCKYRw3d+PPWM+wfqmJp+fIN7
Z4F1Kpznt0F2e+9LXF1Qi5bM2dHy1maxEjaBUIOIoczbjJJDmNN8zR0CgYEAxVJg
2VCpjaRoJtaZYeserkVgB8SFffBnm/8XQv8uTbKrz104t9nFyezbINmKrQs3cxT3
1+PiVbLJpPRcik129x4xIlz3zapsMqwXL97Lz92vXm/nELRnV8d+F9SxVzlijRDL
rvl3X3Vayq2zKb6euBOwOu8UnQO3xJkTtLPtHDECgYAptxuVJkEJqtaQR7+1oZu4
UOdl2XOOBhoPjFplW/Uu+fiohst8OVAkP7GcyKB4j/CZGGoobP3mbJk/F4yfHvew
eim72x7Kc/YxJd2QiEr8JwXMwn0LWdKZY7RrJtIO0mtz2xGHgDEubb0EADEkNkTb
GCdQoft9kZl0U8dVQVGcpQKBgHsvjIre0ps8slDc1HDO6h597Q+sXnJbLTO0Mv9+
c5fKHXydhBUy/UmsdrixVuPlBr7vrjK3b8t0jHJQo50r80MfNClxxLo+1MFlsiwO
eUrR6POaBLTnC0U/o7aY8AW2K5JJk/8uepm7l+zEN/+to0Tj9bc1HrdPZOB1eFnt
oe9hAoGAEwwDhNrmSlZjmZMT8WehCdyS7zQgI8OCLAlu9KTiwFzoSDcnhVbS4nd4
iblllHCLZ2Q/rHSH3cQor94kxePm+b3KH9ZwAgInMModuSPcScrR5/vsORZCtJEO
CAXnxZHhrExMGIIa7KV33W5v7Hstl7SnPWKFgCvlBH2QoMTjoUE=
-----END RSA PRIVATE KEY-----
";

/// CalendarServer's test public key, as its `p=` value.
const CS_PUBLIC_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAw7bJxD1k5VSA5AqdfmJ7\
vj99oKQ4qYtSeJ5HiK6W40dzC++kLweUWLzeUErgXwcJlyOC6rqVVPBfSJq4l7yP\
dVqpWUo6s2jnUsSWOfhpre22yc4BK0QY2Euc3R+gT59eM0mtJPtWaQw5BmQ2GrV6\
f0OUiKi17jEPasKcxf1qZrWU0+IkD2DhUCuRrNb/baUkuIkxoit6M7k7s5X9swT1\
hE/Eso0gS79FSti1fkDeoPZ296Gu5uYWdpaLl03Nr0w65Gbw+2v79AcwOyvbZD6y\
9xYGLWubic0dUeWuhUipZdmQf8Bdt7cZVgjQX/giQQqqLDFhfNFwapUZDhS7TCtu\
jQIDAQAB";

const T: u64 = 1_700_000_000;
const MESSAGE_ID: &str = "8DB29F1B-3E35-4B8C-A8E2-1F2D04D4A6C1";
const CONTENT_TYPE: &str = "text/calendar; component=VEVENT; charset=utf-8";

/// CalendarServer's `test_signatureHeaders` request ("Hello World!") with
/// a fixed message id and times: the text it expects to be signed.
fn hello_canonical() -> String {
    format!(
        "originator:mailto:user01@example.com\r\nrecipient:mailto:user02@example.com\r\n\
         content-type:{CONTENT_TYPE}\r\nischedule-version:1.0\r\nischedule-message-id:{MESSAGE_ID}\r\n\
         dkim-signature:v=1; d=example.com; s=dkim; t={T}; x={}; a=rsa-sha256; \
         q=private-exchange:http/well-known:dns/txt; c=ischedule-relaxed/simple; \
         h=Originator:Recipient:Content-Type:iSchedule-Version:iSchedule-Message-ID; \
         bh=z85OKVJZHnmg3qFlSpLbpPCZ00irfBdrzQUtabiSl3A=; b=",
        T + 3600
    )
}

/// OpenSSL's signature of [`hello_canonical`] with CalendarServer's key.
const HELLO_B: &str = "KFEET3VEWcmX3OWp8kPSzUS60C0nwUWra8iVr5Uq8yHbs1Z84/TMsTlgFFSswwP86MjX0BXarrSAijCrsoz4sEyK6InyPwKZYlZeQ82U1oVba4OHLA6auJTcQUBCJ5SSvIMIFexQ9GHn3Sgv7+dsjybcBmZpC/XfZEC9kSkliRNV8ygjmmoqYssFjV/ZlONHT6id7F0m/bCFx93b5XLxnwuwP6Ld0TNFAdh3MuiVv0z+YsSi1G9ZiGBQtf4igV0F9zA4z9Cp8uI/rck55wDYgBPyOu/3uS1vkhe7ZuJRSSicX/CNGzDD9b/X2ABnwG1qBIglCmmL9Vb88fVDLKNpYw==";

/// CalendarServer's `test_verify` request, whitespace and all, signed
/// over the canonical text its `DKIMRequest` produces for it.
const MESSY_BODY: &[u8] = b"BEGIN:DATA\nEND:DATA\n";
const MESSY_BH: &str = "TGcssP8k6my3CkWR7RGhXLPwFIH+AuexvOPa3mzxaGo=";
const MESSY_B: &str = "VUMqIseS+saAAOSeSus2DVPZe/H/WAZciedUjwf2MHB4kR7dytUZfjLKL34J5CpMi3BE+rGIFMWIUCQI+HYsipSmRggBhfe1c8dRS6LXI2gFfm9goppF/HHVUWTpnB3KEY57HTVpQED47tPXjSFp5WF1oV9u+7dd94ZK5BwM5188grZ3JgAtqIR2NsT9mUYj3OcP+/ejFYKQWeo/QIk2bwxwNd9exhER6ajraqctiVY75uDBo9U5ba9bxlTrUE92iSqoflXqmETn40lvr5kGfT3l892tvbXJM2YlWdOTEqnjCewteUSSQc7yqsBfEjMvFvMUORfqPytfWFgfr7EBrA==";

fn signature_value(bh: &str, b: &str) -> String {
    format!(
        "v=1; d=example.com; s=dkim; t={T}; x={}; a=rsa-sha256; \
         q=private-exchange:http/well-known:dns/txt; c=ischedule-relaxed/simple; \
         h=Originator:Recipient:Content-Type:iSchedule-Version:iSchedule-Message-ID; bh={bh}; b={b}",
        T + 3600
    )
}

type OwnedHeaders = Vec<(String, String)>;

fn messy_headers(signature: &str) -> OwnedHeaders {
    [
        ("Host", "example.com"),
        ("Content-Type", "text/calendar  ; charset =  \"utf-8\""),
        ("Originator", "mailto:user01@example.com"),
        (
            "Recipient",
            "mailto:user02@example.com  ,\t mailto:user03@example.com",
        ),
        ("Cache-Control", "no-cache"),
        ("Connection", "close"),
        ("iSchedule-Version", "1.0"),
        ("iSchedule-Message-ID", MESSAGE_ID),
        ("DKIM-Signature", signature),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

fn view(headers: &[(String, String)]) -> Vec<Header<'_>> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect()
}

/// Keys as a test serves them: one record list per method.
struct Published(Vec<(KeyMethod, String)>);

#[async_trait]
impl KeySource for Published {
    async fn records(
        &self,
        method: KeyMethod,
        domain: &str,
        selector: &str,
    ) -> Result<Lookup, KeyFetchError> {
        Ok(Lookup {
            place: format!("{method} {selector}/{domain}"),
            records: self
                .0
                .iter()
                .filter(|(m, _)| *m == method)
                .map(|(_, r)| r.clone())
                .collect(),
        })
    }
}

fn cs_keys() -> Published {
    Published(vec![(
        KeyMethod::HttpWellKnown,
        format!("v=DKIM1; p={CS_PUBLIC_KEY}"),
    )])
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn verify_messy(
    headers: &[(String, String)],
    body: &[u8],
    keys: &Published,
) -> Result<Verified, Failure> {
    block_on(verify(
        &view(headers),
        body,
        Some("example.com"),
        T + 10,
        keys,
    ))
}

#[test]
fn header_canonicalisation_matches_calendarserver() {
    // test_canonicalize_header
    let cases = [
        (
            "Content-Type",
            " text/calendar  ; charset =  \"utf-8\"  ",
            "content-type:text/calendar ; charset = \"utf-8\"\r\n",
        ),
        (
            "Originator",
            "  mailto:user01@example.com  ",
            "originator:mailto:user01@example.com\r\n",
        ),
        (
            "Recipient",
            "  mailto:user02@example.com  ,\t mailto:user03@example.com\t\t  ",
            "recipient:mailto:user02@example.com,mailto:user03@example.com\r\n",
        ),
        ("iSchedule-Version", " 1.0 ", "ischedule-version:1.0\r\n"),
    ];
    for (name, value, expected) in cases {
        assert_eq!(
            String::from_utf8(canon::header(name, value.as_bytes())).unwrap(),
            expected
        );
    }
    let signature_cases = [
        (
            "  v=1;\t\t d=example.com; s = dkim; t\t=\t1234; a=rsa-sha1; \t\tq=dns/txt:http/well-known\t\t; c=ischedule-relaxed/simple; h=Originator:Recipient:iSchedule-Version:iSchedule-Message-ID; bh=a b  c; b=d ef",
            "dkim-signature:v=1; d=example.com; s = dkim; t = 1234; a=rsa-sha1; q=dns/txt:http/well-known ; c=ischedule-relaxed/simple; h=Originator:Recipient:iSchedule-Version:iSchedule-Message-ID; bh=a b c; b=",
        ),
        (
            "  v=1;\t\t d=example.com; s = dkim; t\t=\t1234; a=rsa-sha1; \t\tq=dns/txt:http/well-known\t\t; b= def ; c=ischedule-relaxed/simple; h=Originator:Recipient:iSchedule-Version:iSchedule-Message-ID; bh=a\t bc",
            "dkim-signature:v=1; d=example.com; s = dkim; t = 1234; a=rsa-sha1; q=dns/txt:http/well-known ; b= ; c=ischedule-relaxed/simple; h=Originator:Recipient:iSchedule-Version:iSchedule-Message-ID; bh=a bc",
        ),
    ];
    for (value, expected) in signature_cases {
        let data = canon::signed_data(&[], &[], value);
        assert_eq!(String::from_utf8(data).unwrap(), expected);
    }
}

#[test]
fn signed_headers_are_extracted_as_calendarserver_does() {
    // test_extract_headers: repeated Recipient lines joined, order from h=.
    let signature = "  v=1;\t\t d=example.com; s = dkim; t\t=\t1234; a=rsa-sha1; \t\tq=dns/txt:http/well-known\t\t; c=ischedule-relaxed/simple; h=Content-Type:Originator:Recipient:iSchedule-Version:iSchedule-Message-ID; bh=abc; b=def";
    let tail = "ischedule-version:1.0\r\n\
        dkim-signature:v=1; d=example.com; s = dkim; t = 1234; a=rsa-sha1; q=dns/txt:http/well-known ; c=ischedule-relaxed/simple; h=Content-Type:Originator:Recipient:iSchedule-Version:iSchedule-Message-ID; bh=abc; b=";
    let signed: Vec<String> = tags::TagList::parse(signature)
        .unwrap()
        .get("h")
        .unwrap()
        .split(':')
        .map(str::to_string)
        .collect();
    let head = |recipient: &str| {
        format!(
            "content-type:text/calendar ; charset = \"utf-8\"\r\noriginator:mailto:user01@example.com\r\nrecipient:{recipient}\r\n{tail}"
        )
    };
    let base: Vec<(&str, &str)> = vec![
        ("Host", "example.com"),
        ("Content-Type", " text/calendar  ; charset =  \"utf-8\""),
        ("Originator", "  mailto:user01@example.com"),
        (
            "Recipient",
            "  mailto:user02@example.com  ,\t mailto:user03@example.com\t\t",
        ),
        ("iSchedule-Version", " 1.0"),
        ("DKIM-Signature", signature),
        ("Cache-Control", "no-cache"),
    ];
    let as_headers = |list: &[(&'static str, &'static str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    let one = as_headers(&base);
    assert_eq!(
        String::from_utf8(canon::signed_data(&view(&one), &signed, signature)).unwrap(),
        head("mailto:user02@example.com,mailto:user03@example.com")
    );
    let mut more = base.clone();
    more.insert(4, ("Recipient", "\t\t  mailto:user04@example.com"));
    assert_eq!(
        String::from_utf8(canon::signed_data(
            &view(&as_headers(&more)),
            &signed,
            signature
        ))
        .unwrap(),
        head("mailto:user02@example.com,mailto:user03@example.com,mailto:user04@example.com")
    );
    let mut reordered = base.clone();
    let content_type = reordered.remove(1);
    reordered.push(content_type);
    assert_eq!(
        String::from_utf8(canon::signed_data(
            &view(&as_headers(&reordered)),
            &signed,
            signature
        ))
        .unwrap(),
        head("mailto:user02@example.com,mailto:user03@example.com")
    );
}

#[test]
fn the_bridge_signs_what_calendarserver_signs_byte_for_byte() {
    let key = SigningKey::from_pem(CS_PRIVATE_KEY.as_bytes()).unwrap();
    assert_eq!(key.public_key().to_base64(), CS_PUBLIC_KEY);
    let signer = Signer {
        domain: "example.com",
        selector: "dkim",
        key: &key,
        methods: &[
            KeyMethod::PrivateExchange,
            KeyMethod::HttpWellKnown,
            KeyMethod::DnsTxt,
        ],
        lifetime: Duration::from_secs(3600),
    };
    let headers: Vec<Header> = vec![
        ("Originator", b"mailto:user01@example.com"),
        ("Recipient", b"mailto:user02@example.com"),
        ("Content-Type", CONTENT_TYPE.as_bytes()),
        ("iSchedule-Version", b"1.0"),
        ("iSchedule-Message-ID", MESSAGE_ID.as_bytes()),
    ];
    let (_, data) = signer.canonical(&headers, b"Hello World!", T);
    assert_eq!(String::from_utf8(data).unwrap(), hello_canonical());
    // PKCS#1 v1.5 is deterministic: the same text gives OpenSSL's bytes.
    let value = signer.sign(&headers, b"Hello World!", T).unwrap();
    assert_eq!(
        value,
        signature_value("z85OKVJZHnmg3qFlSpLbpPCZ00irfBdrzQUtabiSl3A=", HELLO_B)
    );
}

#[test]
fn the_bridge_verifies_calendarserver_signatures() {
    let mut hello: Vec<(String, String)> = [
        ("Originator", "mailto:user01@example.com"),
        ("Recipient", "mailto:user02@example.com"),
        ("Content-Type", CONTENT_TYPE),
        ("iSchedule-Version", "1.0"),
        ("iSchedule-Message-ID", MESSAGE_ID),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    hello.push((
        "DKIM-Signature".into(),
        signature_value("z85OKVJZHnmg3qFlSpLbpPCZ00irfBdrzQUtabiSl3A=", HELLO_B),
    ));
    let verified = verify_messy(&hello, b"Hello World!", &cs_keys()).unwrap();
    assert_eq!(
        (verified.domain.as_str(), verified.selector.as_str()),
        ("example.com", "dkim")
    );

    let messy = messy_headers(&signature_value(MESSY_BH, MESSY_B));
    assert!(verify_messy(&messy, MESSY_BODY, &cs_keys()).is_ok());
    // Folded base64 and extra whitespace in the signature header are fine.
    // Folded base64 in b= is not data.
    let folded_b = signature_value(MESSY_BH, &MESSY_B.replace("VUMq", "VUMq\r\n \t"));
    assert!(verify_messy(&messy_headers(&folded_b), MESSY_BODY, &cs_keys()).is_ok());
}

/// test_verify's manipulations, each refused with its own reason.
#[test]
fn tampered_requests_are_refused_for_the_right_reason() {
    let good = messy_headers(&signature_value(MESSY_BH, MESSY_B));
    let keys = cs_keys();
    let with = |f: &dyn Fn(&mut OwnedHeaders)| {
        let mut h = good.clone();
        f(&mut h);
        h
    };
    let bad_signature =
        |r: Result<Verified, Failure>| assert!(matches!(r, Err(Failure::BadSignature(_))), "{r:?}");
    // Changed, missing, extra-valued and over-added headers.
    bad_signature(verify_messy(
        &with(&|h| h[2].1 = "mailto:user04@example.com".into()),
        MESSY_BODY,
        &keys,
    ));
    bad_signature(verify_messy(
        &with(&|h| {
            h.remove(3);
        }),
        MESSY_BODY,
        &keys,
    ));
    bad_signature(verify_messy(
        &with(&|h| h.insert(3, ("Recipient".into(), "mailto:user04@example.com".into()))),
        MESSY_BODY,
        &keys,
    ));
    bad_signature(verify_messy(
        &with(&|h| h.push(("Recipient".into(), "mailto:user04@example.com".into()))),
        MESSY_BODY,
        &keys,
    ));
    // Changed body: caught by the body hash before any key is fetched.
    assert_eq!(
        verify_messy(&good, b"BEGIN:DATA\n", &Published(vec![])),
        Err(Failure::BodyHash)
    );
    // Revoked key.
    let revoked = Published(vec![(KeyMethod::HttpWellKnown, "v=DKIM1; p=".into())]);
    assert!(matches!(
        verify_messy(&good, MESSY_BODY, &revoked),
        Err(Failure::Revoked { .. })
    ));
    // No key where the signer said to look (q= without http/well-known).
    let dns_only = Published(vec![(
        KeyMethod::DnsTxt,
        format!("v=DKIM1; p={CS_PUBLIC_KEY}"),
    )]);
    let only_http = with(&|h| {
        let v = signature_value(MESSY_BH, MESSY_B).replace(
            "q=private-exchange:http/well-known:dns/txt",
            "q=http/well-known",
        );
        h[8].1 = v;
    });
    assert!(matches!(
        verify_messy(&only_http, MESSY_BODY, &dns_only),
        Err(Failure::NoKey { .. })
    ));
    // Two signatures, wrong domain, time window.
    let twice = with(&|h| h.push(h[8].clone()));
    assert_eq!(
        verify_messy(&twice, MESSY_BODY, &keys),
        Err(Failure::SeveralSignatures(2))
    );
    let other = block_on(verify(
        &view(&good),
        MESSY_BODY,
        Some("example.org"),
        T + 10,
        &keys,
    ));
    assert!(
        matches!(other, Err(Failure::DomainMismatch { .. })),
        "{other:?}"
    );
    let early = block_on(verify(
        &view(&good),
        MESSY_BODY,
        Some("example.com"),
        T - 361,
        &keys,
    ));
    assert_eq!(early, Err(Failure::Future(361)));
    let late = block_on(verify(
        &view(&good),
        MESSY_BODY,
        Some("example.com"),
        T + 3601,
        &keys,
    ));
    assert_eq!(late, Err(Failure::Expired(1)));
    let unsigned = with(&|h| {
        h.pop();
    });
    assert_eq!(
        verify_messy(&unsigned, MESSY_BODY, &keys),
        Err(Failure::Unsigned)
    );
}

/// test_valid_dkim_headers, with the bridge's stricter rules: rsa-sha1 is
/// refused (RFC 8301), and Originator, Recipient and Content-Type must be signed.
#[test]
fn signature_tags_are_checked() {
    let valid = "v=1; d=example.com; s=dkim; t=1234; a=rsa-sha256; q=dns/txt; c=ischedule-relaxed; h=Originator:Recipient:Content-Type; bh=YWJj; b=ZGVm";
    assert!(Signature::parse(valid).is_ok());
    let refused = [
        ("v=1", Failure::MissingTag("a")),
        (&valid.replace("v=1", "v=2"), Failure::Version("2".into())),
        (
            &valid.replace("rsa-sha256", "rsa-sha1"),
            Failure::Algorithm("rsa-sha1".into()),
        ),
        (
            &valid.replace("rsa-sha256", "rsa-sha512"),
            Failure::Algorithm("rsa-sha512".into()),
        ),
        (
            &valid.replace("c=ischedule-relaxed", "c=ischedule-relaxed/relaxed"),
            Failure::Canonicalization("ischedule-relaxed/relaxed".into()),
        ),
        (&valid.replace("s=dkim; ", ""), Failure::MissingTag("s")),
        (
            &valid.replace(":Content-Type", ""),
            Failure::HeaderNotSigned("Content-Type"),
        ),
        (
            &valid.replace("q=dns/txt", "q=dns/other"),
            Failure::NoKeyMethod("dns/other".into()),
        ),
    ];
    for (value, failure) in refused {
        assert_eq!(Signature::parse(value), Err(failure), "{value}");
    }
    assert!(matches!(
        Signature::parse(&valid.replace("t=1234", "t=1234; x=1000")),
        Err(Failure::BadTag { tag: "x", .. })
    ));
}

/// test_get_key and test_locate_public_key: which key records are usable.
#[test]
fn key_records_are_judged_as_calendarserver_does() {
    let usable = |r: &str| matches!(KeyRecord::parse(r), KeyRecord::Usable(_));
    assert!(usable(&format!("v=DKIM1; p={CS_PUBLIC_KEY}")));
    assert!(usable(&format!(
        "v=DKIM1; k = rsa ; h=  sha1 : sha256  ; s=ischedule ; p={CS_PUBLIC_KEY}"
    )));
    assert!(!usable(&format!("v=DKIM1; k=dsa ; p={CS_PUBLIC_KEY}")));
    assert!(!usable(&format!("v=DKIM1; h=sha1 ; p={CS_PUBLIC_KEY}")));
    assert!(!usable(&format!("v=DKIM1; s=email ; p={CS_PUBLIC_KEY}")));
    assert_eq!(KeyRecord::parse("v=DKIM1; p="), KeyRecord::Revoked);
}

#[test]
fn generated_keys_round_trip_through_pem_and_their_record() {
    let key = SigningKey::generate(2048).unwrap();
    let again = SigningKey::from_pem(key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    assert_eq!(key.public_key(), again.public_key());
    let KeyRecord::Usable(published) = KeyRecord::parse(&key.public_key().record()) else {
        panic!("own record unusable")
    };
    let signature = key.sign(b"data").unwrap();
    assert!(published.verifies(b"data", &signature));
    assert!(!published.verifies(b"date", &signature));
    assert_eq!(
        SigningKey::generate(1024).unwrap_err(),
        KeyError::Size(1024)
    );
}

#[test]
fn simple_body_canonicalisation() {
    assert_eq!(canon::body(b""), b"\r\n");
    assert_eq!(canon::body(b"a\r\n\r\n\r\n"), b"a\r\n");
    assert_eq!(canon::body(b"a\n"), b"a\n\r\n");
}
