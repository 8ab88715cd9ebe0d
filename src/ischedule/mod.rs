//! The iSchedule protocol (CalConnect CC/WD 51010:2017): addresses, headers,
//! XML bodies, capabilities, error elements and request validation.

pub mod address;
pub mod error;
pub mod request;
pub mod status;

pub use address::CalAddress;
pub use error::{IsError, Rejection};
pub use status::{RequestStatus, StatusCode};

/// The XML namespace of every iSchedule element.
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:ischedule";
/// The one protocol version this bridge speaks, sends and advertises.
pub const VERSION: &str = "1.0";

pub mod capabilities;
pub mod headers;
pub mod xml;
