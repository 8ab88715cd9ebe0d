//! Inbound iMIP, the mail listeners' delivery (DESIGN.md "iMIP → iSchedule"):
//! each mail is parsed, its sender authenticated, its iTIP object turned
//! into an iSchedule request and scheduled natively, and what the receivers
//! answer becomes the SMTP/LMTP reply. Mail that is not for iSchedule goes
//! to the next hop unchanged, or is refused with the reason.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::bounce;
use super::listener::{Delivery, Envelope};
use crate::imip::authenticate::{AuthError, Authenticator};
use crate::imip::inbound::{self, Bounce, InboundError, Itip, Parsed};
use crate::imip::outbound::Composed;
use crate::imip::to_ischedule::{self, Refusal};
use crate::ischedule::{RequestStatus, StatusCode};
use crate::itip::{CalAddress, Role};
use crate::mail::outbound::dsn;
use crate::mail::outbound::queue::{Mailer, NotQueued};
use crate::mail::outbound::transport::Transport;
use crate::scheduling::failure_report::ReportOutcome;
use crate::scheduling::{unix_now, MailPolicy, Scheduler, Sender};
use crate::smtp::{EnhancedStatus, Outcome, SmtpReply};
use crate::store;

pub struct Intake {
    pub scheduler: Arc<Scheduler>,
    /// Sends the delivery status notifications of mixed outcomes.
    pub mailer: Arc<Mailer>,
    pub authenticator: Authenticator,
    /// Where mail that is not turned into iSchedule goes unchanged.
    pub next_hop: Option<Transport>,
}

fn reply(code: u16, enhanced: EnhancedStatus, text: impl Into<String>) -> SmtpReply {
    SmtpReply::new(code, Some(enhanced), text)
}

/// DESIGN.md table "iMIP → iSchedule": a receiver's request-status as the
/// reply to the mail's sender. A receiver that is down gives 451, so the
/// sending MTA keeps the message and retries: nothing is lost.
pub fn reply_for(status: &RequestStatus, description: Option<&str>) -> SmtpReply {
    let text = match description {
        Some(d) => format!("{status}: {d}"),
        None => status.to_string(),
    };
    let code = status.code;
    match (code.class, code.major) {
        (1 | 2, _) => reply(250, EnhancedStatus::new(2, 0, 0), text),
        _ if code == StatusCode::INVALID_USER => reply(550, EnhancedStatus::new(5, 1, 1), text),
        _ if code == StatusCode::NO_AUTHORITY => reply(550, EnhancedStatus::new(5, 7, 1), text),
        (3, _) => reply(554, EnhancedStatus::new(5, 6, 0), text),
        _ if code == StatusCode::NO_SCHEDULING_SUPPORT => {
            reply(550, EnhancedStatus::new(5, 1, 1), text)
        }
        (5, 1) => reply(451, EnhancedStatus::new(4, 4, 1), text),
        _ => reply(554, EnhancedStatus::new(5, 6, 0), text),
    }
}

fn refusal_reply(refusal: &Refusal) -> SmtpReply {
    match refusal {
        Refusal::NotAuthenticated(_)
        | Refusal::Mismatch(_)
        | Refusal::Token(_)
        | Refusal::Relay(_) => reply(550, EnhancedStatus::new(5, 7, 1), refusal.to_string()),
        Refusal::NoMethod | Refusal::Invalid(_) => {
            reply(554, EnhancedStatus::new(5, 6, 0), refusal.to_string())
        }
        Refusal::Store(_) => reply(451, EnhancedStatus::new(4, 3, 0), refusal.to_string()),
        Refusal::Undecided(_) => reply(451, EnhancedStatus::new(4, 7, 0), refusal.to_string()),
    }
}

#[async_trait]
impl Delivery for Intake {
    /// No open relay: local clients may address anyone; everyone else only
    /// the local domains, this bridge's reply addresses, and its own
    /// envelope sender (where delivery reports come back).
    async fn accept_recipient(
        &self,
        envelope: &Envelope,
        recipient: &str,
    ) -> Result<(), SmtpReply> {
        let config = &self.scheduler.config;
        let local_recipient =
            CalAddress::parse(&format!("mailto:{recipient}")).is_ok_and(|a| config.is_local(&a));
        let ours = recipient.eq_ignore_ascii_case(&config.smtp.from)
            || to_ischedule::token_of(config, recipient).is_some();
        if self.local_client(envelope).is_some() || local_recipient || ours {
            Ok(())
        } else {
            Err(reply(
                550,
                EnhancedStatus::new(5, 7, 1),
                format!("relaying denied: {recipient} is neither in a local domain nor an address of this bridge"),
            ))
        }
    }

