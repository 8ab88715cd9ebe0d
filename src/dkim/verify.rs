//! Verifying an incoming iSchedule request's signature.
//!
//! Everything that needs no key is checked first (one signature, its
//! tags, `d=` against the Originator, the time window, the body hash), so
//! a request that fails them costs no lookup; then the key is fetched
//! through the [`KeySource`] and the header signature checked.

use async_trait::async_trait;
use aws_lc_rs::digest::{digest, SHA256};

use super::canon::{self, Header};
use super::key::{KeyRecord, PublicKey};
use super::signature::{KeyMethod, Signature};
use super::{HEADER, MAX_CLOCK_SKEW_SECS};

/// Why a signature was not accepted. The text is the
/// `response-description` the sender reads, so each says which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the request carries no DKIM-Signature header, and this receiver requires one")]
    Unsigned,
    #[error("the request carries {0} DKIM-Signature headers; exactly one is accepted")]
    SeveralSignatures(usize),
    #[error("the DKIM-Signature header is malformed: {0}")]
    Malformed(String),
    #[error("the DKIM-Signature has no {0}= tag")]
    MissingTag(&'static str),
    #[error("DKIM-Signature v={0} is not supported (only v=1)")]
    Version(String),
    #[error("DKIM-Signature a={0} is not accepted (only rsa-sha256)")]
    Algorithm(String),
    #[error("DKIM-Signature c={0} is not accepted (only ischedule-relaxed/simple)")]
    Canonicalization(String),
    #[error("DKIM-Signature {tag}= is invalid: {why}")]
    BadTag { tag: &'static str, why: String },
    #[error("DKIM-Signature h= does not cover the {0} header")]
    HeaderNotSigned(&'static str),
    #[error("DKIM-Signature q={0} names no key lookup this receiver uses (dns/txt, http/well-known, private-exchange)")]
    NoKeyMethod(String),
    #[error("DKIM-Signature d={signer} is not the Originator's domain ({originator})")]
    DomainMismatch { signer: String, originator: String },
    #[error(
        "DKIM-Signature t= lies {0} s in the future; at most 360 s of clock difference is accepted"
    )]
    Future(u64),
    #[error("the DKIM-Signature expired {0} s ago (x=)")]
    Expired(u64),
    #[error("the body hash (bh=) does not match the body as received")]
    BodyHash,
    #[error("no public key for s={selector} d={domain}: {tried}")]
    NoKey {
        domain: String,
        selector: String,
        tried: String,
    },
    #[error("the public key for s={selector} d={domain} is revoked (empty p=) at {place}")]
    Revoked {
        domain: String,
        selector: String,
        place: String,
    },
    #[error("the signature (b=) does not verify with the public key from {0}: the signed headers or the key differ")]
    BadSignature(String),
    #[error("the public key could not be fetched; try again later: {0}")]
    KeyUnavailable(String),
}

impl Failure {
    /// Nothing was decided (DNS or the key host failed): the sender should
    /// retry, not give up.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Failure::KeyUnavailable(_))
    }
}

/// What a key lookup found: the records, and where they were looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub place: String,
    pub records: Vec<String>,
}

/// A lookup that could not finish (DNS failure, key host unreachable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFetchError(pub String);

/// Where public keys come from; implemented above this layer (DNS, HTTP,
/// configuration).
#[async_trait]
pub trait KeySource: Send + Sync {
    async fn records(
        &self,
        method: KeyMethod,
        domain: &str,
        selector: &str,
    ) -> Result<Lookup, KeyFetchError>;
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub domain: String,
    pub selector: String,
    /// Where the key came from.
    pub key_from: String,
}

/// Private exchange first (the receiver's own configuration), then the
/// signer's web server, then DNS, as CalendarServer prefers.
const PREFERENCE: [KeyMethod; 3] = [
    KeyMethod::PrivateExchange,
    KeyMethod::HttpWellKnown,
    KeyMethod::DnsTxt,
];

/// Verifies the one `DKIM-Signature` of a request whose Originator is in
/// `originator_domain`, at `now` (seconds since 1970).
pub async fn verify(
    headers: &[Header<'_>],
    body: &[u8],
    originator_domain: Option<&str>,
    now: u64,
    keys: &dyn KeySource,
) -> Result<Verified, Failure> {
    let values: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(HEADER))
        .map(|(_, v)| *v)
        .collect();
    let value = match values.as_slice() {
        [] => return Err(Failure::Unsigned),
        [one] => std::str::from_utf8(one)
            .map_err(|_| Failure::Malformed("the header is not UTF-8".into()))?,
        many => return Err(Failure::SeveralSignatures(many.len())),
    };
    let signature = Signature::parse(value)?;
    if originator_domain != Some(signature.domain.as_str()) {
        return Err(Failure::DomainMismatch {
            signer: signature.domain,
            originator: originator_domain.unwrap_or("none").to_string(),
        });
    }
    if let Some(t) = signature
        .timestamp
        .filter(|t| *t > now + MAX_CLOCK_SKEW_SECS)
    {
        return Err(Failure::Future(t - now));
    }
    if let Some(x) = signature.expires.filter(|x| *x < now) {
        return Err(Failure::Expired(now - x));
    }
    if digest(&SHA256, &canon::body(body)).as_ref() != signature.body_hash.as_slice() {
        return Err(Failure::BodyHash);
    }
    let (key, key_from) = find_key(&signature, keys).await?;
    let data = canon::signed_data(headers, &signature.signed_headers, value);
    if !key.verifies(&data, &signature.signature) {
        return Err(Failure::BadSignature(key_from));
    }
    Ok(Verified {
        domain: signature.domain,
        selector: signature.selector,
        key_from,
    })
}

/// The first usable key among the signer's methods, in [`PREFERENCE`]
/// order. A revoked key refuses; a failed lookup only matters when no
/// other method found a key.
async fn find_key(
    signature: &Signature,
    keys: &dyn KeySource,
) -> Result<(PublicKey, String), Failure> {
    let (domain, selector) = (&signature.domain, &signature.selector);
    let mut tried = Vec::new();
    let mut unavailable = None;
    for method in PREFERENCE
        .into_iter()
        .filter(|m| signature.methods.contains(m))
    {
        let lookup = match keys.records(method, domain, selector).await {
            Ok(lookup) => lookup,
            Err(e) => {
                unavailable = Some(e);
                continue;
            }
        };
        let mut unusable = Vec::new();
        for record in &lookup.records {
            match KeyRecord::parse(record) {
                KeyRecord::Usable(key) => return Ok((key, lookup.place)),
                KeyRecord::Revoked => {
                    return Err(Failure::Revoked {
                        domain: domain.clone(),
                        selector: selector.clone(),
                        place: lookup.place,
                    })
                }
                KeyRecord::Unusable(why) => unusable.push(why),
            }
        }
        tried.push(if unusable.is_empty() {
            format!("{method}: nothing at {}", lookup.place)
        } else {
            format!("{method}: {}: {}", lookup.place, unusable.join("; "))
        });
    }
    if let Some(e) = unavailable {
        return Err(Failure::KeyUnavailable(e.0));
    }
    Err(Failure::NoKey {
        domain: domain.clone(),
        selector: selector.clone(),
        tried: tried.join("; "),
    })
}
