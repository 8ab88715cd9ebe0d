//! Every applicable `IS:error` element of spec clause 8.3, provoked through
//! HTTP against the running bridge, plus the GET / OPTIONS / other-method
//! answers of the receiver resource.
//!
//! Each test starts its own bridge and its own dnsmasq (authoritative for
//! every domain used), so nothing reaches the outside world. Requests that
//! pass validation name recipients in `nosrv.test`, which has no SRV
//! record; with `imip.mode = "native-only"` they are answered `5.3` at once
//! (mail fallback is another test file's subject).

mod support;

use std::time::{Duration, Instant};

use support::{free_port, http, http_raw, ical_day, Bridge, Dns, HttpResponse, Zone};

const WELL_KNOWN: &str = "/.well-known/ischedule";
const NAMESPACE: &str = "urn:ietf:params:xml:ns:ischedule";

const BERNARD: &str = "mailto:bernard@example.com";
const MALLORY: &str = "mailto:mallory@example.com";
const CAROL: &str = "mailto:carol@nosrv.test";
const DAVE: &str = "mailto:dave@nosrv.test";
const ERIN: &str = "mailto:erin@nosrv.test";
const FRANK: &str = "mailto:frank@nosrv.test";
/// Users of the bridge's local domain.
const ALICE: &str = "mailto:alice@example.org";
const BOB: &str = "mailto:bob@example.org";

const SECRET: &str = "post-errors-secret-0123456789";

/// `[senders]` that makes the loopback client an unauthenticated remote sender.
fn remote_senders() -> String {
    format!("[senders]\nallow = [\"10.0.0.0/8\"]\nshared_secret = \"{SECRET}\"\n")
}

const NO_SRV: &str = "5.3;No scheduling support for user";

/// A bridge with the limits of the brief, resolving through its own dnsmasq.
struct World {
    bridge: Bridge,
    _dns: Dns,
}

impl World {
    fn start() -> World {
        World::start_with("")
    }

    /// `extra` is appended to the configuration (whole tables only).
    fn start_with(extra: &str) -> World {
        let dns = Dns::start(
            &Zone::new()
                .authoritative("nosrv.test")
                .authoritative("example.com")
                .authoritative("example.org"),
        );
        let port = free_port();
        let bridge = Bridge::start(
            port,
            &format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n\
                 [dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
                 [domains]\nlocal = [\"example.org\"]\n\
                 [limits]\nmax_recipients = 3\nmax_content_length = 4096\nmax_instances = 10\n\
                 min_date_time = \"20000101T000000Z\"\nmax_date_time = \"20991231T000000Z\"\n\
                 [timeouts]\nconnect_secs = 2\nreceiver_secs = 5\nrequest_secs = 10\n\
                 [imip]\nmode = \"native-only\"\n{extra}",
                dns.port
            ),
        );
        World { bridge, _dns: dns }
    }

    fn port(&self) -> u16 {
        self.bridge.port
    }
}

/// An iCalendar object (CRLF) with `METHOD:method` (none if `None`) and one
/// `component` holding `props`.
fn calendar(method: Option<&str>, component: &str, props: &[String]) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//ischedule-bridge//post_errors//EN".into(),
    ];
    lines.extend(method.map(|m| format!("METHOD:{m}")));
    lines.push(format!("BEGIN:{component}"));
    lines.extend(props.iter().cloned());
    lines.push(format!("END:{component}"));
    lines.push("END:VCALENDAR".into());
    lines.push(String::new());
    lines.join("\r\n")
}

/// The properties of a VEVENT ten days ahead, organised by `organizer`,
/// with `attendees` (the organizer is listed as chair too) and `extra`.
fn event_props(organizer: &str, attendees: &[&str], extra: &[&str]) -> Vec<String> {
    let day = ical_day(10);
    let mut props = vec![
        format!("DTSTAMP:{}T120000Z", ical_day(0)),
        format!("DTSTART:{day}T130000Z"),
        format!("DTEND:{day}T140000Z"),
        "SUMMARY:Design meeting".to_string(),
        // Fixed width, so bodies of a planned length stay that long.
        format!("UID:{:05}-post-errors@example.com", free_port()),
        format!("ORGANIZER:{organizer}"),
        format!("ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR:{organizer}"),
    ];
    props.extend(
        attendees
            .iter()
            .map(|a| format!("ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{a}")),
    );
    props.extend(extra.iter().map(|e| e.to_string()));
    props
}

/// A VEVENT REQUEST from Bernard to `attendees`.
fn invitation(attendees: &[&str], extra: &[&str]) -> String {
    calendar(
        Some("REQUEST"),
        "VEVENT",
        &event_props(BERNARD, attendees, extra),
    )
}

