//! Durable state of the bridge: the outbound iMIP mail queue, reply tokens,
//! idempotency keys and the records of mail sent (DESIGN.md, "State").
//!
//! Everything goes through the one [`Store`] trait: the embedded
//! [`RedbStore`] (one bridge) or [`PostgresStore`] (a database several
//! bridges share), the callers the same for both. [`Handover`] opens redb
//! only once a previous process let go of it (upgrades), each operation
//! waiting a bounded time meanwhile; [`blocking`] runs store work off the
//! threads that serve connections. `group_commit` lets concurrent redb
//! writers share one flush to disk.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod group_commit;
pub mod handover;
pub mod postgres_store;
pub mod redb_store;
pub use handover::Handover;
pub use postgres_store::PostgresStore;
pub use redb_store::RedbStore;

/// Seconds since the Unix epoch; the store never reads the clock itself
/// (callers pass `now`), so tests control time.
pub type UnixTime = u64;

/// A failed store operation.
///
/// The message names the operation and the database file; the underlying
/// cause is the error's `source()`, so print the whole chain (`{:#}` through
/// anyhow) to see both without repeating either. redb's errors are boxed:
/// some are large, and every `Result` of the store would carry their size.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("{op}: cannot create directory {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process (or another `open` in this one) holds the file's
    /// lock; two bridges must never share one embedded queue.
    #[error(
        "state database {} is already in use (locked by another bridge process?)",
        path.display()
    )]
    AlreadyOpen { path: PathBuf },
    /// After `serve --upgrade`, the old process still held the file when
    /// the wait for it ended (`server.handover_timeout_secs`).
    #[error(
        "state database {} is still held by the previous bridge process after {} s (server.handover_timeout_secs)",
        path.display(),
        timeout.as_secs()
    )]
    HandoverTimeout {
        path: PathBuf,
        timeout: std::time::Duration,
    },
    /// This process handed the file to the next one (an upgrade) and
    /// does no more work on it.
    #[error("state database {} has been handed over to the new bridge process", path.display())]
    HandedOver { path: PathBuf },
    /// The file exists but is not a usable database (wrong format, I/O).
    #[error("cannot open state database {}", path.display())]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("{op}: cannot begin a transaction on {}", path.display())]
    Transaction {
        op: &'static str,
        path: PathBuf,
        source: Box<redb::TransactionError>,
    },
    #[error("{op}: cannot open a table of {}", path.display())]
    Table {
        op: &'static str,
        path: PathBuf,
        source: Box<redb::TableError>,
    },
    #[error("{op}: cannot commit to {}", path.display())]
    Commit {
        op: &'static str,
        path: PathBuf,
        source: Box<redb::CommitError>,
    },
    #[error("{op}: cannot read or write {}", path.display())]
    Storage {
        op: &'static str,
        path: PathBuf,
        source: Box<redb::StorageError>,
    },
    /// A stored record does not decode (or, never in practice, encode):
    /// reported, naming the table and key, instead of panicking.
    #[error("corrupt {what} in {}", path.display())]
    Corrupt {
        what: String,
        path: PathBuf,
        #[source]
        why: serde_json::Error,
    },
    /// Two records that are written together disagree (an index entry
    /// without its item): only possible if the file was altered by hand.
    #[error("inconsistent {what} in {}", path.display())]
    Inconsistent { what: String, path: PathBuf },
    /// `reschedule` of an id that is not (or no longer) queued.
    #[error("queue item {id} does not exist")]
    NotQueued { id: u64 },
    /// Flushes to disk have been failing and `queued` records already
    /// wait for the next one: refused at once rather than held in memory.
    #[error("{op}: {queued} records wait for a flush to {} that keeps failing", path.display())]
    Backlog {
        op: &'static str,
        path: PathBuf,
        queued: usize,
    },
    /// `enqueue` when the queue already holds its limit.
    #[error("the outbound mail queue is full ({limit} messages, queue.max_messages)")]
    QueueFull { limit: usize },
    /// The shared database cannot be reached, or refused the statement:
    /// a temporary failure, for the caller to answer as one (deferred
    /// mail, `5.1` to a POST) rather than lose anything.
    #[error("state store unavailable: {op}: {reason}")]
    Unavailable { op: &'static str, reason: String },
    /// The database was migrated by a newer bridge.
    #[error("state database {url} has schema version {found}; this bridge knows only up to {known}: upgrade the bridge")]
    SchemaTooNew {
        url: String,
        found: i32,
        known: usize,
    },
    /// A stored row does not decode.
    #[error("corrupt {what} in {url}")]
    CorruptRow {
        what: String,
        url: String,
        #[source]
        why: serde_json::Error,
    },
    /// Work handed to a blocking thread did not come back (it panicked,
    /// or the runtime is shutting down).
    #[error("{op}: the store's worker thread failed: {reason}")]
    Worker { op: &'static str, reason: String },
}

/// One outbound iMIP mail waiting for (re)delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMail {
    pub envelope_from: String,
    /// One e-mail address: one mail per recipient.
    pub recipient: String,
    /// The complete RFC 5322 message.
    #[serde(with = "message_text")]
    pub message: Vec<u8>,
    pub attempts: u32,
    pub queued_at: UnixTime,
    pub next_attempt: UnixTime,
    pub last_error: Option<String>,
    pub notice: Option<FailureNotice>,
    /// Set once delivery is given up: the item then stays, due again only
    /// to report the failure, until the organizer has been told (or cannot
    /// ever be), so a crash or a receiver that is down loses no notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_up: Option<Undeliverable>,
}

