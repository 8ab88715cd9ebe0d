//! The iMIP mails of a scheduling request: what all its recipients' mails
//! share, read and written once ([`RequestMail`]), and each recipient's
//! own ([`compose`]): reply routing, the sender's name, a stable
//! Message-ID and the MIME message itself.

use std::borrow::Cow;

use super::builder::{self, BuildError, Outgoing, RequestParts};
use super::signing::{self, SignError};
use super::summary::Summary;
use crate::config::{Config, ReplyRouting};
use crate::ischedule::request::SchedulingRequest;
use crate::itip::{edit, CalAddress, Role};
use crate::store::{FailureNotice, TokenKey};

/// A mail ready for the transport, with what the queue needs to report a
/// final failure to the organizer.
#[derive(Debug, Clone)]
pub struct Composed {
    pub envelope_from: String,
    pub recipient: String,
    pub message: Vec<u8>,
    pub notice: Option<FailureNotice>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{0} is not a mailto: address, so it cannot be reached by mail")]
    NotMail(String),
    #[error("building the mail: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// The reply token key for `recipient`'s mail, when replies are to come
/// back by token. Token routing only makes sense for what the organizer
/// sends: it is the organizer's address that replies must come back to.
pub fn token_key(
    request: &SchedulingRequest,
    recipient: &CalAddress,
    reply_routing: ReplyRouting,
) -> Option<TokenKey> {
    let itip = &request.itip;
    let from_organizer = itip.method.originator_role() == Role::Organizer;
    match (reply_routing, from_organizer, &itip.organizer) {
        (ReplyRouting::Token, true, Some(organizer)) => Some(TokenKey {
            organizer: organizer.normalized().to_string(),
            attendee: recipient.normalized().to_string(),
            uid: itip.uid.clone(),
        }),
        _ => None,
    }
}

/// What all the mails of one request share, read and written once for
/// all its recipients: per recipient only the headers, the reply address
/// and, with token routing, the calendar's ORGANIZER differ. The human
/// parts show the real organizer, not a token.
pub struct RequestMail {
    summary: Summary,
    /// Also holds the iTIP object as sent.
    parts: RequestParts,
}

impl RequestMail {
    /// The request's validation has screened the body already.
    pub fn read(request: &SchedulingRequest) -> RequestMail {
        let calendar = String::from_utf8_lossy(&request.body).into_owned();
        let summary =
            Summary::read_screened(&calendar, request.itip.method, request.itip.component);
        let parts = RequestParts::new(&summary, request.itip.method, &calendar);
        RequestMail { summary, parts }
    }
}

/// One recipient's mail. `token` is the one issued for [`token_key`], if
/// that gave a key.
pub fn compose(
    config: &Config,
    request: &SchedulingRequest,
    shared: &RequestMail,
    recipient: &CalAddress,
    token: Option<&str>,
) -> Result<Composed, ComposeError> {
    let to = recipient
        .email()
        .ok_or_else(|| ComposeError::NotMail(recipient.to_string()))?;
    let itip = &request.itip;
    let summary = &shared.summary;
    let from_organizer = itip.method.originator_role() == Role::Organizer;

    let token_address = token.map(|token| {
        format!(
            "{}+{token}@{}",
            config.imip.token_prefix, config.imip.token_domain
        )
    });
    let calendar = match &token_address {
        Some(address) => Cow::Owned(edit::replace_organizer(
            shared.parts.calendar(),
            &format!("mailto:{address}"),
        )),
        None => Cow::Borrowed(shared.parts.calendar()),
    };

    let sender_name = if from_organizer {
        summary.organizer.as_ref().and_then(|p| p.name.clone())
    } else {
        summary
            .attendees
            .iter()
            .find(|a| {
                a.email
                    .as_deref()
                    .is_some_and(|e| request.originator.email() == Some(&e.to_ascii_lowercase()))
            })
            .and_then(|p| p.name.clone())
    };
    // Without an iSchedule-Message-ID a POST cannot be recognised when
    // retried, so each gets a fresh Message-ID.
    let ischedule_id = request
        .message_id
        .clone()
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let message_id = builder::message_id_for(
        request.originator.normalized(),
        &ischedule_id,
        recipient.normalized(),
        &config.imip.token_domain,
    );
    let message = builder::build(
        &Outgoing {
            from_address: &config.smtp.from,
            from_name: sender_name.as_deref(),
            to,
            reply_to: token_address.as_deref(),
            message_id: &message_id,
            method: itip.method,
            component: itip.component,
            calendar: &calendar,
        },
        &shared.parts,
    )?;
    let message = signing::sign(config, message)?;
    let notice = itip
        .organizer
        .as_ref()
        .filter(|_| from_organizer)
        .map(|organizer| FailureNotice {
            message_id: message_id.clone(),
            organizer: organizer.as_str().to_string(),
            attendee: recipient.as_str().to_string(),
            uid: itip.uid.clone(),
            component: itip.component.as_str().to_string(),
            recurrence_id: None,
        });
    Ok(Composed {
        envelope_from: config.smtp.from.clone(),
        recipient: to.to_string(),
        message,
        notice,
    })
}
