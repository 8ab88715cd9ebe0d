//! Mutated POSTs never crash the bridge and always get a well-formed answer.
//!
//! One bridge, one dnsmasq authoritative for every domain the seeds use (a
//! mutated domain outside them is REFUSED at once, so nothing leaves the
//! host), and a deterministic xorshift64* generator. Thousands of requests
//! are derived from valid seeds by mutating headers, the Content-Type
//! parameters, the body and the framing, then a few hundred raw garbage
//! requests follow. Every answer must be a complete HTTP response without a
//! 5xx; the bridge's own answers must be iSchedule XML documents, and a 200
//! must hold one `<response>` per distinct recipient. At the end the bridge
//! must still run, answer a capabilities GET and have logged no panic.
//!
//! `imip.mode` keeps its default (native-then-imip, mail written to the
//! bridge's outbox folder), so mutated messages that are still valid also
//! go through the iMIP composer, the queue and the idempotency store.

mod support;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::{free_port, http, ical_day, Bridge, Dns, Zone};

const WELL_KNOWN: &str = "/.well-known/ischedule";
const SECRET: &str = "fuzz-post-secret-0123456789";
/// How many mutated POSTs are sent (plus the unmutated seeds once each).
const MUTATED_POSTS: usize = 6_000;
const GARBAGE_REQUESTS: usize = 300;

/// xorshift64*: deterministic randomness without a crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

// ---------------------------------------------------------------- seeds

const BERNARD: &str = "mailto:bernard@example.com";
const CAROL: &str = "mailto:carol@nosrv.test";
const DAVE: &str = "mailto:dave@down.test";
const ERIN: &str = "mailto:erin@nosrv.test";
const ALICE: &str = "mailto:alice@example.org";
const BOB: &str = "mailto:bob@example.org";

/// A valid request: headers in order, and the body.
#[derive(Clone)]
struct Seed {
    name: &'static str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

fn crlf(lines: &[String]) -> Vec<u8> {
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text.into_bytes()
}

fn calendar(method: &str, inner: Vec<String>) -> Vec<String> {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//ischedule-bridge//fuzz_post//EN".into(),
        format!("METHOD:{method}"),
    ];
    lines.extend(inner);
    lines.push("END:VCALENDAR".into());
    lines
}

fn component(
    name: &str,
    uid: &str,
    organizer: &str,
    attendees: &[&str],
    extra: &[String],
) -> Vec<String> {
    let day = ical_day(12);
    let mut lines = vec![
        format!("BEGIN:{name}"),
        format!("UID:{uid}"),
        format!("DTSTAMP:{}T090000Z", ical_day(0)),
        format!("DTSTART:{day}T100000Z"),
    ];
    lines.push(match name {
        "VTODO" => format!("DUE:{day}T180000Z"),
        _ => format!("DTEND:{day}T110000Z"),
    });
    if name != "VFREEBUSY" {
        lines.push("SUMMARY:Fuzzing review".into());
    }
    lines.push(format!("ORGANIZER:{organizer}"));
    lines.extend(
        attendees
            .iter()
            .map(|a| format!("ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{a}")),
    );
    lines.extend(extra.iter().cloned());
    lines.push(format!("END:{name}"));
    lines
}

fn seed(
    name: &'static str,
    (component, method): (&str, &str),
    originator: &str,
    recipients: &[&[&str]],
    secret: bool,
    body: Vec<u8>,
) -> Seed {
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"iSchedule-Version".to_vec(), b"1.0".to_vec()),
        (
            b"iSchedule-Message-ID".to_vec(),
            format!("fuzz-{name}").into_bytes(),
        ),
        (b"Originator".to_vec(), originator.as_bytes().to_vec()),
    ];
    for group in recipients {
        headers.push((b"Recipient".to_vec(), group.join(", ").into_bytes()));
    }
    headers.push((
        b"Cache-Control".to_vec(),
        b"no-cache, no-transform".to_vec(),
    ));
    headers.push((
        b"Content-Type".to_vec(),
        format!("text/calendar; component={component}; method={method}").into_bytes(),
    ));
    if secret {
        headers.push((b"X-Bridge-Secret".to_vec(), SECRET.as_bytes().to_vec()));
    }
    Seed {
        name,
        headers,
        body,
    }
}

/// VEVENT REQUEST/REPLY/CANCEL, VTODO, VFREEBUSY; one and several
/// recipients; relayed with the shared secret, or inbound to the local
/// domain without it.
fn seeds() -> Vec<Seed> {
    let ev = |method, organizer, attendees: &[&str], extra: &[String]| {
        crlf(&calendar(
            method,
            component("VEVENT", "fuzz-1@example.com", organizer, attendees, extra),
        ))
    };
    let timezone: Vec<String> = [
        "BEGIN:VTIMEZONE",
        "TZID:Europe/Berlin",
        "BEGIN:STANDARD",
        "DTSTART:19701025T030000",
        "TZOFFSETFROM:+0200",
        "TZOFFSETTO:+0100",
        "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
        "END:STANDARD",
        "END:VTIMEZONE",
    ]
    .map(String::from)
    .to_vec();
    let rich_extra: Vec<String> = vec![
        "RRULE:FREQ=WEEKLY;COUNT=5".into(),
        "DESCRIPTION:Réunion de conception — 設計会議; agenda attached, please\r\n  review before the meeting\\, thanks."
            .into(),
        "ATTACH;FMTTYPE=application/pdf:https://example.com/agenda.pdf".into(),
        "BEGIN:VALARM".into(),
        "ACTION:DISPLAY".into(),
        "TRIGGER:-PT15M".into(),
        "DESCRIPTION:Reminder".into(),
        "END:VALARM".into(),
    ];
    let mut rich = timezone;
    rich.extend(component(
        "VEVENT",
        "fuzz-rich@example.com",
        BERNARD,
        &[ALICE, BOB],
        &rich_extra,
    ));
    let reply = {
        let mut lines = component("VEVENT", "fuzz-2@example.org", ALICE, &[], &[]);
        lines.insert(
            lines.len() - 1,
            format!("ATTENDEE;PARTSTAT=ACCEPTED:{CAROL}"),
        );
        crlf(&calendar("REPLY", lines))
    };
    let todo = crlf(&calendar(
        "REQUEST",
        component("VTODO", "fuzz-3@example.com", BERNARD, &[ALICE], &[]),
    ));
    let freebusy = crlf(&calendar(
        "REQUEST",
        component(
            "VFREEBUSY",
            "fuzz-4@example.com",
            BERNARD,
            &[CAROL, DAVE],
            &[],
        ),
    ));
    vec![
        seed(
            "request-one",
            ("VEVENT", "REQUEST"),
            BERNARD,
            &[&[CAROL]],
            true,
            ev("REQUEST", BERNARD, &[CAROL], &[]),
        ),
        seed(
            "request-three",
            ("VEVENT", "REQUEST"),
            BERNARD,
            &[&[CAROL, DAVE, ALICE]],
            true,
            ev("REQUEST", BERNARD, &[CAROL, DAVE, ALICE], &[]),
        ),
        seed(
            "request-inbound",
            ("VEVENT", "REQUEST"),
            BERNARD,
            &[&[ALICE], &[BOB]],
            false,
            crlf(&calendar("REQUEST", rich)),
        ),
        seed(
            "reply",
            ("VEVENT", "REPLY"),
            CAROL,
            &[&[ALICE]],
            false,
            reply,
        ),
        seed(
            "cancel",
            ("VEVENT", "CANCEL"),
            BERNARD,
            &[&[CAROL, ERIN]],
            true,
            ev("CANCEL", BERNARD, &[CAROL, ERIN], &[]),
        ),
        seed(
            "vtodo",
            ("VTODO", "REQUEST"),
            BERNARD,
            &[&[ALICE]],
            false,
            todo,
        ),
        seed(
            "vfreebusy",
            ("VFREEBUSY", "REQUEST"),
            BERNARD,
            &[&[CAROL], &[DAVE]],
            true,
            freebusy,
        ),
    ]
}

