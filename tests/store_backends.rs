//! The store's contract, run on both backends: the embedded redb and a real
//! PostgreSQL (started here; see `support::postgres`). Each `contract_*`
//! function is one property; `both!` instantiates it for each backend.
//! redb's own matters (files, locks, corrupt records) are its unit tests.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ischedule_bridge::config::{self, StoreLocation};
use ischedule_bridge::store::{
    FailureNotice, PostgresStore, QueuedMail, RedbStore, Store, StoreError, TokenKey,
    Undeliverable, UnixTime,
};
use support::postgres::Postgres;

const LIMIT: usize = usize::MAX;
const LEASE: Duration = Duration::from_secs(600);

fn mail(recipient: &str, next_attempt: UnixTime) -> QueuedMail {
    QueuedMail {
        envelope_from: "bridge@bridge.example".into(),
        recipient: recipient.into(),
        message: format!("To: {recipient}\r\nSubject: Invitation\r\n\r\nCaf\u{e9}\r\n")
            .into_bytes(),
        attempts: 0,
        queued_at: 100,
        next_attempt,
        last_error: None,
        given_up: None,
        notice: Some(FailureNotice {
            message_id: format!("m-{recipient}@bridge.example"),
            organizer: "mailto:alice@example.com".into(),
            attendee: format!("mailto:{recipient}"),
            uid: "uid-1".into(),
            component: "VEVENT".into(),
            recurrence_id: Some("20300101T100000Z".into()),
        }),
    }
}

fn key(attendee: &str) -> TokenKey {
    TokenKey {
        organizer: "mailto:alice@example.com".into(),
        attendee: format!("mailto:{attendee}"),
        uid: "uid-1".into(),
    }
}

fn ids(items: &[(u64, QueuedMail)]) -> Vec<u64> {
    items.iter().map(|(id, _)| *id).collect()
}

/// A store of either kind, with what keeps it alive.
struct Backend {
    store: Arc<dyn Store>,
    /// A second handle on the same state, as a second bridge would have
    /// (redb allows one per file, so there it is the same handle).
    other: Arc<dyn Store>,
    _keep: Box<dyn std::any::Any>,
}

fn redb() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).unwrap());
    Backend {
        other: store.clone(),
        store,
        _keep: Box::new(dir),
    }
}

fn settings(url: &str) -> config::Postgres {
    let toml = format!("[store]\nurl = \"{url}\"\npool_size = 4\nconnect_timeout_secs = 2\n");
    let config = config::Config::parse(&toml, "test.toml", std::path::Path::new("/")).unwrap();
    match config.store {
        StoreLocation::Postgres(settings) => settings,
        StoreLocation::Redb(path) => panic!("not postgres: {}", path.display()),
    }
}

fn postgres() -> Backend {
    let server = Postgres::start();
    let url = server.database();
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&settings(&url)).unwrap());
    let other: Arc<dyn Store> = Arc::new(PostgresStore::open(&settings(&url)).unwrap());
    Backend {
        store,
        other,
        _keep: Box::new(server),
    }
}

