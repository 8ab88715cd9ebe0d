//! iCalendar reading and the iTIP rules iSchedule applies to it.
//!
//! Calendar data passing through the bridge is never re-serialised: these
//! modules only read it, so every byte the sender wrote reaches the receiver.

pub mod datetime;
pub mod method;

pub use datetime::Stamp;
pub use method::{ComponentKind, Method, Role};
pub mod edit;
pub mod failure_reply;
pub mod message;
pub mod rules;
pub use message::{Attachments, Instances, ItipMessage};
