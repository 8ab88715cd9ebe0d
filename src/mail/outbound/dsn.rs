//! Delivery status notifications (RFC 3464) for the inbound listener: with
//! plain SMTP a transaction whose recipients partly failed is accepted with
//! one 250, and the failures go back to the envelope sender in a DSN
//! (DESIGN.md "Status mapping"). LMTP answers per recipient and needs none.
//!
//! The report is `multipart/report; report-type=delivery-status` (RFC 6522)
//! with three parts: a human `text/plain` notice, the machine-readable
//! `message/delivery-status`, and the original's header as
//! `text/rfc822-headers` (never its body: the invitation stays private and
//! the report small).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::smtp::{EnhancedStatus, SmtpReply};

/// At most this much of the original's header is returned (cut at a line end).
const MAX_RETURNED_HEADER_BYTES: usize = 64 * 1024;
/// Reply texts are cut to this many characters, so every line stays far
/// below the 998-octet limit of RFC 5322.
const MAX_DIAGNOSTIC_CHARS: usize = 400;

/// Builds the DSN for `failures` (recipient, and the reply that refused it)
/// of a message that arrived from `envelope_from`, reported by the MTA
/// `reporting_host`, and returns it as RFC 5322 bytes (CRLF line ends).
///
/// Per recipient: `Final-Recipient: rfc822; <addr>`, `Action: failed` for
/// a 5xx (and anything that is not 2xx/4xx) or `delayed` for a 4xx,
/// `Status:` the reply's enhanced code (else `5.0.0` / `4.0.0` by class),
/// `Diagnostic-Code: smtp; <reply>`. The message is `From:
/// MAILER-DAEMON@<host>`, `To: <envelope_from>` and `Auto-Submitted:
/// auto-replied`. Callers never send one to the null sender (`""`); if they
/// do, `To:` is an empty group. Text that is not printable ASCII is replaced
/// by `?`, so the report itself is 7-bit (bar 8-bit bytes in the returned
/// header, which then travel as `8bit`).
pub fn build(
    reporting_host: &str,
    envelope_from: &str,
    original: &[u8],
    failures: &[(String, SmtpReply)],
) -> Vec<u8> {
    build_at(
        reporting_host,
        envelope_from,
        original,
        failures,
        SystemTime::now(),
    )
}

fn build_at(
    reporting_host: &str,
    envelope_from: &str,
    original: &[u8],
    failures: &[(String, SmtpReply)],
    now: SystemTime,
) -> Vec<u8> {
    let host = match printable(reporting_host, 255) {
        h if h.is_empty() => "localhost".to_owned(),
        h => h,
    };
    let date = rfc5322_date(now);
    let delayed_only = !failures.is_empty() && failures.iter().all(|(_, r)| r.is_transient());

    let mut human = String::new();
    human.push_str(&format!("This is the mail system at {host}.\r\n\r\n"));
    let failed: Vec<_> = failures.iter().filter(|(_, r)| !r.is_transient()).collect();
    let delayed: Vec<_> = failures.iter().filter(|(_, r)| r.is_transient()).collect();
    if !failed.is_empty() {
        human.push_str(
            "Your calendar message could not be delivered to the following\r\n\
             recipients. This is a permanent error; it was not retried.\r\n\r\n",
        );
        for (rcpt, reply) in &failed {
            human.push_str(&format!(
                "  <{}>: {}\r\n",
                printable(rcpt, 256),
                diagnostic(reply)
            ));
        }
        human.push_str("\r\n");
    }
    if !delayed.is_empty() {
        human.push_str("Delivery to the following recipients failed temporarily:\r\n\r\n");
        for (rcpt, reply) in &delayed {
            human.push_str(&format!(
                "  <{}>: {}\r\n",
                printable(rcpt, 256),
                diagnostic(reply)
            ));
        }
        human.push_str("\r\n");
    }
    human.push_str(
        "The other recipients of the message were not affected. The header\r\n\
         of your message is attached.\r\n",
    );

    let mut status = format!("Reporting-MTA: dns; {host}\r\nArrival-Date: {date}\r\n");
    for (rcpt, reply) in failures {
        let enhanced = enhanced(reply);
        let action = if reply.is_transient() {
            "delayed"
        } else {
            "failed"
        };
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\n\
             Status: {enhanced}\r\nDiagnostic-Code: smtp; {}\r\n",
            printable(rcpt, 256),
            diagnostic(reply),
        ));
    }

    let headers = returned_header(original);
    let headers_cte = if headers.is_ascii() { "7bit" } else { "8bit" };

    // A boundary that occurs in none of the parts (random, so in practice the
    // first one).
    let boundary = loop {
        let b = format!(
            "=_dsn_{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let needle = b.as_bytes();
        let clash = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        if !clash(human.as_bytes()) && !clash(status.as_bytes()) && !clash(&headers) {
            break b;
        }
    };
    let to = match printable(envelope_from, 256) {
        a if a.is_empty() => "undisclosed-recipients:;".to_owned(),
        a => format!("<{a}>"),
    };
    let subject = if delayed_only {
        "Delayed calendar message"
    } else {
        "Undelivered calendar message"
    };

    let mut out = Vec::with_capacity(human.len() + status.len() + headers.len() + 1024);
    let mut put = |s: &str| out.extend_from_slice(s.as_bytes());
    put(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: {to}\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <dsn.{:016x}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-formatted delivery status notification.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Description: Notification\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         {human}\
         \r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         {status}\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         Content-Description: Undelivered message header\r\n\
         Content-Transfer-Encoding: {headers_cte}\r\n\
         \r\n",
        rand::random::<u64>(),
    ));
    out.extend_from_slice(&headers);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The reply's enhanced status code, else `class.0.0` (class 5 for anything
