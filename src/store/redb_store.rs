//! The embedded default [`Store`]: one redb file, `<dir>/bridge.redb`.
//!
//! Tables (all created at open):
//!
//! | table                | key                        | value                         |
//! |----------------------|----------------------------|-------------------------------|
//! | `queue`              | id `u64`                   | [`QueuedMail`] as JSON        |
//! | `queue_by_due`       | (next_attempt, id)         | `()`: index for `due`         |
//! | `counters`           | `"next_queue_id"`          | `u64`                         |
//! | `reply_tokens`       | token                      | [`TokenKey`] and expiry, JSON |
//! | `reply_token_by_key` | (organizer, attendee, uid) | token                         |
//! | `idempotency`        | key                        | (expires_at, answer bytes)    |
//! | `sent`               | Message-ID, lower case     | (expires_at, [`FailureNotice`] as JSON) |
//!
//! Records are JSON (serde_json) rather than a binary encoding: a dump with
//! redb tools is readable, it is small enough (the mail itself is stored as
//! a JSON string, see `message_text`), and new optional fields can be added
//! without migrating old records. Idempotency answers are already opaque
//! bytes, so they are stored natively next to their expiry.
//!
//! Every write is on disk before it returns, which is what lets the bridge
//! answer "1.0;Pending" once `enqueue` returns. Writes commit with
//! `Durability::None` and then wait for a shared flush ([`GroupCommit`]):
//! concurrent writers (16 LMTP sessions, a POST's idempotency record
//! beside another's sent records) share one `fdatasync` instead of taking
//! turns at one each. Writes that only add a record (idempotency answers,
//! records of mail sent) skip their own transaction: they are queued and
//! written in the flush's. A reader may see a write whose writer is still
//! waiting for that flush; a writer that read it is itself not answered
//! before a flush that covers both. redb serializes write transactions, so
//! read-modify-write sequences (the id counter, a token issued once per
//! key) need no further locking.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{
    Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::group_commit::GroupCommit;
use super::{
    new_token, FailureNotice, QueueSummary, QueuedMail, Store, StoreError, TokenKey, Undeliverable,
    UnixTime, RENEW_SLACK,
};

pub(super) const FILE_NAME: &str = "bridge.redb";

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// Lets `due` and `next_due` read only the items that are due, in order,
/// instead of decoding every queued message.
const QUEUE_BY_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("queue_by_due");
/// Items claimed and not yet settled, with the next_attempt they had:
/// only one process ever has the file, so at open every lease is a dead
/// process's, and its items are due again at once instead of when the
/// lease would have run out.
const QUEUE_LEASES: TableDefinition<u64, u64> = TableDefinition::new("queue_leases");
/// Kept in the database so ids are never reused, even after the queue was
/// empty and the bridge restarted (log lines stay unambiguous).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_QUEUE_ID: &str = "next_queue_id";
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("reply_tokens");
const TOKEN_BY_KEY: TableDefinition<(&str, &str, &str), &str> =
    TableDefinition::new("reply_token_by_key");
const IDEMPOTENCY: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("idempotency");
/// What the bridge mailed, so that a delivery report is honoured only for it.
const SENT: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("sent");

/// The bridge's state in one redb file, locked against a second process.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    group: GroupCommit<Added>,
}

/// Records held for the next flush once flushes fail (a full disk): a few
/// seconds of a busy bridge's writes, a few MiB; their writers got the
/// flush's error, and later ones get [`StoreError::Backlog`].
const MAX_BACKLOG: usize = 10_000;

/// A record that only adds (or replaces) one entry: queued for the next
/// flush's transaction instead of committing one of its own.
struct Added {
    table: AddedTo,
    key: String,
    expires_at: UnixTime,
    value: Vec<u8>,
}

