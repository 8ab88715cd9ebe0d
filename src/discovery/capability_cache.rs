//! Receivers' capabilities, cached by receiver (spec clause 7): fresh for
//! the response's `max-age`, revalidated with `If-None-Match`, dropped as
//! soon as a response carries a different `iSchedule-Capabilities` serial.
//! A receiver whose document could not be read is remembered as such for a
//! short while, so that the lenient path (send anyway) does not cost it a
//! second request before every message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ischedule::capabilities::Capabilities;

/// How long capabilities stay fresh when the receiver says nothing.
pub const DEFAULT_FRESHNESS: Duration = Duration::from_secs(300);
/// Receivers a bridge talks to are few; the bound only stops a flood of
/// distinct domains from growing memory without end.
const MAX_ENTRIES: usize = 10_000;

/// What asking a receiver for its capabilities found out, for delivery and
/// for `route`.
#[derive(Debug, Clone)]
pub enum CapabilityOutcome {
    Known {
        capabilities: Box<Capabilities>,
        from: String,
    },
    /// The receiver answered but without a usable document; the message is
    /// sent anyway and the receiver judges it (lenient to old receivers).
    Unknown { why: String },
}

#[derive(Debug, Clone)]
pub struct CachedCapabilities {
    pub capabilities: Capabilities,
    pub etag: Option<String>,
    /// Where the document was finally found (after redirects); scheduling
    /// POSTs go there.
    pub url: String,
    pub fresh_until: Instant,
}

impl CachedCapabilities {
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }
}

/// A receiver that answered the capabilities request without a usable
/// document: why, and where it answered (POSTs go there).
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub why: String,
    pub url: String,
    pub until: Instant,
}

#[derive(Default)]
pub struct CapabilityCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    known: HashMap<String, CachedCapabilities>,
    unreadable: HashMap<String, Unreadable>,
}

impl CapabilityCache {
    /// The entry even when stale: its ETag makes the re-check cheap.
    pub fn get(&self, receiver: &str) -> Option<CachedCapabilities> {
        self.lock().known.get(receiver).cloned()
    }

    pub fn put(&self, receiver: &str, entry: CachedCapabilities) {
        let mut entries = self.lock();
        entries.unreadable.remove(receiver);
        let known = &mut entries.known;
        if known.len() >= MAX_ENTRIES && !known.contains_key(receiver) {
            let now = Instant::now();
            known.retain(|_, e| e.is_fresh(now));
            if known.len() >= MAX_ENTRIES {
                known.clear();
            }
        }
        known.insert(receiver.to_string(), entry);
    }

    /// The receiver's capabilities could not be read: until `entry.until`,
    /// [`Self::unreadable`] answers for it.
    pub fn put_unreadable(&self, receiver: &str, entry: Unreadable) {
        let mut entries = self.lock();
        let unreadable = &mut entries.unreadable;
        if unreadable.len() >= MAX_ENTRIES && !unreadable.contains_key(receiver) {
            let now = Instant::now();
            unreadable.retain(|_, e| now < e.until);
            if unreadable.len() >= MAX_ENTRIES {
                unreadable.clear();
            }
        }
        unreadable.insert(receiver.to_string(), entry);
    }

    /// Why the receiver's capabilities could not be read, while that is
    /// recent enough to be believed.
    pub fn unreadable(&self, receiver: &str, now: Instant) -> Option<Unreadable> {
        self.lock()
            .unreadable
            .get(receiver)
            .filter(|e| now < e.until)
            .cloned()
    }

    /// A response announced serial `serial`; forget what we hold if it is
    /// another one, so the next message re-reads the capabilities.
    /// A receiver remembered as unreadable that announces a serial has a
    /// document now: forgotten too.
    pub fn note_serial(&self, receiver: &str, serial: u64) -> bool {
        let mut entries = self.lock();
        let changed = entries
            .known
            .get(receiver)
            .is_some_and(|e| e.capabilities.serial != serial);
        if changed {
            entries.known.remove(receiver);
        }
        entries.unreadable.remove(receiver).is_some() || changed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic elsewhere never leaves the map half-written: every
        // mutation is a single insert/remove/retain.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Freshness from `Cache-Control` (RFC 7234 5.2): `no-cache`/`no-store`
/// mean "revalidate every time", `max-age` is taken up to `cap`.
pub fn freshness(cache_control: Option<&str>, cap: Duration) -> Duration {
    let Some(value) = cache_control else {
        return DEFAULT_FRESHNESS.min(cap);
    };
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Duration::ZERO;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
        .map_or(DEFAULT_FRESHNESS, Duration::from_secs)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_decides_freshness() {
        let cap = Duration::from_secs(3600);
        assert_eq!(
            freshness(Some("max-age=60, public"), cap),
            Duration::from_secs(60)
        );
        assert_eq!(freshness(Some("no-cache"), cap), Duration::ZERO);
        assert_eq!(freshness(Some("max-age=999999"), cap), cap);
        assert_eq!(freshness(None, cap), DEFAULT_FRESHNESS);
    }

    #[test]
    fn unreadable_is_believed_until_its_time_or_a_sign_of_change() {
        let cache = CapabilityCache::default();
        let now = Instant::now();
        let entry = |secs| Unreadable {
            why: "HTTP 404".into(),
            url: "http://r.example/ischedule".into(),
            until: now + Duration::from_secs(secs),
        };
        cache.put_unreadable("r", entry(60));
        assert_eq!(cache.unreadable("r", now).unwrap().why, "HTTP 404");
        assert!(cache
            .unreadable("r", now + Duration::from_secs(61))
            .is_none());
        // A serial in a POST's answer means a document exists now.
        assert!(cache.note_serial("r", 7));
        assert!(cache.unreadable("r", now).is_none());
        assert!(!cache.note_serial("r", 7), "nothing left to forget");
    }
}
