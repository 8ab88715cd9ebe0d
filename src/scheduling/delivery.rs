//! The two ways a recipient's message leaves the bridge, as the core sees
//! them: native iSchedule delivery to a receiver, and iMIP mail. The
//! transports implement these traits from above (`proxy` over HTTP with
//! Pingora's connectors, `mail` over SMTP), so the core's decisions are
//! tested without sockets.

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::ReplyRouting;
use crate::discovery::CapabilityOutcome;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::xml::RecipientResponse;
use crate::ischedule::RequestStatus;
use crate::itip::CalAddress;
use crate::routing::Receiver;

/// One recipient's native result. `fallback` marks the failures after which
/// a `native-then-imip` route sends mail instead: the receiver could not be
/// reached, answered 5xx, or lacks a capability the message needs.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub response: RecipientResponse,
    pub fallback: bool,
    pub author: Author,
}

/// Who wrote a recipient's answer. A receiver's own words go back as they
/// came; what the bridge writes may name internal hosts, ports and TLS
/// errors, which only local senders are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Author {
    Receiver,
    #[default]
    Bridge,
}

/// The same failure for every recipient of a group or part.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: RequestStatus,
    pub description: String,
    pub fallback: bool,
}

impl Failure {
    /// DESIGN.md: a receiver that cannot be reached is `5.1`, with what was
    /// tried; mail may stand in for it.
    pub fn unreachable(description: String) -> Failure {
        Failure {
            status: RequestStatus::service_unavailable(),
            description,
            fallback: true,
        }
    }

    pub fn for_all(&self, recipients: &[CalAddress]) -> Vec<Delivered> {
        recipients
            .iter()
            .map(|r| Delivered {
                response: response(r, self.status.clone(), &self.description),
                fallback: self.fallback,
                author: Author::Bridge,
            })
            .collect()
    }
}

/// A receiver as reached: what it accepts, and where its POSTs go.
#[derive(Debug, Clone)]
pub struct Contact {
    pub capabilities: CapabilityOutcome,
    /// The URL that answered, after redirects (the well-known URI commonly
    /// redirects, and POSTs then go straight there), with its port spelt
    /// out, as descriptions quote it.
    pub at: String,
}

/// Native iSchedule delivery to one receiver.
#[async_trait]
pub trait NativeDelivery: Send + Sync {
    /// Reaches the receiver (its targets in order) and learns its
    /// capabilities, from a cache where fresh.
    async fn contact(&self, receiver: &Receiver) -> Result<Contact, Failure>;

    /// POSTs `body` to `recipients` (already at most the receiver's
    /// `max-recipients`), starting where `contact` answered and failing over
    /// to the receiver's other targets. Exactly one result per recipient, in
    /// the order given.
    async fn post(
        &self,
        request: &SchedulingRequest,
        receiver: &Receiver,
        contact: &Contact,
        recipients: &[CalAddress],
        body: Bytes,
    ) -> Vec<Delivered>;
}

/// A recipient on its way to mail, and why it goes there.
#[derive(Debug, Clone)]
pub struct ByMail {
    pub address: CalAddress,
    pub reply_routing: ReplyRouting,
    pub why: String,
}

/// iMIP delivery: one message per recipient.
#[async_trait]
pub trait MailDelivery: Send + Sync {
    /// Sends (or durably queues) one message to each recipient. Exactly one
    /// response per recipient, in the order given; the description says
    /// what the mail server did and why mail was used.
    async fn send(
        &self,
        request: &SchedulingRequest,
        recipients: &[ByMail],
    ) -> Vec<RecipientResponse>;
}

/// A response the bridge writes itself: status and why, no calendar data.
pub fn response(recipient: &CalAddress, status: RequestStatus, why: &str) -> RecipientResponse {
    RecipientResponse {
        recipient: recipient.as_str().to_string(),
        status,
        calendar_data: None,
        error: None,
        description: Some(why.to_string()),
    }
}
