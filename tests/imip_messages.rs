//! iMIP messages as independent software reads them: for every iTIP method
//! and both scheduling components the bridge writes a message, the shared
//! validator (`shared/peers/validate-imip.py`: Python's email package,
//! icalendar and vobject) accepts it, and Python's own MIME decoding gives
//! back the calendar object byte for byte, from the text/calendar part and
//! from the attachment.
//!
//! Python 3 with icalendar and vobject is required (scripts/test installs
//! them): without it these tests fail, they never skip.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ischedule_bridge::imip::builder::{build, message_id_for, Outgoing, RequestParts};
use ischedule_bridge::imip::summary::Summary;
use ischedule_bridge::itip::{ComponentKind, Method};
use support::{ical_day, shared_dir};

const BRIDGE: &str = "calendar-bridge@bridge.example";
const ORGANIZER: &str = "alice@example.com";
const ATTENDEE: &str = "bob@example.org";
/// Non-ASCII, so that the Subject needs RFC 2047 and the object UTF-8.
const TITLE: &str = "Caf\u{e9} \u{2615} planning";

/// Decodes every message given: writes the decoded payload of its
/// text/calendar and application/ics parts next to it (`.text-calendar`,
/// `.application-ics`) and prints its decoded Subject.
const DECODE: &str = r#"
import sys, email, email.policy
for path in sys.argv[1:]:
    msg = email.message_from_binary_file(open(path, 'rb'), policy=email.policy.default)
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ('text/calendar', 'application/ics'):
            open(path + '.' + kind.replace('/', '-'), 'wb').write(part.get_payload(decode=True))
    print(path, msg['subject'], sep='\t')
"#;

/// One message of the matrix: what was sent and where it was written.
struct Written {
    method: Method,
    kind: ComponentKind,
    calendar: String,
    file: PathBuf,
}

/// Who sends a method to whom (RFC 5546 tables 1 and 2): attendees answer
/// the organizer, the organizer writes to attendees.
fn from_attendee(method: Method) -> bool {
    matches!(method, Method::Reply | Method::Refresh | Method::Counter)
}

/// A valid iTIP object for `method` (RFC 5546 section 3) with dates in the
/// future, a folded UTF-8 line and escaped text; CRLF line endings for
/// VEVENT, bare LF (as some producers write) for VTODO, which a transfer
/// encoding that rewrites line endings would not survive.
fn object(method: Method, kind: ComponentKind) -> String {
    let (start, end) = (ical_day(30), ical_day(31));
    let end_property = match kind {
        ComponentKind::VTodo => "DUE",
        _ => "DTEND",
    };
    let attendees = if from_attendee(method) {
        // One attendee, answering (REFRESH and COUNTER carry the status too).
        format!("ATTENDEE;CN=Bob Builder;PARTSTAT=ACCEPTED:mailto:{ATTENDEE}\r\n")
    } else {
        format!(
            "ATTENDEE;CN=Bob Builder;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{ATTENDEE}\r\n\
             ATTENDEE;CN=\"Doe, Carol\";PARTSTAT=TENTATIVE:mailto:carol@example.net\r\n"
        )
    };
    let status = match method {
        Method::Cancel => "STATUS:CANCELLED\r\n",
        _ => "",
    };
    let crlf = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ischedule-bridge//imip test//EN\r\n\
         METHOD:{method}\r\nBEGIN:{kind}\r\nUID:imip-{method}-{kind}@example.com\r\n\
         DTSTAMP:20260101T090000Z\r\nSEQUENCE:0\r\n\
         DTSTART;TZID=Europe/Berlin:{start}T130000\r\n{end_property};TZID=Europe/Berlin:{end}T140000\r\n\
         SUMMARY:{TITLE}\r\nLOCATION:Room 4\\, 2nd floor\r\n\
         DESCRIPTION:Agenda:\\n1. Budget \u{2013} a line long enough that it has to b\r\n e folded\r\n\
         ORGANIZER;CN=Alice Example:mailto:{ORGANIZER}\r\n{attendees}{status}\
         END:{kind}\r\nEND:VCALENDAR\r\n"
    );
    match kind {
        ComponentKind::VTodo => crlf.replace("\r\n", "\n"),
        _ => crlf,
    }
}

