//! Who may ask the bridge to schedule with whom: the no-open-relay rule.
//!
//! Local calendar servers (allow-listed address or shared secret) may
//! address anyone. Anyone else may only address the local domains, and may
//! not claim to be a local user. DKIM-authenticated remote senders plug in
//! here as another [`Sender`] kind.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::Config;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::{IsError, Rejection};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A local calendar server, and how it proved it.
    Local { by: String },
    /// Anyone else.
    Remote,
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sender::Local { by } => write!(f, "local ({by})"),
            Sender::Remote => f.write_str("remote (unauthenticated)"),
        }
    }
}

pub fn classify(config: &Config, peer: Option<IpAddr>, headers: &HeaderMap) -> Sender {
    if let Some(secret) = &config.senders.shared_secret {
        let offered = headers
            .get(config.senders.secret_header.as_str())
            .map(|v| v.as_bytes());
        if offered.is_some_and(|o| constant_time_eq(o, secret.as_bytes())) {
            return Sender::Local {
                by: format!("{} header", config.senders.secret_header),
            };
        }
    }
    match peer.and_then(|ip| config.senders.allow.iter().find(|net| net.contains(&ip))) {
        Some(net) => Sender::Local {
            by: format!("address in {net}"),
        },
        None => Sender::Remote,
    }
}

pub fn authorize(
    config: &Config,
    sender: &Sender,
    request: &SchedulingRequest,
) -> Result<(), Rejection> {
    if matches!(sender, Sender::Local { .. }) {
        return Ok(());
    }
    if config.is_local(&request.originator) {
        return Err(Rejection::new(
            IsError::OriginatorDenied,
            format!(
                "{} is a user of a local domain; only the local calendar servers may send on their behalf",
                request.originator
            ),
        ));
    }
    if let Some(outside) = request.recipients.iter().find(|r| !config.is_local(r)) {
        return Err(Rejection::new(
            IsError::OriginatorDenied,
            format!(
                "this bridge relays only to its local domains ({}) for unauthenticated senders; {outside} is not one of them",
                config.local_domains.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Compares secrets without leaking the matching prefix length through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            "[domains]\nlocal = [\"example.com\"]\n[senders]\nallow = [\"10.0.0.0/8\"]\nshared_secret = \"0123456789abcdef\"\n",
            "t",
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn allow_list_and_secret_make_a_local_sender() {
        let c = config();
        let mut h = HeaderMap::new();
        assert!(matches!(
            classify(&c, Some("10.1.2.3".parse().unwrap()), &h),
            Sender::Local { .. }
        ));
        assert_eq!(
            classify(&c, Some("192.0.2.1".parse().unwrap()), &h),
            Sender::Remote
        );
        h.insert("X-Bridge-Secret", "0123456789abcdeX".parse().unwrap());
        assert_eq!(classify(&c, None, &h), Sender::Remote);
        h.insert("X-Bridge-Secret", "0123456789abcdef".parse().unwrap());
        assert!(matches!(classify(&c, None, &h), Sender::Local { .. }));
    }
}
