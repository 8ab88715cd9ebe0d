//! Reading an iTIP object (RFC 5546) into the facts the bridge checks it by:
//! method, component type, UID, ORGANIZER, ATTENDEEs, date range, instance
//! count and attachment forms (spec clauses 8.1 and 10.2.1.5-10.2.1.11).
//!
//! The body comes from the network; `content` reads its content lines into
//! the component tree, checking each as it goes, and the facts are taken
//! from that tree. (Handing the checked lines on to a general parser,
//! `icalendar`'s nom grammar, cost 23 % of a POST's instructions.) Parsing
//! only reads: the bridge forwards the sender's bytes, never a
//! re-serialisation.

use std::borrow::Cow;
use std::collections::HashSet;

use super::content::{invalid_data, quote, read_content, text_value, unfold, Component, Property};
use super::error::{Fault, ItipError};
use crate::itip::{CalAddress, ComponentKind, Method, Stamp};

/// How many recurrence instances a message describes (for `max-instances`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    Counted(u64),
    /// An RRULE without COUNT (UNTIL or open-ended): counting it would mean
    /// expanding the rule, which the bridge does not do.
    Uncountable,
}

impl Instances {
    fn plus(self, other: Instances) -> Instances {
        match (self, other) {
            (Instances::Counted(a), Instances::Counted(b)) => {
                Instances::Counted(a.saturating_add(b))
            }
            _ => Instances::Uncountable,
        }
    }
}

/// Which attachment forms a message uses (spec 10.2.1.5): ATTACH with
/// `VALUE=BINARY` or `ENCODING=BASE64` is inline, any other is external.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attachments {
    pub inline: bool,
    pub external: bool,
}

/// The facts of one iTIP message that iSchedule's rules and a receiver's
/// capabilities are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItipMessage {
    pub method: Method,
    /// The one scheduling component type present (VTIMEZONE and unknown
    /// components are ignored).
    pub component: ComponentKind,
    pub uid: String,
    pub organizer: Option<CalAddress>,
    /// Distinct, in order of first appearance over all scheduling
    /// components (master and overrides).
    pub attendees: Vec<CalAddress>,
    /// Earliest DATE / DATE-TIME value in the scheduling components (not in
    /// VTIMEZONE or VALARM), for `min-date-time`.
    pub earliest: Option<Stamp>,
    /// Latest such value, for `max-date-time`.
    pub latest: Option<Stamp>,
    pub instances: Instances,
    pub attachments: Attachments,
}

impl ItipMessage {
    /// Reads `body` (CRLF or bare LF line endings, folded or not).
    ///
    /// Errors say what is wrong and where:
    /// - `InvalidCalendarData`: a content line that breaks RFC 5545 3.1, no
    ///   VCALENDAR root, nesting deeper than 8 BEGIN levels, more than
    ///   10 000 content lines, unbalanced BEGIN/END, or a date, RRULE or
    ///   period value that is not what its property requires.
    /// - `InvalidSchedulingMessage`: METHOD missing or unknown, no
    ///   scheduling component, mixed component types, missing or differing
    ///   UIDs, missing or differing ORGANIZERs, or an ORGANIZER / ATTENDEE
    ///   that is not a calendar user address.
    pub fn parse(body: &str) -> Result<ItipMessage, ItipError> {
        // Some producers start UTF-8 text with a byte-order mark; it is not
        // part of the iCalendar stream.
        let unfolded = unfold(body.strip_prefix('\u{feff}').unwrap_or(body));
        let calendar = read_content(&unfolded)?;
        let method = method(&calendar.properties)?;
        let (component, parts) = scheduling_components(&calendar.components)?;
        let mut range = DateRange::default();
        for part in &parts {
            range.include_component(component, part)?;
        }
        Ok(ItipMessage {
            method,
            component,
            uid: common_uid(component, &parts)?,
            organizer: Some(organizer(component, &parts)?),
            attendees: attendees(&parts)?,
            earliest: range.earliest,
            latest: range.latest,
            instances: instances(component, &parts)?,
            attachments: attachments(&parts),
        })
    }
}

fn invalid_message(description: impl Into<String>) -> ItipError {
    ItipError::new(Fault::InvalidSchedulingMessage, description)
}

/// Properties of `props` called `name` (names are case-insensitive).
fn named<'c, 'a>(
    props: &'c [Property<'a>],
    name: &'c str,
) -> impl Iterator<Item = &'c Property<'a>> + 'c {
    props
        .iter()
        .filter(move |p| p.name.eq_ignore_ascii_case(name))
}

