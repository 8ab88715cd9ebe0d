//! iSchedule's rules tying the `Originator` and `Recipient` headers to the
//! calendar users named in the iTIP message (spec clause 8.1, tables 1 and
//! 2, and the VFREEBUSY one-for-one rule of clauses 5.1 and 8.3).

use std::collections::HashSet;

use super::error::{Fault, ItipError};
use crate::itip::{CalAddress, ComponentKind, ItipMessage, Role};

/// How many addresses an error description lists before summarising; a
/// message may carry thousands of ATTENDEEs.
const LISTED: usize = 5;

/// Table 1: the Originator must match the ORGANIZER (PUBLISH, REQUEST, ADD,
/// CANCEL, DECLINECOUNTER) or the ATTENDEE (REPLY, REFRESH, COUNTER).
/// iSchedule forbids forwarding, so there is no other case.
///
/// An attendee answers for itself only: its message names exactly one
/// ATTENDEE, the Originator. Otherwise one attendee could reply, counter or
/// refresh in the name of the others it lists (the mail path asks the same).
pub fn check_originator(msg: &ItipMessage, originator: &CalAddress) -> Result<(), ItipError> {
    let matches = match msg.method.originator_role() {
        Role::Organizer => msg.organizer.as_ref() == Some(originator),
        Role::Attendee => {
            if msg.attendees.len() > 1 {
                return Err(ItipError::new(
                    Fault::InvalidSchedulingMessage,
                    format!(
                        "a {} must name exactly one ATTENDEE, the Originator answering for itself; this one names {}",
                        msg.method,
                        msg.attendees.len()
                    ),
                ));
            }
            msg.attendees.first() == Some(originator)
        }
    };
    if matches {
        return Ok(());
    }
    Err(ItipError::new(
        Fault::InvalidSchedulingMessage,
        format!(
            "Originator {originator} must match {} of a {} (iSchedule table 1)",
            required(msg, msg.method.originator_role()),
            msg.method
        ),
    ))
}

/// Table 2: every Recipient must match one of the ATTENDEEs (REQUEST, ADD,
/// CANCEL, DECLINECOUNTER) or the ORGANIZER (REPLY, REFRESH, COUNTER);
/// PUBLISH has no rule.
///
/// A VFREEBUSY request is answered per ATTENDEE at once, so its Recipients
/// must match the ATTENDEEs one-for-one (clause 5.1); a mismatch is
/// `recipient-mismatch`. That rule applies where table 2 asks for ATTENDEEs:
/// a VFREEBUSY REPLY goes to the ORGANIZER like any other reply.
///
/// An empty Recipient list is `recipient-missing`: every rule would hold
/// vacuously for it, yet there is no one to deliver to.
pub fn check_recipients(msg: &ItipMessage, recipients: &[CalAddress]) -> Result<(), ItipError> {
    if recipients.is_empty() {
        return Err(ItipError::new(
            Fault::RecipientMissing,
            format!("a {} needs at least one Recipient", msg.method),
        ));
    }
    let Some(role) = msg.method.recipient_role() else {
        return Ok(());
    };
    if msg.component == ComponentKind::VFreeBusy && role == Role::Attendee {
        return check_one_for_one(msg, recipients);
    }
    let Some(stray) = recipients.iter().find(|r| !has_role(msg, role, r)) else {
        return Ok(());
    };
    Err(ItipError::new(
        Fault::InvalidSchedulingMessage,
        format!(
            "Recipient {stray} must match {} of a {} (iSchedule table 2)",
            required(msg, role),
            msg.method
        ),
    ))
}

fn has_role(msg: &ItipMessage, role: Role, address: &CalAddress) -> bool {
    match role {
        Role::Organizer => msg.organizer.as_ref() == Some(address),
        Role::Attendee => msg.attendees.contains(address),
    }
}

/// What a header had to match, for error descriptions.
fn required(msg: &ItipMessage, role: Role) -> String {
    match role {
        Role::Organizer => match &msg.organizer {
            Some(organizer) => format!("the ORGANIZER {organizer}"),
            None => "the ORGANIZER (there is none)".to_string(),
        },
        Role::Attendee => match msg.attendees.as_slice() {
            [] => "an ATTENDEE (there are none)".to_string(),
            [one] => format!("the ATTENDEE {one}"),
            many => format!("one of the ATTENDEEs {}", listing(many)),
        },
    }
}

/// Same set, same size: every Recipient an ATTENDEE, every ATTENDEE a
/// Recipient, none twice.
fn check_one_for_one(msg: &ItipMessage, recipients: &[CalAddress]) -> Result<(), ItipError> {
    let mut seen = HashSet::new();
    let repeated: Vec<&CalAddress> = recipients.iter().filter(|r| !seen.insert(*r)).collect();
    let extra: Vec<&CalAddress> = recipients
        .iter()
        .filter(|r| !msg.attendees.contains(r))
        .collect();
    let missing: Vec<&CalAddress> = msg.attendees.iter().filter(|a| !seen.contains(a)).collect();
    let problems: Vec<String> = [
        ("Recipients that are not ATTENDEEs", extra),
        ("ATTENDEEs that are not Recipients", missing),
        ("Recipients listed more than once", repeated),
    ]
    .into_iter()
    .filter(|(_, list)| !list.is_empty())
    .map(|(what, list)| format!("{what}: {}", listing(&list)))
    .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(ItipError::new(
        Fault::RecipientMismatch,
        format!(
            "the Recipients of a VFREEBUSY {} must match its ATTENDEEs one-for-one (iSchedule 5.1); {}",
            msg.method,
            problems.join("; ")
        ),
    ))
}

