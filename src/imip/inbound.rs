//! Inbound iMIP (RFC 6047): finds the one iTIP object in a mail message, or
//! reads a delivery status notification (RFC 3464) that returns one.
//!
//! Real clients are sloppy (DESIGN.md, "iMIP messages the bridge reads"), so
//! the calendar is looked for wherever it is: `text/calendar` with or
//! without `method=` (quoted, lower-case), `application/ics`, any part named
//! `*.ics`, inline or as an attachment, at any multipart depth, base64,
//! quoted-printable or raw, CRLF or bare LF. The object comes back decoded
//! but otherwise as written (its line ends included): checking it is the
//! job of [`crate::itip::ItipMessage::parse`].
//!
//! Mail is hostile input: MIME nesting and part count are bounded
//! ([`MAX_DEPTH`], [`MAX_PARTS`]) before anything else is looked at, and the
//! walk over the parts never recurses deeper than that. Calendars inside an
//! attached message (`message/rfc822`, e.g. a forwarded invitation) are not
//! this message's object and are not taken, except from the returned
//! original of a bounce.
//!
//! Every [`InboundError`] displays as one short line fit for an SMTP reply
//! text (`550 5.6.0 <reason>`).

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    Addr, Address, Header, HeaderName, HeaderValue, Message, MessageParser, MessagePart,
    MimeHeaders, PartType,
};

use crate::itip::Method;
use crate::smtp::EnhancedStatus;

/// Limits that keep hostile mail cheap (DESIGN: bounded MIME depth and part count).
/// Most containers (multiparts / message/rfc822) a part may be nested in.
pub const MAX_DEPTH: usize = 8;
/// Most MIME parts (containers and leaves, attached messages included).
pub const MAX_PARTS: usize = 100;

/// An iMIP message carrying an iTIP object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Itip {
    /// The one iTIP object, decoded (base64/QP undone), as text; line ends as in the object (do not normalise).
    pub calendar: String,
    /// METHOD from the object; when the object lacks it, from the text/calendar `method=` parameter (case-insensitive).
    /// `None` when the one that applies names no iTIP method (`METHOD:X-FOO`);
    /// `ItipMessage::parse` then says why the object is unusable.
    pub method: Option<Method>,
    /// RFC 5322 From address (lower-case e-mail); `None` unless the From
    /// field holds exactly one mailbox.
    pub from: Option<String>,
    /// Sender header address, if any (lower case).
    pub sender: Option<String>,
    /// The first Reply-To address, if any (lower case).
    pub reply_to: Option<String>,
    /// Without `<>`.
    pub message_id: Option<String>,
    /// Decoded (RFC 2047).
    pub subject: Option<String>,
}

/// A delivery status notification (`multipart/report; report-type=delivery-status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// RFC 3464 delivery-status: the failed recipients (Final-Recipient / Original-Recipient addresses, lower-case), the Status (e.g. "5.1.1") and Diagnostic-Code text.
    ///
    /// One address per per-recipient block whose Action is `failed` (or
    /// missing): its Original-Recipient when that is an e-mail address (the
    /// address the original was sent to), else its Final-Recipient.
    pub recipients: Vec<String>,
    /// Of the first failed recipient (of the first recipient block when none
    /// failed, e.g. a delay notice); `None` when missing or malformed.
    pub status: Option<EnhancedStatus>,
    /// The Diagnostic-Code text without its type (`smtp;`), unfolded.
    pub diagnostic: Option<String>,
    /// The Message-ID of the returned original (from a message/rfc822 or text/rfc822-headers part), without <>.
    pub original_message_id: Option<String>,
    /// The quoted original's iTIP object, if it carried one.
    pub original_calendar: Option<String>,
}

/// What an inbound message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Itip(Itip),
    Bounce(Bounce),
}

/// Why a message is not usable iMIP. Each displays as one short line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// mail-parser could not read it.
    #[error("not a MIME message: {0}")]
    NotMime(String),
    /// No text/calendar or application/ics part anywhere (winmail.dat is not read).
    #[error("no text/calendar or application/ics part in the message")]
    NoCalendar,
    /// More than one distinct iTIP object (a text/calendar part and its
    /// identical application/ics copy are one object).
    #[error("{0} different iCalendar objects in the message; iMIP carries one")]
    SeveralObjects(usize),
    /// Neither the object nor the part says which method.
    #[error("the iCalendar object has no METHOD and its part no method parameter")]
    NoMethod,
    /// Depth or part count over the limits.
    #[error("{what} exceeds {limit}")]
    TooComplex { what: &'static str, limit: usize },
    /// The calendar part is not UTF-8 (after its charset), or its transfer
    /// encoding does not decode (and no other part holds the object).
    #[error("the calendar part does not decode to UTF-8 text")]
    NotText,
}

const DEPTH: &str = "MIME nesting depth";
const PARTS: &str = "number of MIME parts";

/// Finds the one iTIP object whatever the layout: method param missing or quoted or lower-case, bare LF, base64/QP, calendar only as an attachment (Content-Disposition attachment, application/ics, .ics filename), nested multiparts (alternative inside mixed inside related), winmail-style clutter around it. A `multipart/report; report-type=delivery-status` is a Bounce (even if it quotes an invitation).
pub fn parse(raw: &[u8]) -> Result<Parsed, InboundError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(InboundError::NotMime("the message is empty".into()));
    }
    let message = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.parts.is_empty())
        .map(FlatDrop)
        .ok_or_else(|| InboundError::NotMime("no header fields found".into()))?;
    let message = &message.0;
    let nodes = walk(message)?;
    if is_delivery_report(message, &nodes) {
        return Ok(Parsed::Bounce(bounce(&nodes)));
    }
    let found = find_object(&nodes)?;
    let headers = &message.parts[0].headers;
    Ok(Parsed::Itip(Itip {
        calendar: found.calendar,
        method: found.method,
        from: single_address(headers, HeaderName::From),
        sender: single_address(headers, HeaderName::Sender),
        reply_to: first_address(headers, HeaderName::ReplyTo),
        message_id: message_id(headers),
        subject: field(headers, &HeaderName::Subject)
            .and_then(|v| v.as_text())
            .map(str::to_string),
    }))
}

