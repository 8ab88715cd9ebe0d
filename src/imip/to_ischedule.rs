//! An iTIP object that arrived by mail, turned into the iSchedule request
//! the bridge forwards (spec tables 1 and 2): who the originator is, who the
//! recipients are, and the only content-line edits reply routing needs
//! (restore an ORGANIZER rewritten to a reply token, fill one in where the
//! client left it out, as Outlook does). Every other byte is kept.

use bytes::Bytes;

use super::inbound::Itip;
use crate::config::{Accept, Config};
use crate::digest;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::Rejection;
use crate::itip::{edit, rules, CalAddress, ItipMessage, Role};
use crate::scheduling::{unix_now, Sender};
use crate::store::{Store, StoreError, TokenKey};

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
    /// A reply that would be posted to an organizer the mail had no right
    /// to reach: the bridge must not relay for strangers.
    #[error("relaying denied: {0}")]
    Relay(String),
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

/// `token` is what [`token_key`] found for the same envelope: the one
/// step that reads the store, kept apart so that this stays pure and a
/// mail without a token address needs no store call at all.
pub fn translate(
    config: &Config,
    token: Option<TokenKey>,
    mail: &Itip,
    envelope_recipients: &[String],
    sender: &Sender,
) -> Result<Translated, Refusal> {
    let method = mail.method.ok_or(Refusal::NoMethod)?;
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
    let itip = ItipMessage::parse(&calendar).map_err(Rejection::from)?;
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
        // Each recipient once, as the HTTP path's Recipient header parsing
        // does: an envelope may name one twice, the receiver needs it once.
        let mut recipients: Vec<CalAddress> = Vec::with_capacity(envelope_recipients.len());
        for r in envelope_recipients {
            let address = CalAddress::parse(&format!("mailto:{r}"))
                .map_err(|e| Refusal::Mismatch(format!("envelope recipient: {e}")))?;
            if !recipients.contains(&address) {
                recipients.push(address);
            }
        }
        (organizer, recipients)
    };

    let vouched_by = vouch(config, token.as_ref(), &itip, &originator, sender)?;
    if from_attendee && vouched_by.0 == Accept::Dmarc {
        reply_stays_local(config, method, &recipients[0], envelope_recipients)?;
    }
    rules::check_originator(&itip, &originator).map_err(Rejection::from)?;
    rules::check_recipients(&itip, &recipients).map_err(Rejection::from)?;
    let content_type = format!(
        "text/calendar; component={}; method={}",
        itip.component, itip.method
    );
    Ok(Translated {
        request: SchedulingRequest {
            originator,
            recipients,
            message_id: Some(message_id(mail, &calendar)),
            content_type,
            body: Bytes::from(calendar),
            itip,
        },
        vouched_by,
    })
}

/// The mail's Message-ID, or one derived from what it says when it has
/// none: the receivers need an iSchedule-Message-ID, and the sending MTA's
/// retry of the same mail must be recognised as a retry (idempotency).
fn message_id(mail: &Itip, calendar: &str) -> String {
    mail.message_id.clone().unwrap_or_else(|| {
        let from = mail.from.as_deref().unwrap_or_default();
        let digest = digest::fnv1a(digest::FNV_OFFSET, &[from.as_bytes(), calendar.as_bytes()]);
        format!("{digest:016x}@content.ischedule-bridge")
    })
}

/// Whether any envelope recipient is a reply address: only then does
/// [`token_key`] read the store.
pub fn names_token(config: &Config, envelope_recipients: &[String]) -> bool {
    envelope_recipients
        .iter()
        .any(|rcpt| token_of(config, rcpt).is_some())
}