/// Up to [`LISTED`] addresses, then how many more.
fn listing<A: std::fmt::Display>(addresses: &[A]) -> String {
    let shown: Vec<String> = addresses
        .iter()
        .take(LISTED)
        .map(ToString::to_string)
        .collect();
    match addresses.len().saturating_sub(LISTED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::itip::{Attachments, Instances, Method};

    fn addr(s: &str) -> CalAddress {
        CalAddress::parse(s).unwrap()
    }

    const ORG: &str = "mailto:org@example.com";
    const A: &str = "mailto:a@example.org";
    const B: &str = "mailto:b@example.net";
    const STRANGER: &str = "mailto:eve@example.com";

    fn message(method: Method, component: ComponentKind) -> ItipMessage {
        ItipMessage {
            method,
            component,
            uid: "u1".into(),
            organizer: Some(addr(ORG)),
            attendees: vec![addr(A), addr(B)],
            earliest: None,
            latest: None,
            instances: Instances::Counted(1),
            attachments: Attachments::default(),
        }
    }

    fn event(method: Method) -> ItipMessage {
        message(method, ComponentKind::VEvent)
    }

    const BY_ORGANIZER: [Method; 5] = [
        Method::Publish,
        Method::Request,
        Method::Add,
        Method::Cancel,
        Method::DeclineCounter,
    ];
    const BY_ATTENDEE: [Method; 3] = [Method::Reply, Method::Refresh, Method::Counter];

    #[test]
    fn table_1_organizer_methods() {
        for method in BY_ORGANIZER {
            let msg = event(method);
            assert_eq!(
                check_originator(&msg, &addr("MAILTO:Org@Example.COM")),
                Ok(()),
                "{method}"
            );
            let r = check_originator(&msg, &addr(A)).unwrap_err();
            assert_eq!(r.kind, Fault::InvalidSchedulingMessage);
            assert_eq!(
                r.description,
                format!("Originator {A} must match the ORGANIZER {ORG} of a {method} (iSchedule table 1)")
            );
        }
    }

    #[test]
    fn table_1_attendee_methods() {
        for method in BY_ATTENDEE {
            let mut msg = event(method);
            msg.attendees = vec![addr(B)];
            assert_eq!(check_originator(&msg, &addr(B)), Ok(()), "{method}");
            let r = check_originator(&msg, &addr(ORG)).unwrap_err();
            assert_eq!(r.kind, Fault::InvalidSchedulingMessage);
            assert_eq!(
                r.description,
                format!("Originator {ORG} must match the ATTENDEE {B} of a {method} (iSchedule table 1)")
            );
        }
    }

    #[test]
    fn an_attendee_answers_for_itself_only() {
        for method in BY_ATTENDEE {
            // B is one of the two: B may still not answer for A.
            let r = check_originator(&event(method), &addr(B)).unwrap_err();
            assert_eq!(r.kind, Fault::InvalidSchedulingMessage);
            assert_eq!(
                r.description,
                format!("a {method} must name exactly one ATTENDEE, the Originator answering for itself; this one names 2")
            );
        }
    }

    #[test]
    fn table_1_without_organizer_fails_clearly() {
        let mut msg = event(Method::Request);
        msg.organizer = None;
        let r = check_originator(&msg, &addr(ORG)).unwrap_err();
        assert!(
            r.description.contains("the ORGANIZER (there is none)"),
            "{r}"
        );
    }

    #[test]
    fn table_2_attendee_methods() {
        for method in [
            Method::Request,
            Method::Add,
            Method::Cancel,
            Method::DeclineCounter,
        ] {
            let msg = event(method);
            assert_eq!(
                check_recipients(&msg, &[addr(A), addr("mailto:B@EXAMPLE.NET")]),
                Ok(()),
                "{method}"
            );
            assert_eq!(check_recipients(&msg, &[addr(B)]), Ok(()), "{method}");
            let r = check_recipients(&msg, &[addr(A), addr(STRANGER), addr(ORG)]).unwrap_err();
            assert_eq!(r.kind, Fault::InvalidSchedulingMessage);
            assert_eq!(
                r.description,
                format!("Recipient {STRANGER} must match one of the ATTENDEEs {A}, {B} of a {method} (iSchedule table 2)")
            );
        }
    }

    #[test]
    fn table_2_organizer_methods() {
        for method in BY_ATTENDEE {
            let msg = event(method);
            assert_eq!(check_recipients(&msg, &[addr(ORG)]), Ok(()), "{method}");
            let r = check_recipients(&msg, &[addr(ORG), addr(A)]).unwrap_err();
            assert_eq!(r.kind, Fault::InvalidSchedulingMessage);
            assert_eq!(
                r.description,
                format!("Recipient {A} must match the ORGANIZER {ORG} of a {method} (iSchedule table 2)")
            );
        }
    }

    #[test]
    fn table_2_publish_has_no_rule() {
        let msg = event(Method::Publish);
        assert_eq!(check_recipients(&msg, &[addr(STRANGER)]), Ok(()));
    }

    #[test]
    fn no_recipients_is_recipient_missing() {
        let r = check_recipients(&event(Method::Publish), &[]).unwrap_err();
        assert_eq!(r.kind, Fault::RecipientMissing);
    }

    #[test]
    fn table_2_with_no_attendees_fails_clearly() {
        let mut msg = event(Method::Request);
        msg.attendees.clear();
        let r = check_recipients(&msg, &[addr(A)]).unwrap_err();
        assert!(
            r.description.contains("an ATTENDEE (there are none)"),
            "{r}"
        );
    }

    #[test]
    fn freebusy_recipients_one_for_one() {
        let msg = message(Method::Request, ComponentKind::VFreeBusy);
        assert_eq!(
            check_recipients(&msg, &[addr(B), addr("MAILTO:A@example.ORG")]),
            Ok(())
        );
    }

    #[test]
    fn freebusy_missing_recipient_is_a_mismatch() {
        let msg = message(Method::Request, ComponentKind::VFreeBusy);
        let r = check_recipients(&msg, &[addr(A)]).unwrap_err();
        assert_eq!(r.kind, Fault::RecipientMismatch);
        assert_eq!(
            r.description,
            format!(
                "the Recipients of a VFREEBUSY REQUEST must match its ATTENDEEs one-for-one \
                 (iSchedule 5.1); ATTENDEEs that are not Recipients: {B}"
            )
        );
    }

    #[test]
    fn freebusy_extra_recipient_is_a_mismatch() {
        let msg = message(Method::Request, ComponentKind::VFreeBusy);
        let r = check_recipients(&msg, &[addr(A), addr(B), addr(STRANGER)]).unwrap_err();
        assert_eq!(r.kind, Fault::RecipientMismatch);
        assert!(
            r.description
                .ends_with(&format!("Recipients that are not ATTENDEEs: {STRANGER}")),
            "{r}"
        );
    }

    #[test]
    fn freebusy_repeated_recipient_is_a_mismatch() {
        let msg = message(Method::Request, ComponentKind::VFreeBusy);
        let r =
            check_recipients(&msg, &[addr(A), addr(B), addr("mailto:A@EXAMPLE.ORG")]).unwrap_err();
        assert_eq!(r.kind, Fault::RecipientMismatch);
        assert!(
            r.description
                .ends_with("Recipients listed more than once: mailto:A@EXAMPLE.ORG"),
            "{r}"
        );
    }

    #[test]
    fn freebusy_reply_goes_to_the_organizer() {
        let msg = message(Method::Reply, ComponentKind::VFreeBusy);
        assert_eq!(check_recipients(&msg, &[addr(ORG)]), Ok(()));
        let r = check_recipients(&msg, &[addr(A)]).unwrap_err();
        assert_eq!(r.kind, Fault::InvalidSchedulingMessage);
    }

    #[test]
    fn long_lists_are_summarised() {
        let mut msg = event(Method::Request);
        msg.attendees = (0..8)
            .map(|i| addr(&format!("mailto:p{i}@x.org")))
            .collect();
        let r = check_recipients(&msg, &[addr(STRANGER)]).unwrap_err();
        assert!(
            r.description
                .contains("mailto:p4@x.org and 3 more of a REQUEST"),
            "{r}"
        );
    }

    #[test]
    fn spec_a1_and_a2_pass() {
        let a1 = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n\
                  DTSTAMP:20040901T200200Z\r\nORGANIZER:mailto:bernard@example.com\r\n\
                  UID:34222-232@example.com\r\nATTENDEE;CN=Bernard:mailto:bernard@example.com\r\n\
                  ATTENDEE;CN=Cyrus:mailto:cyrus@example.org\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let msg = ItipMessage::parse(a1).unwrap();
        let bernard = addr("mailto:bernard@example.com");
        let cyrus = addr("mailto:cyrus@example.org");
        assert_eq!(check_originator(&msg, &bernard), Ok(()));
        assert_eq!(check_recipients(&msg, std::slice::from_ref(&cyrus)), Ok(()));
        let a2 = a1.replace("VEVENT", "VFREEBUSY");
        let msg = ItipMessage::parse(&a2).unwrap();
        assert_eq!(check_recipients(&msg, &[bernard, cyrus.clone()]), Ok(()));
        let r = check_recipients(&msg, &[cyrus]).unwrap_err();
        assert_eq!(r.kind, Fault::RecipientMismatch);
    }
}