macro_rules! both {
    ($($contract:ident),* $(,)?) => {
        mod on_redb {
            $(#[test] fn $contract() { super::$contract(&super::redb()); })*
        }
        mod on_postgres {
            $(#[test] fn $contract() { super::$contract(&super::postgres()); })*
        }
    };
}

both!(
    claims_are_ordered_limited_and_leased,
    settling_a_claim_reschedules_gives_up_or_removes,
    a_full_queue_refuses_and_says_so,
    tokens_are_stable_per_key_renewed_and_expire,
    idempotency_answers_last_until_they_expire,
    sent_records_are_found_case_insensitively_and_purged,
    concurrent_claims_never_take_one_item_twice,
);

fn claims_are_ordered_limited_and_leased(b: &Backend) {
    let s = &b.store;
    let late = s.enqueue(&mail("late@example.org", 300), LIMIT).unwrap();
    let early = s.enqueue(&mail("early@example.org", 100), LIMIT).unwrap();
    let tie = s.enqueue(&mail("tie@example.org", 100), LIMIT).unwrap();
    let future = s.enqueue(&mail("future@example.org", 1000), LIMIT).unwrap();
    assert_eq!(s.next_due().unwrap(), Some(100));

    assert_eq!(s.claim_due(99, 10, LEASE).unwrap(), vec![]);
    assert_eq!(s.claim_due(300, 0, LEASE).unwrap(), vec![]);
    let claimed = s.claim_due(300, 2, LEASE).unwrap();
    assert_eq!(ids(&claimed), vec![early, tie]);
    let until = 300 + LEASE.as_secs();
    assert_eq!(claimed[0].1, mail("early@example.org", until));
    // What is claimed is not due again, from either handle, until the
    // lease runs out: then it is, as if its bridge had died.
    assert_eq!(ids(&b.other.claim_due(300, 10, LEASE).unwrap()), vec![late]);
    assert_eq!(s.claim_due(until - 1, 10, LEASE).unwrap(), vec![]);
    assert_eq!(s.next_due().unwrap(), Some(until));
    let again = b.other.claim_due(until, 10, LEASE).unwrap();
    assert_eq!(ids(&again), vec![late, early, tie]);
    assert_eq!(s.get(future).unwrap().unwrap().next_attempt, 1000);
    assert_eq!(
        ids(&s.list().unwrap()),
        vec![late, early, tie, future],
        "list is by id"
    );
}

fn settling_a_claim_reschedules_gives_up_or_removes(b: &Backend) {
    let s = &b.store;
    let a = s.enqueue(&mail("a@example.org", 100), LIMIT).unwrap();
    let c = s.enqueue(&mail("c@example.org", 100), LIMIT).unwrap();
    s.claim_due(100, 10, LEASE).unwrap();
    s.reschedule(a, 400, 1, "451 4.3.0 relay busy").unwrap();
    let item = s.get(a).unwrap().unwrap();
    assert_eq!(
        (item.attempts, item.next_attempt, item.last_error.as_deref()),
        (1, 400, Some("451 4.3.0 relay busy"))
    );
    assert_eq!(item.message, mail("a@example.org", 100).message);

    let undeliverable = Undeliverable {
        status: "5.1;Service unavailable".into(),
        why: "550 no such user".into(),
        reports: 2,
    };
    s.give_up(c, 150, &undeliverable).unwrap();
    let (id, item) = s.claim_due(150, 10, LEASE).unwrap().remove(0);
    assert_eq!(id, c);
    assert_eq!(item.given_up.as_ref(), Some(&undeliverable));

    assert_eq!(s.remove(a).unwrap().unwrap().recipient, "a@example.org");
    assert_eq!(s.remove(a).unwrap(), None);
    assert_eq!(s.get(a).unwrap(), None);
    assert!(matches!(
        s.reschedule(a, 1, 1, "x"),
        Err(StoreError::NotQueued { id }) if id == a
    ));
    assert!(matches!(
        s.give_up(a, 1, &undeliverable),
        Err(StoreError::NotQueued { .. })
    ));
    let next = s.enqueue(&mail("n@example.org", 1), LIMIT).unwrap();
    assert!(next > c, "ids are never reused: {next} after {c}");
}

fn a_full_queue_refuses_and_says_so(b: &Backend) {
    let s = &b.store;
    s.enqueue(&mail("1@example.org", 1), 2).unwrap();
    s.enqueue(&mail("2@example.org", 1), 2).unwrap();
    let err = s.enqueue(&mail("3@example.org", 1), 2).unwrap_err();
    assert!(matches!(err, StoreError::QueueFull { limit: 2 }), "{err:?}");
    assert!(
        err.to_string().contains("queue is full (2 messages"),
        "{err}"
    );
    assert_eq!(s.list().unwrap().len(), 2);
    // Room again once one is gone.
    let first = s.list().unwrap()[0].0;
    s.remove(first).unwrap();
    s.enqueue(&mail("3@example.org", 1), 2).unwrap();
}

fn tokens_are_stable_per_key_renewed_and_expire(b: &Backend) {
    let s = &b.store;
    let bob = s.token_for(&key("bob@example.org"), 1_000).unwrap();
    assert_eq!(bob.len(), 20);
    assert!(bob
        .bytes()
        .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)));
    // Shared: the other handle (another bridge) gets the same token.
    assert_eq!(b.other.token_for(&key("bob@example.org"), 10).unwrap(), bob);
    let carol = s.token_for(&key("carol@example.org"), 1_000).unwrap();
    assert_ne!(bob, carol);
    assert_eq!(
        b.other
            .resolve_token(&bob.to_ascii_uppercase(), 999)
            .unwrap(),
        Some(key("bob@example.org"))
    );
    assert_eq!(s.resolve_token(&bob, 1_000).unwrap(), None, "expired");
    assert_eq!(s.resolve_token("zzzzzzzzzzzzzzzzzzzz", 1).unwrap(), None);
    // Renewed well past its expiry: valid longer, same token.
    assert_eq!(s.token_for(&key("bob@example.org"), 500_000).unwrap(), bob);
    assert!(s.resolve_token(&bob, 400_000).unwrap().is_some());
    // An earlier expiry never shortens it.
    assert_eq!(s.token_for(&key("bob@example.org"), 2_000).unwrap(), bob);
    assert!(s.resolve_token(&bob, 400_000).unwrap().is_some());
    assert_eq!(s.purge_expired(1_000).unwrap(), 1, "carol's token");
    assert_eq!(s.resolve_token(&carol, 1).unwrap(), None);
    assert!(s.resolve_token(&bob, 1).unwrap().is_some());
    assert_ne!(
        s.token_for(&key("carol@example.org"), 900_000).unwrap(),
        carol,
        "a purged token is never handed out again for its key"
    );
}

