//! Telling an organizer that mail to one of its attendees will not arrive:
//! a REPLY from that attendee carrying `REQUEST-STATUS:5.1`, posted to the
//! organizer's iSchedule receiver like any other message.

use std::fmt;

use bytes::Bytes;

use super::{native, unix_now, Scheduler};
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::RequestStatus;
use crate::itip::failure_reply::FailureReply;
use crate::itip::{CalAddress, ComponentKind, ItipMessage, Stamp};
use crate::routing::Decision;
use crate::store::FailureNotice;

/// What became of a failure REPLY: whether the organizer heard of it, or
/// will never, or it is worth trying again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The organizer's receiver answered the REPLY; a 3.x answer (it will
    /// not take it) counts too, since posting it again would change nothing.
    Posted { status: RequestStatus, at: String },
    /// It can never be posted: the organizer has no iSchedule receiver, or
    /// the notice does not make a valid REPLY.
    Impossible(String),
    /// The receiver was unreachable, answered 5.x, or DNS failed: try again.
    Failed(String),
}

impl ReportOutcome {
    /// Whether nothing is left to do for this notice.
    pub fn is_final(&self) -> bool {
        !matches!(self, ReportOutcome::Failed(_))
    }
}

impl fmt::Display for ReportOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportOutcome::Posted { status, at } => write!(f, "posted: {status} at {at}"),
            ReportOutcome::Impossible(why) => write!(f, "not posted, and never will be: {why}"),
            ReportOutcome::Failed(why) => write!(f, "not posted, will be retried: {why}"),
        }
    }
}

impl Scheduler {
    /// Posts the failure REPLY for `notice` to the organizer's receiver and
    /// logs the outcome; `reference` makes its iSchedule-Message-ID unique.
    pub async fn report_failure(
        &self,
        notice: &FailureNotice,
        why: &str,
        reference: &str,
    ) -> ReportOutcome {
        let dtstamp = Stamp::from_unix(unix_now()).to_string();
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
        outcome
    }

    async fn post_reply(
        &self,
        organizer: &str,
        attendee: &str,
        reference: &str,
        body: String,
    ) -> ReportOutcome {
        let (Ok(organizer), Ok(attendee), Ok(itip)) = (
            CalAddress::parse(organizer),
            CalAddress::parse(attendee),
            ItipMessage::parse(&body),
        ) else {
            return ReportOutcome::Impossible("the stored notice is not a valid REPLY".into());
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
        let receiver = match &routed.decision {
            Decision::Native { receiver } => receiver,
            Decision::Failed { why } => return ReportOutcome::Failed(why.clone()),
            Decision::Imip { .. } | Decision::NoReceiver { .. } => {
                return ReportOutcome::Impossible("the organizer has no iSchedule receiver".into())
            }
        };
        let delivered =
            native::deliver(self.native.as_ref(), &request, receiver, &[organizer]).await;
        let Some(answer) = delivered.first().map(|d| &d.response) else {
            return ReportOutcome::Failed(format!("no answer from {}", receiver.id));
        };
        if answer.status.code.class == 5 {
            let detail = answer.description.as_deref().unwrap_or_default();
            return ReportOutcome::Failed(format!(
                "{} at {}: {detail}",
                answer.status, receiver.id
            ));
        }
        ReportOutcome::Posted {
            status: answer.status.clone(),
            at: receiver.id.clone(),
        }
    }
}
