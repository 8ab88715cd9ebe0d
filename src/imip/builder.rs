//! Writes one iMIP message (RFC 6047) in the shape real clients (Outlook,
//! Gmail, Apple, Thunderbird) act on; see DESIGN.md, "iMIP messages the
//! bridge writes".
//!
//! The iTIP object is carried base64-encoded: base64 gives back exactly the
//! bytes it was given, line endings included, through any relay (text in
//! 7bit, 8bit or quoted-printable has its line breaks read as CRLF), so the
//! receiving client reads what the sender wrote.

use std::fmt;

use lettre::address::AddressError;
use lettre::message::header::{
    ContentDisposition, ContentTransferEncoding, Header, HeaderName, HeaderValue,
};
use lettre::message::MessageBuilder;
use lettre::message::{Mailbox, MultiPart, SinglePart, SinglePartBuilder};
use lettre::{Address, Message};

use super::summary::{one_line, Summary};
use crate::digest;
use crate::itip::{CalAddress, ComponentKind, Method};

/// File name of the attached copy of the iTIP object.
const ATTACHMENT_NAME: &str = "invite.ics";

/// One message to write: who it is from and to, and the iTIP object.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The bridge's own address, e.g. `calendar-bridge@bridge.example`: mail
    /// from the bridge's domain passes SPF, DKIM and DMARC.
    pub from_address: &'a str,
    /// Display name: the organizer's CN (or the replying attendee's CN), so
    /// the reader sees who the message is really from.
    pub from_name: Option<&'a str>,
    /// One recipient e-mail address.
    pub to: &'a str,
    pub reply_to: Option<&'a str>,
    /// Without angle brackets; see [`message_id_for`].
    pub message_id: &'a str,
    pub method: Method,
    pub component: ComponentKind,
    /// The iTIP object to send, exactly.
    pub calendar: &'a str,
}

/// Which address of an [`Outgoing`] is not a usable e-mail address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressField {
    From,
    To,
    ReplyTo,
}

impl fmt::Display for AddressField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressField::From => "From",
            AddressField::To => "To",
            AddressField::ReplyTo => "Reply-To",
        })
    }
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{field} address {value:?} is not a valid e-mail address: {source}")]
    Address {
        field: AddressField,
        value: String,
        #[source]
        source: AddressError,
    },
    #[error("Message-ID {0:?} is not of the form id-left@id-right (RFC 5322 3.6.4)")]
    MessageId(String),
    #[error("cannot assemble the message: {0}")]
    Message(#[from] lettre::error::Error),
}

/// multipart/mixed[ multipart/alternative[ text/plain; charset=UTF-8 |
/// text/html; charset=UTF-8 | text/calendar; charset=UTF-8; method=`METHOD` ],
/// application/ics; name=invite.ics (Content-Disposition: attachment;
/// filename=invite.ics) ]
///
/// Headers: From (display name, made one line, + bridge address), Sender
/// (same address), To, Reply-To (if given), Subject ([`Summary::subject`],
/// RFC 2047 encoded when not ASCII), Message-ID `<message_id>`, Date, MIME-Version,
/// Auto-Submitted: auto-generated (RFC 3834, so that vacation responders
/// stay quiet).
///
/// The calendar part and the attachment carry the object byte for byte,
/// base64-encoded. `parts` are written once per request by the caller, not
/// once per recipient. Returns the message as it goes on the wire (CRLF).
pub fn build(out: &Outgoing, parts: &RequestParts) -> Result<Vec<u8>, BuildError> {
    let message = headers(out, parts.subject.clone())?.multipart(body(out, parts))?;
    Ok(message.formatted())
}