// ------------------------------------------------------------ mutations

/// How the body is framed on the wire.
#[derive(Clone, Debug)]
enum Framing {
    /// `Content-Length` equal to the body.
    Honest,
    /// Well-formed chunked encoding, split at these sizes.
    Chunked(Vec<usize>),
    /// Malformed: raw bytes after the header block, with these framing
    /// headers. The bridge may answer 400 or close without an answer.
    Broken { headers: Vec<String>, wire: Vec<u8> },
}

/// One request to send.
struct Case {
    index: usize,
    seed: &'static str,
    mutations: Vec<String>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    framing: Framing,
}

impl Case {
    fn well_formed(&self) -> bool {
        !matches!(self.framing, Framing::Broken { .. })
    }

    fn bytes(&self, port: u16) -> Vec<u8> {
        let mut out =
            format!("POST {WELL_KNOWN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n");
        match &self.framing {
            Framing::Honest => {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
                );
                out.extend_from_slice(&self.body);
            }
            Framing::Chunked(sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &self.body[..];
                for &size in sizes {
                    let (chunk, tail) = rest.split_at(size.min(rest.len()));
                    if !chunk.is_empty() {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                    rest = tail;
                }
                if !rest.is_empty() {
                    out.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
                    out.extend_from_slice(rest);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::Broken { headers, wire } => {
                for h in headers {
                    out.extend_from_slice(h.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(wire);
            }
        }
        out
    }

    /// The distinct Recipient addresses as the bridge should echo them, in
    /// first-seen order: comma lists split, OWS trimmed, `mailto:` compared
    /// case-insensitively (and without `?query`), other schemes by
    /// lower-cased scheme plus the rest as written.
    fn distinct_recipients(&self) -> Vec<String> {
        let mut seen = Vec::<String>::new();
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case(b"Recipient") {
                continue;
            }
            let value = String::from_utf8_lossy(value);
            for item in value.split(',') {
                let raw = item
                    .trim_matches([' ', '\t', '\r', '\n'])
                    .trim()
                    .to_string();
                if raw.is_empty() {
                    continue;
                }
                let (scheme, rest) = raw.split_once(':').unwrap_or(("", &raw));
                let scheme = scheme.to_ascii_lowercase();
                let key = if scheme == "mailto" {
                    let address = rest.split('?').next().unwrap_or_default();
                    format!("mailto:{}", address.to_ascii_lowercase())
                } else {
                    format!("{scheme}:{rest}")
                };
                if !seen.contains(&key) {
                    seen.push(key);
                    out.push(raw);
                }
            }
        }
        out
    }

    fn describe(&self) -> String {
        format!(
            "case {} (seed {}, mutations {:?}, framing {})",
            self.index,
            self.seed,
            self.mutations,
            match &self.framing {
                Framing::Honest => "Content-Length".to_string(),
                Framing::Chunked(_) => "chunked".to_string(),
                Framing::Broken { headers, .. } => format!("broken {headers:?}"),
            }
        )
    }
}

const BODY_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n ",
    b"\n",
    b"\r",
    b"BEGIN:VEVENT\r\n",
    b"END:VEVENT\r\n",
    b"BEGIN:VCALENDAR\r\n",
    b"END:VCALENDAR\r\n",
    b"BEGIN:VTODO\r\n",
    b":",
    b";",
    b"\"",
    b",",
    b"=",
    b"\\",
    b"RRULE:FREQ=DAILY;COUNT=99999999999999999999999\r\n",
    b"RRULE:FREQ=DAILY;COUNT=500\r\n",
    b"RRULE:FREQ=DAILY;UNTIL=22000101T000000Z\r\n",
    b"RDATE;VALUE=PERIOD:20300101T000000Z/PT1H,18000101T000000Z/19000101T000000Z\r\n",
    b"DTSTART:18000101T000000Z\r\n",
    b"DTEND:99991231\r\n",
    b"ATTENDEE:mailto:mallory@nosrv.test\r\n",
    b"ATTENDEE:not-an-address\r\n",
    b"ORGANIZER:mailto:someone@else.test\r\n",
    b"ATTACH;VALUE=BINARY;ENCODING=BASE64:SGVsbG8=\r\n",
    b"METHOD:CANCEL\r\n",
    b"UID:other\r\n",
    b"X-JUNK;X=\"a:b\";Y=c,\"d\":value\r\n",
    b"\xef\xbb\xbf",
    b"\xc3\xa9",
    b"\xff\xfe",
    b"\0",
];

const UNICODE: &[char] = &[
    'é',
    'ß',
    '€',
    '設',
    '😀',
    '\u{feff}',
    '\u{200b}',
    '\u{202e}',
    '\u{fffd}',
    '\u{a0}',
    '\u{2028}',
    '\u{85}',
    '\u{1}',
    '\u{7f}',
    '\u{10ffff}',
    'İ',
    '\u{301}',
];

const METHODS: &[&str] = &[
    "REQUEST",
    "REPLY",
    "CANCEL",
    "ADD",
    "REFRESH",
    "COUNTER",
    "DECLINECOUNTER",
    "PUBLISH",
    "request",
    "FORWARD",
    "",
    "\"REQUEST\"",
];
const COMPONENTS: &[&str] = &[
    "VEVENT",
    "VTODO",
    "VJOURNAL",
    "VFREEBUSY",
    "vevent",
    "VPOLL",
    "",
    "\"VEVENT\"",
];
const ADDRESSES: &[&str] = &[
    BERNARD,
    CAROL,
    DAVE,
    ERIN,
    ALICE,
    BOB,
    "mailto:mallory@nosrv.test",
    "MAILTO:Carol@NOSRV.TEST",
    "mailto:someone@unknown.invalid",
    "https://cal.example.org/principals/alice",
    "urn:uuid:4c2e1f9a-9f3e-4b0c-8a9e-1a2b3c4d5e6f",
    "bernard@example.com",
    "mailto:nobody",
    "mailto:",
    "",
];

/// `n` characters from [`UNICODE`]; for a header value without the C0
/// controls and DEL, which are not field-value bytes at all.
fn random_unicode(rng: &mut Rng, n: usize, header: bool) -> String {
    let allowed: Vec<char> = UNICODE
        .iter()
        .copied()
        .filter(|c| !header || !(c.is_ascii_control()))
        .collect();
    (0..n).map(|_| *rng.pick(&allowed)).collect()
}

/// Bytes allowed in an HTTP field value: HTAB, SP, VCHAR and obs-text.
fn field_byte(rng: &mut Rng) -> u8 {
    loop {
        let b = rng.byte();
        if b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80 {
            return b;
        }
    }
}

fn mutate_header(rng: &mut Rng, headers: &mut Vec<(Vec<u8>, Vec<u8>)>) -> String {
    // Host, Connection and the framing headers are not in the list: they
    // are written by `Case::bytes`.
    if headers.is_empty() {
        headers.push((b"Recipient".to_vec(), CAROL.as_bytes().to_vec()));
        return "re-add Recipient".into();
    }
    let i = rng.below(headers.len());
    let name = String::from_utf8_lossy(&headers[i].0).into_owned();
    match rng.below(12) {
        0 | 1 => {
            headers.remove(i);
            format!("drop {name}")
        }
        2 => {
            let copy = headers[i].clone();
            let at = rng.below(headers.len() + 1);
            headers.insert(at, copy);
            format!("duplicate {name}")
        }
        3 => {
            let j = rng.below(headers.len());
            let (a, b) = (headers[i].1.clone(), headers[j].1.clone());
            headers[i].1 = b;
            headers[j].1 = a;
            format!(
                "swap values {name} <-> {}",
                String::from_utf8_lossy(&headers[j].0)
            )
        }
        4 => {
            let n = rng.below(64);
            headers[i].1 = (0..n).map(|_| field_byte(rng)).collect();
            format!("random bytes in {name}")
        }
        5 => {
            let value = &mut headers[i].1;
            for _ in 0..=rng.below(4) {
                let at = rng.below(value.len() + 1);
                let insert: &[u8] = rng.pick::<&[u8]>(&[b",", b", ", b" ", b"\t", b",,", b" , "]);
                value.splice(at..at, insert.iter().copied());
            }
            format!("commas/whitespace in {name}")
        }
        6 => {
            let n = 1 + rng.below(6);
            let text = random_unicode(rng, n, true);
            let value = &mut headers[i].1;
            let at = rng.below(value.len() + 1);
            value.splice(at..at, text.bytes());
            format!("unicode in {name}")
        }
        7 => {
            let len = 256 + rng.below(4096);
            let value = &mut headers[i].1;
            let unit = if value.is_empty() {
                b"a".to_vec()
            } else {
                value.clone()
            };
            let mut long = Vec::with_capacity(len);
            while long.len() < len {
                long.extend_from_slice(&unit);
                if rng.chance(50) {
                    long.extend_from_slice(b", ");
                }
            }
            *value = long;
            format!("long {name}")
        }
        8 => {
            let upper = rng.chance(50);
            let (n, v) = &mut headers[i];
            let target = if rng.chance(50) { n } else { v };
            for b in target.iter_mut() {
                if rng.chance(50) {
                    *b = if upper {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    };
                }
            }
            format!("case change in {name}")
        }
        9 => {
            headers[i].1.clear();
            format!("empty {name}")
        }
        10 => {
            let n = 1 + rng.below(5);
            let list: Vec<&str> = (0..n).map(|_| *rng.pick(ADDRESSES)).collect();
            let header: &[u8] = rng.pick::<&[u8]>(&[b"Recipient", b"Originator"]);
            headers.push((header.to_vec(), list.join(", ").into_bytes()));
            format!("add {} {list:?}", String::from_utf8_lossy(header))
        }
        _ => {
            let address = rng.pick(ADDRESSES);
            headers[i].1 = address.as_bytes().to_vec();
            format!("set {name} to {address:?}")
        }
    }
}

/// Rebuilds the Content-Type value from a mutated parameter list.
fn mutate_content_type(rng: &mut Rng, headers: &mut [(Vec<u8>, Vec<u8>)]) -> String {
    let Some(i) = headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case(b"Content-Type"))
    else {
        return "no Content-Type to mutate".into();
    };
    let text = String::from_utf8_lossy(&headers[i].1).into_owned();
    let mut parts: Vec<String> = text.split(';').map(|p| p.trim().to_string()).collect();
    if parts.is_empty() {
        parts.push("text/calendar".into());
    }
    let what = match rng.below(9) {
        0 => {
            let key = rng.pick(&["component", "method"]);
            parts.retain(|p| !p.to_ascii_lowercase().starts_with(key));
            format!("remove {key}")
        }
        1 => {
            let m = rng.pick(METHODS);
            parts.retain(|p| !p.to_ascii_lowercase().starts_with("method"));
            parts.push(format!("method={m}"));
            format!("method={m}")
        }
        2 => {
            let c = rng.pick(COMPONENTS);
            parts.retain(|p| !p.to_ascii_lowercase().starts_with("component"));
            parts.push(format!("component={c}"));
            format!("component={c}")
        }
        3 => {
            let cs = rng.pick(&["utf-8", "UTF-8", "\"utf-8\"", "latin1", "utf8", ""]);
            parts.insert(1.min(parts.len()), format!("charset={cs}"));
            format!("charset={cs}")
        }
        4 => {
            let j = rng.below(parts.len());
            let copy = parts[j].clone();
            parts.push(copy);
            "duplicate parameter".into()
        }
        5 => {
            parts[0] = rng
                .pick(&[
                    "text/plain",
                    "application/calendar+xml",
                    "TEXT/CALENDAR",
                    "text/calendar ",
                    "",
                    "text",
                ])
                .to_string();
            format!("media type {:?}", parts[0])
        }
        6 => {
            let junk = rng.pick(&["", "=x", "component", "x-foo=\"a;b", "a=\"b\\\"c\"", " ; "]);
            let at = rng.below(parts.len() + 1);
            parts.insert(at, junk.to_string());
            format!("junk parameter {junk:?}")
        }
        7 => {
            for p in parts.iter_mut().skip(1) {
                if let Some((k, v)) = p.split_once('=') {
                    *p = format!("{k}=\"{v}\"");
                }
            }
            "quoted values".into()
        }
        _ => {
            let j = rng.below(parts.len());
            parts.swap(0, j);
            "media type not first".into()
        }
    };
    headers[i].1 = parts.join("; ").into_bytes();
    format!("Content-Type {what}")
}

fn lines_of(body: &[u8]) -> Vec<Vec<u8>> {
    body.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Well-formed property lines (or components) that push a valid message
/// over a limit or against a rule.
const PROPERTY_LINES: &[&str] = &[
    "ATTACH;VALUE=BINARY;ENCODING=BASE64;FMTTYPE=text/plain:SGVsbG8sIHdvcmxkIQ==",
    "ATTACH;ENCODING=BASE64:AAAA",
    "ATTACH:https://example.com/a.pdf",
    "RRULE:FREQ=DAILY;COUNT=500",
    "RRULE:FREQ=DAILY;COUNT=100",
    "RRULE:FREQ=DAILY;COUNT=0",
    "RRULE:FREQ=DAILY;UNTIL=20990101T000000Z",
    "RDATE:20300101T100000Z,20300102T100000Z",
    "EXDATE:19000101T000000Z",
    "RECURRENCE-ID:21000101T000000Z",
    "DTSTART;VALUE=DATE:19991231",
    "DUE:20991231T000001Z",
    "ATTENDEE:mailto:extra@nosrv.test",
    "ATTENDEE;CN=\"Doe, J: x\":MAILTO:Carol@NoSrv.Test",
    "ORGANIZER:mailto:carol@nosrv.test",
    "UID:another-uid",
    "X-EMPTY:",
    "BEGIN:VALARM\r\nACTION:AUDIO\r\nTRIGGER:-PT5M\r\nATTACH;VALUE=BINARY;ENCODING=BASE64:AAAA\r\nEND:VALARM",
    "BEGIN:VALARM\r\nACTION:EMAIL\r\nTRIGGER;VALUE=DATE-TIME:19000101T000000Z\r\nEND:VALARM",
];

fn mutate_body(rng: &mut Rng, body: &mut Vec<u8>) -> String {
    match rng.below(15) {
        13 | 14 => {
            let line = *rng.pick(PROPERTY_LINES);
            let ends: Vec<usize> = body
                .windows(6)
                .enumerate()
                .filter(|(i, w)| {
                    w.eq_ignore_ascii_case(b"\nEND:V")
                        && !body[i + 6..].starts_with(b"CALENDAR")
                        && !body[i + 6..].starts_with(b"TIMEZONE")
                })
                .map(|(i, _)| i + 1)
                .collect();
            let at = if ends.is_empty() {
                line_start(body, rng)
            } else {
                *rng.pick(&ends)
            };
            body.splice(at..at, format!("{line}\r\n").into_bytes());
            format!("property {line:?}")
        }
        0 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                if !body.is_empty() {
                    let at = rng.below(body.len());
                    body[at] ^= 1 << rng.below(8);
                }
            }
            format!("{n} bit flips")
        }
        1 => {
            let n = 1 + rng.below(16);
            let at = rng.below(body.len() + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            body.splice(at..at, bytes);
            format!("insert {n} random bytes")
        }
        2 => {
            let token = *rng.pick(BODY_TOKENS);
            // At a line start half the time, so whole property lines land
            // where the parser reads them as properties.
            let at = if rng.chance(50) {
                line_start(body, rng)
            } else {
                rng.below(body.len() + 1)
            };
            body.splice(at..at, token.iter().copied());
            format!("insert {:?}", String::from_utf8_lossy(token))
        }
        3 => {
            let at = rng.below(body.len() + 1);
            let end = (at + 1 + rng.below(64)).min(body.len());
            body.drain(at..end);
            "delete bytes".into()
        }
        4 => {
            let at = rng.below(body.len() + 1);
            body.truncate(at);
            format!("truncate at {at}")
        }
        5 => {
            let mut lines = lines_of(body);
            if !lines.is_empty() {
                let j = rng.below(lines.len());
                let copies = 1 + rng.below(3);
                for _ in 0..copies {
                    lines.insert(j, lines[j].clone());
                }
            }
            *body = lines.concat();
            "duplicate a line".into()
        }
        6 => {
            let mut lines = lines_of(body);
            let swaps = 1 + rng.below(4);
            for _ in 0..swaps {
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(a, b);
            }
            *body = lines.concat();
            format!("shuffle {swaps} line pairs")
        }
        7 => {
            let depth = 1 + rng.below(2_000);
            let balanced = rng.chance(70);
            let name = rng.pick(&["X-N", "VEVENT", "VCALENDAR", "VALARM"]);
            let mut insert = format!("BEGIN:{name}\r\n").repeat(depth);
            if balanced {
                insert += &format!("END:{name}\r\n").repeat(depth);
            }
            let at = line_start(body, rng);
            body.splice(at..at, insert.into_bytes());
            format!("nesting {depth} {name} (balanced: {balanced})")
        }
        8 => {
            let len = 100 + rng.below(12_000);
            let mut line = String::from("DESCRIPTION:");
            let mut width = line.len();
            for _ in 0..len {
                if width >= 74 {
                    line.push_str(if rng.chance(90) { "\r\n " } else { "\r\n\t" });
                    width = 1;
                }
                let c = if rng.chance(10) {
                    *rng.pick(UNICODE)
                } else {
                    (b'a' + rng.below(26) as u8) as char
                };
                line.push(c);
                width += 1;
            }
            line.push_str("\r\n");
            let at = line_start(body, rng);
            body.splice(at..at, line.into_bytes());
            format!("folded line of {len} characters")
        }
        9 => {
            let n = 1 + rng.below(20);
            let text = random_unicode(rng, n, false);
            let at = char_boundary(body, rng.below(body.len() + 1));
            body.splice(at..at, text.into_bytes());
            "random unicode".into()
        }
        10 => {
            let text = String::from_utf8_lossy(body).into_owned();
            let (what, new) = match rng.below(5) {
                0 => ("CRLF -> LF", text.replace("\r\n", "\n")),
                1 => ("CRLF -> CR", text.replace("\r\n", "\r")),
                2 => ("LF -> CRCRLF", text.replace('\n', "\r\r\n")),
                3 => ("blank lines", text.replace("\r\n", "\r\n\r\n")),
                _ => ("CRLF -> LFCR", text.replace("\r\n", "\n\r")),
            };
            *body = new.into_bytes();
            what.into()
        }
        11 => {
            // Move dates out of range, or instance counts over the limit.
            let text = String::from_utf8_lossy(body).into_owned();
            let year = ical_day(12)[..4].to_string();
            let to = rng.pick(&["1899", "1999", "2100", "9999", "0000", "20x6"]);
            *body = text.replacen(&year, to, 1 + rng.below(3)).into_bytes();
            format!("year {year} -> {to}")
        }
        _ => {
            let at = rng.below(body.len() + 1);
            let len = rng.below(200);
            let end = (at + len).min(body.len());
            let chunk = body[at..end].to_vec();
            let to = rng.below(body.len() + 1);
            body.splice(to..to, chunk);
            "copy a range".into()
        }
    }
}

/// A random position at the start of a line.
fn line_start(body: &[u8], rng: &mut Rng) -> usize {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            body.iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    *rng.pick(&starts)
}

/// `at` moved back to a UTF-8 character boundary (if the body is UTF-8 there).
fn char_boundary(body: &[u8], mut at: usize) -> usize {
    while at > 0 && at < body.len() && (body[at] & 0xC0) == 0x80 {
        at -= 1;
    }
    at
}

fn broken_framing(rng: &mut Rng, body: &[u8]) -> (String, Framing) {
    let len = body.len();
    let (what, headers, wire) = match rng.below(8) {
        0 => {
            let short = rng.below(len.max(1));
            (
                "Content-Length too small",
                vec![format!("Content-Length: {short}")],
                body.to_vec(),
            )
        }
        1 => (
            "Content-Length too large",
            vec![format!("Content-Length: {}", len + 1 + rng.below(100))],
            body.to_vec(),
        ),
        2 => (
            "two Content-Lengths",
            vec![
                format!("Content-Length: {len}"),
                format!("Content-Length: {}", len + 1),
            ],
            body.to_vec(),
        ),
        3 => (
            "Content-Length and chunked",
            vec![
                format!("Content-Length: {len}"),
                "Transfer-Encoding: chunked".into(),
            ],
            [format!("{len:x}\r\n").as_bytes(), body, b"\r\n0\r\n\r\n"].concat(),
        ),
        4 => {
            let claimed = if rng.chance(50) {
                len + 1 + rng.below(50)
            } else {
                len.saturating_sub(1 + rng.below(50))
            };
            (
                "wrong chunk size",
                vec!["Transfer-Encoding: chunked".into()],
                [
                    format!("{claimed:x}\r\n").as_bytes(),
                    body,
                    b"\r\n0\r\n\r\n",
                ]
                .concat(),
            )
        }
        5 => (
            "chunked without last chunk",
            vec!["Transfer-Encoding: chunked".into()],
            [format!("{len:x}\r\n").as_bytes(), body, b"\r\n"].concat(),
        ),
        6 => (
            "non-hex chunk size",
            vec!["Transfer-Encoding: chunked".into()],
            [b"1g; x\r\n".as_slice(), body, b"\r\n0\r\n\r\n"].concat(),
        ),
        _ => (
            "huge chunk size",
            vec!["Transfer-Encoding: chunked".into()],
            [b"ffffffffffffffff\r\n".as_slice(), body, b"\r\n0\r\n\r\n"].concat(),
        ),
    };
    (what.to_string(), Framing::Broken { headers, wire })
}

fn make_case(rng: &mut Rng, index: usize, seeds: &[Seed], mutate: bool) -> Case {
    let seed = if mutate {
        rng.pick(seeds)
    } else {
        &seeds[index % seeds.len()]
    };
    let mut headers = seed.headers.clone();
    for (name, value) in headers.iter_mut() {
        if name.as_slice() == b"iSchedule-Message-ID" {
            *value = format!("fuzz-{index}").into_bytes();
        }
    }
    let mut body = seed.body.clone();
    let mut mutations = Vec::new();
    let mut framing = Framing::Honest;
    if mutate {
        for _ in 0..1 + rng.below(3) {
            let m = match rng.below(100) {
                0..=39 => mutate_header(rng, &mut headers),
                40..=54 => mutate_content_type(rng, &mut headers),
                _ => mutate_body(rng, &mut body),
            };
            mutations.push(m);
        }
    }
    if rng.chance(4) && mutate {
        let (what, broken) = broken_framing(rng, &body);
        mutations.push(what);
        framing = broken;
    } else if rng.chance(10) {
        let mut sizes = Vec::new();
        let mut left = body.len();
        while left > 0 {
            let size = 1 + rng.below(left.min(2_000));
            sizes.push(size);
            left -= size;
        }
        framing = Framing::Chunked(sizes);
    }
    Case {
        index,
        seed: seed.name,
        mutations,
        headers,
        body,
        framing,
    }
}

// --------------------------------------------------- sending and checking

/// Like `support::http_raw`, but half-closes after writing, so a request
/// the bridge still waits on ends at once instead of after 30 s, and a
/// reset without any answer counts as "closed without answer".
fn exchange(port: u16, raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    // The bridge may answer (and close) before reading everything.
    let _ = stream.write_all(raw);
    let _ = stream.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(e),
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The first response in `raw`, which must be complete.
fn parse_answer(raw: &[u8], head_only: bool) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the header block")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "header block is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = words
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("bad header line {l:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if head_only || status == 304 || status == 204 {
        return Ok(answer);
    }
    if let Some(te) = answer.header("Transfer-Encoding") {
        if !te.eq_ignore_ascii_case("chunked") {
            return Err(format!("unexpected Transfer-Encoding {te:?}"));
        }
        answer.body = dechunk(rest)?;
    } else if let Some(len) = answer.header("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        answer.body = rest
            .get(..len)
            .ok_or_else(|| format!("body has {} of {len} bytes", rest.len()))?
            .to_vec();
    } else {
        answer.body = rest.to_vec();
    }
    Ok(answer)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("unterminated chunk size")?;
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(eol + 2..eol + 2 + size).ok_or("truncated chunk")?);
        rest = rest.get(eol + 4 + size..).ok_or("chunk without CRLF")?;
    }
}