    async fn deliver(&self, envelope: &Envelope, message: &[u8]) -> Vec<SmtpReply> {
        // Bounded so that a mail slow to check (many DNS lookups, a
        // receiver that trickles) cannot hold a session and its resources
        // for ever. What finished before the deadline is in the idempotency
        // record, so the MTA's retry repeats nothing.
        let limit = self.scheduler.config.mail.delivery_timeout;
        let replies = match tokio::time::timeout(limit, self.handle(envelope, message)).await {
            Ok(replies) => replies,
            Err(_) => {
                let why = format!(
                    "delivery took longer than {} s (mail.delivery_timeout_secs), try again later",
                    limit.as_secs()
                );
                vec![reply(451, EnhancedStatus::new(4, 4, 7), why); envelope.recipients.len()]
            }
        };
        for (rcpt, r) in envelope.recipients.iter().zip(&replies) {
            tracing::info!(target: "ischedule::mail", from = %envelope.mail_from, rcpt = %rcpt, client = %envelope.client, reply = %r, "inbound");
        }
        replies
    }

    async fn report_failures(
        &self,
        envelope: &Envelope,
        message: &[u8],
        failed: &[(String, SmtpReply)],
    ) -> bool {
        let config = &self.scheduler.config;
        let to = &envelope.mail_from;
        // A DSN goes to MAIL FROM, which anyone can forge: without proof that
        // the sender is there it would be backscatter aimed at a stranger.
        // DKIM for the From domain says nothing about the envelope sender.
        if self.local_client(envelope).is_none() {
            let (passed, why) = self
                .authenticator
                .spf_passes_for_mail_from(
                    envelope.client.ip(),
                    &envelope.helo,
                    to,
                    &config.mail.hostname,
                )
                .await;
            if !passed {
                tracing::warn!(target: "ischedule::mail", to = %to, failed = failed.len(), reason = %why, "delivery status notification suppressed: the envelope sender is neither a local client nor SPF-verified");
                return false;
            }
        }
        let report = dsn::build(&config.mail.hostname, &envelope.mail_from, message, failed);
        // The 250 that follows promises the report: it is stored before
        // that answer and sent by the queue worker, so the client does not
        // wait on the bridge's own SMTP. Only when it cannot be stored is it
        // sent here and now. A DSN has the null sender, so it can never
        // bounce back here.
        let report = Composed {
            envelope_from: String::new(),
            recipient: envelope.mail_from.clone(),
            message: report,
            notice: None,
        };
        match self.mailer.queue_now(report, unix_now()).await {
            Ok(id) => {
                tracing::info!(target: "ischedule::mail", to = %to, failed = failed.len(), queued = id, "delivery status notification queued");
            }
            Err(not_queued) => {
                let NotQueued { error: e, mail } = *not_queued;
                let (status, why) = self.mailer.deliver_one(mail, unix_now()).await;
                tracing::warn!(target: "ischedule::mail", to = %to, failed = failed.len(), error = %e, status = %status, why = %why, "delivery status notification not queued, sent at once");
            }
        }
        true
    }

    fn check_credentials(&self, user: &str, password: &str) -> bool {
        self.scheduler.config.mail.users.iter().any(|(u, p)| {
            u == user
                && crate::scheduling::sender::constant_time_eq(p.as_bytes(), password.as_bytes())
        })
    }
}

impl Intake {
    /// Why this client counts as local, if it does.
    fn local_client(&self, envelope: &Envelope) -> Option<String> {
        if let Some(user) = &envelope.authenticated_as {
            return Some(format!("SMTP AUTH as {user}"));
        }
        let ip: IpAddr = envelope.client.ip();
        let mail = &self.scheduler.config.mail;
        mail.local_clients
            .iter()
            .find(|net| net.contains(&ip))
            .map(|net| format!("client address in {net}"))
    }

    async fn handle(&self, envelope: &Envelope, message: &[u8]) -> Vec<SmtpReply> {
        let count = envelope.recipients.len();
        match inbound::parse(message) {
            Ok(Parsed::Itip(itip)) => self.itip(envelope, message, &itip).await,
            Ok(Parsed::Bounce(bounce)) => vec![self.bounce(&bounce).await; count],
            Err(e @ InboundError::NoCalendar) => {
                let refused = reply(550, EnhancedStatus::new(5, 6, 0), e.to_string());
                self.pass_through_or(envelope, message, &envelope.recipients, refused)
                    .await
            }
            Err(e) => vec![reply(554, EnhancedStatus::new(5, 6, 0), e.to_string()); count],
        }
    }

