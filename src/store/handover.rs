//! The redb store of a process started to take over from a running one
//! (`serve --upgrade`).
//!
//! redb lets one process hold the file. During an upgrade the old process
//! keeps serving (and holding the store) for a few seconds after the new
//! one took its listening sockets, so the new process cannot open the file
//! at start-up. [`Handover`] lets it start serving anyway: it opens the
//! store on first use, and each operation waits (bounded by the handover
//! timeout, counted from start-up) until the old process has let go. A
//! request that arrives in between is slower, never refused. Only redb
//! needs this: a shared database (PostgreSQL) is opened as usual, and this
//! wrapper is simply not used.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::{
    FailureNotice, QueuedMail, RedbStore, Store, StoreError, TokenKey, Undeliverable, UnixTime,
};

/// How often the file is tried again while the old process holds it.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// A [`RedbStore`] opened once the previous holder of the file let go.
pub struct Handover {
    dir: PathBuf,
    deadline: Instant,
    timeout: Duration,
    store: OnceLock<RedbStore>,
    /// Held by the one caller that is opening; the others wait behind it.
    opening: Mutex<()>,
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
}

impl Handover {
    /// The store in `dir`, to be opened within `timeout` from now.
    pub fn new(dir: PathBuf, timeout: Duration) -> Handover {
        Handover {
            dir,
            deadline: Instant::now() + timeout,
            timeout,
            store: OnceLock::new(),
            opening: Mutex::new(()),
        }
    }

    /// Tries once, without waiting, and says where things stand (for the
    /// readiness check); errors other than "still in use" are returned.
    pub fn state(&self) -> Result<HandoverState, StoreError> {
        if self.store.get().is_some() {
            return Ok(HandoverState::Open);
        }
        let Ok(_opening) = self.opening.try_lock() else {
            return Ok(self.waiting());
        };
        match self.try_open()? {
            Some(_) => Ok(HandoverState::Open),
            None => Ok(self.waiting()),
        }
    }

    fn waiting(&self) -> HandoverState {
        HandoverState::Waiting {
            waited: self
                .timeout
                .saturating_sub(self.deadline.saturating_duration_since(Instant::now())),
            timeout: self.timeout,
        }
    }

    /// The open store; `None` while the file is in use elsewhere.
    fn try_open(&self) -> Result<Option<&RedbStore>, StoreError> {
        if let Some(store) = self.store.get() {
            return Ok(Some(store));
        }
        match RedbStore::open(&self.dir) {
            Ok(store) => {
                tracing::info!(target: "ischedule::store", dir = %self.dir.display(), "store taken over from the previous process");
                Ok(Some(self.store.get_or_init(|| store)))
            }
            Err(StoreError::AlreadyOpen { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The store, waiting for it until the deadline.
    fn opened(&self) -> Result<&RedbStore, StoreError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        without_stalling_others(|| {
            let _opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(store) = self.try_open()? {
                    return Ok(store);
                }
                if Instant::now() >= self.deadline {
                    return Err(StoreError::HandoverTimeout {
                        path: self.dir.join(super::redb_store::FILE_NAME),
                        timeout: self.timeout,
                    });
                }
                std::thread::sleep(RETRY_EVERY);
            }
        })
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
        self.opened()?.enqueue(mail, limit)
    }
    fn due(&self, now: UnixTime, limit: usize) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        self.opened()?.due(now, limit)
    }
    fn next_due(&self) -> Result<Option<UnixTime>, StoreError> {
        self.opened()?.next_due()
    }
    fn reschedule(
        &self,
        id: u64,
        next_attempt: UnixTime,
        attempts: u32,
        last_error: &str,
    ) -> Result<(), StoreError> {
        self.opened()?
            .reschedule(id, next_attempt, attempts, last_error)
    }
    fn give_up(
        &self,
        id: u64,
        next_attempt: UnixTime,
        given_up: &Undeliverable,
    ) -> Result<(), StoreError> {
        self.opened()?.give_up(id, next_attempt, given_up)
    }
    fn remove(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        self.opened()?.remove(id)
    }
    fn get(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        self.opened()?.get(id)
    }
    fn list(&self) -> Result<Vec<(u64, QueuedMail)>, StoreError> {
        self.opened()?.list()
    }
    fn token_for(&self, key: &TokenKey, expires_at: UnixTime) -> Result<String, StoreError> {
        self.opened()?.token_for(key, expires_at)
    }
    fn resolve_token(&self, token: &str, now: UnixTime) -> Result<Option<TokenKey>, StoreError> {
        self.opened()?.resolve_token(token, now)
    }
    fn remember(&self, key: &str, value: &[u8], expires_at: UnixTime) -> Result<(), StoreError> {
        self.opened()?.remember(key, value, expires_at)
    }
    fn recall(&self, key: &str, now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        self.opened()?.recall(key, now)
    }
    fn record_sent(&self, notice: &FailureNotice, expires_at: UnixTime) -> Result<(), StoreError> {
        self.opened()?.record_sent(notice, expires_at)
    }
    fn sent(&self, message_id: &str, now: UnixTime) -> Result<Option<FailureNotice>, StoreError> {
        self.opened()?.sent(message_id, now)
    }
    fn purge_expired(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.opened()?.purge_expired(now)
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
