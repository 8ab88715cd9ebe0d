//! The iSchedule request headers (spec clauses 8.1 and 9) and the
//! `Content-Type` rules of clause 8.1, turned into typed values or into the
//! `IS:error` rejection a receiver answers with.
//!
//! Every function takes the raw bytes of each occurrence of its header, in
//! request order, because HTTP allows repeated headers and non-UTF-8 bytes,
//! and both have to be judged here rather than lost in a conversion.

use std::collections::HashSet;
use std::fmt;

use crate::ischedule::{IsError, Rejection, VERSION};
use crate::itip::{CalAddress, ComponentKind, Method};

pub const ISCHEDULE_VERSION: &str = "iSchedule-Version";
pub const ISCHEDULE_CAPABILITIES: &str = "iSchedule-Capabilities";
pub const ISCHEDULE_MESSAGE_ID: &str = "iSchedule-Message-ID";
pub const ORIGINATOR: &str = "Originator";
pub const RECIPIENT: &str = "Recipient";

/// Longest `iSchedule-Message-ID` accepted: the header is an identifier
/// that ends up in logs and de-duplication tables, not free text.
const MAX_MESSAGE_ID_LEN: usize = 512;

/// How many characters of a sender's value a description quotes, so a
/// hostile header cannot blow up the error document or a log line.
const MAX_SHOWN_CHARS: usize = 200;

/// Checks `iSchedule-Version` (clause 9.1): the request is acceptable when
/// "1.0" is one of the listed versions, across all occurrences.
pub fn check_version<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<(), Rejection> {
    let mut offered = Vec::new();
    for value in values {
        for item in list_items(value) {
            if item == VERSION.as_bytes() {
                return Ok(());
            }
            offered.push(shown(item));
        }
    }
    let description = if offered.is_empty() {
        format!("the request has no {ISCHEDULE_VERSION} header; this receiver supports {VERSION}")
    } else {
        format!(
            "{ISCHEDULE_VERSION} {} is not supported; this receiver supports {VERSION}",
            offered.join(", ")
        )
    };
    Err(Rejection::new(IsError::VersionNotSupported, description))
}

/// Parses the single `Originator` (clauses 8.1, 9.4). A list of addresses
/// in one header is as much "more than one originator" as two headers are.
pub fn parse_originator<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<CalAddress, Rejection> {
    let mut values = values.into_iter();
    let Some(value) = values.next() else {
        return Err(Rejection::new(
            IsError::OriginatorMissing,
            format!("the request has no {ORIGINATOR} header"),
        ));
    };
    let extra = values.count();
    if extra > 0 {
        return Err(Rejection::new(
            IsError::TooManyOriginators,
            format!(
                "the request has {} {ORIGINATOR} headers; exactly one is allowed",
                extra + 1
            ),
        ));
    }
    let items: Vec<&[u8]> = list_items(value).collect();
    if items.len() > 1 {
        return Err(Rejection::new(
            IsError::TooManyOriginators,
            format!(
                "the {ORIGINATOR} header {} lists {} addresses; exactly one is allowed",
                shown(value),
                items.len()
            ),
        ));
    }
    let item = items.first().copied().unwrap_or_default();
    parse_address(item)
        .map_err(|why| Rejection::new(IsError::OriginatorInvalid, format!("{ORIGINATOR} {why}")))
}

/// Collects every `Recipient` (clauses 8.1, 9.5) in request order. A
/// recipient named twice would otherwise get the message twice, so repeats
/// are dropped. An unusable address rejects the whole request: clause 8.3
/// has no per-header error, and `recipient-missing` covers "no valid
/// Recipient".
pub fn parse_recipients<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<CalAddress>, Rejection> {
    let mut seen = HashSet::new();
    let mut recipients = Vec::new();
    for value in values {
        for item in list_items(value) {
            let address = parse_address(item).map_err(|why| {
                Rejection::new(IsError::RecipientMissing, format!("{RECIPIENT} {why}"))
            })?;
            if seen.insert(address.clone()) {
                recipients.push(address);
            }
        }
    }
    if recipients.is_empty() {
        return Err(Rejection::new(
            IsError::RecipientMissing,
            format!("the request has no {RECIPIENT} header naming a calendar user address"),
        ));
    }
    Ok(recipients)
}

/// Parses the optional `iSchedule-Message-ID` (clause 9.3). An empty header
/// carries no identifier and is treated as absent.
pub fn parse_message_id<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<String>, Rejection> {
    let invalid = |why: String| {
        Rejection::new(
            IsError::InvalidSchedulingMessage,
            format!("{ISCHEDULE_MESSAGE_ID} {why}"),
        )
    };
    let mut values = values.into_iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let extra = values.count();
    if extra > 0 {
        return Err(invalid(format!(
            "appears {} times; at most one is allowed",
            extra + 1
        )));
    }
    let value = trim_ows(value);
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_MESSAGE_ID_LEN {
        return Err(invalid(format!(
            "is {} bytes long; at most {MAX_MESSAGE_ID_LEN} are allowed",
            value.len()
        )));
    }
    let id = std::str::from_utf8(value)
        .map_err(|_| invalid(format!("{} is not UTF-8", shown(value))))?;
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "{} contains whitespace or control characters",
            shown(value)
        )));
    }
    Ok(Some(id.to_string()))
}

