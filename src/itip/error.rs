//! Why calendar data is not a usable iTIP message.
//!
//! The kinds are iTIP's own; `ischedule` maps each to its `IS:error`
//! element in one place, so the mail path and the HTTP path judge calendar
//! data alike without this module knowing the HTTP protocol.

/// What is wrong, by the part of iTIP it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Not well-formed iCalendar, or a property value that cannot be read.
    InvalidCalendarData,
    /// Well-formed, but not an iTIP message the rules allow.
    InvalidSchedulingMessage,
    /// No recipient where iTIP needs one.
    RecipientMissing,
    /// Recipients that do not match the object's ATTENDEEs.
    RecipientMismatch,
}

/// A fault with the sentence that says exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct ItipError {
    pub kind: Fault,
    pub description: String,
}

impl ItipError {
    pub fn new(kind: Fault, description: impl Into<String>) -> ItipError {
        ItipError {
            kind,
            description: description.into(),
        }
    }
}
