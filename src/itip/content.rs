//! The content lines of an iCalendar object (RFC 5545 3.1) read into its
//! component tree, for [`super::message`] to take the iTIP facts from.
//!
//! The text comes from the network, so one linear scan checks each line
//! as it files it: the syntax of every property line (strictly: a quoted
//! parameter value is whole, a value list all quoted or all plain), the
//! line count, nesting depth, BEGIN/END pairing and value lengths. Errors
//! name the content line. The tree holds slices of the unfolded text:
//! values are not copied, and a property's parameters are split only when
//! one is asked for.

use std::borrow::Cow;

use super::edit::property_name;
use super::error::{Fault, ItipError};

/// Deepest BEGIN nesting accepted. Real iTIP needs three (VCALENDAR, VEVENT,
/// VALARM); the limit bounds the scan's stack and the tree's depth.
const MAX_DEPTH: usize = 8;

/// Most content lines accepted; far above any real scheduling message and
/// low enough that parsing stays cheap.
const MAX_CONTENT_LINES: usize = 10_000;

/// The text with every fold (a line break followed by one space or tab,
/// RFC 5545 3.1) taken out, as `icalendar`'s `unfold` did: CRLF or a bare
/// LF before the space or tab, each fold removed once, left to right.
/// Borrowed when there is none to take out, which is most calendars.
pub(super) fn unfold(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let fold_at = |i: usize| -> usize {
        let wsp = |j: usize| matches!(bytes.get(j), Some(b' ' | b'\t'));
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') && wsp(i + 2) => 3,
            b'\n' if wsp(i + 1) => 2,
            _ => 0,
        }
    };
    // Every fold has an LF followed by a space or tab; `match_indices`
    // finds the LFs with memchr, where most calendars end the search.
    let Some(first) = text
        .match_indices('\n')
        .map(|(lf, _)| lf)
        .find(|&lf| matches!(bytes.get(lf + 1), Some(b' ' | b'\t')))
        .map(|lf| {
            if lf > 0 && bytes[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            }
        })
    else {
        return Cow::Borrowed(text);
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        match fold_at(i) {
            0 => {
                out.push(bytes[i]);
                i += 1;
            }
            len => i += len,
        }
    }
    // Only ASCII bytes were taken out, so what is left is still UTF-8.
    Cow::Owned(String::from_utf8(out).expect("removing ASCII keeps UTF-8 whole"))
}

pub(super) fn invalid_data(description: impl Into<String>) -> ItipError {
    ItipError::new(Fault::InvalidCalendarData, description)
}

/// A line for an error description: debug-quoted (so control characters
/// show) and cut short, since it echoes untrusted input.
pub(super) fn quote(line: &str) -> String {
    const MAX: usize = 80;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &line[..cut]),
        None => format!("{line:?}"),
    }
}

/// A component as read: its upper-cased name, its properties and the
/// components nested in it, in order.
#[derive(Debug)]
pub(super) struct Component<'a> {
    pub(super) name: String,
    pub(super) properties: Vec<Property<'a>>,
    pub(super) components: Vec<Component<'a>>,
}

/// One property's content line, split but otherwise as written: the value
/// is not unescaped ([`text_value`] does that for TEXT values) and the
/// parameters are read only when [`Property::param`] asks for one.
#[derive(Debug)]
pub(super) struct Property<'a> {
    pub(super) name: &'a str,
    /// Every parameter with its leading `;`, already checked.
    params: &'a str,
    pub(super) value: &'a str,
}

impl<'a> Property<'a> {
    /// The value of parameter `key` (case-insensitive); a single quoted
    /// value without its quotes, a list as written.
    pub(super) fn param(&self, key: &str) -> Option<&'a str> {
        let mut rest = self.params;
        while let Some(param) = rest.strip_prefix(';') {
            // Checked by `read_property`, so it splits again the same way.
            let next = skip_parameter(param).ok()?;
            let (name, value) = param[..param.len() - next.len()].split_once('=')?;
            if name.eq_ignore_ascii_case(key) {
                let single = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .filter(|v| !v.contains('"'));
                return Some(single.unwrap_or(value));
            }
            rest = next;
        }
        None
    }
}

/// A TEXT value unescaped (RFC 5545 3.3.11): `\\`, `\,`, `\;` and `\n`
/// or `\N`; `\:` too, which some producers write. Any other backslash
/// stays as written.
pub(super) fn text_value(value: &str) -> Cow<'_, str> {
    if !value.contains('\\') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(escaped @ ('\\' | ',' | ';' | ':')) => out.push(escaped),
            Some('n' | 'N') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Reads the unfolded text into its one VCALENDAR component, checking
