//! The outbound mail queue's worker, run by Pingora as a background
//! service beside the HTTP service: it retries due mail and reports what
//! is given up to the organizer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::mail::outbound::queue::{GivenUp, Mailer, CLAIM};
use crate::proxy::in_flight::InFlight;
use crate::scheduling::{unix_now, Scheduler};
use crate::store;

/// Longest sleep between passes, so mail queued by `queue retry` from the
/// command line is picked up soon even when nothing else is due.
const MAX_IDLE: Duration = Duration::from_secs(5);

/// Claims worked in one pass before the worker looks at the clock again.
const CLAIMS_PER_PASS: usize = 16;

/// How often expired idempotency and sent-mail records are swept (a full scan).
const PURGE_EVERY_SECS: u64 = 60;

pub struct QueueWorker {
    pub scheduler: Arc<Scheduler>,
    pub mailer: Arc<Mailer>,
    /// When the idempotency records were last swept (Unix seconds).
    pub purged_at: AtomicU64,
    /// A pass counts as work in progress.
    pub in_flight: InFlight,
}

impl QueueWorker {
    /// One pass; returns how long to sleep before the next.
    pub async fn pass(&self) -> Duration {
        let mailer = &self.mailer;
        // Expired idempotency records and reply tokens go too, or the store
        // grows with every POST for as long as the bridge runs.
        let now = unix_now();
        if now >= self.purged_at.load(Ordering::Relaxed) + PURGE_EVERY_SECS {
            self.purged_at.store(now, Ordering::Relaxed);
            let purged = store::blocking(&self.scheduler.store, "purge_expired", move |s| {
                s.purge_expired(now)
            });
            match purged.await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(target: "ischedule::queue", purged = n, "idempotency records, sent-mail records and reply tokens expired")
                }
                Err(e) => {
                    tracing::error!(target: "ischedule::queue", error = %e, "purging expired records failed")
                }
            }
        }
        // Claim after claim, each settled (and its failures reported)
        // within its lease, while whole claims come back.
        for _ in 0..CLAIMS_PER_PASS {
            match mailer.retry_due(unix_now()).await {
                Ok(claimed) => {
                    for g in &claimed.given_up {
                        self.report_given_up(g).await;
                    }
                    if claimed.count < CLAIM {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(target: "ischedule::queue", error = %e, "queue pass failed");
                    break;
                }
            }
        }
        match store::blocking(&mailer.store, "next_due", |s| s.next_due()).await {
            // Never a busy loop, even when items are overdue.
            Ok(Some(next)) => Duration::from_secs(next.saturating_sub(unix_now()))
                .clamp(Duration::from_millis(200), MAX_IDLE),
            _ => MAX_IDLE,
        }
    }

    /// Tells the organizer, by a REPLY from the attendee carrying
    /// `REQUEST-STATUS:5.1`, that queued mail will not be delivered; the
    /// item leaves the queue only once that is settled.
    async fn report_given_up(&self, given_up: &GivenUp) {
        let Some(notice) = &given_up.mail.notice else {
            return;
        };
        let undeliverable = &given_up.undeliverable;
        let why = format!("{} ({})", undeliverable.why, undeliverable.status);
        let reference = format!("queue-{}", given_up.id);
        let outcome = self
            .scheduler
            .report_failure(notice, &why, &reference)
            .await;
        if let Err(e) = self.mailer.reported(given_up, &outcome, unix_now()).await {
            tracing::error!(target: "ischedule::queue", id = given_up.id, error = %e, "could not settle a given-up item; its report will be repeated");
        }
    }
}

#[async_trait]
impl BackgroundService for QueueWorker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let busy = self.in_flight.enter();
            let sleep = self.pass().await;
            drop(busy);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.mailer.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
}
