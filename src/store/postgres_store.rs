//! The shared store: PostgreSQL, for several bridges working one queue
//! (`[store] url = "postgres://…"`; the embedded [`super::RedbStore`] stays
//! the default).
//!
//! Client: `tokio-postgres` (the maintained asynchronous driver under the
//! `postgres` crate) with a `deadpool-postgres` pool. The [`Store`] trait is
//! synchronous (the CLI, the tests and `store::blocking` call it as it is),
//! and the synchronous `postgres` crate panics when called on a thread that
//! runs tokio tasks, as some of the bridge's store calls still are. So this
//! store owns a small tokio runtime of its own: every call runs there, with
//! its connections, and the calling thread waits for the answer, whatever
//! thread it is. `sqlx` would bring the same runtime question, compile-time
//! query checking that needs a database at build time, and far more code.
//!
//! Schema: versioned migrations, embedded below as SQL, applied at start-up
//! in one transaction under an advisory lock, so bridges starting together
//! neither race nor see half a schema; a database newer than this bridge is
//! refused. Rows are compact for a large provider (README, "Sizing"): keys
//! are 16-byte SHA-256 digests, idempotency answers are the per-recipient
//! record the core writes, and everything that expires has an indexed
//! `expires_at`, purged in batches.
//!
//! Connections are not encrypted (`NoTls`): the database is meant to sit on
//! the bridge's own host or private network.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

use super::{
    new_token, FailureNotice, QueueSummary, QueuedMail, Store, StoreError, TokenKey, Undeliverable,
    UnixTime, RENEW_SLACK,
};
use crate::config;

/// Schema migrations, version `i + 1` at index `i`. Applied ones are never
/// edited: a change is a new entry.
const MIGRATIONS: &[&str] = &[
    // 1: the queue, reply tokens, idempotency records, records of sent mail.
    "CREATE TABLE queue (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        next_attempt bigint NOT NULL,
        queued_at bigint NOT NULL,
        attempts integer NOT NULL,
        envelope_from text NOT NULL,
        recipient text NOT NULL,
        message bytea NOT NULL,
        last_error text,
        notice bytea,
        given_up bytea
    );
    CREATE INDEX queue_due ON queue (next_attempt, id);
    CREATE TABLE reply_tokens (
        key_digest bytea PRIMARY KEY,
        token text NOT NULL UNIQUE,
        organizer text NOT NULL,
        attendee text NOT NULL,
        uid text NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX reply_tokens_expiry ON reply_tokens (expires_at);
    CREATE TABLE idempotency (
        key_digest bytea PRIMARY KEY,
        answer bytea NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX idempotency_expiry ON idempotency (expires_at);
    CREATE TABLE sent_mail (
        message_id_digest bytea PRIMARY KEY,
        notice bytea NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX sent_mail_expiry ON sent_mail (expires_at);",
];

/// The advisory lock migrations run under ("ischedule" in ASCII, cut to 8 bytes).
const MIGRATION_LOCK: i64 = 0x6973_6368_6564_756c;

/// Rows deleted per statement by `purge_expired`: short transactions, so a
/// purge of millions of rows never holds locks or bloats one transaction.
const PURGE_BATCH: i64 = 10_000;

const QUEUE_COLUMNS: &str = "id, next_attempt, queued_at, attempts, envelope_from, recipient, \
                             message, last_error, notice, given_up";

/// Tables with an `expires_at`, and their key column.
const EXPIRING: [(&str, &str); 3] = [
    ("idempotency", "key_digest"),
    ("sent_mail", "message_id_digest"),
    ("reply_tokens", "key_digest"),
];

pub struct PostgresStore {
    db: Db,
    handle: tokio::runtime::Handle,
    /// Taken on drop, to shut down without waiting: dropping a runtime
    /// from async code would panic.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What every operation needs: cheap to clone into the runtime's tasks.
#[derive(Clone)]
struct Db {
    pool: Pool,
    /// The URL without its password, for messages.
    shown: Arc<str>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.db.shown)
            .finish()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PostgresStore {
    /// Connects and brings the schema up to date. Fails when the database
    /// cannot be reached: a bridge configured for a shared queue must not
    /// run without it.
    pub fn open(settings: &config::Postgres) -> Result<PostgresStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Worker {
                op: "open",
                reason: format!("cannot start the PostgreSQL client's runtime: {e}"),
            })?;
        let shown: Arc<str> = settings.url.to_string().into();
        let mut pg = settings
            .url
            .secret()
            .parse::<tokio_postgres::Config>()
            .map_err(|e| StoreError::Unavailable {
                op: "open",
                reason: format!("{shown}: {}", describe(&e)),
            })?;
        pg.connect_timeout(settings.connect_timeout)
            .application_name("ischedule-bridge");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // A connection the server closed is dropped, not reused;
                // checking each with a query would cost a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(settings.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Worker {
                op: "open",
                reason: format!("cannot build the connection pool: {e}"),
            })?;
        let store = PostgresStore {
            db: Db { pool, shown },
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        };
        store.run("migrate", |db| async move { db.migrate().await })?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for it on this thread.
    fn run<T, F, Fut>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let task = self.handle.spawn(work(self.db.clone()));
        futures::executor::block_on(task).map_err(|e| StoreError::Worker {
            op,
            reason: e.to_string(),
        })?
    }
}

