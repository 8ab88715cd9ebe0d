//! The core's decisions, through fake deliveries: no sockets. Routing is
//! real, by static `[[route]]` rules and local domains, which need no DNS.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::delivery::response;
use super::*;
use crate::discovery::CapabilityOutcome;
use crate::ischedule::capabilities::{AttachmentSupport, Capabilities, ComponentSupport};
use crate::ischedule::xml::RecipientResponse;
use crate::ischedule::{RequestStatus, StatusCode};
use crate::itip::{CalAddress, ItipMessage};
use crate::routing::Receiver;
use crate::store::RedbStore;

const A: &str = "http://a.test/ischedule";
const C: &str = "http://c.test/ischedule";
const ONLY: &str = "http://only.test/ischedule";

/// a.test and b.test share one receiver; only.test is native-only;
/// mail.test is imip-only; example.com is local, with no route (mail).
const CONFIG: &str = r#"
[domains]
local = ["example.com"]
[timeouts]
request_secs = 1
receiver_secs = 1
connect_secs = 1
[[route]]
domain = "a.test"
to = "http://a.test/ischedule"
[[route]]
domain = "b.test"
to = "http://a.test/ischedule"
[[route]]
domain = "c.test"
to = "http://c.test/ischedule"
[[route]]
domain = "only.test"
to = "http://only.test/ischedule"
mode = "native-only"
[[route]]
domain = "mail.test"
mode = "imip-only"
"#;

/// How a fake receiver behaves.
#[derive(Debug, Clone, Copy)]
enum Receives {
    /// Answers `2.0` to each recipient; at most `max` per POST.
    Accepts { max: Option<usize> },
    /// Cannot be reached.
    Down,
    /// Reached, but its POSTs fail as a 5xx does.
    Fails,
    /// Takes only VTODO: a capability mismatch for a VEVENT.
    TodoOnly,
    /// Answers `3.7` (its own verdict: no fallback).
    UnknownUser,
    /// Never answers.
    Hangs,
}

#[derive(Default)]
struct FakeNative {
    receives: Mutex<HashMap<String, Receives>>,
    /// (receiver, recipients) of every POST, in order.
    posts: Mutex<Vec<(String, Vec<String>)>>,
}

impl FakeNative {
    fn set(&self, receiver: &str, r: Receives) {
        self.receives.lock().unwrap().insert(receiver.into(), r);
    }

    fn behaviour(&self, receiver: &Receiver) -> Receives {
        self.receives
            .lock()
            .unwrap()
            .get(&receiver.id)
            .copied()
            .unwrap_or(Receives::Accepts { max: None })
    }

    fn posts(&self) -> Vec<(String, Vec<String>)> {
        self.posts.lock().unwrap().clone()
    }

    fn posts_to(&self, receiver: &str) -> usize {
        self.posts().iter().filter(|(r, _)| r == receiver).count()
    }
}

fn capabilities(components: &[ComponentKind], max_recipients: Option<usize>) -> Capabilities {
    Capabilities {
        serial: 1,
        versions: vec!["1.0".into()],
        scheduling: components
            .iter()
            .map(|&component| ComponentSupport {
                component,
                methods: None,
            })
            .collect(),
        calendar_data_types: vec![("text/calendar".into(), "2.0".into())],
        attachments: AttachmentSupport {
            inline: false,
            external: true,
        },
        rscales: Vec::new(),
        max_content_length: None,
        min_date_time: None,
        max_date_time: None,
        max_instances: None,
        max_recipients,
        administrator: None,
    }
}

