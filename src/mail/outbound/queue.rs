//! Delivery of composed mail: at once, or later from the durable queue.
//!
//! The promise to the iSchedule sender is "1.0;Pending means it will be
//! delivered or reported": so a temporary failure is committed to the store
//! before the answer goes out, and a message leaves the store only when it
//! was accepted, or given up on and reported.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Notify;

use super::transport::Transport;
use crate::config;
use crate::imip::outbound::Composed;
use crate::ischedule::RequestStatus;
use crate::scheduling::failure_report::ReportOutcome;
use crate::smtp::{Outcome, StatusMap};
use crate::store::{self, FailureNotice, QueuedMail, Store, StoreError, Undeliverable, UnixTime};

/// How many due messages one claim takes. Small, because the claim's
/// lease must cover sending them one after the other, and reporting those
/// given up: what a dead bridge claimed waits that long for another.
pub const CLAIM: usize = 4;

/// Added to a lease for the store's round trips.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Failed attempts to post a failure REPLY before the notice is dropped
/// (logged as an error): with the queue's back-off that is days of trying.
pub const MAX_REPORT_ATTEMPTS: u32 = 12;

pub struct Mailer {
    pub transport: Transport,
    pub store: Arc<dyn Store>,
    pub status_map: StatusMap,
    pub queue: config::Queue,
    /// How long the record of a sent mail is kept for its bounces: the
    /// queue's maximum age (a relay may bounce that late) plus the
    /// idempotency window (a retried POST resends the same Message-ID).
    pub remember_sent: Duration,
    /// Wakes the queue worker when mail is queued to go out at once.
    pub wake: Notify,
    /// How long a claim keeps other bridges sharing the queue off its
    /// mail: see [`Mailer::lease_for`].
    pub lease: Duration,
}

/// What one claim of due mail came to.
#[derive(Debug, Default)]
pub struct Claimed {
    /// How many items were claimed: fewer than [`CLAIM`] when the due ones ran out.
    pub count: usize,
    /// Those given up, still queued until [`Mailer::reported`] settles them.
    pub given_up: Vec<GivenUp>,
}

/// A queued message that will not be delivered, kept in the queue until
/// the organizer has been told.
#[derive(Debug)]
pub struct GivenUp {
    pub id: u64,
    pub mail: QueuedMail,
    pub undeliverable: Undeliverable,
}

/// When to try a failure report again after `outcome`, if at all: never
/// once it is final, nor after [`MAX_REPORT_ATTEMPTS`] failures.
pub fn next_report(
    queue: &config::Queue,
    outcome: &ReportOutcome,
    failed_before: u32,
) -> Option<Duration> {
    let failures = failed_before + 1;
    (!outcome.is_final() && failures < MAX_REPORT_ATTEMPTS).then(|| backoff(queue, failures))
}

/// Mail the store would not take, handed back so that it can still be sent
/// some other way.
#[derive(Debug)]
pub struct NotQueued {
    pub error: StoreError,
    pub mail: Composed,
}

/// Exponential back-off: `first_retry` doubled per attempt, at most `max_retry`.
pub fn backoff(queue: &config::Queue, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    queue
        .first_retry
        .saturating_mul(factor)
        .min(queue.max_retry)
}

impl Mailer {
    /// Sends each mail now and returns each recipient's status and
    /// description, in order. The mails are recorded as sent together
    /// first (one commit for all of a request's recipients), then sent
    /// side by side.
    pub async fn deliver(
        &self,
        mails: Vec<Composed>,
        now: UnixTime,
    ) -> Vec<(RequestStatus, String)> {
        self.record_sent(&mails, now).await;
        join_all(mails.into_iter().map(|mail| self.send(mail, now))).await
    }

    /// [`Mailer::deliver`] for one mail.
    pub async fn deliver_one(&self, mail: Composed, now: UnixTime) -> (RequestStatus, String) {
        self.record_sent(std::slice::from_ref(&mail), now).await;
        self.send(mail, now).await
    }

    /// Sends one recorded mail; a temporary failure is queued durably.
    async fn send(&self, mail: Composed, now: UnixTime) -> (RequestStatus, String) {
        let outcome = self
            .transport
            .send(&mail.envelope_from, &mail.recipient, &mail.message)
            .await;
        let Outcome::Temporary { reason } = &outcome else {
            return self.status_map.status(&outcome, &mail.recipient);
        };
        let queued = QueuedMail {
            envelope_from: mail.envelope_from,
            recipient: mail.recipient.clone(),
            message: mail.message,
            attempts: 1,
            queued_at: now,
            next_attempt: now + backoff(&self.queue, 1).as_secs(),
            last_error: Some(reason.to_string()),
            notice: mail.notice,
            given_up: None,
        };
        let limit = self.queue.max_messages;
        let stored = store::blocking(&self.store, "enqueue", move |s| s.enqueue(&queued, limit));
        match stored.await {
            Ok(id) => {
                let (status, why) = self.status_map.status(&outcome, &mail.recipient);
                (
                    status,
                    format!("{why}; queued as #{id}, retried with back-off"),
                )
            }
            // Not stored: the sender must keep the message and try again.
            Err(e) => (
                RequestStatus::service_unavailable(),
                format!(
                    "mail to {} failed ({reason}) and could not be queued: {e}",
                    mail.recipient
                ),
            ),
        }
    }