/// Why a queued mail will not be delivered, and how often telling the
/// organizer has failed so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undeliverable {
    /// The request-status the failure maps to, e.g. `5.1;Service unavailable`.
    pub status: String,
    pub why: String,
    /// Failed attempts to post the failure REPLY.
    pub reports: u32,
}

/// What is needed to tell the organizer if delivery finally fails (a
/// METHOD:REPLY with REQUEST-STATUS:5.1 posted to the organizer's receiver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNotice {
    /// The Message-ID (without `<>`) of the mail this notice is about: a
    /// delivery report naming it is honoured only while its record lasts.
    /// Empty in queue items written before it was recorded.
    #[serde(default)]
    pub message_id: String,
    pub organizer: String,
    pub attendee: String,
    pub uid: String,
    pub component: String,
    pub recurrence_id: Option<String>,
}

/// What a reply token stands for. Addresses are compared byte for byte:
/// callers pass normalized (lower-case) mailto addresses. UIDs are at most
/// 255 octets (the iTIP parser refuses longer ones), so a key stays small.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenKey {
    pub organizer: String,
    pub attendee: String,
    pub uid: String,
}

/// The queue at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueSummary {
    pub messages: u64,
    /// `queued_at` of the oldest item; None when the queue is empty.
    pub oldest_queued_at: Option<UnixTime>,
}

/// The bridge's durable state, whatever holds it.
///
/// The methods block (a redb commit waits for fsync): from async code call
/// them through [`blocking`].
pub trait Store: Send + Sync {
    /// Durable (committed and fsynced) before it returns: the iSchedule
    /// answer "1.0;Pending" is only sent after this. Refused with
    /// [`StoreError::QueueFull`] when `limit` messages are queued already.
    fn enqueue(&self, mail: &QueuedMail, limit: usize) -> Result<u64, StoreError>;
    /// Claims the items with next_attempt <= now, oldest next_attempt
    /// first (then by id), at most `limit`: each one's next_attempt moves to
    /// `now + lease` in the same transaction, and the items are returned
    /// with that next_attempt. Several bridges sharing one queue thus never
    /// take the same item, and an item whose bridge dies before settling it
    /// (`reschedule`, `give_up`, `remove`) is due again when the lease runs
    /// out: sent late rather than lost. The lease must outlast the sending
    /// of the whole claim.
    fn claim_due(
        &self,
        now: UnixTime,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(u64, QueuedMail)>, StoreError>;
    /// Earliest next_attempt of any item (for the worker's sleep), None if empty.
    fn next_due(&self) -> Result<Option<UnixTime>, StoreError>;
    /// Records a failed attempt; [`StoreError::NotQueued`] if `id` is unknown.
    fn reschedule(
        &self,
        id: u64,
        next_attempt: UnixTime,
        attempts: u32,
        last_error: &str,
    ) -> Result<(), StoreError>;
    /// Marks an item undeliverable (or records another failed report of
    /// it) and makes it due at `next_attempt` for its failure report;
    /// [`StoreError::NotQueued`] if `id` is unknown.
    fn give_up(
        &self,
        id: u64,
        next_attempt: UnixTime,
        given_up: &Undeliverable,
    ) -> Result<(), StoreError>;
    /// Takes an item out of the queue (delivered, or its failure reported), returning it.
    fn remove(&self, id: u64) -> Result<Option<QueuedMail>, StoreError>;
    fn get(&self, id: u64) -> Result<Option<QueuedMail>, StoreError>;
    /// All items, by id.
    fn list(&self) -> Result<Vec<(u64, QueuedMail)>, StoreError>;
    /// How many items the queue holds and when the oldest was queued,
    /// without reading them all: the operator's depth and age gauges.
    fn queue_summary(&self) -> Result<QueueSummary, StoreError>;
    /// Reply tokens: the same key always gets the same token (so updates
    /// keep the reply address); new keys get a fresh random token of 20
    /// lower-case base32 characters [a-z2-7]. The token is valid until
    /// `expires_at`, or later if it already was: each mail for the event
    /// renews it, so replies keep working as long as the event is alive.
    fn token_for(&self, key: &TokenKey, expires_at: UnixTime) -> Result<String, StoreError>;
    /// The key a token was issued for, while it has not expired (`now <
    /// expires_at`); the token is matched case-insensitively (mail systems
    /// may change the local part's case).
    fn resolve_token(&self, token: &str, now: UnixTime) -> Result<Option<TokenKey>, StoreError>;
    /// Idempotency: remember an answer under a key until `expires_at`
    /// (replacing an earlier one); recall returns it only while not expired,
    /// that is while `now < expires_at`.
    fn remember(&self, key: &str, value: &[u8], expires_at: UnixTime) -> Result<(), StoreError>;
    fn recall(&self, key: &str, now: UnixTime) -> Result<Option<Vec<u8>>, StoreError>;
    /// Records that the bridge mailed each notice's `message_id`, about
    /// whom, until `expires_at`: only such mail may come back as a delivery
    /// report. The Message-ID is matched case-insensitively. All in one
    /// commit: one request's mails to many recipients cost one fsync, not
    /// one each.
    fn record_sent(
        &self,
        notices: &[FailureNotice],
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;
    /// The record of a Message-ID this bridge mailed, while not expired.
    fn sent(&self, message_id: &str, now: UnixTime) -> Result<Option<FailureNotice>, StoreError>;
    /// Deletes the idempotency entries, records of sent mail and reply
    /// tokens with `expires_at <= now`, returning how many. Queue items are
    /// not touched.
    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError>;
}

/// Runs store work on tokio's blocking threads. A commit waits for fsync
/// (milliseconds, far more on a busy disk); on an async worker thread that
/// wait would stall every connection the thread serves, HTTP and SMTP alike.
/// Chosen over an async `Store` trait: redb is synchronous, so an async
/// trait would still need this underneath, and the synchronous trait stays
/// usable from the CLI and tests as it is.
pub async fn blocking<R, F>(
    store: &std::sync::Arc<dyn Store>,
    op: &'static str,
    work: F,
) -> Result<R, StoreError>
where
    R: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<R, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(store.as_ref()))
        .await
        .map_err(|e| StoreError::Worker {
            op,
            reason: e.to_string(),
        })?
}