fn method(props: &[Property<'_>]) -> Result<Method, ItipError> {
    let mut methods = named(props, "METHOD");
    let first = methods.next().ok_or_else(|| {
        invalid_message("the VCALENDAR has no METHOD property, so it is not an iTIP message")
    })?;
    if methods.next().is_some() {
        return Err(invalid_message(
            "the VCALENDAR has more than one METHOD property",
        ));
    }
    Method::parse(&text_value(first.value)).ok_or_else(|| {
        invalid_message(format!(
            "METHOD:{} is not an iTIP method (RFC 5546)",
            quote(first.value)
        ))
    })
}

/// The VEVENT / VTODO / VJOURNAL / VFREEBUSY components and their one type.
/// Others (VTIMEZONE, X- components) carry no scheduling facts.
fn scheduling_components<'c, 'a>(
    components: &'c [Component<'a>],
) -> Result<(ComponentKind, Vec<&'c Component<'a>>), ItipError> {
    let mut kind = None;
    let mut parts = Vec::new();
    for component in components {
        let Some(this) = ComponentKind::parse(component.name.as_str()) else {
            continue;
        };
        match kind {
            Some(first) if first != this => {
                return Err(invalid_message(format!(
                    "the VCALENDAR mixes {first} and {this} components; \
                     an iTIP message carries one component type"
                )))
            }
            _ => kind = Some(this),
        }
        parts.push(component);
    }
    let kind = kind.ok_or_else(|| {
        invalid_message("the VCALENDAR has no VEVENT, VTODO, VJOURNAL or VFREEBUSY component")
    })?;
    Ok((kind, parts))
}

