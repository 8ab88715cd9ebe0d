//! Work in progress (HTTP connections, mail sessions, queue passes),
//! counted so that a process being replaced hands the store over as soon
//! as it has none left, rather than when its grace period ends: the new
//! process waits for the store meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// One piece of work; dropping it ends it.
#[derive(Debug)]
pub struct Busy(Arc<AtomicUsize>);

impl InFlight {
    pub fn enter(&self) -> Busy {
        self.0.fetch_add(1, Ordering::SeqCst);
        Busy(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_dropped() {
        let in_flight = InFlight::default();
        let (a, b) = (in_flight.enter(), in_flight.clone().enter());
        assert_eq!(in_flight.count(), 2);
        drop(a);
        drop(b);
        assert_eq!(in_flight.count(), 0);
    }
}
