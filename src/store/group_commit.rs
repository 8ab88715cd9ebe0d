//! Group commit: many writers, one commit to disk.
//!
//! Flushing the file to disk (one `fdatasync`, about 0.85 ms here) costs
//! far more than a write transaction, and a flush makes durable every
//! transaction committed before it, not only its own. So writers commit
//! without flushing, then wait here until a flush that began after their
//! commit has finished. Whichever waiter finds no flush running does one
//! for everybody committed so far; the others sleep until it is done. With
//! one writer at a time this is one flush per write, as before; with N
//! concurrent writers it is about one flush per N.
//!
//! Writes that only add records (the idempotency answers, the records of
//! mail sent) do not even need a transaction of their own: they are
//! queued here, and the flush writes all that are queued in its one
//! transaction. That saves each of them a commit's CPU, the larger share
//! of its cost once the disk is shared.
//!
//! A failed flush keeps its records queued for the next one (their
//! writers may still be waiting for it). While flushes keep failing (a
//! full or broken disk) every new record would wait in memory, so then
//! the queue takes no more than its backlog limit and refuses the rest:
//! those writers get an error at once, as they would from the disk.
//!
//! The flush itself is the caller's (for redb, one transaction committed
//! with `Durability::Immediate`), so this knows no storage and its rules
//! are tested on their own.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Counts commits and flushes, holds the queued records, and elects the
/// writer that flushes.
#[derive(Debug)]
pub struct GroupCommit<T> {
    state: Mutex<State<T>>,
    flushed: Condvar,
    /// Most records held after a failed flush; see [`Backlog`].
    max_backlog: usize,
}

#[derive(Debug)]
struct State<T> {
    /// Commits and queued writes numbered so far.
    numbered: u64,
    /// Every write numbered up to this one is on disk.
    durable: u64,
    /// A flush is running; waiters sleep instead of starting another.
    flushing: bool,
    /// The last flush failed, and none has succeeded since.
    failing: bool,
    /// Records the next flush writes, oldest first.
    queued: Vec<T>,
}

/// Records refused by [`GroupCommit::queue`]: flushes have been failing
/// and `queued` records already wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub queued: usize,
}

/// A write that is not yet known to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a write is durable only after wait_durable"]
pub struct Pending(u64);

