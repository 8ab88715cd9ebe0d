//! Who is asking the bridge to schedule, and what vouched for them: one
//! notion for iSchedule POSTs and for mail, so the no-open-relay rule reads
//! the same on both paths.

use std::fmt;

use crate::config::Config;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::{IsError, Rejection};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A local calendar server or mail client (allow-listed address, shared
    /// secret, SMTP AUTH), and how it proved it: it may speak for the local
    /// domains and address anyone.
    Local { by: String },
    /// A remote party whose address a domain-level check verified (DMARC
    /// for a mail's From, DKIM for an iSchedule POST's Originator), and the
    /// check's verdict in words.
    Verified { address: String, by: String },
    /// Nothing vouches, and why.
    Unverified { why: String },
    /// The checks could not finish (DNS trouble): ask again later.
    Undecided { why: String },
}

impl Sender {
    /// A remote iSchedule sender before its signature is looked at.
    pub fn remote() -> Sender {
        Sender::Unverified {
            why: "unauthenticated".into(),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Sender::Local { .. })
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Local { by } => write!(f, "local ({by})"),
            Sender::Verified { address, by } => write!(f, "verified {address} ({by})"),
            Sender::Unverified { why } => write!(f, "remote ({why})"),
            Sender::Undecided { why } => write!(f, "undecided ({why})"),
        }
    }
}

/// No open relay: a local sender may address anyone; anyone else only the
/// local domains, and may not claim to be a local user. A verified sender
/// speaks only for the address that was verified: a signature of its
/// domain lets it in, never out.
pub fn authorize(
    config: &Config,
    sender: &Sender,
    request: &SchedulingRequest,
) -> Result<(), Rejection> {
    if sender.is_local() {
        return Ok(());
    }
    if let Sender::Verified { address, by } = sender {
        let originator = &request.originator;
        if originator.email() != Some(address.as_str()) && originator.as_str() != address {
            return Err(Rejection::new(
                IsError::OriginatorDenied,
                format!("the sender was verified as {address} ({by}), not as {originator}"),
            ));
        }
    }
    if config.is_local(&request.originator) {
        return Err(Rejection::new(
            IsError::OriginatorDenied,
            format!(
                "{} is a user of a local domain; only the local calendar servers may send on their behalf",
                request.originator
            ),
        ));
    }
    if let Some(outside) = request.recipients.iter().find(|r| !config.is_local(r)) {
        return Err(Rejection::new(
            IsError::OriginatorDenied,
            format!(
                "this bridge relays only to its local domains ({}) for unauthenticated senders; {outside} is not one of them",
                config.local_domains.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Compares secrets without leaking the matching prefix length through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
