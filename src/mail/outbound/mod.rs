//! Mail going out: the scheduling core's mail delivery ([`imip_delivery`]:
//! compose, then send or queue), the [`transport`] (an SMTP relay, the
//! recipient domain's MX, or an outbox folder when no mail server is
//! configured), the durable [`queue`] that retries temporary failures and
//! its admin interface ([`queue_admin`]), and the delivery status
//! notifications the bridge writes ([`dsn`]). What an outcome means to the iSchedule sender is
//! `crate::smtp`'s status map, which the configuration loads.

pub mod dsn;
pub mod imip_delivery;
pub mod queue;
pub mod queue_admin;
pub mod transport;
