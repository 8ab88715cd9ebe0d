//! Byte-faithful edits of iCalendar content lines.
//!
//! The bridge forwards the sender's calendar data untouched, except where a
//! fan-out has to narrow it (a VFREEBUSY request split per receiver must name
//! only that receiver's recipients, spec clause 5.1). Edits here therefore
//! work on the raw text: whole content lines, with their folded continuation
//! lines and line endings, are dropped or kept as they are, and nothing is
//! ever re-serialised.

use std::borrow::Cow;

use super::CalAddress;
use crate::itip::ComponentKind;

/// For VFREEBUSY fan-out: remove every ATTENDEE content line (including its
/// folded continuation lines) whose value is not in `keep`; every other byte
/// stays exactly as it was.
///
/// ATTENDEE values that are not calendar user addresses at all cannot be in
/// `keep`, so they are removed too.
pub fn retain_attendees(body: &str, keep: &[CalAddress]) -> String {
    let mut out = String::with_capacity(body.len());
    for line in content_lines(body) {
        if !is_unwanted_attendee(&line.unfolded(), keep) {
            out.push_str(line.raw);
        }
    }
    out
}

fn is_unwanted_attendee(line: &str, keep: &[CalAddress]) -> bool {
    if !property_name(line).eq_ignore_ascii_case("ATTENDEE") {
        return false;
    }
    let Some(colon) = value_separator(line) else {
        return true;
    };
    CalAddress::parse(&line[colon + 1..]).map_or(true, |addr| !keep.contains(&addr))
}

/// Token reply routing: sets the value of every ORGANIZER content line to
/// `new_value` (e.g. `mailto:ischedule+k3j...@bridge.example`), keeping its
/// parameters (CN etc.) and every other byte (line endings, folding of other
/// lines) exactly. Returns the edited object.
///
/// Replies then reach the bridge, which restores the real organizer on the
/// way back (DESIGN.md, reply routing). A folded ORGANIZER line is written
/// as one line, ending as its last physical line did; an ORGANIZER line
/// without a value separator is malformed and stays as it was. `new_value`
/// is written as given, so it must be a single-line calendar user address.
pub fn replace_organizer(body: &str, new_value: &str) -> String {
    let mut out = String::with_capacity(body.len() + new_value.len());
    for line in content_lines(body) {
        match with_organizer_value(&line, new_value) {
            Some(edited) => out.push_str(&edited),
            None => out.push_str(line.raw),
        }
    }
    out
}

/// `line` with its value replaced, if it is a well-formed ORGANIZER line.
fn with_organizer_value(line: &RawContentLine<'_>, new_value: &str) -> Option<String> {
    let unfolded = line.unfolded();
    if !property_name(&unfolded).eq_ignore_ascii_case("ORGANIZER") {
        return None;
    }
    let colon = value_separator(&unfolded)?;
    let ending = &line.raw[strip_line_ending(line.raw).len()..];
    Some(format!("{}{new_value}{ending}", &unfolded[..=colon]))
}

/// For REPLYs that omit ORGANIZER (Outlook does): adds `ORGANIZER:<organizer>`
/// right after the BEGIN line of every scheduling component (VEVENT, VTODO,
/// VJOURNAL, VFREEBUSY) that has no ORGANIZER of its own. An ORGANIZER in a
/// nested component (a VALARM) does not count, and a component that already
/// has one is left alone. Returns the edited object.
///
/// Every other byte stays as it was. The new line ends like the BEGIN line
/// it follows (CRLF or bare LF); a BEGIN line at the very end of the body
/// without a line ending gets the body's first line ending (CRLF if it has
/// none) before the new line. `organizer` is written as given, so it must
/// be a single-line calendar user address (e.g. `mailto:alice@example.com`).
pub fn insert_organizer(body: &str, organizer: &str) -> String {
    let lines: Vec<RawContentLine<'_>> = content_lines(body).collect();
    let needs_organizer = components_without_organizer(&lines);
    let inserted = needs_organizer.iter().filter(|&&n| n).count();
    let mut out = String::with_capacity(body.len() + inserted * (organizer.len() + 12));
    for (line, needs) in lines.iter().zip(needs_organizer) {
        out.push_str(line.raw);
        if !needs {
            continue;
        }
        let ending = &line.raw[strip_line_ending(line.raw).len()..];
        if ending.is_empty() {
            out.push_str(first_line_ending(body));
            out.push_str("ORGANIZER:");
            out.push_str(organizer);
        } else {
            out.push_str("ORGANIZER:");
            out.push_str(organizer);
            out.push_str(ending);
        }
    }
    out
}

