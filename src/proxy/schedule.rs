//! One scheduling request end to end: route every recipient, group them by
//! receiver, deliver the groups concurrently, and merge the answers into
//! one schedule-response in request order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;

use super::forward::Forwarder;
use crate::config::Config;
use crate::discovery::DnsResolver;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::xml::{RecipientResponse, ScheduleResponse};
use crate::ischedule::{CalAddress, RequestStatus};
use crate::routing::{Decision, Receiver, Routed, Router};

pub struct Scheduler {
    pub config: Arc<Config>,
    pub resolver: Arc<DnsResolver>,
    pub forwarder: Forwarder,
}

/// What happened to one recipient, for the one log line per POST.
#[derive(Debug, Serialize)]
pub struct RecipientLog {
    pub recipient: String,
    pub route: String,
    pub receiver: Option<String>,
    pub status: String,
}

impl Scheduler {
    pub fn router(&self) -> Router<'_> {
        Router {
            config: &self.config,
            resolver: &self.resolver,
        }
    }

    pub async fn schedule(
        &self,
        request: &SchedulingRequest,
    ) -> (ScheduleResponse, Vec<RecipientLog>) {
        let router = self.router();
        let routed: Vec<Routed> =
            join_all(request.recipients.iter().map(|r| router.route(r))).await;

        let mut answers: HashMap<CalAddress, RecipientResponse> = HashMap::new();
        let mut groups: Vec<(Receiver, Vec<CalAddress>)> = Vec::new();
        for r in &routed {
            match &r.decision {
                Decision::Native { receiver } => {
                    match groups.iter_mut().find(|(g, _)| g.id == receiver.id) {
                        Some((_, members)) => members.push(r.address.clone()),
                        None => groups.push((receiver.clone(), vec![r.address.clone()])),
                    }
                }
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
        for ((_, members), responses) in groups.iter().zip(delivered) {
            for (member, response) in members.iter().zip(responses) {
                answers.insert(member.clone(), response);
            }
        }

        let mut responses = Vec::with_capacity(routed.len());
        let mut log = Vec::with_capacity(routed.len());
        for r in routed {
            let response = answers.remove(&r.address).unwrap_or_else(|| {
                answer(
                    &r.address,
                    RequestStatus::service_unavailable(),
                    "no delivery attempt was made",
                )
            });
            log.push(RecipientLog {
                recipient: r.address.to_string(),
                route: route_label(&r),
                receiver: match &r.decision {
                    Decision::Native { receiver } => Some(receiver.id.clone()),
                    _ => None,
                },
                status: response.status.to_string(),
            });
            responses.push(response);
        }
        (ScheduleResponse { responses }, log)
    }

    /// A group that does not finish in time answers 5.1 rather than holding
    /// up the other groups' answers.
    async fn deliver_within(
        &self,
        limit: Duration,
        request: &SchedulingRequest,
        receiver: &Receiver,
        members: &[CalAddress],
    ) -> Vec<RecipientResponse> {
        let started = Instant::now();
        match tokio::time::timeout(limit, self.forwarder.deliver(request, receiver, members)).await
        {
            Ok(responses) => responses,
            Err(_) => {
                let why = format!(
                    "delivery to {} did not finish within {:.0} s",
                    receiver.id,
                    started.elapsed().as_secs_f64()
                );
                members
                    .iter()
                    .map(|m| answer(m, RequestStatus::service_unavailable(), &why))
                    .collect()
            }
        }
    }
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
        (Decision::NoReceiver { .. }, _) => "no-receiver".into(),
        (Decision::Failed { .. }, _) => "dns-failure".into(),
    }
}
