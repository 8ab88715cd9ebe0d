//! An iTIP object that arrived by mail, turned into the iSchedule request
//! the bridge forwards (spec tables 1 and 2): who the originator is, who the
//! recipients are, and the only content-line edits reply routing needs
//! (restore an ORGANIZER rewritten to a reply token, fill one in where the
//! client left it out, as Outlook does). Every other byte is kept.

use bytes::Bytes;

use super::inbound::Itip;
use crate::config::{Accept, Config};
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::{CalAddress, Rejection};
use crate::itip::{edit, rules, ItipMessage, Role};
use crate::store::{Store, StoreError, TokenKey};

/// How the mail's sender was authenticated before translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A configured local client (address allow-list or SMTP AUTH): it may
    /// speak for users of the local domains.
    LocalClient { by: String },
    /// DMARC pass for the RFC 5322 From address.
    Dmarc { from: String, reason: String },
    /// Nothing vouches for the sender; only a reply token can.
    Unauthenticated { reason: String },
    /// The checks could not finish (DNS trouble): try again later.
    Undecided { reason: String },
}

/// Why a mail is not turned into iSchedule; each maps to one SMTP reply.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the calendar object names no iTIP METHOD")]
    NoMethod,
    #[error("{0}")]
    Invalid(#[from] Rejection),
    #[error("sender not authenticated: {0}")]
    NotAuthenticated(String),
    #[error("sender authentication could not finish, try again later: {0}")]
    Undecided(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("reply token: {0}")]
    Token(String),
    #[error("reply token lookup failed: {0}")]
    Store(#[from] StoreError),
}

/// The request, what kind of proof vouched for its originator (checked
/// against the `accept` policy) and in words (for the logs).
#[derive(Debug)]
pub struct Translated {
    pub request: SchedulingRequest,
    pub vouched_by: (Accept, String),
}

/// The reply token in a token address `<prefix>+<token>@<token_domain>`.
pub fn token_of<'a>(config: &Config, address: &'a str) -> Option<&'a str> {
    let (local, domain) = address.rsplit_once('@')?;
    let token = local
        .strip_prefix(&config.imip.token_prefix)?
        .strip_prefix('+')?;
    (domain.eq_ignore_ascii_case(&config.imip.token_domain) && !token.is_empty()).then_some(token)
}