impl Db {
    async fn client(&self, op: &'static str) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Unavailable {
            op,
            reason: describe(&e),
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let op = "migrate";
        let mut client = self.client(op).await?;
        let txn = client.transaction().await.map_err(failed(op))?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(failed(op))?;
        txn.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(failed(op))?;
        let row = txn
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await
            .map_err(failed(op))?;
        let found: i32 = row.get(0);
        let known = MIGRATIONS.len();
        let applied = usize::try_from(found).unwrap_or(0);
        if applied > known {
            return Err(StoreError::SchemaTooNew {
                url: self.shown.to_string(),
                found,
                known,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
            txn.batch_execute(sql).await.map_err(failed(op))?;
            txn.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(failed(op))?;
            tracing::info!(target: "ischedule::store", version, url = %self.shown, "schema migrated");
        }
        txn.commit().await.map_err(failed(op))
    }

    fn corrupt(&self, what: String, why: serde_json::Error) -> StoreError {
        StoreError::CorruptRow {
            what,
            url: self.shown.to_string(),
            why,
        }
    }

    fn queued(&self, row: &Row) -> Result<(u64, QueuedMail), StoreError> {
        let id = unsigned(row.get("id"));
        let notice = row
            .get::<_, Option<Vec<u8>>>("notice")
            .map(|bytes| serde_json::from_slice::<FailureNotice>(&bytes))
            .transpose()
            .map_err(|why| self.corrupt(format!("notice of queue item {id}"), why))?;
        let given_up = row
            .get::<_, Option<Vec<u8>>>("given_up")
            .map(|bytes| serde_json::from_slice::<Undeliverable>(&bytes))
            .transpose()
            .map_err(|why| self.corrupt(format!("given_up of queue item {id}"), why))?;
        let attempts: i32 = row.get("attempts");
        Ok((
            id,
            QueuedMail {
                envelope_from: row.get("envelope_from"),
                recipient: row.get("recipient"),
                message: row.get("message"),
                attempts: u32::try_from(attempts).unwrap_or(0),
                queued_at: unsigned(row.get("queued_at")),
                next_attempt: unsigned(row.get("next_attempt")),
                last_error: row.get("last_error"),
                notice,
                given_up,
            },
        ))
    }
}

/// Turns a driver error into "state store unavailable", saying why.
fn failed(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Unavailable {
        op,
        reason: describe(&e),
    }
}

/// The whole cause of an error, on one line: a server's error is only
/// "db error" in the driver's own message, its text is in the source.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

/// PostgreSQL has no unsigned integers: times and ids are stored as
/// bigint, far-future times (`u64::MAX`, "never") capped at its maximum.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The first 16 bytes of SHA-256: keys stay small in every index, and
/// collisions (2^-64 per pair at 10^10 keys) do not happen in practice.
fn digest(parts: &[&[u8]]) -> Vec<u8> {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context.finish().as_ref()[..16].to_vec()
}

fn token_digest(key: &TokenKey) -> Vec<u8> {
    digest(&[
        key.organizer.as_bytes(),
        key.attendee.as_bytes(),
        key.uid.as_bytes(),
    ])
}

fn message_id_digest(message_id: &str) -> Vec<u8> {
    digest(&[message_id.to_ascii_lowercase().as_bytes()])
}

fn to_json<T: serde::Serialize>(
    db: &Db,
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|why| db.corrupt(what(), why))
}

impl Store for PostgresStore {
    fn enqueue(&self, mail: &QueuedMail, limit: usize) -> Result<u64, StoreError> {
        let op = "enqueue";
        let mail = mail.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found = self.run(op, |db| async move {
            let notice = mail
                .notice
                .as_ref()
                .map(|n| to_json(&db, n, || "notice of a new queue item".into()))
                .transpose()?;
            let given_up = mail
                .given_up
                .as_ref()
                .map(|g| to_json(&db, g, || "given_up of a new queue item".into()))
                .transpose()?;
            let client = db.client(op).await?;
            // The count stops at the limit: an index-only scan of at most
            // `limit` entries, never of a whole large queue. Two bridges may
            // both pass it at once: the limit is a bound on growth, not exact.
            let row = client
                .query_opt(
                    "INSERT INTO queue (next_attempt, queued_at, attempts, envelope_from,
                         recipient, message, last_error, notice, given_up)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
                     WHERE (SELECT count(*) FROM (SELECT 1 FROM queue LIMIT $10) AS q) < $10
                     RETURNING id",
                    &[
                        &signed(mail.next_attempt),
                        &signed(mail.queued_at),
                        &i32::try_from(mail.attempts).unwrap_or(i32::MAX),
                        &mail.envelope_from,
                        &mail.recipient,
                        &mail.message,
                        &mail.last_error,
                        &notice,
                        &given_up,
                        &limit,
                    ],
                )
                .await
                .map_err(failed(op))?;
            Ok(row.map(|r| unsigned(r.get(0))))
        })?;
        found.ok_or(StoreError::QueueFull {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        })
    }

