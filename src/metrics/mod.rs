//! What an operator watches, in Prometheus' text format (served on the
//! admin listener by `proxy::admin`): requests by outcome, each
//! recipient's request-status class, receivers' latency, the DNS and
//! capability caches, the mail queue, mail outcomes in and out, open
//! connections.
//!
//! One process-wide set of families on its own registry, so the exposition
//! holds exactly what is documented here and nothing a library registers.
//! Labels come from the enums below, never from request data, so a
//! stranger cannot grow the number of series.

mod dns_cache;

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// An enum whose variants are a label's only values, each with its text.
macro_rules! label {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }
    };
}

label! {
    /// How an inbound iSchedule POST ended.
    PostOutcome {
        /// Scheduled (each recipient has its own status).
        Scheduled => "scheduled",
        /// Every recipient answered from the idempotency record.
        Repeated => "repeated",
        /// Refused with an `IS:error`.
        Rejected => "rejected",
    }
}

label! {
    /// How a recipient was reached.
    Path {
        Native => "native",
        Imip => "imip",
        /// Answered from the idempotency record.
        Recorded => "recorded",
        /// Answered without sending (no receiver, DNS failure).
        None => "none",
    }
}

label! {
    /// What a receiver request was for.
    ReceiverRequest {
        Capabilities => "capabilities",
        Post => "post",
    }
}

label! {
    /// What one SMTP transaction of the bridge's own mail came to.
    MailOutcome {
        Accepted => "accepted",
        Written => "written",
        Temporary => "temporary",
        Permanent => "permanent",
    }
}

label! {
    /// What became of one inbound mail recipient (the reply's class).
    InboundVerdict {
        Accepted => "accepted",
        Deferred => "deferred",
        Refused => "refused",
    }
}

label! {
    /// Which listener a connection came in on.
    Listener {
        Http => "http",
        Smtp => "smtp",
        Lmtp => "lmtp",
    }
}

/// request-status classes (RFC 5546 3.6): the first digit.
const CLASSES: [&str; 5] = ["1", "2", "3", "4", "5"];

