//! The human side of an iMIP message: Subject line, plain text and HTML
//! saying what, when, where and who.
//!
//! Clients act on the calendar part, which travels untouched; this summary
//! is a courtesy for the person reading the mail. So reading it never
//! fails: whatever cannot be read is simply left out.

use icalendar::parser::{read_calendar, unfold, Component, Property};

use crate::itip::edit::property_name;
use crate::itip::CalAddress;
use crate::itip::{ComponentKind, ItipMessage, Method};

/// An ORGANIZER or ATTENDEE as a reader knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The CN parameter, RFC 6868 `^` escapes decoded.
    pub name: Option<String>,
    /// The address of a `mailto:` value, lower case.
    pub email: Option<String>,
    /// The PARTSTAT parameter, upper case (its values are case-insensitive).
    pub partstat: Option<String>,
}

/// A DTSTART, DTEND or DUE as a reader reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    /// `Wed 2 Dec 2026 13:00` for a DATE-TIME, `Wed 2 Dec 2026` for a DATE.
    pub text: String,
    /// `UTC` for a UTC time, the TZID for a zoned one, `None` for a
    /// floating time or a DATE.
    pub zone: Option<String>,
}

/// What a reader needs to know about an iTIP object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub method: Method,
    pub component: ComponentKind,
    pub title: Option<String>,
    pub start: Option<When>,
    /// DUE, or DTEND; an all-day DTEND is exclusive, so this is the day
    /// before it: the last day the event covers.
    pub end: Option<When>,
    pub location: Option<String>,
    pub organizer: Option<Person>,
    pub attendees: Vec<Person>,
    pub description: Option<String>,
    pub sequence: u32,
}

impl Summary {
    /// Never fails: what cannot be read is None (the calendar part is what
    /// clients act on).
    ///
    /// Facts come from the master component of kind `component` (the one
    /// without RECURRENCE-ID), or from its first component when every one
    /// is an override, as in an ADD or a CANCEL of single instances.
    /// The object is first screened by [`ItipMessage::parse`], which bounds
    /// its nesting and size before `icalendar`'s recursive parser sees it;
    /// an object that fails that screen gets an empty summary.
    pub fn read(calendar: &str, method: Method, component: ComponentKind) -> Summary {
        if ItipMessage::parse(calendar).is_err() {
            return Summary::empty(method, component);
        }
        Summary::read_screened(calendar, method, component)
    }

    /// As [`Summary::read`] for an object [`ItipMessage::parse`] has
    /// accepted already (an accepted request's): screened once per POST,
    /// not again for its mail.
    pub fn read_screened(calendar: &str, method: Method, component: ComponentKind) -> Summary {
        let empty = Summary::empty(method, component);
        let text = parser_text(calendar);
        let Ok(parsed) = read_calendar(&text) else {
            return empty;
        };
        match main_component(&parsed.components, component) {
            Some(part) => Summary::from_component(empty, part),
            None => empty,
        }
    }

    fn empty(method: Method, component: ComponentKind) -> Summary {
        Summary {
            method,
            component,
            title: None,
            start: None,
            end: None,
            location: None,
            organizer: None,
            attendees: Vec::new(),
            description: None,
            sequence: 0,
        }
    }

    fn from_component(empty: Summary, part: &Component<'_>) -> Summary {
        let props = &part.properties;
        Summary {
            title: text_value(props, "SUMMARY"),
            start: first(props, "DTSTART").and_then(|p| When::read(p, false)),
            end: end(props),
            location: text_value(props, "LOCATION"),
            organizer: first(props, "ORGANIZER").map(Person::read),
            attendees: named(props, "ATTENDEE").map(Person::read).collect(),
            description: text_value(props, "DESCRIPTION"),
            sequence: first(props, "SEQUENCE")
                .and_then(|p| p.val.as_str().trim().parse().ok())
                .unwrap_or(0),
            ..empty
        }
    }