/// each content line as it goes so that an error names the line.
pub(super) fn read_content(unfolded: &str) -> Result<Component<'_>, ItipError> {
    let mut scan = LineScan::default();
    for (index, line) in unfolded.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.trim().is_empty() {
            scan.feed(index + 1, line)?;
        }
    }
    scan.finish()
}

/// State of the line scan in [`read_content`].
#[derive(Default)]
struct LineScan<'a> {
    /// Components begun and not yet ended, with their content line numbers.
    open: Vec<(Component<'a>, usize)>,
    /// The VCALENDAR, once ended.
    root: Option<Component<'a>>,
    lines: usize,
}

impl<'a> LineScan<'a> {
    fn feed(&mut self, number: usize, line: &'a str) -> Result<(), ItipError> {
        self.lines += 1;
        if self.lines > MAX_CONTENT_LINES {
            return Err(invalid_data(format!(
                "more than {MAX_CONTENT_LINES} content lines (content line {number})"
            )));
        }
        if line.chars().any(|c| c.is_ascii_control() && c != '\t') {
            return Err(invalid_data(format!(
                "content line {number} {} contains a control character",
                quote(line)
            )));
        }
        if let Some(name) = strip_prefix_ignore_case(line, "BEGIN:") {
            self.begin(number, line, name)
        } else if let Some(name) = strip_prefix_ignore_case(line, "END:") {
            self.end(number, line, name)
        } else {
            self.property(number, line)
        }
    }

    fn begin(&mut self, number: usize, line: &str, name: &str) -> Result<(), ItipError> {
        let name = component_name(number, line, name)?;
        if self.open.is_empty() {
            if self.root.is_some() {
                return Err(after_root(number, line));
            }
            if name != "VCALENDAR" {
                return Err(not_vcalendar(number, line));
            }
        }
        if self.open.len() == MAX_DEPTH {
            return Err(invalid_data(format!(
                "content line {number} {} nests components deeper than {MAX_DEPTH} levels",
                quote(line)
            )));
        }
        let component = Component {
            name,
            properties: Vec::new(),
            components: Vec::new(),
        };
        self.open.push((component, number));
        Ok(())
    }

    fn end(&mut self, number: usize, line: &str, name: &str) -> Result<(), ItipError> {
        let name = component_name(number, line, name)?;
        match self.open.pop() {
            None if self.root.is_some() => Err(after_root(number, line)),
            None => Err(not_vcalendar(number, line)),
            Some((open, at)) if open.name != name => Err(invalid_data(format!(
                "content line {number} {} does not close BEGIN:{} of content line {at}",
                quote(line),
                open.name
            ))),
            Some((ended, _)) => {
                match self.open.last_mut() {
                    Some((parent, _)) => parent.components.push(ended),
                    None => self.root = Some(ended),
                }
                Ok(())
            }
        }
    }

    fn property(&mut self, number: usize, line: &'a str) -> Result<(), ItipError> {
        let Some((component, _)) = self.open.last_mut() else {
            return Err(if self.root.is_some() {
                after_root(number, line)
            } else {
                not_vcalendar(number, line)
            });
        };
        let property = read_property(line).map_err(|problem| {
            invalid_data(format!("content line {number} {} {problem}", quote(line)))
        })?;
        check_value_length(number, property.name, property.value)?;
        component.properties.push(property);
        Ok(())
    }

    fn finish(self) -> Result<Component<'a>, ItipError> {
        if let Some((open, at)) = self.open.last() {
            return Err(invalid_data(format!(
                "BEGIN:{} of content line {at} has no END:{}",
                open.name, open.name
            )));
        }
        self.root
            .ok_or_else(|| invalid_data("the body holds no iCalendar object"))
    }
}

/// RFC 5545 3.1 syntax of a property line, `name *(";" param) ":" value`,
/// checked strictly (a quoted parameter value is whole, a list is all
/// quoted or all plain) so that every line reads one way only.
fn read_property(line: &str) -> Result<Property<'_>, &'static str> {
    let name = property_name(line);
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err("does not start with a property name");
    }
    if name.eq_ignore_ascii_case("BEGIN") || name.eq_ignore_ascii_case("END") {
        return Err("is a malformed BEGIN or END line");
    }
    let after_name = &line[name.len()..];
    let mut rest = after_name;
    while let Some(param) = rest.strip_prefix(';') {
        rest = skip_parameter(param)?;
    }
    match rest.strip_prefix(':') {
        Some(value) => Ok(Property {
            name,
            params: &after_name[..after_name.len() - rest.len()],
            value,
        }),
        None if rest.is_empty() => Err("has no ':' before its value"),
        None => Err("has unexpected text between its parameters and its value"),
    }
}

