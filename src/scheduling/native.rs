//! Step three: native delivery to one receiver (spec 5.1). Check the
//! message against the receiver's capabilities before sending, split the
//! recipients at its `max-recipients`, and give every recipient a result
//! even when the receiver is slow or gone.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::delivery::{Delivered, Failure, NativeDelivery};
use super::plan::Group;
use crate::discovery::CapabilityOutcome;
use crate::ischedule::capabilities::CapabilityMismatch;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::{RequestStatus, StatusCode};
use crate::itip::{edit, CalAddress, ComponentKind};
use crate::routing::Receiver;

/// A group that does not finish within `limit` answers 5.1 rather than
/// holding up the other groups' answers.
pub async fn deliver_within(
    native: &dyn NativeDelivery,
    limit: Duration,
    request: &SchedulingRequest,
    group: &Group,
) -> Vec<Delivered> {
    let started = Instant::now();
    let delivery = deliver(native, request, &group.receiver, &group.members);
    match tokio::time::timeout(limit, delivery).await {
        Ok(delivered) => delivered,
        Err(_) => Failure::unreachable(format!(
            "delivery to {} did not finish within {:.0} s",
            group.receiver.id,
            started.elapsed().as_secs_f64()
        ))
        .for_all(&group.members),
    }
}

/// Every recipient of one receiver; one result per recipient, in order.
pub async fn deliver(
    native: &dyn NativeDelivery,
    request: &SchedulingRequest,
    receiver: &Receiver,
    recipients: &[CalAddress],
) -> Vec<Delivered> {
    let contact = match native.contact(receiver).await {
        Ok(contact) => contact,
        Err(failure) => return failure.for_all(recipients),
    };
    let chunk = match &contact.capabilities {
        CapabilityOutcome::Known { capabilities, .. } => {
            if let Err(m) = capabilities.check(&request.facts()) {
                return mismatch(&m, &contact.at).for_all(recipients);
            }
            capabilities.max_recipients.unwrap_or(usize::MAX).max(1)
        }
        // Lenient to receivers without a readable document: they judge it.
        CapabilityOutcome::Unknown { .. } => usize::MAX,
    };
    let mut delivered = Vec::with_capacity(recipients.len());
    for part in recipients.chunks(chunk) {
        let body = part_body(request, part);
        delivered.extend(native.post(request, receiver, &contact, part, body).await);
    }
    delivered
}

/// Spec 5.1: a VFREEBUSY's ATTENDEEs must match its POST's Recipients one
/// for one, so each part keeps only its own; everything else travels as sent.
fn part_body(request: &SchedulingRequest, part: &[CalAddress]) -> Bytes {
    if request.itip.component == ComponentKind::VFreeBusy {
        Bytes::from(edit::retain_attendees(
            &String::from_utf8_lossy(&request.body),
            part,
        ))
    } else {
        request.body.clone()
    }
}

/// Not sent: the receiver said it would not take it. Mail may stand in.
fn mismatch(m: &CapabilityMismatch, at: &str) -> Failure {
    let status = match m {
        CapabilityMismatch::ContentLength { .. } => {
            RequestStatus::new(StatusCode::TOO_LARGE, "Request entity too large")
        }
        _ => RequestStatus::new(StatusCode::UNSUPPORTED_CAPABILITY, "Unsupported capability"),
    };
    Failure {
        status,
        description: format!("not sent: the receiver at {at} does not accept it: {m}"),
        fallback: true,
    }
}
