//! The Pingora side: the HTTP service, the scheduling fan-out, the
//! receivers' client and the no-open-relay rule.

pub mod forward;
pub mod mail_listeners;
pub mod own_capabilities;
pub mod queue_worker;
pub mod schedule;
pub mod senders;
pub mod service;
pub mod upstream;
