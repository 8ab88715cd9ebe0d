//! The last step: one response per recipient, in request order, whatever
//! path each took, and the log entry that says which path that was.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::delivery::{response, Author};
use super::idempotency::Recorded;
use crate::ischedule::xml::{RecipientResponse, ScheduleResponse};
use crate::ischedule::{RequestStatus, StatusCode};
use crate::itip::CalAddress;
use crate::metrics::Path;
use crate::routing::{Decision, Routed};

/// What happened to one recipient, for the one log line per POST.
#[derive(Debug, Serialize)]
pub struct RecipientLog {
    pub recipient: String,
    pub route: String,
    pub receiver: Option<String>,
    pub status: String,
    #[serde(skip)]
    pub author: Author,
    /// How the recipient was reached: native, mail, a recorded answer, or
    /// not at all.
    #[serde(skip)]
    pub path: Path,
    /// The description withheld from the sender (see [`withhold_details`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything one run of the steps found out, by recipient.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub routed: Vec<Routed>,
    pub answers: HashMap<CalAddress, RecipientResponse>,
    /// Recipients whose answer is their receiver's own.
    pub relayed: HashSet<CalAddress>,
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
                // Recorded answers do not say who wrote them.
                author: Author::Bridge,
                path: Path::Recorded,
                detail: None,
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
        let receiver = routed.and_then(|r| match &r.decision {
            Decision::Native { receiver } => Some(receiver.id.clone()),
            _ => None,
        });
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
            path: match (mailed, &receiver) {
                (true, _) => Path::Imip,
                (false, Some(_)) => Path::Native,
                (false, None) => Path::None,
            },
            receiver,
            status: answer.status.to_string(),
            author: if outcomes.relayed.contains(recipient) {
                Author::Receiver
            } else {
                Author::Bridge
            },
            detail: None,
        });
        responses.push(answer);
    }
    (ScheduleResponse { responses }, log)
}

/// For senders that are not local: every description the bridge wrote
/// itself becomes a fixed sentence for its status, and the original moves to
/// the log entry. Those descriptions name receivers' and relays' addresses
/// and ports, TLS and DNS errors: a map of the internal network for anyone
/// who can POST. The status code, and a receiver's own answer, stay.
pub fn withhold_details(response: &mut ScheduleResponse, log: &mut [RecipientLog]) {
    for (answer, entry) in response.responses.iter_mut().zip(log) {
        if entry.author == Author::Bridge {
            let public = Some(public_description(&answer.status).to_string());
            entry.detail = std::mem::replace(&mut answer.description, public);
        }
    }
}

fn public_description(status: &RequestStatus) -> &'static str {
    match status.code {
        StatusCode::PENDING => "accepted; delivery is pending",
        StatusCode::SENT => "sent by mail",
        StatusCode::DELIVERED => "delivered by mail",
        StatusCode::SERVICE_UNAVAILABLE => "receiver not reachable",
        StatusCode::NO_SCHEDULING_SUPPORT => "no scheduling support for this user",
        StatusCode::INVALID_USER => "invalid calendar user",
        StatusCode::NO_AUTHORITY => "no authority",
        StatusCode::TOO_LARGE => "too large for the receiver",
        StatusCode::UNSUPPORTED_CAPABILITY => "not supported by the receiver",
        code if code.is_success() => "delivered",
        _ => "not delivered",
    }
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