/// For each content line: whether it is the BEGIN line of a scheduling
/// component without an ORGANIZER property of its own. A component left
/// open at the end of the body is judged by what it holds so far.
fn components_without_organizer(lines: &[RawContentLine<'_>]) -> Vec<bool> {
    // Open components: the index of their BEGIN line if they schedule, and
    // whether an ORGANIZER was seen directly inside them.
    let mut open: Vec<(Option<usize>, bool)> = Vec::new();
    let mut needs = vec![false; lines.len()];
    for (index, line) in lines.iter().enumerate() {
        let text = line.unfolded();
        let name = property_name(&text);
        if name.eq_ignore_ascii_case("BEGIN") {
            let component = text.split_once(':').map_or("", |(_, value)| value);
            let scheduling = ComponentKind::parse(component).is_some();
            open.push((scheduling.then_some(index), false));
        } else if name.eq_ignore_ascii_case("END") {
            if let Some((Some(begin), false)) = open.pop() {
                needs[begin] = true;
            }
        } else if name.eq_ignore_ascii_case("ORGANIZER") {
            if let Some((_, has_organizer)) = open.last_mut() {
                *has_organizer = true;
            }
        }
    }
    for (begin, has_organizer) in open {
        if let (Some(begin), false) = (begin, has_organizer) {
            needs[begin] = true;
        }
    }
    needs
}

/// The first line ending in `body` (`\r\n` or `\n`); `\r\n` if there is none.
fn first_line_ending(body: &str) -> &'static str {
    match body.find('\n') {
        Some(nl) if nl > 0 && body.as_bytes()[nl - 1] == b'\r' => "\r\n",
        Some(_) => "\n",
        None => "\r\n",
    }
}

/// The name of an unfolded content line: everything before the first `;`
/// (parameters follow) or `:` (the value follows).
pub(crate) fn property_name(line: &str) -> &str {
    line.split([';', ':']).next().unwrap_or_default()
}

/// Byte index of the `:` that separates an unfolded content line's name and
/// parameters from its value.
///
/// Quoted parameter values may themselves contain `:` and `;` (RFC 5545
/// section 3.2, e.g. `CN="Doe, J: x"`), so a colon only counts outside
/// double quotes. `None` when there is no such colon, which makes the line
/// malformed.
fn value_separator(line: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b':' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// One content line exactly as written: its first physical line and every
/// folded continuation line, each with its own line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawContentLine<'a> {
    raw: &'a str,
}

impl<'a> RawContentLine<'a> {
    /// The logical line (RFC 5545 section 3.1): line endings removed, and
    /// the single space or tab that starts each continuation dropped.
    fn unfolded(&self) -> Cow<'a, str> {
        let mut physical = self.raw.split_inclusive('\n').map(strip_line_ending);
        let first = physical.next().unwrap_or_default();
        let mut rest = physical.peekable();
        if rest.peek().is_none() {
            return Cow::Borrowed(first);
        }
        let mut line = first.to_string();
        for continuation in rest {
            line.push_str(continuation.get(1..).unwrap_or_default());
        }
        Cow::Owned(line)
    }
}

