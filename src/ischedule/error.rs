//! The `IS:error` elements of spec clause 8.3, and the rejection that carries
//! one with a human reason.

use std::fmt;

use crate::itip::{Fault, ItipError};

/// Every error code of clause 8.3 plus `verification-failed` (appendix A.3),
/// which the DKIM layer answers. Exhaustive so each rejection in the code
/// names the element a sender's software can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsError {
    VersionNotSupported,
    InvalidCalendarDataType,
    InvalidCalendarData,
    InvalidSchedulingMessage,
    OriginatorMissing,
    TooManyOriginators,
    OriginatorInvalid,
    OriginatorDenied,
    RecipientMissing,
    RecipientMismatch,
    MaxRecipients,
    AttachmentTypeNotSupported,
    MaxContentLength,
    MinDateTime,
    MaxDateTime,
    MaxInstances,
    VerificationFailed,
}

impl IsError {
    pub const ALL: [IsError; 17] = [
        IsError::VersionNotSupported,
        IsError::InvalidCalendarDataType,
        IsError::InvalidCalendarData,
        IsError::InvalidSchedulingMessage,
        IsError::OriginatorMissing,
        IsError::TooManyOriginators,
        IsError::OriginatorInvalid,
        IsError::OriginatorDenied,
        IsError::RecipientMissing,
        IsError::RecipientMismatch,
        IsError::MaxRecipients,
        IsError::AttachmentTypeNotSupported,
        IsError::MaxContentLength,
        IsError::MinDateTime,
        IsError::MaxDateTime,
        IsError::MaxInstances,
        IsError::VerificationFailed,
    ];

    /// The XML element's local name in the iSchedule namespace.
    pub fn element(self) -> &'static str {
        match self {
            IsError::VersionNotSupported => "version-not-supported",
            IsError::InvalidCalendarDataType => "invalid-calendar-data-type",
            IsError::InvalidCalendarData => "invalid-calendar-data",
            IsError::InvalidSchedulingMessage => "invalid-scheduling-message",
            IsError::OriginatorMissing => "originator-missing",
            IsError::TooManyOriginators => "too-many-originators",
            IsError::OriginatorInvalid => "originator-invalid",
            IsError::OriginatorDenied => "originator-denied",
            IsError::RecipientMissing => "recipient-missing",
            IsError::RecipientMismatch => "recipient-mismatch",
            IsError::MaxRecipients => "max-recipients",
            IsError::AttachmentTypeNotSupported => "attachment-type-not-supported",
            IsError::MaxContentLength => "max-content-length",
            IsError::MinDateTime => "min-date-time",
            IsError::MaxDateTime => "max-date-time",
            IsError::MaxInstances => "max-instances",
            IsError::VerificationFailed => "verification-failed",
        }
    }

    pub fn from_element(name: &str) -> Option<IsError> {
        IsError::ALL.into_iter().find(|e| e.element() == name)
    }

    /// Clause 8.3: 403 when the sender may not submit here at all, 400 when
    /// the request itself is wrong and could be fixed by the sender.
    pub fn http_status(self) -> u16 {
        match self {
            IsError::OriginatorDenied | IsError::VerificationFailed => 403,
            _ => 400,
        }
    }
}

impl fmt::Display for IsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.element())
    }
}

/// A whole-request rejection: the element plus a `response-description`
/// that says exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct Rejection {
    pub error: IsError,
    pub description: String,
}

impl Rejection {
    pub fn new(error: IsError, description: impl Into<String>) -> Rejection {
        Rejection {
            error,
            description: description.into(),
        }
    }
}

/// The one place iTIP's own faults become `IS:error` elements.
impl From<ItipError> for Rejection {
    fn from(e: ItipError) -> Rejection {
        let error = match e.kind {
            Fault::InvalidCalendarData => IsError::InvalidCalendarData,
            Fault::InvalidSchedulingMessage => IsError::InvalidSchedulingMessage,
            Fault::RecipientMissing => IsError::RecipientMissing,
            Fault::RecipientMismatch => IsError::RecipientMismatch,
        };
        Rejection::new(error, e.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_names_round_trip() {
        for e in IsError::ALL {
            assert_eq!(IsError::from_element(e.element()), Some(e));
        }
        assert_eq!(IsError::OriginatorDenied.http_status(), 403);
        assert_eq!(IsError::MaxRecipients.http_status(), 400);
    }
}