/// iTIP describes one calendar object per message: every component (master
/// and overrides) must carry the same UID.
fn common_uid(kind: ComponentKind, parts: &[&Component<'_>]) -> Result<String, ItipError> {
    let mut uid: Option<Cow<'_, str>> = None;
    for (index, part) in parts.iter().enumerate() {
        let this = named(&part.properties, "UID")
            .map(|p| text_value(p.value))
            .map(|v| match v {
                Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
                Cow::Owned(v) => Cow::Owned(v.trim().to_string()),
            })
            .find(|v| !v.is_empty())
            .ok_or_else(|| {
                invalid_message(format!(
                    "{kind} component {} of {} has no UID",
                    index + 1,
                    parts.len()
                ))
            })?;
        match &uid {
            Some(first) if *first != this => {
                return Err(invalid_message(format!(
                    "the {kind} components have different UIDs {} and {}",
                    quote(first),
                    quote(&this)
                )))
            }
            Some(_) => {}
            None => uid = Some(this),
        }
    }
    uid.map(Cow::into_owned)
        .ok_or_else(|| invalid_message(format!("the {kind} has no UID")))
}

fn address(prop: &Property<'_>) -> Result<CalAddress, ItipError> {
    CalAddress::parse(prop.value).map_err(|e| {
        invalid_message(format!(
            "{} value {} is not a calendar user address: {e}",
            prop.name.to_ascii_uppercase(),
            quote(prop.value)
        ))
    })
}

/// The ORGANIZER every table-1 and table-2 check needs. All components must
/// agree: an override naming someone else would slip past the Originator
/// check made against the first one.
fn organizer(kind: ComponentKind, parts: &[&Component<'_>]) -> Result<CalAddress, ItipError> {
    let mut organizer: Option<CalAddress> = None;
    for prop in parts.iter().flat_map(|p| named(&p.properties, "ORGANIZER")) {
        let this = address(prop)?;
        match &organizer {
            Some(first) if *first != this => {
                return Err(invalid_message(format!(
                    "the {kind} components name different ORGANIZERs {first} and {this}"
                )))
            }
            Some(_) => {}
            None => organizer = Some(this),
        }
    }
    organizer.ok_or_else(|| {
        invalid_message(format!(
            "the {kind} has no ORGANIZER, which iSchedule needs to check the Originator (table 1)"
        ))
    })
}

/// ATTENDEEs of the scheduling components themselves; a VALARM's ATTENDEE
/// is an e-mail alarm target, not a participant.
fn attendees(parts: &[&Component<'_>]) -> Result<Vec<CalAddress>, ItipError> {
    let mut seen = HashSet::new();
    let mut list = Vec::new();
    for prop in parts.iter().flat_map(|p| named(&p.properties, "ATTENDEE")) {
        let attendee = address(prop)?;
        if seen.insert(attendee.clone()) {
            list.push(attendee);
        }
    }
    Ok(list)
}

/// Properties whose values are DATE, DATE-TIME or PERIOD lists.
const DATED: [&str; 11] = [
    "DTSTART",
    "DTEND",
    "DUE",
    "RECURRENCE-ID",
    "RDATE",
    "EXDATE",
    "DTSTAMP",
    "CREATED",
    "LAST-MODIFIED",
    "COMPLETED",
    "FREEBUSY",
];

/// Earliest and latest DATE / DATE-TIME seen so far.
#[derive(Debug, Default)]
struct DateRange {
    earliest: Option<Stamp>,
    latest: Option<Stamp>,
}

impl DateRange {
    fn include(&mut self, stamp: Stamp) {
        self.earliest = Some(self.earliest.map_or(stamp, |e| e.min(stamp)));
        self.latest = Some(self.latest.map_or(stamp, |l| l.max(stamp)));
    }

    /// Only the component's own properties: VALARM triggers and VTIMEZONE
    /// observances are not dates of the scheduled object. A value that does
    /// not parse is rejected rather than skipped, so it cannot slip past
    /// `min-date-time` / `max-date-time`.
    fn include_component(
        &mut self,
        kind: ComponentKind,
        part: &Component<'_>,
    ) -> Result<(), ItipError> {
        for prop in &part.properties {
            let name = prop.name;
            if name.eq_ignore_ascii_case("RRULE") {
                if let Some(until) = rrule(kind, prop)?.until {
                    self.include(until);
                }
            } else if DATED.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                for stamp in period_list(kind, prop)? {
                    self.include(stamp);
                }
            }
        }
        Ok(())
    }
}

fn bad_value(kind: ComponentKind, prop: &Property<'_>, what: &str) -> ItipError {
    invalid_data(format!(
        "{} value {} in the {kind} is not {what}",
        prop.name.to_ascii_uppercase(),
        quote(prop.value)
    ))
}

/// Every DATE / DATE-TIME in a comma-separated list of dates or periods.
/// A period ends in a DATE-TIME or a duration (RFC 5545 3.3.9); durations
/// add no date of their own.
fn period_list(kind: ComponentKind, prop: &Property<'_>) -> Result<Vec<Stamp>, ItipError> {
    let mut stamps = Vec::new();
    for item in prop.value.split(',') {
        let (start, end) = match item.split_once('/') {
            Some((start, end)) => (start, Some(end)),
            None => (item, None),
        };
        let bad = || bad_value(kind, prop, "a DATE, DATE-TIME or PERIOD list");
        stamps.push(Stamp::parse(start).ok_or_else(bad)?);
        if let Some(end) = end.filter(|e| !is_duration(e)) {
            stamps.push(Stamp::parse(end).ok_or_else(bad)?);
        }
    }
    Ok(stamps)
}

fn is_duration(value: &str) -> bool {
    value.trim_start_matches(['+', '-']).starts_with(['P', 'p'])
}

/// The parts of an RRULE the bridge needs.
struct Rule {
    count: Option<u64>,
    until: Option<Stamp>,
}

fn rrule(kind: ComponentKind, prop: &Property<'_>) -> Result<Rule, ItipError> {
    let mut rule = Rule {
        count: None,
        until: None,
    };
    for part in prop.value.split(';') {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        if key.trim().eq_ignore_ascii_case("COUNT") {
            let count = value
                .trim()
                .parse()
                .map_err(|_| bad_value(kind, prop, "an RRULE with a valid COUNT"))?;
            rule.count = Some(count);
        } else if key.trim().eq_ignore_ascii_case("UNTIL") {
            let until = Stamp::parse(value)
                .ok_or_else(|| bad_value(kind, prop, "an RRULE with a valid UNTIL"))?;
            rule.until = Some(until);
        }
    }
    Ok(rule)
}

/// One per component, except that an RRULE with COUNT=n stands for n and
/// one without COUNT cannot be counted; each RDATE value adds one.
fn instances(kind: ComponentKind, parts: &[&Component<'_>]) -> Result<Instances, ItipError> {
    let mut total = Instances::Counted(0);
    for part in parts {
        let mut own = Instances::Counted(1);
        let mut rules = named(&part.properties, "RRULE").peekable();
        if rules.peek().is_some() {
            own = Instances::Counted(0);
            for prop in rules {
                own = own.plus(
                    rrule(kind, prop)?
                        .count
                        .map_or(Instances::Uncountable, Instances::Counted),
                );
            }
        }
        let rdates = named(&part.properties, "RDATE").map(|p| p.value.split(',').count());
        let rdates = rdates.fold(0u64, |n, c| n.saturating_add(c as u64));
        total = total.plus(own).plus(Instances::Counted(rdates));
    }
    Ok(total)
}

/// ATTACH anywhere in the scheduling components, VALARMs included: an
/// inline audio alarm is as much an inline attachment as one on the event.
fn attachments(parts: &[&Component<'_>]) -> Attachments {
    let mut found = Attachments::default();
    let mut stack: Vec<&Component<'_>> = parts.to_vec();
    while let Some(component) = stack.pop() {
        for prop in named(&component.properties, "ATTACH") {
            let binary = prop
                .param("VALUE")
                .is_some_and(|v| v.eq_ignore_ascii_case("BINARY"));
            let base64 = prop
                .param("ENCODING")
                .is_some_and(|v| v.eq_ignore_ascii_case("BASE64"));
            if binary || base64 {
                found.inline = true;
            } else {
                found.external = true;
            }
        }
        stack.extend(&component.components);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> CalAddress {
        CalAddress::parse(s).unwrap()
    }

    fn stamp(s: &str) -> Option<Stamp> {
        Some(Stamp::parse(s).unwrap())
    }

    fn crlf(text: &str) -> String {
        text.replace('\n', "\r\n")
    }

    fn rejected(body: &str) -> ItipError {
        ItipMessage::parse(body).expect_err("must be rejected")
    }

    fn assert_rejected(body: &str, error: Fault, needle: &str) {
        let r = rejected(body);
        assert_eq!(r.kind, error, "{r}");
        assert!(
            r.description.contains(needle),
            "{:?} lacks {needle:?}",
            r.description
        );
    }

    /// Spec appendix A.1, as printed (bare LF, the spec's `PROID` typo kept).
    const A1: &str = "BEGIN:VCALENDAR
VERSION:2.0
PROID:-//Example Corp.//EN
METHOD:REQUEST
BEGIN:VEVENT
DTSTAMP:20040901T200200Z
ORGANIZER:mailto:bernard@example.com
DTSTART:20040902T130000Z
DTEND:20040902T140000Z
SUMMARY:Design meeting
UID:34222-232@example.com
ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR;CUTYPE=INDIVIDUAL;CN=Bernard Desruisseaux:mailto:bernard@example.com
ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;ROLE=REQ-PARTICIPANT;CUTYPE=INDIVIDUAL;CN=Cyrus Daboo:mailto:cyrus@example.org
END:VEVENT
END:VCALENDAR
";

    /// Spec appendix A.2.
    const A2: &str = "BEGIN:VCALENDAR
VERSION:2.0
PROID:-//Example Corp.//EN
METHOD:REQUEST
BEGIN:VFREEBUSY
DTSTAMP:20040901T200200Z
ORGANIZER:mailto:bernard@example.com
DTSTART:20040902T000000Z
DTEND:20040903T000000Z
UID:34222-232@example.com
ATTENDEE;CN=Cyrus Daboo:mailto:cyrus@example.org
ATTENDEE;CN=Mike Douglass:mailto:mike@example.org
END:VFREEBUSY
END:VCALENDAR
";

    /// Spec appendix A.3: BEGIN:VTODO closed by END:VEVENT, and an ATTENDEE
    /// broken across lines without folding.
    const A3: &str = "BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example Corp.//CalDAV Client//EN
METHOD:REQUEST
BEGIN:VTODO
DTSTAMP:20040901T200200Z
ORGANIZER:mailto:bernard@example.com
DUE:20070505
SUMMARY:Review Internet-Draft
UID:34222-456@example.com
ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;ROLE=REQ-
PARTICIPANT;CUTYPE=INDIVIDUAL;CN=Cyrus Daboo:
  mailto:cyrus@example.org
END:VEVENT
END:VCALENDAR
";

    /// A calendar around `inner` with METHOD `method`.
    fn calendar(method: &str, inner: &str) -> String {
        format!("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\nMETHOD:{method}\n{inner}END:VCALENDAR\n")
    }

    fn event(extra: &str) -> String {
        format!(
            "BEGIN:VEVENT\nUID:u1\nDTSTAMP:20240101T000000Z\nDTSTART:20240110T100000Z\n\
             ORGANIZER:mailto:org@example.com\nATTENDEE:mailto:a@example.com\n{extra}END:VEVENT\n"
        )
    }

    #[test]
    fn reads_spec_a1_request() {
        let msg = ItipMessage::parse(A1).unwrap();
        assert_eq!(msg.method, Method::Request);
        assert_eq!(msg.component, ComponentKind::VEvent);
        assert_eq!(msg.uid, "34222-232@example.com");
        assert_eq!(msg.organizer, Some(addr("mailto:bernard@example.com")));
        assert_eq!(
            msg.attendees,
            [
                addr("mailto:bernard@example.com"),
                addr("mailto:cyrus@example.org")
            ]
        );
        assert_eq!(msg.earliest, stamp("20040901T200200Z"));
        assert_eq!(msg.latest, stamp("20040902T140000Z"));
        assert_eq!(msg.instances, Instances::Counted(1));
        assert_eq!(msg.attachments, Attachments::default());
        assert_eq!(ItipMessage::parse(&crlf(A1)), Ok(msg));
    }

    #[test]
    fn reads_spec_a2_freebusy() {
        let msg = ItipMessage::parse(&crlf(A2)).unwrap();
        assert_eq!(msg.method, Method::Request);
        assert_eq!(msg.component, ComponentKind::VFreeBusy);
        assert_eq!(
            msg.attendees,
            [
                addr("mailto:cyrus@example.org"),
                addr("mailto:mike@example.org")
            ]
        );
        assert_eq!(msg.earliest, stamp("20040901T200200Z"));
        assert_eq!(msg.latest, stamp("20040903T000000Z"));
    }

    #[test]
    fn rejects_spec_a3_as_invalid_calendar_data() {
        for body in [A3.to_string(), crlf(A3)] {
            let r = rejected(&body);
            assert_eq!(r.kind, Fault::InvalidCalendarData);
            assert!(r.description.contains("ROLE=REQ-"), "{}", r.description);
        }
        // Even with the ATTENDEE repaired, END:VEVENT does not close VTODO.
        let repaired = A3.replace("ROLE=REQ-\nPARTICIPANT", "ROLE=REQ-\n PARTICIPANT");
        assert_rejected(
            &repaired,
            Fault::InvalidCalendarData,
            "does not close BEGIN:VTODO",
        );
    }

    #[test]
    fn reads_a_vtodo_with_a_date_due() {
        let fixed = A3
            .replace("ROLE=REQ-\nPARTICIPANT", "ROLE=REQ-\n PARTICIPANT")
            .replace("END:VEVENT", "END:VTODO")
            .replace("DUE:20070505", "DUE;VALUE=DATE:20070505");
        let msg = ItipMessage::parse(&fixed).unwrap();
        assert_eq!(msg.component, ComponentKind::VTodo);
        assert_eq!(msg.attendees, [addr("mailto:cyrus@example.org")]);
        assert_eq!(msg.latest, stamp("20070505"));
        assert_eq!(msg.earliest, stamp("20040901T200200Z"));
    }

    #[test]
    fn folded_attendees_and_address_case() {
        let body = crlf(&calendar(
            "request",
            "BEGIN:VEVENT\nUID:u1\nORGANIZER;CN=\"Org: Main; One\":MAILTO:Org@Example.com\n\
             ATTENDEE;CN=\"Doe, J: x\";PARTSTAT=NEEDS-ACTION:mai\n lto:jdoe@exa\n\tmple.org\n\
             ATTENDEE:MAILTO:JDoe@Example.ORG\nATTENDEE:mailto:b@example.org\nEND:VEVENT\n",
        ));
        let msg = ItipMessage::parse(&body).unwrap();
        assert_eq!(msg.organizer, Some(addr("mailto:org@example.com")));
        assert_eq!(
            msg.attendees,
            [
                addr("mailto:jdoe@example.org"),
                addr("mailto:b@example.org")
            ]
        );
        assert_eq!(msg.attendees[0].as_str(), "mailto:jdoe@example.org");
    }

    #[test]
    fn recurring_event_with_overrides() {
        let inner = format!(
            "{}BEGIN:VEVENT\nUID:u1\nRECURRENCE-ID:20240112T100000Z\nDTSTART:20240112T120000Z\n\
             ORGANIZER:mailto:org@example.com\nATTENDEE:mailto:A@example.com\n\
             ATTENDEE:mailto:late@example.com\nEND:VEVENT\n",
            event("RRULE:FREQ=DAILY;COUNT=5\nEXDATE:20240111T100000Z\n")
        );
        let msg = ItipMessage::parse(&calendar("REQUEST", &inner)).unwrap();
        assert_eq!(msg.instances, Instances::Counted(6));
        assert_eq!(
            msg.attendees,
            [
                addr("mailto:a@example.com"),
                addr("mailto:late@example.com")
            ]
        );
        assert_eq!(msg.latest, stamp("20240112T120000Z"));
    }

    #[test]
    fn rrule_until_is_uncountable_and_dated() {
        let msg = ItipMessage::parse(&calendar(
            "REQUEST",
            &event("RRULE:FREQ=WEEKLY;UNTIL=20301231T235959Z;BYDAY=MO\n"),
        ))
        .unwrap();
        assert_eq!(msg.instances, Instances::Uncountable);
        assert_eq!(msg.latest, stamp("20301231T235959Z"));
        let open = ItipMessage::parse(&calendar("REQUEST", &event("RRULE:FREQ=YEARLY\n"))).unwrap();
        assert_eq!(open.instances, Instances::Uncountable);
        assert_eq!(open.latest, stamp("20240110T100000Z"));
    }

    #[test]
    fn rdate_lists_add_instances_and_dates() {
        let extra = "RDATE:20240201T100000Z,20240202T100000Z\n\
                     RDATE;VALUE=PERIOD:20240205T100000Z/PT1H,20240206T100000Z/20240206T120000Z\n\
                     RDATE;VALUE=DATE:20231231\n";
        let msg = ItipMessage::parse(&calendar("REQUEST", &event(extra))).unwrap();
        assert_eq!(msg.instances, Instances::Counted(6));
        assert_eq!(msg.earliest, stamp("20231231"));
        assert_eq!(msg.latest, stamp("20240206T120000Z"));
    }

    #[test]
    fn count_and_rdate_add_up() {
        let extra = "RRULE:FREQ=DAILY;COUNT=10\nRDATE:20240301T100000Z\n";
        let msg = ItipMessage::parse(&calendar("REQUEST", &event(extra))).unwrap();
        assert_eq!(msg.instances, Instances::Counted(11));
    }

    #[test]
    fn freebusy_periods_are_dated() {
        let inner = "BEGIN:VFREEBUSY\nUID:f\nORGANIZER:mailto:o@x.org\nATTENDEE:mailto:a@x.org\n\
                     FREEBUSY;FBTYPE=BUSY:19990101T000000Z/PT1H,20991231T000000Z/20991231T010000Z\n\
                     END:VFREEBUSY\n";
        let msg = ItipMessage::parse(&calendar("REPLY", inner)).unwrap();
        assert_eq!(msg.earliest, stamp("19990101T000000Z"));
        assert_eq!(msg.latest, stamp("20991231T010000Z"));
    }

    #[test]
    fn timezones_and_alarms_do_not_count() {
        let inner = format!(
            "BEGIN:VTIMEZONE\nTZID:Europe/Berlin\nBEGIN:STANDARD\nDTSTART:16011028T030000\n\
             TZOFFSETFROM:+0200\nTZOFFSETTO:+0100\nEND:STANDARD\nEND:VTIMEZONE\n\
             BEGIN:X-VENDOR-THING\nUID:other\nEND:X-VENDOR-THING\n{}",
            event(
                "BEGIN:VALARM\nACTION:EMAIL\nTRIGGER;VALUE=DATE-TIME:19000101T000000Z\n\
                 ATTENDEE:mailto:alarm@example.com\nSUMMARY:x\nDESCRIPTION:y\nEND:VALARM\n"
            )
        );
        let msg = ItipMessage::parse(&calendar("REQUEST", &inner)).unwrap();
        assert_eq!(msg.earliest, stamp("20240101T000000Z"));
        assert_eq!(msg.attendees, [addr("mailto:a@example.com")]);
        assert_eq!(msg.component, ComponentKind::VEvent);
    }

    #[test]
    fn attachments_inline_and_external() {
        let parse = |extra: &str| {
            ItipMessage::parse(&calendar("REQUEST", &event(extra)))
                .unwrap()
                .attachments
        };
        let external = parse("ATTACH;FMTTYPE=application/pdf:https://example.com/a.pdf\n");
        assert_eq!(
            external,
            Attachments {
                inline: false,
                external: true
            }
        );
        let inline = parse("ATTACH;FMTTYPE=text/plain;ENCODING=BASE64;VALUE=BINARY:SGVsbG8=\n");
        assert_eq!(
            inline,
            Attachments {
                inline: true,
                external: false
            }
        );
        let lower = parse("ATTACH;encoding=base64:SGVsbG8=\n");
        assert!(lower.inline);
        let alarm = parse("ATTACH:cid:x@y\nBEGIN:VALARM\nACTION:AUDIO\nTRIGGER:-PT5M\nATTACH;VALUE=BINARY;ENCODING=BASE64:AAAA\nEND:VALARM\n");
        assert_eq!(
            alarm,
            Attachments {
                inline: true,
                external: true
            }
        );
    }

    #[test]
    fn lower_case_component_names_are_accepted() {
        let body = calendar("REQUEST", &event(""))
            .replace("BEGIN:VEVENT", "begin:vevent")
            .replace("END:VEVENT", "End:VEvent");
        assert_eq!(
            ItipMessage::parse(&body).unwrap().component,
            ComponentKind::VEvent
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        let body = format!("\u{feff}{}", crlf(A1));
        assert_eq!(ItipMessage::parse(&body), ItipMessage::parse(A1));
    }

    #[test]
    fn mixed_line_endings_are_accepted() {
        let body = calendar("REQUEST", &event("SUMMARY:a\n")).replacen('\n', "\r\n", 5);
        let msg = ItipMessage::parse(&body).unwrap();
        assert_eq!(msg.uid, "u1");
    }

    #[test]
    fn scheduling_message_errors() {
        use Fault::InvalidSchedulingMessage as Ism;
        let no_method = calendar("REQUEST", &event("")).replace("METHOD:REQUEST\n", "");
        assert_rejected(&no_method, Ism, "no METHOD");
        assert_rejected(&calendar("FORWARD", &event("")), Ism, "METHOD:\"FORWARD\"");
        let twice = calendar("REQUEST", &event("")).replace("VERSION:2.0", "METHOD:REPLY");
        assert_rejected(&twice, Ism, "more than one METHOD");
        let tz_only = calendar("REQUEST", "BEGIN:VTIMEZONE\nTZID:x\nEND:VTIMEZONE\n");
        assert_rejected(&tz_only, Ism, "no VEVENT, VTODO, VJOURNAL or VFREEBUSY");
        let todo = "BEGIN:VTODO\nUID:u1\nORGANIZER:mailto:org@example.com\nEND:VTODO\n";
        assert_rejected(
            &calendar("REQUEST", &format!("{}{todo}", event(""))),
            Ism,
            "mixes VEVENT and VTODO",
        );
        let other = event("").replace("UID:u1", "UID:u2");
        assert_rejected(
            &calendar("REQUEST", &format!("{}{other}", event(""))),
            Ism,
            "different UIDs \"u1\" and \"u2\"",
        );
        let no_uid = event("").replace("UID:u1\n", "");
        assert_rejected(
            &calendar("REQUEST", &format!("{}{no_uid}", event(""))),
            Ism,
            "VEVENT component 2 of 2 has no UID",
        );
        let no_org = event("").replace("ORGANIZER:mailto:org@example.com\n", "");
        assert_rejected(&calendar("REQUEST", &no_org), Ism, "no ORGANIZER");
        let other_org = event("").replace("org@", "boss@");
        assert_rejected(
            &calendar("REQUEST", &format!("{}{other_org}", event(""))),
            Ism,
            "different ORGANIZERs",
        );
        let bad_org = event("").replace(
            "ORGANIZER:mailto:org@example.com",
            "ORGANIZER:org@example.com",
        );
        assert_rejected(
            &calendar("REQUEST", &bad_org),
            Ism,
            "ORGANIZER value \"org@example.com\"",
        );
        assert_rejected(
            &calendar("REQUEST", &event("ATTENDEE:mailto:nobody\n")),
            Ism,
            "ATTENDEE value \"mailto:nobody\"",
        );
    }

    #[test]
    fn calendar_data_errors() {
        use Fault::InvalidCalendarData as Icd;
        let good = calendar("REQUEST", &event(""));
        assert_rejected("", Icd, "no iCalendar object");
        assert_rejected(
            &good.replace("VCALENDAR", "VCARD"),
            Icd,
            "must start with BEGIN:VCALENDAR",
        );
        assert_rejected(
            &format!("X-JUNK:1\n{good}"),
            Icd,
            "content line 1 is \"X-JUNK:1\"",
        );
        assert_rejected(&format!("{good}{good}"), Icd, "follows END:VCALENDAR");
        assert_rejected(
            &good.replace("END:VEVENT\n", ""),
            Icd,
            "does not close BEGIN:VEVENT",
        );
        assert_rejected(
            &good.replace("END:VCALENDAR\n", ""),
            Icd,
            "BEGIN:VCALENDAR of content line 1 has no END:VCALENDAR",
        );
        assert_rejected(&good.replace("UID:u1", "UID"), Icd, "has no ':'");
        assert_rejected(
            &good.replace("UID:u1", "UID;X=\"a:u1"),
            Icd,
            "unterminated quoted",
        );
        assert_rejected(
            &good.replace("UID:u1", "UID;X=a\"b\":u1"),
            Icd,
            "inside an unquoted",
        );
        assert_rejected(
            &good.replace("UID:u1", "UID;X=\"a\"b:u1"),
            Icd,
            "unexpected text",
        );
        assert_rejected(
            &good.replace("UID:u1", "UID;=a:u1"),
            Icd,
            "parameter without a name",
        );
        assert_rejected(
            &good.replace("UID:u1", "UID;X=\"a\",b:u1"),
            Icd,
            "mixes quoted",
        );
        assert_rejected(
            &good.replace("UID:u1", "UID;X=\"a\",:u1"),
            Icd,
            "mixes quoted",
        );
        assert_rejected(
            &good.replace("UID:u1", "UID;X=\"\",\"b:c\":u1"),
            Icd,
            "empty quoted",
        );
        assert_rejected(
            &good.replace("UID:u1", "UID;RSVP:u1"),
            Icd,
            "parameter without '='",
        );
        assert_rejected(
            &good.replace("END:VEVENT", "END;X=1:VEVENT"),
            Icd,
            "malformed BEGIN or END",
        );
        assert_rejected(&good.replace("UID:u1", "U@D:u1"), Icd, "property name");
        assert_rejected(
            &good.replace("UID:u1", "UID:u\u{1}1"),
            Icd,
            "control character",
        );
        assert_rejected(
            &good.replace("BEGIN:VEVENT", "BEGIN:V EVENT"),
            Icd,
            "does not name a component",
        );
        assert_rejected(
            &calendar("REQUEST", &event("DTEND:tomorrow\n")),
            Icd,
            "DTEND value \"tomorrow\"",
        );
        assert_rejected(
            &calendar(
                "REQUEST",
                &event("RDATE;VALUE=PERIOD:20240101T000000Z/soon\n"),
            ),
            Icd,
            "RDATE",
        );
        assert_rejected(
            &calendar("REQUEST", &event("RRULE:FREQ=DAILY;COUNT=-1\n")),
            Icd,
            "COUNT",
        );
        assert_rejected(
            &calendar("REQUEST", &event("RRULE:FREQ=DAILY;UNTIL=never\n")),
            Icd,
            "UNTIL",
        );
    }

    #[test]
    fn nesting_is_limited_before_parsing() {
        let nest = |levels: usize| {
            let mut body = String::from("BEGIN:VCALENDAR\nMETHOD:REQUEST\n");
            body.push_str(&"BEGIN:X-N\n".repeat(levels - 1));
            body.push_str(&"END:X-N\n".repeat(levels - 1));
            body.push_str(&event(""));
            body + "END:VCALENDAR\n"
        };
        assert!(ItipMessage::parse(&nest(8)).is_ok());
        assert_rejected(&nest(9), Fault::InvalidCalendarData, "deeper than 8 levels");
        // Deep enough to overflow the parser's stack, were it reached.
        assert_rejected(
            &nest(200_000),
            Fault::InvalidCalendarData,
            "content line 10 ",
        );
    }

    #[test]
    fn uid_and_property_values_are_bounded() {
        let good = calendar("REQUEST", &event(""));
        let long_uid = good.replace("UID:u1", &format!("UID:{}", "u".repeat(256)));
        assert_rejected(
            &long_uid,
            Fault::InvalidCalendarData,
            "the UID value is 256 octets long; at most 255 are accepted",
        );
        let long_summary = good.replace("UID:u1", &format!("UID:u1\nSUMMARY:{}", "s".repeat(8193)));
        assert_rejected(
            &long_summary,
            Fault::InvalidCalendarData,
            "the SUMMARY value is 8193 octets long; at most 8192 are accepted",
        );
        let long_description = good.replace(
            "UID:u1",
            &format!("UID:u1\nDESCRIPTION:{}", "d".repeat(20_000)),
        );
        assert!(ItipMessage::parse(&long_description).is_ok());
    }

    #[test]
    fn line_count_is_limited() {
        let padding = |n: usize| "SUMMARY:x\n".repeat(n);
        let fits = calendar("REQUEST", &event(&padding(10_000 - 12)));
        assert_eq!(fits.lines().count(), 10_000);
        assert!(ItipMessage::parse(&fits).is_ok());
        let over = calendar("REQUEST", &event(&padding(10_000 - 11)));
        assert_rejected(
            &over,
            Fault::InvalidCalendarData,
            "more than 10000 content lines",
        );
    }

    #[test]
    fn large_bodies_parse() {
        let attendees: String = (0..4_000)
            .map(|i| format!("ATTENDEE;CN=\"Person {i}\":mailto:p{i}@example.com\n"))
            .collect();
        let msg = ItipMessage::parse(&crlf(&calendar("REQUEST", &event(&attendees)))).unwrap();
        assert_eq!(msg.attendees.len(), 4_001);
        let long_line = format!("DESCRIPTION:{}\n", "x".repeat(1 << 20));
        assert!(ItipMessage::parse(&calendar("REQUEST", &event(&long_line))).is_ok());
    }

    /// xorshift64*: deterministic, dependency-free randomness for fuzzing.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        const TOKENS: [&[u8]; 12] = [
            b"\r\n",
            b"\n ",
            b"BEGIN:VEVENT\n",
            b"END:VEVENT\n",
            b"BEGIN:VCALENDAR\n",
            b":",
            b";",
            b"\"",
            b",",
            b"/",
            b"RRULE:COUNT=99999999999999999999999\n",
            b"\xc3\xa9",
        ];
        let mut bytes = seed.to_vec();
        for _ in 0..=rng.below(6) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(5) {
                0 => bytes.truncate(at),
                1 => {
                    let end = (at + rng.below(40)).min(bytes.len());
                    bytes.drain(at..end);
                }
                2 => {
                    let token = TOKENS[rng.below(TOKENS.len())];
                    bytes.splice(at..at, token.iter().copied());
                }
                3 if at < bytes.len() => bytes[at] = rng.next() as u8,
                _ => {
                    let end = (at + rng.below(200)).min(bytes.len());
                    let chunk = bytes[at..end].to_vec();
                    bytes.splice(at..at, chunk);
                }
            }
        }
        bytes
    }

    /// The same content lines as `icalendar`'s parser reads them, the one
    /// this reader replaced (it saw the lines after the same checks, with
    /// CRLF endings and BEGIN/END names upper-cased): component nesting,
    /// property names, the values the facts are read from, and the
    /// parameters asked for.
    fn agrees_with_icalendar(body: &str) {
        use icalendar::parser::{read_calendar, Component as Theirs};
        let body = body.strip_prefix('\u{feff}').unwrap_or(body);
        let unfolded = unfold(body);
        assert_eq!(unfolded, icalendar::parser::unfold(body), "unfolded");
        let ours = read_content(&unfolded).unwrap();
        let mut text = String::new();
        for line in unfolded.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let upper = line.to_ascii_uppercase();
            let keyword = ["BEGIN:", "END:"]
                .into_iter()
                .find(|k| upper.starts_with(k));
            match keyword {
                Some(k) => text.push_str(&format!(
                    "{k}{}",
                    line[k.len()..].trim().to_ascii_uppercase()
                )),
                None => text.push_str(line),
            }
            text.push_str("\r\n");
        }
        let theirs = read_calendar(&text).unwrap();
        const RAW: [&str; 9] = [
            "ORGANIZER",
            "ATTENDEE",
            "DTSTART",
            "DTEND",
            "DUE",
            "RRULE",
            "RDATE",
            "EXDATE",
            "ATTACH",
        ];
        fn flat_ours(c: &Component<'_>, out: &mut Vec<String>) {
            out.push(format!("BEGIN:{}", c.name));
            for p in &c.properties {
                let upper = p.name.to_ascii_uppercase();
                let value = if RAW.contains(&upper.as_str()) {
                    p.value.to_string()
                } else if upper == "UID" {
                    text_value(p.value).into_owned()
                } else {
                    String::new()
                };
                out.push(format!(
                    "{}={value};{:?};{:?}",
                    p.name,
                    p.param("VALUE"),
                    p.param("ENCODING")
                ));
            }
            for sub in &c.components {
                flat_ours(sub, out);
            }
        }
        fn flat_theirs(c: &Theirs<'_>, out: &mut Vec<String>) {
            out.push(format!("BEGIN:{}", c.name.as_str()));
            flat_properties(&c.properties, out);
            for sub in &c.components {
                flat_theirs(sub, out);
            }
        }
        fn flat_properties(props: &[icalendar::parser::Property<'_>], out: &mut Vec<String>) {
            for p in props {
                let upper = p.name.as_str().to_ascii_uppercase();
                let value = if RAW.contains(&upper.as_str()) || upper == "UID" {
                    p.val.as_str().to_string()
                } else {
                    String::new()
                };
                let param = |key: &str| {
                    p.params
                        .iter()
                        .find(|x| x.key.as_str().eq_ignore_ascii_case(key))
                        .map(|x| x.val.as_ref().map_or("", |v| v.as_str()))
                };
                out.push(format!(
                    "{}={value};{:?};{:?}",
                    p.name.as_str(),
                    param("VALUE"),
                    param("ENCODING")
                ));
            }
        }
        let mut mine = Vec::new();
        flat_ours(&ours, &mut mine);
        let mut other = vec!["BEGIN:VCALENDAR".to_string()];
        flat_properties(&theirs.properties, &mut other);
        for sub in &theirs.components {
            flat_theirs(sub, &mut other);
        }
        assert_eq!(mine, other, "{body}");
    }

    #[test]
    fn mutated_input_never_panics_and_reads_as_icalendar_did() {
        let rich = calendar(
            "REQUEST",
            &event("RRULE:FREQ=DAILY;COUNT=3\nRDATE;VALUE=PERIOD:20240205T100000Z/PT1H\nATTACH;VALUE=BINARY;ENCODING=BASE64:AAAA\nATTACH;FMTTYPE=\"text/plain\";VALUE=\"URI\":https://x.test/a\nBEGIN:VALARM\nTRIGGER:-PT5M\nEND:VALARM\n"),
        );
        let seeds = [A1.to_string(), crlf(A2), A3.to_string(), rich];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut ok, mut err) = (0, 0);
        for round in 0..6_000 {
            let seed = seeds[round % seeds.len()].as_bytes();
            let bytes = mutate(&mut rng, seed);
            let text = String::from_utf8_lossy(&bytes);
            match ItipMessage::parse(&text) {
                Ok(_) => {
                    agrees_with_icalendar(&text);
                    ok += 1;
                }
                Err(_) => err += 1,
            }
        }
        assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
    }
}