fn strip_line_ending(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// Splits `body` into content lines without losing a byte: concatenating
/// the `raw` of every item gives `body` back.
fn content_lines(body: &str) -> impl Iterator<Item = RawContentLine<'_>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = content_line_end(rest);
        let (raw, tail) = rest.split_at(end);
        rest = tail;
        Some(RawContentLine { raw })
    })
}

/// Length of the first content line of `text`: up to and including the
/// first line ending that is not followed by a space or tab (a fold).
fn content_line_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(nl) = bytes[from..].iter().position(|&b| b == b'\n') {
        let next = from + nl + 1;
        if !matches!(bytes.get(next), Some(b' ' | b'\t')) {
            return next;
        }
        from = next;
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<CalAddress> {
        list.iter().map(|a| CalAddress::parse(a).unwrap()).collect()
    }

    const FREEBUSY_CRLF: &str = "BEGIN:VCALENDAR\r\n\
        VERSION:2.0\r\n\
        METHOD:REQUEST\r\n\
        BEGIN:VFREEBUSY\r\n\
        ORGANIZER:mailto:bernard@example.com\r\n\
        UID:34222-232@example.com\r\n\
        ATTENDEE;CN=Cyrus Daboo:mailto:cyrus@example.org\r\n\
        ATTENDEE;CN=\"Douglass, M: x;y\":mailto:mike@example.org\r\n\
        ATTENDEE;CN=Long Name;ROLE=REQ-PARTICIPANT:mai\r\n lto:long@example.net\r\n\
        END:VFREEBUSY\r\n\
        END:VCALENDAR\r\n";

    #[test]
    fn keeping_everyone_changes_nothing() {
        let keep = addrs(&[
            "mailto:cyrus@example.org",
            "mailto:mike@example.org",
            "mailto:long@example.net",
        ]);
        assert_eq!(retain_attendees(FREEBUSY_CRLF, &keep), FREEBUSY_CRLF);
    }

    #[test]
    fn removes_a_folded_attendee_with_its_continuation_crlf() {
        let keep = addrs(&["mailto:cyrus@example.org", "mailto:mike@example.org"]);
        let expected = FREEBUSY_CRLF.replace(
            "ATTENDEE;CN=Long Name;ROLE=REQ-PARTICIPANT:mai\r\n lto:long@example.net\r\n",
            "",
        );
        assert_eq!(retain_attendees(FREEBUSY_CRLF, &keep), expected);
    }

    #[test]
    fn removes_attendees_in_lf_input_keeping_lf() {
        let lf = FREEBUSY_CRLF.replace("\r\n", "\n");
        let keep = addrs(&["MAILTO:Long@Example.NET"]);
        let expected = lf
            .replace("ATTENDEE;CN=Cyrus Daboo:mailto:cyrus@example.org\n", "")
            .replace(
                "ATTENDEE;CN=\"Douglass, M: x;y\":mailto:mike@example.org\n",
                "",
            );
        let out = retain_attendees(&lf, &keep);
        assert_eq!(out, expected);
        assert!(!out.contains('\r'));
        assert!(out.contains("mai\n lto:long@example.net\n"));
    }

    #[test]
    fn quoted_cn_with_colon_does_not_hide_the_value() {
        let keep = addrs(&["mailto:mike@example.org"]);
        let out = retain_attendees(FREEBUSY_CRLF, &keep);
        assert!(out.contains("ATTENDEE;CN=\"Douglass, M: x;y\":mailto:mike@example.org\r\n"));
        assert!(!out.contains("cyrus@example.org"));
        assert!(!out.contains("long@example.net"));
        // A CN that looks like the kept address does not keep the line.
        let decoy = "ATTENDEE;CN=\"mailto:mike@example.org\":mailto:eve@example.org\r\n";
        assert_eq!(retain_attendees(decoy, &keep), "");
    }

    #[test]
    fn other_lines_stay_byte_for_byte() {
        let body = "BEGIN:VCALENDAR\r\nX-MIXED:lf only\nDESCRIPTION:folded\r\n  text\r\n\
                    attendee;cn=x:MAILTO:Gone@Example.org\r\n  \r\nORGANIZER:mailto:o@x.org\r\n\
                    END:VCALENDAR";
        let out = retain_attendees(body, &[]);
        assert_eq!(
            out,
            "BEGIN:VCALENDAR\r\nX-MIXED:lf only\nDESCRIPTION:folded\r\n  text\r\n\
             ORGANIZER:mailto:o@x.org\r\nEND:VCALENDAR"
        );
    }

    #[test]
    fn attendee_name_folded_mid_word_is_recognised() {
        let body = "UID:1\nATT\n ENDEE:mailto:a@x.org\nUID:2\n";
        assert_eq!(retain_attendees(body, &[]), "UID:1\nUID:2\n");
    }

    #[test]
    fn unparseable_attendee_values_are_removed() {
        let body = "ATTENDEE:not an address\nATTENDEE;CN=x\nATTENDEES:mailto:a@x.org\n";
        assert_eq!(retain_attendees(body, &[]), "ATTENDEES:mailto:a@x.org\n");
    }

    #[test]
    fn agrees_with_the_message_parser() {
        let msg = crate::itip::ItipMessage::parse(FREEBUSY_CRLF).unwrap();
        assert_eq!(msg.attendees.len(), 3);
        for attendee in &msg.attendees {
            let narrowed = retain_attendees(FREEBUSY_CRLF, std::slice::from_ref(attendee));
            let reread = crate::itip::ItipMessage::parse(&narrowed).unwrap();
            assert_eq!(reread.attendees, std::slice::from_ref(attendee));
        }
    }

    const TOKEN: &str = "mailto:ischedule+k3j9@bridge.example";

    #[test]
    fn replace_organizer_keeps_parameters_and_other_bytes() {
        let body = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n\
                    ORGANIZER;CN=\"Doe, J: x\";SENT-BY=\"mailto:a@x.org\":mailto:jdoe@example.com\r\n\
                    DESCRIPTION:folded\r\n  text\r\nX-LF:only\n\
                    ATTENDEE;CN=Bob:mailto:bob@example.org\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let expected = body.replace(
            "SENT-BY=\"mailto:a@x.org\":mailto:jdoe@example.com",
            &format!("SENT-BY=\"mailto:a@x.org\":{TOKEN}"),
        );
        assert_eq!(replace_organizer(body, TOKEN), expected);
    }

    #[test]
    fn replace_organizer_unfolds_a_folded_organizer() {
        let body = "UID:1\r\norganizer;CN=Long\r\n  Name:mai\r\n\tlto:o@example.com\r\nUID:2\n";
        assert_eq!(
            replace_organizer(body, TOKEN),
            format!("UID:1\r\norganizer;CN=Long Name:{TOKEN}\r\nUID:2\n")
        );
    }

    #[test]
    fn replace_organizer_handles_lf_every_component_and_a_missing_final_newline() {
        let body = "ORGANIZER:mailto:o@x.org\nX-ORGANIZER:mailto:o@x.org\nORGANIZER:mailto:o@x.org";
        assert_eq!(
            replace_organizer(body, TOKEN),
            format!("ORGANIZER:{TOKEN}\nX-ORGANIZER:mailto:o@x.org\nORGANIZER:{TOKEN}")
        );
    }

    #[test]
    fn replace_organizer_leaves_malformed_lines_and_other_objects_alone() {
        let body = "ORGANIZER;CN=\"no: value\r\nATTENDEE:mailto:o@x.org\r\n";
        assert_eq!(replace_organizer(body, TOKEN), body);
        assert_eq!(
            replace_organizer(FREEBUSY_CRLF, "mailto:bernard@example.com"),
            FREEBUSY_CRLF
        );
    }

    #[test]
    fn replaced_organizer_is_what_the_message_parser_reads() {
        let edited = replace_organizer(FREEBUSY_CRLF, TOKEN);
        let msg = crate::itip::ItipMessage::parse(&edited).unwrap();
        assert_eq!(msg.organizer, Some(CalAddress::parse(TOKEN).unwrap()));
        assert_eq!(msg.attendees.len(), 3);
    }

    const REPLY_NO_ORGANIZER: &str = "BEGIN:VCALENDAR\r\n\
        VERSION:2.0\r\n\
        METHOD:REPLY\r\n\
        BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nEND:VTIMEZONE\r\n\
        BEGIN:VEVENT\r\n\
        UID:040000008200E00074C5B7101A82E008\r\n\
        DTSTAMP:20240101T120000Z\r\n\
        ATTENDEE;PARTSTAT=ACCEPTED;CN=\"Bob: B\":mailto:bob@example.org\r\n\
        BEGIN:VALARM\r\nACTION:DISPLAY\r\nEND:VALARM\r\n\
        END:VEVENT\r\n\
        END:VCALENDAR\r\n";

    const PLACEHOLDER: &str = "mailto:alice@example.com";

    #[test]
    fn insert_organizer_after_the_begin_line_crlf() {
        let out = insert_organizer(REPLY_NO_ORGANIZER, PLACEHOLDER);
        let expected = REPLY_NO_ORGANIZER.replace(
            "BEGIN:VEVENT\r\n",
            "BEGIN:VEVENT\r\nORGANIZER:mailto:alice@example.com\r\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn insert_organizer_keeps_bare_lf_and_mixed_endings() {
        let lf = REPLY_NO_ORGANIZER.replace("\r\n", "\n");
        let out = insert_organizer(&lf, PLACEHOLDER);
        assert_eq!(
            out,
            lf.replace(
                "BEGIN:VEVENT\n",
                "BEGIN:VEVENT\nORGANIZER:mailto:alice@example.com\n"
            )
        );
        assert!(!out.contains('\r'));
        // Each insertion ends like its own BEGIN line.
        let mixed = "BEGIN:VCALENDAR\r\nBEGIN:VTODO\nUID:1\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            insert_organizer(mixed, PLACEHOLDER),
            "BEGIN:VCALENDAR\r\nBEGIN:VTODO\nORGANIZER:mailto:alice@example.com\n\
             UID:1\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
        );
    }

    #[test]
    fn insert_organizer_leaves_components_that_have_one() {
        assert_eq!(insert_organizer(FREEBUSY_CRLF, PLACEHOLDER), FREEBUSY_CRLF);
        // ORGANIZER after the ATTENDEEs, lower-case, folded: still counts.
        let body = "BEGIN:VCALENDAR\nbegin:vevent\nUID:1\norgan\n izer:mailto:o@x.org\nend:vevent\nEND:VCALENDAR\n";
        assert_eq!(insert_organizer(body, PLACEHOLDER), body);
    }

    #[test]
    fn insert_organizer_ignores_an_alarm_organizer_and_fills_each_override() {
        let body = "BEGIN:VCALENDAR\n\
                    BEGIN:VEVENT\nUID:1\nORGANIZER:mailto:o@x.org\nEND:VEVENT\n\
                    BEGIN:VEVENT\nUID:1\nRECURRENCE-ID:20240101T100000Z\n\
                    BEGIN:VALARM\nORGANIZER:mailto:alarm@x.org\nEND:VALARM\nEND:VEVENT\n\
                    BEGIN:VJOURNAL\nUID:2\nEND:VJOURNAL\n\
                    BEGIN:VFREEBUSY\nEND:VFREEBUSY\n\
                    BEGIN:X-OTHER\nEND:X-OTHER\n\
                    END:VCALENDAR\n";
        let expected = "BEGIN:VCALENDAR\n\
                    BEGIN:VEVENT\nUID:1\nORGANIZER:mailto:o@x.org\nEND:VEVENT\n\
                    BEGIN:VEVENT\nORGANIZER:mailto:alice@example.com\nUID:1\nRECURRENCE-ID:20240101T100000Z\n\
                    BEGIN:VALARM\nORGANIZER:mailto:alarm@x.org\nEND:VALARM\nEND:VEVENT\n\
                    BEGIN:VJOURNAL\nORGANIZER:mailto:alice@example.com\nUID:2\nEND:VJOURNAL\n\
                    BEGIN:VFREEBUSY\nORGANIZER:mailto:alice@example.com\nEND:VFREEBUSY\n\
                    BEGIN:X-OTHER\nEND:X-OTHER\n\
                    END:VCALENDAR\n";
        assert_eq!(insert_organizer(body, PLACEHOLDER), expected);
    }

    #[test]
    fn insert_organizer_after_a_folded_begin_line_and_at_the_very_end() {
        let folded = "BEGIN:VCALENDAR\r\nBEGIN:VEV\r\n ENT\r\nUID:1\r\nEND:VEVENT\r\nEND:VCALENDAR";
        assert_eq!(
            insert_organizer(folded, PLACEHOLDER),
            "BEGIN:VCALENDAR\r\nBEGIN:VEV\r\n ENT\r\nORGANIZER:mailto:alice@example.com\r\n\
             UID:1\r\nEND:VEVENT\r\nEND:VCALENDAR"
        );
        // Truncated bodies: an unclosed component is filled too, and a last
        // BEGIN line without an ending gets the body's style.
        assert_eq!(
            insert_organizer("BEGIN:VCALENDAR\nBEGIN:VEVENT", PLACEHOLDER),
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nORGANIZER:mailto:alice@example.com"
        );
        assert_eq!(
            insert_organizer("BEGIN:VTODO", PLACEHOLDER),
            "BEGIN:VTODO\r\nORGANIZER:mailto:alice@example.com"
        );
        assert_eq!(insert_organizer("", PLACEHOLDER), "");
        assert_eq!(
            insert_organizer("END:VEVENT\nORGANIZER:x\n", PLACEHOLDER),
            "END:VEVENT\nORGANIZER:x\n"
        );
    }

    #[test]
    fn inserted_organizer_makes_the_reply_readable() {
        let before = crate::itip::ItipMessage::parse(REPLY_NO_ORGANIZER).unwrap_err();
        assert!(before.description.contains("has no ORGANIZER"), "{before}");
        let edited = insert_organizer(REPLY_NO_ORGANIZER, PLACEHOLDER);
        let msg = crate::itip::ItipMessage::parse(&edited).unwrap();
        assert_eq!(msg.organizer, Some(CalAddress::parse(PLACEHOLDER).unwrap()));
        assert_eq!(msg.attendees, addrs(&["mailto:bob@example.org"]));
        assert_eq!(
            insert_organizer(&edited, "mailto:other@example.com"),
            edited
        );
    }

    #[test]
    fn content_lines_lose_no_bytes() {
        let body = " leading\r\nA:1\r\n\tfold\nB:2\n\nC:3";
        let lines: Vec<_> = content_lines(body).collect();
        let raws: Vec<_> = lines.iter().map(|l| l.raw).collect();
        assert_eq!(
            raws,
            [" leading\r\n", "A:1\r\n\tfold\n", "B:2\n", "\n", "C:3"]
        );
        assert_eq!(lines[1].unfolded(), "A:1fold");
        assert_eq!(raws.concat(), body);
    }

    #[test]
    fn value_separator_skips_quoted_colons() {
        assert_eq!(value_separator("A;X=\"a:b\":v"), Some(9));
        assert_eq!(value_separator("A:v:w"), Some(1));
        assert_eq!(value_separator("A;X=\"a:b"), None);
        assert_eq!(property_name("ATTENDEE;CN=a:b"), "ATTENDEE");
        assert_eq!(property_name("UID:b"), "UID");
    }
}