    /// Per method: REQUEST "Invitation: T" (or "Updated invitation: T" when
    /// SEQUENCE > 0), ADD "Added occurrences: T", CANCEL "Cancelled: T",
    /// REPLY "Accepted: T" / "Declined: T" / "Tentative: T" / "Delegated: T"
    /// (from the PARTSTAT of the attendee in the reply; fall back to
    /// "Reply: T"), COUNTER "Counter proposal: T", DECLINECOUNTER "Counter
    /// proposal declined: T", REFRESH "Update request: T", PUBLISH
    /// "Published: T"; T = title or "(no title)".
    ///
    /// One line: a title's line breaks and control characters become
    /// spaces, as a header cannot hold them.
    pub fn subject(&self) -> String {
        format!(
            "{}: {}",
            self.subject_prefix(),
            one_line(&self.title_or_default())
        )
    }

    fn subject_prefix(&self) -> &'static str {
        match self.method {
            Method::Request if self.sequence > 0 => "Updated invitation",
            Method::Request => "Invitation",
            Method::Add => "Added occurrences",
            Method::Cancel => "Cancelled",
            Method::Reply => self.reply_prefix(),
            Method::Counter => "Counter proposal",
            Method::DeclineCounter => "Counter proposal declined",
            Method::Refresh => "Update request",
            Method::Publish => "Published",
        }
    }

    /// A REPLY names one attendee (RFC 5546 3.2.3); its PARTSTAT is the
    /// answer.
    fn reply_prefix(&self) -> &'static str {
        match self.attendees.first().and_then(|a| a.partstat.as_deref()) {
            Some("ACCEPTED") => "Accepted",
            Some("DECLINED") => "Declined",
            Some("TENTATIVE") => "Tentative",
            Some("DELEGATED") => "Delegated",
            _ => "Reply",
        }
    }

    fn title_or_default(&self) -> String {
        self.title
            .as_deref()
            .filter(|t| !one_line(t).is_empty())
            .unwrap_or("(no title)")
            .to_string()
    }

    /// Human plain text: what, when (with zone), where, organizer,
    /// attendees with status, description.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.subject());
        for fact in self.facts() {
            let label = format!("{}:", fact.label);
            for (i, line) in fact.lines.iter().enumerate() {
                let label = if i == 0 { label.as_str() } else { "" };
                out.push_str(&format!("{label:<LABEL_WIDTH$}{line}\n"));
            }
        }
        if let Some(description) = &self.description {
            out.push('\n');
            out.push_str(description);
            out.push('\n');
        }
        out
    }

    /// The same as [`Summary::text`] as a small HTML document, every value
    /// HTML-escaped.
    pub fn html(&self) -> String {
        let subject = escape_html(&self.subject());
        let mut out = format!(
            "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{subject}</title></head>\n\
             <body>\n<h1>{subject}</h1>\n<table>\n"
        );
        for fact in self.facts() {
            out.push_str(&format!(
                "<tr><th align=\"left\" valign=\"top\">{}</th><td>{}</td></tr>\n",
                fact.label,
                html_lines(&fact.lines.join("\n"))
            ));
        }
        out.push_str("</table>\n");
        if let Some(description) = &self.description {
            out.push_str(&format!("<p>{}</p>\n", html_lines(description)));
        }
        out.push_str("</body>\n</html>\n");
        out
    }

    /// The labelled facts both renderings show, in reading order.
    fn facts(&self) -> Vec<Fact> {
        let mut facts = vec![Fact::new("What", &self.title_or_default())];
        if let Some(start) = &self.start {
            facts.push(Fact::new("When", &start.label()));
        }
        // A one-day all-day event ends on the day it starts: say it once.
        if let Some(end) = self
            .end
            .as_ref()
            .filter(|e| Some(*e) != self.start.as_ref())
        {
            let label = match self.component {
                ComponentKind::VTodo => "Due",
                _ => "Until",
            };
            facts.push(Fact::new(label, &end.label()));
        }
        if let Some(location) = &self.location {
            facts.push(Fact::new("Where", location));
        }
        if let Some(organizer) = &self.organizer {
            facts.push(Fact::new("Organizer", &organizer.label()));
        }
        if !self.attendees.is_empty() {
            let lines = self.attendees.iter().map(Person::label).collect();
            facts.push(Fact {
                label: "Attendees",
                lines,
            });
        }
        facts
    }
}

