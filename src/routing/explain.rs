//! Human and JSON explanations of routing decisions, for `route`.

use serde_json::{json, Value};

use super::{Decision, Routed, Target};
use crate::config::{Mode, ReplyRouting};
use crate::discovery::{AttemptOutcome, CapabilityOutcome, PathSource};

/// What `route` learnt about the receiver beyond DNS.
pub enum ReceiverCheck {
    NotAsked,
    Capabilities(CapabilityOutcome),
    Unreachable(String),
}

pub fn text(r: &Routed, check: &ReceiverCheck) -> String {
    let mut out = format!("{}\n  mode: {}\n", r.address, mode_name(r.mode));
    if let Some((index, rule)) = &r.rule {
        out += &format!("  rule: [[route]] #{index} ({rule}) matched\n");
    }
    if let Some(d) = &r.discovery {
        if d.attempts.len() > 1 {
            out += "  sub-domain stripping: on\n";
        }
        for a in &d.attempts {
            let what = match a.outcome {
                AttemptOutcome::Found => "found",
                AttemptOutcome::NoRecords => "no records",
                AttemptOutcome::NoService => "target \".\": service decidedly not available",
                AttemptOutcome::LocalDomain => {
                    "not queried: a local domain (its SRV points at this bridge)"
                }
            };
            out += &format!("  SRV {}: {what}\n", a.name);
        }
        if let Some(s) = &d.service {
            let mut records = s.records.clone();
            records.sort_by_key(|r| (r.priority, std::cmp::Reverse(r.weight)));
            for rec in records {
                out += &format!(
                    "    priority {} weight {} port {} target {} (TTL {} s)\n",
                    rec.priority, rec.weight, rec.port, rec.target, rec.ttl
                );
            }
            out += &match s.path_from {
                PathSource::Txt { ttl } => {
                    format!("  path: {} (from TXT path=, TTL {ttl} s)\n", s.path)
                }
                PathSource::WellKnown => {
                    format!("  path: {} (no TXT path=, well-known fallback)\n", s.path)
                }
            };
        }
    }
    out += &match &r.decision {
        Decision::Native { receiver } => match &receiver.target {
            Target::Url { url } => format!("  => native receiver {url}\n"),
            Target::Srv { service } => format!(
                "  => native receiver over HTTPS at {} ({})\n",
                service.domain, receiver.id
            ),
        },
        Decision::Imip { why } => format!(
            "  => iMIP mail ({why}); replies come back by {}\n",
            match r.reply_routing {
                ReplyRouting::Token => "reply token",
                ReplyRouting::OrganizerDomain => "the organizer's mail domain",
            }
        ),
        Decision::NoReceiver { why } => {
            format!("  => no receiver ({why}) => 5.3;No scheduling support for user\n")
        }
        Decision::Failed { why } => {
            format!("  => DNS failure ({why}) => 5.1;Service unavailable\n")
        }
    };
    out += &match check {
        ReceiverCheck::NotAsked => String::new(),
        ReceiverCheck::Unreachable(why) => format!("  capabilities: unreachable: {why}\n"),
        ReceiverCheck::Capabilities(CapabilityOutcome::Unknown { why }) => {
            format!("  capabilities: unknown: {why}\n")
        }
        ReceiverCheck::Capabilities(CapabilityOutcome::Known {
            capabilities: c,
            from,
            ..
        }) => {
            let components: Vec<String> = c
                .scheduling
                .iter()
                .map(|s| match &s.methods {
                    None => format!("{} (any method)", s.component),
                    Some(m) => format!(
                        "{} ({})",
                        s.component,
                        m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" ")
                    ),
                })
                .collect();
            format!(
                "  capabilities from {from}: serial {}, versions {}, max-recipients {}, max-content-length {}, {}\n",
                c.serial,
                c.versions.join(" "),
                c.max_recipients.map_or("unlimited".into(), |n| n.to_string()),
                c.max_content_length.map_or("unlimited".into(), |n| n.to_string()),
                components.join(", ")
            )
        }
    };
    out
}

pub fn json(r: &Routed, check: &ReceiverCheck) -> Value {
    let capabilities = match check {
        ReceiverCheck::NotAsked => Value::Null,
        ReceiverCheck::Unreachable(why) => json!({ "unreachable": why }),
        ReceiverCheck::Capabilities(CapabilityOutcome::Unknown { why }) => {
            json!({ "unknown": why })
        }
        ReceiverCheck::Capabilities(CapabilityOutcome::Known {
            capabilities: c,
            from,
            ..
        }) => json!({
            "from": from,
            "serial": c.serial,
            "versions": c.versions,
            "max_recipients": c.max_recipients,
            "max_content_length": c.max_content_length,
            "components": c.scheduling.iter().map(|s| json!({
                "component": s.component.as_str(),
                "methods": s.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
        }),
    };
    json!({
        "address": r.address,
        "rule": r.rule.as_ref().map(|(i, d)| json!({ "index": i, "match": d })),
        "discovery": r.discovery,
        "mode": r.mode,
        "reply_routing": r.reply_routing,
        "decision": r.decision,
        "capabilities": capabilities,
    })
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::NativeThenImip => format!("{mode} (mail when there is no receiver or it fails)"),
        _ => mode.to_string(),
    }
}