/// Owns a parsed message and drops it without recursion.
///
/// mail-parser nests each attached message (`message/rfc822`) inside its
/// parent, and Rust drops that chain recursively: a few hundred kilobytes
/// of `Content-Type: message/rfc822` headers, one inside the next, would
/// overflow the stack and abort the process. mail-parser itself parses such
/// chains iteratively, so only the drop needs care.
struct FlatDrop<'x>(Message<'x>);

impl Drop for FlatDrop<'_> {
    fn drop(&mut self) {
        let mut pending = vec![std::mem::take(&mut self.0)];
        while let Some(mut message) = pending.pop() {
            for part in &mut message.parts {
                if let PartType::Message(inner) = &mut part.body {
                    pending.push(std::mem::take(inner));
                }
            }
            // `message` now holds no nested message: dropping it is shallow.
        }
    }
}

// ---------------------------------------------------------------------------
// The part tree

/// One MIME part of the walked message, in document order.
struct Node<'a, 'x> {
    /// The message whose `raw_message` the part's offsets index.
    message: &'a Message<'x>,
    part: &'a MessagePart<'x>,
    /// Inside an attached message (`message/rfc822`) of the walked one.
    embedded: bool,
}

/// Every part of `message`, attached messages included, after checking
/// [`MAX_PARTS`] and [`MAX_DEPTH`]. Recursion is bounded by `MAX_DEPTH`.
fn walk<'a, 'x>(message: &'a Message<'x>) -> Result<Vec<Node<'a, 'x>>, InboundError> {
    if message.parts.len() > MAX_PARTS {
        return Err(too_many_parts());
    }
    let mut nodes = Vec::new();
    visit(&mut nodes, message, 0, 0, false)?;
    Ok(nodes)
}

fn visit<'a, 'x>(
    nodes: &mut Vec<Node<'a, 'x>>,
    message: &'a Message<'x>,
    id: usize,
    depth: usize,
    embedded: bool,
) -> Result<(), InboundError> {
    let Some(part) = message.parts.get(id) else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err(InboundError::TooComplex {
            what: DEPTH,
            limit: MAX_DEPTH,
        });
    }
    if nodes.len() == MAX_PARTS {
        return Err(too_many_parts());
    }
    nodes.push(Node {
        message,
        part,
        embedded,
    });
    match &part.body {
        PartType::Multipart(children) => {
            // Children always come after their parent; the check keeps a
            // malformed tree from looping.
            for child in children.iter().map(|&c| c as usize).filter(|&c| c > id) {
                visit(nodes, message, child, depth + 1, embedded)?;
            }
        }
        PartType::Message(inner) => visit(nodes, inner, 0, depth + 1, true)?,
        _ => {}
    }
    Ok(())
}

fn too_many_parts() -> InboundError {
    InboundError::TooComplex {
        what: PARTS,
        limit: MAX_PARTS,
    }
}

fn is_type(part: &MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| subtypes.iter().any(|t| s.eq_ignore_ascii_case(t)))
    })
}

/// A Content-Type parameter, case-insensitively, without surrounding quotes.
fn type_param<'p>(part: &'p MessagePart<'_>, name: &str) -> Option<&'p str> {
    part.content_type()?
        .attributes()?
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
        .map(|a| a.value.trim().trim_matches('"').trim())
}

fn is_container(part: &MessagePart<'_>) -> bool {
    matches!(part.body, PartType::Multipart(_) | PartType::Message(_))
}

/// The part's body with its transfer encoding undone; `None` when it does
/// not decode. Decoded again from the raw bytes rather than taken from
/// mail-parser's text, which replaces invalid UTF-8 and, for the last part
/// of a multipart whose end boundary is missing, keeps the encoded form.
fn body_bytes<'a>(node: &Node<'a, '_>) -> Option<Cow<'a, [u8]>> {
    let part = node.part;
    let raw = node
        .message
        .raw_message
        .get(part.offset_body as usize..part.offset_end as usize);
    let Some(raw) = raw else {
        return match &part.body {
            PartType::Text(t) | PartType::Html(t) => Some(Cow::Borrowed(t.as_bytes())),
            PartType::Binary(b) | PartType::InlineBinary(b) => Some(Cow::Borrowed(b.as_ref())),
            _ => None,
        };
    };
    let encoding = part
        .content_transfer_encoding()
        .map(|e| e.trim().to_ascii_lowercase());
    let (end, bytes) = match encoding.as_deref() {
        Some("base64") => MessageStream::new(raw).decode_base64_mime(b""),
        Some("quoted-printable") => MessageStream::new(raw).decode_quoted_printable_mime(b""),
        _ => return Some(Cow::Borrowed(raw)),
    };
    (end != usize::MAX).then(|| Cow::Owned(bytes.into_owned()))
}

/// The body as text after its charset: UTF-8 (strictly) when the charset is
/// missing, UTF-8, US-ASCII or unknown; otherwise converted from it.
fn body_text(node: &Node<'_, '_>) -> Option<String> {
    let bytes = body_bytes(node)?;
    let charset = type_param(node.part, "charset").map(str::to_ascii_lowercase);
    let strict = match charset.as_deref() {
        None => true,
        Some(c) => {
            matches!(c, "utf-8" | "utf8" | "us-ascii" | "ascii")
                || charset_decoder(c.as_bytes()).is_none()
        }
    };
    if strict {
        return String::from_utf8(bytes.into_owned()).ok();
    }
    let decode = charset_decoder(charset.as_deref().unwrap_or_default().as_bytes())?;
    Some(decode(&bytes))
}

// ---------------------------------------------------------------------------
// The iTIP object

struct Found {
    calendar: String,
    method: Option<Method>,
}

/// A part that may hold the calendar.
struct Candidate {
    text: String,
    /// Normalised for comparison: line ends, folding, BOM, trailing space.
    key: String,
    text_calendar: bool,
    method_param: Option<String>,
}

fn is_calendar_part(part: &MessagePart<'_>) -> bool {
    if is_container(part) {
        return false;
    }
    is_type(part, "text", &["calendar"])
        || is_type(part, "application", &["ics"])
        || part
            .attachment_name()
            .is_some_and(|n| n.trim().to_ascii_lowercase().ends_with(".ics"))
}

