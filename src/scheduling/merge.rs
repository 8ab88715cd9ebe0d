//! The last step: one response per recipient, in request order, whatever
//! path each took, and the log entry that says which path that was.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::delivery::response;
use super::idempotency::Recorded;
use crate::ischedule::xml::{RecipientResponse, ScheduleResponse};
use crate::ischedule::RequestStatus;
use crate::itip::CalAddress;
use crate::routing::{Decision, Routed};

/// What happened to one recipient, for the one log line per POST.
#[derive(Debug, Serialize)]
pub struct RecipientLog {
    pub recipient: String,
    pub route: String,
    pub receiver: Option<String>,
    pub status: String,
}

/// Everything one run of the steps found out, by recipient.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub routed: Vec<Routed>,
    pub answers: HashMap<CalAddress, RecipientResponse>,
    /// Recipients that went by mail (directly or after a native failure).
    pub mailed: HashSet<CalAddress>,
}

/// Orders the answers as the request named the recipients: those answered
/// from the idempotency record first looked up there, the rest from this
/// run (a recipient with no answer at all gets 5.1, never silence).
pub fn merge(
    recipients: &[CalAddress],
    recorded: &Recorded,
    mut outcomes: Outcomes,
) -> (ScheduleResponse, Vec<RecipientLog>) {
    let routed: HashMap<&CalAddress, &Routed> =
        outcomes.routed.iter().map(|r| (&r.address, r)).collect();
    let mut responses = Vec::with_capacity(recipients.len());
    let mut log = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        if let Some(repeat) = recorded.answer(recipient) {
            log.push(RecipientLog {
                recipient: recipient.to_string(),
                route: "repeat".into(),
                receiver: None,
                status: repeat.status.to_string(),
            });
            responses.push(repeat.clone());
            continue;
        }
        let answer = outcomes.answers.remove(recipient).unwrap_or_else(|| {
            response(
                recipient,
                RequestStatus::service_unavailable(),
                "no delivery attempt was made",
            )
        });
        let routed = routed.get(recipient);
        let mailed = outcomes.mailed.contains(recipient);
        log.push(RecipientLog {
            recipient: recipient.to_string(),
            route: match routed {
                Some(r) if mailed && matches!(r.decision, Decision::Native { .. }) => {
                    format!("{} then imip", route_label(r))
                }
                _ if mailed => "imip".into(),
                Some(r) => route_label(r),
                None => "none".into(),
            },
            receiver: routed.and_then(|r| match &r.decision {
                Decision::Native { receiver } => Some(receiver.id.clone()),
                _ => None,
            }),
            status: answer.status.to_string(),
        });
        responses.push(answer);
    }
    (ScheduleResponse { responses }, log)
}

fn route_label(r: &Routed) -> String {
    match (&r.decision, &r.rule) {
        (Decision::Native { .. }, Some((index, rule))) => format!("rule[{index}] {rule}"),
        (Decision::Native { .. }, None) => "srv".into(),
        (Decision::Imip { .. }, _) => "imip".into(),
        (Decision::NoReceiver { .. }, _) => "no-receiver".into(),
        (Decision::Failed { .. }, _) => "dns-failure".into(),
    }
}
