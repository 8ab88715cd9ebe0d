//! The routing decision for one calendar user address: a static rule, a
//! receiver found in DNS, or no receiver; with what was seen on the way, so
//! `ischedule-bridge route` and the logs can say why.

pub mod explain;

use serde::Serialize;
use url::Url;

use crate::config::{Config, Mode, ReplyRouting};
use crate::discovery::{self, AttemptOutcome, Discovery, DnsResolver, Service};
use crate::itip::CalAddress;

/// Where one recipient's message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// A native iSchedule receiver.
    Native { receiver: Receiver },
    /// iTIP by mail (iMIP), and why.
    Imip { why: String },
    /// Nobody speaks iSchedule for this address and mail is not allowed.
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
    /// The mode that applied: with `native-then-imip` a failed native
    /// delivery falls back to mail.
    pub mode: Mode,
    pub reply_routing: ReplyRouting,
    pub decision: Decision,
}

pub struct Router<'a> {
    pub config: &'a Config,
    pub resolver: &'a DnsResolver,
}

impl Router<'_> {
    pub async fn route(&self, address: &CalAddress) -> Routed {
        let rule = self
            .config
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(address));
        let imip = &self.config.imip;
        let mode = rule.and_then(|(_, r)| r.mode).unwrap_or(imip.mode);
        let reply_routing = rule
            .and_then(|(_, r)| r.reply_routing)
            .unwrap_or(imip.reply_routing);
        let routed = |discovery, decision| Routed {
            address: address.clone(),
            rule: rule.map(|(i, r)| (i, r.matcher.to_string())),
            discovery,
            mode,
            reply_routing,
            decision,
        };
        // Without a receiver, mail if the mode allows it, else 5.3.
        let without_receiver = |why: String| {
            if mode.allows_imip() {
                Decision::Imip { why }
            } else {
                Decision::NoReceiver { why }
            }
        };
        if let Some((index, route)) = rule {
            let decision = match (&route.to, mode) {
                (Some(url), Mode::NativeOnly | Mode::NativeThenImip) => Decision::Native {
                    receiver: Receiver {
                        id: url.to_string(),
                        target: Target::Url { url: url.clone() },
                    },
                },
                _ => Decision::Imip {
                    why: format!("[[route]] #{index} ({}) is imip-only", route.matcher),
                },
            };
            return routed(None, decision);
        }
        if mode == Mode::ImipOnly {
            return routed(
                None,
                Decision::Imip {
                    why: "imip.mode is imip-only".into(),
                },
            );
        }
        let Some(domain) = address.domain() else {
            let why = format!("{address} has no host part to look up (spec clause 6)");
            return routed(None, without_receiver(why));
        };
        if self.config.local_domains.contains(&domain) {
            // The local domain's SRV record points at this bridge: following
            // it would post the message to ourselves. Its users read mail.
            let why =
                format!("{domain} is a local domain and no [[route]] names its calendar server");
            return routed(None, without_receiver(why));
        }
        let strip = self.config.dns.strip_subdomains;
        match discovery::discover(self.resolver, &domain, strip, &self.config.local_domains).await {
            Err(e) => routed(None, Decision::Failed { why: e.to_string() }),
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
                    None => without_receiver(no_service_reason(&found)),
                };
                routed(Some(found), decision)
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
            AttemptOutcome::NoService => format!("{} (target \".\": no service)", a.name),
            AttemptOutcome::LocalDomain => {
                let domain = a.name.strip_prefix("_ischedules._tcp.").unwrap_or(&a.name);
                format!("{domain} is a local domain (not followed)")
            }
            AttemptOutcome::Found | AttemptOutcome::NoRecords => {
                format!("{} (no SRV record)", a.name)
            }
        })
        .collect();
    format!("no iSchedule receiver: {}", tried.join(", "))
}