fn idempotency_answers_last_until_they_expire(b: &Backend) {
    let s = &b.store;
    s.remember("key one", b"answer 1", 500).unwrap();
    assert_eq!(
        b.other.recall("key one", 499).unwrap(),
        Some(b"answer 1".to_vec())
    );
    assert_eq!(s.recall("key one", 500).unwrap(), None);
    assert_eq!(s.recall("key two", 1).unwrap(), None);
    s.remember("key one", b"answer 2", 900).unwrap();
    assert_eq!(
        s.recall("key one", 600).unwrap(),
        Some(b"answer 2".to_vec())
    );
    s.remember("key two", b"x", 700).unwrap();
    assert_eq!(s.purge_expired(699).unwrap(), 0);
    assert_eq!(s.purge_expired(700).unwrap(), 1);
    assert_eq!(
        s.recall("key one", 600).unwrap(),
        Some(b"answer 2".to_vec())
    );
}

fn sent_records_are_found_case_insensitively_and_purged(b: &Backend) {
    let s = &b.store;
    let notice = mail("bob@example.org", 1).notice.unwrap();
    let carol = mail("carol@example.org", 1).notice.unwrap();
    s.record_sent(&[notice.clone(), carol.clone()], 500)
        .unwrap();
    let shouted = notice.message_id.to_ascii_uppercase();
    assert_eq!(b.other.sent(&shouted, 499).unwrap(), Some(notice.clone()));
    assert_eq!(b.other.sent(&carol.message_id, 499).unwrap(), Some(carol));
    assert_eq!(s.sent(&notice.message_id, 500).unwrap(), None);
    assert_eq!(s.sent("other@bridge.example", 1).unwrap(), None);
    // Recorded again (a retry of the same POST): one record, the later expiry.
    s.record_sent(std::slice::from_ref(&notice), 600).unwrap();
    assert_eq!(
        s.sent(&notice.message_id, 599).unwrap(),
        Some(notice.clone())
    );
    s.remember("idem", b"x", 500).unwrap();
    assert_eq!(s.purge_expired(499).unwrap(), 0);
    assert_eq!(s.purge_expired(500).unwrap(), 2);
    assert_eq!(s.sent(&notice.message_id, 1).unwrap(), Some(notice.clone()));
    assert_eq!(s.purge_expired(600).unwrap(), 1);
    assert_eq!(s.sent(&notice.message_id, 1).unwrap(), None);
}

/// Two workers (two bridges on PostgreSQL) claiming one queue at once:
/// every item is claimed by exactly one of them.
fn concurrent_claims_never_take_one_item_twice(b: &Backend) {
    let total = 200;
    for n in 0..total {
        b.store
            .enqueue(&mail(&format!("{n}@example.org"), 1), LIMIT)
            .unwrap();
    }
    let workers: Vec<_> = [b.store.clone(), b.other.clone()]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let claimed = store.claim_due(10, 7, LEASE).unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(ids(&claimed));
                }
            })
        })
        .collect();
    let claims: Vec<Vec<u64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let all: Vec<u64> = claims.concat();
    let distinct: HashSet<u64> = all.iter().copied().collect();
    println!(
        "claimed by each worker: {:?}",
        claims.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(all.len(), total, "claimed {} times", all.len());
    assert_eq!(distinct.len(), total);
}

#[test]
fn migrations_are_versioned_and_run_once_by_bridges_starting_together() {
    let server = Postgres::start();
    let url = server.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let settings = settings(&url);
            std::thread::spawn(move || PostgresStore::open(&settings).map(drop))
        })
        .collect();
    for open in opens {
        open.join().unwrap().unwrap();
    }
    assert_eq!(
        server.query(
            &db,
            "SELECT string_agg(version::text, ',') FROM schema_version"
        ),
        "1"
    );
    // A database a newer bridge migrated is refused, saying so.
    server.query(&db, "INSERT INTO schema_version (version) VALUES (2)");
    let err = PostgresStore::open(&settings(&url)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 2,
                known: 1,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("upgrade the bridge"), "{text}");
}

