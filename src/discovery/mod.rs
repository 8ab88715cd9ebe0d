//! Finding a recipient domain's iSchedule receiver (spec clause 6):
//! SRV `_ischedules._tcp.<domain>`, the TXT `path=` beside it or the
//! well-known URI, optionally stripping sub-domains one level at a time;
//! and the receivers' capabilities as learnt and cached.

pub mod capability_cache;
pub mod resolver;
pub mod srv;
pub mod target_policy;

use serde::Serialize;

pub use capability_cache::CapabilityOutcome;
pub use resolver::{DnsFailure, DnsResolver};
pub use srv::SrvRecord;
pub use target_policy::{Origin, TargetPolicy};

/// The request path used when no TXT record gives one (spec 6.3).
pub const WELL_KNOWN_PATH: &str = "/.well-known/ischedule";

/// A domain's receiver as DNS describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The domain whose SRV records answered (after any stripping).
    pub domain: String,
    pub records: Vec<SrvRecord>,
    pub path: String,
    pub path_from: PathSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathSource {
    /// TXT `path=` with this TTL.
    Txt {
        ttl: u32,
    },
    WellKnown,
}

/// One SRV query made while discovering, for explaining the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub name: String,
    pub outcome: AttemptOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcome {
    Found,
    NoRecords,
    /// A single SRV record with target `.` (RFC 2782): no service, stop.
    NoService,
    /// Not queried: a domain this bridge serves, whose SRV record names the
    /// bridge itself. Stripping stops here instead of posting to ourselves.
    LocalDomain,
}

/// Everything one discovery found out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub attempts: Vec<Attempt>,
    pub service: Option<Service>,
}

/// The SRV owner name for a domain.
pub fn srv_name(domain: &str) -> String {
    format!("_ischedules._tcp.{domain}")
}

/// The domains to query in order: the domain itself and, when stripping is
/// on, each parent down to (not including) the top-level domain.
pub fn candidate_domains(domain: &str, strip_subdomains: bool) -> Vec<String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let last = if strip_subdomains {
        labels.len().saturating_sub(2)
    } else {
        0
    };
    (0..=last).map(|i| labels[i..].join(".")).collect()
}

/// Looks up the receiver for `domain`; `local` are the domains this bridge
/// serves, never followed (see [`AttemptOutcome::LocalDomain`]).
pub async fn discover(
    resolver: &DnsResolver,
    domain: &str,
    strip_subdomains: bool,
    local: &[String],
) -> Result<Discovery, DnsFailure> {
    let mut attempts = Vec::new();
    for candidate in candidate_domains(domain, strip_subdomains) {
        let name = srv_name(&candidate);
        if local.contains(&candidate) {
            attempts.push(Attempt {
                name,
                outcome: AttemptOutcome::LocalDomain,
            });
            break;
        }
        let outcome = match resolver.srv(&name).await? {
            None => AttemptOutcome::NoRecords,
            Some(records) if srv::is_no_service(&records) => AttemptOutcome::NoService,
            Some(records) => {
                attempts.push(Attempt {
                    name: name.clone(),
                    outcome: AttemptOutcome::Found,
                });
                let (path, path_from) = match resolver.txt_path(&name).await? {
                    Some(txt) => (txt.path, PathSource::Txt { ttl: txt.ttl }),
                    None => (WELL_KNOWN_PATH.to_string(), PathSource::WellKnown),
                };
                let service = Service {
                    domain: candidate,
                    records,
                    path,
                    path_from,
                };
                return Ok(Discovery {
                    attempts,
                    service: Some(service),
                });
            }
        };
        attempts.push(Attempt { name, outcome });
        if outcome == AttemptOutcome::NoService {
            break;
        }
    }
    Ok(Discovery {
        attempts,
        service: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripping_walks_up_to_the_registrable_level() {
        assert_eq!(
            candidate_domains("host.cal.example.com", false),
            ["host.cal.example.com"]
        );
        assert_eq!(
            candidate_domains("host.cal.example.com", true),
            ["host.cal.example.com", "cal.example.com", "example.com"]
        );
        assert_eq!(candidate_domains("example.com", true), ["example.com"]);
        assert_eq!(candidate_domains("localhost", true), ["localhost"]);
    }
}
