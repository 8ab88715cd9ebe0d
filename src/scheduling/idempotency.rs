//! A retried request must not send twice (DESIGN.md "State"): what each
//! recipient was answered is kept for `idempotency.window_secs`, and a retry
//! of the same message is answered from it for those recipients.
//!
//! Kept per recipient, and only final answers: a recipient that got
//! `5.1;Service unavailable` is tried again on the retry (that retry is how
//! it gets delivered), while the recipients already done are not reached a
//! second time. This is what lets the mail intake defer a mixed outcome with
//! 4xx and rely on the sending MTA's retry.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::xml::{RecipientResponse, ScheduleResponse};
use crate::ischedule::StatusCode;
use crate::itip::CalAddress;
use crate::store::{self, Store, StoreError, UnixTime};

/// The same Originator, iSchedule-Message-ID and body. The recipients are
/// not part of it: each one's answer is recorded on its own, so a retry
/// naming more recipients reaches only the new ones. A sender reusing an id
/// for a different message gets that message delivered.
pub fn key(request: &SchedulingRequest) -> Option<String> {
    let id = request.message_id.as_ref()?;
    let content = digest::fnv1a(digest::FNV_OFFSET, &[&request.body]);
    Some(format!(
        "{}\n{id}\n{content:016x}",
        request.originator.normalized()
    ))
}

/// Whether an answer may be replayed: anything but a temporary failure.
pub fn is_final(response: &RecipientResponse) -> bool {
    response.status.code != StatusCode::SERVICE_UNAVAILABLE
}

/// The answers recorded under one key.
#[derive(Debug, Default)]
pub struct Recorded {
    responses: Vec<RecipientResponse>,
}

impl Recorded {
    /// What the store holds for `key`; nothing when there is no record (or
    /// an unreadable one). A store that cannot be asked is an error: a
    /// retry could then not be told from a first request.
    pub async fn recall(
        store: &Arc<dyn Store>,
        key: &str,
        now: UnixTime,
    ) -> Result<Recorded, StoreError> {
        let key = key.to_string();
        let stored = store::blocking(store, "recall", move |s| s.recall(&key, now)).await?;
        let responses = match stored.map(|bytes| decode(&bytes)) {
            None => Vec::new(),
            Some(Ok(responses)) => responses,
            // Said, because the repeat is then sent again.
            Some(Err(e)) => {
                tracing::warn!(target: "ischedule::post", error = %e, "unreadable idempotency record: the message is scheduled as new");
                Vec::new()
            }
        };
        Ok(Recorded { responses })
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    /// The recorded answer for `recipient`.
    pub fn answer(&self, recipient: &CalAddress) -> Option<&RecipientResponse> {
        self.responses
            .iter()
            .find(|r| CalAddress::parse(&r.recipient).is_ok_and(|a| a == *recipient))
    }

    /// Adds the final answers among `fresh` and writes the record back;
    /// nothing is written when nothing new is final.
    pub async fn record(
        &mut self,
        store: &Arc<dyn Store>,
        key: &str,
        fresh: &[RecipientResponse],
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let before = self.responses.len();
        self.responses
            .extend(fresh.iter().filter(|r| is_final(r)).cloned());
        if self.responses.len() == before {
            return Ok(());
        }
        let (key, record) = (key.to_string(), encode(&self.responses));
        store::blocking(store, "remember", move |s| {
            s.remember(&key, &record, expires_at)
        })
        .await
    }
}

/// One recipient's final answer as the record keeps it: the address, the
/// request-status and the words that came with it, as short JSON fields;
/// not the XML document, whose markup would be most of every row of a
/// store that holds a day of traffic (README, "Sizing").
#[derive(Serialize, Deserialize)]
struct Kept {
    #[serde(rename = "r")]
    recipient: String,
    #[serde(rename = "s")]
    status: String,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    calendar_data: Option<String>,
}

fn encode(responses: &[RecipientResponse]) -> Vec<u8> {
    let kept: Vec<Kept> = responses
        .iter()
        .map(|r| Kept {
            recipient: r.recipient.clone(),
            status: r.status.to_string(),
            description: r.description.clone(),
            error: r.error.clone(),
            calendar_data: r.calendar_data.clone(),
        })
        .collect();
    // Strings only: serializing cannot fail.
    serde_json::to_vec(&kept).unwrap_or_default()
}

/// Why a stored record does not read.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("old XML record: {0}")]
    Xml(#[from] crate::ischedule::xml::XmlError),
    #[error("record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record for {recipient}: bad request-status {status:?}")]
    Status { recipient: String, status: String },
}

/// The answers of a record. A record that starts with `<` is an XML
/// document written by a bridge before this format, read for as long as
/// such records live (one idempotency window after an upgrade).
fn decode(bytes: &[u8]) -> Result<Vec<RecipientResponse>, RecordError> {
    if bytes.starts_with(b"<") {
        return Ok(ScheduleResponse::parse(bytes)?.responses);
    }
    serde_json::from_slice::<Vec<Kept>>(bytes)?
        .into_iter()
        .map(|k| {
            Ok(RecipientResponse {
                status: k.status.parse().map_err(|_| RecordError::Status {
                    recipient: k.recipient.clone(),
                    status: k.status.clone(),
                })?,
                recipient: k.recipient,
                calendar_data: k.calendar_data,
                error: k.error,
                description: k.description,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ischedule::RequestStatus;

    #[test]
    fn records_round_trip_compactly_and_old_xml_records_still_read() {
        let responses = vec![
            RecipientResponse {
                recipient: "mailto:carol@example.org".into(),
                status: RequestStatus::new(StatusCode::SENT, "Sent"),
                calendar_data: None,
                error: None,
                description: Some("250 2.0.0 Ok: queued as 4F2A1".into()),
            },
            RecipientResponse {
                recipient: "mailto:dave@example.org".into(),
                status: RequestStatus::invalid_user(),
                calendar_data: None,
                error: Some("invalid-calendar-user".into()),
                description: None,
            },
        ];
        let record = encode(&responses);
        assert_eq!(decode(&record).unwrap(), responses);
        let xml = ScheduleResponse {
            responses: responses.clone(),
        }
        .to_xml();
        assert!(
            record.len() * 2 < xml.len(),
            "{} bytes, the XML {}",
            record.len(),
            xml.len()
        );
        assert_eq!(decode(xml.as_bytes()).unwrap(), responses);
        assert!(matches!(decode(b"{not json"), Err(RecordError::Json(_))));
        let bad = br#"[{"r":"mailto:carol@example.org","s":"9.9"}]"#;
        assert_eq!(
            decode(bad).unwrap_err().to_string(),
            "record for mailto:carol@example.org: bad request-status \"9.9\""
        );
    }
}