pub struct Metrics {
    registry: Registry,
    posts: IntCounterVec,
    statuses: IntCounterVec,
    receiver_seconds: HistogramVec,
    capability_cache: IntCounterVec,
    dns_cache: IntCounterVec,
    queue_messages: IntGauge,
    queue_oldest_seconds: IntGauge,
    mail: IntCounterVec,
    inbound: IntCounterVec,
    connections: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("ischedule".into()), None).expect("a constant, valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let family = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("constant, valid metric names");
            registry
                .register(Box::new(family.clone()))
                .expect("each family registered once");
            family
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("constant, valid metric names");
            registry
                .register(Box::new(g.clone()))
                .expect("each family registered once");
            g
        };
        let receiver_seconds = HistogramVec::new(
            HistogramOpts::new(
                "receiver_request_seconds",
                "Time of one request to an iSchedule receiver, connect to last byte",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["request"],
        )
        .expect("constant, valid metric names");
        registry
            .register(Box::new(receiver_seconds.clone()))
            .expect("each family registered once");
        let connections = IntGaugeVec::new(
            Opts::new("open_connections", "Client connections open now"),
            &["listener"],
        )
        .expect("constant, valid metric names");
        registry
            .register(Box::new(connections.clone()))
            .expect("each family registered once");
        Metrics {
            posts: counter(
                "posts_total",
                "Inbound iSchedule POSTs by outcome",
                &["outcome"],
            ),
            statuses: counter(
                "recipient_status_total",
                "Per-recipient request-status answers by path and class (1, 2, 3, 5)",
                &["path", "class"],
            ),
            capability_cache: counter(
                "capability_cache_total",
                "Receiver capability look-ups: fresh from the cache, or fetched",
                &["result"],
            ),
            dns_cache: counter(
                "dns_cache_total",
                "DNS look-ups answered from the resolvers' cache (hit) or asked of a server (miss)",
                &["result"],
            ),
            queue_messages: gauge("queue_messages", "Mail messages in the durable queue"),
            queue_oldest_seconds: gauge(
                "queue_oldest_age_seconds",
                "Age of the oldest queued mail message (0 when empty)",
            ),
            mail: counter(
                "mail_outcomes_total",
                "SMTP transactions of the bridge's own mail by outcome",
                &["outcome"],
            ),
            inbound: counter(
                "inbound_mail_total",
                "Inbound mail recipients by verdict (the SMTP/LMTP reply class)",
                &["verdict"],
            ),
            receiver_seconds,
            connections,
            registry,
        }
        .with_every_series()
        .counting_dns_cache()
    }

    /// Hickory counts its cache hits through the `metrics` facade, and
    /// takes its counters from whatever recorder is installed when a
    /// resolver is built: so this runs before any resolver exists (the
    /// resolvers call [`get`] first). Only one recorder per process can be
    /// installed; a second `Metrics` (tests) keeps its DNS family at zero.
    fn counting_dns_cache(self) -> Metrics {
        let recorder = dns_cache::DnsCacheRecorder {
            hit: self.dns_cache.with_label_values(&["hit"]),
            miss: self.dns_cache.with_label_values(&["miss"]),
        };
        let _ = ::metrics::set_global_recorder(recorder);
        self
    }

    /// Every series exists from the start, at zero: a rate over a series
    /// that appears only with its first event misses that event.
    fn with_every_series(self) -> Metrics {
        for outcome in PostOutcome::ALL {
            self.posts.with_label_values(&[outcome.label()]);
        }
        for path in Path::ALL {
            for class in CLASSES {
                self.statuses.with_label_values(&[path.label(), class]);
            }
        }
        for request in ReceiverRequest::ALL {
            self.receiver_seconds.with_label_values(&[request.label()]);
        }
        for hit in [true, false] {
            self.capability_cache.with_label_values(&[cache_label(hit)]);
        }
        for result in ["hit", "miss"] {
            self.dns_cache.with_label_values(&[result]);
        }
        for outcome in MailOutcome::ALL {
            self.mail.with_label_values(&[outcome.label()]);
        }
        for verdict in InboundVerdict::ALL {
            self.inbound.with_label_values(&[verdict.label()]);
        }
        for listener in Listener::ALL {
            self.connections.with_label_values(&[listener.label()]);
        }
        self
    }

    pub fn post(&self, outcome: PostOutcome) {
        self.posts.with_label_values(&[outcome.label()]).inc();
    }

    /// One recipient's answer; `class` is the request-status class (1-5).
    pub fn status(&self, path: Path, class: u8) {
        let class = CLASSES[usize::from(class.clamp(1, 5)) - 1];
        self.statuses
            .with_label_values(&[path.label(), class])
            .inc();
    }

    pub fn receiver_request(&self, request: ReceiverRequest, seconds: f64) {
        self.receiver_seconds
            .with_label_values(&[request.label()])
            .observe(seconds);
    }

    pub fn capability_cache(&self, hit: bool) {
        self.capability_cache
            .with_label_values(&[cache_label(hit)])
            .inc();
    }

    pub fn queue(&self, messages: u64, oldest_seconds: u64) {
        self.queue_messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.queue_oldest_seconds
            .set(i64::try_from(oldest_seconds).unwrap_or(i64::MAX));
    }

    pub fn mail(&self, outcome: MailOutcome) {
        self.mail.with_label_values(&[outcome.label()]).inc();
    }

    pub fn inbound(&self, verdict: InboundVerdict) {
        self.inbound.with_label_values(&[verdict.label()]).inc();
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection(&self, listener: Listener) -> ConnectionGuard {
        let gauge = self.connections.with_label_values(&[listener.label()]);
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn cache_label(hit: bool) -> &'static str {
    if hit {
        "hit"
    } else {
        "fetched"
    }
}

/// An open connection; closes its count when dropped.
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        let m = Metrics::new();
        m.post(PostOutcome::Scheduled);
        m.status(Path::Imip, 1);
        m.status(Path::Native, 2);
        {
            let _open = m.connection(Listener::Smtp);
            assert!(m
                .render()
                .contains("ischedule_open_connections{listener=\"smtp\"} 1"));
        }
        let text = m.render();
        assert!(
            text.contains("ischedule_posts_total{outcome=\"scheduled\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ischedule_recipient_status_total{class=\"1\",path=\"imip\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ischedule_open_connections{listener=\"smtp\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ischedule_receiver_request_seconds histogram"),
            "{text}"
        );
    }
}
