//! The XML bodies of iSchedule (spec clauses 8.2, 8.3 and 10.1): the
//! per-recipient `schedule-response` and the whole-request `error`, plus the
//! small tree reader and writer that `capabilities` shares.
//!
//! Reading matches elements by local name only and ignores namespaces:
//! deployed receivers, and the spec's own examples (`urn:...:ishedule`,
//! `urn:...:icalendar`), get the namespace wrong, and refusing their answers
//! would gain nothing. Writing always uses the iSchedule namespace.

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Decoder, Reader};

use crate::ischedule::status::BadStatus;
use crate::ischedule::{Rejection, RequestStatus, NAMESPACE};

/// Deepest element nesting accepted. iSchedule documents are four levels
/// deep; the limit keeps a hostile body from costing unbounded memory.
const MAX_DEPTH: usize = 32;

/// Why a received XML body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("the document has no root element")]
    NoRoot,
    #[error("expected root element <{expected}>, found <{found}>")]
    WrongRoot {
        expected: &'static str,
        found: String,
    },
    #[error("<{parent}> has no <{child}> element")]
    MissingElement {
        parent: &'static str,
        child: &'static str,
    },
    #[error("bad <request-status>: {0}")]
    BadRequestStatus(#[from] BadStatus),
    #[error("<{element}> holds '{value}', which is not {expected}")]
    BadValue {
        element: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("elements are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// One recipient's outcome (clause 10.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResponse {
    /// The address as the sender wrote it, so the sender can match it.
    pub recipient: String,
    pub status: RequestStatus,
    pub calendar_data: Option<String>,
    /// Local name of the first child element of `<error>`, if any.
    pub error: Option<String>,
    /// `response-description`.
    pub description: Option<String>,
}

/// The body of a POST response (clause 8.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduleResponse {
    pub responses: Vec<RecipientResponse>,
}

impl ScheduleResponse {
    /// Writes the document. An `error` that is not an XML name (it can only
    /// come from a caller, never from `parse` of a conforming document) is
    /// left out, because writing it would break the whole document.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::document("schedule-response");
        for response in &self.responses {
            w.start("response");
            w.text_element("recipient", &response.recipient);
            w.text_element("request-status", &response.status.to_string());
            if let Some(data) = &response.calendar_data {
                w.text_element("calendar-data", data);
            }
            if let Some(error) = response.error.as_deref().filter(|e| is_xml_name(e)) {
                w.start("error");
                w.empty_element(error, &[]);
                w.end();
            }
            if let Some(description) = &response.description {
                w.text_element("response-description", description);
            }
            w.end();
        }
        w.finish()
    }

    /// Reads a receiver's answer. Unknown elements are skipped, and
    /// `<recipient>` may hold its address as text or inside a child such as
    /// `DAV:href`, as CalDAV-derived servers write it.
    pub fn parse(xml: &[u8]) -> Result<ScheduleResponse, XmlError> {
        let root = parse_document(xml, "schedule-response")?;
        let responses = root
            .children_named("response")
            .map(recipient_response)
            .collect::<Result<_, _>>()?;
        Ok(ScheduleResponse { responses })
    }
}

fn recipient_response(el: &Element) -> Result<RecipientResponse, XmlError> {
    let required = |child| {
        el.child(child).ok_or(XmlError::MissingElement {
            parent: "response",
            child,
        })
    };
    let recipient = required("recipient")?.trimmed_text();
    let status = required("request-status")?.trimmed_text().parse()?;
    Ok(RecipientResponse {
        recipient,
        status,
        calendar_data: el
            .child("calendar-data")
            .map(|data| strip_blank_edge_lines(&data.text()).to_string()),
        error: el
            .child("error")
            .and_then(|error| error.elements().next())
            .map(|code| code.name.clone()),
        description: el.child("response-description").map(Element::trimmed_text),
    })
}