    async fn itip(&self, envelope: &Envelope, message: &[u8], itip: &Itip) -> Vec<SmtpReply> {
        let count = envelope.recipients.len();
        let sender = self.authenticate(envelope, message, itip).await;
        let config = &self.scheduler.config;
        // A reply address costs a store round trip, on a thread that may
        // block; most mail names none and is translated right here.
        let token = if to_ischedule::names_token(config, &envelope.recipients) {
            let (config, rcpts) = (config.clone(), envelope.recipients.clone());
            let found = store::blocking(&self.scheduler.store, "resolve_token", move |store| {
                Ok(to_ischedule::token_key(&config, store, &rcpts))
            })
            .await;
            match found {
                Ok(Ok(token)) => token,
                Ok(Err(refusal)) => return vec![refusal_reply(&refusal); count],
                Err(e) => return vec![refusal_reply(&Refusal::Store(e)); count],
            }
        } else {
            None
        };
        let translated =
            match to_ischedule::translate(config, token, itip, &envelope.recipients, &sender) {
                Ok(t) => t,
                Err(refusal) => return vec![refusal_reply(&refusal); count],
            };
        let (kind, by) = &translated.vouched_by;
        let request = &translated.request;
        if !config.accepted_for(&request.originator).contains(kind) {
            let why = format!(
                "{by} is not accepted for {} by this bridge's rules",
                request.originator
            );
            return vec![reply(550, EnhancedStatus::new(5, 7, 1), why); count];
        }
        let scheduled = self.scheduler.schedule(request, MailPolicy::Never).await;
        tracing::info!(target: "ischedule::mail", originator = %request.originator, vouched_by = %by, method = %request.itip.method, "translated to iSchedule");
        let to_organizer = request.itip.method.originator_role() == Role::Attendee;
        // `None`: no iSchedule receiver, so the mail goes to the next hop.
        let mut replies: Vec<Option<SmtpReply>> = Vec::with_capacity(count);
        for rcpt in &envelope.recipients {
            let response = if to_organizer {
                scheduled.response.responses.first()
            } else {
                let address = CalAddress::parse(&format!("mailto:{rcpt}")).ok();
                scheduled
                    .response
                    .responses
                    .iter()
                    .find(|r| CalAddress::parse(&r.recipient).ok() == address)
            };
            replies.push(match response {
                Some(r)
                    if r.status.code == StatusCode::NO_SCHEDULING_SUPPORT
                        && self.next_hop.is_some() =>
                {
                    None
                }
                Some(r) => Some(reply_for(&r.status, r.description.as_deref())),
                None => Some(reply(
                    451,
                    EnhancedStatus::new(4, 3, 0),
                    "no status for this recipient",
                )),
            });
        }
        let unserved: Vec<String> = envelope
            .recipients
            .iter()
            .zip(&replies)
            .filter(|(_, r)| r.is_none())
            .map(|(rcpt, _)| rcpt.clone())
            .collect();
        let mut relayed = self.relay(envelope, message, &unserved).await.into_iter();
        replies
            .into_iter()
            .map(|r| {
                r.or_else(|| relayed.next())
                    .unwrap_or_else(|| reply(451, EnhancedStatus::new(4, 3, 0), "not relayed"))
            })
            .collect()
    }

    /// Local client, else DMARC for the From domain when the rules accept
    /// it; a reply token needs neither (translation checks it).
    async fn authenticate(&self, envelope: &Envelope, message: &[u8], itip: &Itip) -> Sender {
        if let Some(by) = self.local_client(envelope) {
            return Sender::Local { by };
        }
        let config = &self.scheduler.config;
        if to_ischedule::names_token(config, &envelope.recipients) {
            return Sender::Unverified {
                why: "not a local client; the reply token must vouch".into(),
            };
        }
        let Some(from) = itip.from.clone() else {
            return Sender::Unverified {
                why: "the mail has no From address".into(),
            };
        };
        let verdict = self
            .authenticator
            .verify(
                message,
                envelope.client.ip(),
                &envelope.helo,
                &envelope.mail_from,
                &config.mail.hostname,
            )
            .await;
        match verdict {
            Ok(v) if v.authenticated() => Sender::Verified {
                address: from,
                by: v.reason,
            },
            Ok(v) => Sender::Unverified { why: v.reason },
            // DNS trouble decided nothing: the sending MTA must retry.
            Err(e @ AuthError::Temporary(_)) => Sender::Undecided { why: e.to_string() },
            Err(e) => Sender::Unverified {
                why: format!("could not check DMARC/DKIM/SPF: {e}"),
            },
        }
    }

