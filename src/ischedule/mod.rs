//! The iSchedule protocol (CalConnect CC/WD 51010:2017): headers, XML
//! bodies, capabilities, request-status codes, `IS:error` elements (and the
//! mapping of iTIP's faults onto them) and request validation. Calendar
//! user addresses and the iCalendar rules come from `itip`.

pub mod capabilities;
pub mod error;
pub mod headers;
pub mod request;
pub mod status;
pub mod xml;

pub use error::{IsError, Rejection};
pub use status::{RequestStatus, StatusCode};

/// The XML namespace of every iSchedule element.
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:ischedule";
/// The one protocol version this bridge speaks, sends and advertises.
pub const VERSION: &str = "1.0";