/// Width of the label column of the plain text.
const LABEL_WIDTH: usize = 11;

/// One labelled row of the summary; values may span lines.
struct Fact {
    label: &'static str,
    lines: Vec<String>,
}

impl Fact {
    fn new(label: &'static str, value: &str) -> Fact {
        Fact {
            label,
            lines: value.lines().map(str::to_string).collect(),
        }
    }
}

impl Person {
    fn read(prop: &Property<'_>) -> Person {
        Person {
            name: param(prop, "CN")
                .map(decode_param_value)
                .filter(|n| !n.trim().is_empty()),
            email: CalAddress::parse(prop.val.as_str())
                .ok()
                .and_then(|a| a.email().map(str::to_string)),
            partstat: param(prop, "PARTSTAT").map(|p| p.trim().to_ascii_uppercase()),
        }
    }

    /// `Name <email> (status)`, leaving out what is unknown.
    fn label(&self) -> String {
        let who = match (&self.name, &self.email) {
            (Some(name), Some(email)) => format!("{} <{email}>", one_line(name)),
            (Some(name), None) => one_line(name),
            (None, Some(email)) => email.clone(),
            (None, None) => "(no name or e-mail address)".to_string(),
        };
        match self.status() {
            Some(status) => format!("{who} ({status})"),
            None => who,
        }
    }

    fn status(&self) -> Option<String> {
        let status = match self.partstat.as_deref()? {
            "ACCEPTED" => "accepted",
            "DECLINED" => "declined",
            "TENTATIVE" => "tentative",
            "DELEGATED" => "delegated",
            "NEEDS-ACTION" => "no answer yet",
            "COMPLETED" => "completed",
            "IN-PROCESS" => "in progress",
            other => return Some(other.to_ascii_lowercase()),
        };
        Some(status.to_string())
    }
}

impl When {
    /// Reads a DATE or DATE-TIME value; `exclusive_end` moves a DATE one
    /// day back (an all-day DTEND names the day after the event).
    fn read(prop: &Property<'_>, exclusive_end: bool) -> Option<When> {
        let value = prop.val.as_str().trim();
        let Some((date, time)) = value.split_once('T') else {
            let day = CivilDate::parse(value)?;
            let day = if exclusive_end {
                day.plus_days(-1)
            } else {
                day
            };
            return Some(When {
                text: day.to_string(),
                zone: None,
            });
        };
        let day = CivilDate::parse(date)?;
        let (time, utc) = match time.strip_suffix('Z') {
            Some(time) => (time, true),
            None => (time, false),
        };
        let (hour, minute) = clock(time)?;
        let zone = if utc {
            Some("UTC".to_string())
        } else {
            param(prop, "TZID").map(str::to_string)
        };
        Some(When {
            text: format!("{day} {hour:02}:{minute:02}"),
            zone,
        })
    }

    fn label(&self) -> String {
        match &self.zone {
            Some(zone) => format!("{} ({})", self.text, one_line(zone)),
            None => self.text.clone(),
        }
    }
}