pub fn translate(
    config: &Config,
    store: &dyn Store,
    mail: &Itip,
    envelope_recipients: &[String],
    sender: &Sender,
) -> Result<Translated, Refusal> {
    let method = mail.method.ok_or(Refusal::NoMethod)?;
    let token = token_key(config, store, envelope_recipients)?;
    let from_attendee = method.originator_role() == Role::Attendee;

    let calendar = if from_attendee {
        // Replies go to the organizer: the real one behind a token, else the
        // address the mail was sent to (when the client left ORGANIZER out).
        let organizer = match (&token, envelope_recipients.first()) {
            (Some(key), _) => Some(key.organizer.clone()),
            (None, Some(rcpt)) => Some(format!("mailto:{rcpt}")),
            (None, None) => None,
        };
        match organizer {
            Some(organizer) if token.is_some() => edit::insert_organizer(
                &edit::replace_organizer(&mail.calendar, &organizer),
                &organizer,
            ),
            Some(organizer) => edit::insert_organizer(&mail.calendar, &organizer),
            None => mail.calendar.clone(),
        }
    } else {
        mail.calendar.clone()
    };
    let itip = ItipMessage::parse(&calendar)?;
    if itip.method != method {
        return Err(Refusal::Mismatch(format!(
            "the message says method={method} but the object holds METHOD:{}",
            itip.method
        )));
    }

    let (originator, recipients) = if from_attendee {
        let [attendee] = itip.attendees.as_slice() else {
            return Err(Refusal::Mismatch(format!(
                "a {method} must name exactly one ATTENDEE, the one answering; this one names {}",
                itip.attendees.len()
            )));
        };
        let organizer = itip
            .organizer
            .clone()
            .ok_or_else(|| Refusal::Mismatch("no ORGANIZER to send the reply to".into()))?;
        (attendee.clone(), vec![organizer])
    } else {
        let organizer = itip
            .organizer
            .clone()
            .ok_or_else(|| Refusal::Mismatch("no ORGANIZER".into()))?;
        let recipients = envelope_recipients
            .iter()
            .map(|r| CalAddress::parse(&format!("mailto:{r}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Refusal::Mismatch(format!("envelope recipient: {e}")))?;
        (organizer, recipients)
    };

    let vouched_by = vouch(config, token.as_ref(), &itip, &originator, sender)?;
    rules::check_originator(&itip, &originator)?;
    rules::check_recipients(&itip, &recipients)?;
    let content_type = format!(
        "text/calendar; component={}; method={}",
        itip.component, itip.method
    );
    Ok(Translated {
        request: SchedulingRequest {
            originator,
            recipients,
            message_id: mail.message_id.clone(),
            content_type,
            body: Bytes::from(calendar),
            itip,
        },
        vouched_by,
    })
}

/// The token named by the envelope, if any; two different ones, or an
/// unknown one, are refused rather than guessed at.
fn token_key(
    config: &Config,
    store: &dyn Store,
    envelope_recipients: &[String],
) -> Result<Option<TokenKey>, Refusal> {
    let mut found: Option<TokenKey> = None;
    for rcpt in envelope_recipients {
        let Some(token) = token_of(config, rcpt) else {
            continue;
        };
        let key = store.resolve_token(token)?.ok_or_else(|| {
            Refusal::Token(format!("{rcpt} is not a reply address this bridge issued"))
        })?;
        match &found {
            Some(k) if *k != key => {
                return Err(Refusal::Token(
                    "the mail names reply addresses of two different events".into(),
                ))
            }
            _ => found = Some(key),
        }
    }
    Ok(found)
}

/// The iTIP originator must be who the mail proved to be.
fn vouch(
    config: &Config,
    token: Option<&TokenKey>,
    itip: &ItipMessage,
    originator: &CalAddress,
    sender: &Sender,
) -> Result<(Accept, String), Refusal> {
    if let Some(key) = token {
        // A token is issued per (organizer, attendee, event): only that
        // attendee, about that event, may answer through it.
        if key.attendee != originator.normalized() || key.uid != itip.uid {
            return Err(Refusal::Token(format!(
                "the reply address was issued to {} for another event or attendee, not {originator} about {}",
                key.attendee, itip.uid
            )));
        }
        return Ok((Accept::Token, format!("reply token of {}", key.attendee)));
    }
    match sender {
        Sender::LocalClient { by } if config.is_local(originator) => {
            Ok((Accept::Local, format!("local client ({by})")))
        }
        Sender::LocalClient { by } => Err(Refusal::Mismatch(format!(
            "a local client ({by}) may only send for the local domains; {originator} is not in one"
        ))),
        Sender::Dmarc { from, reason } if originator.email() == Some(from.as_str()) => {
            Ok((Accept::Dmarc, reason.clone()))
        }
        Sender::Dmarc { from, .. } => Err(Refusal::Mismatch(format!(
            "the iTIP originator {originator} is not the authenticated sender {from}"
        ))),
        Sender::Unauthenticated { reason } => Err(Refusal::NotAuthenticated(reason.clone())),
        Sender::Undecided { reason } => Err(Refusal::Undecided(reason.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            "[domains]\nlocal = [\"example.com\"]\n[imip]\ntoken_domain = \"bridge.test\"\n",
            "t",
            Path::new("."),
        )
        .unwrap()
    }

    fn reply(organizer: Option<&str>) -> Itip {
        let organizer = organizer
            .map(|o| format!("ORGANIZER:{o}\r\n"))
            .unwrap_or_default();
        Itip {
            calendar: format!(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20301101T000000Z\r\n\
                 DTSTART:20301102T100000Z\r\n{organizer}ATTENDEE;PARTSTAT=ACCEPTED:mailto:carol@mail.test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
            ),
            method: Some(crate::itip::Method::Reply),
            from: Some("carol@mail.test".into()),
            sender: None,
            reply_to: None,
            message_id: Some("m1@mail.test".into()),
            subject: None,
        }
    }

    fn unauthenticated() -> Sender {
        Sender::Unauthenticated {
            reason: "no DMARC".into(),
        }
    }

    #[test]
    fn a_token_reply_goes_to_the_real_organizer_with_organizer_restored() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let key = TokenKey {
            organizer: "mailto:bob@example.com".into(),
            attendee: "mailto:carol@mail.test".into(),
            uid: "u1".into(),
        };
        let token = store.token_for(&key).unwrap();
        let address = format!("ischedule+{token}@bridge.test");
        let c = config();
        for organizer in [Some(format!("mailto:{address}")), None] {
            let t = translate(
                &c,
                &store,
                &reply(organizer.as_deref()),
                std::slice::from_ref(&address),
                &unauthenticated(),
            )
            .unwrap();
            assert_eq!(t.request.originator.as_str(), "mailto:carol@mail.test");
            assert_eq!(t.request.recipients[0].as_str(), "mailto:bob@example.com");
            let body = String::from_utf8_lossy(&t.request.body).into_owned();
            assert!(
                body.contains("ORGANIZER:mailto:bob@example.com\r\n")
                    && !body.contains("bridge.test"),
                "{body}"
            );
            assert_eq!(t.vouched_by.0, Accept::Token);
        }
        // The same token used by someone else is refused.
        let other = reply(None)
            .calendar
            .replace("carol@mail.test", "mallory@mail.test");
        let forged = Itip {
            calendar: other,
            ..reply(None)
        };
        assert!(matches!(
            translate(&c, &store, &forged, &[address], &unauthenticated()),
            Err(Refusal::Token(_))
        ));
        assert!(matches!(
            translate(
                &c,
                &store,
                &reply(None),
                &["ischedule+nosuchtoken@bridge.test".into()],
                &unauthenticated()
            ),
            Err(Refusal::Token(_))
        ));
    }

    #[test]
    fn without_a_token_the_sender_must_be_the_originator() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let c = config();
        let to = ["bob@example.com".to_string()];
        let dmarc = |from: &str| Sender::Dmarc {
            from: from.into(),
            reason: "DMARC pass".into(),
        };
        let ok = translate(&c, &store, &reply(None), &to, &dmarc("carol@mail.test")).unwrap();
        assert_eq!(
            ok.request.recipients[0].as_str(),
            "mailto:bob@example.com",
            "ORGANIZER filled in from the envelope"
        );
        assert!(matches!(
            translate(&c, &store, &reply(None), &to, &dmarc("eve@mail.test")),
            Err(Refusal::Mismatch(_))
        ));
        assert!(matches!(
            translate(&c, &store, &reply(None), &to, &unauthenticated()),
            Err(Refusal::NotAuthenticated(_))
        ));
        // A local client speaks for the local domains only.
        let local = Sender::LocalClient {
            by: "SMTP AUTH".into(),
        };
        assert!(matches!(
            translate(&c, &store, &reply(None), &to, &local),
            Err(Refusal::Mismatch(_))
        ));
    }
}