#[async_trait]
impl NativeDelivery for FakeNative {
    async fn contact(&self, receiver: &Receiver) -> Result<Contact, Failure> {
        let all = [
            ComponentKind::VEvent,
            ComponentKind::VTodo,
            ComponentKind::VFreeBusy,
        ];
        let capabilities = match self.behaviour(receiver) {
            Receives::Down => return Err(Failure::unreachable(format!("{} refused", receiver.id))),
            Receives::Hangs => std::future::pending().await,
            Receives::Accepts { max } => capabilities(&all, max),
            Receives::TodoOnly => capabilities(&[ComponentKind::VTodo], None),
            Receives::Fails | Receives::UnknownUser => capabilities(&all, None),
        };
        Ok(Contact {
            capabilities: CapabilityOutcome::Known {
                capabilities: Box::new(capabilities),
                from: receiver.id.clone(),
            },
            at: receiver.id.clone(),
        })
    }

    async fn post(
        &self,
        _request: &SchedulingRequest,
        receiver: &Receiver,
        _contact: &Contact,
        recipients: &[CalAddress],
        _body: Bytes,
    ) -> Vec<Delivered> {
        self.posts.lock().unwrap().push((
            receiver.id.clone(),
            recipients.iter().map(|r| r.to_string()).collect(),
        ));
        let (status, fallback) = match self.behaviour(receiver) {
            Receives::Fails => (RequestStatus::service_unavailable(), true),
            Receives::UnknownUser => (RequestStatus::invalid_user(), false),
            _ => (RequestStatus::new(StatusCode::SUCCESS, "Success"), false),
        };
        recipients
            .iter()
            .map(|r| Delivered {
                response: response(r, status.clone(), "fake receiver"),
                fallback,
                author: Author::Receiver,
            })
            .collect()
    }
}

#[derive(Default)]
struct FakeMail {
    sent: Mutex<Vec<String>>,
}

impl FakeMail {
    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl MailDelivery for FakeMail {
    async fn send(
        &self,
        _request: &SchedulingRequest,
        recipients: &[ByMail],
    ) -> Vec<RecipientResponse> {
        recipients
            .iter()
            .map(|m| {
                self.sent.lock().unwrap().push(m.address.to_string());
                response(
                    &m.address,
                    RequestStatus::new(StatusCode::SENT, "Sent"),
                    &m.why,
                )
            })
            .collect()
    }
}

struct World {
    scheduler: Scheduler,
    native: Arc<FakeNative>,
    mail: Arc<FakeMail>,
    _state: tempfile::TempDir,
}

fn world() -> World {
    let config = Arc::new(Config::parse(CONFIG, "test.toml", Path::new(".")).unwrap());
    let state = tempfile::tempdir().unwrap();
    let native = Arc::new(FakeNative::default());
    let mail = Arc::new(FakeMail::default());
    let scheduler = Scheduler {
        resolver: Arc::new(DnsResolver::new(&config.dns, config.timeouts.dns).unwrap()),
        config,
        native: native.clone(),
        mail: mail.clone(),
        store: Arc::new(RedbStore::open(state.path()).unwrap()),
    };
    World {
        scheduler,
        native,
        mail,
        _state: state,
    }
}

/// A REQUEST from org@example.com to `attendees` (user@domain each).
fn request(component: &str, attendees: &[&str], message_id: Option<&str>) -> SchedulingRequest {
    let lines: String = attendees
        .iter()
        .map(|a| format!("ATTENDEE:mailto:{a}\r\n"))
        .collect();
    let (method, dates) = if component == "VFREEBUSY" {
        (
            "REQUEST",
            "DTSTART:20301102T100000Z\r\nDTEND:20301102T180000Z\r\n",
        )
    } else {
        ("REQUEST", "DTSTART:20301102T100000Z\r\nSEQUENCE:0\r\n")
    };
    let body = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nMETHOD:{method}\r\n\
         BEGIN:{component}\r\nUID:u1\r\nDTSTAMP:20301101T000000Z\r\n{dates}\
         ORGANIZER:mailto:org@example.com\r\n{lines}END:{component}\r\nEND:VCALENDAR\r\n"
    );
    let itip = ItipMessage::parse(&body).unwrap();
    SchedulingRequest {
        originator: CalAddress::parse("mailto:org@example.com").unwrap(),
        recipients: attendees
            .iter()
            .map(|a| CalAddress::parse(&format!("mailto:{a}")).unwrap())
            .collect(),
        message_id: message_id.map(str::to_string),
        content_type: format!("text/calendar; component={component}; method={method}"),
        body: Bytes::from(body),
        itip,
    }
}

