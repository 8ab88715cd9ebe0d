//! The redb store handed from one bridge process to the next during an
//! upgrade (`serve --upgrade`).
//!
//! redb lets one process hold the file. During an upgrade the old process
//! keeps serving (and holding the store) for a few seconds after the new
//! one took its listening sockets, so the new process cannot open the file
//! at start-up. [`Handover`] lets it start serving anyway: it opens the
//! store on first use, and each operation waits (bounded by the handover
//! timeout, counted from start-up) until the old process has let go. A
//! request that arrives in between is slower, never refused. The old
//! process lets go with [`Handover::release`] as soon as its work in
//! progress is done, not only when it exits. Only redb needs this: a
//! shared database (PostgreSQL) is opened as usual, and this wrapper is
//! simply not used.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{
    FailureNotice, QueueSummary, QueuedMail, RedbStore, Store, StoreError, TokenKey, Undeliverable,
    UnixTime,
};

/// How often the file is tried again while the old process holds it.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// A [`RedbStore`] that can be taken over from, and handed to, another
/// process.
pub struct Handover {
    dir: PathBuf,
    deadline: Instant,
    timeout: Duration,
    store: RwLock<Held>,
    /// Held by the one caller that is opening; the others wait behind it.
    opening: Mutex<()>,
}

enum Held {
    NotYet,
    Open(RedbStore),
    /// Handed to the next process: never opened again here.
    Released,
}

/// Where a [`Handover`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverState {
    Open,
    /// The previous process still holds the file.
    Waiting {
        waited: Duration,
        timeout: Duration,
    },
    Released,
}

impl Handover {
    /// The store in `dir`, opened now: it must be free (a bridge started
    /// alone).
    pub fn open(dir: PathBuf) -> Result<Handover, StoreError> {
        let store = RedbStore::open(&dir)?;
        let handover = Handover::new(dir, Duration::ZERO);
        *handover.write() = Held::Open(store);
        Ok(handover)
    }