/// A small, strict-enough XML check: declaration first, balanced tags, one
/// root named `root`, no text outside it, only the five predefined entities
/// and character references. Returns the start-tag names in order.
fn check_xml(text: &str, roots: &[&str]) -> Result<Vec<String>, String> {
    let rest = text
        .strip_prefix("<?xml")
        .ok_or("does not start with <?xml")?;
    let decl_end = rest.find("?>").ok_or("unterminated XML declaration")?;
    let mut rest = &rest[decl_end + 2..];
    let mut open: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut root_closed = false;
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text_part = &rest[..lt];
        if open.is_empty() && !text_part.trim().is_empty() {
            return Err(format!("text outside the root: {text_part:?}"));
        }
        check_text(text_part)?;
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        let gt = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(o) if o == name.trim() => root_closed = open.is_empty(),
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let empty = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name: String = tag.chars().take_while(|c| !c.is_whitespace()).collect();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.:".contains(c))
        {
            return Err(format!("bad element name in <{tag}>"));
        }
        if open.is_empty() {
            if root_closed || !names.is_empty() {
                return Err(format!("second root <{name}>"));
            }
            if !roots.contains(&name.as_str()) {
                return Err(format!("root <{name}> is not one of {roots:?}"));
            }
        }
        check_text(&tag[name.len()..])?;
        names.push(name.clone());
        if empty {
            root_closed = open.is_empty();
        } else {
            open.push(name);
        }
    }
    if !open.is_empty() || !root_closed {
        return Err(format!("unclosed elements {open:?}"));
    }
    Ok(names)
}

