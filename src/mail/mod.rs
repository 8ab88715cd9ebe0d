//! iMIP over the wire, split by direction because the two share nothing but
//! the SMTP vocabulary (in `crate::smtp`): [`outbound`] sends the bridge's
//! mail (transport, durable queue and its admin, the DSNs it writes) and
//! [`inbound`] takes mail in (SMTP/LMTP listener, the intake that turns it
//! into iSchedule, and the LMTP client `ingest` hands mail over with).

pub mod inbound;
pub mod outbound;