/// The tables [`Added`] records go to; both map a key to an expiry and
/// opaque bytes.
#[derive(Debug, Clone, Copy)]
enum AddedTo {
    Idempotency,
    Sent,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// redb's page cache: enough for the queue and the hot records.
const CACHE_BYTES: usize = 16 << 20;

impl RedbStore {
    /// Opens (creating if needed) `dir` and `<dir>/bridge.redb` with all
    /// tables. Fails with [`StoreError::AlreadyOpen`] while another process,
    /// or another `RedbStore` in this one, has the file open: redb holds an
    /// exclusive `flock` on it.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            op: "open",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        // redb caches up to 1 GiB by default; the records are small and
        // mostly written once, so a bounded cache keeps memory bounded.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| match source {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::AlreadyOpen { path: path.clone() }
                }
                source => StoreError::Open {
                    path: path.clone(),
                    source: Box::new(source),
                },
            })?;
        let store = RedbStore {
            db,
            path,
            group: GroupCommit::new(MAX_BACKLOG),
        };
        store.create_tables()?;
        store.release_leases()?;
        Ok(store)
    }

    fn release_leases(&self) -> Result<(), StoreError> {
        self.write("open", |txn, op| {
            let leases: Vec<(u64, u64)> = {
                let table = txn.open_table(QUEUE_LEASES).during(op)?;
                let entries = table.iter().during(op)?;
                entries
                    .map(|e| e.during(op).map(|(id, was)| (id.value(), was.value())))
                    .collect::<Result<_, _>>()?
            };
            for (id, was) in leases {
                // Settled items have no lease: an entry without its item
                // cannot be, and is simply dropped with the others.
                if let Some(mut mail) = delete_mail(txn, id, op)? {
                    mail.next_attempt = was;
                    insert_mail(txn, id, &mail, op)?;
                }
            }
            Ok(())
        })
    }

    /// Opening a table in a write transaction creates it, so later read
    /// transactions never meet a missing table.
    fn create_tables(&self) -> Result<(), StoreError> {
        self.write("open", |txn, op| {
            txn.open_table(QUEUE).during(op)?;
            txn.open_table(QUEUE_BY_DUE).during(op)?;
            txn.open_table(COUNTERS).during(op)?;
            txn.open_table(TOKENS).during(op)?;
            txn.open_table(TOKEN_BY_KEY).during(op)?;
            txn.open_table(IDEMPOTENCY).during(op)?;
            txn.open_table(SENT).during(op)?;
            txn.open_table(QUEUE_LEASES).during(op)?;
            Ok(())
        })
    }

    fn op(&self, name: &'static str) -> Op<'_> {
        Op {
            name,
            path: &self.path,
        }
    }

    /// Runs `body` in one write transaction, commits it and returns once
    /// it is on disk; an error from `body` drops the transaction, which
    /// aborts it.
    fn write<R>(
        &self,
        name: &'static str,
        body: impl FnOnce(&WriteTransaction, Op<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let op = self.op(name);
        let mut txn = self.db.begin_write().during(op)?;
        txn.set_durability(Durability::None);
        let result = body(&txn, op)?;
        txn.commit().during(op)?;
        let pending = self.group.committed();
        self.group
            .wait_durable(pending, |added| self.flush(added, op))?;
        Ok(result)
    }

    /// Adds `records` in the next flush's transaction and returns once
    /// that is on disk.
    fn add(&self, name: &'static str, records: Vec<Added>) -> Result<(), StoreError> {
        let op = self.op(name);
        let pending = self
            .group
            .queue(records)
            .map_err(|backlog| StoreError::Backlog {
                op: name,
                path: self.path.clone(),
                queued: backlog.queued,
            })?;
        self.group
            .wait_durable(pending, |added| self.flush(added, op))
    }

    /// Writes the queued records and makes every commit so far durable:
    /// redb persists the non-durable commits before an `Immediate` one.
    fn flush(&self, added: &[Added], op: Op<'_>) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().during(op)?;
        txn.set_durability(Durability::Immediate);
        if !added.is_empty() {
            // Each table opened once for the whole batch.
            let mut idempotency = txn.open_table(IDEMPOTENCY).during(op)?;
            let mut sent = txn.open_table(SENT).during(op)?;
            for record in added {
                let table = match record.table {
                    AddedTo::Idempotency => &mut idempotency,
                    AddedTo::Sent => &mut sent,
                };
                table
                    .insert(
                        record.key.as_str(),
                        (record.expires_at, record.value.as_slice()),
                    )
                    .during(op)?;
            }
        }
        txn.commit().during(op)
    }

    /// Runs `body` on a consistent snapshot, concurrently with writers.
    fn read<R>(
        &self,
        name: &'static str,
        body: impl FnOnce(&ReadTransaction, Op<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let op = self.op(name);
        let txn = self.db.begin_read().during(op)?;
        body(&txn, op)
    }
}

impl Store for RedbStore {
    fn enqueue(&self, mail: &QueuedMail, limit: usize) -> Result<u64, StoreError> {
        self.write("enqueue", |txn, op| {
            // In the same transaction as the insert: concurrent enqueues
            // cannot together overshoot the limit.
            let queued = txn.open_table(QUEUE).during(op)?.len().during(op)?;
            if queued >= limit as u64 {
                return Err(StoreError::QueueFull { limit });
            }
            let id = take_queue_id(txn, op)?;
            insert_mail(txn, id, mail, op)?;
            Ok(id)
        })
    }

    fn claim_due(
        &self,
        now: UnixTime,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        let until = now.saturating_add(lease.as_secs());
        self.write("claim_due", |txn, op| {
            let due: Vec<u64> = {
                let by_due = txn.open_table(QUEUE_BY_DUE).during(op)?;
                let entries = by_due.range(..=(now, u64::MAX)).during(op)?.take(limit);
                entries
                    .map(|entry| entry.during(op).map(|(key, _)| key.value().1))
                    .collect::<Result<_, _>>()?
            };
            let mut items = Vec::with_capacity(due.len());
            for id in due {
                let mut mail = delete_mail(txn, id, op)?.ok_or_else(|| op.inconsistent(id))?;
                let was = mail.next_attempt;
                mail.next_attempt = until;
                insert_mail(txn, id, &mail, op)?;
                txn.open_table(QUEUE_LEASES)
                    .during(op)?
                    .insert(id, was)
                    .during(op)?;
                items.push((id, mail));
            }
            Ok(items)
        })
    }

    fn next_due(&self) -> Result<Option<UnixTime>, StoreError> {
        self.read("next_due", |txn, op| {
            let by_due = txn.open_table(QUEUE_BY_DUE).during(op)?;
            let first = by_due.first().during(op)?;
            Ok(first.map(|(key, _)| key.value().0))
        })
    }

    fn reschedule(
        &self,
        id: u64,
        next_attempt: UnixTime,
        attempts: u32,
        last_error: &str,
    ) -> Result<(), StoreError> {
        self.write("reschedule", |txn, op| {
            let mut mail = delete_mail(txn, id, op)?.ok_or(StoreError::NotQueued { id })?;
            mail.next_attempt = next_attempt;
            mail.attempts = attempts;
            mail.last_error = Some(last_error.to_owned());
            insert_mail(txn, id, &mail, op)
        })
    }

    fn give_up(
        &self,
        id: u64,
        next_attempt: UnixTime,
        given_up: &Undeliverable,
    ) -> Result<(), StoreError> {
        self.write("give_up", |txn, op| {
            let mut mail = delete_mail(txn, id, op)?.ok_or(StoreError::NotQueued { id })?;
            mail.next_attempt = next_attempt;
            mail.given_up = Some(given_up.clone());
            insert_mail(txn, id, &mail, op)
        })
    }

    fn remove(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        self.write("remove", |txn, op| delete_mail(txn, id, op))
    }

    fn get(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        self.read("get", |txn, op| {
            load_mail(&txn.open_table(QUEUE).during(op)?, id, op)
        })
    }

    fn list(&self) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        self.read("list", |txn, op| {
            let queue = txn.open_table(QUEUE).during(op)?;
            let mut items = Vec::new();
            for entry in queue.iter().during(op)? {
                let (id, value) = entry.during(op)?;
                let id = id.value();
                items.push((id, decode(value.value(), || queue_item(id), op)?));
            }
            Ok(items)
        })
    }

    fn queue_summary(&self) -> Result<QueueSummary, StoreError> {
        self.read("queue_summary", |txn, op| {
            let queue = txn.open_table(QUEUE).during(op)?;
            // Ids grow with every enqueue and a retry keeps its id: the
            // first item is the oldest.
            let oldest = match queue.first().during(op)? {
                Some((id, value)) => {
                    let id = id.value();
                    let mail: QueuedMail = decode(value.value(), || queue_item(id), op)?;
                    Some(mail.queued_at)
                }
                None => None,
            };
            Ok(QueueSummary {
                messages: queue.len().during(op)?,
                oldest_queued_at: oldest,
            })
        })
    }

    fn token_for(&self, key: &TokenKey, expires_at: UnixTime) -> Result<String, StoreError> {
        // Most calls are for events that already have a token with plenty of
        // life left: a read transaction answers those without a write and
        // its fsync.
        let existing = self.read("token_for", |txn, op| {
            let Some(token) = find_token(&txn.open_table(TOKEN_BY_KEY).during(op)?, key, op)?
            else {
                return Ok(None);
            };
            let record = load_token(&txn.open_table(TOKENS).during(op)?, &token, op)?;
            Ok(record
                .filter(|r| r.lasts_until(expires_at.saturating_sub(RENEW_SLACK)))
                .map(|_| token))
        })?;
        if let Some(token) = existing {
            return Ok(token);
        }
        self.write("token_for", |txn, op| {
            let mut by_key = txn.open_table(TOKEN_BY_KEY).during(op)?;
            let mut tokens = txn.open_table(TOKENS).during(op)?;
            // Renewed, or issued: another thread may have issued one since
            // the read above.
            let token = match find_token(&by_key, key, op)? {
                Some(token) => token,
                None => {
                    let token = unused_token(&tokens, op)?;
                    by_key.insert(token_key(key), token.as_str()).during(op)?;
                    token
                }
            };
            let expires_at = load_token(&tokens, &token, op)?
                .and_then(|r| r.expires_at)
                .map_or(expires_at, |old| old.max(expires_at));
            let record = TokenRecord {
                key: key.clone(),
                expires_at: Some(expires_at),
            };
            let value = encode(&record, || token_item(&token), op)?;
            tokens.insert(token.as_str(), value.as_slice()).during(op)?;
            Ok(token)
        })
    }

    fn resolve_token(&self, token: &str, now: UnixTime) -> Result<Option<TokenKey>, StoreError> {
        let token = token.to_ascii_lowercase();
        self.read("resolve_token", |txn, op| {
            let record = load_token(&txn.open_table(TOKENS).during(op)?, &token, op)?;
            Ok(record
                .filter(|r| r.lasts_until(now.saturating_add(1)))
                .map(|r| r.key))
        })
    }

    fn remember(&self, key: &str, value: &[u8], expires_at: UnixTime) -> Result<(), StoreError> {
        let record = Added {
            table: AddedTo::Idempotency,
            key: key.to_owned(),
            expires_at,
            value: value.to_vec(),
        };
        self.add("remember", vec![record])
    }

    fn recall(&self, key: &str, now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("recall", |txn, op| {
            let table = txn.open_table(IDEMPOTENCY).during(op)?;
            let entry = table.get(key).during(op)?;
            Ok(entry.and_then(|guard| {
                let (expires_at, value) = guard.value();
                (now < expires_at).then(|| value.to_vec())
            }))
        })
    }

    fn record_sent(
        &self,
        notices: &[FailureNotice],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let op = self.op("record_sent");
        let records = notices
            .iter()
            .map(|notice| {
                let key = notice.message_id.to_ascii_lowercase();
                let value = encode(notice, || sent_record(&key), op)?;
                Ok(Added {
                    table: AddedTo::Sent,
                    key,
                    expires_at,
                    value,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        self.add("record_sent", records)
    }

    fn sent(&self, message_id: &str, now: UnixTime) -> Result<Option<FailureNotice>, StoreError> {
        let key = message_id.to_ascii_lowercase();
        self.read("sent", |txn, op| {
            let table = txn.open_table(SENT).during(op)?;
            let Some(entry) = table.get(key.as_str()).during(op)? else {
                return Ok(None);
            };
            let (expires_at, value) = entry.value();
            if now >= expires_at {
                return Ok(None);
            }
            decode(value, || sent_record(&key), op).map(Some)
        })
    }

    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        // Full scans: purging runs rarely and entries are small, so expiry
        // indexes would cost more on every write than they save.
        self.write("purge_expired", |txn, op| {
            let mut purged = 0;
            for table in [IDEMPOTENCY, SENT] {
                txn.open_table(table)
                    .during(op)?
                    .retain(|_, (expires_at, _)| {
                        let keep = now < expires_at;
                        purged += usize::from(!keep);
                        keep
                    })
                    .during(op)?;
            }
            let mut tokens = txn.open_table(TOKENS).during(op)?;
            let mut expired = Vec::new();
            for entry in tokens.iter().during(op)? {
                let (token, value) = entry.during(op)?;
                let token = token.value().to_owned();
                let record: TokenRecord = decode(value.value(), || token_item(&token), op)?;
                if !record.lasts_until(now.saturating_add(1)) {
                    expired.push((token, record.key));
                }
            }
            let mut by_key = txn.open_table(TOKEN_BY_KEY).during(op)?;
            for (token, key) in &expired {
                tokens.remove(token.as_str()).during(op)?;
                by_key.remove(token_key(key)).during(op)?;
            }
            Ok(purged + expired.len())
        })
    }
}

/// Hands out the next queue id and advances the stored counter.
fn take_queue_id(txn: &WriteTransaction, op: Op<'_>) -> Result<u64, StoreError> {
    let mut counters = txn.open_table(COUNTERS).during(op)?;
    let id = counters
        .get(NEXT_QUEUE_ID)
        .during(op)?
        .map_or(1, |guard| guard.value());
    counters.insert(NEXT_QUEUE_ID, id + 1).during(op)?;
    Ok(id)
}

/// Writes an item and its `queue_by_due` entry, which always go together.
fn insert_mail(
    txn: &WriteTransaction,
    id: u64,
    mail: &QueuedMail,
    op: Op<'_>,
) -> Result<(), StoreError> {
    let value = encode(mail, || queue_item(id), op)?;
    let mut queue = txn.open_table(QUEUE).during(op)?;
    queue.insert(id, value.as_slice()).during(op)?;
    let mut by_due = txn.open_table(QUEUE_BY_DUE).during(op)?;
    by_due.insert((mail.next_attempt, id), ()).during(op)?;
    Ok(())
}

/// Deletes an item and its `queue_by_due` entry, returning the item. A
/// corrupt item is an error and, the transaction being aborted, stays.
fn delete_mail(
    txn: &WriteTransaction,
    id: u64,
    op: Op<'_>,
) -> Result<Option<QueuedMail>, StoreError> {
    let mut queue = txn.open_table(QUEUE).during(op)?;
    let Some(value) = queue.remove(id).during(op)? else {
        return Ok(None);
    };
    let mail: QueuedMail = decode(value.value(), || queue_item(id), op)?;
    let mut by_due = txn.open_table(QUEUE_BY_DUE).during(op)?;
    by_due.remove((mail.next_attempt, id)).during(op)?;
    // Settled (or claimed again, which writes a new lease).
    txn.open_table(QUEUE_LEASES)
        .during(op)?
        .remove(id)
        .during(op)?;
    Ok(Some(mail))
}

fn load_mail(
    queue: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
    op: Op<'_>,
) -> Result<Option<QueuedMail>, StoreError> {
    match queue.get(id).during(op)? {
        Some(value) => decode(value.value(), || queue_item(id), op).map(Some),
        None => Ok(None),
    }
}

fn queue_item(id: u64) -> String {
    format!("item {id} of table `queue`")
}

fn sent_record(message_id: &str) -> String {
    format!("record {message_id} of table `sent`")
}

fn token_key(key: &TokenKey) -> (&str, &str, &str) {
    (&key.organizer, &key.attendee, &key.uid)
}

fn find_token(
    by_key: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
    key: &TokenKey,
    op: Op<'_>,
) -> Result<Option<String>, StoreError> {
    let token = by_key.get(token_key(key)).during(op)?;
    Ok(token.map(|guard| guard.value().to_owned()))
}

/// A fresh token no key has. With 100 random bits a clash is not
/// expected, but a token must never point at two keys, so it is checked.
fn unused_token(
    tokens: &impl ReadableTable<&'static str, &'static [u8]>,
    op: Op<'_>,
) -> Result<String, StoreError> {
    loop {
        let candidate = new_token();
        if tokens.get(candidate.as_str()).during(op)?.is_none() {
            return Ok(candidate);
        }
    }
}

fn load_token(
    tokens: &impl ReadableTable<&'static str, &'static [u8]>,
    token: &str,
    op: Op<'_>,
) -> Result<Option<TokenRecord>, StoreError> {
    match tokens.get(token).during(op)? {
        Some(value) => decode(value.value(), || token_item(token), op).map(Some),
        None => Ok(None),
    }
}

fn token_item(token: &str) -> String {
    format!("token {token} of table `reply_tokens`")
}

/// A token's row: the key, flattened so rows written before tokens expired
/// still read, and the expiry (absent in those rows: they last until the
/// event's next mail renews them).
#[derive(Debug, Serialize, Deserialize)]
struct TokenRecord {
    #[serde(flatten)]
    key: TokenKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<UnixTime>,
}

impl TokenRecord {
    /// Valid at every moment before `moment`.
    fn lasts_until(&self, moment: UnixTime) -> bool {
        self.expires_at.is_none_or(|e| e >= moment)
    }
}

fn encode<T: Serialize>(
    value: &T,
    what: impl FnOnce() -> String,
    op: Op<'_>,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|why| op.corrupt(what(), why))
}

fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
    op: Op<'_>,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|why| op.corrupt(what(), why))
}

/// Which store operation ran on which file: attached to every error.
#[derive(Clone, Copy)]
struct Op<'a> {
    name: &'static str,
    path: &'a Path,
}

impl Op<'_> {
    fn corrupt(self, what: String, why: serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            what,
            path: self.path.to_path_buf(),
            why,
        }
    }

    fn inconsistent(self, id: u64) -> StoreError {
        StoreError::Inconsistent {
            what: format!(
                "table `queue_by_due`: it lists {}, which is missing",
                queue_item(id)
            ),
            path: self.path.to_path_buf(),
        }
    }
}