fn event(attendees: &[&str]) -> SchedulingRequest {
    request("VEVENT", attendees, Some("m1"))
}

fn statuses(s: &Scheduled) -> Vec<(String, String)> {
    s.response
        .responses
        .iter()
        .map(|r| (r.recipient.clone(), r.status.code.to_string()))
        .collect()
}

fn pair(recipient: &str, code: &str) -> (String, String) {
    (format!("mailto:{recipient}"), code.to_string())
}

#[tokio::test]
async fn recipients_of_one_receiver_share_one_post() {
    let w = world();
    let s = w
        .scheduler
        .schedule(
            &event(&["x@a.test", "y@c.test", "z@b.test"]),
            MailPolicy::PerMode,
        )
        .await;
    let mut posts = w.native.posts();
    posts.sort();
    assert_eq!(
        posts,
        vec![
            (
                A.to_string(),
                vec!["mailto:x@a.test".into(), "mailto:z@b.test".into()]
            ),
            (C.to_string(), vec!["mailto:y@c.test".into()]),
        ]
    );
    assert_eq!(
        statuses(&s),
        vec![
            pair("x@a.test", "2.0"),
            pair("y@c.test", "2.0"),
            pair("z@b.test", "2.0")
        ]
    );
}

#[tokio::test]
async fn a_receiver_gets_at_most_its_max_recipients_per_post() {
    let w = world();
    w.native.set(A, Receives::Accepts { max: Some(2) });
    let to = ["1@a.test", "2@b.test", "3@a.test", "4@a.test", "5@b.test"];
    let s = w.scheduler.schedule(&event(&to), MailPolicy::PerMode).await;
    let sizes: Vec<usize> = w.native.posts().iter().map(|(_, r)| r.len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let posted: Vec<String> = w.native.posts().into_iter().flat_map(|(_, r)| r).collect();
    let wanted: Vec<String> = to.iter().map(|a| format!("mailto:{a}")).collect();
    assert_eq!(posted, wanted, "every recipient exactly once, in order");
    assert!(s
        .response
        .responses
        .iter()
        .all(|r| r.status.code == StatusCode::SUCCESS));
}

#[tokio::test]
async fn native_then_imip_mails_after_each_failure_mail_can_help_with() {
    for (receives, before) in [
        (Receives::Down, "refused"),
        (Receives::Fails, "fake receiver"),
        (Receives::TodoOnly, "does not accept"),
        (Receives::Hangs, "did not finish within"),
    ] {
        let w = world();
        w.native.set(A, receives);
        let s = w
            .scheduler
            .schedule(&event(&["x@a.test"]), MailPolicy::PerMode)
            .await;
        assert_eq!(w.mail.sent(), vec!["mailto:x@a.test"], "{receives:?}");
        let answer = &s.response.responses[0];
        assert_eq!(answer.status.code, StatusCode::SENT, "{receives:?}");
        let why = answer.description.as_deref().unwrap();
        assert!(why.starts_with("native delivery failed ("), "{why}");
        assert!(why.contains(before), "{receives:?}: {why}");
        assert_eq!(
            s.log[0].route,
            format!("rule[0] domain {} then imip", "a.test")
        );
    }
}

#[tokio::test]
async fn no_fallback_for_a_receivers_own_verdict_or_a_native_only_route() {
    let w = world();
    w.native.set(A, Receives::UnknownUser);
    w.native.set(ONLY, Receives::Down);
    let s = w
        .scheduler
        .schedule(&event(&["x@a.test", "y@only.test"]), MailPolicy::PerMode)
        .await;
    assert!(w.mail.sent().is_empty());
    assert_eq!(
        statuses(&s),
        vec![pair("x@a.test", "3.7"), pair("y@only.test", "5.1")]
    );
}

#[tokio::test]
async fn a_capability_mismatch_on_a_native_only_route_is_reported_not_sent() {
    let w = world();
    w.native.set(ONLY, Receives::TodoOnly);
    let s = w
        .scheduler
        .schedule(&event(&["y@only.test"]), MailPolicy::PerMode)
        .await;
    assert!(w.native.posts().is_empty(), "not sent");
    assert_eq!(statuses(&s), vec![pair("y@only.test", "3.14")]);
}

#[tokio::test]
async fn mail_that_came_in_is_never_mailed_again() {
    let w = world();
    w.native.set(A, Receives::Down);
    let s = w
        .scheduler
        .schedule(&event(&["x@a.test", "m@mail.test"]), MailPolicy::Never)
        .await;
    assert!(w.mail.sent().is_empty());
    assert_eq!(
        statuses(&s),
        vec![pair("x@a.test", "5.1"), pair("m@mail.test", "5.3")]
    );
}

#[tokio::test]
async fn answers_come_in_request_order_whatever_path_each_took() {
    let w = world();
    w.native.set(C, Receives::Down);
    w.native.set(ONLY, Receives::UnknownUser);
    let to = [
        "m@mail.test",
        "y@c.test",
        "z@only.test",
        "x@a.test",
        "u@example.com",
    ];
    let s = w.scheduler.schedule(&event(&to), MailPolicy::PerMode).await;
    assert_eq!(
        statuses(&s),
        vec![
            pair("m@mail.test", "1.1"),
            pair("y@c.test", "1.1"),
            pair("z@only.test", "3.7"),
            pair("x@a.test", "2.0"),
            pair("u@example.com", "1.1"),
        ]
    );
    let routes: Vec<&str> = s.log.iter().map(|l| l.route.as_str()).collect();
    assert_eq!(
        routes,
        [
            "imip",
            "rule[2] domain c.test then imip",
            "rule[3] domain only.test",
            "rule[0] domain a.test",
            "imip"
        ]
    );
    assert_eq!(s.log[3].receiver.as_deref(), Some(A));
}

#[tokio::test]
async fn free_busy_is_never_mailed() {
    let w = world();
    let s = w
        .scheduler
        .schedule(
            &request("VFREEBUSY", &["m@mail.test"], Some("fb1")),
            MailPolicy::PerMode,
        )
        .await;
    assert!(w.mail.sent().is_empty());
    assert_eq!(statuses(&s), vec![pair("m@mail.test", "5.3")]);
}

#[tokio::test]
async fn a_retry_sends_no_second_mail_and_reaches_no_receiver_twice() {
    let w = world();
    let req = event(&["x@a.test", "m@mail.test"]);
    let first = w.scheduler.schedule(&req, MailPolicy::PerMode).await;
    assert!(!first.repeated);
    let again = w.scheduler.schedule(&req, MailPolicy::PerMode).await;
    assert!(again.repeated);
    assert_eq!(statuses(&again), statuses(&first));
    assert_eq!(w.mail.sent().len(), 1);
    assert_eq!(w.native.posts_to(A), 1);
}

#[tokio::test]
async fn a_retry_after_a_temporary_failure_reaches_only_the_recipients_not_yet_done() {
    // The mail intake's case: one receiver down, the MTA retries later.
    let w = world();
    w.native.set(C, Receives::Down);
    let req = event(&["x@a.test", "y@c.test"]);
    let first = w.scheduler.schedule(&req, MailPolicy::Never).await;
    assert_eq!(
        statuses(&first),
        vec![pair("x@a.test", "2.0"), pair("y@c.test", "5.1")]
    );

    w.native.set(C, Receives::Accepts { max: None });
    let retry = w.scheduler.schedule(&req, MailPolicy::Never).await;
    assert_eq!(
        statuses(&retry),
        vec![pair("x@a.test", "2.0"), pair("y@c.test", "2.0")]
    );
    assert!(!retry.repeated);
    assert_eq!(retry.log[0].route, "repeat");
    assert_eq!(w.native.posts_to(A), 1, "x@a.test already had its answer");
    assert_eq!(
        w.native.posts_to(C),
        1,
        "y@c.test was unreachable the first time"
    );

    let third = w.scheduler.schedule(&req, MailPolicy::Never).await;
    assert!(third.repeated);
    assert_eq!(w.native.posts().len(), 2);
}

#[tokio::test]
async fn a_different_body_under_the_same_id_is_a_new_message() {
    let w = world();
    let first = event(&["m@mail.test"]);
    w.scheduler.schedule(&first, MailPolicy::PerMode).await;
    let mut changed = event(&["m@mail.test"]);
    changed.body = Bytes::from(String::from_utf8_lossy(&first.body).replace("u1", "u2"));
    let s = w.scheduler.schedule(&changed, MailPolicy::PerMode).await;
    assert!(!s.repeated);
    assert_eq!(w.mail.sent().len(), 2);
}

#[tokio::test]
async fn nothing_is_recorded_without_an_id_or_for_native_only_posts() {
    let w = world();
    let unnamed = request("VEVENT", &["m@mail.test"], None);
    w.scheduler.schedule(&unnamed, MailPolicy::PerMode).await;
    w.scheduler.schedule(&unnamed, MailPolicy::PerMode).await;
    assert_eq!(w.mail.sent().len(), 2, "no id: no idempotency key");

    let native = event(&["x@a.test"]);
    w.scheduler.schedule(&native, MailPolicy::PerMode).await;
    let again = w.scheduler.schedule(&native, MailPolicy::PerMode).await;
    assert!(!again.repeated);
    assert_eq!(
        w.native.posts_to(A),
        2,
        "a native POST retried reaches its receiver again"
    );
}

#[test]
fn only_local_senders_may_address_other_domains_or_speak_for_local_users() {
    let w = world();
    let config = &w.scheduler.config;
    let local = Sender::Local { by: "test".into() };
    let remote = Sender::remote();
    let outward = event(&["x@a.test"]);
    assert!(sender::authorize(config, &local, &outward).is_ok());
    let denied = sender::authorize(config, &remote, &outward).unwrap_err();
    assert_eq!(denied.error, crate::ischedule::IsError::OriginatorDenied);
    assert!(
        denied.description.contains("is a user of a local domain"),
        "{denied}"
    );

    let mut inward = event(&["u@example.com"]);
    inward.originator = CalAddress::parse("mailto:stranger@a.test").unwrap();
    assert!(sender::authorize(config, &remote, &inward).is_ok());
    inward
        .recipients
        .push(CalAddress::parse("mailto:x@a.test").unwrap());
    let relay = sender::authorize(config, &remote, &inward).unwrap_err();
    assert!(
        relay
            .description
            .contains("relays only to its local domains"),
        "{relay}"
    );
}

#[test]
fn a_verified_sender_speaks_only_for_its_own_address_and_only_inwards() {
    let w = world();
    let config = &w.scheduler.config;
    let verified = Sender::Verified {
        address: "stranger@a.test".into(),
        by: "DKIM d=a.test s=s1".into(),
    };
    let mut inward = event(&["u@example.com"]);
    inward.originator = CalAddress::parse("mailto:stranger@a.test").unwrap();
    assert!(sender::authorize(config, &verified, &inward).is_ok());

    let mut other = inward.clone();
    other.originator = CalAddress::parse("mailto:boss@a.test").unwrap();
    let denied = sender::authorize(config, &verified, &other).unwrap_err();
    assert!(
        denied.description.contains("verified as stranger@a.test"),
        "{denied}"
    );

    let mut relay = inward.clone();
    relay
        .recipients
        .push(CalAddress::parse("mailto:x@b.test").unwrap());
    assert!(sender::authorize(config, &verified, &relay).is_err());
}