/// The body of a whole-request failure (clause 8.3).
pub fn error_document(rejection: &Rejection) -> String {
    let mut w = XmlWriter::document("error");
    w.empty_element(rejection.error.element(), &[]);
    w.text_element("response-description", &rejection.description);
    w.finish()
}

/// A receiver's whole-request failure as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDocument {
    /// The error code element's local name, e.g. `verification-failed`.
    pub element: Option<String>,
    pub description: Option<String>,
}

/// Reads an `<error>` body (clause 8.3). The code is kept as a name rather
/// than an `IsError` so codes from newer or non-conforming receivers still
/// reach the log.
pub fn parse_error_document(xml: &[u8]) -> Result<ErrorDocument, XmlError> {
    let root = parse_document(xml, "error")?;
    let element = root
        .elements()
        .find(|el| el.name != "response-description")
        .map(|el| el.name.clone());
    let description = root
        .child("response-description")
        .map(Element::trimmed_text);
    Ok(ErrorDocument {
        element,
        description,
    })
}

/// Drops the whitespace-only lines before and after the content, which come
/// from pretty-printed XML, but keeps every content line as it is and the
/// line break that ends the last one (iCalendar lines end in CRLF).
fn strip_blank_edge_lines(text: &str) -> &str {
    let is_content = |c: char| !c.is_ascii_whitespace();
    let (Some(first), Some(last)) = (text.find(is_content), text.rfind(is_content)) else {
        return "";
    };
    let start = text[..first].rfind('\n').map_or(0, |i| i + 1);
    let after_last = last + text[last..].chars().next().map_or(0, char::len_utf8);
    let end = text[after_last..]
        .find('\n')
        .map_or(text.len(), |i| after_last + i + 1);
    &text[start..end]
}

/// A parsed element: local name, attributes by local name (namespace
/// declarations left out), and the children in document order. iSchedule
/// bodies are small, so a tree is simpler than streaming at no real cost.
#[derive(Debug)]
pub(crate) struct Element {
    pub(crate) name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// Child elements, text skipped.
    pub(crate) fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(el) => Some(el),
            Node::Text(_) => None,
        })
    }

    pub(crate) fn children_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Element> + 's {
        self.elements().filter(move |el| el.name == name)
    }

    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|el| el.name == name)
    }

    pub(crate) fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All text inside, descendants included, unescaped.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    pub(crate) fn trimmed_text(&self) -> String {
        self.text().trim().to_string()
    }

    fn collect_text(&self, out: &mut String) {
        for node in &self.children {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Element(el) => el.collect_text(out),
            }
        }
    }
}

/// Parses a whole document and checks the root's local name. Never panics:
/// every malformation, bytes that are not UTF-8 included, is an error.
pub(crate) fn parse_document(xml: &[u8], expected: &'static str) -> Result<Element, XmlError> {
    let root = TreeBuilder::default().build(xml)?;
    if root.name != expected {
        return Err(XmlError::WrongRoot {
            expected,
            found: root.name,
        });
    }
    Ok(root)
}

/// Turns reader events into an `Element` tree: `open` holds the elements
/// whose end tag has not been seen yet, `position` where the reader is, for
/// error messages.
#[derive(Default)]
struct TreeBuilder {
    open: Vec<Element>,
    root: Option<Element>,
    position: u64,
}

impl TreeBuilder {
    fn build(mut self, xml: &[u8]) -> Result<Element, XmlError> {
        let mut reader = Reader::from_reader(xml);
        loop {
            let event = reader.read_event().map_err(|err| XmlError::Malformed {
                position: reader.error_position(),
                message: err.to_string(),
            })?;
            self.position = reader.buffer_position();
            match event {
                Event::Eof => break,
                event => self.handle(event, reader.decoder())?,
            }
        }
        if let Some(el) = self.open.last() {
            return Err(self.malformed(format!("<{}> is not closed", el.name)));
        }
        self.root.ok_or(XmlError::NoRoot)
    }

