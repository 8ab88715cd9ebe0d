//! The scheduling core's mail delivery: a request's iMIP messages are
//! composed ([`crate::imip::outbound`]), one per recipient from the parts
//! they share, and handed together to the [`Mailer`], which records them
//! as sent in one commit and sends each, or queues it durably.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::join_all;

use super::queue::Mailer;
use crate::config::Config;
use crate::imip::outbound::{self, ComposeError, Composed, RequestMail};
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::xml::RecipientResponse;
use crate::ischedule::RequestStatus;
use crate::scheduling::delivery::response;
use crate::scheduling::{unix_now, ByMail, MailDelivery};
use crate::store::{self, Store};

pub struct ImipDelivery {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub mailer: Arc<Mailer>,
}

#[async_trait]
impl MailDelivery for ImipDelivery {
    async fn send(
        &self,
        request: &SchedulingRequest,
        recipients: &[ByMail],
    ) -> Vec<RecipientResponse> {
        let shared = RequestMail::read(request);
        let composed = join_all(recipients.iter().map(|m| self.compose(request, &shared, m))).await;
        // Those composed go to the mailer together (recorded as sent in one
        // commit); the others keep the answer they already have.
        let mut mails = Vec::new();
        let mut answers: Vec<Option<RecipientResponse>> = composed
            .into_iter()
            .map(|c| match c {
                Ok(mail) => {
                    mails.push(mail);
                    None
                }
                Err(answer) => Some(answer),
            })
            .collect();
        let delivered = self.mailer.deliver(mails, unix_now()).await;
        let mut delivered = delivered.into_iter();
        recipients
            .iter()
            .zip(answers.iter_mut())
            .map(|(m, answer)| {
                answer.take().unwrap_or_else(|| {
                    let (status, description) = delivered
                        .next()
                        .expect("the mailer answers each mail it was given");
                    response(&m.address, status, &format!("{description} ({})", m.why))
                })
            })
            .collect()
    }
}

impl ImipDelivery {
    /// One recipient's mail, or the answer why there is none.
    async fn compose(
        &self,
        request: &SchedulingRequest,
        shared: &RequestMail,
        m: &ByMail,
    ) -> Result<Composed, RecipientResponse> {
        let token = match outbound::token_key(request, &m.address, m.reply_routing) {
            Some(key) => {
                let expires_at = unix_now() + self.config.imip.token_lifetime.as_secs();
                let issued = store::blocking(&self.store, "token_for", move |s| {
                    s.token_for(&key, expires_at)
                });
                Some(issued.await.map_err(|e| {
                    response(
                        &m.address,
                        RequestStatus::service_unavailable(),
                        &format!("reply token: {e}"),
                    )
                })?)
            }
            None => None,
        };
        outbound::compose(&self.config, request, shared, &m.address, token.as_deref()).map_err(
            |e| {
                let status = match e {
                    ComposeError::NotMail(_) => RequestStatus::no_scheduling_support(),
                    _ => RequestStatus::service_unavailable(),
                };
                response(&m.address, status, &e.to_string())
            },
        )
    }
}
