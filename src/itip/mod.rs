//! iCalendar reading and the iTIP rules, free of any transport: calendar
//! user addresses, content lines read into components, the parsed message
//! and its iTIP faults, tables 1 and 2, and byte-faithful content-line
//! edits.
//!
//! Calendar data passing through the bridge is never re-serialised: these
//! modules only read it, or edit single content lines, so every other byte
//! the sender wrote reaches the receiver.

pub mod address;
mod content;
pub mod datetime;
pub mod edit;
pub mod error;
pub mod failure_reply;
pub mod message;
pub mod method;
pub mod rules;

pub use address::CalAddress;
pub use datetime::Stamp;
pub use error::{Fault, ItipError};
pub use message::{Attachments, Instances, ItipMessage};
pub use method::{ComponentKind, Method, Role};