    fn handle(&mut self, event: Event<'_>, decoder: Decoder) -> Result<(), XmlError> {
        match event {
            Event::Start(start) => {
                let el = element(&start, decoder).map_err(|e| self.malformed(e.to_string()))?;
                self.open(el)
            }
            Event::Empty(start) => {
                let el = element(&start, decoder).map_err(|e| self.malformed(e.to_string()))?;
                self.open(el)?;
                self.close()
            }
            Event::End(_) => self.close(),
            Event::Text(text) => {
                let text = text.decode().map_err(|e| self.malformed(e.to_string()))?;
                self.text(&text)
            }
            Event::CData(data) => {
                let text = data.decode().map_err(|e| self.malformed(e.to_string()))?;
                self.text(&text)
            }
            Event::GeneralRef(reference) => {
                let text =
                    resolve_reference(&reference).map_err(|e| self.malformed(e.to_string()))?;
                self.text(&text)
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Eof => {
                Ok(())
            }
        }
    }

    fn open(&mut self, el: Element) -> Result<(), XmlError> {
        if self.root.is_some() {
            return Err(self.malformed(format!("<{}> follows the root element", el.name)));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(XmlError::TooDeep);
        }
        self.open.push(el);
        Ok(())
    }

    fn close(&mut self) -> Result<(), XmlError> {
        let el = self
            .open
            .pop()
            .ok_or_else(|| self.malformed("end tag without start tag".into()))?;
        match self.open.last_mut() {
            Some(parent) => parent.children.push(Node::Element(el)),
            None => self.root = Some(el),
        }
        Ok(())
    }

    /// Text goes to the open element; outside the root only whitespace is
    /// allowed (XML 1.0 clause 2.1).
    fn text(&mut self, text: &str) -> Result<(), XmlError> {
        match self.open.last_mut() {
            Some(parent) => parent.children.push(Node::Text(text.to_string())),
            None if text.trim().is_empty() => {}
            None => return Err(self.malformed("text outside the root element".into())),
        }
        Ok(())
    }

    fn malformed(&self, message: String) -> XmlError {
        XmlError::Malformed {
            position: self.position,
            message,
        }
    }
}

/// What quick-xml could not read inside a start tag or reference.
#[derive(Debug, thiserror::Error)]
enum Syntax {
    #[error(transparent)]
    Encoding(#[from] quick_xml::encoding::EncodingError),
    #[error(transparent)]
    Attribute(#[from] quick_xml::events::attributes::AttrError),
    #[error(transparent)]
    Other(#[from] quick_xml::Error),
    #[error("unknown entity &{0};")]
    UnknownEntity(String),
}

fn element(start: &BytesStart<'_>, decoder: Decoder) -> Result<Element, Syntax> {
    let name = decoder.decode(start.local_name().as_ref())?.into_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute?;
        if attribute.key.as_namespace_binding().is_some() {
            continue;
        }
        let key = decoder
            .decode(attribute.key.local_name().as_ref())?
            .into_owned();
        let value = attribute.decode_and_unescape_value(decoder)?.into_owned();
        attributes.push((key, value));
    }
    Ok(Element {
        name,
        attributes,
        children: Vec::new(),
    })
}

/// A character reference or one of the five predefined entities; anything
/// else would need a DTD, which iSchedule bodies do not have.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<String, Syntax> {
    if let Some(c) = reference.resolve_char_ref()? {
        return Ok(c.to_string());
    }
    let name = reference.decode()?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(str::to_string)
        .ok_or_else(|| Syntax::UnknownEntity(name.into_owned()))
}

/// Builds a document as a string. Only names are written unescaped; they
/// are constants or checked with [`is_xml_name`] by the caller.
pub(crate) struct XmlWriter {
    out: String,
    open: Vec<String>,
}

impl XmlWriter {
    /// Starts with the declaration and the root in the iSchedule namespace.
    pub(crate) fn document(root: &str) -> XmlWriter {
        let mut w = XmlWriter {
            out: String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"),
            open: Vec::new(),
        };
        w.start_with(root, &[("xmlns", NAMESPACE)]);
        w
    }

