//! iMIP (RFC 6047): the e-mail messages the bridge writes to carry an iTIP
//! object to a calendar user who has no iSchedule receiver.
//!
//! The calendar object travels byte for byte (the parts clients act on);
//! `summary` only reads it to give the human-readable parts and the subject.

pub mod authenticate;
pub mod builder;
pub mod inbound;
pub mod outbound;
pub mod signing;
pub mod summary;
pub mod to_ischedule;
