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
        let responses = match stored {
            Some(stored) => ScheduleResponse::parse(&stored)
                .map(|r| r.responses)
                .unwrap_or_default(),
            None => Vec::new(),
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
        let document = ScheduleResponse {
            responses: self.responses.clone(),
        };
        let (key, xml) = (key.to_string(), document.to_xml());
        store::blocking(store, "remember", move |s| {
            s.remember(&key, xml.as_bytes(), expires_at)
        })
        .await
    }
}
