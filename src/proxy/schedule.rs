//! One scheduling request end to end: answer a retry from the idempotency
//! record, route every recipient, deliver native groups concurrently, send
//! mail where there is no receiver (or it failed and the mode allows it),
//! and merge everything into one schedule-response in request order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::join_all;
use serde::Serialize;

use super::forward::{Delivered, Forwarder};
use crate::config::{Config, Mode, ReplyRouting};
use crate::digest;
use crate::discovery::DnsResolver;
use crate::imip::outbound;
use crate::imip::summary::Summary;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::xml::{RecipientResponse, ScheduleResponse};
use crate::ischedule::{CalAddress, RequestStatus, StatusCode};
use crate::itip::failure_reply::FailureReply;
use crate::itip::{ComponentKind, ItipMessage};
use crate::mail::outbound::queue::{GivenUp, Mailer};
use crate::routing::{Decision, Receiver, Routed, Router};
use crate::store::{FailureNotice, Store, UnixTime};

pub struct Scheduler {
    pub config: Arc<Config>,
    pub resolver: Arc<DnsResolver>,
    pub forwarder: Forwarder,
    pub mailer: Mailer,
    pub store: Arc<dyn Store>,
}

/// What happened to one recipient, for the one log line per POST.
#[derive(Debug, Serialize)]
pub struct RecipientLog {
    pub recipient: String,
    pub route: String,
    pub receiver: Option<String>,
    pub status: String,
}

/// The answer to a POST and how it was reached.
pub struct Scheduled {
    pub response: ScheduleResponse,
    pub log: Vec<RecipientLog>,
    /// Answered from the idempotency record: nothing was sent again.
    pub repeated: bool,
    /// Some recipient went by mail.
    pub mailed: bool,
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

/// A recipient on its way to mail, and why it goes there.
struct ByMail {
    address: CalAddress,
    reply_routing: ReplyRouting,
    why: String,
}

pub fn unix_now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Scheduler {
    pub fn router(&self) -> Router<'_> {
        Router {
            config: &self.config,
            resolver: &self.resolver,
        }
    }

    pub async fn schedule(&self, request: &SchedulingRequest, policy: MailPolicy) -> Scheduled {
        let key = idempotency_key(request);
        if let Some(repeat) = key.as_deref().and_then(|k| self.recall(k)) {
            return repeat;
        }
        let scheduled = self.schedule_once(request, policy).await;
        // An answer with a temporary failure must not be replayed: the
        // sender's retry is what gets that recipient delivered.
        let temporary = scheduled
            .response
            .responses
            .iter()
            .any(|r| r.status.code == StatusCode::SERVICE_UNAVAILABLE);
        // Recorded where a retry must not repeat the work: mail sent (a
        // second mail would reach the attendee), and requests that came by
        // mail (the MTA's retry after a deferral). A native-only POST retried
        // simply reaches its receiver again, as it would without the bridge,
        // and recording every such answer would grow the store with traffic.
        let worth_recording = scheduled.mailed || policy == MailPolicy::Never;
        if let Some(key) = key.filter(|_| !temporary && worth_recording) {
            let expires = unix_now() + self.config.idempotency_window.as_secs();
            if let Err(e) =
                self.store
                    .remember(&key, scheduled.response.to_xml().as_bytes(), expires)
            {
                tracing::warn!(target: "ischedule::post", error = %e, "could not record the answer for idempotency");
            }
        }
        scheduled
    }

    fn recall(&self, key: &str) -> Option<Scheduled> {
        let stored = self.store.recall(key, unix_now()).ok().flatten()?;
        let response = ScheduleResponse::parse(&stored).ok()?;
        let log = response
            .responses
            .iter()
            .map(|r| RecipientLog {
                recipient: r.recipient.clone(),
                route: "repeat".into(),
                receiver: None,
                status: r.status.to_string(),
            })
            .collect();
        Some(Scheduled {
            response,
            log,
            repeated: true,
            mailed: false,
        })
    }

