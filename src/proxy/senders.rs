//! Who sent a POST over HTTP: a local calendar server (an allow-listed
//! address or the shared-secret header), or a remote sender that its
//! domain's DKIM signature may vouch for. What each kind of sender may do
//! is the core's rule ([`crate::scheduling::sender::authorize`]).

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::{Config, DkimPolicy};
use crate::dkim::{self, KeySource};
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::{IsError, Rejection};
use crate::itip::{ComponentKind, Method};
use crate::scheduling::sender::constant_time_eq;
use crate::scheduling::Sender;

/// Why a remote sender's request is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Answered with the `IS:error` (403 `verification-failed`).
    Rejected(Rejection),
    /// Nothing was decided (the key could not be fetched): 503, retry.
    TryLater(String),
}

/// Who sent a POST: local by the shared secret or an allow-listed
/// address, else a remote sender nothing vouches for yet.
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
        None => Sender::remote(),
    }
}

/// A remote sender as DKIM judges it under the policy for its
/// originator (`[[route]] dkim`, else `dkim.verify`), at `now`.
pub async fn verify(
    config: &Config,
    headers: &HeaderMap,
    request: &SchedulingRequest,
    keys: &dyn KeySource,
    now: u64,
) -> Result<Sender, Refusal> {
    let policy = config.dkim_policy_for(&request.originator);
    match policy {
        DkimPolicy::Off => {
            return Ok(Sender::Unverified {
                why: "DKIM not checked (policy off)".into(),
            })
        }
        DkimPolicy::Optional if !headers.contains_key(dkim::HEADER) => {
            // Asking for someone's free time or cancelling their event in
            // another domain's name does harm that a forged invitation does not.
            let itip = &request.itip;
            if itip.component == ComponentKind::VFreeBusy || itip.method == Method::Cancel {
                return Err(Refusal::Rejected(Rejection::new(
                    IsError::VerificationFailed,
                    format!(
                        "an unsigned {} {} is refused: free-busy requests and cancellations need a DKIM signature of {}",
                        itip.component,
                        itip.method,
                        request.originator.domain().unwrap_or_default()
                    ),
                )));
            }
            return Ok(Sender::Unverified {
                why: "unsigned (DKIM optional)".into(),
            });
        }
        DkimPolicy::Optional | DkimPolicy::Require => {}
    }
    let view: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let domain = request.originator.domain();
    match dkim::verify(&view, &request.body, domain.as_deref(), now, keys).await {
        Ok(v) => Ok(Sender::Verified {
            address: request
                .originator
                .email()
                .unwrap_or(request.originator.as_str())
                .to_string(),
            by: format!(
                "DKIM d={} s={}, key from {}",
                v.domain, v.selector, v.key_from
            ),
        }),
        Err(f) if f.is_temporary() => Err(Refusal::TryLater(f.to_string())),
        Err(f) => Err(Refusal::Rejected(Rejection::new(
            IsError::VerificationFailed,
            f.to_string(),
        ))),
    }
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
            Sender::remote()
        );
        h.insert("X-Bridge-Secret", "0123456789abcdeX".parse().unwrap());
        assert_eq!(classify(&c, None, &h), Sender::remote());
        h.insert("X-Bridge-Secret", "0123456789abcdef".parse().unwrap());
        assert!(matches!(classify(&c, None, &h), Sender::Local { .. }));
    }
}
