//! SMTP vocabulary without I/O: replies and enhanced status codes, relay
//! routes, delivery outcomes and what they mean to an iSchedule sender.
//! It sits below `config` so the configuration can hold a route and a status
//! map without depending on `mail`, which does the talking.

mod outcome;
mod reply;
mod route;
mod status_map;

pub use outcome::{AcceptedBy, Deferral, Outcome};
pub use reply::{
    EnhancedStatus, EnhancedStatusError, ReplyCode, ReplyLine, ReplyLineError, SmtpReply,
};
pub use route::{Route, RouteError, Security};
pub use status_map::{StatusMap, StatusMapError};