    async fn schedule_once(&self, request: &SchedulingRequest, policy: MailPolicy) -> Scheduled {
        let router = self.router();
        let routed: Vec<Routed> =
            join_all(request.recipients.iter().map(|r| router.route(r))).await;

        let mut answers: HashMap<CalAddress, RecipientResponse> = HashMap::new();
        let mut groups: Vec<(Receiver, Vec<CalAddress>)> = Vec::new();
        let mut by_mail: Vec<ByMail> = Vec::new();
        for r in &routed {
            match &r.decision {
                Decision::Native { receiver } => {
                    match groups.iter_mut().find(|(g, _)| g.id == receiver.id) {
                        Some((_, members)) => members.push(r.address.clone()),
                        None => groups.push((receiver.clone(), vec![r.address.clone()])),
                    }
                }
                Decision::Imip { why } if policy == MailPolicy::Never => {
                    answers.insert(
                        r.address.clone(),
                        answer(&r.address, RequestStatus::no_scheduling_support(), why),
                    );
                }
                Decision::Imip { why } => by_mail.push(ByMail {
                    address: r.address.clone(),
                    reply_routing: r.reply_routing,
                    why: why.clone(),
                }),
                Decision::NoReceiver { why } => {
                    answers.insert(
                        r.address.clone(),
                        answer(&r.address, RequestStatus::no_scheduling_support(), why),
                    );
                }
                Decision::Failed { why } => {
                    answers.insert(
                        r.address.clone(),
                        answer(&r.address, RequestStatus::service_unavailable(), why),
                    );
                }
            }
        }

        let limit = self.config.timeouts.request;
        let delivered = join_all(
            groups
                .iter()
                .map(|(receiver, members)| self.deliver_within(limit, request, receiver, members)),
        )
        .await;
        let fallback_allowed: HashMap<&CalAddress, &Routed> = routed
            .iter()
            .filter(|r| r.mode == Mode::NativeThenImip && policy == MailPolicy::PerMode)
            .map(|r| (&r.address, r))
            .collect();
        for ((_, members), results) in groups.iter().zip(delivered) {
            for (member, d) in members.iter().zip(results) {
                match fallback_allowed.get(member).filter(|_| d.fallback) {
                    Some(r) => by_mail.push(ByMail {
                        address: member.clone(),
                        reply_routing: r.reply_routing,
                        why: format!(
                            "native delivery failed ({}), sent by mail instead",
                            d.response.description.unwrap_or_default()
                        ),
                    }),
                    None => {
                        answers.insert(member.clone(), d.response);
                    }
                }
            }
        }

        // Read once for all recipients: the human parts are the same for each.
        let summary = (!by_mail.is_empty()).then(|| {
            Summary::read(
                &String::from_utf8_lossy(&request.body),
                request.itip.method,
                request.itip.component,
            )
        });
        let mailed = match &summary {
            Some(summary) => join_all(by_mail.iter().map(|m| self.mail(request, summary, m))).await,
            None => Vec::new(),
        };
        let mut routes: HashMap<&CalAddress, &'static str> = HashMap::new();
        for (m, response) in by_mail.iter().zip(mailed) {
            routes.insert(&m.address, "imip");
            answers.insert(m.address.clone(), response);
        }

        let mut responses = Vec::with_capacity(routed.len());
        let mut log = Vec::with_capacity(routed.len());
        for r in &routed {
            let response = answers.remove(&r.address).unwrap_or_else(|| {
                answer(
                    &r.address,
                    RequestStatus::service_unavailable(),
                    "no delivery attempt was made",
                )
            });
            log.push(RecipientLog {
                recipient: r.address.to_string(),
                route: match routes.get(&r.address) {
                    Some(route) if matches!(r.decision, Decision::Native { .. }) => {
                        format!("{} then {route}", route_label(r))
                    }
                    Some(route) => (*route).to_string(),
                    None => route_label(r),
                },
                receiver: match &r.decision {
                    Decision::Native { receiver } => Some(receiver.id.clone()),
                    _ => None,
                },
                status: response.status.to_string(),
            });
            responses.push(response);
        }
        Scheduled {
            response: ScheduleResponse { responses },
            log,
            repeated: false,
            mailed: !by_mail.is_empty(),
        }
    }

    /// A group that does not finish in time answers 5.1 rather than holding
    /// up the other groups' answers.
    async fn deliver_within(
        &self,
        limit: Duration,
        request: &SchedulingRequest,
        receiver: &Receiver,
        members: &[CalAddress],
    ) -> Vec<Delivered> {
        let started = Instant::now();
        match tokio::time::timeout(limit, self.forwarder.deliver(request, receiver, members)).await
        {
            Ok(delivered) => delivered,
            Err(_) => {
                let why = format!(
                    "delivery to {} did not finish within {:.0} s",
                    receiver.id,
                    started.elapsed().as_secs_f64()
                );
                members
                    .iter()
                    .map(|m| Delivered {
                        response: answer(m, RequestStatus::service_unavailable(), &why),
                        fallback: true,
                    })
                    .collect()
            }
        }
    }

