//! The transport-neutral scheduling core (DESIGN.md "Flows"): one
//! scheduling request, from wherever it came (an iSchedule POST, or mail
//! turned into iSchedule), to one answer per recipient.
//!
//! The steps, each in its own module and each readable on its own:
//! answer a retry from the idempotency record ([`idempotency`]), route every
//! recipient and group them by receiver ([`plan`]), deliver each group
//! natively ([`native`]), fall back to mail where the mode allows
//! ([`fallback`]), send the mail, and merge everything in request order
//! ([`merge`]). Native and mail delivery sit behind the traits of
//! [`delivery`]; the HTTP and SMTP adapters implement them from above, so
//! nothing here opens a socket. [`sender`] holds who may ask for what, and
//! [`failure_report`] how an organizer hears that mail will not arrive;
//! [`peer_slots`] how many exchanges run at once with one peer.

pub mod delivery;
pub mod failure_report;
pub mod fallback;
pub mod idempotency;
pub mod merge;
pub mod native;
pub mod peer_slots;
pub mod plan;
pub mod sender;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::join_all;

pub use delivery::{Author, ByMail, Contact, Delivered, Failure, MailDelivery, NativeDelivery};
pub use merge::RecipientLog;
pub use sender::Sender;

use crate::config::Config;
use crate::discovery::DnsResolver;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::xml::{RecipientResponse, ScheduleResponse};
use crate::ischedule::RequestStatus;
use crate::itip::ComponentKind;
use crate::metrics;
use crate::routing::{Routed, Router};
use crate::store::{Store, StoreError, UnixTime};
use delivery::response;
use idempotency::Recorded;
use merge::Outcomes;

pub struct Scheduler {
    pub config: Arc<Config>,
    pub resolver: Arc<DnsResolver>,
    pub native: Arc<dyn NativeDelivery>,
    pub mail: Arc<dyn MailDelivery>,
    pub store: Arc<dyn Store>,
}

/// The answer to a request and how it was reached.
pub struct Scheduled {
    pub response: ScheduleResponse,
    pub log: Vec<RecipientLog>,
    /// Every recipient was answered from the idempotency record: nothing
    /// was sent again.
    pub repeated: bool,
}

/// Whether recipients without a usable receiver may be sent mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailPolicy {
    /// iSchedule POSTs: per the recipient's mode.
    PerMode,
    /// Requests that arrived by mail: sending mail again could loop, so
    /// such recipients answer `5.3` and the intake decides (pass the mail
    /// through, or refuse it).
    Never,
}

impl Scheduled {
    /// What `sender` may be told: everything when it is local, otherwise
    /// only the receivers' own words (see [`merge::withhold_details`]).
    pub fn disclose_to(&mut self, sender: &Sender) {
        if !sender.is_local() {
            merge::withhold_details(&mut self.response, &mut self.log);
        }
    }
}

pub fn unix_now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The answer when the state store cannot be asked.
fn store_unavailable(request: &SchedulingRequest, error: &StoreError) -> Scheduled {
    tracing::warn!(target: "ischedule::post", error = %error, "idempotency record unreadable: nothing sent");
    let why = match error {
        StoreError::Unavailable { .. } => error.to_string(),
        _ => format!("state store unavailable: {error}"),
    };
    let status = RequestStatus::service_unavailable();
    let responses: Vec<RecipientResponse> = request
        .recipients
        .iter()
        .map(|r| response(r, status.clone(), &why))
        .collect();
    let log = request
        .recipients
        .iter()
        .map(|r| RecipientLog {
            recipient: r.to_string(),
            route: "none".into(),
            receiver: None,
            status: status.to_string(),
            author: Author::Bridge,
            path: metrics::Path::None,
            detail: None,
        })
        .collect();
    for _ in &responses {
        metrics::get().status(metrics::Path::None, status.code.class);
    }
    Scheduled {
        response: ScheduleResponse { responses },
        log,
        repeated: false,
    }
}