/// Appendix A.2 with future dates: Bernard asks for the free-busy time of
/// `attendees`.
fn freebusy(attendees: &[&str]) -> String {
    let mut props = vec![
        format!("DTSTAMP:{}T120000Z", ical_day(0)),
        format!("ORGANIZER:{BERNARD}"),
        format!("DTSTART:{}T000000Z", ical_day(10)),
        format!("DTEND:{}T000000Z", ical_day(11)),
        "UID:34222-233-post-errors@example.com".to_string(),
    ];
    props.extend(attendees.iter().map(|a| format!("ATTENDEE:{a}")));
    calendar(Some("REQUEST"), "VFREEBUSY", &props)
}

/// A POST as appendix A.1 sends it; tests then break one thing.
#[derive(Clone)]
struct Post {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Post {
    fn new(
        component: &str,
        method: &str,
        originator: &str,
        recipients: &[&str],
        body: &str,
    ) -> Post {
        let headers = [
            ("iSchedule-Version", "1.0".to_string()),
            (
                "iSchedule-Message-ID",
                format!("post-errors-{}", free_port()),
            ),
            ("Originator", originator.to_string()),
            ("Recipient", recipients.join(", ")),
            ("Cache-Control", "no-cache, no-transform".to_string()),
            (
                "Content-Type",
                format!("text/calendar; component={component}; method={method}"),
            ),
        ];
        Post {
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// A VEVENT REQUEST from Bernard to `recipients`, who are its attendees.
    fn invitation(recipients: &[&str]) -> Post {
        Post::new(
            "VEVENT",
            "REQUEST",
            BERNARD,
            recipients,
            &invitation(recipients, &[]),
        )
    }

    /// Replaces every `name` header with one carrying `value`.
    fn set(self, name: &str, value: &str) -> Post {
        self.without(name).add(name, value)
    }

    /// Adds one more `name` header.
    fn add(mut self, name: &str, value: &str) -> Post {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn without(mut self, name: &str) -> Post {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Post {
        self.body = body.into();
        self
    }

    fn send(&self, port: u16) -> HttpResponse {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        http(port, "POST", WELL_KNOWN, &headers, &self.body)
    }

    /// The request as bytes, without a body framing header, for `http_raw`.
    fn head(&self, port: u16) -> String {
        let mut head = format!("POST {WELL_KNOWN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        for (n, v) in &self.headers {
            head += &format!("{n}: {v}\r\n");
        }
        head
    }
}

/// Undoes the escaping the bridge's XML writer applies to text.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#13;", "\r")
        .replace("&#10;", "\n")
        .replace("&#9;", "\t")
        .replace("&amp;", "&")
}

/// Names of all start (and empty-element) tags, in document order.
fn element_names(xml: &str) -> Vec<String> {
    xml.split('<')
        .skip(1)
        .filter(|tag| !tag.starts_with(['/', '?', '!']))
        .map(|tag| {
            tag.chars()
                .take_while(|c| !c.is_whitespace() && *c != '/' && *c != '>')
                .collect()
        })
        .collect()
}

/// The text of the first `<name>...</name>`, unescaped.
fn element_text(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(unescape(&xml[start..end]))
}

/// The headers every iSchedule response carries (clauses 9.1, 9.2).
fn assert_ischedule_headers(r: &HttpResponse) {
    assert_eq!(r.header("iSchedule-Version"), Some("1.0"), "{r:?}");
    let serial = r.header("iSchedule-Capabilities").unwrap_or_default();
    assert!(
        !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_digit()),
        "iSchedule-Capabilities must be 1*DIGIT: {r:?}"
    );
}

/// Checks a clause 8.3 failure: status, headers, an `IS:error` document
/// holding exactly `element`, and a `response-description` containing every
/// one of `needles`. Returns the description.
#[track_caller]
fn assert_error(r: &HttpResponse, status: u16, element: &str, needles: &[&str]) -> String {
    let text = r.text();
    assert_eq!(r.status, status, "expected {status} {element}, got: {text}");
    let content_type = r.header("Content-Type").unwrap_or_default();
    assert!(
        content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/xml")),
        "Content-Type {content_type:?}"
    );
    assert_eq!(
        r.header("Cache-Control"),
        Some("no-cache, no-transform"),
        "{r:?}"
    );
    assert_ischedule_headers(r);
    assert!(text.starts_with("<?xml"), "{text}");
    assert!(
        text.contains(&format!("<error xmlns=\"{NAMESPACE}\">")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("</error>"), "{text}");
    assert_eq!(
        element_names(&text),
        ["error", element, "response-description"],
        "exactly one error element, {element}: {text}"
    );
    let description = element_text(&text, "response-description").unwrap_or_default();
    for needle in needles {
        assert!(
            description.contains(needle),
            "the description of {element} should name {needle:?}: {description:?}"
        );
    }
    description
}

/// `(recipient, request-status, response-description)` of a schedule-response.
fn statuses(r: &HttpResponse) -> Vec<(String, String, String)> {
    r.text()
        .split("<response>")
        .skip(1)
        .map(|resp| {
            let field = |name| element_text(resp, name).unwrap_or_default();
            (
                field("recipient"),
                field("request-status"),
                field("response-description"),
            )
        })
        .collect()
}

/// A validated request that was scheduled: 200, a schedule-response with one
/// `5.3` per recipient, in order, naming the lookup that found nothing.
#[track_caller]
fn assert_no_srv_for_each(r: &HttpResponse, recipients: &[&str]) {
    let text = r.text();
    assert_eq!(r.status, 200, "{text}");
    assert_eq!(r.header("Cache-Control"), Some("no-cache, no-transform"));
    assert_ischedule_headers(r);
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("application/xml")),
        "{r:?}"
    );
    assert!(
        text.contains(&format!("<schedule-response xmlns=\"{NAMESPACE}\">")),
        "{text}"
    );
    let got = statuses(r);
    let who: Vec<&str> = got.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(who, recipients, "{text}");
    for (recipient, status, why) in &got {
        assert_eq!(status, NO_SRV, "{recipient}: {text}");
        let domain = recipient.rsplit('@').next().unwrap_or_default();
        let explained = if domain == "example.org" {
            why.contains("example.org is a local domain")
        } else {
            why.contains(&format!("_ischedules._tcp.{domain} (no SRV record)"))
        };
        assert!(explained, "{recipient}: {why}");
    }
}

/// Sends and times a request that must be scheduled with 5.3 per recipient.
#[track_caller]
fn assert_accepted(post: &Post, port: u16, recipients: &[&str]) {
    let started = Instant::now();
    let r = post.send(port);
    let took = started.elapsed();
    assert_no_srv_for_each(&r, recipients);
    assert!(
        took < Duration::from_secs(3),
        "a domain without SRV record must be answered at once, took {took:?}"
    );
}

#[test]
fn a_valid_request_at_every_limit_is_scheduled_with_5_3_per_recipient() {
    let w = World::start();
    // Three recipients (max-recipients), one of them named twice, and ten
    // instances (max-instances): all within the limits.
    let to = [CAROL, DAVE, ERIN];
    let body = invitation(&to, &["RRULE:FREQ=DAILY;COUNT=10"]);
    let post = Post::new("VEVENT", "REQUEST", BERNARD, &to, &body)
        .add("Recipient", "MAILTO:Carol@NOSRV.test");
    assert_accepted(&post, w.port(), &to);
    // The configured receiver path works like the well-known one (a new
    // Message-ID, so it is not answered from the idempotency record).
    let post = post.set("iSchedule-Message-ID", "post-errors-configured-path");
    let headers: Vec<(&str, &str)> = post
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let r = http(w.port(), "POST", "/ischedule", &headers, &post.body);
    assert_no_srv_for_each(&r, &to);
    // A local-domain recipient has no receiver either (no [[route]]).
    assert_accepted(&Post::invitation(&[ALICE]), w.port(), &[ALICE]);
    // Lower-case parameters and a quoted charset=utf-8 are fine.
    let post = Post::invitation(&[CAROL]).set(
        "Content-Type",
        "text/calendar; charset=\"UTF-8\"; method=request; component=vevent",
    );
    assert_accepted(&post, w.port(), &[CAROL]);
}

#[test]
fn version_not_supported() {
    let w = World::start();
    let r = Post::invitation(&[CAROL])
        .without("iSchedule-Version")
        .send(w.port());
    assert_error(
        &r,
        400,
        "version-not-supported",
        &["no iSchedule-Version header", "supports 1.0"],
    );
    let r = Post::invitation(&[CAROL])
        .set("iSchedule-Version", "2.0")
        .send(w.port());
    assert_error(
        &r,
        400,
        "version-not-supported",
        &["iSchedule-Version '2.0' is not supported", "supports 1.0"],
    );
    // 1.0 anywhere in the list is enough (clause 9.1 allows a list).
    let post = Post::invitation(&[CAROL]).set("iSchedule-Version", "2.0, 1.0");
    assert_accepted(&post, w.port(), &[CAROL]);
}

#[test]
fn invalid_calendar_data_type() {
    let w = World::start();
    let with_type = |value: &str| {
        Post::invitation(&[CAROL])
            .set("Content-Type", value)
            .send(w.port())
    };
    assert_error(
        &with_type("text/plain"),
        400,
        "invalid-calendar-data-type",
        &["media type 'text/plain' is not text/calendar"],
    );
    assert_error(
        &with_type("text/calendar; charset=latin1; component=VEVENT; method=REQUEST"),
        400,
        "invalid-calendar-data-type",
        &["charset 'latin1' is not utf-8"],
    );
    assert_error(
        &with_type("text/calendar; method=REQUEST"),
        400,
        "invalid-calendar-data-type",
        &["has no component parameter"],
    );
    assert_error(
        &with_type("text/calendar; component=VEVENT"),
        400,
        "invalid-calendar-data-type",
        &["has no method parameter"],
    );
    let r = Post::invitation(&[CAROL])
        .without("Content-Type")
        .send(w.port());
    assert_error(
        &r,
        400,
        "invalid-calendar-data-type",
        &["Content-Type header missing"],
    );
}

/// Appendix A.3 as printed: a VTODO closed by END:VEVENT, and an ATTENDEE
/// broken across lines without folding.
const A3: &str = "BEGIN:VCALENDAR\r\n\
VERSION:2.0\r\n\
PRODID:-//Example Corp.//CalDAV Client//EN\r\n\
METHOD:REQUEST\r\n\
BEGIN:VTODO\r\n\
DTSTAMP:20040901T200200Z\r\n\
ORGANIZER:mailto:bernard@example.com\r\n\
DUE:20070505\r\n\
SUMMARY:Review Internet-Draft\r\n\
UID:34222-456@example.com\r\n\
ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;ROLE=REQ-\r\n\
PARTICIPANT;CUTYPE=INDIVIDUAL;CN=Cyrus Daboo:\r\n\
  mailto:cyrus@example.org\r\n\
END:VEVENT\r\n\
END:VCALENDAR\r\n";

#[test]
fn invalid_calendar_data() {
    let w = World::start();
    let r = Post::invitation(&[CAROL])
        .body("Hello, this is not a calendar.\r\n")
        .send(w.port());
    assert_error(
        &r,
        400,
        "invalid-calendar-data",
        &[
            "must start with BEGIN:VCALENDAR",
            "content line 1 is \"Hello, this is not a calendar.\"",
        ],
    );

    // A.3 as printed: the broken ATTENDEE line is the first thing wrong.
    let a3 = |body: &str| {
        Post::new(
            "VTODO",
            "REQUEST",
            BERNARD,
            &["mailto:cyrus@example.org"],
            body,
        )
        .send(w.port())
    };
    assert_error(
        &a3(A3),
        400,
        "invalid-calendar-data",
        &[
            "content line 11",
            "ROLE=REQ-",
            "has no ':' before its value",
        ],
    );
    // With the ATTENDEE folded properly, END:VEVENT still does not close the VTODO.
    let repaired = A3.replace("ROLE=REQ-\r\nPARTICIPANT", "ROLE=REQ-\r\n PARTICIPANT");
    assert_error(
        &a3(&repaired),
        400,
        "invalid-calendar-data",
        &["\"END:VEVENT\" does not close BEGIN:VTODO of content line 5"],
    );

    // ISO-8859-1 bytes are not UTF-8; the description says where.
    let body = invitation(&[CAROL], &["SUMMARY:Caf\u{e9}"]);
    let at = body.find('\u{e9}').unwrap();
    let latin1: Vec<u8> = body
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();
    let r = Post::invitation(&[CAROL]).body(latin1).send(w.port());
    assert_error(
        &r,
        400,
        "invalid-calendar-data",
        &["not UTF-8", &format!("at byte {at}")],
    );
}

/// RFC 5545 3.3.4 / 3.3.5: months 01-12, days that exist in the month,
/// hours 00-23, minutes 00-59, seconds 00-60. A value that merely has the
/// right number of digits is not a DATE or DATE-TIME.
///
/// `Stamp::parse` (src/itip/datetime.rs) checks the ranges; before it did,
/// the bridge scheduled all of these (200, 5.3).
#[test]
fn invalid_calendar_data_for_impossible_date_values() {
    let w = World::start();
    let with = |property: &str| {
        let mut props = event_props(BERNARD, &[CAROL], &[]);
        let name = property.split([':', ';']).next().unwrap_or_default();
        props.retain(|p| !p.starts_with(name));
        props.push(property.to_string());
        Post::invitation(&[CAROL])
            .body(calendar(Some("REQUEST"), "VEVENT", &props))
            .send(w.port())
    };
    // Valid edge values are still scheduled.
    for fine in ["DTSTART:20280229T100000Z", "DTEND:20301231T235960Z"] {
        assert_no_srv_for_each(&with(fine), &[CAROL]);
    }
    for (property, value) in [
        ("DTSTART:20301301T100000Z", "20301301T100000Z"),
        ("DTSTART:20300230T100000Z", "20300230T100000Z"),
        ("DTEND:20300101T256199Z", "20300101T256199Z"),
        ("DTSTART;VALUE=DATE:20300100", "20300100"),
        (
            "RRULE:FREQ=DAILY;UNTIL=20309999T999999Z",
            "20309999T999999Z",
        ),
    ] {
        let name = property.split([':', ';']).next().unwrap_or_default();
        let r = with(property);
        assert_error(&r, 400, "invalid-calendar-data", &[name, value]);
    }
}

#[test]
fn invalid_scheduling_message() {
    let w = World::start();
    let port = w.port();

    let r = Post::invitation(&[CAROL])
        .set(
            "Content-Type",
            "text/calendar; component=VEVENT; method=CANCEL",
        )
        .send(port);
    assert_error(
        &r,
        400,
        "invalid-scheduling-message",
        &["method=CANCEL", "METHOD:REQUEST"],
    );

    let r = Post::invitation(&[CAROL])
        .set(
            "Content-Type",
            "text/calendar; component=VTODO; method=REQUEST",
        )
        .send(port);
    assert_error(
        &r,
        400,
        "invalid-scheduling-message",
        &["component=VTODO", "holds a VEVENT"],
    );

    let no_method = calendar(None, "VEVENT", &event_props(BERNARD, &[CAROL], &[]));
    let r = Post::invitation(&[CAROL]).body(no_method).send(port);
    assert_error(
        &r,
        400,
        "invalid-scheduling-message",
        &["no METHOD property"],
    );

    // Table 1: the Originator of a REQUEST is its ORGANIZER.
    let r = Post::invitation(&[CAROL])
        .set("Originator", MALLORY)
        .send(port);
    assert_error(
        &r,
        400,
        "invalid-scheduling-message",
        &[
            &format!("Originator {MALLORY} must match the ORGANIZER {BERNARD} of a REQUEST"),
            "table 1",
        ],
    );

    // Table 2: every Recipient of a REQUEST is an ATTENDEE.
    let body = invitation(&[CAROL], &[]);
    let r = Post::new("VEVENT", "REQUEST", BERNARD, &[CAROL, DAVE], &body).send(port);
    assert_error(
        &r,
        400,
        "invalid-scheduling-message",
        &[
            &format!("Recipient {DAVE} must match one of the ATTENDEEs"),
            CAROL,
            "of a REQUEST",
            "table 2",
        ],
    );

    // Table 1: the Originator of a REPLY is one of its ATTENDEEs.
    let mut props = event_props(BERNARD, &[], &[]);
    props.retain(|p| !p.starts_with("ATTENDEE"));
    props.push(format!("ATTENDEE;PARTSTAT=ACCEPTED:{CAROL}"));
    let reply = calendar(Some("REPLY"), "VEVENT", &props);
    let r = Post::new("VEVENT", "REPLY", MALLORY, &[BERNARD], &reply).send(port);
    assert_error(
        &r,
        400,
        "invalid-scheduling-message",
        &[
            &format!("Originator {MALLORY} must match the ATTENDEE {CAROL} of a REPLY"),
            "table 1",
        ],
    );
    // The same REPLY from Carol to the organizer is fine.
    let post = Post::new("VEVENT", "REPLY", CAROL, &[BERNARD], &reply);
    let r = post.send(port);
    assert_eq!(r.status, 200, "{}", r.text());
    let s = statuses(&r);
    assert_eq!(s.len(), 1, "{}", r.text());
    assert_eq!((s[0].0.as_str(), s[0].1.as_str()), (BERNARD, NO_SRV));
}

#[test]
fn originator_missing() {
    let w = World::start();
    let r = Post::invitation(&[CAROL])
        .without("Originator")
        .send(w.port());
    assert_error(
        &r,
        400,
        "originator-missing",
        &["the request has no Originator header"],
    );
}

#[test]
fn too_many_originators() {
    let w = World::start();
    let r = Post::invitation(&[CAROL])
        .add("Originator", MALLORY)
        .send(w.port());
    assert_error(
        &r,
        400,
        "too-many-originators",
        &["2 Originator headers", "exactly one is allowed"],
    );
    let r = Post::invitation(&[CAROL])
        .set("Originator", &format!("{BERNARD}, {MALLORY}"))
        .send(w.port());
    assert_error(
        &r,
        400,
        "too-many-originators",
        &[
            &format!("'{BERNARD}, {MALLORY}' lists 2 addresses"),
            "exactly one is allowed",
        ],
    );
}

#[test]
fn originator_invalid() {
    let w = World::start();
    let r = Post::invitation(&[CAROL])
        .set("Originator", "bernard@example.com")
        .send(w.port());
    assert_error(
        &r,
        400,
        "originator-invalid",
        &[
            "Originator 'bernard@example.com' is not a valid calendar user address",
            "no scheme",
        ],
    );
}

#[test]
fn originator_denied_for_an_unauthenticated_remote_sender() {
    let w = World::start_with(&remote_senders());
    let port = w.port();

    // (a) Relaying to a domain that is not local.
    let relay = Post::invitation(&[CAROL]);
    let r = relay.send(port);
    assert_error(
        &r,
        403,
        "originator-denied",
        &[
            "relays only to its local domains (example.org)",
            &format!("{CAROL} is not one of them"),
        ],
    );

    // (b) Claiming to be a user of a local domain.
    let body = calendar(Some("REQUEST"), "VEVENT", &event_props(ALICE, &[BOB], &[]));
    let r = Post::new("VEVENT", "REQUEST", ALICE, &[BOB], &body).send(port);
    assert_error(
        &r,
        403,
        "originator-denied",
        &[&format!("{ALICE} is a user of a local domain")],
    );

    // A wrong secret authenticates nobody.
    let r = relay
        .clone()
        .set("X-Bridge-Secret", "post-errors-secret-0123456780")
        .send(port);
    assert_error(&r, 403, "originator-denied", &[CAROL]);

    // The shared secret makes the same request a local sender's: it passes.
    assert_accepted(
        &relay.clone().set("X-Bridge-Secret", SECRET),
        port,
        &[CAROL],
    );

    // A remote sender reaches the local domains only with a DKIM signature
    // of its domain (dkim.verify defaults to require; tests/dkim.rs signs)...
    let body = invitation(&[ALICE, BOB], &[]);
    let inbound = Post::new("VEVENT", "REQUEST", BERNARD, &[ALICE, BOB], &body);
    assert_error(
        &inbound.send(port),
        403,
        "verification-failed",
        &["no DKIM-Signature header"],
    );
    // ...or unsigned where the admin turned verification off.
    let open = World::start_with(&format!("{}[dkim]\nverify = \"off\"\n", remote_senders()));
    // What the bridge found out on its side is not a remote sender's to
    // read (issue 9): the answer carries the generic description.
    let r = inbound.send(open.port());
    let generic = "no scheduling support for this user".to_string();
    assert_eq!(
        statuses(&r),
        [ALICE, BOB].map(|a| (a.to_string(), NO_SRV.to_string(), generic.clone())),
        "{}",
        r.text()
    );
}

#[test]
fn recipient_missing() {
    let w = World::start();
    let r = Post::invitation(&[CAROL])
        .without("Recipient")
        .send(w.port());
    assert_error(
        &r,
        400,
        "recipient-missing",
        &["the request has no Recipient header naming a calendar user address"],
    );
    for empty in ["", " , ,"] {
        let r = Post::invitation(&[CAROL])
            .set("Recipient", empty)
            .send(w.port());
        assert_error(
            &r,
            400,
            "recipient-missing",
            &["no Recipient header naming a calendar user address"],
        );
    }
    let r = Post::invitation(&[CAROL])
        .set("Recipient", &format!("{CAROL}, mailto:nobody"))
        .send(w.port());
    assert_error(
        &r,
        400,
        "recipient-missing",
        &[
            "Recipient 'mailto:nobody' is not a valid calendar user address",
            "without local-part@domain",
        ],
    );
}

#[test]
fn recipient_mismatch_for_vfreebusy() {
    let w = World::start();
    let port = w.port();
    let body = freebusy(&[CAROL, DAVE]);
    let fb = |recipients: &[&str]| Post::new("VFREEBUSY", "REQUEST", BERNARD, recipients, &body);

    let r = fb(&[CAROL]).send(port);
    assert_error(
        &r,
        400,
        "recipient-mismatch",
        &[
            "must match its ATTENDEEs one-for-one",
            &format!("ATTENDEEs that are not Recipients: {DAVE}"),
        ],
    );
    let r = fb(&[CAROL, DAVE, ERIN]).send(port);
    assert_error(
        &r,
        400,
        "recipient-mismatch",
        &[&format!("Recipients that are not ATTENDEEs: {ERIN}")],
    );
    // One-for-one, in any order, is scheduled.
    assert_accepted(&fb(&[DAVE, CAROL]), port, &[DAVE, CAROL]);
}

#[test]
fn max_recipients() {
    let w = World::start();
    let to = [CAROL, DAVE, ERIN, FRANK];
    let r = Post::invitation(&to).send(w.port());
    assert_error(
        &r,
        400,
        "max-recipients",
        &["4 recipients, at most 3 are accepted per request"],
    );
    // Spread over several Recipient headers counts the same.
    let r = Post::invitation(&to)
        .set("Recipient", &format!("{CAROL}, {DAVE}"))
        .add("Recipient", ERIN)
        .add("Recipient", FRANK)
        .send(w.port());
    assert_error(&r, 400, "max-recipients", &["4 recipients", "at most 3"]);
}

#[test]
fn attachment_type_not_supported() {
    let w = World::start();
    let body = invitation(
        &[CAROL],
        &["ATTACH;FMTTYPE=text/plain;VALUE=BINARY;ENCODING=BASE64:SGVsbG8sIHdvcmxkIQ=="],
    );
    let r = Post::invitation(&[CAROL]).body(body).send(w.port());
    assert_error(
        &r,
        400,
        "attachment-type-not-supported",
        &["inline attachment", "does not accept"],
    );
    // An external (URI) attachment is advertised and accepted.
    let body = invitation(
        &[CAROL],
        &["ATTACH;FMTTYPE=application/pdf:https://example.com/agenda.pdf"],
    );
    assert_accepted(&Post::invitation(&[CAROL]).body(body), w.port(), &[CAROL]);
}

/// A valid invitation to Carol of exactly `len` bytes (padded DESCRIPTION).
fn invitation_of_len(len: usize) -> String {
    let base = invitation(&[CAROL], &["DESCRIPTION:"]);
    let body = invitation(
        &[CAROL],
        &[&format!("DESCRIPTION:{}", "x".repeat(len - base.len()))],
    );
    assert_eq!(body.len(), len);
    body
}

#[test]
fn max_content_length_with_content_length() {
    let w = World::start();
    let port = w.port();
    // Exactly at the limit is fine; one byte more is not.
    assert_accepted(
        &Post::invitation(&[CAROL]).body(invitation_of_len(4096)),
        port,
        &[CAROL],
    );
    let r = Post::invitation(&[CAROL])
        .body(invitation_of_len(4097))
        .send(port);
    assert_error(
        &r,
        400,
        "max-content-length",
        &["the calendar data is 4097 bytes; at most 4096 are accepted"],
    );

    // The declared length alone is refused: the answer comes although not
    // one byte of the (announced) megabyte is sent.
    let head = Post::invitation(&[CAROL]).head(port);
    let started = Instant::now();
    let raw = http_raw(
        port,
        format!("{head}Content-Length: 1000000\r\n\r\n").as_bytes(),
    )
    .expect("an answer before the body");
    let took = started.elapsed();
    let r = parse(&raw);
    assert_error(
        &r,
        400,
        "max-content-length",
        &["1000000 bytes", "at most 4096"],
    );
    assert!(
        took < Duration::from_secs(5),
        "refused before reading, not after the request timeout: {took:?}"
    );
}

#[test]
fn max_content_length_with_chunked_encoding() {
    let w = World::start();
    let port = w.port();
    let head = Post::invitation(&[CAROL]).head(port);
    let chunk = format!("{:x}\r\n{}\r\n", 1000, "x".repeat(1000));

    // A complete chunked body over the limit.
    let raw = format!(
        "{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(6)
    );
    let r = parse(&http_raw(port, raw.as_bytes()).expect("an answer"));
    assert_error(
        &r,
        400,
        "max-content-length",
        &["more than 4096 bytes", "at most 4096"],
    );

    // A chunked body that never ends: the bridge must stop at the limit and
    // answer, not wait for the rest (it would then time out after 10 s).
    let raw = format!(
        "{head}Transfer-Encoding: chunked\r\n\r\n{}",
        chunk.repeat(5)
    );
    let started = Instant::now();
    let r = parse(&http_raw(port, raw.as_bytes()).expect("an answer"));
    let took = started.elapsed();
    assert_error(&r, 400, "max-content-length", &["more than 4096 bytes"]);
    assert!(
        took < Duration::from_secs(5),
        "must stop reading at the limit: {took:?}"
    );

    // A chunked body within the limit is read and scheduled.
    let body = invitation(&[CAROL], &[]);
    let (a, b) = body.split_at(body.len() / 2);
    let raw = format!(
        "{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let r = parse(&http_raw(port, raw.as_bytes()).expect("an answer"));
    assert_no_srv_for_each(&r, &[CAROL]);
}

#[test]
fn min_date_time() {
    let w = World::start();
    let mut props = event_props(BERNARD, &[CAROL], &[]);
    for p in props.iter_mut() {
        if p.starts_with("DTSTART") {
            *p = "DTSTART:19991231T100000Z".into();
        } else if p.starts_with("DTEND") {
            *p = "DTEND:19991231T110000Z".into();
        }
    }
    let body = calendar(Some("REQUEST"), "VEVENT", &props);
    let r = Post::invitation(&[CAROL]).body(body).send(w.port());
    assert_error(
        &r,
        400,
        "min-date-time",
        &[
            "19991231T100000Z",
            "before",
            "min-date-time 20000101T000000Z",
        ],
    );
}

#[test]
fn max_date_time() {
    let w = World::start();
    let mut props = event_props(BERNARD, &[CAROL], &[]);
    for p in props.iter_mut() {
        if p.starts_with("DTSTART") {
            *p = "DTSTART:21000101T100000Z".into();
        } else if p.starts_with("DTEND") {
            *p = "DTEND:21000101T110000Z".into();
        }
    }
    let body = calendar(Some("REQUEST"), "VEVENT", &props);
    let r = Post::invitation(&[CAROL]).body(body).send(w.port());
    assert_error(
        &r,
        400,
        "max-date-time",
        &[
            "21000101T110000Z",
            "after",
            "max-date-time 20991231T000000Z",
        ],
    );
}

#[test]
fn max_instances() {
    let w = World::start();
    let body = invitation(&[CAROL], &["RRULE:FREQ=DAILY;COUNT=11"]);
    let r = Post::invitation(&[CAROL]).body(body).send(w.port());
    assert_error(
        &r,
        400,
        "max-instances",
        &["11 instances", "max-instances of 10"],
    );
}

/// Parses an answer read with `http_raw`: status line, headers and a
/// Content-Length body (all the bridge writes).
fn parse(raw: &[u8]) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of header in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut r = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = r
        .header("Content-Length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let rest = &raw[end + 4..];
    assert!(rest.len() >= len, "truncated body in {head:?}");
    r.body = rest[..len].to_vec();
    r
}

/// An identical retry may be answered from the idempotency record, but a
/// different message that reuses the `iSchedule-Message-ID` must get an
/// answer about its own recipients (clause 8.2: one response per recipient),
/// or be refused, never the earlier message's answer.
///
/// The idempotency key (src/scheduling/idempotency.rs) includes a digest of
/// the body, so the two are told apart; before it did, the second message
/// was dropped and answered with the first one's responses.
#[test]
fn a_reused_message_id_is_never_answered_with_another_messages_responses() {
    let w = World::start();
    let port = w.port();
    let first = Post::invitation(&[CAROL]).set("iSchedule-Message-ID", "reused-id-1");
    assert_accepted(&first, port, &[CAROL]);
    // A true retry: same answer.
    assert_accepted(&first, port, &[CAROL]);

    let body = invitation(&[DAVE, ERIN], &[]);
    let other = Post::new("VEVENT", "REQUEST", BERNARD, &[DAVE, ERIN], &body)
        .set("iSchedule-Message-ID", "reused-id-1");
    let r = other.send(port);
    if r.status == 200 {
        assert_no_srv_for_each(&r, &[DAVE, ERIN]);
    } else {
        assert_error(&r, 400, "invalid-scheduling-message", &["reused-id-1"]);
    }
}

#[test]
fn capabilities_reflect_the_limits_and_support_conditional_get() {
    let w = World::start();
    let port = w.port();
    let caps = format!("{WELL_KNOWN}?action=capabilities");
    let r = http(port, "GET", &caps, &[], b"");
    let text = r.text();
    assert_eq!(r.status, 200, "{text}");
    assert_ischedule_headers(&r);
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("application/xml")),
        "{r:?}"
    );
    assert!(
        text.contains(&format!("<query-result xmlns=\"{NAMESPACE}\">")),
        "{text}"
    );
    for expected in [
        "<version>1.0</version>",
        "<max-content-length>4096</max-content-length>",
        "<min-date-time>20000101T000000Z</min-date-time>",
        "<max-date-time>20991231T000000Z</max-date-time>",
        "<max-instances>10</max-instances>",
        "<max-recipients>3</max-recipients>",
        "<attachments><external/></attachments>",
        "<component name=\"VFREEBUSY\"><method name=\"REQUEST\"/></component>",
    ] {
        assert!(text.contains(expected), "{expected} missing in {text}");
    }
    // The serial number is what every response announces.
    let serial = element_text(&text, "serial-number").expect("serial-number");
    assert_eq!(r.header("iSchedule-Capabilities"), Some(serial.as_str()));
    let error = Post::invitation(&[CAROL]).without("Originator").send(port);
    assert_eq!(
        error.header("iSchedule-Capabilities"),
        Some(serial.as_str())
    );

