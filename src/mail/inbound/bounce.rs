//! Which delivery reports the bridge honours (DESIGN.md "Security model":
//! only what the bridge sent comes back as a failure). A report turns into
//! a REPLY with `REQUEST-STATUS:5.1` posted in an attendee's name, so
//! anyone who can reach the listener could otherwise make the bridge speak
//! for local users toward any domain. It is honoured only for a Message-ID
//! the bridge recorded as sent, only for the one attendee that mail went
//! to, and the REPLY is built from the record (its organizer, attendee and
//! UID), never from the calendar the report quotes.

use crate::imip::inbound::Bounce;
use crate::itip::{CalAddress, ItipMessage};
use crate::store::FailureNotice;

/// Why a delivery report is not honoured; each is the text of a 550.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BounceRefusal {
    #[error("a delivery report that does not name the Message-ID of the returned mail")]
    NoMessageId,
    #[error(
        "a delivery report about <{0}>, which this bridge did not send (or no longer remembers)"
    )]
    NotSent(String),
    #[error("a delivery report about <{message_id}> that names no failed recipient")]
    NoFailedRecipient { message_id: String },
    #[error(
        "a delivery report about <{message_id}> for {named}, but that mail went to {sent_to} only"
    )]
    OtherRecipient {
        message_id: String,
        named: String,
        sent_to: String,
    },
    #[error("a delivery report about <{message_id}> quoting event {quoted}, but that mail was about {sent}")]
    OtherEvent {
        message_id: String,
        quoted: String,
        sent: String,
    },
}

/// The notice to report for `bounce`, given what the store recorded for
/// its Message-ID (`None`: nothing, or expired).
pub fn honoured(
    bounce: &Bounce,
    record: Option<FailureNotice>,
) -> Result<FailureNotice, BounceRefusal> {
    let message_id = bounce
        .original_message_id
        .clone()
        .ok_or(BounceRefusal::NoMessageId)?;
    let record = record.ok_or_else(|| BounceRefusal::NotSent(message_id.clone()))?;
    if bounce.recipients.is_empty() {
        return Err(BounceRefusal::NoFailedRecipient { message_id });
    }
    let sent_to = CalAddress::parse(&record.attendee)
        .ok()
        .and_then(|a| a.email().map(str::to_owned))
        .unwrap_or_else(|| record.attendee.clone());
    if !bounce
        .recipients
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&sent_to))
    {
        return Err(BounceRefusal::OtherRecipient {
            message_id,
            named: bounce.recipients.join(", "),
            sent_to,
        });
    }
    // The quote is not trusted for anything, but one about another event
    // shows the report was not written about this mail.
    let quoted = bounce
        .original_calendar
        .as_deref()
        .and_then(|c| ItipMessage::parse(c).ok());
    if let Some(quoted) = quoted.filter(|q| q.uid != record.uid) {
        return Err(BounceRefusal::OtherEvent {
            message_id,
            quoted: quoted.uid,
            sent: record.uid,
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FailureNotice {
        FailureNotice {
            message_id: "abc@bridge.test".into(),
            organizer: "mailto:bob@cyrus.test".into(),
            attendee: "mailto:Carol@Mail.test".into(),
            uid: "u1".into(),
            component: "VEVENT".into(),
            recurrence_id: None,
        }
    }

    fn bounce(recipients: &[&str], calendar_uid: Option<&str>) -> Bounce {
        Bounce {
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            status: None,
            diagnostic: None,
            original_message_id: Some("abc@bridge.test".into()),
            original_calendar: calendar_uid.map(|uid| {
                format!(
                    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n\
                     DTSTAMP:20301101T000000Z\r\nDTSTART:20301102T100000Z\r\n\
                     ORGANIZER:mailto:mallory@evil.test\r\nATTENDEE:mailto:carol@mail.test\r\n\
                     END:VEVENT\r\nEND:VCALENDAR\r\n"
                )
            }),
        }
    }

    #[test]
    fn a_report_for_the_recorded_attendee_is_honoured_from_the_record() {
        // The quote names another organizer: the record decides who hears of it.
        let notice = honoured(&bounce(&["carol@mail.test"], Some("u1")), Some(record())).unwrap();
        assert_eq!(notice, record());
        let notice = honoured(
            &bounce(&["x@y.test", "carol@mail.test"], None),
            Some(record()),
        );
        assert_eq!(notice, Ok(record()));
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let mut no_id = bounce(&["carol@mail.test"], None);
        no_id.original_message_id = None;
        assert_eq!(
            honoured(&no_id, Some(record())),
            Err(BounceRefusal::NoMessageId)
        );
        let e = honoured(&bounce(&["carol@mail.test"], None), None).unwrap_err();
        assert_eq!(e, BounceRefusal::NotSent("abc@bridge.test".into()));
        assert!(e.to_string().contains("did not send"), "{e}");
        let e = honoured(&bounce(&[], None), Some(record())).unwrap_err();
        assert!(matches!(e, BounceRefusal::NoFailedRecipient { .. }), "{e}");
        let e = honoured(&bounce(&["dave@mail.test"], None), Some(record())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a delivery report about <abc@bridge.test> for dave@mail.test, but that mail went to carol@mail.test only"
        );
        let e = honoured(&bounce(&["carol@mail.test"], Some("u2")), Some(record())).unwrap_err();
        assert!(matches!(e, BounceRefusal::OtherEvent { .. }), "{e}");
    }
}
