//! Receivers' capabilities, cached by receiver (spec clause 7): fresh for
//! the response's `max-age`, revalidated with `If-None-Match`, dropped as
//! soon as a response carries a different `iSchedule-Capabilities` serial.

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

#[derive(Default)]
pub struct CapabilityCache {
    entries: Mutex<HashMap<String, CachedCapabilities>>,
}

impl CapabilityCache {
    /// The entry even when stale: its ETag makes the re-check cheap.
    pub fn get(&self, receiver: &str) -> Option<CachedCapabilities> {
        self.lock().get(receiver).cloned()
    }

    pub fn put(&self, receiver: &str, entry: CachedCapabilities) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(receiver) {
            let now = Instant::now();
            entries.retain(|_, e| e.is_fresh(now));
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(receiver.to_string(), entry);
    }

    /// A response announced serial `serial`; forget what we hold if it is
    /// another one, so the next message re-reads the capabilities.
    pub fn note_serial(&self, receiver: &str, serial: u64) -> bool {
        let mut entries = self.lock();
        let changed = entries
            .get(receiver)
            .is_some_and(|e| e.capabilities.serial != serial);
        if changed {
            entries.remove(receiver);
        }
        changed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedCapabilities>> {
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
}