/// The token named by the envelope, if any; two different ones, or an
/// unknown one, are refused rather than guessed at.
pub fn token_key(
    config: &Config,
    store: &dyn Store,
    envelope_recipients: &[String],
) -> Result<Option<TokenKey>, Refusal> {
    let mut found: Option<TokenKey> = None;
    for rcpt in envelope_recipients {
        let Some(token) = token_of(config, rcpt) else {
            continue;
        };
        let key = store.resolve_token(token, unix_now())?.ok_or_else(|| {
            Refusal::Token(format!(
                "{rcpt} is not a reply address this bridge issued, or it has expired"
            ))
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

/// What an attendee mails goes to the ORGANIZER inside it. Only a reply
/// token or a local client can vouch for an organizer elsewhere; for anyone
/// else (a DMARC-verified stranger) the organizer must be a local user the
/// mail was actually addressed to, or the bridge would post the stranger's
/// REPLY to any domain it names.
fn reply_stays_local(
    config: &Config,
    method: crate::itip::Method,
    organizer: &CalAddress,
    envelope_recipients: &[String],
) -> Result<(), Refusal> {
    if !config.is_local(organizer) {
        return Err(Refusal::Relay(format!(
            "a {method} from outside may only go to an organizer in a local domain; ORGANIZER {organizer} is not in one"
        )));
    }
    let addressed = envelope_recipients
        .iter()
        .any(|r| Some(r.to_ascii_lowercase().as_str()) == organizer.email());
    if !addressed {
        return Err(Refusal::Relay(format!(
            "the {method} names ORGANIZER {organizer}, but the mail is addressed to {}",
            envelope_recipients.join(", ")
        )));
    }
    Ok(())
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
        Sender::Local { by } if config.is_local(originator) => {
            Ok((Accept::Local, format!("local client ({by})")))
        }
        Sender::Local { by } => Err(Refusal::Mismatch(format!(
            "a local client ({by}) may only send for the local domains; {originator} is not in one"
        ))),
        Sender::Verified { address, by } if originator.email() == Some(address.as_str()) => {
            Ok((Accept::Dmarc, by.clone()))
        }
        Sender::Verified { address, .. } => Err(Refusal::Mismatch(format!(
            "the iTIP originator {originator} is not the authenticated sender {address}"
        ))),
        Sender::Unverified { why } => Err(Refusal::NotAuthenticated(why.clone())),
        Sender::Undecided { why } => Err(Refusal::Undecided(why.clone())),
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

    /// What the intake does: the token's lookup, then the translation.
    fn translate_with(
        config: &Config,
        store: &dyn Store,
        mail: &Itip,
        envelope_recipients: &[String],
        sender: &Sender,
    ) -> Result<Translated, Refusal> {
        let token = token_key(config, store, envelope_recipients)?;
        translate(config, token, mail, envelope_recipients, sender)
    }

    fn unauthenticated() -> Sender {
        Sender::Unverified {
            why: "no DMARC".into(),
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
        let token = store.token_for(&key, u64::MAX).unwrap();
        let address = format!("ischedule+{token}@bridge.test");
        let c = config();
        for organizer in [Some(format!("mailto:{address}")), None] {
            let t = translate_with(
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
            translate_with(&c, &store, &forged, &[address], &unauthenticated()),
            Err(Refusal::Token(_))
        ));
        assert!(matches!(
            translate_with(
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
        let dmarc = |from: &str| Sender::Verified {
            address: from.into(),
            by: "DMARC pass".into(),
        };
        let ok = translate_with(&c, &store, &reply(None), &to, &dmarc("carol@mail.test")).unwrap();
        assert_eq!(
            ok.request.recipients[0].as_str(),
            "mailto:bob@example.com",
            "ORGANIZER filled in from the envelope"
        );
        assert!(matches!(
            translate_with(&c, &store, &reply(None), &to, &dmarc("eve@mail.test")),
            Err(Refusal::Mismatch(_))
        ));
        assert!(matches!(
            translate_with(&c, &store, &reply(None), &to, &unauthenticated()),
            Err(Refusal::NotAuthenticated(_))
        ));
        // A local client speaks for the local domains only.
        let local = Sender::Local {
            by: "SMTP AUTH".into(),
        };
        assert!(matches!(
            translate_with(&c, &store, &reply(None), &to, &local),
            Err(Refusal::Mismatch(_))
        ));
    }

    #[test]
    fn a_verified_strangers_reply_goes_only_to_the_local_organizer_it_was_mailed_to() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let c = config();
        let carol = Sender::Verified {
            address: "carol@mail.test".into(),
            by: "DMARC pass".into(),
        };
        let to = ["bob@example.com".to_string()];
        let elsewhere = reply(Some("mailto:victim@elsewhere.test"));
        let e = translate_with(&c, &store, &elsewhere, &to, &carol).unwrap_err();
        assert!(matches!(e, Refusal::Relay(_)), "{e}");
        assert!(e.to_string().contains("victim@elsewhere.test"), "{e}");
        let other_local = reply(Some("mailto:alice@example.com"));
        let e = translate_with(&c, &store, &other_local, &to, &carol).unwrap_err();
        assert!(
            e.to_string().contains("addressed to bob@example.com"),
            "{e}"
        );
        let ok = translate_with(
            &c,
            &store,
            &reply(Some("mailto:BOB@example.com")),
            &to,
            &carol,
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
        // A local client vouches for its own attendee's reply anywhere.
        let mut local_reply = reply(Some("mailto:victim@elsewhere.test"));
        local_reply.calendar = local_reply
            .calendar
            .replace("mailto:carol@mail.test", "mailto:dave@example.com");
        let local = Sender::Local { by: "test".into() };
        assert!(translate_with(&c, &store, &local_reply, &to, &local).is_ok());
    }

    /// An invitation from a local organizer, sent by a local client.
    fn invitation(message_id: Option<&str>) -> Itip {
        Itip {
            calendar: "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u2\r\n\
                       DTSTAMP:20301101T000000Z\r\nDTSTART:20301102T100000Z\r\nORGANIZER:mailto:bob@example.com\r\n\
                       ATTENDEE:mailto:carol@mail.test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
                .into(),
            method: Some(crate::itip::Method::Request),
            from: Some("bob@example.com".into()),
            message_id: message_id.map(str::to_string),
            ..reply(None)
        }
    }

    #[test]
    fn an_envelope_recipient_named_twice_is_one_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let local = Sender::Local { by: "test".into() };
        let to = ["carol@mail.test".to_string(), "carol@mail.test".to_string()];
        let ok = translate_with(&config(), &store, &invitation(None), &to, &local).unwrap();
        let recipients: Vec<&str> = ok.request.recipients.iter().map(|r| r.as_str()).collect();
        assert_eq!(recipients, ["mailto:carol@mail.test"]);
    }

    #[test]
    fn a_mail_without_message_id_gets_a_stable_one_from_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let local = Sender::Local { by: "test".into() };
        let to = ["carol@mail.test".to_string()];
        let id = |itip: &Itip| {
            translate_with(&config(), &store, itip, &to, &local)
                .unwrap()
                .request
                .message_id
                .unwrap()
        };
        let derived = id(&invitation(None));
        assert_eq!(
            derived,
            id(&invitation(None)),
            "the MTA's retry has the same id"
        );
        assert!(derived.ends_with("@content.ischedule-bridge"), "{derived}");
        let mut other = invitation(None);
        other.calendar = other.calendar.replace("u2", "u3");
        assert_ne!(id(&other), derived);
        assert_eq!(id(&invitation(Some("m9@mail.test"))), "m9@mail.test");
    }
}