fn check_text(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("unterminated entity")?;
        let entity = &after[..semi];
        let ok = matches!(entity, "lt" | "gt" | "amp" | "quot" | "apos")
            || entity
                .strip_prefix("#x")
                .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
            || entity
                .strip_prefix('#')
                .is_some_and(|d| d.parse::<u32>().is_ok());
        if !ok {
            return Err(format!("unknown entity &{entity};"));
        }
        rest = &after[semi + 1..];
    }
    if text.chars().any(|c| matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')) {
        return Err("character not allowed in XML".into());
    }
    Ok(())
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#13;", "\r")
        .replace("&amp;", "&")
}

fn element_texts(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(&open)
        .skip(1)
        .map(|part| unescape(part.split(&close).next().unwrap_or_default()))
        .collect()
}

/// What was seen, for the summary and the final assertions.
#[derive(Default)]
struct Tally {
    /// "200", "400 invalid-calendar-data", "closed", ...
    outcomes: BTreeMap<String, usize>,
    statuses: BTreeMap<u16, usize>,
    /// request-status codes inside 200 answers.
    request_statuses: BTreeMap<String, usize>,
    problems: Vec<String>,
    server_errors: Vec<String>,
}

impl Tally {
    fn count(&mut self, key: String) {
        *self.outcomes.entry(key).or_default() += 1;
    }