    /// A bounce of mail this bridge sent: the organizer hears of it by a
    /// REPLY carrying REQUEST-STATUS:5.1, built from the record of what was
    /// sent (see [`bounce::honoured`]). Until that REPLY is posted the
    /// bounce is deferred, so its sender keeps it and retries.
    async fn bounce(&self, bounce: &Bounce) -> SmtpReply {
        let record = match bounce.original_message_id.clone() {
            Some(id) => match store::blocking(&self.scheduler.store, "sent", move |s| {
                s.sent(&id, unix_now())
            })
            .await
            {
                Ok(record) => record,
                Err(e) => {
                    let why = format!("the record of sent mail cannot be read: {e}");
                    return reply(451, EnhancedStatus::new(4, 3, 0), why);
                }
            },
            None => None,
        };
        let notice = match bounce::honoured(bounce, record) {
            Ok(notice) => notice,
            Err(refusal) => {
                tracing::warn!(target: "ischedule::mail", reason = %refusal, "delivery report refused");
                return reply(550, EnhancedStatus::new(5, 7, 1), refusal.to_string());
            }
        };
        let why = format!(
            "mail to {} bounced: {} {}",
            bounce.recipients.join(", "),
            bounce.status.map(|s| s.to_string()).unwrap_or_default(),
            bounce.diagnostic.as_deref().unwrap_or("")
        );
        let outcome = self
            .scheduler
            .report_failure(&notice, why.trim(), &notice.message_id)
            .await;
        match outcome {
            ReportOutcome::Posted { .. } => reply(
                250,
                EnhancedStatus::new(2, 0, 0),
                format!("delivery report turned into a REPLY to the organizer: {outcome}"),
            ),
            ReportOutcome::Impossible(_) => reply(
                250,
                EnhancedStatus::new(2, 0, 0),
                format!("delivery report taken; the organizer cannot be told: {outcome}"),
            ),
            ReportOutcome::Failed(_) => reply(
                451,
                EnhancedStatus::new(4, 4, 1),
                format!("the failure REPLY to the organizer could not be posted, try again later: {outcome}"),
            ),
        }
    }

    async fn pass_through_or(
        &self,
        envelope: &Envelope,
        message: &[u8],
        rcpts: &[String],
        refused: SmtpReply,
    ) -> Vec<SmtpReply> {
        if self.next_hop.is_some() && self.local_client(envelope).is_some() {
            self.relay(envelope, message, rcpts).await
        } else {
            vec![refused; rcpts.len()]
        }
    }

    /// Relays the mail unchanged to the next hop, one transaction per
    /// recipient so each keeps its own reply.
    async fn relay(&self, envelope: &Envelope, message: &[u8], rcpts: &[String]) -> Vec<SmtpReply> {
        let Some(hop) = &self.next_hop else {
            return vec![
                reply(
                    550,
                    EnhancedStatus::new(5, 1, 1),
                    "no iSchedule receiver and no next hop for mail"
                );
                rcpts.len()
            ];
        };
        let mut replies = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            replies.push(match hop.send(&envelope.mail_from, rcpt, message).await {
                Outcome::Accepted { reply: r, .. } => reply(
                    250,
                    EnhancedStatus::new(2, 0, 0),
                    format!("relayed to the next hop: {r}"),
                ),
                Outcome::Written { .. } => {
                    reply(250, EnhancedStatus::new(2, 0, 0), "written to the outbox")
                }
                Outcome::Temporary { reason } => reply(
                    451,
                    EnhancedStatus::new(4, 4, 1),
                    format!("next hop: {reason}"),
                ),
                Outcome::Permanent { reply: r } => SmtpReply {
                    code: r.code,
                    enhanced: r.enhanced.or(Some(EnhancedStatus::new(5, 0, 0))),
                    text: format!("next hop: {r}"),
                },
            });
        }
        replies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_statuses_become_the_replies_of_the_design_table() {
        let code = |s: &str| {
            let r = reply_for(&s.parse().unwrap(), None);
            (r.code.get(), r.enhanced.unwrap())
        };
        assert_eq!(code("2.0;Success"), (250, EnhancedStatus::new(2, 0, 0)));
        assert_eq!(code("1.1;Sent"), (250, EnhancedStatus::new(2, 0, 0)));
        assert_eq!(
            code("3.7;Invalid calendar user"),
            (550, EnhancedStatus::new(5, 1, 1))
        );
        assert_eq!(
            code("3.8;No authority"),
            (550, EnhancedStatus::new(5, 7, 1))
        );
        assert_eq!(
            code("3.1;Invalid property name"),
            (554, EnhancedStatus::new(5, 6, 0))
        );
        assert_eq!(
            code("5.3;No scheduling support for user"),
            (550, EnhancedStatus::new(5, 1, 1))
        );
        assert_eq!(
            code("5.1;Service unavailable"),
            (451, EnhancedStatus::new(4, 4, 1))
        );
    }
}