    /// The store in `dir`, to be opened within `timeout` from now, once
    /// the previous process let go of it.
    pub fn new(dir: PathBuf, timeout: Duration) -> Handover {
        Handover {
            dir,
            deadline: Instant::now() + timeout,
            timeout,
            store: RwLock::new(Held::NotYet),
            opening: Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the file (after the operations in progress) so that the next
    /// process can open it; later operations here fail.
    pub fn release(&self) {
        let released = std::mem::replace(&mut *self.write(), Held::Released);
        if let Held::Open(store) = released {
            drop(store);
            tracing::info!(target: "ischedule::store", dir = %self.dir.display(), "store released for the next process");
        }
    }

    /// Tries once, without waiting, and says where things stand (for the
    /// readiness check); errors other than "still in use" are returned.
    pub fn state(&self) -> Result<HandoverState, StoreError> {
        match *self.read() {
            Held::Open(_) => return Ok(HandoverState::Open),
            Held::Released => return Ok(HandoverState::Released),
            Held::NotYet => {}
        }
        let Ok(_opening) = self.opening.try_lock() else {
            return Ok(self.waiting());
        };
        Ok(if self.try_open()? {
            HandoverState::Open
        } else {
            self.waiting()
        })
    }

    fn waiting(&self) -> HandoverState {
        HandoverState::Waiting {
            waited: self
                .timeout
                .saturating_sub(self.deadline.saturating_duration_since(Instant::now())),
            timeout: self.timeout,
        }
    }

    /// Opens the file unless it is open already; false while it is in use
    /// elsewhere. The caller holds `opening`.
    fn try_open(&self) -> Result<bool, StoreError> {
        match *self.read() {
            Held::Open(_) => return Ok(true),
            Held::Released => return Err(self.released()),
            Held::NotYet => {}
        }
        match RedbStore::open(&self.dir) {
            Ok(store) => {
                tracing::info!(target: "ischedule::store", dir = %self.dir.display(), "store taken over from the previous process");
                *self.write() = Held::Open(store);
                Ok(true)
            }
            Err(StoreError::AlreadyOpen { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn released(&self) -> StoreError {
        StoreError::HandedOver {
            path: self.dir.join(super::redb_store::FILE_NAME),
        }
    }

    /// Runs `op` on the store, waiting for it until the deadline.
    fn with<R>(
        &self,
        op: impl FnOnce(&RedbStore) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if let Held::Open(store) = &*self.read() {
            return op(store);
        }
        without_stalling_others(|| {
            let _opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
            while !self.try_open()? {
                if Instant::now() >= self.deadline {
                    return Err(StoreError::HandoverTimeout {
                        path: self.dir.join(super::redb_store::FILE_NAME),
                        timeout: self.timeout,
                    });
                }
                std::thread::sleep(RETRY_EVERY);
            }
            Ok(())
        })?;
        match &*self.read() {
            Held::Open(store) => op(store),
            _ => Err(self.released()),
        }
    }
}

/// Runs `wait` so that it does not hold up the other tasks of an async
/// worker thread: most store calls come through [`super::blocking`], but
/// a few are made on async threads, where seconds of waiting would stall
/// every connection that thread serves. Elsewhere (a blocking thread, a
/// single-threaded runtime, no runtime) it simply runs.
fn without_stalling_others<R>(wait: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

impl Store for Handover {
    fn enqueue(&self, mail: &QueuedMail, limit: usize) -> Result<u64, StoreError> {
        self.with(|s| s.enqueue(mail, limit))
    }
    fn claim_due(
        &self,
        now: UnixTime,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        self.with(|s| s.claim_due(now, limit, lease))
    }
    fn next_due(&self) -> Result<Option<UnixTime>, StoreError> {
        self.with(|s| s.next_due())
    }
    fn reschedule(
        &self,
        id: u64,
        next_attempt: UnixTime,
        attempts: u32,
        last_error: &str,
    ) -> Result<(), StoreError> {
        self.with(|s| s.reschedule(id, next_attempt, attempts, last_error))
    }
    fn give_up(
        &self,
        id: u64,
        next_attempt: UnixTime,
        given_up: &Undeliverable,
    ) -> Result<(), StoreError> {
        self.with(|s| s.give_up(id, next_attempt, given_up))
    }
    fn remove(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        self.with(|s| s.remove(id))
    }
    fn get(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        self.with(|s| s.get(id))
    }
    fn list(&self) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        self.with(|s| s.list())
    }
    fn queue_summary(&self) -> Result<QueueSummary, StoreError> {
        self.with(|s| s.queue_summary())
    }
    fn token_for(&self, key: &TokenKey, expires_at: UnixTime) -> Result<String, StoreError> {
        self.with(|s| s.token_for(key, expires_at))
    }
    fn resolve_token(&self, token: &str, now: UnixTime) -> Result<Option<TokenKey>, StoreError> {
        self.with(|s| s.resolve_token(token, now))
    }
    fn remember(&self, key: &str, value: &[u8], expires_at: UnixTime) -> Result<(), StoreError> {
        self.with(|s| s.remember(key, value, expires_at))
    }
    fn recall(&self, key: &str, now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|s| s.recall(key, now))
    }
    fn record_sent(
        &self,
        notices: &[FailureNotice],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.with(|s| s.record_sent(notices, expires_at))
    }
    fn sent(&self, message_id: &str, now: UnixTime) -> Result<Option<FailureNotice>, StoreError> {
        self.with(|s| s.sent(message_id, now))
    }
    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.with(|s| s.purge_expired(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_holder_to_let_go_then_serves() {
        let dir = tempfile::tempdir().unwrap();
        let held = RedbStore::open(dir.path()).unwrap();
        let handover = std::sync::Arc::new(Handover::new(
            dir.path().to_path_buf(),
            Duration::from_secs(10),
        ));
        assert!(matches!(
            handover.state().unwrap(),
            HandoverState::Waiting { .. }
        ));
        let waiting = {
            let handover = handover.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let result = handover.remember("k", b"v", u64::MAX);
                (result, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        let (result, waited) = waiting.join().unwrap();
        result.unwrap();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert_eq!(handover.state().unwrap(), HandoverState::Open);
        assert_eq!(handover.recall("k", 0).unwrap(), Some(b"v".to_vec()));

        // Released, the next process can open it; this one is done with it.
        handover.release();
        assert_eq!(handover.state().unwrap(), HandoverState::Released);
        let next = RedbStore::open(dir.path()).unwrap();
        assert_eq!(next.recall("k", 0).unwrap(), Some(b"v".to_vec()));
        let err = handover.recall("k", 0).unwrap_err();
        assert!(matches!(err, StoreError::HandedOver { .. }), "{err:?}");
    }

    #[test]
    fn opened_at_once_when_started_alone() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RedbStore::open(dir.path()).unwrap();
        let err = Handover::open(dir.path().to_path_buf()).err().unwrap();
        assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err:?}");
    }

    #[test]
    fn gives_up_at_the_deadline_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RedbStore::open(dir.path()).unwrap();
        let handover = Handover::new(dir.path().to_path_buf(), Duration::from_millis(200));
        let err = handover.next_due().unwrap_err();
        assert!(matches!(err, StoreError::HandoverTimeout { .. }), "{err:?}");
        assert!(err.to_string().contains("bridge.redb"), "{err}");
    }
}