/// Builds the message for `method` and `kind` and writes it into `dir`.
fn write_message(dir: &Path, method: Method, kind: ComponentKind) -> Written {
    let calendar = object(method, kind);
    let (from_name, to) = if from_attendee(method) {
        ("Bob Builder", ORGANIZER)
    } else {
        ("Alice Example", ATTENDEE)
    };
    let post_id = format!("post-{method}-{kind}");
    let message_id = message_id_for(
        &format!("mailto:{ORGANIZER}"),
        &post_id,
        &format!("mailto:{to}"),
        "bridge.example",
    );
    let out = Outgoing {
        from_address: BRIDGE,
        from_name: Some(from_name),
        to,
        reply_to: None,
        message_id: &message_id,
        method,
        component: kind,
        calendar: &calendar,
    };
    let summary = Summary::read(out.calendar, out.method, out.component);
    let parts = RequestParts::new(&summary, out.method, out.calendar);
    let mail = build(&out, &parts).unwrap_or_else(|e| panic!("{method} {kind}: {e}"));
    let file = dir.join(format!("{method}-{kind}.eml"));
    fs::write(&file, mail).expect("write the message");
    Written {
        method,
        kind,
        calendar,
        file,
    }
}

fn write_all(dir: &Path) -> Vec<Written> {
    Method::ALL
        .into_iter()
        .flat_map(|m| [ComponentKind::VEvent, ComponentKind::VTodo].map(|k| (m, k)))
        .map(|(method, kind)| write_message(dir, method, kind))
        .collect()
}

/// Runs python3 and insists that it worked.
fn python(args: &[&str], files: &[Written]) -> String {
    let output: Output = Command::new("python3")
        .args(args)
        .args(files.iter().map(|w| &w.file))
        .output()
        .expect("python3 is required for the iMIP tests (scripts/test installs its packages)");
    assert!(
        output.status.success(),
        "python3 {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("python3 prints UTF-8")
}

#[test]
fn every_method_and_component_passes_the_independent_validator() {
    let script = shared_dir().join("peers/validate-imip.py");
    assert!(script.is_file(), "{} is missing", script.display());
    let dir = tempfile::tempdir().expect("temp dir");
    let written = write_all(dir.path());
    assert_eq!(written.len(), 16);
    let report = python(&[script.to_str().expect("UTF-8 path")], &written);
    for w in &written {
        let line = report
            .lines()
            .find(|l| l.contains(&format!("{}:", w.file.display())))
            .unwrap_or_else(|| panic!("no verdict for {}:\n{report}", w.file.display()));
        assert!(line.starts_with("OK "), "{line}");
        assert!(line.contains(&format!("method={}", w.method)), "{line}");
        assert!(
            line.contains(
                "structure=['multipart/mixed', 'multipart/alternative', 'text/plain', \
                           'text/html', 'text/calendar', 'application/ics']"
            ),
            "{line}"
        );
        let uid = format!("uid=imip-{}-{}@example.com", w.method, w.kind);
        assert!(line.contains(&uid), "{line}");
    }
}

#[test]
fn python_decodes_both_calendar_parts_to_the_exact_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let written = write_all(dir.path());
    let subjects = python(&["-c", DECODE], &written);
    for w in &written {
        for suffix in ["text-calendar", "application-ics"] {
            let decoded = fs::read(format!("{}.{suffix}", w.file.display()))
                .unwrap_or_else(|e| panic!("{} has no {suffix} part: {e}", w.file.display()));
            assert!(
                decoded == w.calendar.as_bytes(),
                "{} {suffix} differs from the object:\n{:?}\n---\n{:?}",
                w.file.display(),
                String::from_utf8_lossy(&decoded),
                w.calendar
            );
        }
        let prefix = match w.method {
            Method::Publish => "Published",
            Method::Request => "Invitation",
            Method::Reply => "Accepted",
            Method::Add => "Added occurrences",
            Method::Cancel => "Cancelled",
            Method::Refresh => "Update request",
            Method::Counter => "Counter proposal",
            Method::DeclineCounter => "Counter proposal declined",
        };
        let expected = format!("{}\t{prefix}: {TITLE}", w.file.display());
        assert!(
            subjects.lines().any(|l| l == expected),
            "{expected:?} not in\n{subjects}"
        );
    }
}

#[test]
fn message_ids_differ_per_message_and_repeat_per_retry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = |written: &[Written]| -> Vec<String> {
        written
            .iter()
            .map(|w| {
                let mail = fs::read_to_string(&w.file).expect("read the message");
                let line = mail.lines().find(|l| l.starts_with("Message-ID: "));
                line.expect("a Message-ID header").to_string()
            })
            .collect()
    };
    let first = ids(&write_all(dir.path()));
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), first.len());
    assert_eq!(ids(&write_all(dir.path())), first);
}