/// What the mails of one request have in common, rendered and
/// transfer-encoded once: the subject, the plain-text and HTML summaries,
/// and the iTIP object's two parts. With many attendees these are nearly
/// all of a mail's bytes, and writing them for each recipient was most of
/// the cost of a mail (issue 10). The object's parts serve every mail that
/// carries the object unchanged; a mail whose ORGANIZER was rewritten to a
/// reply token gets its own.
#[derive(Debug, Clone)]
pub struct RequestParts {
    subject: String,
    text: SinglePart,
    html: SinglePart,
    /// The object `inline` and `attachment` carry.
    calendar: String,
    inline: SinglePart,
    attachment: SinglePart,
}

impl RequestParts {
    /// The iTIP object the parts were written for, as sent.
    pub fn calendar(&self) -> &str {
        &self.calendar
    }

    pub fn new(summary: &Summary, method: Method, calendar: &str) -> RequestParts {
        RequestParts {
            subject: summary.subject(),
            text: text_part("text/plain; charset=UTF-8", summary.text()),
            html: text_part("text/html; charset=UTF-8", summary.html()),
            calendar: calendar.to_string(),
            inline: calendar_part(method, calendar),
            attachment: attachment(calendar),
        }
    }
}

/// The message headers; lettre adds MIME-Version and the Content-Type of
/// the body.
fn headers(out: &Outgoing, subject: String) -> Result<MessageBuilder, BuildError> {
    let bridge = address(AddressField::From, out.from_address)?;
    let mut headers = Message::builder()
        .from(Mailbox::new(out.from_name.map(one_line), bridge.clone()))
        .sender(Mailbox::new(None, bridge))
        .to(Mailbox::new(None, address(AddressField::To, out.to)?))
        .subject(subject)
        .message_id(Some(format!("<{}>", checked_message_id(out.message_id)?)))
        .date_now()
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_string(),
        ));
    if let Some(reply_to) = out.reply_to {
        let reply_to = address(AddressField::ReplyTo, reply_to)?;
        headers = headers.reply_to(Mailbox::new(None, reply_to));
    }
    Ok(headers)
}

/// The summary for people and the object for clients, twice (DESIGN.md).
fn body(out: &Outgoing, parts: &RequestParts) -> MultiPart {
    let (inline, attached) = if out.calendar == parts.calendar {
        (parts.inline.clone(), parts.attachment.clone())
    } else {
        (
            calendar_part(out.method, out.calendar),
            attachment(out.calendar),
        )
    };
    let alternative = MultiPart::alternative()
        .singlepart(parts.text.clone())
        .singlepart(parts.html.clone())
        .singlepart(inline);
    MultiPart::mixed()
        .multipart(alternative)
        .singlepart(attached)
}

fn address(field: AddressField, value: &str) -> Result<Address, BuildError> {
    value.parse().map_err(|source| BuildError::Address {
        field,
        value: value.to_string(),
        source,
    })
}

/// `id` if it is `dot-atom-text "@" dot-atom-text` (RFC 5322 3.6.4), the
/// form every relay accepts; anything else would be mangled or refused.
fn checked_message_id(id: &str) -> Result<&str, BuildError> {
    match id.split_once('@') {
        Some((left, right)) if is_dot_atom_text(left) && is_dot_atom_text(right) => Ok(id),
        _ => Err(BuildError::MessageId(id.to_string())),
    }
}

fn is_dot_atom_text(s: &str) -> bool {
    s.split('.').all(|atom| {
        !atom.is_empty()
            && atom
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
    })
}

/// The Content-Type of a part, written as given. lettre's `ContentType`
/// goes through the `mime` crate, which would turn `charset=UTF-8` into
/// `charset=utf-8`; this keeps the spelling RFC 6047 and DESIGN.md use.
#[derive(Debug, Clone)]
struct MediaType(String);