/// DUE, or DTEND read as the last day it covers.
fn end(props: &[Property<'_>]) -> Option<When> {
    match first(props, "DUE") {
        Some(due) => When::read(due, false),
        None => first(props, "DTEND").and_then(|p| When::read(p, true)),
    }
}

/// Hour and minute of `HHMMSS`.
fn clock(time: &str) -> Option<(u32, u32)> {
    if time.len() != 6 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hour: u32 = time[..2].parse().ok()?;
    let minute: u32 = time[2..4].parse().ok()?;
    let second: u32 = time[4..].parse().ok()?;
    // 60 is a leap second.
    (hour < 24 && minute < 60 && second <= 60).then_some((hour, minute))
}

/// A proleptic Gregorian date, enough to name weekdays and step a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CivilDate {
    year: i64,
    month: u32,
    day: u32,
}

impl CivilDate {
    /// Parses `YYYYMMDD`, refusing dates that do not exist.
    fn parse(s: &str) -> Option<CivilDate> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let date = CivilDate {
            year: s[..4].parse().ok()?,
            month: s[4..6].parse().ok()?,
            day: s[6..].parse().ok()?,
        };
        // Day 31 of a 30-day month would come back as the 1st of the next.
        let valid = (1..=12).contains(&date.month)
            && date.day >= 1
            && CivilDate::from_days(date.days()) == date;
        valid.then_some(date)
    }

    /// Days since 1970-01-01 (H. Hinnant's `days_from_civil`).
    fn days(self) -> i64 {
        let year = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month = i64::from(self.month);
        let day_of_year =
            (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The inverse of [`CivilDate::days`] (`civil_from_days`).
    fn from_days(days: i64) -> CivilDate {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        CivilDate {
            year: year_of_era + era * 400 + i64::from(month <= 2),
            // Both are within 1..=31 by construction.
            month: month as u32,
            day: day as u32,
        }
    }

    fn plus_days(self, days: i64) -> CivilDate {
        CivilDate::from_days(self.days() + days)
    }

    fn weekday(self) -> &'static str {
        const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        // 1970-01-01 was a Thursday.
        NAMES[(self.days() + 3).rem_euclid(7) as usize]
    }
}

impl std::fmt::Display for CivilDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS[(self.month as usize + 11) % 12];
        write!(f, "{} {} {month} {}", self.weekday(), self.day, self.year)
    }
}

/// The text as `read_calendar` reads it reliably: unfolded, one content
/// line per CRLF (it looks for `\r\n` before `\n`, so bare-LF input would
/// make it rescan the rest of the body for every line), and names upper
/// case, so that `END:vevent` closes `BEGIN:VEVENT` and TEXT values are
/// unescaped whatever case the sender wrote their names in.
fn parser_text(calendar: &str) -> String {
    let unfolded = unfold(calendar.strip_prefix('\u{feff}').unwrap_or(calendar));
    let mut out = String::with_capacity(unfolded.len() + unfolded.len() / 8);
    for line in unfolded.lines() {
        let name = property_name(line);
        if name.eq_ignore_ascii_case("BEGIN") || name.eq_ignore_ascii_case("END") {
            out.push_str(&line.to_ascii_uppercase());
        } else {
            out.push_str(&name.to_ascii_uppercase());
            out.push_str(&line[name.len()..]);
        }
        out.push_str("\r\n");
    }
    out
}

/// The master of the components of kind `kind`, else the first of them.
fn main_component<'c, 'a>(
    components: &'c [Component<'a>],
    kind: ComponentKind,
) -> Option<&'c Component<'a>> {
    let of_kind = || {
        components
            .iter()
            .filter(move |c| c.name.as_str().eq_ignore_ascii_case(kind.as_str()))
    };
    of_kind()
        .find(|c| first(&c.properties, "RECURRENCE-ID").is_none())
        .or_else(|| of_kind().next())
}

fn named<'c, 'a>(
    props: &'c [Property<'a>],
    name: &'c str,
) -> impl Iterator<Item = &'c Property<'a>> + 'c {
    props
        .iter()
        .filter(move |p| p.name.as_str().eq_ignore_ascii_case(name))
}