/// Turns a redb error into the [`StoreError`] naming `op`.
trait RedbError {
    fn during(self, op: Op<'_>) -> StoreError;
}

macro_rules! redb_errors {
    ($($error:ty => $variant:ident),* $(,)?) => {$(
        impl RedbError for $error {
            fn during(self, op: Op<'_>) -> StoreError {
                StoreError::$variant {
                    op: op.name,
                    path: op.path.to_path_buf(),
                    source: Box::new(self),
                }
            }
        }
    )*};
}

redb_errors! {
    redb::TransactionError => Transaction,
    redb::TableError => Table,
    redb::CommitError => Commit,
    redb::StorageError => Storage,
}

/// `result.during(op)?`: adds the operation and file to a redb error.
trait During<T> {
    fn during(self, op: Op<'_>) -> Result<T, StoreError>;
}

impl<T, E: RedbError> During<T> for Result<T, E> {
    fn during(self, op: Op<'_>) -> Result<T, StoreError> {
        self.map_err(|error| error.during(op))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::store::FailureNotice;

    fn mail(recipient: &str, next_attempt: UnixTime) -> QueuedMail {
        QueuedMail {
            envelope_from: "bridge@bridge.example".into(),
            recipient: recipient.into(),
            message: format!("To: {recipient}\r\nSubject: Invitation\r\n\r\nHello\r\n")
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
                recurrence_id: None,
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

    /// No queue limit, and tokens valid long after the tests' clock.
    const LIMIT: usize = usize::MAX;
    const LATER: UnixTime = 1_000_000;
    const LEASE: Duration = Duration::from_secs(600);

    fn open() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn ids(items: &[(u64, QueuedMail)]) -> Vec<u64> {
        items.iter().map(|(id, _)| *id).collect()
    }

    /// Writes raw bytes straight into a table, as a damaged file would hold.
    fn write_raw(store: &RedbStore, table: TableDefinition<&str, &[u8]>, key: &str, bytes: &[u8]) {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(table).unwrap().insert(key, bytes).unwrap();
        txn.commit().unwrap();
    }

    fn write_raw_queue(store: &RedbStore, id: u64, bytes: &[u8]) {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(QUEUE).unwrap().insert(id, bytes).unwrap();
        txn.commit().unwrap();
    }

    /// The file as it is when a write returns is what a crash right then
    /// would leave: a copy of it must hold every write (non-durable commits
    /// live only in the process until a flush writes them).
    #[test]
    fn every_write_is_in_the_file_when_it_returns() {
        let (dir, store) = open();
        let copies = tempfile::tempdir().unwrap();
        let copy = |name: &str| {
            let to = copies.path().join(name);
            std::fs::create_dir(&to).unwrap();
            std::fs::copy(dir.path().join(FILE_NAME), to.join(FILE_NAME)).unwrap();
            RedbStore::open(&to).unwrap()
        };
        store.remember("key", b"answer", LATER).unwrap();
        assert_eq!(
            copy("after remember").recall("key", 0).unwrap(),
            Some(b"answer".to_vec())
        );
        let queued = mail("a@example.com", 5);
        let id = store.enqueue(&queued, LIMIT).unwrap();
        assert_eq!(ids(&copy("after enqueue").list().unwrap()), vec![id]);
        let notice = queued.notice.unwrap();
        store
            .record_sent(std::slice::from_ref(&notice), LATER)
            .unwrap();
        let sent = copy("after record_sent").sent(&notice.message_id, 0);
        assert_eq!(sent.unwrap(), Some(notice));
    }

    #[test]
    fn open_creates_directory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("state").join("bridge");
        let store = RedbStore::open(&nested).unwrap();
        assert!(nested.join("bridge.redb").is_file());
        assert_eq!(store.list().unwrap(), vec![]);
        assert_eq!(store.next_due().unwrap(), None);
        let debug = format!("{store:?}");
        assert!(debug.starts_with("RedbStore { path: "), "{debug}");
        assert!(debug.contains("bridge.redb"), "{debug}");
    }

    #[test]
    fn due_is_ordered_by_next_attempt_then_id_and_limited() {
        let (_dir, store) = open();
        let late = store
            .enqueue(&mail("late@example.org", 300), LIMIT)
            .unwrap();
        let early = store
            .enqueue(&mail("early@example.org", 100), LIMIT)
            .unwrap();
        let tie = store.enqueue(&mail("tie@example.org", 100), LIMIT).unwrap();
        let future = store
            .enqueue(&mail("future@example.org", 1000), LIMIT)
            .unwrap();

        assert_eq!(
            ids(&store.claim_due(99, 10, LEASE).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(store.claim_due(300, 0, LEASE).unwrap(), vec![]);
        let claimed = store.claim_due(300, 2, LEASE).unwrap();
        assert_eq!(ids(&claimed), vec![early, tie]);
        let until = 300 + LEASE.as_secs();
        assert_eq!(claimed[0].1, mail("early@example.org", until));
        // Claimed items are not due again until their lease runs out.
        assert_eq!(ids(&store.claim_due(300, 10, LEASE).unwrap()), vec![late]);
        assert_eq!(store.claim_due(until - 1, 10, LEASE).unwrap(), vec![]);
        // All due at the same moment now: by id.
        assert_eq!(
            ids(&store.claim_due(until, 10, LEASE).unwrap()),
            vec![late, early, tie]
        );
        assert_eq!(store.get(future).unwrap().unwrap().next_attempt, 1000);
    }

    #[test]
    fn leases_of_a_dead_process_are_released_at_open_and_settled_ones_stay_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let claimed = store.enqueue(&mail("a@example.org", 100), LIMIT).unwrap();
        let settled = store.enqueue(&mail("b@example.org", 100), LIMIT).unwrap();
        assert_eq!(store.claim_due(100, 10, LEASE).unwrap().len(), 2);
        store.reschedule(settled, 5000, 1, "451 later").unwrap();
        drop(store);
        // As after a crash: the claim was never settled.
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.get(claimed).unwrap().unwrap().next_attempt, 100);
        assert_eq!(store.get(settled).unwrap().unwrap().next_attempt, 5000);
        assert_eq!(
            ids(&store.claim_due(100, 10, LEASE).unwrap()),
            vec![claimed]
        );
    }

    #[test]
    fn queue_summary_counts_items_and_dates_the_oldest() {
        let (_dir, store) = open();
        assert_eq!(store.queue_summary().unwrap(), QueueSummary::default());
        let first = store
            .enqueue(
                &QueuedMail {
                    queued_at: 40,
                    ..mail("a@example.org", 500)
                },
                LIMIT,
            )
            .unwrap();
        store
            .enqueue(
                &QueuedMail {
                    queued_at: 90,
                    ..mail("b@example.org", 100)
                },
                LIMIT,
            )
            .unwrap();
        // A retry keeps the item's place: it is still the oldest.
        store.reschedule(first, 900, 1, "451 try later").unwrap();
        let summary = store.queue_summary().unwrap();
        assert_eq!(summary.messages, 2);
        assert_eq!(summary.oldest_queued_at, Some(40));
        store.remove(first).unwrap();
        assert_eq!(store.queue_summary().unwrap().oldest_queued_at, Some(90));
    }

    #[test]
    fn next_due_follows_the_earliest_item() {
        let (_dir, store) = open();
        assert_eq!(store.next_due().unwrap(), None);
        let a = store.enqueue(&mail("a@example.org", 500), LIMIT).unwrap();
        let b = store.enqueue(&mail("b@example.org", 200), LIMIT).unwrap();
        assert_eq!(store.next_due().unwrap(), Some(200));
        store.reschedule(b, 800, 1, "451 try later").unwrap();
        assert_eq!(store.next_due().unwrap(), Some(500));
        store.remove(a).unwrap();
        assert_eq!(store.next_due().unwrap(), Some(800));
        store.remove(b).unwrap();
        assert_eq!(store.next_due().unwrap(), None);
    }

    #[test]
    fn reschedule_records_the_attempt_and_moves_the_item() {
        let (_dir, store) = open();
        let id = store.enqueue(&mail("bob@example.org", 100), LIMIT).unwrap();
        store
            .reschedule(id, 400, 1, "451 4.3.0 relay busy")
            .unwrap();

        let item = store.get(id).unwrap().unwrap();
        assert_eq!(item.attempts, 1);
        assert_eq!(item.next_attempt, 400);
        assert_eq!(item.last_error.as_deref(), Some("451 4.3.0 relay busy"));
        assert_eq!(item.message, mail("bob@example.org", 100).message);
        assert_eq!(store.claim_due(399, 10, LEASE).unwrap(), vec![]);
        assert_eq!(ids(&store.claim_due(400, 10, LEASE).unwrap()), vec![id]);
    }

    #[test]
    fn reschedule_of_an_unknown_id_is_an_error() {
        let (_dir, store) = open();
        let err = store.reschedule(42, 1, 1, "x").unwrap_err();
        assert!(matches!(err, StoreError::NotQueued { id: 42 }), "{err:?}");
        assert_eq!(err.to_string(), "queue item 42 does not exist");
    }

    #[test]
    fn remove_returns_the_item_once() {
        let (_dir, store) = open();
        let keep = store
            .enqueue(&mail("keep@example.org", 100), LIMIT)
            .unwrap();
        let gone = store
            .enqueue(&mail("gone@example.org", 100), LIMIT)
            .unwrap();
        assert_eq!(
            store.remove(gone).unwrap(),
            Some(mail("gone@example.org", 100))
        );
        assert_eq!(store.remove(gone).unwrap(), None);
        assert_eq!(store.get(gone).unwrap(), None);
        assert_eq!(ids(&store.claim_due(100, 10, LEASE).unwrap()), vec![keep]);
        assert_eq!(store.remove(999).unwrap(), None);
    }

    #[test]
    fn list_returns_everything_by_id() {
        let (_dir, store) = open();
        let a = store.enqueue(&mail("a@example.org", 900), LIMIT).unwrap();
        let b = store.enqueue(&mail("b@example.org", 100), LIMIT).unwrap();
        let c = store.enqueue(&mail("c@example.org", 500), LIMIT).unwrap();
        assert!(a < b && b < c);
        let listed = store.list().unwrap();
        assert_eq!(ids(&listed), vec![a, b, c]);
        assert_eq!(listed[1].1, mail("b@example.org", 100));
    }

    #[test]
    fn queue_survives_reopen_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, last) = {
            let store = RedbStore::open(dir.path()).unwrap();
            let first = store.enqueue(&mail("bob@example.org", 100), LIMIT).unwrap();
            let last = store
                .enqueue(&mail("carol@example.org", 100), LIMIT)
                .unwrap();
            store.remove(last).unwrap();
            (first, last)
        };
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get(first).unwrap(),
            Some(mail("bob@example.org", 100))
        );
        assert_eq!(ids(&store.list().unwrap()), vec![first]);
        let next = store
            .enqueue(&mail("dave@example.org", 100), LIMIT)
            .unwrap();
        assert!(next > last, "{next} after {last}");
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused() {
        let (dir, _store) = open();
        let err = RedbStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err:?}");
        let message = err.to_string();
        let file = dir.path().join("bridge.redb");
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("already in use"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.redb");
        std::fs::write(&file, vec![b'x'; 8192]).unwrap();
        let err = RedbStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let err = RedbStore::open(&blocker.join("state")).unwrap_err();
        assert!(matches!(err, StoreError::Io { op: "open", .. }), "{err:?}");
        assert!(err.to_string().contains("cannot create directory"), "{err}");
        assert!(
            err.to_string().contains(&blocker.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn same_key_keeps_its_token_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let token = {
            let store = RedbStore::open(dir.path()).unwrap();
            let token = store.token_for(&key("bob@example.org"), LATER).unwrap();
            assert_eq!(
                store.token_for(&key("bob@example.org"), LATER).unwrap(),
                token
            );
            token
        };
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(
            store.token_for(&key("bob@example.org"), LATER).unwrap(),
            token
        );
        assert_eq!(
            store.resolve_token(&token, 0).unwrap(),
            Some(key("bob@example.org"))
        );
    }

    #[test]
    fn different_keys_get_different_tokens() {
        let (_dir, store) = open();
        let bob = store.token_for(&key("bob@example.org"), LATER).unwrap();
        let carol = store.token_for(&key("carol@example.org"), LATER).unwrap();
        let other_uid = store
            .token_for(
                &TokenKey {
                    uid: "uid-2".into(),
                    ..key("bob@example.org")
                },
                LATER,
            )
            .unwrap();
        assert_ne!(bob, carol);
        assert_ne!(bob, other_uid);
        assert_ne!(carol, other_uid);
        for token in [&bob, &carol, &other_uid] {
            assert_eq!(token.len(), 20);
            assert!(
                token
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')),
                "{token}"
            );
        }
    }

    #[test]
    fn tokens_resolve_case_insensitively_and_unknown_ones_do_not() {
        let (_dir, store) = open();
        let token = store.token_for(&key("bob@example.org"), LATER).unwrap();
        let shouted = token.to_ascii_uppercase();
        assert_eq!(
            store.resolve_token(&shouted, 0).unwrap(),
            Some(key("bob@example.org"))
        );
        assert_eq!(
            store.resolve_token("aaaaaaaaaaaaaaaaaaaa", 0).unwrap(),
            None
        );
        assert_eq!(store.resolve_token("", 0).unwrap(), None);
    }

    #[test]
    fn purge_expired_deletes_and_counts_only_expired_entries() {
        let (_dir, store) = open();
        store.remember("a", b"1", 100).unwrap();
        store.remember("b", b"2", 200).unwrap();
        store.remember("c", b"3", 300).unwrap();
        assert_eq!(store.purge_expired(50).unwrap(), 0);
        assert_eq!(store.purge_expired(200).unwrap(), 2);
        assert_eq!(store.purge_expired(200).unwrap(), 0);
        assert_eq!(store.recall("c", 200).unwrap(), Some(b"3".to_vec()));
        assert_eq!(store.purge_expired(u64::MAX).unwrap(), 1);
    }

    #[test]
    fn a_given_up_item_stays_due_for_its_report() {
        let (_dir, store) = open();
        let id = store
            .enqueue(&mail("bob@example.org", 100), usize::MAX)
            .unwrap();
        let undeliverable = Undeliverable {
            status: "5.1;Service unavailable".into(),
            why: "550 no such user".into(),
            reports: 0,
        };
        store.give_up(id, 150, &undeliverable).unwrap();
        assert_eq!(store.get(id).unwrap().unwrap().next_attempt, 150);
        let (due_id, item) = store.claim_due(150, 10, LEASE).unwrap().remove(0);
        assert_eq!(due_id, id);
        assert_eq!(item.given_up.as_ref(), Some(&undeliverable));
        assert!(matches!(
            store.give_up(99, 1, &undeliverable),
            Err(StoreError::NotQueued { id: 99 })
        ));
    }

    #[test]
    fn a_corrupt_queue_item_is_an_error_naming_the_table() {
        let (dir, store) = open();
        let good = store
            .enqueue(&mail("good@example.org", 100), LIMIT)
            .unwrap();
        let bad = store.enqueue(&mail("bad@example.org", 100), LIMIT).unwrap();
        write_raw_queue(&store, bad, b"\x00garbage{");

        let file = dir.path().join("bridge.redb").display().to_string();
        for err in [
            store.get(bad).unwrap_err(),
            store.list().unwrap_err(),
            store.claim_due(100, 10, LEASE).unwrap_err(),
            store.remove(bad).unwrap_err(),
            store.reschedule(bad, 200, 1, "x").unwrap_err(),
        ] {
            let StoreError::Corrupt { what, .. } = &err else {
                panic!("not Corrupt: {err:?}");
            };
            assert_eq!(what, &format!("item {bad} of table `queue`"));
            assert!(err.to_string().contains(&file), "{err}");
        }
        assert_eq!(ids(&store.claim_due(100, 1, LEASE).unwrap()), vec![good]);
        assert!(store.get(good).unwrap().is_some());
    }

    #[test]
    fn a_corrupt_token_record_is_an_error_naming_the_table() {
        let (_dir, store) = open();
        write_raw(&store, TOKENS, "aaaaaaaaaaaaaaaaaaaa", b"[1,2");
        let err = store.resolve_token("AAAAAAAAAAAAAAAAAAAA", 0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("table `reply_tokens`"), "{err}");
    }

    #[test]
    fn an_index_entry_without_its_item_is_reported() {
        let (_dir, store) = open();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(QUEUE_BY_DUE)
            .unwrap()
            .insert((5, 77), ())
            .unwrap();
        txn.commit().unwrap();
        let err = store.claim_due(10, 10, LEASE).unwrap_err();
        assert!(matches!(err, StoreError::Inconsistent { .. }), "{err:?}");
        assert!(
            err.to_string().contains("item 77 of table `queue`"),
            "{err}"
        );
    }

    #[test]
    fn concurrent_enqueues_get_distinct_ids() {
        let (_dir, store) = open();
        let store = Arc::new(store);
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..250)
                        .map(|n| {
                            let recipient = format!("t{thread}-{n}@example.org");
                            store.enqueue(&mail(&recipient, n), LIMIT).unwrap()
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let returned: Vec<u64> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        let distinct: HashSet<u64> = returned.iter().copied().collect();
        assert_eq!(distinct.len(), 1000);

        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1000);
        assert_eq!(
            listed.iter().map(|(id, _)| *id).collect::<HashSet<_>>(),
            distinct
        );
        let recipients: HashSet<&str> = listed.iter().map(|(_, m)| m.recipient.as_str()).collect();
        assert_eq!(recipients.len(), 1000);
        assert_eq!(
            store.claim_due(u64::MAX, usize::MAX, LEASE).unwrap().len(),
            1000
        );
    }
}