    fn problem(&mut self, what: String) {
        self.problems.push(what);
    }
}

/// The bridge's own POST answer: iSchedule headers and an XML document.
fn check_ischedule_answer(a: &Answer, case: Option<&Case>, tally: &mut Tally, who: &str) {
    if a.header("iSchedule-Version") != Some("1.0") {
        tally.problem(format!(
            "{who}: {} without iSchedule-Version: 1.0",
            a.status
        ));
    }
    if a.header("Cache-Control") != Some("no-cache, no-transform") {
        tally.problem(format!(
            "{who}: {} without Cache-Control no-cache, no-transform",
            a.status
        ));
    }
    let Ok(text) = std::str::from_utf8(&a.body) else {
        tally.problem(format!("{who}: body is not UTF-8"));
        return;
    };
    let names = match check_xml(text, &["schedule-response", "error"]) {
        Ok(names) => names,
        Err(why) => {
            tally.problem(format!(
                "{who}: {} body is not a good XML document ({why}): {text:?}",
                a.status
            ));
            return;
        }
    };
    match (a.status, names[0].as_str()) {
        (200, "schedule-response") => {
            let responses = names.iter().filter(|n| *n == "response").count();
            let echoed = element_texts(text, "recipient");
            for status in element_texts(text, "request-status") {
                let code = status.split(';').next().unwrap_or_default().to_string();
                *tally.request_statuses.entry(code).or_default() += 1;
            }
            tally.count("200 schedule-response".into());
            if let Some(case) = case {
                let expected = case.distinct_recipients();
                if responses != expected.len() || echoed != expected {
                    tally.problem(format!(
                        "{who}: {responses} <response> for recipients {expected:?}, echoed {echoed:?}"
                    ));
                }
            }
        }
        (400 | 403, "error") => {
            let children: Vec<&String> = names.iter().skip(1).collect();
            match children.as_slice() {
                [element, description] if *description == "response-description" => {
                    tally.count(format!("{} {element}", a.status))
                }
                _ => tally.problem(format!("{who}: error document children {children:?}")),
            }
        }
        (status, root) => tally.problem(format!("{who}: status {status} with <{root}>")),
    }
}