    /// One recipient by iMIP; the description says why mail was used.
    async fn mail(
        &self,
        request: &SchedulingRequest,
        summary: &Summary,
        m: &ByMail,
    ) -> RecipientResponse {
        if request.itip.component == ComponentKind::VFreeBusy {
            let why = format!(
                "free-busy needs a native iSchedule receiver, none usable: {}",
                m.why
            );
            return answer(&m.address, RequestStatus::no_scheduling_support(), &why);
        }
        let composed = match outbound::compose(
            &self.config,
            self.store.as_ref(),
            request,
            summary,
            &m.address,
            m.reply_routing,
        ) {
            Ok(c) => c,
            Err(e @ outbound::ComposeError::NotMail(_)) => {
                return answer(
                    &m.address,
                    RequestStatus::no_scheduling_support(),
                    &e.to_string(),
                )
            }
            Err(e) => {
                return answer(
                    &m.address,
                    RequestStatus::service_unavailable(),
                    &e.to_string(),
                )
            }
        };
        let (status, description) = self.mailer.deliver(composed, unix_now()).await;
        answer(&m.address, status, &format!("{description} ({})", m.why))
    }

    /// Tells the organizer, by a REPLY from the attendee carrying
    /// `REQUEST-STATUS:5.1`, that queued mail will not be delivered.
    pub async fn report_given_up(&self, given_up: &GivenUp) {
        if let Some(notice) = &given_up.mail.notice {
            let why = format!("{} ({})", given_up.why, given_up.status);
            self.report_failure(notice, &why, &format!("queue-{}", given_up.id))
                .await;
        }
    }

    /// Posts the failure REPLY for `notice` to the organizer's receiver and
    /// logs the outcome; `reference` makes its iSchedule-Message-ID unique.
    pub async fn report_failure(&self, notice: &FailureNotice, why: &str, reference: &str) {
        let dtstamp = crate::itip::Stamp::from_unix(unix_now()).to_string();
        let status = RequestStatus::service_unavailable().to_string();
        let body = FailureReply {
            organizer: &notice.organizer,
            attendee: &notice.attendee,
            uid: &notice.uid,
            component: ComponentKind::parse(&notice.component).unwrap_or(ComponentKind::VEvent),
            recurrence_id: notice.recurrence_id.as_deref(),
            status: &status,
            detail: why,
            dtstamp: &dtstamp,
        }
        .to_ical();
        let outcome = self
            .post_reply(&notice.organizer, &notice.attendee, reference, body)
            .await;
        tracing::info!(
            target: "ischedule::queue",
            reference,
            organizer = %notice.organizer,
            attendee = %notice.attendee,
            outcome = %outcome,
            "failure reported to the organizer"
        );
    }

    async fn post_reply(
        &self,
        organizer: &str,
        attendee: &str,
        reference: &str,
        body: String,
    ) -> String {
        let (Ok(organizer), Ok(attendee), Ok(itip)) = (
            CalAddress::parse(organizer),
            CalAddress::parse(attendee),
            ItipMessage::parse(&body),
        ) else {
            return "not posted: the stored notice is not a valid REPLY".into();
        };
        let content_type = format!("text/calendar; component={}; method=REPLY", itip.component);
        let request = SchedulingRequest {
            originator: attendee,
            recipients: vec![organizer.clone()],
            message_id: Some(format!(
                "ischedule-bridge-failure-{reference}-{}",
                unix_now()
            )),
            content_type,
            body: Bytes::from(body),
            itip,
        };
        let routed = self.router().route(&organizer).await;
        let Decision::Native { receiver } = &routed.decision else {
            return "logged only: the organizer has no iSchedule receiver".into();
        };
        let delivered = self
            .forwarder
            .deliver(&request, receiver, &[organizer])
            .await;
        delivered.first().map_or("no answer".into(), |d| {
            format!("{} at {}", d.response.status, receiver.id)
        })
    }
}

/// A retried POST is the same Originator, iSchedule-Message-ID, Recipients
/// and body. A sender reusing an id for a different message gets that
/// message delivered, not the earlier answer.
fn idempotency_key(request: &SchedulingRequest) -> Option<String> {
    let id = request.message_id.as_ref()?;
    let recipients: Vec<&str> = request
        .recipients
        .iter()
        .map(CalAddress::normalized)
        .collect();
    let recipients = recipients.join("\n");
    let content = digest::fnv1a(digest::FNV_OFFSET, &[recipients.as_bytes(), &request.body]);
    Some(format!(
        "{}\n{id}\n{content:016x}",
        request.originator.normalized()
    ))
}

fn answer(recipient: &CalAddress, status: RequestStatus, why: &str) -> RecipientResponse {
    RecipientResponse {
        recipient: recipient.as_str().to_string(),
        status,
        calendar_data: None,
        error: None,
        description: Some(why.to_string()),
    }
}

fn route_label(r: &Routed) -> String {
    match (&r.decision, &r.rule) {
        (Decision::Native { .. }, Some((index, rule))) => format!("rule[{index}] {rule}"),
        (Decision::Native { .. }, None) => "srv".into(),
        (Decision::Imip { .. }, _) => "imip".into(),
        (Decision::NoReceiver { .. }, _) => "no-receiver".into(),
        (Decision::Failed { .. }, _) => "dns-failure".into(),
    }
}