/// The one iTIP object among the walked message's own parts.
fn find_object(nodes: &[Node<'_, '_>]) -> Result<Found, InboundError> {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut undecodable = false;
    for node in nodes
        .iter()
        .filter(|n| !n.embedded && is_calendar_part(n.part))
    {
        // A copy no client can read either does not count, as long as
        // another part holds the object.
        let Some(text) = body_text(node) else {
            undecodable = true;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        candidates.push(Candidate {
            key: comparison_key(&text),
            text,
            text_calendar: is_type(node.part, "text", &["calendar"]),
            method_param: type_param(node.part, "method").map(str::to_string),
        });
    }
    let Some(first) = candidates.first() else {
        return Err(if undecodable {
            InboundError::NotText
        } else {
            InboundError::NoCalendar
        });
    };
    let mut distinct: Vec<&str> = Vec::new();
    for c in &candidates {
        if !distinct.contains(&c.key.as_str()) {
            distinct.push(&c.key);
        }
    }
    if distinct.len() > 1 {
        return Err(InboundError::SeveralObjects(distinct.len()));
    }
    // All candidates are copies of one object: prefer the text/calendar
    // part (the one clients act on) and its method parameter.
    let copies = || candidates.iter().filter(|c| c.key == first.key);
    let chosen = copies().find(|c| c.text_calendar).unwrap_or(first);
    let method = match object_method(&chosen.text) {
        Some(value) => Method::parse(&value),
        None => {
            let param = std::iter::once(chosen)
                .chain(copies())
                .filter_map(|c| c.method_param.as_deref())
                .find(|p| !p.is_empty())
                .ok_or(InboundError::NoMethod)?;
            Method::parse(param)
        }
    };
    Ok(Found {
        calendar: chosen.text.clone(),
        method,
    })
}

/// Logical lines of an iCalendar text: line ends (CRLF, LF, CR) removed and
/// folded continuation lines joined.
fn unfolded_lines(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<String> = Vec::new();
    for physical in text.split('\n') {
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        for piece in physical.split('\r') {
            match (piece.strip_prefix([' ', '\t']), lines.last_mut()) {
                (Some(rest), Some(last)) => last.push_str(rest),
                _ => lines.push(piece.to_string()),
            }
        }
    }
    lines
}

/// Two parts hold the same object when they are equal after normalising
/// line ends and unfolding (and ignoring blank lines and trailing blanks).
fn comparison_key(text: &str) -> String {
    let mut key = String::with_capacity(text.len());
    for line in unfolded_lines(text) {
        let line = line.trim_end();
        if !line.is_empty() {
            key.push_str(line);
            key.push('\n');
        }
    }
    key
}

/// The value of the VCALENDAR's own METHOD property, if it has one.
fn object_method(text: &str) -> Option<String> {
    let mut depth = 0usize;
    for line in unfolded_lines(text) {
        let name = line.split([';', ':']).next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("BEGIN") {
            depth += 1;
        } else if name.eq_ignore_ascii_case("END") {
            depth = depth.saturating_sub(1);
        } else if depth == 1 && name.eq_ignore_ascii_case("METHOD") {
            let value = line.split_once(':').map_or("", |(_, v)| v);
            return Some(value.trim().to_string());
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Header fields

fn clean_address(addr: &str) -> Option<String> {
    let addr = addr
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let ok = addr.contains('@') && !addr.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| addr.to_ascii_lowercase())
}

/// The first `name` field's value.
fn field<'h, 'x>(headers: &'h [Header<'x>], name: &HeaderName<'_>) -> Option<&'h HeaderValue<'x>> {
    headers.iter().find(|h| &h.name == name).map(|h| &h.value)
}

/// The mailboxes of the `name` field; none when the field is missing or,
/// for a field that must be unique, repeated (which one would count?).
fn addresses<'h>(
    headers: &'h [Header<'_>],
    name: &HeaderName<'_>,
    unique: bool,
) -> Vec<&'h Addr<'h>> {
    if unique && headers.iter().filter(|h| &h.name == name).count() > 1 {
        return Vec::new();
    }
    match field(headers, name).and_then(|v| v.as_address()) {
        Some(Address::List(list)) => list.iter().collect(),
        Some(Address::Group(groups)) => groups.iter().flat_map(|g| g.addresses.iter()).collect(),
        None => Vec::new(),
    }
}