    fn claim_due(
        &self,
        now: UnixTime,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        let op = "claim_due";
        let until = signed(now.saturating_add(lease.as_secs()));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            // SKIP LOCKED: rows another bridge is claiming right now are
            // passed over, not waited for, and never claimed twice.
            let rows = client
                .query(
                    &format!(
                        "WITH due AS (
                             SELECT id, next_attempt AS was FROM queue
                             WHERE next_attempt <= $1 ORDER BY next_attempt, id LIMIT $3
                             FOR UPDATE SKIP LOCKED)
                         UPDATE queue SET next_attempt = $2 FROM due WHERE queue.id = due.id
                         RETURNING due.was, {}",
                        QUEUE_COLUMNS
                            .split(", ")
                            .map(|c| format!("queue.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &[&signed(now), &until, &limit],
                )
                .await
                .map_err(failed(op))?;
            let mut claimed = rows
                .iter()
                .map(|row| Ok((row.get::<_, i64>("was"), db.queued(row)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            claimed.sort_by_key(|(was, (id, _))| (*was, *id));
            Ok(claimed.into_iter().map(|(_, item)| item).collect())
        })
    }

    fn next_due(&self) -> Result<Option<UnixTime>, StoreError> {
        let op = "next_due";
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let row = client
                .query_one("SELECT min(next_attempt) FROM queue", &[])
                .await
                .map_err(failed(op))?;
            Ok(row.get::<_, Option<i64>>(0).map(unsigned))
        })
    }

    fn reschedule(
        &self,
        id: u64,
        next_attempt: UnixTime,
        attempts: u32,
        last_error: &str,
    ) -> Result<(), StoreError> {
        let op = "reschedule";
        let last_error = last_error.to_owned();
        let changed = self.run(op, |db| async move {
            let client = db.client(op).await?;
            client
                .execute(
                    "UPDATE queue SET next_attempt = $2, attempts = $3, last_error = $4
                     WHERE id = $1",
                    &[
                        &signed(id),
                        &signed(next_attempt),
                        &i32::try_from(attempts).unwrap_or(i32::MAX),
                        &last_error,
                    ],
                )
                .await
                .map_err(failed(op))
        })?;
        if changed == 0 {
            return Err(StoreError::NotQueued { id });
        }
        Ok(())
    }

    fn give_up(
        &self,
        id: u64,
        next_attempt: UnixTime,
        given_up: &Undeliverable,
    ) -> Result<(), StoreError> {
        let op = "give_up";
        let given_up = given_up.clone();
        let changed = self.run(op, |db| async move {
            let value = to_json(&db, &given_up, || format!("given_up of queue item {id}"))?;
            let client = db.client(op).await?;
            client
                .execute(
                    "UPDATE queue SET next_attempt = $2, given_up = $3 WHERE id = $1",
                    &[&signed(id), &signed(next_attempt), &value],
                )
                .await
                .map_err(failed(op))
        })?;
        if changed == 0 {
            return Err(StoreError::NotQueued { id });
        }
        Ok(())
    }

    fn remove(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        let op = "remove";
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let row = client
                .query_opt(
                    &format!("DELETE FROM queue WHERE id = $1 RETURNING {QUEUE_COLUMNS}"),
                    &[&signed(id)],
                )
                .await
                .map_err(failed(op))?;
            row.map(|r| db.queued(&r).map(|(_, mail)| mail)).transpose()
        })
    }

    fn get(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        let op = "get";
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let row = client
                .query_opt(
                    &format!("SELECT {QUEUE_COLUMNS} FROM queue WHERE id = $1"),
                    &[&signed(id)],
                )
                .await
                .map_err(failed(op))?;
            row.map(|r| db.queued(&r).map(|(_, mail)| mail)).transpose()
        })
    }

    fn list(&self) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        let op = "list";
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let rows = client
                .query(
                    &format!("SELECT {QUEUE_COLUMNS} FROM queue ORDER BY id"),
                    &[],
                )
                .await
                .map_err(failed(op))?;
            rows.iter().map(|r| db.queued(r)).collect()
        })
    }

    fn queue_summary(&self) -> Result<QueueSummary, StoreError> {
        let op = "queue_summary";
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            // Ids grow with every enqueue and a retry keeps its row: the
            // lowest id is the oldest, found through the primary key. The
            // count reads the whole queue's index, once per scrape.
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM queue),
                            (SELECT queued_at FROM queue ORDER BY id LIMIT 1)",
                    &[],
                )
                .await
                .map_err(failed(op))?;
            Ok(QueueSummary {
                messages: unsigned(row.get::<_, i64>(0)),
                oldest_queued_at: row.get::<_, Option<i64>>(1).map(unsigned),
            })
        })
    }

    fn token_for(&self, key: &TokenKey, expires_at: UnixTime) -> Result<String, StoreError> {
        let op = "token_for";
        let key = key.clone();
        self.run(op, |db| async move {
            let digest = token_digest(&key);
            let client = db.client(op).await?;
            // Most calls are for events whose token has plenty of life
            // left: a read answers those without a write.
            let existing = client
                .query_opt(
                    "SELECT token FROM reply_tokens WHERE key_digest = $1 AND expires_at >= $2",
                    &[&digest, &signed(expires_at.saturating_sub(RENEW_SLACK))],
                )
                .await
                .map_err(failed(op))?;
            if let Some(row) = existing {
                return Ok(row.get(0));
            }
            // Issued, or renewed; the same key from another bridge at the
            // same moment meets the primary key and gets the one token.
            let row = client
                .query_one(
                    "INSERT INTO reply_tokens AS t
                         (key_digest, token, organizer, attendee, uid, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (key_digest) DO UPDATE
                         SET expires_at = greatest(t.expires_at, EXCLUDED.expires_at)
                     RETURNING token",
                    &[
                        &digest,
                        &new_token(),
                        &key.organizer,
                        &key.attendee,
                        &key.uid,
                        &signed(expires_at),
                    ],
                )
                .await
                .map_err(failed(op))?;
            Ok(row.get(0))
        })
    }

    fn resolve_token(&self, token: &str, now: UnixTime) -> Result<Option<TokenKey>, StoreError> {
        let op = "resolve_token";
        // Tokens are issued in lower case; mail systems may change it.
        let token = token.to_ascii_lowercase();
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let row = client
                .query_opt(
                    "SELECT organizer, attendee, uid FROM reply_tokens
                     WHERE token = $1 AND expires_at > $2",
                    &[&token, &signed(now)],
                )
                .await
                .map_err(failed(op))?;
            Ok(row.map(|r| TokenKey {
                organizer: r.get(0),
                attendee: r.get(1),
                uid: r.get(2),
            }))
        })
    }

    fn remember(&self, key: &str, value: &[u8], expires_at: UnixTime) -> Result<(), StoreError> {
        let op = "remember";
        let (digest, value) = (digest(&[key.as_bytes()]), value.to_vec());
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            client
                .execute(
                    "INSERT INTO idempotency (key_digest, answer, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key_digest) DO UPDATE
                         SET answer = EXCLUDED.answer, expires_at = EXCLUDED.expires_at",
                    &[&digest, &value, &signed(expires_at)],
                )
                .await
                .map_err(failed(op))?;
            Ok(())
        })
    }

    fn recall(&self, key: &str, now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        let op = "recall";
        let digest = digest(&[key.as_bytes()]);
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let row = client
                .query_opt(
                    "SELECT answer FROM idempotency WHERE key_digest = $1 AND expires_at > $2",
                    &[&digest, &signed(now)],
                )
                .await
                .map_err(failed(op))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn record_sent(
        &self,
        notices: &[FailureNotice],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let op = "record_sent";
        let notices = notices.to_vec();
        self.run(op, |db| async move {
            let mut client = db.client(op).await?;
            let txn = client.transaction().await.map_err(failed(op))?;
            let insert = txn
                .prepare(
                    "INSERT INTO sent_mail (message_id_digest, notice, expires_at)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (message_id_digest) DO UPDATE
                         SET notice = EXCLUDED.notice, expires_at = EXCLUDED.expires_at",
                )
                .await
                .map_err(failed(op))?;
            for notice in &notices {
                let digest = message_id_digest(&notice.message_id);
                let value = to_json(&db, notice, || {
                    format!("record of sent mail {}", notice.message_id)
                })?;
                txn.execute(&insert, &[&digest, &value, &signed(expires_at)])
                    .await
                    .map_err(failed(op))?;
            }
            txn.commit().await.map_err(failed(op))
        })
    }

    fn sent(&self, message_id: &str, now: UnixTime) -> Result<Option<FailureNotice>, StoreError> {
        let op = "sent";
        let message_id = message_id.to_owned();
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let row = client
                .query_opt(
                    "SELECT notice FROM sent_mail
                     WHERE message_id_digest = $1 AND expires_at > $2",
                    &[&message_id_digest(&message_id), &signed(now)],
                )
                .await
                .map_err(failed(op))?;
            let Some(row) = row else { return Ok(None) };
            let bytes: Vec<u8> = row.get(0);
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|why| db.corrupt(format!("record of sent mail {message_id}"), why))
        })
    }

    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        let op = "purge_expired";
        self.run(op, |db| async move {
            let client = db.client(op).await?;
            let mut purged = 0;
            for (table, key) in EXPIRING {
                let sql = format!(
                    "DELETE FROM {table} WHERE {key} IN
                         (SELECT {key} FROM {table} WHERE expires_at <= $1 LIMIT $2)"
                );
                loop {
                    let n = client
                        .execute(&sql, &[&signed(now), &PURGE_BATCH])
                        .await
                        .map_err(failed(op))?;
                    purged += usize::try_from(n).unwrap_or(usize::MAX);
                    if n < PURGE_BATCH as u64 {
                        break;
                    }
                }
            }
            Ok(purged)
        })
    }
}