impl Scheduler {
    pub fn router(&self) -> Router<'_> {
        Router {
            config: &self.config,
            resolver: &self.resolver,
        }
    }

    pub async fn schedule(&self, request: &SchedulingRequest, policy: MailPolicy) -> Scheduled {
        let key = idempotency::key(request);
        let mut recorded = match &key {
            Some(key) => match Recorded::recall(&self.store, key, unix_now()).await {
                Ok(recorded) => recorded,
                // Nothing is sent: without the record a retry cannot be
                // told from a first request, and sending could send twice.
                // Every recipient gets a temporary failure saying why, and
                // the sender (or the MTA, told 4xx) tries again.
                Err(e) => return store_unavailable(request, &e),
            },
            None => Recorded::default(),
        };
        let fresh: Vec<_> = request
            .recipients
            .iter()
            .filter(|r| recorded.answer(r).is_none())
            .cloned()
            .collect();
        let outcomes = if fresh.is_empty() {
            Outcomes::default()
        } else if fresh.len() == request.recipients.len() {
            self.schedule_once(request, policy).await
        } else {
            let rest = SchedulingRequest {
                recipients: fresh,
                ..request.clone()
            };
            self.schedule_once(&rest, policy).await
        };
        let mailed = !outcomes.mailed.is_empty();
        let (response, log) = merge::merge(&request.recipients, &recorded, outcomes);
        let repeated = log.iter().all(|l| l.path == metrics::Path::Recorded);
        for (entry, answer) in log.iter().zip(&response.responses) {
            metrics::get().status(entry.path, answer.status.code.class);
        }
        // Recorded where a retry must not repeat the work: mail sent (a
        // second mail would reach the attendee), requests that came by mail
        // (the MTA's retry after a deferral), and whatever already has a
        // record. A native-only POST retried simply reaches its receiver
        // again, as it would without the bridge, and recording every such
        // answer would grow the store with traffic.
        let worth_recording = mailed || policy == MailPolicy::Never || !recorded.is_empty();
        if let Some(key) = key.filter(|_| worth_recording && !repeated) {
            let expires = unix_now() + self.config.idempotency_window.as_secs();
            let fresh: Vec<RecipientResponse> = response
                .responses
                .iter()
                .zip(&log)
                .filter(|(_, l)| l.path != metrics::Path::Recorded)
                .map(|(r, _)| r.clone())
                .collect();
            if let Err(e) = recorded.record(&self.store, &key, &fresh, expires).await {
                tracing::warn!(target: "ischedule::post", error = %e, "could not record the answer for idempotency");
            }
        }
        Scheduled {
            response,
            log,
            repeated,
        }
    }

    /// Route, group, deliver, fall back, mail: every step for recipients
    /// that have no recorded answer.
    async fn schedule_once(&self, request: &SchedulingRequest, policy: MailPolicy) -> Outcomes {
        let router = self.router();
        let routed: Vec<Routed> =
            join_all(request.recipients.iter().map(|r| router.route(r))).await;
        let mut plan = plan::plan(&routed, policy);

        let groups = std::mem::take(&mut plan.groups);
        let limit = self.config.timeouts.request;
        let delivered = join_all(
            groups
                .iter()
                .map(|g| native::deliver_within(self.native.as_ref(), limit, request, g)),
        )
        .await;
        fallback::fall_back(&mut plan, &routed, &groups, delivered, policy);

        let mailed: HashSet<_> = plan.by_mail.iter().map(|m| m.address.clone()).collect();
        let sent = self.mail(request, &plan.by_mail).await;
        for (m, response) in plan.by_mail.iter().zip(sent) {
            plan.answered.insert(m.address.clone(), response);
        }
        Outcomes {
            routed,
            answers: plan.answered,
            relayed: plan.relayed,
            mailed,
        }
    }

    /// Mail for `by_mail`, except free-busy, which only a receiver can answer.
    async fn mail(
        &self,
        request: &SchedulingRequest,
        by_mail: &[ByMail],
    ) -> Vec<RecipientResponse> {
        if by_mail.is_empty() {
            return Vec::new();
        }
        if request.itip.component == ComponentKind::VFreeBusy {
            return by_mail
                .iter()
                .map(|m| {
                    let why = format!(
                        "free-busy needs a native iSchedule receiver, none usable: {}",
                        m.why
                    );
                    response(&m.address, RequestStatus::no_scheduling_support(), &why)
                })
                .collect();
        }
        self.mail.send(request, by_mail).await
    }
}
