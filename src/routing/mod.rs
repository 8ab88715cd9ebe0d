//! The routing decision for one calendar user address: a static rule, a
//! receiver found in DNS, or no receiver; with what was seen on the way, so
//! `ischedule-bridge route` and the logs can say why.

pub mod explain;

use serde::Serialize;
use url::Url;

use crate::config::Config;
use crate::discovery::{self, Discovery, DnsResolver, Service};
use crate::ischedule::CalAddress;

/// Where one recipient's message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// A native iSchedule receiver.
    Native { receiver: Receiver },
    /// Nobody speaks iSchedule for this address.
    NoReceiver { why: String },
    /// DNS could not answer; nothing can be concluded yet.
    Failed { why: String },
}

/// A native receiver. Recipients with equal `id` share one POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receiver {
    pub id: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// A static rule's URL (plain `http://` allowed for internal receivers).
    Url { url: Url },
    /// SRV targets over HTTPS, with the discovered path.
    Srv { service: Service },
}

/// The decision plus everything that led to it.
#[derive(Debug, Clone, Serialize)]
pub struct Routed {
    pub address: CalAddress,
    /// `(index, description)` of the static rule that matched.
    pub rule: Option<(usize, String)>,
    pub discovery: Option<Discovery>,
    pub decision: Decision,
}

pub struct Router<'a> {
    pub config: &'a Config,
    pub resolver: &'a DnsResolver,
}

impl Router<'_> {
    pub async fn route(&self, address: &CalAddress) -> Routed {
        let routed = |rule, discovery, decision| Routed {
            address: address.clone(),
            rule,
            discovery,
            decision,
        };
        if let Some((index, route)) = self
            .config
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(address))
        {
            let receiver = Receiver {
                id: route.to.to_string(),
                target: Target::Url {
                    url: route.to.clone(),
                },
            };
            return routed(
                Some((index, route.matcher.to_string())),
                None,
                Decision::Native { receiver },
            );
        }
        let Some(domain) = address.domain() else {
            let why = format!("{address} has no host part to look up (spec clause 6)");
            return routed(None, None, Decision::NoReceiver { why });
        };
        if self.config.local_domains.contains(&domain) {
            // The local domain's SRV record points at this bridge: following
            // it would post the message to ourselves.
            let why =
                format!("{domain} is a local domain and no [[route]] names its calendar server");
            return routed(None, None, Decision::NoReceiver { why });
        }
        match discovery::discover(self.resolver, &domain, self.config.dns.strip_subdomains).await {
            Err(e) => routed(None, None, Decision::Failed { why: e.to_string() }),
            Ok(found) => {
                let decision = match &found.service {
                    Some(service) => Decision::Native {
                        receiver: Receiver {
                            id: receiver_id(service),
                            target: Target::Srv {
                                service: service.clone(),
                            },
                        },
                    },
                    None => Decision::NoReceiver {
                        why: no_service_reason(&found),
                    },
                };
                routed(None, Some(found), decision)
            }
        }
    }
}

/// Domains whose SRV records name the same targets and path are one
/// receiver, so their recipients travel in one POST (spec 5.1).
fn receiver_id(service: &Service) -> String {
    let mut targets: Vec<String> = service
        .records
        .iter()
        .map(|r| format!("{}:{}", r.target, r.port))
        .collect();
    targets.sort();
    targets.dedup();
    format!("srv:{}{}", targets.join(","), service.path)
}

fn no_service_reason(found: &Discovery) -> String {
    let tried: Vec<String> = found
        .attempts
        .iter()
        .map(|a| match a.outcome {
            discovery::AttemptOutcome::NoService => {
                format!("{} (target \".\": no service)", a.name)
            }
            _ => format!("{} (no SRV record)", a.name),
        })
        .collect();
    format!("no iSchedule receiver: {}", tried.join(", "))
}
