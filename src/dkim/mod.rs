//! DKIM for iSchedule (draft-desruisseaux-ischedule-03..05, as Apple
//! CalendarServer and Cyrus implement it; the 2017 CalConnect text leaves
//! clause 11.2 empty): the `ischedule-relaxed/simple` canonicalisation, the
//! `DKIM-Signature` tags, key records, signing and verifying.
//!
//! Pure protocol logic: nothing here opens a socket or reads a file. Keys
//! are fetched from above through [`KeySource`] (DNS TXT, the sender's
//! `/.well-known/domainkey/`, or keys exchanged privately and configured).

pub mod canon;
pub mod key;
pub mod sign;
pub mod signature;
pub mod tags;
pub mod verify;

#[cfg(test)]
mod tests;

pub use key::{KeyError, KeyRecord, PublicKey, SigningKey};
pub use sign::Signer;
pub use signature::{KeyMethod, Signature};
pub use verify::{verify, Failure, KeyFetchError, KeySource, Lookup, Verified};

/// The header that carries the signature.
pub const HEADER: &str = "DKIM-Signature";

/// How far in the future a signature's `t=` may lie (clock skew between
/// the two servers), as CalendarServer allows.
pub const MAX_CLOCK_SKEW_SECS: u64 = 360;

/// The path prefix under which a domain's public keys are served
/// (`/.well-known/domainkey/<domain>/<selector>`).
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/domainkey/";

/// The DNS name of a key record (RFC 6376 3.6.2.1).
pub fn dns_name(domain: &str, selector: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// The path of a key record at a domain's iSchedule host.
pub fn well_known_path(domain: &str, selector: &str) -> String {
    format!("{WELL_KNOWN_PREFIX}{domain}/{selector}")
}