    /// Stores `mail` to go out on the worker's next pass, without waiting
    /// for the mail server: for mail the bridge already promised (the DSN
    /// behind a 250), where the promise must not wait on an SMTP session.
    pub async fn queue_now(&self, mail: Composed, now: UnixTime) -> Result<u64, Box<NotQueued>> {
        self.record_sent(std::slice::from_ref(&mail), now).await;
        let queued = QueuedMail {
            envelope_from: mail.envelope_from,
            recipient: mail.recipient,
            message: mail.message,
            attempts: 0,
            queued_at: now,
            next_attempt: now,
            last_error: None,
            notice: mail.notice,
            given_up: None,
        };
        let limit = self.queue.max_messages;
        let stored = {
            let queued = queued.clone();
            store::blocking(&self.store, "enqueue", move |s| s.enqueue(&queued, limit)).await
        };
        match stored {
            Ok(id) => {
                self.wake.notify_one();
                Ok(id)
            }
            Err(error) => Err(Box::new(NotQueued {
                error,
                mail: Composed {
                    envelope_from: queued.envelope_from,
                    recipient: queued.recipient,
                    message: queued.message,
                    notice: queued.notice,
                },
            })),
        }
    }

    /// Remembers that `mails` went out, for their bounces; a mail without
    /// a notice (a DSN) has nothing a bounce could report. Not remembered,
    /// a bounce of one is refused later: worth a warning, not worth holding
    /// the mail back.
    async fn record_sent(&self, mails: &[Composed], now: UnixTime) {
        let notices: Vec<FailureNotice> = mails.iter().filter_map(|m| m.notice.clone()).collect();
        if notices.is_empty() {
            return;
        }
        let expires = now + self.remember_sent.as_secs();
        let message_ids: Vec<String> = notices.iter().map(|n| n.message_id.clone()).collect();
        let recorded = store::blocking(&self.store, "record_sent", move |s| {
            s.record_sent(&notices, expires)
        });
        if let Err(e) = recorded.await {
            tracing::warn!(target: "ischedule::queue", message_ids = ?message_ids, error = %e, "could not record the mail as sent; a bounce of it will be refused");
        }
    }

    /// The lease of a claim: longer than sending each claimed mail (bounded
    /// by the SMTP timeout) and posting its failure report (bounded by the
    /// request timeout), so no two bridges ever send or report one item;
    /// and once it runs out, what a dead bridge had claimed is due again.
    pub fn lease_for(smtp_timeout: Duration, request_timeout: Duration) -> Duration {
        (smtp_timeout + request_timeout) * CLAIM as u32 + LEASE_MARGIN
    }

    /// Claims up to [`CLAIM`] due messages and works them: delivered ones
    /// leave the queue, temporary failures are rescheduled, the rest are
    /// given up and returned (with those whose failure report is due
    /// again), still queued until [`Mailer::reported`] settles them.
    pub async fn retry_due(&self, now: UnixTime) -> Result<Claimed, StoreError> {
        let mut given_up = Vec::new();
        let lease = self.lease;
        let claimed = store::blocking(&self.store, "claim_due", move |s| {
            s.claim_due(now, CLAIM, lease)
        });
        let claimed = claimed.await?;
        let count = claimed.len();
        for (id, mail) in claimed {
            if let Some(undeliverable) = mail.given_up.clone() {
                given_up.push(GivenUp {
                    id,
                    mail,
                    undeliverable,
                });
                continue;
            }
            let outcome = self
                .transport
                .send(&mail.envelope_from, &mail.recipient, &mail.message)
                .await;
            let attempts = mail.attempts + 1;
            match &outcome {
                Outcome::Accepted { reply, .. } => {
                    tracing::info!(target: "ischedule::queue", id, recipient = %mail.recipient, attempts, reply = %reply, "delivered");
                    store::blocking(&self.store, "remove", move |s| s.remove(id)).await?;
                }
                Outcome::Written { path } => {
                    tracing::info!(target: "ischedule::queue", id, recipient = %mail.recipient, path = %path.display(), "written");
                    store::blocking(&self.store, "remove", move |s| s.remove(id)).await?;
                }
                Outcome::Temporary { reason }
                    if now < mail.queued_at + self.queue.max_age.as_secs() =>
                {
                    let next = now + backoff(&self.queue, attempts).as_secs();
                    tracing::info!(target: "ischedule::queue", id, recipient = %mail.recipient, attempts, next_attempt = next, reply = %reason, "deferred");
                    let reason = reason.to_string();
                    store::blocking(&self.store, "reschedule", move |s| {
                        s.reschedule(id, next, attempts, &reason)
                    })
                    .await?;
                }
                Outcome::Temporary { reason } => {
                    let why = format!(
                        "mail to {} not delivered after {attempts} attempts over {} s: {reason}",
                        mail.recipient,
                        now.saturating_sub(mail.queued_at)
                    );
                    let status = RequestStatus::service_unavailable();
                    given_up.extend(self.give_up(id, mail, status, why, now).await?);
                }
                Outcome::Permanent { .. } => {
                    let (status, why) = self.status_map.status(&outcome, &mail.recipient);
                    given_up.extend(self.give_up(id, mail, status, why, now).await?);
                }
            }
        }
        Ok(Claimed { count, given_up })
    }