/// that is not a 4xx: a DSN only reports failures).
fn enhanced(reply: &SmtpReply) -> EnhancedStatus {
    match reply.enhanced {
        Some(code) => code,
        None if reply.is_transient() => EnhancedStatus::new(4, 0, 0),
        None => EnhancedStatus::new(5, 0, 0),
    }
}

/// `550 5.1.1 text`, printable and bounded.
fn diagnostic(reply: &SmtpReply) -> String {
    printable(&reply.to_string(), MAX_DIAGNOSTIC_CHARS)
}

/// Printable ASCII only (anything else becomes `?`), trimmed, at most `max`
/// characters.
fn printable(s: &str, max: usize) -> String {
    s.trim()
        .chars()
        .take(max)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The original's header section with CRLF line ends, ending in CRLF, at
/// most [`MAX_RETURNED_HEADER_BYTES`] (cut at a line end).
fn returned_header(original: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in original.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the header (or of a message without a body)
        }
        if out.len() + line.len() + 2 > MAX_RETURNED_HEADER_BYTES {
            break;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `Fri, 21 Nov 2025 06:35:00 +0000`
fn rfc5322_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = crate::itip::datetime::civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mail_parser::{MessageParser, MimeHeaders, PartType};

    use super::*;

    const ORIGINAL: &[u8] = b"From: organizer@remote.example\r\n\
        To: alice@example.com, bob@example.com\r\n\
        Subject: Invitation: design meeting\r\n\
        Message-ID: <inv-1@remote.example>\r\n\
        Content-Type: text/calendar; method=REQUEST\r\n\
        \r\n\
        BEGIN:VCALENDAR\r\nSECRET-BODY:yes\r\nEND:VCALENDAR\r\n";

    fn failures() -> Vec<(String, SmtpReply)> {
        vec![
            (
                "bob@example.com".into(),
                SmtpReply::new(
                    550,
                    Some(EnhancedStatus::new(5, 1, 1)),
                    "no such calendar user",
                ),
            ),
            (
                "carol@example.com".into(),
                SmtpReply::new(
                    451,
                    Some(EnhancedStatus::new(4, 4, 1)),
                    "receiver unreachable",
                ),
            ),
            (
                "dave@example.com".into(),
                SmtpReply::new(554, None, "refused"),
            ),
        ]
    }

    fn part_text(part: &mail_parser::MessagePart<'_>) -> String {
        match &part.body {
            PartType::Text(t) => t.to_string(),
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                String::from_utf8_lossy(b).into_owned()
            }
            other => panic!("unexpected part body {other:?}"),
        }
    }

    #[test]
    fn structure_parses_with_mail_parser() {
        let dsn = build(
            "mx.example.com",
            "organizer@remote.example",
            ORIGINAL,
            &failures(),
        );
        let msg = MessageParser::default().parse(&dsn).expect("parses");
        assert_eq!(
            msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("MAILER-DAEMON@mx.example.com")
        );
        assert_eq!(
            msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("organizer@remote.example")
        );
        assert_eq!(msg.subject(), Some("Undelivered calendar message"));
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert!(msg.date().is_some(), "Date parses");
        assert!(msg
            .message_id()
            .is_some_and(|id| id.ends_with("@mx.example.com")));

        let ct = msg.content_type().expect("content type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));

        let PartType::Multipart(children) = &msg.root_part().body else {
            panic!("root is not multipart: {:?}", msg.root_part().body);
        };
        assert_eq!(children.len(), 3);
        let parts: Vec<_> = children.iter().map(|&i| msg.part(i).unwrap()).collect();
        let types: Vec<String> = parts
            .iter()
            .map(|p| {
                let ct = p.content_type().unwrap();
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );

        let human = part_text(parts[0]);
        assert!(
            human.contains("<bob@example.com>: 550 5.1.1 no such calendar user"),
            "{human}"
        );
        assert!(human.contains("<carol@example.com>: 451 4.4.1"), "{human}");

        let status = part_text(parts[1]);
        let groups: Vec<&str> = status.trim_end().split("\r\n\r\n").collect();
        assert_eq!(groups.len(), 4, "{status}");
        assert!(groups[0].starts_with("Reporting-MTA: dns; mx.example.com\r\nArrival-Date: "));
        assert_eq!(
            groups[1],
            "Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 no such calendar user"
        );
        assert_eq!(
            groups[2],
            "Final-Recipient: rfc822; carol@example.com\r\nAction: delayed\r\nStatus: 4.4.1\r\n\
             Diagnostic-Code: smtp; 451 4.4.1 receiver unreachable"
        );
        assert!(
            groups[3].contains("Action: failed\r\nStatus: 5.0.0\r\n"),
            "{}",
            groups[3]
        );

        let headers = part_text(parts[2]);
        assert!(
            headers.contains("Message-ID: <inv-1@remote.example>\r\n"),
            "{headers}"
        );
        assert!(headers.contains("Subject: Invitation: design meeting\r\n"));
        assert!(!headers.contains("SECRET-BODY"), "the body is not returned");
    }

    #[test]
    fn only_delayed_says_so_in_the_subject() {
        let f = vec![(
            "carol@example.com".to_owned(),
            SmtpReply::new(451, Some(EnhancedStatus::new(4, 4, 1)), "later"),
        )];
        let dsn = build("mx.example.com", "o@remote.example", ORIGINAL, &f);
        let msg = MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(msg.subject(), Some("Delayed calendar message"));
    }

    #[test]
    fn hostile_text_stays_on_its_line() {
        let f = vec![(
            "x@example.com\r\nBcc: victim@example.org".to_owned(),
            SmtpReply::new(
                550,
                Some(EnhancedStatus::new(5, 7, 1)),
                "no\r\nAction: delivered\u{e9}",
            ),
        )];
        let dsn = build(
            "mx.example.com\r\nX: y",
            "o@remote.example>\r\nBcc: v@x",
            b"Subject: s\n\nbody",
            &f,
        );
        let text = String::from_utf8(dsn).expect("7-bit");
        assert!(text.is_ascii());
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(!text.contains("\r\nAction: delivered"), "{text}");
        assert!(!text.contains("\r\nX: y"), "{text}");
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.7.1 no  Action: delivered?\r\n"));
        // bare LF in the original header is returned with CRLF
        assert!(
            text.contains("\r\n\r\nSubject: s\r\n\r\n--=_dsn_"),
            "{text}"
        );
    }

    #[test]
    fn returned_header_is_bounded_and_stops_at_the_body() {
        let mut big = Vec::new();
        for i in 0..5000 {
            big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
        }
        big.extend_from_slice(b"\r\nbody\r\n");
        let h = returned_header(&big);
        assert!(h.len() <= MAX_RETURNED_HEADER_BYTES);
        assert!(h.ends_with(b"\r\n"));
        assert!(h.starts_with(b"X-Filler-0: "));
        assert_eq!(returned_header(b"A: b\nC: d\n\nbody"), b"A: b\r\nC: d\r\n");
        assert_eq!(returned_header(b""), b"");
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_763_706_900); // 2025-11-21 06:35:00 UTC
        assert_eq!(rfc5322_date(t), "Fri, 21 Nov 2025 06:35:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn arrival_date_is_the_given_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_763_706_900);
        let dsn = build_at("h", "o@x", ORIGINAL, &failures(), t);
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Arrival-Date: Fri, 21 Nov 2025 06:35:00 +0000\r\n"));
        assert!(text.contains("Date: Fri, 21 Nov 2025 06:35:00 +0000\r\n"));
    }
}
