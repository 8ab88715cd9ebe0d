//! Signing an outgoing iSchedule request.

use std::time::Duration;

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::canon::{self, Header};
use super::key::{KeyError, SigningKey};
use super::signature::{KeyMethod, ALGORITHM, CANONICALIZATION};
use crate::ischedule::headers::{ISCHEDULE_MESSAGE_ID, ISCHEDULE_VERSION, ORIGINATOR, RECIPIENT};

/// The headers signed when the request has them, in this order (as
/// CalendarServer signs): who, to whom, what, and which message.
pub const SIGNED: [&str; 5] = [
    ORIGINATOR,
    RECIPIENT,
    "Content-Type",
    ISCHEDULE_VERSION,
    ISCHEDULE_MESSAGE_ID,
];

/// One domain's signing identity.
#[derive(Debug, Clone)]
pub struct Signer<'a> {
    pub domain: &'a str,
    pub selector: &'a str,
    pub key: &'a SigningKey,
    /// Where verifiers may fetch the public key (`q=`), in preference order.
    pub methods: &'a [KeyMethod],
    /// `x=` is this long after `t=`.
    pub lifetime: Duration,
}

impl Signer<'_> {
    /// The `DKIM-Signature` value for a request with `headers` and `body`,
    /// signed at `now` (seconds since 1970).
    pub fn sign(&self, headers: &[Header], body: &[u8], now: u64) -> Result<String, KeyError> {
        let (unsigned, data) = self.canonical(headers, body, now);
        let b = STANDARD.encode(self.key.sign(&data)?);
        Ok(format!("{unsigned}{b}"))
    }

    /// The header value up to its empty `b=`, and the data the signature covers.
    pub fn canonical(&self, headers: &[Header], body: &[u8], now: u64) -> (String, Vec<u8>) {
        let signed: Vec<String> = SIGNED
            .into_iter()
            .filter(|name| canon::joined(headers, name).is_some())
            .map(str::to_string)
            .collect();
        let unsigned = self.unsigned_value(&signed, body, now);
        let data = canon::signed_data(headers, &signed, &unsigned);
        (unsigned, data)
    }

    /// Every tag, ending in an empty `b=`, in CalendarServer's order.
    fn unsigned_value(&self, signed: &[String], body: &[u8], now: u64) -> String {
        let bh = STANDARD.encode(digest(&SHA256, &canon::body(body)));
        let q: Vec<&str> = self.methods.iter().map(|m| m.as_str()).collect();
        format!(
            "v=1; d={}; s={}; t={now}; x={}; a={ALGORITHM}; q={}; c={CANONICALIZATION}; h={}; bh={bh}; b=",
            self.domain,
            self.selector,
            now + self.lifetime.as_secs(),
            q.join(":"),
            signed.join(":"),
        )
    }
}