    /// Marks the item undeliverable, durably, before anyone is told; mail
    /// nobody is to be told about (a DSN) simply leaves the queue.
    async fn give_up(
        &self,
        id: u64,
        mail: QueuedMail,
        status: RequestStatus,
        why: String,
        now: UnixTime,
    ) -> Result<Option<GivenUp>, StoreError> {
        tracing::warn!(target: "ischedule::queue", id, status = %status, why = %why, "given up");
        if mail.notice.is_none() {
            store::blocking(&self.store, "remove", move |s| s.remove(id)).await?;
            return Ok(None);
        }
        let undeliverable = Undeliverable {
            status: status.to_string(),
            why,
            reports: 0,
        };
        // Due for its report only when the lease runs out: this bridge
        // reports it now, another one only if this one dies first.
        let (next, record) = (now + self.lease.as_secs(), undeliverable.clone());
        store::blocking(&self.store, "give_up", move |s| {
            s.give_up(id, next, &record)
        })
        .await?;
        Ok(Some(GivenUp {
            id,
            mail,
            undeliverable,
        }))
    }

    /// Settles a given-up item after its failure report: it leaves the
    /// queue once the report is final (or has failed too often), else it
    /// is due again after the back-off.
    pub async fn reported(
        &self,
        given_up: &GivenUp,
        outcome: &ReportOutcome,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let id = given_up.id;
        let failed_before = given_up.undeliverable.reports;
        match next_report(&self.queue, outcome, failed_before) {
            Some(wait) => {
                let undeliverable = Undeliverable {
                    reports: failed_before + 1,
                    ..given_up.undeliverable.clone()
                };
                tracing::info!(target: "ischedule::queue", id, reports = undeliverable.reports, retry_in = wait.as_secs(), outcome = %outcome, "failure report deferred");
                let next = now + wait.as_secs();
                store::blocking(&self.store, "give_up", move |s| {
                    s.give_up(id, next, &undeliverable)
                })
                .await
            }
            None => {
                if !outcome.is_final() {
                    tracing::error!(target: "ischedule::queue", id, reports = failed_before + 1, outcome = %outcome, "failure report abandoned: the organizer could not be told");
                }
                store::blocking(&self.store, "remove", move |s| s.remove(id))
                    .await
                    .map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let q = config::Queue {
            first_retry: Duration::from_secs(60),
            max_retry: Duration::from_secs(600),
            max_age: Duration::from_secs(86_400),
            max_messages: 10,
        };
        let secs: Vec<u64> = (1..=6).map(|a| backoff(&q, a).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff(&q, 1000).as_secs(), 600);
    }

    #[test]
    fn a_failed_report_is_retried_with_back_off_up_to_the_limit() {
        let q = config::Queue {
            first_retry: Duration::from_secs(60),
            max_retry: Duration::from_secs(600),
            max_age: Duration::from_secs(86_400),
            max_messages: 100,
        };
        let failed = ReportOutcome::Failed("receiver down".into());
        assert_eq!(next_report(&q, &failed, 0), Some(Duration::from_secs(60)));
        assert_eq!(next_report(&q, &failed, 1), Some(Duration::from_secs(120)));
        assert_eq!(
            next_report(&q, &failed, MAX_REPORT_ATTEMPTS - 2),
            Some(Duration::from_secs(600))
        );
        assert_eq!(next_report(&q, &failed, MAX_REPORT_ATTEMPTS - 1), None);
        let posted = ReportOutcome::Posted {
            status: RequestStatus::success(),
            at: "r".into(),
        };
        assert_eq!(next_report(&q, &posted, 0), None);
        let impossible = ReportOutcome::Impossible("no receiver".into());
        assert_eq!(next_report(&q, &impossible, 3), None);
    }
}
