//! Delivery of composed mail: at once, or later from the durable queue.
//!
//! The promise to the iSchedule sender is "1.0;Pending means it will be
//! delivered or reported": so a temporary failure is committed to the store
//! before the answer goes out, and a message leaves the store only when it
//! was accepted, or given up on and reported.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::transport::Transport;
use crate::config;
use crate::imip::outbound::Composed;
use crate::ischedule::RequestStatus;
use crate::smtp::{Outcome, StatusMap};
use crate::store::{self, QueuedMail, Store, StoreError, UnixTime};

/// How many due messages one pass of the worker takes.
const BATCH: usize = 64;

pub struct Mailer {
    pub transport: Transport,
    pub store: Arc<dyn Store>,
    pub status_map: StatusMap,
    pub queue: config::Queue,
    /// Wakes the queue worker when mail is queued to go out at once.
    pub wake: Notify,
}

/// A queued message that will not be delivered, for the organizer's notice.
#[derive(Debug)]
pub struct GivenUp {
    pub id: u64,
    pub mail: QueuedMail,
    pub status: RequestStatus,
    pub why: String,
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
    /// Sends now and returns the recipient's status and description.
    pub async fn deliver(&self, mail: Composed, now: UnixTime) -> (RequestStatus, String) {
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
    pub fn queue_now(&self, mail: Composed, now: UnixTime) -> Result<u64, Box<NotQueued>> {
        let queued = QueuedMail {
            envelope_from: mail.envelope_from,
            recipient: mail.recipient,
            message: mail.message,
            attempts: 0,
            queued_at: now,
            next_attempt: now,
            last_error: None,
            notice: mail.notice,
        };
        match self.store.enqueue(&queued, self.queue.max_messages) {
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

    /// One pass over the due messages: delivered ones leave the queue,
    /// temporary failures are rescheduled, the rest are returned.
    pub async fn retry_due(&self, now: UnixTime) -> Result<Vec<GivenUp>, StoreError> {
        let mut given_up = Vec::new();
        for (id, mail) in self.store.due(now, BATCH)? {
            let outcome = self
                .transport
                .send(&mail.envelope_from, &mail.recipient, &mail.message)
                .await;
            let attempts = mail.attempts + 1;
            match &outcome {
                Outcome::Accepted { reply, .. } => {
                    tracing::info!(target: "ischedule::queue", id, recipient = %mail.recipient, attempts, reply = %reply, "delivered");
                    self.store.remove(id)?;
                }
                Outcome::Written { path } => {
                    tracing::info!(target: "ischedule::queue", id, recipient = %mail.recipient, path = %path.display(), "written");
                    self.store.remove(id)?;
                }
                Outcome::Temporary { reason }
                    if now < mail.queued_at + self.queue.max_age.as_secs() =>
                {
                    let next = now + backoff(&self.queue, attempts).as_secs();
                    tracing::info!(target: "ischedule::queue", id, recipient = %mail.recipient, attempts, next_attempt = next, reply = %reason, "deferred");
                    self.store
                        .reschedule(id, next, attempts, &reason.to_string())?;
                }
                Outcome::Temporary { reason } => {
                    let why = format!(
                        "mail to {} not delivered after {attempts} attempts over {} s: {reason}",
                        mail.recipient,
                        now.saturating_sub(mail.queued_at)
                    );
                    given_up.push(self.give_up(id, RequestStatus::service_unavailable(), why)?);
                }
                Outcome::Permanent { .. } => {
                    let (status, why) = self.status_map.status(&outcome, &mail.recipient);
                    given_up.push(self.give_up(id, status, why)?);
                }
            }
        }
        Ok(given_up)
    }

    fn give_up(&self, id: u64, status: RequestStatus, why: String) -> Result<GivenUp, StoreError> {
        tracing::warn!(target: "ischedule::queue", id, status = %status, why = %why, "given up");
        let mail = self.store.remove(id)?.ok_or(StoreError::NotQueued { id })?;
        Ok(GivenUp {
            id,
            mail,
            status,
            why,
        })
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
}