#[test]
fn an_outage_is_a_temporary_error_that_says_why_and_recovery_needs_no_restart() {
    let mut server = Postgres::start();
    let url = server.database();
    let store = PostgresStore::open(&settings(&url)).unwrap();
    let id = store.enqueue(&mail("bob@example.org", 1), LIMIT).unwrap();
    server.stop();
    let err = store.get(id).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Unavailable { op: "get", .. }),
        "{err:?}"
    );
    assert!(text.starts_with("state store unavailable: get: "), "{text}");
    let err = store
        .enqueue(&mail("carol@example.org", 1), LIMIT)
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    server.restart();
    assert_eq!(store.get(id).unwrap().unwrap().recipient, "bob@example.org");
    assert_eq!(store.list().unwrap().len(), 1, "nothing half-written");
}

#[test]
fn an_unreachable_database_fails_start_up_naming_it_without_the_password() {
    let port = support::free_port();
    let url = format!("postgres://bridge:s3cret@127.0.0.1:{port}/bridge");
    let err = PostgresStore::open(&settings(&url)).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("state store unavailable: migrate"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// The numbers behind README "Sizing for 100 million mailboxes": fills a
/// fresh database with representative rows through the store and prints
/// what PostgreSQL says they take, table and indexes (and TOAST) included.
/// The bounds fail the test if a change makes rows much larger.
#[test]
fn row_sizes_for_the_sizing_estimate() {
    let server = Postgres::start();
    let url = server.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let store = PostgresStore::open(&settings(&url)).unwrap();
    let rows = 2000;
    let queued = 400;
    for n in 0..rows {
        let uid = format!("{n:08x}-6f1c-4be3-9b0e-0242ac120002");
        let attendee = format!("mailto:attendee{n}@example.org");
        // What the core records for one mailed recipient.
        let answer = format!(
            r#"[{{"r":"{attendee}","s":"1.1;Sent","d":"250 2.0.0 Ok: queued as 4F2A1B{n:04X}"}}]"#
        );
        let key = format!("mailto:organizer@example.com\n{uid}@example.com\n{n:016x}");
        store.remember(&key, answer.as_bytes(), u64::MAX).unwrap();
        let notice = FailureNotice {
            message_id: format!("{uid}.{n}@bridge.example.net"),
            organizer: "mailto:organizer@example.com".into(),
            attendee: attendee.clone(),
            uid: format!("{uid}@example.com"),
            component: "VEVENT".into(),
            recurrence_id: None,
        };
        store.record_sent(&[notice], u64::MAX).unwrap();
        let key = TokenKey {
            organizer: "mailto:organizer@example.com".into(),
            attendee,
            uid: format!("{uid}@example.com"),
        };
        store.token_for(&key, u64::MAX).unwrap();
    }
    // A typical invitation mail: headers, a DKIM signature, a text part
    // and the calendar (some of it base64, as little compressible as
    // mail is), about 4 KB.
    for n in 0..queued {
        // xorshift64: as incompressible as base64 of real data.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
        let noise: String = (0..1500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                char::from(alphabet[(x % 64) as usize])
            })
            .collect();
        let mut m = mail(&format!("attendee{n}@example.org"), 1);
        m.message = format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=bridge.example.net; s=s1; h=from:to:subject:date:message-id; b={}\r\n\
             From: organizer@example.com\r\nTo: attendee{n}@example.org\r\nSubject: Invitation: Quarterly planning\r\n\
             Message-ID: <{n}@bridge.example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n\
             --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYou are invited to Quarterly planning on 2030-01-07 at 10:00 (Europe/Berlin).\r\n\
             --b\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{noise}\r\n--b--\r\n",
            &noise[..344]
        )
        .into_bytes();
        store.enqueue(&m, LIMIT).unwrap();
    }
    server.query(&db, "VACUUM ANALYZE");
    println!(
        "table         rows  row bytes (pg_column_size)  bytes per row with indexes and TOAST"
    );
    let mut per_row = std::collections::BTreeMap::new();
    for (table, count) in [
        ("idempotency", rows),
        ("sent_mail", rows),
        ("reply_tokens", rows),
        ("queue", queued),
    ] {
        let column: f64 = server
            .query(
                &db,
                &format!("SELECT avg(pg_column_size(t.*)) FROM {table} t"),
            )
            .parse()
            .unwrap();
        let total: f64 = server
            .query(&db, &format!("SELECT pg_total_relation_size('{table}')"))
            .parse()
            .unwrap();
        let row = total / count as f64;
        println!("{table:<13} {count:>5}  {column:>26.0}  {row:>37.0}");
        per_row.insert(table, row);
    }
    assert!(per_row["idempotency"] < 300.0, "{per_row:?}");
    assert!(per_row["sent_mail"] < 500.0, "{per_row:?}");
    assert!(per_row["reply_tokens"] < 500.0, "{per_row:?}");
    assert!(per_row["queue"] < 8000.0, "{per_row:?}");
}