impl<T> GroupCommit<T> {
    /// `max_backlog` bounds the records held while flushes fail; it never
    /// refuses records while they succeed, however many writers queue.
    pub fn new(max_backlog: usize) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                numbered: 0,
                durable: 0,
                flushing: false,
                failing: false,
                queued: Vec::new(),
            }),
            flushed: Condvar::new(),
            max_backlog,
        }
    }

    /// Numbers a commit that has just returned. Call it after the commit,
    /// never before: a flush started once this has returned then covers it.
    pub fn committed(&self) -> Pending {
        let mut state = self.lock();
        state.numbered += 1;
        Pending(state.numbered)
    }

    /// Queues records for the next flush to write, all in its transaction;
    /// refuses them while flushes fail and the backlog is full.
    pub fn queue(&self, records: impl IntoIterator<Item = T>) -> Result<Pending, Backlog> {
        let mut state = self.lock();
        if state.failing && state.queued.len() >= self.max_backlog {
            return Err(Backlog {
                queued: state.queued.len(),
            });
        }
        state.queued.extend(records);
        state.numbered += 1;
        Ok(Pending(state.numbered))
    }

    /// Returns once `pending` is on disk, flushing with `flush` if no
    /// flush that covers it is running. `flush` gets the queued records to
    /// write. A failed flush is the error of the writer that ran it, and
    /// its records stay queued; the writers waiting on it then try their
    /// own, so each returns either durable or with an error of its own.
    pub fn wait_durable<E>(
        &self,
        pending: Pending,
        flush: impl Fn(&[T]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        loop {
            if state.durable >= pending.0 {
                return Ok(());
            }
            if state.flushing {
                state = self
                    .flushed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.flushing = true;
            let covers = state.numbered;
            let mut records = std::mem::take(&mut state.queued);
            drop(state);
            let flushed = flush(&records);
            state = self.lock();
            state.flushing = false;
            state.failing = flushed.is_err();
            if flushed.is_ok() {
                state.durable = state.durable.max(covers);
            } else {
                // Ahead of what was queued meanwhile, so that a key
                // written twice keeps its later value.
                records.append(&mut state.queued);
                state.queued = records;
            }
            self.flushed.notify_all();
            flushed?;
        }
    }

    /// The state stays consistent even if a thread panicked holding the
    /// lock: it never runs caller code while holding it.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    const BACKLOG: usize = 4;

    /// A flush that succeeds, appending the records it writes to `written`.
    fn writes_to(written: &Mutex<Vec<u32>>) -> impl Fn(&[u32]) -> Result<(), ()> + '_ {
        |records| {
            written.lock().unwrap().extend_from_slice(records);
            Ok(())
        }
    }

    #[test]
    fn one_writer_at_a_time_flushes_every_commit() {
        let group = GroupCommit::<u32>::new(BACKLOG);
        let flushes = AtomicUsize::new(0);
        for _ in 0..3 {
            let pending = group.committed();
            group
                .wait_durable(pending, |_: &[u32]| {
                    flushes.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
                .unwrap();
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_commit_already_covered_by_a_flush_waits_for_none() {
        let group = GroupCommit::<u32>::new(BACKLOG);
        let first = group.committed();
        let second = group.committed();
        let flushes = AtomicUsize::new(0);
        let flush = |_: &[u32]| {
            flushes.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        };
        group.wait_durable(second, flush).unwrap();
        group.wait_durable(first, flush).unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn concurrent_writers_share_flushes() {
        const WRITERS: usize = 16;
        let group = Arc::new(GroupCommit::<u32>::new(BACKLOG));
        let flushes = Arc::new(AtomicUsize::new(0));
        let all_committed = Arc::new(Barrier::new(WRITERS));
        let threads: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (group, flushes) = (group.clone(), flushes.clone());
                let all_committed = all_committed.clone();
                std::thread::spawn(move || {
                    let pending = group.committed();
                    all_committed.wait();
                    group.wait_durable(pending, |_: &[u32]| {
                        flushes.fetch_add(1, Ordering::SeqCst);
                        Ok::<(), ()>(())
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "{WRITERS} writers");
    }

    #[test]
    fn a_failed_flush_fails_its_writer_and_the_next_writer_flushes_again() {
        let group = GroupCommit::<u32>::new(BACKLOG);
        let first = group.committed();
        let second = group.committed();
        assert_eq!(
            group.wait_durable(first, |_: &[u32]| Err("disk full")),
            Err("disk full")
        );
        let flushes = AtomicUsize::new(0);
        group
            .wait_durable(second, |_: &[u32]| {
                flushes.fetch_add(1, Ordering::SeqCst);
                Ok::<(), &str>(())
            })
            .unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "nothing was durable yet");
        // Both are on disk now: the first writer's commit too.
        group
            .wait_durable(first, |_: &[u32]| Err::<(), _>("not called"))
            .unwrap();
    }

    #[test]
    fn one_flush_writes_the_records_queued_by_all_writers_in_order() {
        let group = GroupCommit::new(BACKLOG);
        let first = group.queue([1, 2]).unwrap();
        let second = group.queue([3]).unwrap();
        let written = Mutex::new(Vec::new());
        let flush = |records: &[u32]| {
            written.lock().unwrap().push(records.to_vec());
            Ok::<(), ()>(())
        };
        group.wait_durable(first, flush).unwrap();
        group.wait_durable(second, flush).unwrap();
        assert_eq!(*written.lock().unwrap(), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn records_of_a_failed_flush_are_written_by_the_next_one_before_later_records() {
        let group = GroupCommit::new(BACKLOG);
        let first = group.queue([1]).unwrap();
        assert_eq!(
            group.wait_durable(first, |_| Err("disk full")),
            Err("disk full")
        );
        let second = group.queue([2]).unwrap();
        let written = Mutex::new(Vec::new());
        group.wait_durable(second, writes_to(&written)).unwrap();
        assert_eq!(*written.lock().unwrap(), vec![1, 2]);
        group.wait_durable(first, |_| Err("not called")).unwrap();
    }

    #[test]
    fn while_flushes_fail_the_backlog_is_bounded_and_drains_once_one_succeeds() {
        let group = GroupCommit::new(BACKLOG);
        let many = group.queue(0..10).unwrap();
        assert!(
            group.queue([10]).is_ok(),
            "no flush has failed: any number may wait"
        );
        assert_eq!(
            group.wait_durable(many, |_| Err("disk full")),
            Err("disk full")
        );
        assert_eq!(group.queue([11]), Err(Backlog { queued: 11 }));
        let written = Mutex::new(Vec::new());
        group.wait_durable(many, writes_to(&written)).unwrap();
        assert_eq!(*written.lock().unwrap(), (0..=10).collect::<Vec<_>>());
        assert!(group.queue([11]).is_ok(), "taken again once flushed");
    }
}
