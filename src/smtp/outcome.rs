//! What became of one message to one recipient, in the terms the status map
//! and the queue decide on; the transport that produces it lives in
//! `mail::outbound`.

use std::fmt;
use std::path::PathBuf;

use super::reply::SmtpReply;

/// The outcome of one message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 250 after DATA.
    Accepted { by: AcceptedBy, reply: SmtpReply },
    /// Outbox: the `.eml` file written.
    Written { path: PathBuf },
    /// 4xx at any step, connection failure, TLS failure, timeout: keep and
    /// retry. A refusal while setting up the session (greeting, EHLO,
    /// STARTTLS, AUTH) is temporary too, whatever its code: it is about the
    /// bridge's set-up, not this recipient, and the message is kept until
    /// the admin mends it.
    Temporary { reason: Deferral },
    /// 5xx to MAIL, RCPT or DATA: give up for this recipient; `reply` is
    /// quoted to the sender (`550 5.1.1 No such user here`). Refusals the
    /// bridge makes itself use the same form: an address that does not parse
    /// (553 5.1.3, or 501 5.5.4 for the envelope sender), a domain with
    /// neither MX nor address (550 5.1.2), a null MX (556 5.1.10), 8-bit
    /// content or a non-ASCII address for a server without 8BITMIME
    /// (554 5.6.3) or SMTPUTF8 (553 5.6.7).
    Permanent { reply: SmtpReply },
}

/// Who said 250.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptedBy {
    Relay,
    Mx,
}

/// Why a message waits for another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferral {
    /// The server's 4xx reply to the transaction.
    Reply(SmtpReply),
    /// No reply to quote: what went wrong (`relay 127.0.0.1:25: cannot
    /// connect: ...`), including refusals while setting up the session.
    Failure(String),
}

impl fmt::Display for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deferral::Reply(reply) => reply.fmt(f),
            Deferral::Failure(why) => f.write_str(why),
        }
    }
}
