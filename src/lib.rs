//! ischedule-bridge: a Pingora-based gateway between iSchedule (iTIP over
//! HTTP, CalConnect CC/WD 51010:2017) and the rest of the calendar world.
//!
//! Layout follows the flow of a request: `proxy` accepts it, `ischedule`
//! and `itip` read and check it, `routing` and `discovery` find where each
//! recipient's receiver is, and `proxy::forward` delivers to it.

pub mod app;
pub mod config;
pub mod digest;
pub mod discovery;
pub mod imip;
pub mod ischedule;
pub mod itip;
pub mod mail;
pub mod proxy;
pub mod routing;
pub mod smtp;
pub mod store;