    pub(crate) fn start(&mut self, name: &str) {
        self.start_with(name, &[]);
    }

    pub(crate) fn start_with(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.tag(name, attributes);
        self.out.push('>');
        self.open.push(name.to_string());
    }

    pub(crate) fn end(&mut self) {
        if let Some(name) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(&name);
            self.out.push('>');
        }
    }

    pub(crate) fn empty_element(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.tag(name, attributes);
        self.out.push_str("/>");
    }

    pub(crate) fn text_element(&mut self, name: &str, text: &str) {
        self.start(name);
        escape_into(&mut self.out, text, false);
        self.end();
    }

    /// Closes whatever is still open and returns the document.
    pub(crate) fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.end();
        }
        self.out
    }

    fn tag(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attributes {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value, true);
            self.out.push('"');
        }
    }
}

/// Escapes markup characters. CR is written as a reference because XML
/// parsers turn a raw CRLF into LF, and iCalendar data needs its CRLF back;
/// in attributes TAB and LF are referenced for the same reason. Characters
/// XML 1.0 cannot carry at all become U+FFFD rather than an unreadable
/// document.
fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#13;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
}

/// XML 1.0 `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A conservative XML name: what can be written as an element name as is.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ischedule::{IsError, StatusCode};

    /// Appendix A.1's response, misspelt namespace and all.
    const A1_RESPONSE: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<schedule-response xmlns="urn:ietf:params:xml:ns:ishedule">
  <response>
    <recipient>mailto:cyrus@example.org</recipient>
    <request-status>2.0;Success</request-status>
    <response-description>Delivered to recipient</response-description>
  </response>
</schedule-response>
"#;

    /// Appendix A.2's response, as printed.
    const A2_RESPONSE: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<schedule-response xmlns="urn:ietf:params:xml:ns:ishedule">
  <response>
    <recipient>mailto:cyrus@example.org</recipient>
    <request-status>2.0;Success</request-status>
    <calendar-data>BEGIN:VCALENDAR
VERSION:2.0
PROID:-//Example Corp.//EN
METHOD:REPLY
BEGIN:VFREEBUSY
DTSTAMP:20040901T200200Z
ORGANIZER:mailto:bernard@example.com
DTSTART:20040902T000000Z
DTEND:20040903T000000Z
UID:34222-232@example.com
ATTENDEE;CN=Cyrus Daboo:mailto:cyrus@example.org
FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:20040902T000000Z/
 20040902T090000Z,20040902T170000Z/20040903T000000Z
FREEBUSY;FBTYPE=BUSY:20040902T120000Z/20040902T130000Z
END:VFREEBUSY
END:VCALENDAR
  </calendar-data>
</response>
<response>
  <recipient>mailto:mike@example.org</recipient>
  <request-status>5.3;No scheduling support for user</request-status>
  <response-description>Unknown calendar user</response-description>
</response>
</schedule-response>
"#;

    /// Appendix A.3's error, with yet another wrong namespace.
    const A3_ERROR: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<error xmlns="urn:ietf:params:xml:ns:icalendar">
  <verification-failed />
  <response-description>Unable to verify request</response-description>