fn check_case(case: &Case, raw: io::Result<Vec<u8>>, tally: &mut Tally) {
    let who = case.describe();
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            tally.problem(format!("{who}: no answer: {e}"));
            return;
        }
    };
    if raw.is_empty() {
        tally.count("closed without answer".into());
        if case.well_formed() {
            tally.problem(format!("{who}: connection closed without an answer"));
        }
        return;
    }
    let answer = match parse_answer(&raw, false) {
        Ok(a) => a,
        Err(why) => {
            tally.problem(format!(
                "{who}: incomplete answer ({why}): {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            ));
            return;
        }
    };
    *tally.statuses.entry(answer.status).or_default() += 1;
    if answer.status >= 500 {
        tally.server_errors.push(format!(
            "{who}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
        return;
    }
    let from_bridge = answer.header("iSchedule-Version").is_some();
    if from_bridge || case.well_formed() {
        if !matches!(answer.status, 200 | 400 | 403) {
            tally.problem(format!("{who}: unexpected status {}", answer.status));
        }
        check_ischedule_answer(&answer, Some(case), tally, &who);
    } else if answer.status >= 400 {
        // Pingora's own refusal of a malformed message.
        tally.count(format!("{} (HTTP layer)", answer.status));
    } else {
        tally.problem(format!("{who}: {} for malformed framing", answer.status));
    }
}

// ------------------------------------------------------------- garbage

fn garbage(rng: &mut Rng, index: usize, seeds: &[Seed], port: u16) -> (String, Vec<u8>) {
    let valid = {
        let mut case = make_case(rng, index, seeds, false);
        case.framing = Framing::Honest;
        case.bytes(port)
    };
    let body = &seeds[0].body;
    let cl = |n: usize| format!("Content-Length: {n}\r\n");
    let post = |extra: &str, wire: &[u8]| {
        [
            format!("POST {WELL_KNOWN} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes(),
            wire,
        ]
        .concat()
    };
    match index % 12 {
        0 => {
            let n = rng.below(600);
            ("random bytes".into(), (0..n).map(|_| rng.byte()).collect())
        }
        1 => {
            let at = rng.below(valid.len());
            (format!("truncated at {at}"), valid[..at].to_vec())
        }
        2 => {
            let line = rng.pick(&[
                "POST",
                "POST /.well-known/ischedule",
                "POST  /.well-known/ischedule  HTTP/1.1",
                "POST /.well-known/ischedule HTTP/2.0",
                "POST /.well-known/ischedule HTTP/1.1 extra",
                "post /.well-known/ischedule HTTP/1.1",
                "P\u{d3}ST /.well-known/ischedule HTTP/1.1",
                "POST http://127.0.0.1/.well-known/ischedule HTTP/1.1",
                "POST .well-known/ischedule HTTP/1.1",
                "POST /.well-known/ischedule?\u{0} HTTP/1.1",
                "GET /%%%/ HTTP/1.1",
                "\r\nPOST /.well-known/ischedule HTTP/1.1",
                " POST /.well-known/ischedule HTTP/1.1",
                "POST /.well-known/ischedule HTTP/1.1\n",
            ]);
            let rest = valid
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(&valid[..], |i| &valid[i..]);
            (
                format!("request line {line:?}"),
                [line.as_bytes(), rest].concat(),
            )
        }
        3 => {
            let header = rng.pick(&[
                "Originator mailto:bernard@example.com",
                " Originator: mailto:bernard@example.com",
                "Originator : mailto:bernard@example.com",
                "Origin\u{e9}tor: x",
                "Recipient: a\u{0}b",
                "Recipient: a\rb",
                "Recipient: a\u{7f}b",
                ": empty name",
                "Recipient: mailto:carol@nosrv.test,\r\n mailto:erin@nosrv.test",
                "X-Long: \u{1}",
                "Recipient:\u{b}mailto:carol@nosrv.test",
            ]);
            let at = valid
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(0, |i| i + 2);
            let mut raw = valid.clone();
            raw.splice(at..at, format!("{header}\r\n").into_bytes());
            (format!("header {header:?}"), raw)
        }
        4 => (
            "conflicting Content-Length".into(),
            post(&format!("{}{}", cl(body.len()), cl(body.len() / 2)), body),
        ),
        5 => {
            let value = rng.pick(&[
                "-1",
                "+5",
                "0x10",
                "1e3",
                "99999999999999999999999",
                "",
                "5, 6",
                " 12 ",
            ]);
            (
                format!("Content-Length {value:?}"),
                post(&format!("Content-Length: {value}\r\n"), body),
            )
        }
        6 => {
            let size = rng.pick(&["zz", "-5", "ffffffffffffffffff", "10", "1;ext", "", "0x10"]);
            let wire = [
                format!("{size}\r\n").as_bytes(),
                &body[..body.len().min(100)],
                b"\r\n0\r\n\r\n",
            ]
            .concat();
            (
                format!("chunk size {size:?}"),
                post("Transfer-Encoding: chunked\r\n", &wire),
            )
        }
        7 => {
            let te = rng.pick(&[
                "gzip",
                "chunked, chunked",
                "identity",
                "chunked;x=1",
                "CHUNKED",
                "gzip, chunked",
            ]);
            let wire = [
                format!("{:x}\r\n", body.len()).as_bytes(),
                body,
                b"\r\n0\r\n\r\n",
            ]
            .concat();
            (
                format!("Transfer-Encoding {te:?}"),
                post(&format!("Transfer-Encoding: {te}\r\n"), &wire),
            )
        }
        8 => {
            let n = 100 + rng.below(400);
            let mut extra = String::new();
            for i in 0..n {
                extra += &format!("X-H{i}: v\r\n");
            }
            (
                format!("{n} headers"),
                post(&format!("{extra}{}", cl(0)), b""),
            )
        }
        9 => {
            let mut raw = valid.clone();
            raw.extend_from_slice(b"GARBAGE AFTER THE REQUEST\r\n\r\n");
            ("pipelined garbage".into(), raw)
        }
        10 => {
            let mut raw = valid.clone();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(raw.len());
                raw[at] = rng.byte();
            }
            ("random bytes over a request".into(), raw)
        }
        _ => {
            let line = rng.pick(&[
                "GET /.well-known/ischedule?action=capabilities HTTP/1.0\r\n\r\n",
                "HEAD /.well-known/ischedule?action=capabilities HTTP/1.1\r\nHost: x\r\n\r\n",
                "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
                "DELETE /.well-known/ischedule HTTP/1.1\r\nHost: x\r\n\r\n",
                "GET /.well-known/ischedule?action=capabilities&action=x HTTP/1.1\r\nHost: x\r\nIf-None-Match: ,,,*\r\n\r\n",
                "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                "GET /.well-known/ischedule HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            ]);
            (
                format!(
                    "other request {:?}",
                    line.lines().next().unwrap_or_default()
                ),
                line.as_bytes().to_vec(),
            )
        }
    }
}

fn check_garbage(what: &str, raw: io::Result<Vec<u8>>, tally: &mut Tally) {
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            tally.problem(format!("garbage {what}: no answer: {e}"));
            return;
        }
    };
    if raw.is_empty() {
        tally.count("garbage: closed without answer".into());
        return;
    }
    match parse_answer(&raw, what.contains("\"HEAD ")) {
        Ok(a) => {
            *tally.statuses.entry(a.status).or_default() += 1;
            tally.count(format!("garbage: {}", a.status));
            if a.status >= 500 {
                tally.server_errors.push(format!(
                    "garbage {what}: {} {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                ));
            } else if a.header("iSchedule-Version").is_some()
                && a.header("Content-Type")
                    .is_some_and(|t| t.starts_with("application/xml"))
                && a.status != 200
            {
                check_ischedule_answer(&a, None, tally, &format!("garbage {what}"));
            }
        }
        Err(why) => tally.problem(format!(
            "garbage {what}: incomplete answer ({why}): {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        )),
    }
}

// ------------------------------------------------------------- the test

/// Whether the bridge started with `dir`'s config is still a live process
/// (a zombie, i.e. one that exited unwaited, does not count).
fn bridge_running(dir: &Path) -> bool {
    let config = dir.join("bridge.toml");
    let needle = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .chars()
                .next();
            String::from_utf8_lossy(&cmdline).contains(&needle)
                && !matches!(state, Some('Z' | 'X') | None)
        })
}

#[test]
fn mutated_posts_never_crash_the_bridge_and_always_get_a_well_formed_answer() {
    let started = Instant::now();
    let dead_port = free_port();
    let dns = Dns::start(
        &Zone::new()
            .authoritative("nosrv.test")
            .authoritative("down.test")
            .authoritative("example.com")
            .authoritative("example.org")
            .ttl(300)
            .srv("down.test", "dead.down.test", dead_port, 0, 10)
            .a("dead.down.test", Ipv4Addr::LOCALHOST),
    );
    // Unsigned remote seeds must be scheduled: DKIM is tests/dkim.rs's subject.
    let port = free_port();
    let bridge = Bridge::start(
        port,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [dns]\nnameservers = [\"127.0.0.1:{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
             [domains]\nlocal = [\"example.org\"]\n\
             [senders]\nallow = [\"10.0.0.0/8\"]\nshared_secret = \"{SECRET}\"\n\
             [dkim]\nverify = \"off\"\n\
             [limits]\nmax_recipients = 5\nmax_content_length = 16384\nmax_instances = 100\n\
             min_date_time = \"20000101T000000Z\"\nmax_date_time = \"20991231T000000Z\"\n\
             [timeouts]\nconnect_secs = 1\nreceiver_secs = 3\nrequest_secs = 10\ndns_secs = 2\n",
            dns.port
        ),
    );
    let seeds = seeds();
    let mut tally = Tally::default();

    // The seeds themselves are valid: each is scheduled.
    let mut rng = Rng::new(0x5EED_0000_0000_0001);
    for index in 0..seeds.len() {
        let case = make_case(&mut rng, index, &seeds, false);
        let raw = exchange(port, &case.bytes(port));
        let before = tally
            .outcomes
            .get("200 schedule-response")
            .copied()
            .unwrap_or(0);
        check_case(&case, raw, &mut tally);
        let after = tally
            .outcomes
            .get("200 schedule-response")
            .copied()
            .unwrap_or(0);
        assert_eq!(
            after,
            before + 1,
            "seed {} must be scheduled: {:?}",
            case.seed,
            tally.problems
        );
    }

    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut framings = BTreeMap::<&str, usize>::new();
    for index in 0..MUTATED_POSTS {
        let case = make_case(&mut rng, seeds.len() + index, &seeds, true);
        *framings
            .entry(match case.framing {
                Framing::Honest => "content-length",
                Framing::Chunked(_) => "chunked",
                Framing::Broken { .. } => "broken",
            })
            .or_default() += 1;
        let raw = exchange(port, &case.bytes(port));
        check_case(&case, raw, &mut tally);
    }
    let posts_done = started.elapsed();

    let mut rng = Rng::new(0x0BAD_F00D_DEAD_BEEF);
    for index in 0..GARBAGE_REQUESTS {
        let (what, raw) = garbage(&mut rng, index, &seeds, port);
        let answer = exchange(port, &raw);
        check_garbage(&what, answer, &mut tally);
    }

    // Still there, still answering, never panicked.
    assert!(
        bridge_running(bridge.dir()),
        "the bridge process is gone:\n{}",
        bridge.log()
    );
    let caps = http(
        port,
        "GET",
        "/.well-known/ischedule?action=capabilities",
        &[],
        b"",
    );
    assert_eq!(caps.status, 200, "{}", caps.text());
    let log = bridge.log();
    assert!(!log.contains("panicked"), "the bridge panicked:\n{log}");

    let summary = format!(
        "fuzz_post: {} POSTs ({} seeds + {MUTATED_POSTS} mutated; framing {framings:?}) in {:.1} s, \
         {GARBAGE_REQUESTS} garbage requests, total {:.1} s\n  HTTP status: {:?}\n  outcomes: {:#?}\n  \
         request-status in 200s: {:?}\n  problems: {}, 5xx: {}\n",
        seeds.len() + MUTATED_POSTS,
        seeds.len(),
        posts_done.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        tally.statuses,
        tally.outcomes,
        tally.request_statuses,
        tally.problems.len(),
        tally.server_errors.len(),
    );
    // Straight to the process's stderr: shown even when the test passes.
    let _ = io::stderr().write_all(summary.as_bytes());

    assert!(
        tally.server_errors.is_empty(),
        "{} answers were 5xx:\n{}",
        tally.server_errors.len(),
        tally
            .server_errors
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        tally.problems.is_empty(),
        "{} problems:\n{}",
        tally.problems.len(),
        tally
            .problems
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The run exercised both sides: scheduled requests and every clause 8.3
    // element that applies to a POST.
    for element in [
        "version-not-supported",
        "invalid-calendar-data-type",
        "invalid-calendar-data",
        "invalid-scheduling-message",
        "originator-missing",
        "too-many-originators",
        "originator-invalid",
        "originator-denied",
        "recipient-missing",
        "recipient-mismatch",
        "max-recipients",
        "attachment-type-not-supported",
        "max-content-length",
        "min-date-time",
        "max-date-time",
        "max-instances",
    ] {
        assert!(
            tally
                .outcomes
                .keys()
                .any(|k| k.ends_with(&format!(" {element}"))),
            "no mutated request provoked {element}: {:?}",
            tally.outcomes
        );
    }
    let scheduled = tally
        .outcomes
        .get("200 schedule-response")
        .copied()
        .unwrap_or(0);
    assert!(
        scheduled >= 100,
        "only {scheduled} mutated requests were scheduled"
    );
    let _ = &dns;
}
