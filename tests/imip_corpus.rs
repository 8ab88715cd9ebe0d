//! The inbound iMIP parser against real mail: every message listed in
//! `shared/corpus/imip/MANIFEST.tsv` (Outlook, Google, Apple, Thunderbird,
//! Yahoo, Teams, Cyrus, DSN bounces) is parsed, and a table says what the
//! bridge makes of it: the iTIP method, or the bounce, or the rejection; for
//! iTIP, whether `ItipMessage::parse` accepts the object and who would be
//! the iSchedule Originator and Recipients.
//!
//! The table is printed (`cargo test --test imip_corpus -- --nocapture`)
//! and written as TSV to `$CARGO_TARGET_TMPDIR/imip-corpus.tsv`.
//!
//! The corpus is read from the shared checkout (`$ISCHEDULE_SHARED`, else
//! `../shared` next to the crate), never copied into the project; without
//! it the test fails.

use std::fmt::Write as _;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ischedule_bridge::imip::inbound::{parse, Bounce, Itip, Parsed};
use ischedule_bridge::itip::edit::insert_organizer;
use ischedule_bridge::itip::Fault;
use ischedule_bridge::itip::{ItipMessage, Method, Role};
use ischedule_bridge::smtp::EnhancedStatus;

/// What a REPLY without ORGANIZER is completed with before it is checked
/// (the bridge itself uses the reply token or the envelope recipient).
const PLACEHOLDER_ORGANIZER: &str = "mailto:organizer@unknown.invalid";

/// Producers whose REPLYs the bridge must translate.
const REPLY_PRODUCERS: [&str; 4] = [
    "Outlook/Exchange",
    "Google Calendar",
    "Apple iCal",
    "Thunderbird",
];

fn corpus_dir() -> PathBuf {
    let shared = std::env::var_os("ISCHEDULE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let dir = shared.join("corpus/imip");
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "no {}: check out shared/ next to the repo or set ISCHEDULE_SHARED",
        dir.join("MANIFEST.tsv").display()
    );
    dir
}

/// One MANIFEST.tsv line.
struct Entry {
    file: String,
    software: String,
    /// `REQUEST`, `REPLY`, ... or `none`.
    method: String,
    notes: String,
}

impl Entry {
    fn is_dsn(&self) -> bool {
        self.notes.contains("DSN bounce")
    }
}

fn manifest(dir: &Path) -> Vec<Entry> {
    let text = fs::read_to_string(dir.join("MANIFEST.tsv")).expect("read MANIFEST.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("MANIFEST.tsv header")
        .split('\t')
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("MANIFEST.tsv has no {name} column"))
    };
    let (file, software, method, notes) = (
        column("local_path"),
        column("sender_software"),
        column("itip_method"),
        column("notes"),
    );
    let entries: Vec<Entry> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            let cell = |i: usize| cells.get(i).copied().unwrap_or_default().to_string();
            Entry {
                file: cell(file),
                software: cell(software),
                method: cell(method),
                notes: cell(notes),
            }
        })
        .collect();
    assert!(!entries.is_empty(), "MANIFEST.tsv lists no messages");
    entries
}

/// What the bridge makes of one message.
enum Outcome {
    Itip(Itip),
    Bounce(Bounce),
    Rejected(String),
}

/// One row of the table.
struct Row {
    file: String,
    software: String,
    outcome: Outcome,
    /// For iTIP: `ok`, `ok after insert_organizer`, or why the object is
    /// not a usable iTIP message.
    check: String,
    originator: Option<String>,
    recipients: String,
    /// The checked object, when `ItipMessage::parse` accepted it.
    message: Option<ItipMessage>,
}

impl Row {
    fn outcome_text(&self) -> String {
        match &self.outcome {
            Outcome::Itip(itip) => match itip.method {
                Some(method) => format!("itip {method}"),
                None => "itip (METHOD not an iTIP method)".to_string(),
            },
            Outcome::Bounce(b) => format!(
                "bounce ({}, {} recipient{}, {})",
                b.status.map_or("no status".to_string(), |s| s.to_string()),
                b.recipients.len(),
                if b.recipients.len() == 1 { "" } else { "s" },
                b.original_message_id
                    .as_deref()
                    .map_or("no original".to_string(), |id| format!("original {id}")),
            ),
            Outcome::Rejected(reason) => format!("rejected: {reason}"),
        }
    }
}

fn row(entry: &Entry, raw: &[u8]) -> Row {
    let mut row = Row {
        file: entry.file.clone(),
        software: entry.software.clone(),
        outcome: Outcome::Rejected(String::new()),
        check: "-".to_string(),
        originator: None,
        recipients: "-".to_string(),
        message: None,
    };
    let itip = match parse(raw) {
        Ok(Parsed::Itip(itip)) => itip,
        Ok(Parsed::Bounce(bounce)) => {
            row.outcome = Outcome::Bounce(bounce);
            return row;
        }
        Err(e) => {
            row.outcome = Outcome::Rejected(e.to_string());
            return row;
        }
    };
    let checked = match ItipMessage::parse(&itip.calendar) {
        Ok(message) => Ok((message, "ok")),
        Err(e)
            if itip.method == Some(Method::Reply)
                && e.kind == Fault::InvalidSchedulingMessage
                && e.description.contains("has no ORGANIZER") =>
        {
            let completed = insert_organizer(&itip.calendar, PLACEHOLDER_ORGANIZER);
            ItipMessage::parse(&completed).map(|m| (m, "ok after insert_organizer"))
        }
        Err(e) => Err(e),
    };
    match checked {
        Ok((message, check)) => {
            row.check = check.to_string();
            let (originator, recipients) = parties(&message);
            row.originator = originator;
            row.recipients = recipients;
            row.message = Some(message);
        }
        Err(e) => row.check = format!("not iTIP: {}", e.description),
    }
    row.outcome = Outcome::Itip(itip);
    row
}

