//! Telling an organizer that mail to one of its attendees will not arrive:
//! a REPLY from that attendee carrying `REQUEST-STATUS:5.1`, posted to the
//! organizer's iSchedule receiver like any other message.

use bytes::Bytes;

use super::{native, unix_now, Scheduler};
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::RequestStatus;
use crate::itip::failure_reply::FailureReply;
use crate::itip::{CalAddress, ComponentKind, ItipMessage, Stamp};
use crate::routing::Decision;
use crate::store::FailureNotice;

impl Scheduler {
    /// Posts the failure REPLY for `notice` to the organizer's receiver and
    /// logs the outcome; `reference` makes its iSchedule-Message-ID unique.
    pub async fn report_failure(&self, notice: &FailureNotice, why: &str, reference: &str) {
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
        let delivered =
            native::deliver(self.native.as_ref(), &request, receiver, &[organizer]).await;
        delivered.first().map_or("no answer".into(), |d| {
            format!("{} at {}", d.response.status, receiver.id)
        })
    }
}
