//! An inbound scheduling POST checked against clauses 8 and 9 and the
//! bridge's own capabilities, in the order a sender can best act on: the
//! envelope (headers) first, then the calendar data, then the iTIP rules.

use bytes::Bytes;
use http::HeaderMap;

use super::capabilities::{Capabilities, MessageFacts};
use super::headers::{self, ContentType};
use super::{IsError, Rejection};
use crate::itip::{rules, CalAddress, Instances, ItipMessage};

/// A POST that passed every check; what the rest of the bridge works on.
#[derive(Debug, Clone)]
pub struct SchedulingRequest {
    pub originator: CalAddress,
    pub recipients: Vec<CalAddress>,
    pub message_id: Option<String>,
    /// Forwarded byte for byte, as clause 8.1 wants the receiver to see it.
    pub content_type: String,
    pub body: Bytes,
    pub itip: ItipMessage,
}

impl SchedulingRequest {
    /// What a receiver's capabilities are checked against.
    pub fn facts(&self) -> MessageFacts {
        facts(&self.itip, self.body.len())
    }
}

fn facts(itip: &ItipMessage, content_length: usize) -> MessageFacts {
    MessageFacts {
        component: itip.component,
        method: itip.method,
        content_length: content_length as u64,
        earliest: itip.earliest,
        latest: itip.latest,
        instances: match itip.instances {
            Instances::Counted(n) => Some(n),
            Instances::Uncountable => None,
        },
        inline_attachment: itip.attachments.inline,
        external_attachment: itip.attachments.external,
    }
}

fn values<'a>(h: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
    h.get_all(name).iter().map(|v| v.as_bytes())
}

/// Checks a POST whose body was already read within `max-content-length`.
pub fn validate(
    h: &HeaderMap,
    body: Bytes,
    own: &Capabilities,
) -> Result<SchedulingRequest, Rejection> {
    headers::check_version(values(h, headers::ISCHEDULE_VERSION))?;
    let content_type_raw = h
        .get(http::header::CONTENT_TYPE)
        .ok_or_else(|| Rejection::new(IsError::InvalidCalendarDataType, "Content-Type header missing; text/calendar with component and method parameters is required"))?;
    let content_type = ContentType::parse(content_type_raw.as_bytes())?;
    let originator = headers::parse_originator(values(h, headers::ORIGINATOR))?;
    let recipients = headers::parse_recipients(values(h, headers::RECIPIENT))?;
    let message_id = headers::parse_message_id(values(h, headers::ISCHEDULE_MESSAGE_ID))?;
    if let Some(max) = own.max_recipients {
        if recipients.len() > max {
            return Err(Rejection::new(
                IsError::MaxRecipients,
                format!(
                    "{} recipients, at most {max} are accepted per request",
                    recipients.len()
                ),
            ));
        }
    }
    let text = std::str::from_utf8(&body).map_err(|e| {
        Rejection::new(
            IsError::InvalidCalendarData,
            format!("calendar data is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let itip = ItipMessage::parse(text)?;
    if itip.component != content_type.component || itip.method != content_type.method {
        return Err(Rejection::new(
            IsError::InvalidSchedulingMessage,
            format!(
                "Content-Type says component={} method={} but the calendar data holds a {} with METHOD:{}",
                content_type.component, content_type.method, itip.component, itip.method
            ),
        ));
    }
    own.check(&facts(&itip, body.len()))
        .map_err(|m| Rejection::new(m.is_error(), m.to_string()))?;
    rules::check_originator(&itip, &originator)?;
    rules::check_recipients(&itip, &recipients)?;
    Ok(SchedulingRequest {
        originator,
        recipients,
        message_id,
        content_type: String::from_utf8_lossy(content_type_raw.as_bytes()).into_owned(),
        body,
        itip,
    })
}