/// The `Content-Type` of a POST (clause 8.1): iCalendar data, with the
/// component and method a receiver routes and authorizes on before it has
/// read the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub component: ComponentKind,
    pub method: Method,
}

impl ContentType {
    /// Parses a `Content-Type` value. A wrong media type or charset, or a
    /// missing parameter, is `invalid-calendar-data-type`; a parameter value
    /// that is not a component or method iSchedule schedules is
    /// `invalid-scheduling-message`, since the type itself was right.
    pub fn parse(value: &[u8]) -> Result<ContentType, Rejection> {
        let bad_type = |why: String| {
            Rejection::new(
                IsError::InvalidCalendarDataType,
                format!("Content-Type {why}"),
            )
        };
        let text = std::str::from_utf8(value)
            .map_err(|_| bad_type(format!("{} is not UTF-8", shown(value))))?;
        let mut segments = split_unquoted(text, ';').into_iter();
        let media_type = segments.next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("text/calendar") {
            return Err(bad_type(format!(
                "media type {} is not text/calendar",
                shown(media_type.as_bytes())
            )));
        }
        let params: Vec<(String, String)> = segments.filter_map(parameter).collect();
        if let Some(charset) =
            single_param(&params, "charset").map_err(|e| bad_type(e.to_string()))?
        {
            if !charset.eq_ignore_ascii_case("utf-8") {
                return Err(bad_type(format!(
                    "charset {} is not utf-8",
                    shown(charset.as_bytes())
                )));
            }
        }
        let component =
            required_param(&params, "component").map_err(|e| bad_type(e.to_string()))?;
        let method = required_param(&params, "method").map_err(|e| bad_type(e.to_string()))?;
        let unknown = |what: &str, value: &str| {
            Rejection::new(
                IsError::InvalidSchedulingMessage,
                format!(
                    "Content-Type {what} {} is not one iSchedule schedules",
                    shown(value.as_bytes())
                ),
            )
        };
        Ok(ContentType {
            component: ComponentKind::parse(component)
                .ok_or_else(|| unknown("component", component))?,
            method: Method::parse(method).ok_or_else(|| unknown("method", method))?,
        })
    }
}

/// The value a sender puts in its own `Content-Type`, as in appendix A.1.
impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "text/calendar; component={}; method={}",
            self.component, self.method
        )
    }
}

/// The non-empty elements of a comma-separated header list, OWS removed.
/// Empty elements are skipped as HTTP list syntax (RFC 7230 7) requires.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// Strips OWS, including obsolete line folding (`CRLF WSP`, clause 9).
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Why a header value, or a part of one, is unusable: each says so in
/// words the sender can act on, after the header's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ValueError {
    #[error("{0} is not UTF-8")]
    NotUtf8(String),
    #[error("{shown} is not a valid calendar user address: {why}")]
    NotAddress { shown: String, why: String },
    #[error("has more than one {0} parameter")]
    RepeatedParameter(String),
    #[error("has no {0} parameter")]
    MissingParameter(String),
}

/// One list element as a calendar user address, or a reason that names it.
fn parse_address(item: &[u8]) -> Result<CalAddress, ValueError> {
    let text = std::str::from_utf8(item).map_err(|_| ValueError::NotUtf8(shown(item)))?;
    CalAddress::parse(text).map_err(|err| ValueError::NotAddress {
        shown: shown(item),
        why: clean(&err.to_string()),
    })
}

/// A sender's value, quoted and made safe for a description.
fn shown(value: &[u8]) -> String {
    format!("'{}'", clean(&String::from_utf8_lossy(value)))
}

/// Control characters escaped and length capped: descriptions go into XML
/// and logs, where raw CR/LF or a megabyte header would do harm.
fn clean(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits on `sep` outside double-quoted strings, so a quoted parameter
/// value may contain the separator.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `name=value` with the name lower-cased and a quoted value unquoted;
/// segments without `=` carry nothing usable and are skipped.
fn parameter(segment: &str) -> Option<(String, String)> {
    let (name, value) = segment.split_once('=')?;
    Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
}

/// Removes the quotes and backslash escapes of an RFC 7230 quoted-string.
fn unquote(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// A parameter that may appear at most once: two `method=` values would
/// leave it to chance which one a later check sees.
fn single_param<'p>(
    params: &'p [(String, String)],
    name: &str,
) -> Result<Option<&'p str>, ValueError> {
    let mut found = params
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(ValueError::RepeatedParameter(name.to_string()));
    }
    Ok(first)
}

