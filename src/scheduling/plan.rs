//! Steps one and two of a request: each recipient's routing decision, and
//! the recipients grouped by receiver (one POST per receiver, spec 5.1),
//! set aside for mail, or answered at once.

use std::collections::{HashMap, HashSet};

use super::delivery::{response, ByMail};
use super::MailPolicy;
use crate::ischedule::xml::RecipientResponse;
use crate::ischedule::RequestStatus;
use crate::itip::CalAddress;
use crate::routing::{Decision, Receiver, Routed};

/// Recipients that share a receiver, in request order.
#[derive(Debug, Clone)]
pub struct Group {
    pub receiver: Receiver,
    pub members: Vec<CalAddress>,
}

/// Where every recipient is headed before anything is sent.
#[derive(Debug, Default)]
pub struct Plan {
    pub groups: Vec<Group>,
    pub by_mail: Vec<ByMail>,
    /// Recipients whose answer is known without sending anything.
    pub answered: HashMap<CalAddress, RecipientResponse>,
    /// Recipients of `answered` whose answer is their receiver's own.
    pub relayed: HashSet<CalAddress>,
}

/// Groups by receiver id, so domains served by the same receiver travel in
/// one POST; mail only where `policy` allows it.
pub fn plan(routed: &[Routed], policy: MailPolicy) -> Plan {
    let mut plan = Plan::default();
    for r in routed {
        let answer = |status, why: &str| (r.address.clone(), response(&r.address, status, why));
        match &r.decision {
            Decision::Native { receiver } => {
                match plan
                    .groups
                    .iter_mut()
                    .find(|g| g.receiver.id == receiver.id)
                {
                    Some(group) => group.members.push(r.address.clone()),
                    None => plan.groups.push(Group {
                        receiver: receiver.clone(),
                        members: vec![r.address.clone()],
                    }),
                }
            }
            Decision::Imip { why } if policy == MailPolicy::Never => {
                let (k, v) = answer(RequestStatus::no_scheduling_support(), why);
                plan.answered.insert(k, v);
            }
            Decision::Imip { why } => plan.by_mail.push(ByMail {
                address: r.address.clone(),
                reply_routing: r.reply_routing,
                why: why.clone(),
            }),
            Decision::NoReceiver { why } => {
                let (k, v) = answer(RequestStatus::no_scheduling_support(), why);
                plan.answered.insert(k, v);
            }
            Decision::Failed { why } => {
                let (k, v) = answer(RequestStatus::service_unavailable(), why);
                plan.answered.insert(k, v);
            }
        }
    }
    plan
}
