//! The `METHOD:REPLY` that tells an organizer an attendee could not be
//! reached by mail (DESIGN.md: retries exhausted, or a bounce after the
//! iSchedule answer went out). It carries `REQUEST-STATUS` for the attendee,
//! so the organizer's calendar shows the failure instead of silence.

use super::ComponentKind;

/// What the REPLY says; addresses are calendar user addresses (`mailto:`).
#[derive(Debug, Clone)]
pub struct FailureReply<'a> {
    pub organizer: &'a str,
    pub attendee: &'a str,
    pub uid: &'a str,
    pub component: ComponentKind,
    pub recurrence_id: Option<&'a str>,
    /// Code and description, e.g. `5.1;Service unavailable`.
    pub status: &'a str,
    /// What the mail system said, quoted as the status's extra data.
    pub detail: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub dtstamp: &'a str,
}

impl FailureReply<'_> {
    /// The iCalendar object, CRLF line ends, lines folded at 75 octets.
    pub fn to_ical(&self) -> String {
        let mut lines = vec![
            "BEGIN:VCALENDAR".to_string(),
            "VERSION:2.0".into(),
            "PRODID:-//ischedule-bridge//EN".into(),
            "METHOD:REPLY".into(),
            format!("BEGIN:{}", self.component),
            format!("UID:{}", escape_text(self.uid)),
            format!("DTSTAMP:{}", self.dtstamp),
            format!("ORGANIZER:{}", self.organizer),
            format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:{}", self.attendee),
            format!(
                "REQUEST-STATUS:{};{}",
                self.status,
                escape_text(self.detail)
            ),
        ];
        if let Some(rid) = self.recurrence_id {
            lines.push(format!("RECURRENCE-ID:{rid}"));
        }
        lines.push(format!("END:{}", self.component));
        lines.push("END:VCALENDAR".into());
        lines.iter().map(|l| fold(l) + "\r\n").collect()
    }
}

/// RFC 5545 3.3.11 TEXT escaping.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// RFC 5545 3.1 folding at 75 octets, never inside a UTF-8 sequence.
fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 74 * 3);
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::itip::ItipMessage;

    fn reply(detail: &str) -> String {
        FailureReply {
            organizer: "mailto:bob@cyrus.test",
            attendee: "mailto:carol@mail.test",
            uid: "abc@example.com",
            component: ComponentKind::VEvent,
            recurrence_id: None,
            status: "5.1;Service unavailable",
            detail,
            dtstamp: "20261121T120000Z",
        }
        .to_ical()
    }

    #[test]
    fn is_a_valid_reply_from_the_attendee() {
        let ical = reply("550 5.1.1 No such user; tried twice");
        let msg = ItipMessage::parse(&ical).unwrap();
        assert_eq!(msg.method, crate::itip::Method::Reply);
        assert_eq!(msg.attendees.len(), 1);
        assert!(ical.contains(
            "REQUEST-STATUS:5.1;Service unavailable;550 5.1.1 No such user\\; tried twice\r\n"
        ));
    }

    #[test]
    fn long_details_are_folded_within_75_octets() {
        let ical = reply(&"é".repeat(200));
        assert!(ical.split("\r\n").all(|l| l.len() <= 75), "{ical}");
        assert!(ItipMessage::parse(&ical).is_ok());
    }
}
