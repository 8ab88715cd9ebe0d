//! The scheduling core's mail delivery: each recipient's iMIP message is
//! composed ([`crate::imip::outbound`]) and handed to the [`Mailer`], which
//! sends it or queues it durably.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::join_all;

use super::queue::Mailer;
use crate::config::Config;
use crate::imip::outbound::{self, ComposeError};
use crate::imip::summary::Summary;
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
        // Read once for all recipients: the human parts are the same for
        // each. The request's validation has screened the body already.
        let summary = Summary::read_screened(
            &String::from_utf8_lossy(&request.body),
            request.itip.method,
            request.itip.component,
        );
        join_all(recipients.iter().map(|m| self.one(request, &summary, m))).await
    }
}

impl ImipDelivery {
    /// One recipient; the description says why mail was used.
    async fn one(
        &self,
        request: &SchedulingRequest,
        summary: &Summary,
        m: &ByMail,
    ) -> RecipientResponse {
        let token = match outbound::token_key(request, &m.address, m.reply_routing) {
            Some(key) => {
                let expires_at = unix_now() + self.config.imip.token_lifetime.as_secs();
                let issued = store::blocking(&self.store, "token_for", move |s| {
                    s.token_for(&key, expires_at)
                });
                match issued.await {
                    Ok(token) => Some(token),
                    Err(e) => {
                        return response(
                            &m.address,
                            RequestStatus::service_unavailable(),
                            &format!("reply token: {e}"),
                        )
                    }
                }
            }
            None => None,
        };
        let composed =
            match outbound::compose(&self.config, request, summary, &m.address, token.as_deref()) {
                Ok(c) => c,
                Err(e @ ComposeError::NotMail(_)) => {
                    return response(
                        &m.address,
                        RequestStatus::no_scheduling_support(),
                        &e.to_string(),
                    )
                }
                Err(e) => {
                    return response(
                        &m.address,
                        RequestStatus::service_unavailable(),
                        &e.to_string(),
                    )
                }
            };
        let (status, description) = self.mailer.deliver(composed, unix_now()).await;
        response(&m.address, status, &format!("{description} ({})", m.why))
    }
}