/// The address of a field that occurs once and holds exactly one mailbox.
fn single_address(headers: &[Header<'_>], name: HeaderName<'_>) -> Option<String> {
    match addresses(headers, &name, true).as_slice() {
        [one] => clean_address(one.address.as_deref()?),
        _ => None,
    }
}

fn first_address(headers: &[Header<'_>], name: HeaderName<'_>) -> Option<String> {
    addresses(headers, &name, false)
        .iter()
        .find_map(|a| clean_address(a.address.as_deref()?))
}

fn message_id(headers: &[Header<'_>]) -> Option<String> {
    let id = field(headers, &HeaderName::MessageId)?.as_text()?;
    let id = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!id.is_empty()).then(|| id.to_string())
}

// ---------------------------------------------------------------------------
// Delivery status notifications

fn is_delivery_status(part: &MessagePart<'_>) -> bool {
    is_type(
        part,
        "message",
        &["delivery-status", "global-delivery-status"],
    )
}

/// A top-level `multipart/report` that is a delivery report: says so in
/// `report-type`, or carries a delivery-status part.
fn is_delivery_report(message: &Message<'_>, nodes: &[Node<'_, '_>]) -> bool {
    let root = &message.parts[0];
    if !is_type(root, "multipart", &["report"]) {
        return false;
    }
    let declared = type_param(root, "report-type").is_some_and(|t| {
        t.eq_ignore_ascii_case("delivery-status")
            || t.eq_ignore_ascii_case("global-delivery-status")
    });
    declared
        || nodes
            .iter()
            .any(|n| !n.embedded && is_delivery_status(n.part))
}

fn bounce(nodes: &[Node<'_, '_>]) -> Bounce {
    let own = || nodes.iter().filter(|n| !n.embedded);
    let mut report = own()
        .find(|n| is_delivery_status(n.part))
        .and_then(|n| body_bytes(n))
        .map(|b| delivery_status(&String::from_utf8_lossy(&b)))
        .unwrap_or(Bounce {
            recipients: Vec::new(),
            status: None,
            diagnostic: None,
            original_message_id: None,
            original_calendar: None,
        });

    for node in own() {
        if let PartType::Message(original) = &node.part.body {
            if let Some(root) = original.parts.first() {
                report.original_message_id = message_id(&root.headers);
                report.original_calendar = walk(original)
                    .and_then(|inner| find_object(&inner))
                    .ok()
                    .map(|found| found.calendar);
            }
            break;
        }
        let headers_only = is_type(node.part, "text", &["rfc822-headers"])
            || is_type(node.part, "message", &["rfc822-headers", "global-headers"]);
        if headers_only {
            report.original_message_id = body_bytes(node).and_then(|b| {
                let parsed = MessageParser::default().parse_headers(b.as_ref())?;
                message_id(&parsed.parts.first()?.headers)
            });
            break;
        }
    }
    report
}

/// The fields of one block of a delivery-status body: lower-case name, value.
type Fields = Vec<(String, String)>;

fn get(block: &Fields, name: &str) -> Option<String> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Reads the fields of a `message/delivery-status` body (RFC 3464 2.1):
/// the per-message block, then one block per recipient, separated by blank
/// lines; fields may be folded.
fn delivery_status(text: &str) -> Bounce {
    let mut blocks: Vec<Fields> = Vec::new();
    let mut block = Fields::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }

    let per_recipient: Vec<&Fields> = blocks
        .iter()
        .filter(|b| get(b, "final-recipient").is_some() || get(b, "original-recipient").is_some())
        .collect();
    let failed: Vec<&Fields> = per_recipient
        .iter()
        .copied()
        .filter(|b| get(b, "action").is_none_or(|a| a.eq_ignore_ascii_case("failed")))
        .collect();
    let recipients = failed
        .iter()
        .filter_map(|b| {
            get(b, "original-recipient")
                .and_then(|v| typed_address(&v))
                .or_else(|| get(b, "final-recipient").and_then(|v| typed_address(&v)))
        })
        .collect();
    let first = failed.first().or(per_recipient.first());
    Bounce {
        recipients,
        status: first
            .and_then(|b| get(b, "status"))
            .and_then(|s| s.split_whitespace().next()?.parse().ok()),
        diagnostic: first
            .and_then(|b| get(b, "diagnostic-code"))
            .map(|d| diagnostic_text(&d))
            .filter(|d| !d.is_empty()),
        original_message_id: None,
        original_calendar: None,
    }
}

/// `rfc822; user@example.com` -> `user@example.com`.
fn typed_address(value: &str) -> Option<String> {
    let addr = value.split_once(';').map_or(value, |(_, a)| a);
    clean_address(addr)
}

/// `smtp; 550 5.1.1 unknown` -> `550 5.1.1 unknown`, whitespace and control
/// characters collapsed to single spaces.
fn diagnostic_text(value: &str) -> String {
    let text = value.split_once(';').map_or(value, |(_, t)| t);
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "BEGIN:VCALENDAR\r\n\
        VERSION:2.0\r\n\
        PRODID:-//Example//Test//EN\r\n\
        METHOD:REQUEST\r\n\
        BEGIN:VEVENT\r\n\
        UID:inbound-1@example.com\r\n\
        DTSTAMP:20240101T120000Z\r\n\
        DTSTART:20240102T100000Z\r\n\
        SUMMARY:Caf\u{e9} planning with a long summary that Outlook would fold a\r\n \
        t seventy-five octets\r\n\
        ORGANIZER;CN=Alice:mailto:alice@example.com\r\n\
        ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION:mailto:bob@example.org\r\n\
        END:VEVENT\r\n\
        END:VCALENDAR\r\n";

    /// An Outlook-style REPLY: bare LF, no ORGANIZER, no METHOD inside.
    const REPLY_NO_METHOD: &str = "BEGIN:VCALENDAR\n\
        VERSION:2.0\n\
        BEGIN:VEVENT\n\
        UID:inbound-1@example.com\n\
        DTSTAMP:20240101T130000Z\n\
        ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.org\n\
        END:VEVENT\n\
        END:VCALENDAR\n";

    /// Base64 in lines of 76 characters, as MIME writes it.
    fn base64(data: &[u8]) -> String {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(data);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(76)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        lines.join("\r\n")
    }

    /// Quoted-printable with every CR and LF encoded (as Apple Mail does)
    /// and soft line breaks ending in `eol`.
    fn quoted_printable(data: &[u8], eol: &str) -> String {
        let mut out = String::new();
        let mut width = 0;
        for &b in data {
            let piece = if b.is_ascii_graphic() && b != b'=' || b == b' ' {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            };
            if width + piece.len() > 72 {
                out.push('=');
                out.push_str(eol);
                width = 0;
            }
            width += piece.len();
            out.push_str(&piece);
        }
        out
    }

    /// A MIME entity: header fields, blank line, body.
    fn entity(headers: &[&str], body: &str) -> String {
        format!("{}\r\n\r\n{body}", headers.join("\r\n"))
    }

    fn multipart(subtype: &str, boundary: &str, parts: &[String]) -> String {
        let mut body = String::from("This is a multi-part message in MIME format.\r\n");
        for part in parts {
            body.push_str(&format!("\r\n--{boundary}\r\n{part}"));
        }
        body.push_str(&format!("\r\n--{boundary}--\r\n"));
        entity(
            &[&format!(
                "Content-Type: multipart/{subtype}; boundary=\"{boundary}\""
            )],
            &body,
        )
    }

    fn message(headers: &[&str], entity: &str) -> Vec<u8> {
        let mut top = vec![
            "From: \"Bob B.\" <Bob@Example.ORG>",
            "To: alice@example.com",
            "Subject: =?UTF-8?Q?Accepted:_Caf=C3=A9?=",
            "Message-ID: <reply-1@example.org>",
            "MIME-Version: 1.0",
        ];
        top.extend_from_slice(headers);
        format!("{}\r\n{entity}", top.join("\r\n")).into_bytes()
    }

    fn itip(raw: &[u8]) -> Itip {
        match parse(raw) {
            Ok(Parsed::Itip(itip)) => itip,
            other => panic!("expected iTIP, got {other:?}"),
        }
    }

    fn bounce(raw: &[u8]) -> Bounce {
        match parse(raw) {
            Ok(Parsed::Bounce(bounce)) => bounce,
            other => panic!("expected a bounce, got {other:?}"),
        }
    }

    fn text_plain(text: &str) -> String {
        entity(&["Content-Type: text/plain; charset=UTF-8"], text)
    }

    fn calendar_7bit(params: &str, body: &str) -> String {
        entity(
            &[
                &format!("Content-Type: text/calendar{params}"),
                "Content-Transfer-Encoding: 7bit",
            ],
            body,
        )
    }

    #[test]
    fn a_single_part_invitation_comes_back_byte_for_byte_with_its_headers() {
        let raw = message(
            &[],
            &calendar_7bit("; charset=UTF-8; method=REQUEST", INVITE),
        );
        let found = itip(&raw);
        assert_eq!(found.calendar, INVITE);
        assert_eq!(found.method, Some(Method::Request));
        assert_eq!(found.from.as_deref(), Some("bob@example.org"));
        assert_eq!(found.sender, None);
        assert_eq!(found.reply_to, None);
        assert_eq!(found.message_id.as_deref(), Some("reply-1@example.org"));
        assert_eq!(found.subject.as_deref(), Some("Accepted: Caf\u{e9}"));
        crate::itip::ItipMessage::parse(&found.calendar).unwrap();
    }

    #[test]
    fn the_method_parameter_may_be_missing_quoted_or_lower_case() {
        for params in [
            "",
            "; method=\"REQUEST\"",
            "; METHOD=request",
            "; method=reply",
        ] {
            let raw = message(&[], &calendar_7bit(params, INVITE));
            // METHOD in the object wins over the parameter.
            assert_eq!(itip(&raw).method, Some(Method::Request), "{params}");
        }
        for params in [
            "; method=\"reply\"",
            "; Method=Reply",
            "; charset=utf-8;method=REPLY",
        ] {
            let raw = message(&[], &calendar_7bit(params, REPLY_NO_METHOD));
            assert_eq!(itip(&raw).method, Some(Method::Reply), "{params}");
        }
    }

    #[test]
    fn no_method_anywhere_is_rejected_and_an_unknown_one_is_none() {
        let raw = message(&[], &calendar_7bit("; charset=utf-8", REPLY_NO_METHOD));
        assert_eq!(parse(&raw), Err(InboundError::NoMethod));
        let raw = message(&[], &calendar_7bit("; method=\"\"", REPLY_NO_METHOD));
        assert_eq!(parse(&raw), Err(InboundError::NoMethod));

        let odd = INVITE.replace("METHOD:REQUEST", "METHOD:X-PROPOSE");
        let raw = message(&[], &calendar_7bit("; method=REQUEST", &odd));
        assert_eq!(itip(&raw).method, None);
        let raw = message(&[], &calendar_7bit("; method=FORWARD", REPLY_NO_METHOD));
        assert_eq!(itip(&raw).method, None);
        // A METHOD inside a component is not the object's.
        let nested = REPLY_NO_METHOD.replace("UID:", "METHOD:REPLY\nUID:");
        let raw = message(&[], &calendar_7bit("", &nested));
        assert_eq!(parse(&raw), Err(InboundError::NoMethod));
    }

    #[test]
    fn bare_lf_mail_and_an_lf_object_keep_their_line_ends() {
        let raw = String::from_utf8(message(&[], &calendar_7bit("", REPLY_NO_METHOD)))
            .unwrap()
            .replace("\r\n", "\n");
        let raw = raw.replace(
            "Content-Type: text/calendar",
            "Content-Type: text/calendar; method=REPLY",
        );
        let found = itip(raw.as_bytes());
        assert_eq!(found.calendar, REPLY_NO_METHOD);
        assert_eq!(found.method, Some(Method::Reply));
        assert_eq!(found.from.as_deref(), Some("bob@example.org"));
    }

    #[test]
    fn base64_and_quoted_printable_are_undone() {
        let b64 = entity(
            &[
                "Content-Type: text/calendar; charset=\"utf-8\"; method=REQUEST",
                "Content-Transfer-Encoding: base64",
            ],
            &base64(INVITE.as_bytes()),
        );
        assert_eq!(itip(&message(&[], &b64)).calendar, INVITE);

        for eol in ["\r\n", "\n"] {
            let qp = entity(
                &[
                    "Content-Type: text/calendar; charset=UTF-8",
                    "Content-Transfer-Encoding: Quoted-Printable",
                ],
                &quoted_printable(INVITE.as_bytes(), eol),
            );
            let found = itip(&message(&[], &qp));
            assert_eq!(found.calendar, INVITE, "soft breaks {eol:?}");
        }
    }

    #[test]
    fn an_attachment_deep_in_nested_multiparts_among_clutter_is_found() {
        let ics = entity(
            &[
                "Content-Type: application/octet-stream; name=\"invite.ics\"",
                "Content-Disposition: attachment; filename=\"invite.ics\"",
                "Content-Transfer-Encoding: base64",
            ],
            &base64(INVITE.as_bytes()),
        );
        let winmail = entity(
            &[
                "Content-Type: application/ms-tnef; name=\"winmail.dat\"",
                "Content-Disposition: attachment; filename=\"winmail.dat\"",
                "Content-Transfer-Encoding: base64",
            ],
            &base64(b"\x78\x9f\x3e\x22 TNEF with BEGIN:VCALENDAR inside"),
        );
        let alternative = multipart(
            "alternative",
            "alt",
            &[
                text_plain("Bob accepted"),
                entity(&["Content-Type: text/html"], "<p>Bob accepted</p>"),
            ],
        );
        let mixed = multipart("mixed", "mix", &[alternative, ics, winmail]);
        let image = entity(&["Content-Type: image/png", "Content-ID: <logo>"], "PNG");
        let related = multipart("related", "rel", &[mixed, image]);
        let found = itip(&message(&[], &related));
        assert_eq!(found.calendar, INVITE);
        assert_eq!(found.method, Some(Method::Request));
    }

    #[test]
    fn application_ics_alone_is_the_calendar() {
        let ics = entity(
            &[
                "Content-Type: application/ics",
                "Content-Disposition: attachment",
            ],
            REPLY_NO_METHOD,
        );
        let raw = message(
            &[],
            &multipart("mixed", "b", &[text_plain("see attachment"), ics]),
        );
        // No METHOD and no parameter: readable, but which method is unknown.
        assert_eq!(parse(&raw), Err(InboundError::NoMethod));
        let with_method = REPLY_NO_METHOD.replace("VERSION:2.0\n", "VERSION:2.0\nMETHOD:REPLY\n");
        let ics = entity(
            &["Content-Type: application/ics; name=reply.ics"],
            &with_method,
        );
        let raw = message(
            &[],
            &multipart("mixed", "b", &[text_plain("see attachment"), ics]),
        );
        assert_eq!(itip(&raw).calendar, with_method);
    }

    #[test]
    fn the_usual_duplicate_is_one_object_and_the_text_calendar_part_wins() {
        // The attachment is the same object with LF line ends and its own
        // folding, base64-encoded; the text/calendar part comes second.
        let lf = INVITE
            .replace("\r\n", "\n")
            .replace("ORGANIZER;CN=Alice:", "ORGANIZER;CN=Al\n ice:");
        let ics = entity(
            &[
                "Content-Type: application/ics; name=\"invite.ics\"",
                "Content-Disposition: attachment; filename=\"invite.ics\"",
                "Content-Transfer-Encoding: base64",
            ],
            &base64(lf.as_bytes()),
        );
        let cal = entity(
            &[
                "Content-Type: text/calendar; charset=UTF-8; method=REQUEST",
                "Content-Transfer-Encoding: quoted-printable",
            ],
            &quoted_printable(INVITE.as_bytes(), "\r\n"),
        );
        let raw = message(&[], &multipart("mixed", "m", &[text_plain("hi"), ics, cal]));
        assert_eq!(itip(&raw).calendar, INVITE);
    }

    #[test]
    fn method_parameter_of_a_duplicate_counts() {
        let ics = entity(
            &["Content-Type: application/ics; method=REPLY"],
            REPLY_NO_METHOD,
        );
        let cal = calendar_7bit("; charset=utf-8", &REPLY_NO_METHOD.replace('\n', "\r\n"));
        let found = itip(&message(&[], &multipart("mixed", "m", &[cal, ics])));
        assert_eq!(found.method, Some(Method::Reply));
        assert_eq!(found.calendar, REPLY_NO_METHOD.replace('\n', "\r\n"));
    }

    #[test]
    fn different_objects_are_rejected() {
        let other = INVITE.replace("inbound-1@", "inbound-2@");
        let parts = [
            calendar_7bit("; method=REQUEST", INVITE),
            calendar_7bit("; method=REQUEST", &other),
            entity(&["Content-Type: application/ics"], INVITE),
            entity(
                &["Content-Type: text/plain; name=\"x.ICS\""],
                "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
            ),
        ];
        let raw = message(&[], &multipart("mixed", "m", &parts));
        assert_eq!(parse(&raw), Err(InboundError::SeveralObjects(3)));
        // Empty calendar parts hold no object.
        let parts = [
            calendar_7bit("; method=REQUEST", INVITE),
            calendar_7bit("", "\r\n  \r\n"),
        ];
        assert_eq!(
            itip(&message(&[], &multipart("mixed", "m", &parts))).calendar,
            INVITE
        );
    }

    #[test]
    fn no_calendar_part_is_rejected_and_winmail_dat_is_not_read() {
        let winmail = entity(
            &["Content-Type: application/ms-tnef; name=\"winmail.dat\""],
            "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n",
        );
        let raw = message(
            &[],
            &multipart("mixed", "m", &[text_plain(INVITE), winmail]),
        );
        assert_eq!(parse(&raw), Err(InboundError::NoCalendar));
        assert_eq!(
            InboundError::NoCalendar.to_string(),
            "no text/calendar or application/ics part in the message"
        );
        let raw = message(&[], &calendar_7bit("; method=REQUEST", "\r\n"));
        assert_eq!(parse(&raw), Err(InboundError::NoCalendar));
    }

    #[test]
    fn a_forwarded_invitation_is_not_the_message_s_own() {
        let forwarded =
            String::from_utf8(message(&[], &calendar_7bit("; method=REQUEST", INVITE))).unwrap();
        let attached = entity(&["Content-Type: message/rfc822"], &forwarded);
        let raw = message(
            &[],
            &multipart("mixed", "m", &[text_plain("FYI"), attached]),
        );
        assert_eq!(parse(&raw), Err(InboundError::NoCalendar));
    }

    #[test]
    fn charsets_are_applied_and_invalid_utf8_is_rejected() {
        let latin1: Vec<u8> = INVITE.chars().map(|c| c as u32 as u8).collect();
        let mut raw = message(
            &[],
            &entity(&["Content-Type: text/calendar; charset=ISO-8859-1"], ""),
        );
        raw.extend_from_slice(&latin1);
        assert_eq!(itip(&raw).calendar, INVITE);

        for charset in [
            "",
            "; charset=utf-8",
            "; charset=us-ascii",
            "; charset=x-unknown",
        ] {
            let mut raw = message(
                &[],
                &entity(&[&format!("Content-Type: text/calendar{charset}")], ""),
            );
            raw.extend_from_slice(&latin1);
            assert_eq!(parse(&raw), Err(InboundError::NotText), "{charset}");
        }

        let broken = entity(
            &[
                "Content-Type: text/calendar; method=REQUEST",
                "Content-Transfer-Encoding: base64",
            ],
            "QkVHSU46VkNBTEVOREFS\r\n!!not base64!!\r\n",
        );
        assert_eq!(parse(&message(&[], &broken)), Err(InboundError::NotText));
        // An unreadable copy next to a readable one does not count.
        let good = entity(&["Content-Type: application/ics"], INVITE);
        let raw = message(&[], &multipart("mixed", "m", &[broken, good]));
        assert_eq!(itip(&raw).calendar, INVITE);
    }

    fn nested(levels: usize, leaf: &str) -> String {
        let mut inner = leaf.to_string();
        for level in 0..levels {
            inner = multipart("mixed", &format!("level{level}"), &[inner]);
        }
        inner
    }

    #[test]
    fn nesting_is_bounded() {
        let leaf = calendar_7bit("; method=REQUEST", INVITE);
        assert_eq!(
            itip(&message(&[], &nested(MAX_DEPTH, &leaf))).calendar,
            INVITE
        );
        assert_eq!(
            parse(&message(&[], &nested(MAX_DEPTH + 1, &leaf))),
            Err(InboundError::TooComplex {
                what: "MIME nesting depth",
                limit: MAX_DEPTH
            })
        );
        // Attached messages count as a level, even in a bounce.
        let mut inner = leaf;
        for _ in 0..=MAX_DEPTH / 2 {
            let msg = String::from_utf8(message(&[], &multipart("mixed", "x", &[inner]))).unwrap();
            inner = entity(&["Content-Type: message/rfc822"], &msg);
        }
        let report = multipart("report; report-type=delivery-status", "r", &[inner]);
        assert!(matches!(
            parse(&message(&[], &report)),
            Err(InboundError::TooComplex {
                what: "MIME nesting depth",
                ..
            })
        ));
    }

    #[test]
    fn part_count_is_bounded() {
        let cal = calendar_7bit("; method=REQUEST", INVITE);
        let mut parts = vec![cal; 1];
        parts.extend((1..MAX_PARTS - 1).map(|i| text_plain(&format!("part {i}"))));
        assert_eq!(parts.len() + 1, MAX_PARTS);
        assert_eq!(
            itip(&message(&[], &multipart("mixed", "m", &parts))).calendar,
            INVITE
        );
        parts.push(text_plain("one too many"));
        let err = parse(&message(&[], &multipart("mixed", "m", &parts))).unwrap_err();
        assert_eq!(
            err,
            InboundError::TooComplex {
                what: "number of MIME parts",
                limit: MAX_PARTS
            }
        );
        assert_eq!(err.to_string(), "number of MIME parts exceeds 100");
    }

    #[test]
    fn a_deep_chain_of_attached_messages_does_not_overflow_the_stack() {
        // Each level is 46 bytes; dropping 20 000 nested messages
        // recursively overflows a 2 MiB stack (a tokio worker's default).
        let mut raw = b"From: a@example.org\r\n".to_vec();
        for _ in 0..20_000 {
            raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\nFrom: b@example.org\r\n");
        }
        raw.extend_from_slice(b"Content-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\n");
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&raw))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(
            outcome,
            Err(InboundError::TooComplex {
                what: "MIME nesting depth",
                limit: MAX_DEPTH
            })
        );
    }

    #[test]
    fn what_is_not_mail_is_rejected() {
        assert!(matches!(parse(b""), Err(InboundError::NotMime(_))));
        assert!(matches!(parse(b" \r\n\r\n"), Err(InboundError::NotMime(_))));
    }

    #[test]
    fn sender_fields_are_lower_case_and_unambiguous() {
        let cal = calendar_7bit("; method=REQUEST", INVITE);
        let raw = message(
            &[
                "Sender: Calendar <Calendar-Notification@Google.COM>",
                "Reply-To: First <First@Example.org>, second@example.org",
            ],
            &cal,
        );
        let found = itip(&raw);
        assert_eq!(
            found.sender.as_deref(),
            Some("calendar-notification@google.com")
        );
        assert_eq!(found.reply_to.as_deref(), Some("first@example.org"));

        let two = String::from_utf8(raw.clone()).unwrap().replacen(
            "From: \"Bob B.\" <Bob@Example.ORG>",
            "From: bob@example.org, eve@example.net",
            1,
        );
        assert_eq!(itip(two.as_bytes()).from, None);
        let repeated =
            String::from_utf8(raw)
                .unwrap()
                .replacen("To: ", "From: eve@example.net\r\nTo: ", 1);
        assert_eq!(itip(repeated.as_bytes()).from, None);
    }

    fn dsn(status_part: &str, original: Option<String>, report_type: &str) -> Vec<u8> {
        let mut parts = vec![
            text_plain("Your message could not be delivered."),
            entity(&["Content-Type: message/delivery-status"], status_part),
        ];
        parts.extend(original);
        let report = multipart(&format!("report{report_type}"), "dsn", &parts);
        format!(
            "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n\
             To: bridge@bridge.example\r\nSubject: Undelivered Mail\r\n\
             Message-ID: <bounce-1@mx.example.org>\r\nMIME-Version: 1.0\r\n{report}"
        )
        .into_bytes()
    }

    const STATUS: &str = "Reporting-MTA: dns; mx.example.org\r\n\
        Original-Envelope-Id: abc\r\n\
        \r\n\
        Final-Recipient: rfc822; Carol@mx.example.org\r\n\
        Original-Recipient: rfc822;Carol@Example.org\r\n\
        Action: failed\r\n\
        Status: 5.1.1 (user unknown)\r\n\
        Diagnostic-Code: smtp; 550 5.1.1 <carol@example.org>:\r\n    \
        Recipient address rejected\r\n\
        \r\n\
        Final-Recipient: rfc822; dave@example.org\r\n\
        Action: delayed\r\n\
        Status: 4.4.1\r\n\
        \r\n\
        Final-Recipient: RFC822; <Erin@Example.org>\r\n\
        Status: 5.2.2\r\n";

    #[test]
    fn a_delivery_report_names_failed_recipients_status_and_diagnostic() {
        let headers = entity(
            &["Content-Type: text/rfc822-headers"],
            "From: bridge@bridge.example\r\nMessage-ID: <orig-7@bridge.example>\r\nSubject: x\r\n",
        );
        let b = bounce(&dsn(STATUS, Some(headers), "; report-type=delivery-status"));
        assert_eq!(b.recipients, ["carol@example.org", "erin@example.org"]);
        assert_eq!(b.status, Some(EnhancedStatus::new(5, 1, 1)));
        assert_eq!(
            b.diagnostic.as_deref(),
            Some("550 5.1.1 <carol@example.org>: Recipient address rejected")
        );
        assert_eq!(
            b.original_message_id.as_deref(),
            Some("orig-7@bridge.example")
        );
        assert_eq!(b.original_calendar, None);
    }

    #[test]
    fn a_bounce_quoting_an_invitation_is_a_bounce_with_the_original() {
        let original = String::from_utf8(message(
            &[],
            &multipart(
                "alternative",
                "o",
                &[
                    text_plain("Invitation"),
                    entity(
                        &[
                            "Content-Type: text/calendar; method=REQUEST",
                            "Content-Transfer-Encoding: base64",
                        ],
                        &base64(INVITE.as_bytes()),
                    ),
                ],
            ),
        ))
        .unwrap();
        let quoted = entity(&["Content-Type: message/rfc822"], &original);
        // No report-type, but a delivery-status part: still a bounce.
        let b = bounce(&dsn(STATUS, Some(quoted), ""));
        assert_eq!(
            b.original_message_id.as_deref(),
            Some("reply-1@example.org")
        );
        assert_eq!(b.original_calendar.as_deref(), Some(INVITE));
        assert_eq!(b.recipients.len(), 2);
        // The original may itself be base64-encoded.
        let encoded = entity(
            &[
                "Content-Type: message/rfc822",
                "Content-Transfer-Encoding: base64",
            ],
            &base64(original.as_bytes()),
        );
        let b = bounce(&dsn(STATUS, Some(encoded), "; report-type=delivery-status"));
        assert_eq!(
            b.original_message_id.as_deref(),
            Some("reply-1@example.org")
        );
        assert_eq!(b.original_calendar.as_deref(), Some(INVITE));
    }

    #[test]
    fn a_report_that_is_not_about_delivery_is_read_as_mail() {
        let parts = [
            text_plain("Your message was displayed"),
            entity(
                &["Content-Type: message/disposition-notification"],
                "Final-Recipient: rfc822; a@b.c\r\n",
            ),
            calendar_7bit("; method=REQUEST", INVITE),
        ];
        let raw = message(
            &[],
            &multipart("report; report-type=disposition-notification", "r", &parts),
        );
        assert_eq!(itip(&raw).calendar, INVITE);
        // A delay notice is a bounce without failed recipients.
        let delayed = "Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; d@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n";
        let b = bounce(&dsn(delayed, None, "; report-type=\"delivery-status\""));
        assert!(b.recipients.is_empty());
        assert_eq!(b.status, Some(EnhancedStatus::new(4, 4, 1)));
    }

    #[test]
    fn error_texts_fit_an_smtp_reply() {
        let all = [
            InboundError::NotMime("no header fields found".into()),
            InboundError::NoCalendar,
            InboundError::SeveralObjects(2),
            InboundError::NoMethod,
            InboundError::TooComplex {
                what: DEPTH,
                limit: MAX_DEPTH,
            },
            InboundError::NotText,
        ];
        for e in all {
            let text = e.to_string();
            assert!(text.len() < 80 && text.is_ascii(), "{text}");
            assert!(!text.contains(['\r', '\n']), "{text}");
        }
    }

    /// xorshift64*: deterministic, so a failure names its iteration.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Mutates `bytes` in one of the ways real breakage looks: flipped,
    /// inserted, deleted or duplicated bytes, MIME syntax characters,
    /// truncation, a repeated boundary line.
    fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
        const SPICY: &[u8] = b"\r\n-=:;\"<> \t\x00\xff\xc3\xa9=3D--";
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let at = at.min(bytes.len() - 1);
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => bytes.insert(at, SPICY[rng.below(SPICY.len())]),
            2 => {
                let end = (at + rng.below(64)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(200)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                let to = rng.below(bytes.len() + 1);
                bytes.splice(to..to, copy);
            }
            4 => bytes.truncate(at),
            5 => {
                let line = b"\r\n--m\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n";
                bytes.splice(at..at, line.iter().copied());
            }
            _ => {
                let text = String::from_utf8_lossy(bytes).replacen("base64", "quoted-printable", 1);
                *bytes = text.into_bytes();
            }
        }
    }

    #[test]
    fn mutated_and_truncated_mail_never_panics() {
        let alternative = multipart(
            "alternative",
            "a",
            &[
                text_plain("Bob accepted"),
                entity(
                    &[
                        "Content-Type: text/calendar; charset=UTF-8; method=REPLY",
                        "Content-Transfer-Encoding: quoted-printable",
                    ],
                    &quoted_printable(INVITE.as_bytes(), "\n"),
                ),
            ],
        );
        let ics = entity(
            &[
                "Content-Type: application/ics; name=invite.ics",
                "Content-Transfer-Encoding: base64",
            ],
            &base64(INVITE.as_bytes()),
        );
        let invitation = message(&[], &multipart("mixed", "m", &[alternative, ics]));
        let original = String::from_utf8(invitation.clone()).unwrap();
        let report = dsn(
            STATUS,
            Some(entity(&["Content-Type: message/rfc822"], &original)),
            "; report-type=delivery-status",
        );
        assert!(matches!(parse(&invitation), Ok(Parsed::Itip(_))));
        assert!(matches!(parse(&report), Ok(Parsed::Bounce(_))));

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut runs = 0;
        for seed in [&invitation, &report] {
            for cut in (0..seed.len()).step_by(3) {
                let input = &seed[..cut];
                let outcome = std::panic::catch_unwind(|| parse(input));
                assert!(
                    outcome.is_ok(),
                    "truncated at {cut}: {:?}",
                    String::from_utf8_lossy(input)
                );
                runs += 1;
            }
            for iteration in 0..1500 {
                let mut input = seed.clone();
                for _ in 0..=rng.below(4) {
                    mutate(&mut rng, &mut input);
                }
                let outcome = std::panic::catch_unwind(|| parse(&input));
                assert!(
                    outcome.is_ok(),
                    "mutation {iteration}: {:?}",
                    String::from_utf8_lossy(&input)
                );
                runs += 1;
            }
        }
        assert!(runs > 4000, "{runs}");
    }
}
