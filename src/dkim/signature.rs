//! The `DKIM-Signature` header of an iSchedule request: its tags, read
//! into typed values, or the [`Failure`] that names the offending tag.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::tags::{without_whitespace, TagList};
use super::verify::Failure;

/// How a verifier may find the signer's public key (the `q=` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyMethod {
    /// TXT record at `<selector>._domainkey.<domain>`.
    DnsTxt,
    /// `GET /.well-known/domainkey/<domain>/<selector>` at the signer's iSchedule host.
    HttpWellKnown,
    /// Exchanged out of band and configured at the receiver.
    PrivateExchange,
}

impl KeyMethod {
    pub const ALL: [KeyMethod; 3] = [
        KeyMethod::DnsTxt,
        KeyMethod::HttpWellKnown,
        KeyMethod::PrivateExchange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyMethod::DnsTxt => "dns/txt",
            KeyMethod::HttpWellKnown => "http/well-known",
            KeyMethod::PrivateExchange => "private-exchange",
        }
    }

    pub fn parse(text: &str) -> Option<KeyMethod> {
        KeyMethod::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl fmt::Display for KeyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The only algorithm signed and accepted: rsa-sha1 is historic (RFC 8301).
pub const ALGORITHM: &str = "rsa-sha256";
/// Header `ischedule-relaxed`, body `simple`.
pub const CANONICALIZATION: &str = "ischedule-relaxed/simple";
/// Headers a signature must cover, or a replay could change them.
pub const MUST_SIGN: [&str; 3] = ["Originator", "Recipient", "Content-Type"];

/// A parsed signature. `t=` and `x=` are optional in DKIM; `q=` defaults
/// to `dns/txt` (RFC 6376 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub domain: String,
    pub selector: String,
    pub signed_headers: Vec<String>,
    pub body_hash: Vec<u8>,
    pub signature: Vec<u8>,
    pub timestamp: Option<u64>,
    pub expires: Option<u64>,
    /// The methods named in `q=` that this receiver knows, in the signer's order.
    pub methods: Vec<KeyMethod>,
}

impl Signature {
    pub fn parse(value: &str) -> Result<Signature, Failure> {
        let tags = TagList::parse(value).map_err(|e| Failure::Malformed(e.to_string()))?;
        let required = |name: &'static str| tags.get(name).ok_or(Failure::MissingTag(name));
        let version = required("v")?;
        if version != "1" {
            return Err(Failure::Version(version.to_string()));
        }
        let algorithm = required("a")?;
        if algorithm != ALGORITHM {
            return Err(Failure::Algorithm(algorithm.to_string()));
        }
        // Without a "/", the body canonicalisation is simple (RFC 6376 3.5).
        let c = required("c")?;
        if c != CANONICALIZATION && c != "ischedule-relaxed" {
            return Err(Failure::Canonicalization(c.to_string()));
        }
        let base64 = |name: &'static str| {
            STANDARD
                .decode(without_whitespace(required(name)?))
                .map_err(|_| Failure::BadTag {
                    tag: name,
                    why: "not base64".into(),
                })
        };
        let number = |name: &'static str| {
            tags.get(name)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| Failure::BadTag {
                        tag: name,
                        why: format!("'{v}' is not a number of seconds"),
                    })
                })
                .transpose()
        };
        let signed_headers: Vec<String> = required("h")?
            .split(':')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(missing) = MUST_SIGN
            .into_iter()
            .find(|m| !signed_headers.iter().any(|h| h.eq_ignore_ascii_case(m)))
        {
            return Err(Failure::HeaderNotSigned(missing));
        }
        let q = tags.get("q").unwrap_or("dns/txt");
        let methods: Vec<KeyMethod> = q
            .split(':')
            .filter_map(|m| KeyMethod::parse(m.trim()))
            .collect();
        if methods.is_empty() {
            return Err(Failure::NoKeyMethod(q.to_string()));
        }
        let signature = Signature {
            domain: required("d")?.to_ascii_lowercase(),
            selector: required("s")?.to_string(),
            signed_headers,
            body_hash: base64("bh")?,
            signature: base64("b")?,
            timestamp: number("t")?,
            expires: number("x")?,
            methods,
        };
        if let (Some(t), Some(x)) = (signature.timestamp, signature.expires) {
            if x <= t {
                return Err(Failure::BadTag {
                    tag: "x",
                    why: format!("expiry {x} is not after the signing time {t}"),
                });
            }
        }
        Ok(signature)
    }
}
