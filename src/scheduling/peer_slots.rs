//! How many exchanges run at once with one peer: an SMTP server, an
//! iSchedule receiver. A burst of invitations to one domain waits its turn
//! here instead of opening hundreds of connections to one server, which
//! would look like an attack to it, make it the bottleneck for everybody,
//! and cost the bridge a socket and a request's buffers per waiting
//! request. The adapters key the slots by what they connect to; the wait
//! is bounded by their own timeouts.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct PeerSlots<K> {
    per_peer: usize,
    /// Only peers with a slot held or awaited have an entry, so peers named
    /// by the network (SRV targets, MX hosts) cannot make the map grow.
    peers: Mutex<HashMap<K, Arc<Semaphore>>>,
}

impl<K: Eq + Hash + Clone> PeerSlots<K> {
    /// `per_peer` is at least 1: a peer with no slot could never be reached.
    pub fn new(per_peer: usize) -> PeerSlots<K> {
        PeerSlots {
            per_peer: per_peer.max(1),
            peers: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_peer(&self) -> usize {
        self.per_peer
    }

    /// Waits for a free slot at `peer`; it is held until the permit is
    /// dropped. Callers bound the wait with their own timeout.
    pub async fn acquire(&self, peer: &K) -> OwnedSemaphorePermit {
        let semaphore = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            match peers.get(peer) {
                Some(semaphore) => semaphore.clone(),
                None => {
                    // Swept when a peer is added, so the map holds at most
                    // the peers in use and the one added. Every holder and
                    // waiter owns a clone: one count is the map's.
                    peers.retain(|_, s| Arc::strong_count(s) > 1);
                    let semaphore = Arc::new(Semaphore::new(self.per_peer));
                    peers.insert(peer.clone(), semaphore.clone());
                    semaphore
                }
            }
        };
        semaphore
            .acquire_owned()
            .await
            .expect("peer semaphores are never closed")
    }

    /// Peers with an entry: those with a slot held or awaited, and those
    /// released since a peer was last added.
    #[cfg(test)]
    fn peers(&self) -> usize {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_peer_gets_at_most_its_slots_and_others_do_not_wait_for_it() {
        let slots = PeerSlots::new(2);
        let a1 = slots.acquire(&"a").await;
        let _a2 = slots.acquire(&"a").await;
        let third = tokio::time::timeout(Duration::from_millis(50), slots.acquire(&"a")).await;
        assert!(third.is_err(), "a third slot at a peer with two");
        let _b = tokio::time::timeout(Duration::from_millis(50), slots.acquire(&"b"))
            .await
            .expect("another peer's slot is free");
        drop(a1);
        let _a3 = tokio::time::timeout(Duration::from_millis(50), slots.acquire(&"a"))
            .await
            .expect("a released slot is taken again");
    }

    #[tokio::test]
    async fn peers_nobody_holds_leave_no_entry() {
        let slots = PeerSlots::new(1);
        for i in 0..100 {
            drop(slots.acquire(&i).await);
        }
        // The last one released is only swept when the next is added.
        assert_eq!(slots.peers(), 1);
        let held = slots.acquire(&1000).await;
        assert_eq!(slots.peers(), 1);
        drop(held);
    }

    #[test]
    fn zero_slots_means_one() {
        assert_eq!(PeerSlots::<u8>::new(0).per_peer(), 1);
    }
}