</error>
"#;

    fn sample() -> ScheduleResponse {
        ScheduleResponse {
            responses: vec![
                RecipientResponse {
                    recipient: "mailto:cyrus@example.org".into(),
                    status: RequestStatus::success(),
                    calendar_data: Some(
                        "BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nSUMMARY:a < b & c > d \"q\"\r\n \
                         folded line\r\nEND:VCALENDAR\r\n"
                            .into(),
                    ),
                    error: None,
                    description: Some("Delivered <fast> & safe".into()),
                },
                RecipientResponse {
                    recipient: "mailto:mike@example.org?subject=a&b".into(),
                    status: RequestStatus::no_scheduling_support(),
                    calendar_data: None,
                    error: Some(IsError::RecipientMissing.element().into()),
                    description: None,
                },
            ],
        }
    }

    #[test]
    fn schedule_response_round_trips() {
        let response = sample();
        let xml = response.to_xml();
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <schedule-response xmlns=\"urn:ietf:params:xml:ns:ischedule\"><response>\
             <recipient>mailto:cyrus@example.org</recipient>\
             <request-status>2.0;Success</request-status>"
        ));
        assert!(xml.contains("a &lt; b &amp; c &gt; d"));
        assert!(xml.contains("<error><recipient-missing/></error>"));
        assert_eq!(ScheduleResponse::parse(xml.as_bytes()).unwrap(), response);
        let empty = ScheduleResponse::default();
        assert_eq!(
            ScheduleResponse::parse(empty.to_xml().as_bytes()).unwrap(),
            empty
        );
    }

    #[test]
    fn appendix_a1_response_parses_despite_its_namespace() {
        let parsed = ScheduleResponse::parse(A1_RESPONSE.as_bytes()).unwrap();
        assert_eq!(
            parsed.responses,
            [RecipientResponse {
                recipient: "mailto:cyrus@example.org".into(),
                status: RequestStatus::success(),
                calendar_data: None,
                error: None,
                description: Some("Delivered to recipient".into()),
            }]
        );
    }

    #[test]
    fn appendix_a2_response_keeps_calendar_data_lines() {
        let parsed = ScheduleResponse::parse(A2_RESPONSE.as_bytes()).unwrap();
        let [cyrus, mike] = parsed.responses.as_slice() else {
            panic!("two responses expected: {parsed:?}");
        };
        let data = cyrus.calendar_data.as_deref().unwrap();
        assert!(data.starts_with("BEGIN:VCALENDAR\nVERSION:2.0\n"));
        assert!(data.contains("/\n 20040902T090000Z,"), "folded line kept");
        assert!(data.ends_with("END:VFREEBUSY\nEND:VCALENDAR\n"));
        assert_eq!(mike.recipient, "mailto:mike@example.org");
        assert_eq!(mike.status.code, StatusCode::NO_SCHEDULING_SUPPORT);
        assert_eq!(mike.description.as_deref(), Some("Unknown calendar user"));
        assert_eq!(mike.calendar_data, None);
    }

    #[test]
    fn recipient_inside_dav_href_and_prefixed_elements() {
        let xml = r#"<?xml version="1.0"?>
<is:schedule-response xmlns:is="urn:ietf:params:xml:ns:ischedule">
 <is:response>
  <is:recipient><href xmlns="DAV:">mailto:x@y</href></is:recipient>
  <is:request-status> 3.7;Invalid calendar user </is:request-status>
  <is:error><is:recipient-missing/></is:error>
  <is:x-unknown>ignored</is:x-unknown>
 </is:response>
</is:schedule-response>"#;
        let parsed = ScheduleResponse::parse(xml.as_bytes()).unwrap();
        let response = &parsed.responses[0];
        assert_eq!(response.recipient, "mailto:x@y");
        assert_eq!(response.status, RequestStatus::invalid_user());
        assert_eq!(response.error.as_deref(), Some("recipient-missing"));
    }

    #[test]
    fn calendar_data_in_cdata_and_references_is_kept_exactly() {
        let xml = "<schedule-response><response><recipient>mailto:a@b.c</recipient>\
                   <request-status>2.0</request-status><calendar-data>\n   \n\
                   <![CDATA[BEGIN:VCALENDAR\r\n  X-A:<&>\r\n]]>X-B:&lt;&#13;&#x0A;END:VCALENDAR\r\n   \
                   </calendar-data></response></schedule-response>";
        let parsed = ScheduleResponse::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            parsed.responses[0].calendar_data.as_deref(),
            Some("BEGIN:VCALENDAR\r\n  X-A:<&>\r\nX-B:<\r\nEND:VCALENDAR\r\n")
        );
    }

    #[test]
    fn strip_blank_edge_lines_keeps_content_lines_whole() {
        assert_eq!(
            strip_blank_edge_lines("\n  \r\n  A\n B  \n\t \n"),
            "  A\n B  \n"
        );
        assert_eq!(strip_blank_edge_lines("A"), "A");
        assert_eq!(strip_blank_edge_lines(" \n \t"), "");
        assert_eq!(strip_blank_edge_lines("é\r\n "), "é\r\n");
    }

    #[test]
    fn response_without_required_children_or_with_bad_status_is_rejected() {
        let missing = "<schedule-response><response><request-status>2.0</request-status>\
                       </response></schedule-response>";
        assert!(matches!(
            ScheduleResponse::parse(missing.as_bytes()),
            Err(XmlError::MissingElement {
                parent: "response",
                child: "recipient"
            })
        ));
        let missing = "<schedule-response><response><recipient>mailto:a@b.c</recipient>\
                       </response></schedule-response>";
        assert!(matches!(
            ScheduleResponse::parse(missing.as_bytes()),
            Err(XmlError::MissingElement {
                child: "request-status",
                ..
            })
        ));
        let bad = "<schedule-response><response><recipient>mailto:a@b.c</recipient>\
                   <request-status>OK</request-status></response></schedule-response>";
        let err = ScheduleResponse::parse(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, XmlError::BadRequestStatus(_)));
        assert!(err.to_string().contains("'OK'"));
    }

    #[test]
    fn wrong_root_says_what_was_found() {
        let err = ScheduleResponse::parse(A3_ERROR.as_bytes()).unwrap_err();
        assert!(matches!(&err, XmlError::WrongRoot { found, .. } if found == "error"));
        assert_eq!(
            err.to_string(),
            "expected root element <schedule-response>, found <error>"
        );
    }

    #[test]
    fn error_document_is_written_and_read_back() {
        let rejection = Rejection::new(IsError::MaxRecipients, "251 recipients > 250 & <more>");
        let xml = error_document(&rejection);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <error xmlns=\"urn:ietf:params:xml:ns:ischedule\"><max-recipients/>\
             <response-description>251 recipients &gt; 250 &amp; &lt;more&gt;</response-description>\
             </error>"
        );
        assert_eq!(
            parse_error_document(xml.as_bytes()).unwrap(),
            ErrorDocument {
                element: Some("max-recipients".into()),
                description: Some(rejection.description),
            }
        );
    }

    #[test]
    fn appendix_a3_error_parses_despite_its_namespace() {
        let parsed = parse_error_document(A3_ERROR.as_bytes()).unwrap();
        assert_eq!(parsed.element.as_deref(), Some("verification-failed"));
        assert_eq!(
            parsed.description.as_deref(),
            Some("Unable to verify request")
        );
        // The description may come first, and the code may be absent.
        let parsed = parse_error_document(
            b"<error><response-description>x</response-description><max-instances/></error>",
        )
        .unwrap();
        assert_eq!(parsed.element.as_deref(), Some("max-instances"));
        let parsed = parse_error_document(b"<error/>").unwrap();
        assert_eq!(
            parsed,
            ErrorDocument {
                element: None,
                description: None
            }
        );
        assert!(matches!(
            parse_error_document(A1_RESPONSE.as_bytes()),
            Err(XmlError::WrongRoot { .. })
        ));
    }

    #[test]
    fn control_characters_and_invalid_names_do_not_break_the_document() {
        let rejection = Rejection::new(IsError::InvalidCalendarData, "bad\u{0}byte\u{1b}");
        let parsed = parse_error_document(error_document(&rejection).as_bytes()).unwrap();
        assert_eq!(
            parsed.description.as_deref(),
            Some("bad\u{fffd}byte\u{fffd}")
        );

        let mut response = sample();
        response.responses[1].error = Some("a\"b <c>".into());
        let parsed = ScheduleResponse::parse(response.to_xml().as_bytes()).unwrap();
        assert_eq!(parsed.responses[1].error, None);
    }

    #[test]
    fn attributes_are_escaped_and_read_by_local_name() {
        let mut w = XmlWriter::document("root");
        w.empty_element("x", &[("v", "a\"b<c>&d\te\nf\rg")]);
        let xml = w.finish();
        let root = parse_document(xml.as_bytes(), "root").unwrap();
        let x = root.child("x").unwrap();
        assert_eq!(x.attribute("v"), Some("a\"b<c>&d\te\nf\rg"));
        let root = parse_document(br#"<r xmlns:p="u"><x p:name="n"/></r>"#, "r").unwrap();
        assert_eq!(root.child("x").unwrap().attribute("name"), Some("n"));
        assert_eq!(
            root.attribute("p"),
            None,
            "namespace declarations are not attributes"
        );
    }

    #[test]
    fn nesting_is_limited() {
        let nested = |depth: usize| {
            format!(
                "<schedule-response>{}{}</schedule-response>",
                "<x>".repeat(depth - 1),
                "</x>".repeat(depth - 1)
            )
        };
        assert!(ScheduleResponse::parse(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(matches!(
            ScheduleResponse::parse(nested(MAX_DEPTH + 1).as_bytes()),
            Err(XmlError::TooDeep)
        ));
        let empty_at_limit = format!(
            "<schedule-response>{}<y/>{}</schedule-response>",
            "<x>".repeat(MAX_DEPTH - 1),
            "</x>".repeat(MAX_DEPTH - 1)
        );
        assert!(matches!(
            ScheduleResponse::parse(empty_at_limit.as_bytes()),
            Err(XmlError::TooDeep)
        ));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for doc in [
            &b""[..],
            b"   ",
            b"<?xml version=\"1.0\"?>",
            b"<schedule-response>",
            b"<schedule-response></response>",
            b"<schedule-response/><schedule-response/>",
            b"<schedule-response/>trailing",
            b"text<schedule-response/>",
            b"<schedule-response>&nbsp;</schedule-response>",
            b"<schedule-response>&#0;</schedule-response>",
            b"<schedule-response a=\"1\" a=\"2\"/>",
            b"<schedule-response>\xff\xfe</schedule-response>",
            b"<schedule-re\xffsponse/>",
            b"<schedule-response><![CDATA[x</schedule-response>",
        ] {
            assert!(
                ScheduleResponse::parse(doc).is_err(),
                "{:?} should be rejected",
                String::from_utf8_lossy(doc)
            );
        }
    }

    /// Every prefix of real documents, and deterministic byte-level mutations
    /// of them, must give a value or an error, never a panic.
    #[test]
    fn truncated_and_garbled_documents_never_panic() {
        let docs = [
            A1_RESPONSE.as_bytes(),
            A2_RESPONSE.as_bytes(),
            A3_ERROR.as_bytes(),
        ];
        let sample = sample().to_xml();
        let docs = docs.iter().copied().chain([sample.as_bytes()]);
        const NOISE: &[u8] = b"<>/&;\"'=![]?x\xff\x00 ";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for doc in docs {
            for end in 0..doc.len() {
                let _ = ScheduleResponse::parse(&doc[..end]);
                let _ = parse_error_document(&doc[..end]);
            }
            for _ in 0..2000 {
                let mut garbled = doc.to_vec();
                for _ in 0..(next() % 8 + 1) {
                    let at = (next() % (garbled.len() as u64 + 1)) as usize;
                    let byte = NOISE[(next() % NOISE.len() as u64) as usize];
                    match next() % 3 {
                        0 if at < garbled.len() => garbled[at] = byte,
                        1 => garbled.insert(at, byte),
                        _ if at < garbled.len() => {
                            garbled.remove(at);
                        }
                        _ => {}
                    }
                }
                let _ = ScheduleResponse::parse(&garbled);
                let _ = parse_error_document(&garbled);
            }
        }
    }
}
