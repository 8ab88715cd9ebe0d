//! Mail coming in: the SMTP/LMTP [`listener`] speaks the protocol, the
//! [`intake`] decides what each message means for iSchedule ([`bounce`]:
//! which delivery reports it honours), and the
//! [`lmtp_client`] lets `ingest` hand a message to a running bridge's
//! listener instead of opening the store a second time.

pub mod bounce;
pub mod intake;
pub mod listener;
pub mod lmtp_client;
pub mod xclient;
