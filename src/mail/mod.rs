//! Outbound iMIP mail: how a message leaves the bridge ([`transport`]: an
//! SMTP relay, the recipient domain's MX, or an outbox folder when no mail
//! server is configured) and what each SMTP outcome means to the iSchedule
//! sender ([`status_map`], DESIGN.md "Status mapping").

pub mod dsn;
pub mod imip_delivery;
pub mod intake;
pub mod listener;
pub mod lmtp_client;
pub mod queue;
pub mod queue_admin;
pub mod status_map;
pub mod transport;