/// A renewal is written only when the stored expiry falls this much short
/// of the asked one, so a burst of mail for one event costs one fsync.
const RENEW_SLACK: UnixTime = 86_400;

/// Length of a reply token: 20 base32 characters carry 100 random bits,
/// too many to guess, short enough for an address local part.
const TOKEN_LEN: usize = 20;
const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A fresh reply token. It authenticates inbound replies, so it comes from
/// rand's thread RNG, a cryptographically secure generator; every backend
/// uses this one function so tokens look the same whatever stores them.
fn new_token() -> String {
    let bytes: [u8; TOKEN_LEN] = rand::random();
    // 256 is a multiple of 32, so the low five bits are uniform.
    bytes
        .iter()
        .map(|b| char::from(BASE32_LOWER[usize::from(b & 31)]))
        .collect()
}

/// Serializes the message as a JSON string when it is UTF-8 (what the bridge
/// writes: 7-bit or 8BITMIME UTF-8 mail) rather than serde's default array of
/// numbers, which is about 3.5 times larger and unreadable in a database
/// dump. Other bytes fall back to the array; both forms read back. Needs a
/// self-describing format such as JSON.
mod message_text {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(message: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(message) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.serialize_bytes(message),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(MessageVisitor)
    }

    struct MessageVisitor;

    impl<'de> Visitor<'de> for MessageVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mail message as a string or an array of bytes")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            Ok(text.as_bytes().to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut message = Vec::new();
            while let Some(byte) = seq.next_element()? {
                message.push(byte);
            }
            Ok(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(message: &[u8]) -> QueuedMail {
        QueuedMail {
            envelope_from: "bridge@bridge.example".into(),
            recipient: "bob@example.org".into(),
            message: message.to_vec(),
            attempts: 0,
            queued_at: 1,
            next_attempt: 1,
            last_error: None,
            notice: None,
            given_up: None,
        }
    }

    #[test]
    fn utf8_message_is_stored_as_a_json_string() {
        let original = mail(b"Subject: Hi\r\n\r\nCaf\xc3\xa9\r\n");
        let json = serde_json::to_string(&original).unwrap();
        assert!(
            json.contains(r#""message":"Subject: Hi\r\n\r\nCafé\r\n""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<QueuedMail>(&json).unwrap(), original);
    }

    #[test]
    fn non_utf8_message_round_trips_as_bytes() {
        let original = mail(b"Subject: x\r\n\r\n\xff\xfe\x00");
        let json = serde_json::to_string(&original).unwrap();
        assert!(json.contains(r#""message":[83,"#), "{json}");
        assert_eq!(serde_json::from_str::<QueuedMail>(&json).unwrap(), original);
    }

    #[test]
    fn message_of_another_type_is_rejected() {
        let json = serde_json::to_string(&mail(b"x"))
            .unwrap()
            .replace(r#""message":"x""#, r#""message":7"#);
        let err = serde_json::from_str::<QueuedMail>(&json).unwrap_err();
        assert!(err.to_string().contains("a mail message"), "{err}");
    }

    #[test]
    fn tokens_are_20_lower_case_base32_characters() {
        for _ in 0..100 {
            let token = new_token();
            assert_eq!(token.len(), TOKEN_LEN);
            assert!(token.bytes().all(|b| BASE32_LOWER.contains(&b)), "{token}");
        }
        assert_ne!(new_token(), new_token());
    }
}
