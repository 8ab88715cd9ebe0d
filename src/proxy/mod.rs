//! The Pingora adapters, and nothing else knows Pingora: the HTTP service
//! (receiver, pass-through, queue admin), the receivers' client that is the
//! scheduling core's native delivery, who counts as a local sender over
//! HTTP and where remote signers' DKIM keys are fetched, the admin listener
//! (metrics, health, readiness), the work in progress an upgrade waits for
//! before the store is handed over (`in_flight`), and the background
//! services (queue worker, mail listeners).

pub mod admin;
pub mod connections;
pub mod dkim_keys;
pub mod forward;
pub mod in_flight;
pub mod mail_listeners;
pub mod own_capabilities;
pub mod paths;
pub mod queue_worker;
pub mod senders;
pub mod service;
pub mod upstream;
