//! Hickory's own cache counters, carried into [`super::Metrics`].
//!
//! Hickory reports its cache hits and misses through the `metrics` facade,
//! the only place that knows whether an answer came from the cache. This
//! recorder takes exactly those two counters into our registry and drops
//! every other series a library might record, so the exposition stays the
//! documented set.

use std::sync::Arc;

use ::metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use prometheus::IntCounter;

/// Routes hickory's cache hit/miss counters to `ischedule_dns_cache_total`.
pub(super) struct DnsCacheRecorder {
    pub(super) hit: IntCounter,
    pub(super) miss: IntCounter,
}

struct Forward(IntCounter);

impl CounterFn for Forward {
    fn increment(&self, value: u64) {
        self.0.inc_by(value);
    }

    fn absolute(&self, value: u64) {
        let now = self.0.get();
        if value > now {
            self.0.inc_by(value - now);
        }
    }
}

impl Recorder for DnsCacheRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let target = match key.name() {
            hickory_resolver::metrics::CACHE_HIT_TOTAL => &self.hit,
            hickory_resolver::metrics::CACHE_MISS_TOTAL => &self.miss,
            _ => return Counter::noop(),
        };
        Counter::from_arc(Arc::new(Forward(target.clone())))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
