//! ischedule-bridge: a Pingora-based gateway between iSchedule (iTIP over
//! HTTP, CalConnect CC/WD 51010:2017) and iMIP (iTIP over e-mail).
//!
//! Modules are listed from the ground up; each may use only those above it
//! in this list (README "Layering", checked by `tests/layering.rs`):
//! `digest`, `itip` (iCalendar and iTIP), `ischedule` (the HTTP protocol),
//! `config`, `store`, `discovery`, `routing`, `scheduling` (the
//! transport-neutral core), `imip` (iTIP as mail), `mail` (SMTP in and out),
//! `proxy` (the Pingora adapters) and `app` (the wiring).

pub mod app;
pub mod config;
pub mod digest;
pub mod discovery;
pub mod imip;
pub mod ischedule;
pub mod itip;
pub mod mail;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod scheduling;
pub mod smtp;
pub mod store;