fn first<'c, 'a>(props: &'c [Property<'a>], name: &str) -> Option<&'c Property<'a>> {
    props
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
}

fn param<'c>(prop: &'c Property<'_>, key: &str) -> Option<&'c str> {
    prop.params
        .iter()
        .find(|p| p.key.as_str().eq_ignore_ascii_case(key))
        .and_then(|p| p.val.as_ref())
        .map(|v| v.as_str())
}

/// A TEXT property's value (already unescaped by the parser), if not blank.
fn text_value(props: &[Property<'_>], name: &str) -> Option<String> {
    first(props, name)
        .map(|p| p.val.as_str().to_string())
        .filter(|v| !v.trim().is_empty())
}

/// RFC 6868: `^n` is a line break, `^'` a double quote, `^^` a caret;
/// any other `^` stands for itself.
fn decode_param_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        let decoded = match (c, chars.peek()) {
            ('^', Some('n')) => '\n',
            ('^', Some('\'')) => '"',
            ('^', Some('^')) => '^',
            _ => {
                out.push(c);
                continue;
            }
        };
        chars.next();
        out.push(decoded);
    }
    out
}

/// `text` on one line: runs of whitespace and control characters become
/// one space. Header values (Subject, display names) need this.
pub(super) fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` HTML-escaped, its lines separated by `<br>`.
fn html_lines(text: &str) -> String {
    text.lines()
        .map(escape_html)
        .collect::<Vec<_>>()
        .join("<br>\n")
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VCALENDAR with `method` around one `kind` component holding `props`
    /// (LF-separated lines, turned into CRLF).
    fn object(method: &str, kind: &str, props: &str) -> String {
        format!(
            "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\nMETHOD:{method}\nBEGIN:{kind}\n\
             UID:u1@example.com\nDTSTAMP:20260101T000000Z\n\
             ORGANIZER;CN=Alice Example:mailto:alice@example.com\n{props}END:{kind}\nEND:VCALENDAR\n"
        )
        .replace('\n', "\r\n")
    }

    fn read(method: Method, kind: ComponentKind, props: &str) -> Summary {
        Summary::read(&object(method.as_str(), kind.as_str(), props), method, kind)
    }

    fn event(method: Method, props: &str) -> Summary {
        read(method, ComponentKind::VEvent, props)
    }

    const REPLY_AS: &str = "ATTENDEE;PARTSTAT=";

    #[test]
    fn subjects_for_every_method() {
        let titled = "SUMMARY:Team sync\nATTENDEE:mailto:bob@example.org\n";
        let cases = [
            (Method::Publish, "Published: Team sync"),
            (Method::Request, "Invitation: Team sync"),
            (Method::Reply, "Reply: Team sync"),
            (Method::Add, "Added occurrences: Team sync"),
            (Method::Cancel, "Cancelled: Team sync"),
            (Method::Refresh, "Update request: Team sync"),
            (Method::Counter, "Counter proposal: Team sync"),
            (
                Method::DeclineCounter,
                "Counter proposal declined: Team sync",
            ),
        ];
        for (method, subject) in cases {
            for kind in [ComponentKind::VEvent, ComponentKind::VTodo] {
                assert_eq!(read(method, kind, titled).subject(), subject);
            }
        }
        assert_eq!(
            event(Method::Request, "SUMMARY:Team sync\nSEQUENCE:2\n").subject(),
            "Updated invitation: Team sync"
        );
        assert_eq!(event(Method::Cancel, "").subject(), "Cancelled: (no title)");
        assert_eq!(
            event(Method::Cancel, "SUMMARY:  \n").subject(),
            "Cancelled: (no title)"
        );
    }

    #[test]
    fn reply_subjects_follow_the_attendees_partstat() {
        let cases = [
            ("ACCEPTED", "Accepted: T"),
            ("declined", "Declined: T"),
            ("Tentative", "Tentative: T"),
            ("DELEGATED", "Delegated: T"),
            ("NEEDS-ACTION", "Reply: T"),
            ("X-MAYBE", "Reply: T"),
        ];
        for (partstat, subject) in cases {
            let props = format!("SUMMARY:T\n{REPLY_AS}{partstat}:mailto:bob@example.org\n");
            assert_eq!(event(Method::Reply, &props).subject(), subject);
        }
    }

    #[test]
    fn subject_is_one_line() {
        let s = event(Method::Request, "SUMMARY:Two\\nlines\\, and\ttab\n");
        assert_eq!(s.title.as_deref(), Some("Two\nlines, and\ttab"));
        assert_eq!(s.subject(), "Invitation: Two lines, and tab");
    }

    #[test]
    fn folded_and_escaped_text_values_are_read() {
        let props = "summary:Budget\\, Q3\n  review \\;\\\\ plan\n\
                     LOCATION:Room 4\\,\n 2nd floor\n\
                     DESCRIPTION:Line one\\nLine two\\Nthree\n\tend\n";
        let s = event(Method::Request, props);
        assert_eq!(s.title.as_deref(), Some("Budget, Q3 review ;\\ plan"));
        assert_eq!(s.location.as_deref(), Some("Room 4,2nd floor"));
        assert_eq!(
            s.description.as_deref(),
            Some("Line one\nLine two\nthreeend")
        );
    }

    #[test]
    fn lf_input_reads_the_same() {
        let crlf = object("REQUEST", "VEVENT", "SUMMARY:A\\, b\nLOCATION:x\n");
        let lf = crlf.replace("\r\n", "\n");
        let kind = ComponentKind::VEvent;
        assert_eq!(
            Summary::read(&lf, Method::Request, kind),
            Summary::read(&crlf, Method::Request, kind)
        );
        assert_eq!(
            Summary::read(&lf, Method::Request, kind).title.as_deref(),
            Some("A, b")
        );
    }

    fn when(text: &str, zone: Option<&str>) -> Option<When> {
        Some(When {
            text: text.to_string(),
            zone: zone.map(str::to_string),
        })
    }

    #[test]
    fn zoned_utc_and_floating_times() {
        let s = event(
            Method::Request,
            "DTSTART;TZID=Europe/Berlin:20261202T130000\nDTEND:20261202T140000Z\n",
        );
        assert_eq!(s.start, when("Wed 2 Dec 2026 13:00", Some("Europe/Berlin")));
        assert_eq!(s.end, when("Wed 2 Dec 2026 14:00", Some("UTC")));
        let floating = event(Method::Request, "DTSTART:20280229T083000\n");
        assert_eq!(floating.start, when("Tue 29 Feb 2028 08:30", None));
        assert_eq!(floating.end, None);
        let quoted = event(
            Method::Request,
            "DTSTART;TZID=\"America/New_York\":20261231T235900\n",
        );
        assert_eq!(
            quoted.start,
            when("Thu 31 Dec 2026 23:59", Some("America/New_York"))
        );
    }

    #[test]
    fn all_day_events_end_on_their_last_day() {
        let one_day = event(
            Method::Request,
            "DTSTART;VALUE=DATE:20261231\nDTEND;VALUE=DATE:20270101\n",
        );
        assert_eq!(one_day.start, when("Thu 31 Dec 2026", None));
        assert_eq!(one_day.end, one_day.start);
        assert!(!one_day.text().contains("Until"));
        let two_days = event(
            Method::Request,
            "DTSTART;VALUE=DATE:20260301\nDTEND;VALUE=DATE:20260303\n",
        );
        assert_eq!(two_days.end, when("Mon 2 Mar 2026", None));
        assert!(two_days.text().contains("Until:     Mon 2 Mar 2026\n"));
    }

    #[test]
    fn todos_are_due() {
        let s = read(
            Method::Request,
            ComponentKind::VTodo,
            "DTSTART;VALUE=DATE:20261201\nDUE;VALUE=DATE:20261204\n",
        );
        assert_eq!(s.start, when("Tue 1 Dec 2026", None));
        assert_eq!(s.end, when("Fri 4 Dec 2026", None));
        assert!(s.text().contains("Due:       Fri 4 Dec 2026\n"));
    }

    #[test]
    fn impossible_dates_and_times_are_left_out() {
        let read = |value| When::read(&Property::new_ref("DTSTART", value), false);
        for value in [
            "20260231",
            "20261301",
            "20261200",
            "2026120",
            "2026-12-02",
            "20261202T250000",
        ] {
            assert_eq!(read(value), None, "{value}");
        }
        for value in [
            "20261202T1300",
            "20261202T136000",
            "20261202T130061",
            "x20261202T130000",
        ] {
            assert_eq!(read(value), None, "{value}");
        }
        // A leap second is a real time.
        assert_eq!(
            read("20261231T235960Z"),
            when("Thu 31 Dec 2026 23:59", Some("UTC"))
        );
        let s = event(Method::Publish, "DTSTART:2026-12-02\n");
        assert_eq!(s.start, None);
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in -800_000..800_000 {
            assert_eq!(CivilDate::from_days(days).days(), days);
        }
        let date = CivilDate::parse("19700101").unwrap();
        assert_eq!((date.days(), date.weekday()), (0, "Thu"));
        assert_eq!(
            CivilDate::parse("20000301").unwrap().to_string(),
            "Wed 1 Mar 2000"
        );
        assert_eq!(
            CivilDate::parse("20000229")
                .unwrap()
                .plus_days(1)
                .to_string(),
            "Wed 1 Mar 2000"
        );
        assert_eq!(CivilDate::parse("19000229"), None);
    }

    #[test]
    fn organizer_and_attendees_with_status() {
        let props =
            "ATTENDEE;CN=\"Doe, J: ^'Jo^' ^^\";PARTSTAT=accepted:MAILTO:J.Doe@Example.ORG\n\
                     ATTENDEE;RSVP=TRUE:mailto:carol@example.org\n\
                     ATTENDEE;CN=Room;CUTYPE=ROOM;PARTSTAT=NEEDS-ACTION:urn:uuid:room-1\n";
        let s = event(Method::Request, props);
        let person = |name: Option<&str>, email: Option<&str>, partstat: Option<&str>| Person {
            name: name.map(str::to_string),
            email: email.map(str::to_string),
            partstat: partstat.map(str::to_string),
        };
        assert_eq!(
            s.organizer,
            Some(person(
                Some("Alice Example"),
                Some("alice@example.com"),
                None
            ))
        );
        assert_eq!(
            s.attendees,
            [
                person(
                    Some("Doe, J: \"Jo\" ^"),
                    Some("j.doe@example.org"),
                    Some("ACCEPTED")
                ),
                person(None, Some("carol@example.org"), None),
                person(Some("Room"), None, Some("NEEDS-ACTION")),
            ]
        );
        let text = s.text();
        assert!(
            text.contains("Organizer: Alice Example <alice@example.com>\n"),
            "{text}"
        );
        assert!(text.contains("Attendees: Doe, J: \"Jo\" ^ <j.doe@example.org> (accepted)\n"));
        assert!(text.contains("\n           carol@example.org\n"));
        assert!(text.contains("\n           Room (no answer yet)\n"));
    }

    #[test]
    fn the_master_component_is_summarised() {
        let body = object(
            "REQUEST",
            "VEVENT",
            "SUMMARY:Override\nRECURRENCE-ID:20261209T130000Z\nDTSTART:20261209T140000Z\n",
        )
        .replace(
            "END:VCALENDAR",
            "BEGIN:VEVENT\r\nUID:u1@example.com\r\nDTSTAMP:20260101T000000Z\r\n\
             ORGANIZER:mailto:alice@example.com\r\nSUMMARY:Master\r\n\
             DTSTART:20261202T130000Z\r\nEND:VEVENT\r\nEND:VCALENDAR",
        );
        let s = Summary::read(&body, Method::Request, ComponentKind::VEvent);
        assert_eq!(s.title.as_deref(), Some("Master"));
        let only_override = body
            .split("BEGIN:VEVENT")
            .take(2)
            .collect::<Vec<_>>()
            .join("BEGIN:VEVENT")
            + "END:VCALENDAR\r\n";
        let s = Summary::read(&only_override, Method::Add, ComponentKind::VEvent);
        assert_eq!(s.title.as_deref(), Some("Override"));
    }

    #[test]
    fn unreadable_objects_give_an_empty_summary() {
        let empty = Summary::empty(Method::Cancel, ComponentKind::VTodo);
        for body in [
            "",
            "not a calendar",
            "BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\n",
            &"BEGIN:X\n".repeat(100_000),
        ] {
            assert_eq!(
                Summary::read(body, Method::Cancel, ComponentKind::VTodo),
                empty
            );
        }
        // Readable, but holding no VTODO.
        let s = read(Method::Cancel, ComponentKind::VEvent, "SUMMARY:x\n");
        let as_todo = Summary::read(
            &object("CANCEL", "VEVENT", "SUMMARY:x\n"),
            Method::Cancel,
            ComponentKind::VTodo,
        );
        assert_eq!(as_todo, empty);
        assert_eq!(s.subject(), "Cancelled: x");
        assert_eq!(
            empty.text(),
            "Cancelled: (no title)\n\nWhat:      (no title)\n"
        );
    }

    #[test]
    fn text_lists_what_when_where_who_and_description() {
        let s = event(
            Method::Request,
            "SUMMARY:Team sync\nDTSTART;TZID=Europe/Berlin:20261202T130000\n\
             DTEND;TZID=Europe/Berlin:20261202T140000\nLOCATION:Room 4\n\
             ATTENDEE;CN=Bob;PARTSTAT=TENTATIVE:mailto:bob@example.org\n\
             DESCRIPTION:Agenda:\\n1. Budget\n",
        );
        assert_eq!(
            s.text(),
            "Invitation: Team sync\n\n\
             What:      Team sync\n\
             When:      Wed 2 Dec 2026 13:00 (Europe/Berlin)\n\
             Until:     Wed 2 Dec 2026 14:00 (Europe/Berlin)\n\
             Where:     Room 4\n\
             Organizer: Alice Example <alice@example.com>\n\
             Attendees: Bob <bob@example.org> (tentative)\n\
             \nAgenda:\n1. Budget\n"
        );
    }

    #[test]
    fn html_escapes_every_value() {
        let s = event(
            Method::Request,
            "SUMMARY:<script>alert('x')</script>\nLOCATION:A & B\n\
             ATTENDEE;CN=\"<b>Eve</b>\":mailto:eve@example.org\n\
             DESCRIPTION:\"quoted\"\\n<img src=x onerror=y>\n",
        );
        let html = s.html();
        assert!(!html.contains("<script>") && !html.contains("<b>") && !html.contains("<img"));
        assert!(html.contains(
            "<title>Invitation: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</title>"
        ));
        assert!(html.contains("<td>A &amp; B</td>"));
        assert!(html.contains("&lt;b&gt;Eve&lt;/b&gt; &lt;eve@example.org&gt;"));
        assert!(html.contains("<p>&quot;quoted&quot;<br>\n&lt;img src=x onerror=y&gt;</p>"));
        assert!(html.starts_with("<!DOCTYPE html>\n") && html.ends_with("</html>\n"));
    }

    #[test]
    fn rfc6868_parameter_escapes() {
        assert_eq!(decode_param_value("a^nb^'c^^d^x^"), "a\nb\"c^d^x^");
    }
}