fn required_param<'p>(params: &'p [(String, String)], name: &str) -> Result<&'p str, ValueError> {
    single_param(params, name)?.ok_or_else(|| ValueError::MissingParameter(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(values: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        values.iter().map(|v| v.as_bytes())
    }

    fn addresses(list: &[CalAddress]) -> Vec<&str> {
        list.iter().map(CalAddress::as_str).collect()
    }

    #[test]
    fn version_one_zero_is_accepted_in_any_list_position() {
        assert!(check_version(headers(&["1.0"])).is_ok());
        assert!(check_version(headers(&["2.0 ,\t1.0"])).is_ok());
        assert!(check_version(headers(&["2.0", " 1.0 "])).is_ok());
        assert!(check_version(headers(&["2.0,\r\n 1.0"])).is_ok());
    }

    #[test]
    fn missing_or_other_versions_are_not_supported() {
        let err = check_version(headers(&[])).unwrap_err();
        assert_eq!(err.error, IsError::VersionNotSupported);
        assert!(err.description.contains("no iSchedule-Version"));
        assert!(err.description.contains("1.0"));

        let err = check_version(headers(&["2.0, 1.1"])).unwrap_err();
        assert_eq!(err.error, IsError::VersionNotSupported);
        assert!(
            err.description.contains("'2.0', '1.1'"),
            "{}",
            err.description
        );
        assert!(err.description.contains("supports 1.0"));

        assert!(check_version(headers(&["", " , "])).is_err());
        assert!(check_version([&b"1.0\xff"[..]]).is_err());
    }

    #[test]
    fn one_originator_is_parsed() {
        let o = parse_originator(headers(&["  mailto:bernard@example.com "])).unwrap();
        assert_eq!(o.as_str(), "mailto:bernard@example.com");
        // A trailing empty list element is not a second originator.
        assert!(parse_originator(headers(&["mailto:b@example.com,"])).is_ok());
    }

    #[test]
    fn originator_rules() {
        let err = parse_originator(headers(&[])).unwrap_err();
        assert_eq!(err.error, IsError::OriginatorMissing);

        let err = parse_originator(headers(&["mailto:a@x.org", "mailto:b@x.org"])).unwrap_err();
        assert_eq!(err.error, IsError::TooManyOriginators);
        assert!(err.description.contains("2 Originator headers"));

        let err = parse_originator(headers(&["mailto:a@x.org,\r\n mailto:b@x.org"])).unwrap_err();
        assert_eq!(err.error, IsError::TooManyOriginators);
        assert!(err.description.contains("2 addresses"));

        let err = parse_originator(headers(&["bernard@example.com"])).unwrap_err();
        assert_eq!(err.error, IsError::OriginatorInvalid);
        assert!(err.description.contains("'bernard@example.com'"));
        assert!(err.description.contains("no scheme"));

        let err = parse_originator(headers(&["  "])).unwrap_err();
        assert_eq!(err.error, IsError::OriginatorInvalid);
        assert!(err.description.contains("empty"));

        let err = parse_originator([&b"mailto:b\xff@x.org"[..]]).unwrap_err();
        assert_eq!(err.error, IsError::OriginatorInvalid);
        assert!(err.description.contains("not UTF-8"));
    }

    #[test]
    fn recipients_from_repeated_headers_and_lists_in_order_without_duplicates() {
        let list = parse_recipients(headers(&[
            "mailto:cyrus@example.org ,mailto:mike@example.org",
            "MAILTO:Cyrus@Example.ORG",
            "\tmailto:ann@example.org,\r\n\tmailto:mike@example.org, ,",
        ]))
        .unwrap();
        assert_eq!(
            addresses(&list),
            [
                "mailto:cyrus@example.org",
                "mailto:mike@example.org",
                "mailto:ann@example.org"
            ]
        );
    }

    #[test]
    fn recipient_rules() {
        let err = parse_recipients(headers(&[])).unwrap_err();
        assert_eq!(err.error, IsError::RecipientMissing);
        let err = parse_recipients(headers(&["", " , "])).unwrap_err();
        assert_eq!(err.error, IsError::RecipientMissing);

        let err = parse_recipients(headers(&["mailto:a@x.org, mailto:nobody"])).unwrap_err();
        assert_eq!(err.error, IsError::RecipientMissing);
        assert!(err.description.contains("'mailto:nobody'"));
        assert!(err.description.contains("local-part@domain"));

        let err = parse_recipients([&b"mailto:\xfe@x.org"[..]]).unwrap_err();
        assert_eq!(err.error, IsError::RecipientMissing);
        assert!(err.description.contains("not UTF-8"));
    }

    #[test]
    fn message_id_rules() {
        assert_eq!(parse_message_id(headers(&[])).unwrap(), None);
        assert_eq!(parse_message_id(headers(&["  "])).unwrap(), None);
        assert_eq!(
            parse_message_id(headers(&[" 798F00BB-5B45-4634-B083-0D0CD3A2BB39\r\n"])).unwrap(),
            Some("798F00BB-5B45-4634-B083-0D0CD3A2BB39".to_string())
        );
        assert_eq!(
            parse_message_id(headers(&[&"x".repeat(512)]))
                .unwrap()
                .map(|id| id.len()),
            Some(512)
        );

        let rejected = |values: &[&str]| parse_message_id(headers(values)).unwrap_err();
        for err in [
            rejected(&["a", "b"]),
            rejected(&["a b"]),
            rejected(&["a\r\n b"]),
            rejected(&["a\u{1}b"]),
            rejected(&["a\u{a0}b"]),
            rejected(&[&"x".repeat(513)]),
        ] {
            assert_eq!(err.error, IsError::InvalidSchedulingMessage);
        }
        assert!(rejected(&["a", "b"]).description.contains("2 times"));
        assert!(rejected(&["a\u{1}b"]).description.contains("\\u{1}"));
        assert!(rejected(&[&"x".repeat(513)])
            .description
            .contains("513 bytes"));
        assert!(parse_message_id([&b"id\xff"[..]]).is_err());
    }

    #[test]
    fn content_type_of_the_spec_examples() {
        let ct = ContentType::parse(b"text/calendar; component=VEVENT; method=REQUEST").unwrap();
        assert_eq!(
            ct,
            ContentType {
                component: ComponentKind::VEvent,
                method: Method::Request
            }
        );
        assert_eq!(
            ct.to_string(),
            "text/calendar; component=VEVENT; method=REQUEST"
        );
        assert_eq!(ContentType::parse(ct.to_string().as_bytes()).unwrap(), ct);
    }

    #[test]
    fn content_type_is_case_insensitive_and_accepts_quotes() {
        let ct = ContentType::parse(
            b"Text/Calendar;Charset=\"UTF-8\" ; METHOD=\"reply\";component=vtodo;x-foo=\"a;b\"",
        )
        .unwrap();
        assert_eq!(ct.component, ComponentKind::VTodo);
        assert_eq!(ct.method, Method::Reply);
        let ct =
            ContentType::parse(b"text/calendar;component=\"VFREE\\BUSY\";method=REQUEST").unwrap();
        assert_eq!(ct.component, ComponentKind::VFreeBusy);
    }

    #[test]
    fn content_type_rules() {
        let err = |v: &str| ContentType::parse(v.as_bytes()).unwrap_err();

        let e = err("application/xml; component=VEVENT; method=REQUEST");
        assert_eq!(e.error, IsError::InvalidCalendarDataType);
        assert!(e.description.contains("'application/xml'"));

        let e = err("text/calendar; charset=iso-8859-1; component=VEVENT; method=REQUEST");
        assert_eq!(e.error, IsError::InvalidCalendarDataType);
        assert!(e.description.contains("iso-8859-1"));

        let e = err("text/calendar; method=REQUEST");
        assert_eq!(e.error, IsError::InvalidCalendarDataType);
        assert!(e.description.contains("no component parameter"));

        let e = err("text/calendar; component=VEVENT");
        assert_eq!(e.error, IsError::InvalidCalendarDataType);
        assert!(e.description.contains("no method parameter"));

        let e = err("text/calendar; component=VEVENT; method=REQUEST; method=CANCEL");
        assert_eq!(e.error, IsError::InvalidCalendarDataType);
        assert!(e.description.contains("more than one method"));

        let e = err("text/calendar; component=VPOLL; method=REQUEST");
        assert_eq!(e.error, IsError::InvalidSchedulingMessage);
        assert!(e.description.contains("'VPOLL'"));

        let e = err("text/calendar; component=VEVENT; method=FORWARD");
        assert_eq!(e.error, IsError::InvalidSchedulingMessage);
        assert!(e.description.contains("'FORWARD'"));

        let e = ContentType::parse(b"text/calendar\xff").unwrap_err();
        assert_eq!(e.error, IsError::InvalidCalendarDataType);
        assert_eq!(err("").error, IsError::InvalidCalendarDataType);
    }

    #[test]
    fn descriptions_do_not_carry_raw_control_characters_or_huge_values() {
        let long = format!("mailto:{}", "a".repeat(5000));
        let err = parse_recipients(headers(&[&long])).unwrap_err();
        assert!(err.description.len() < 1000);
        let err = parse_originator(headers(&["mailto:a\r\nb@x.org"])).unwrap_err();
        assert!(!err.description.contains('\n'));
    }
}
