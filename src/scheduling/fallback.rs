//! Step four: what native delivery gave each recipient becomes its answer,
//! or, for a `native-then-imip` route whose receiver failed in a way mail
//! can help with, a reason to send mail instead.

use std::collections::HashMap;

use super::delivery::{Author, ByMail, Delivered};
use super::plan::{Group, Plan};
use super::MailPolicy;
use crate::config::Mode;
use crate::itip::CalAddress;
use crate::routing::Routed;

/// Moves each group's results into `plan`: answers, or more mail.
pub fn fall_back(
    plan: &mut Plan,
    routed: &[Routed],
    groups: &[Group],
    delivered: Vec<Vec<Delivered>>,
    policy: MailPolicy,
) {
    // Mail that came in is never mailed again (no loops), whatever the mode.
    let may_mail: HashMap<&CalAddress, &Routed> = routed
        .iter()
        .filter(|r| r.mode == Mode::NativeThenImip && policy == MailPolicy::PerMode)
        .map(|r| (&r.address, r))
        .collect();
    for (group, results) in groups.iter().zip(delivered) {
        for (member, d) in group.members.iter().zip(results) {
            match may_mail.get(member).filter(|_| d.fallback) {
                Some(r) => plan.by_mail.push(ByMail {
                    address: member.clone(),
                    reply_routing: r.reply_routing,
                    why: format!(
                        "native delivery failed ({}), sent by mail instead",
                        d.response.description.unwrap_or_default()
                    ),
                }),
                None => {
                    if d.author == Author::Receiver {
                        plan.relayed.insert(member.clone());
                    }
                    plan.answered.insert(member.clone(), d.response);
                }
            }
        }
    }
}
