//! iMIP (RFC 6047), iTIP as e-mail messages, both ways, without the SMTP:
//! going out, [`outbound`] composes one message per recipient (reply
//! routing, tokens) with the MIME [`builder`] and the human [`summary`];
//! coming in, [`inbound`] finds the one iTIP object (or the delivery report)
//! in any MIME layout, [`authenticate`] checks DMARC/DKIM/SPF, and
//! [`to_ischedule`] turns the object into the iSchedule request it stands
//! for (spec tables 1 and 2).
//!
//! The calendar object travels byte for byte (the parts clients act on);
//! `summary` only reads it to give the human-readable parts and the subject.

pub mod authenticate;
pub mod builder;
pub mod inbound;
pub mod outbound;
pub mod summary;
pub mod to_ischedule;