/// iSchedule Originator and Recipients of a checked message (spec tables 1
/// and 2): the ATTENDEE and the ORGANIZER for REPLY/COUNTER/REFRESH (an
/// attendee's message needs exactly one ATTENDEE to say who sent it), the
/// ORGANIZER and the ATTENDEEs otherwise.
fn parties(message: &ItipMessage) -> (Option<String>, String) {
    let organizer = message.organizer.as_ref().map(|o| o.as_str().to_string());
    match message.method.originator_role() {
        Role::Attendee => {
            let originator = match message.attendees.as_slice() {
                [one] => Some(one.as_str().to_string()),
                _ => None,
            };
            (originator, organizer.unwrap_or_else(|| "-".to_string()))
        }
        Role::Organizer => {
            let recipients = match message.attendees.as_slice() {
                [] => "(no ATTENDEE)".to_string(),
                [one] => one.as_str().to_string(),
                many => format!("{} attendees", many.len()),
            };
            (organizer, recipients)
        }
    }
}

const COLUMNS: [&str; 6] = [
    "file",
    "sender software",
    "outcome",
    "itip check",
    "originator",
    "recipients",
];

fn cells(row: &Row) -> [String; 6] {
    [
        row.file.clone(),
        row.software.clone(),
        row.outcome_text(),
        row.check.clone(),
        row.originator.clone().unwrap_or_else(|| "-".to_string()),
        row.recipients.clone(),
    ]
}

fn aligned(rows: &[[String; 6]]) -> String {
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for cells in rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&COLUMNS.map(str::to_string));
    line(&widths.map(|w| "-".repeat(w)));
    for cells in rows {
        line(cells);
    }
    out
}

fn tsv(rows: &[[String; 6]]) -> String {
    let clean = |cell: &str| cell.replace(['\t', '\n', '\r'], " ");
    let mut out = COLUMNS.join("\t") + "\n";
    for cells in rows {
        out += &cells
            .iter()
            .map(|c| clean(c))
            .collect::<Vec<_>>()
            .join("\t");
        out.push('\n');
    }
    out
}

#[test]
fn corpus_table() {
    let dir = corpus_dir();
    let entries = manifest(&dir);

    let mut rows = Vec::new();
    let mut panicked = Vec::new();
    for entry in &entries {
        let path = dir.join(&entry.file);
        let raw = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| row(entry, &raw))) {
            Ok(row) => rows.push((entry, row)),
            Err(_) => panicked.push(entry.file.clone()),
        }
    }

    let table: Vec<[String; 6]> = rows.iter().map(|(_, row)| cells(row)).collect();
    print!("{}", aligned(&table));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("imip-corpus.tsv");
    fs::write(&out, tsv(&table)).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    println!(
        "\n{} messages; table written to {}",
        entries.len(),
        out.display()
    );

    assert!(panicked.is_empty(), "parsing panicked on {panicked:?}");

    let mut failures = Vec::new();
    for (entry, row) in &rows {
        let described = || format!("{}: {}, {}", row.file, row.outcome_text(), row.check);
        if entry.is_dsn() {
            if !matches!(row.outcome, Outcome::Bounce(_)) {
                failures.push(format!("{} (a DSN) is not a bounce", described()));
            }
            continue;
        }
        if entry.method != "none" {
            let expected = Method::parse(&entry.method);
            match &row.outcome {
                Outcome::Itip(itip) if itip.method == expected => {}
                _ => failures.push(format!(
                    "{} should be itip {} (manifest)",
                    described(),
                    entry.method
                )),
            }
        }
        if entry.method == "REPLY" && REPLY_PRODUCERS.contains(&entry.software.as_str()) {
            let translates = row.message.as_ref().is_some_and(|m| {
                row.originator
                    .as_deref()
                    .is_some_and(|o| m.attendees.iter().any(|a| a.as_str() == o))
            });
            if !translates {
                failures.push(format!(
                    "{}: a {} REPLY must translate with its attendee as originator",
                    described(),
                    entry.software
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The two DSNs from Apple's calendar server, in detail.
#[test]
fn ccs_bounces_name_the_failed_recipient_and_the_original() {
    let dir = corpus_dir();
    let read = |file: &str| {
        let raw = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
        match parse(&raw) {
            Ok(Parsed::Bounce(bounce)) => bounce,
            other => panic!("{file}: {other:?}"),
        }
    };

    let bare = read("ccs/dsn_failure_no_original");
    assert_eq!(bare.recipients, ["nonexistant@example.com"]);
    assert_eq!(bare.status, Some(EnhancedStatus::new(5, 0, 0)));
    let diagnostic = bare.diagnostic.as_deref().unwrap_or_default();
    assert!(
        diagnostic.starts_with("host elderberry.example.com[17.128.115.181] said: 550 5.1.1"),
        "{diagnostic}"
    );
    assert_eq!(bare.original_message_id, None);
    assert_eq!(bare.original_calendar, None);

    let quoting = read("ccs/dsn_failure_with_ics");
    assert_eq!(quoting.recipients, ["nonexistant@example.com"]);
    assert_eq!(
        quoting.original_message_id.as_deref(),
        Some("20080812191939.51369.1538816694.0@plugh.example.com")
    );
    let original = quoting.original_calendar.expect("the quoted invitation");
    let message = ItipMessage::parse(&original).expect("the quoted invitation is iTIP");
    assert_eq!(message.method, Method::Request);
    assert_eq!(message.uid, "1E71F9C8-AEDA-48EB-98D0-76E898F6BB5C");
}