impl Header for MediaType {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Type")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(MediaType(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// A human-readable part; lettre picks its transfer encoding.
fn text_part(media: &str, text: String) -> SinglePart {
    SinglePart::builder()
        .header(MediaType(media.to_string()))
        .body(text)
}

/// The iTIP object for clients that read the message body.
fn calendar_part(method: Method, calendar: &str) -> SinglePart {
    let media = format!("text/calendar; charset=UTF-8; method={method}");
    base64_body(SinglePart::builder().header(MediaType(media)), calendar)
}

/// The same object as a file, for clients that only look at attachments.
fn attachment(calendar: &str) -> SinglePart {
    let media = format!("application/ics; name={ATTACHMENT_NAME}");
    let part = SinglePart::builder()
        .header(MediaType(media))
        .header(ContentDisposition::attachment(ATTACHMENT_NAME));
    base64_body(part, calendar)
}

/// `calendar` base64-encoded from its bytes (lettre would rewrite the line
/// endings of a `String` body).
fn base64_body(part: SinglePartBuilder, calendar: &str) -> SinglePart {
    part.header(ContentTransferEncoding::Base64)
        .body(calendar.as_bytes().to_vec())
}

/// The two 64-bit halves of the FNV-128 offset basis: two different seeds
/// for two FNV-1a 64 passes that together give 128 bits.
const SEEDS: [u64; 2] = [0x6c62_272e_07bb_0142, 0x62b8_2175_6295_c58d];

/// A stable Message-ID for (originator, iSchedule-Message-ID, recipient):
/// the same POST retried yields the same Message-ID (idempotency),
/// different recipients differ. Form: `<32 hex digits>@<domain>` (no
/// brackets).
///
/// Originator and recipient are hashed in the form iTIP compares calendar
/// user addresses ([`CalAddress::normalized`]), so a retry that spells
/// `MAILTO:` or a domain differently still matches; a value that is not an
/// address is hashed as given.
pub fn message_id_for(
    originator: &str,
    ischedule_message_id: &str,
    recipient: &str,
    domain: &str,
) -> String {
    let originator = comparable(originator);
    let recipient = comparable(recipient);
    let parts = [
        originator.as_bytes(),
        ischedule_message_id.as_bytes(),
        recipient.as_bytes(),
    ];
    let [high, low] = SEEDS.map(|seed| digest::fnv1a(seed, &parts));
    format!("{high:016x}{low:016x}@{domain}")
}

fn comparable(address: &str) -> String {
    CalAddress::parse(address).map_or_else(|_| address.to_string(), |a| a.normalized().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(out: &Outgoing) -> Result<Vec<u8>, BuildError> {
        let summary = Summary::read(out.calendar, out.method, out.component);
        build(out, &RequestParts::new(&summary, out.method, out.calendar))
    }

    const BRIDGE: &str = "calendar-bridge@bridge.example";
    const ID: &str = "0123456789abcdef0123456789abcdef@bridge.example";

    fn object(method: Method, kind: ComponentKind, summary: &str) -> String {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nMETHOD:{method}\r\n\
             BEGIN:{kind}\r\nUID:u1@example.com\r\nDTSTAMP:20260101T000000Z\r\n\
             DTSTART:20261202T130000Z\r\nSUMMARY:{summary}\r\n\
             ORGANIZER;CN=Alice:mailto:alice@example.com\r\n\
             ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.org\r\nEND:{kind}\r\nEND:VCALENDAR\r\n"
        )
    }

    fn outgoing<'a>(calendar: &'a str, method: Method, kind: ComponentKind) -> Outgoing<'a> {
        Outgoing {
            from_address: BRIDGE,
            from_name: Some("Alice"),
            to: "bob@example.org",
            reply_to: None,
            message_id: ID,
            method,
            component: kind,
            calendar,
        }
    }

    fn mail(out: &Outgoing) -> String {
        String::from_utf8(built(out).unwrap()).unwrap()
    }

    /// The header block, unfolded.
    fn header_block(mail: &str) -> String {
        let end = mail.find("\r\n\r\n").unwrap();
        mail[..end].replace("\r\n ", " ")
    }

    fn header<'m>(headers: &'m str, name: &str) -> Option<&'m str> {
        headers
            .split("\r\n")
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
    }

    /// The decoded body of the one part whose Content-Type line is `media`.
    fn part(mail: &str, media: &str) -> Vec<u8> {
        let line = format!("\r\nContent-Type: {media}\r\n");
        assert_eq!(mail.matches(&line).count(), 1, "one {media} part");
        let at = mail.find(&line).unwrap() + line.len();
        let headers_end = at + mail[at..].find("\r\n\r\n").unwrap() + 4;
        assert!(mail[at..headers_end].contains("Content-Transfer-Encoding: base64\r\n"));
        let body_end = headers_end + mail[headers_end..].find("\r\n--").unwrap();
        base64(&mail[headers_end..body_end])
    }

    fn base64(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        let text: String = text.split_ascii_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    /// Decodes the `=?utf-8?b?...?=` words lettre writes; an encoded word
    /// and the space after it form one unit, as RFC 2047 section 6.2 says.
    fn decode_rfc2047(value: &str) -> String {
        let mut out = Vec::new();
        for word in value.split(' ') {
            match word
                .strip_prefix("=?utf-8?b?")
                .and_then(|w| w.strip_suffix("?="))
            {
                Some(encoded) => out.extend(base64(encoded)),
                None => out.extend(format!("{word} ").bytes()),
            }
        }
        String::from_utf8(out).unwrap().trim_end().to_string()
    }

    #[test]
    fn every_method_and_component_carries_the_object_byte_for_byte() {
        for method in Method::ALL {
            for kind in [ComponentKind::VEvent, ComponentKind::VTodo] {
                let calendar = object(method, kind, "Plan");
                let mail = mail(&outgoing(&calendar, method, kind));
                let media = format!("text/calendar; charset=UTF-8; method={method}");
                assert_eq!(part(&mail, &media), calendar.as_bytes(), "{method} {kind}");
                let attached = part(&mail, "application/ics; name=invite.ics");
                assert_eq!(attached, calendar.as_bytes());
            }
        }
    }

    #[test]
    fn lf_folded_and_non_ascii_objects_stay_exact() {
        let calendar = object(Method::Request, ComponentKind::VEvent, "Caf\u{e9} \u{2615}")
            .replace("\r\n", "\n")
            .replace("SUMMARY:", "SUMMARY:folded\n \\, ")
            + "\n\r\n";
        let mail = mail(&outgoing(&calendar, Method::Request, ComponentKind::VEvent));
        let media = "text/calendar; charset=UTF-8; method=REQUEST";
        assert_eq!(part(&mail, media), calendar.as_bytes());
        assert_eq!(
            part(&mail, "application/ics; name=invite.ics"),
            calendar.as_bytes()
        );
    }

    #[test]
    fn structure_and_headers() {
        let calendar = object(Method::Request, ComponentKind::VEvent, "Plan");
        let mut out = outgoing(&calendar, Method::Request, ComponentKind::VEvent);
        out.reply_to = Some("alice@example.com");
        let mail = mail(&out);
        let headers = header_block(&mail);
        assert_eq!(
            header(&headers, "From"),
            Some("Alice <calendar-bridge@bridge.example>")
        );
        assert_eq!(header(&headers, "Sender"), Some(BRIDGE));
        assert_eq!(header(&headers, "To"), Some("bob@example.org"));
        assert_eq!(header(&headers, "Reply-To"), Some("alice@example.com"));
        assert_eq!(header(&headers, "Subject"), Some("Invitation: Plan"));
        assert_eq!(
            header(&headers, "Message-ID"),
            Some(format!("<{ID}>").as_str())
        );
        assert_eq!(header(&headers, "MIME-Version"), Some("1.0"));
        assert_eq!(header(&headers, "Auto-Submitted"), Some("auto-generated"));
        assert!(header(&headers, "Date").is_some_and(|d| d.ends_with(" +0000")));
        assert!(header(&headers, "Content-Type").is_some_and(|t| t.starts_with("multipart/mixed;")));
        let types: Vec<_> = mail
            .split("\r\n")
            .filter_map(|l| l.strip_prefix("Content-Type: "))
            .map(|t| t.trim_end_matches(';'))
            .collect();
        assert_eq!(
            types,
            [
                "multipart/mixed",
                "multipart/alternative",
                "text/plain; charset=UTF-8",
                "text/html; charset=UTF-8",
                "text/calendar; charset=UTF-8; method=REQUEST",
                "application/ics; name=invite.ics",
            ]
        );
        assert!(mail.contains(
            "Content-Type: application/ics; name=invite.ics\r\n\
             Content-Disposition: attachment; filename=\"invite.ics\"\r\n"
        ));
        assert!(mail
            .split("\r\n")
            .all(|line| line.len() <= 998 && line.is_ascii()));
    }

    #[test]
    fn reply_to_only_when_given_and_no_display_name_without_a_cn() {
        let calendar = object(Method::Reply, ComponentKind::VTodo, "Plan");
        let mut out = outgoing(&calendar, Method::Reply, ComponentKind::VTodo);
        out.from_name = None;
        let headers = header_block(&mail(&out));
        assert_eq!(header(&headers, "Reply-To"), None);
        assert_eq!(header(&headers, "From"), Some(BRIDGE));
        assert_eq!(header(&headers, "Subject"), Some("Accepted: Plan"));
    }

    #[test]
    fn non_ascii_subject_and_name_are_rfc2047_encoded() {
        let title = "R\u{e9}union d'\u{e9}quipe \u{2013} \u{4f1a}\u{8bae}";
        let calendar = object(Method::Cancel, ComponentKind::VEvent, title);
        let mut out = outgoing(&calendar, Method::Cancel, ComponentKind::VEvent);
        out.from_name = Some("J\u{f6}rg \"the\" Boss,\r\nBcc: eve@example.org");
        let mail = mail(&out);
        let headers = header_block(&mail);
        let subject = header(&headers, "Subject").unwrap();
        assert!(subject.contains("=?utf-8?b?"), "{subject}");
        assert_eq!(decode_rfc2047(subject), format!("Cancelled: {title}"));
        let from = header(&headers, "From").unwrap();
        let (name, address) = from.rsplit_once(' ').unwrap();
        assert_eq!(
            decode_rfc2047(name),
            "J\u{f6}rg \"the\" Boss, Bcc: eve@example.org"
        );
        assert_eq!(address, "<calendar-bridge@bridge.example>");
        assert_eq!(header(&headers, "Bcc"), None);
    }

    #[test]
    fn human_parts_hold_the_summary() {
        let calendar = object(Method::Request, ComponentKind::VEvent, "<script>x</script>");
        let mail = mail(&outgoing(&calendar, Method::Request, ComponentKind::VEvent));
        assert!(mail.contains("Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nInvitation: <script>x</script>\r\n"));
        assert!(mail.contains("<h1>Invitation: &lt;script&gt;x&lt;/script&gt;</h1>"));
    }

    /// The parts written once per request serve the mails carrying the
    /// request's object; a mail whose object was rewritten (a reply token
    /// in ORGANIZER) carries its own, in both places, under the same
    /// human parts.
    #[test]
    fn request_parts_carry_the_object_they_were_made_for_only() {
        let calendar = object(Method::Request, ComponentKind::VEvent, "Plan");
        let summary = Summary::read(&calendar, Method::Request, ComponentKind::VEvent);
        let parts = RequestParts::new(&summary, Method::Request, &calendar);
        let rewritten = calendar.replace(
            "mailto:alice@example.com",
            "mailto:calendar+abc@bridge.example",
        );
        for object in [&calendar, &rewritten] {
            let out = outgoing(object, Method::Request, ComponentKind::VEvent);
            let mail = String::from_utf8(build(&out, &parts).unwrap()).unwrap();
            for media in [
                "text/calendar; charset=UTF-8; method=REQUEST",
                "application/ics; name=invite.ics",
            ] {
                assert_eq!(part(&mail, media), object.as_bytes(), "{media}");
            }
            assert!(mail.contains("Invitation: Plan"), "{mail}");
        }
    }

    #[test]
    fn bad_addresses_and_message_ids_are_refused() {
        let calendar = object(Method::Request, ComponentKind::VEvent, "Plan");
        let base = outgoing(&calendar, Method::Request, ComponentKind::VEvent);
        let cases = [
            (
                Outgoing {
                    from_address: "bridge.example",
                    ..base.clone()
                },
                AddressField::From,
            ),
            (
                Outgoing {
                    to: "bob@",
                    ..base.clone()
                },
                AddressField::To,
            ),
            (
                Outgoing {
                    to: "Bob <bob@example.org>",
                    ..base.clone()
                },
                AddressField::To,
            ),
            (
                Outgoing {
                    reply_to: Some("a b@x.org"),
                    ..base.clone()
                },
                AddressField::ReplyTo,
            ),
        ];
        for (out, which) in cases {
            match built(&out) {
                Err(BuildError::Address { field, .. }) => assert_eq!(field, which),
                other => panic!("{which}: {other:?}"),
            }
        }
        for id in [
            "",
            "no-at",
            "<a@b>",
            "a@b@c",
            "a b@c",
            "a@b\r\nBcc: x",
            ".a@b",
            "a@b..c",
            "\u{e9}@b",
        ] {
            let out = Outgoing {
                message_id: id,
                ..base.clone()
            };
            assert!(
                matches!(built(&out), Err(BuildError::MessageId(_))),
                "{id:?}"
            );
        }
        let err = built(&Outgoing { to: "bob@", ..base }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "To address \"bob@\" is not a valid e-mail address: Invalid email domain"
        );
    }

    #[test]
    fn message_ids_are_stable_per_post_and_recipient() {
        let id = |o: &str, m: &str, r: &str| message_id_for(o, m, r, "bridge.example");
        let first = id(
            "mailto:alice@example.com",
            "post-1",
            "mailto:bob@example.org",
        );
        assert_eq!(
            first,
            id(
                "mailto:alice@example.com",
                "post-1",
                "mailto:bob@example.org"
            )
        );
        assert_eq!(
            first,
            id(
                "MAILTO:Alice@Example.COM",
                "post-1",
                "mailto:BOB@example.org"
            )
        );
        // Pinned (computed independently in Python): a retry after an
        // upgrade must still find the same ID.
        assert_eq!(first, "1bfda1e7ad80297ec9aea0f5115c9cb1@bridge.example");
        assert!(checked_message_id(&first).is_ok());
        let others = [
            id(
                "mailto:alice@example.com",
                "post-1",
                "mailto:carol@example.org",
            ),
            id(
                "mailto:alice@example.com",
                "post-2",
                "mailto:bob@example.org",
            ),
            id(
                "mailto:dave@example.com",
                "post-1",
                "mailto:bob@example.org",
            ),
            id(
                "mailto:alice@example.compost-1",
                "",
                "mailto:bob@example.org",
            ),
        ];
        for other in &others {
            assert_ne!(&first[..32], &other[..32], "{other}");
        }
        assert_eq!(
            message_id_for(
                "mailto:alice@example.com",
                "post-1",
                "mailto:bob@example.org",
                "b.example"
            ),
            first.replace("@bridge.example", "@b.example")
        );
        let hex = first.split('@').next().unwrap();
        assert!(hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        // Not addresses: hashed as given, still stable.
        assert_eq!(id("x", "y", "z"), id("x", "y", "z"));
        assert_ne!(id("x", "y", "z"), id("X", "y", "z"));
    }
}