    let etag = r.header("ETag").expect("an ETag").to_string();
    let again = http(port, "GET", &caps, &[("If-None-Match", &etag)], b"");
    assert_eq!(again.status, 304, "{}", again.text());
    assert!(again.body.is_empty());
    assert_eq!(again.header("ETag"), Some(etag.as_str()));
    assert_ischedule_headers(&again);
    let other = http(port, "GET", &caps, &[("If-None-Match", "\"other\"")], b"");
    assert_eq!(other.status, 200);
    assert_eq!(other.text(), text);
}

#[test]
fn options_put_and_get_without_action() {
    let w = World::start();
    let port = w.port();

    let r = http(port, "OPTIONS", WELL_KNOWN, &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ischedule_headers(&r);
    let allow = r.header("Allow").unwrap_or_default();
    assert!(
        allow.contains("POST") && allow.contains("GET"),
        "Allow: {allow}"
    );
    let r = http(port, "OPTIONS", "*", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("iSchedule-Version"), Some("1.0"));

    let r = http(port, "PUT", WELL_KNOWN, &[], b"BEGIN:VCALENDAR\r\n");
    assert_eq!(r.status, 405, "{}", r.text());
    assert_ischedule_headers(&r);
    let allow = r.header("Allow").unwrap_or_default();
    for method in ["GET", "POST", "OPTIONS"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    assert!(!allow.contains("PUT"), "Allow: {allow}");

    for path in [WELL_KNOWN, "/.well-known/ischedule?action=other"] {
        let r = http(port, "GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_ischedule_headers(&r);
        assert!(r.text().contains("action=capabilities"), "{}", r.text());
    }
}