/// Longest UID taken: it keys reply tokens and failure notices in the
/// store, and real ones are a few dozen octets.
const MAX_UID_OCTETS: usize = 255;
/// Longest value of any other property (unfolded, as escaped).
const MAX_VALUE_OCTETS: usize = 8 * 1024;
/// Free text and inline attachments legitimately run long (Outlook puts
/// the HTML body in X-ALT-DESC); the body limit bounds them.
const UNBOUNDED_PROPERTIES: [&str; 3] = ["DESCRIPTION", "X-ALT-DESC", "ATTACH"];

fn check_value_length(number: usize, name: &str, value: &str) -> Result<(), ItipError> {
    let limit = if name.eq_ignore_ascii_case("UID") {
        MAX_UID_OCTETS
    } else if UNBOUNDED_PROPERTIES
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
    {
        return Ok(());
    } else {
        MAX_VALUE_OCTETS
    };
    if value.len() > limit {
        return Err(invalid_data(format!(
            "content line {number}: the {} value is {} octets long; at most {limit} are accepted",
            name.to_ascii_uppercase(),
            value.len()
        )));
    }
    Ok(())
}

/// Skips `key=value[,value...]` and returns what follows it.
///
/// A value list is either quoted strings (which may hold `;`, `:` and `,`)
/// or plain text without `"`. A mixed or empty-quoted list is refused: it
/// has no one reading (general parsers split it at a quoted colon, which
/// shifts the property value), and [`Property::param`] splits the
/// parameters again with this same function.
fn skip_parameter(text: &str) -> Result<&str, &'static str> {
    let key_len = text.find(|c| !is_name_char(c)).unwrap_or(text.len());
    if key_len == 0 {
        return Err("has a parameter without a name");
    }
    let rest = text[key_len..]
        .strip_prefix('=')
        .ok_or("has a parameter without '='")?;
    if rest.starts_with('"') {
        return skip_quoted_values(rest);
    }
    let end = rest.find(['"', ';', ':']).unwrap_or(rest.len());
    if rest[end..].starts_with('"') {
        return Err("has a '\"' inside an unquoted parameter value");
    }
    Ok(&rest[end..])
}

/// Skips `"a","b",...` (starting at the first `"`).
fn skip_quoted_values(mut rest: &str) -> Result<&str, &'static str> {
    let mut first = true;
    loop {
        let quoted = rest.get(1..).unwrap_or_default();
        let end = quoted
            .find('"')
            .ok_or("has an unterminated quoted parameter value")?;
        rest = &quoted[end + 1..];
        let more = rest.strip_prefix(',');
        if end == 0 && (more.is_some() || !first) {
            return Err("has an empty quoted value in a parameter value list");
        }
        match more {
            None => return Ok(rest),
            Some(next) if next.starts_with('"') => rest = next,
            Some(_) => return Err("mixes quoted and unquoted parameter values"),
        }
        first = false;
    }
}

fn strip_prefix_ignore_case<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &line[prefix.len()..])
}

/// RFC 5545 names are IANA tokens or X-names: letters, digits and `-`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

fn component_name(number: usize, line: &str, name: &str) -> Result<String, ItipError> {
    let name = name.trim();
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err(invalid_data(format!(
            "content line {number} {} does not name a component",
            quote(line)
        )));
    }
    Ok(name.to_ascii_uppercase())
}

fn not_vcalendar(number: usize, line: &str) -> ItipError {
    invalid_data(format!(
        "the body must start with BEGIN:VCALENDAR, but content line {number} is {}",
        quote(line)
    ))
}

fn after_root(number: usize, line: &str) -> ItipError {
    invalid_data(format!(
        "content line {number} {} follows END:VCALENDAR; only one iCalendar object is allowed",
        quote(line)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to 7 characters over the characters folds are
    /// made of (the longest fold is 3), unfolded as `icalendar` did.
    #[test]
    fn unfolds_every_short_string_as_icalendar_did() {
        const ALPHABET: [char; 5] = ['\r', '\n', ' ', '\t', 'é'];
        let mut compared = 0;
        for len in 0..=7u32 {
            for n in 0..ALPHABET.len().pow(len) {
                let mut rest = n;
                let text: String = (0..len)
                    .map(|_| {
                        let c = ALPHABET[rest % ALPHABET.len()];
                        rest /= ALPHABET.len();
                        c
                    })
                    .collect();
                assert_eq!(unfold(&text), icalendar::parser::unfold(&text), "{text:?}");
                compared += 1;
            }
        }
        assert_eq!(compared, 97_656);
    }

    #[test]
    fn text_without_folds_is_borrowed() {
        let text = "BEGIN:VCALENDAR\r\nSUMMARY:a b\r\nEND:VCALENDAR\r\n";
        assert!(matches!(unfold(text), Cow::Borrowed(_)));
        assert_eq!(unfold("SUMMARY:a\r\n b\n\tc"), "SUMMARY:abc");
    }
}
