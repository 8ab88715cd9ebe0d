//! The receivers' client: the scheduling core's native delivery over HTTP
//! (spec 5.1). Fetches and caches capabilities, POSTs each part, follows
//! redirects without turning POST into GET, fails over across SRV targets,
//! and turns whatever a receiver answers into one status per recipient.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rng;
use url::Url;

use super::upstream::{Endpoint, Request, Response, Upstream, UpstreamError};
use crate::config::Config;
use crate::discovery::capability_cache::{
    freshness, CachedCapabilities, CapabilityCache, Unreadable,
};
use crate::discovery::srv;
use crate::discovery::{CapabilityOutcome, Origin};
use crate::dkim::{self, Signer};
use crate::ischedule::capabilities::Capabilities;
use crate::ischedule::headers;
use crate::ischedule::request::SchedulingRequest;
use crate::ischedule::xml::{parse_error_document, RecipientResponse, ScheduleResponse};
use crate::ischedule::{IsError, RequestStatus, StatusCode};
use crate::itip::CalAddress;
use crate::metrics::{self, ReceiverRequest};
use crate::routing::{Receiver, Target};
use crate::scheduling::{unix_now, Author, Contact, Delivered, Failure, NativeDelivery};

/// One place a receiver can be reached: endpoint plus request path.
#[derive(Debug, Clone)]
pub struct Location {
    pub endpoint: Endpoint,
    pub path: String,
}

impl Location {
    fn url(&self) -> String {
        format!("{}{}", self.endpoint, self.path)
    }

    /// A URL this location led to (a redirect, a cached answer): on the same
    /// host it is as trusted as this location; a host the receiver named
    /// is learnt, whatever named the receiver.
    fn derive(&self, url: &Url) -> Option<Location> {
        let same_host = url.host_str().is_some_and(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(&self.endpoint.host)
        });
        let origin = if same_host {
            self.endpoint.origin
        } else {
            Origin::Learnt
        };
        location_of(url, origin)
    }
}

pub struct Forwarder {
    pub upstream: Upstream,
    pub capabilities: CapabilityCache,
    pub config: Arc<Config>,
}

impl Forwarder {
    /// The order in which to try a receiver's locations for one attempt.
    pub fn locations(receiver: &Receiver) -> Vec<Location> {
        match &receiver.target {
            Target::Url { url } => location_of(url, Origin::Configured).into_iter().collect(),
            Target::Srv { service } => srv::order(&service.records, &mut rng())
                .into_iter()
                .map(|r| Location {
                    endpoint: Endpoint {
                        tls: true,
                        host: r.target,
                        port: r.port,
                        origin: Origin::Learnt,
                    },
                    path: service.path.clone(),
                })
                .collect(),
        }
    }

    /// Capabilities from the first location that answers, and the location
    /// that finally answered (after redirects), where POSTs then go directly.
    pub async fn capabilities_any(
        &self,
        id: &str,
        locations: &[Location],
    ) -> Result<(CapabilityOutcome, Location), UpstreamError> {
        let mut last = None;
        for location in locations {
            match self.capabilities_at(id, location).await {
                Ok(found) => return Ok(found),
                Err(e) if e.is_unreachable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| UpstreamError::Unreachable {
            endpoint: id.to_string(),
            reason: "no usable SRV target".into(),
        }))
    }

    async fn capabilities_at(
        &self,
        id: &str,
        location: &Location,
    ) -> Result<(CapabilityOutcome, Location), UpstreamError> {
        let now = Instant::now();
        let derived = |url: &str| {
            Url::parse(url)
                .ok()
                .and_then(|u| location.derive(&u))
                .unwrap_or_else(|| location.clone())
        };
        let cached = self.capabilities.get(id);
        let fresh = cached.as_ref().filter(|c| c.is_fresh(now));
        let unreadable = fresh
            .is_none()
            .then(|| self.capabilities.unreadable(id, now))
            .flatten();
        metrics::get().capability_cache(fresh.is_some() || unreadable.is_some());
        if let Some(c) = fresh {
            let at = derived(&c.url);
            let outcome = CapabilityOutcome::Known {
                capabilities: Box::new(c.capabilities.clone()),
                from: at.url(),
            };
            return Ok((outcome, at));
        }
        if let Some(u) = unreadable {
            return Ok((CapabilityOutcome::Unknown { why: u.why }, derived(&u.url)));
        }
        let mut request_headers = vec![(
            headers::ISCHEDULE_VERSION,
            crate::ischedule::VERSION.to_string(),
        )];
        if let Some(etag) = cached.as_ref().and_then(|c| c.etag.clone()) {
            request_headers.push(("If-None-Match", etag));
        }
        let path = format!("{}?action=capabilities", location.path);
        let (response, at) = timed(
            ReceiverRequest::Capabilities,
            self.send_following(location, "GET", &path, &request_headers, Bytes::new()),
        )
        .await?;
        let cap = self.config.dns.max_ttl;
        let fresh_until = Instant::now() + freshness(response.header("Cache-Control"), cap);
        let known = |capabilities: Capabilities| CapabilityOutcome::Known {
            capabilities: Box::new(capabilities),
            from: at.url(),
        };
        let outcome = match (response.status, cached) {
            (304, Some(mut c)) => {
                c.fresh_until = fresh_until;
                self.capabilities.put(id, c.clone());
                known(c.capabilities)
            }
            (200, _) => match Capabilities::parse(&response.body) {
                Ok(capabilities) => {
                    let entry = CachedCapabilities {
                        capabilities: capabilities.clone(),
                        etag: response.header("ETag").map(str::to_string),
                        url: at.url(),
                        fresh_until,
                    };
                    self.capabilities.put(id, entry);
                    known(capabilities)
                }
                Err(e) => CapabilityOutcome::Unknown {
                    why: format!(
                        "{} answered an unreadable capabilities document: {e}",
                        at.url()
                    ),
                },
            },
            (status, _) => CapabilityOutcome::Unknown {
                why: format!(
                    "{} answered HTTP {status} to the capabilities request",
                    at.url()
                ),
            },
        };
        if let CapabilityOutcome::Unknown { why } = &outcome {
            let until = Instant::now() + self.config.unreadable_capabilities_retry;
            let entry = Unreadable {
                why: why.clone(),
                url: at.url(),
                until,
            };
            self.capabilities.put_unreadable(id, entry);
        }
        Ok((outcome, at))
    }

    /// POSTs one part to the first location that can be reached.
    async fn post_part(
        &self,
        request: &SchedulingRequest,
        id: &str,
        locations: &[Location],
        part: &[CalAddress],
        body: Bytes,
    ) -> Vec<Delivered> {
        let recipient_list = part
            .iter()
            .map(CalAddress::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut request_headers = vec![
            (
                headers::ISCHEDULE_VERSION,
                crate::ischedule::VERSION.to_string(),
            ),
            (headers::ORIGINATOR, request.originator.as_str().to_string()),
            (headers::RECIPIENT, recipient_list),
            ("Content-Type", request.content_type.clone()),
            ("Cache-Control", "no-cache, no-transform".to_string()),
        ];
        if let Some(id) = &request.message_id {
            request_headers.push((headers::ISCHEDULE_MESSAGE_ID, id.clone()));
        }
        if let Some(signature) = self.signature(request, &request_headers, &body) {
            request_headers.push((dkim::HEADER, signature));
        }
        let mut last = None;
        for location in locations {
            let post = self.send_following(
                location,
                "POST",
                &location.path,
                &request_headers,
                body.clone(),
            );
            match timed(ReceiverRequest::Post, post).await {
                Ok((response, at)) => {
                    if let Some(serial) = response
                        .header(headers::ISCHEDULE_CAPABILITIES)
                        .and_then(|s| s.trim().parse().ok())
                    {
                        self.capabilities.note_serial(id, serial);
                    }
                    return map_answer(part, &response, &at.url());
                }
                Err(e) if e.is_unreachable() => last = Some(e),
                Err(e) => return unreachable(&e).for_all(part),
            }
        }
        let e = last.unwrap_or_else(|| UpstreamError::Unreachable {
            endpoint: id.to_string(),
            reason: "no usable SRV target".into(),
        });
        unreachable(&e).for_all(part)
    }

    /// The `DKIM-Signature` for a POST, when the originator's domain has a
    /// key. Signing cannot fail with a key that loaded; should it, the POST
    /// goes unsigned and the receiver decides.
    fn signature(
        &self,
        request: &SchedulingRequest,
        request_headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Option<String> {
        let key = self.config.signing_key(&request.originator.domain()?)?;
        let signer = Signer {
            domain: &key.domain,
            selector: &key.selector,
            key: &key.key,
            methods: &key.methods,
            lifetime: self.config.dkim.lifetime,
        };
        let view: Vec<(&str, &[u8])> = request_headers
            .iter()
            .map(|(n, v)| (*n, v.as_bytes()))
            .collect();
        signer
            .sign(&view, body, unix_now())
            .map_err(|e| tracing::warn!(target: "ischedule::post", domain = %key.domain, error = %e, "DKIM signing failed; sending unsigned"))
            .ok()
    }

    /// Sends and follows 301/302/307/308 with the same method and body
    /// (the well-known URI commonly redirects, spec 6.3), at most
    /// `limits.max_redirects` times. Returns the answer and where it came from.
    async fn send_following(
        &self,
        start: &Location,
        method: &'static str,
        path: &str,
        request_headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<(Response, Location), UpstreamError> {
        let mut location = start.clone();
        let mut path = path.to_string();
        for _ in 0..=self.config.limits.max_redirects {
            let request = Request {
                method,
                path_and_query: &path,
                headers: request_headers,
                body: body.clone(),
            };
            let response = self.upstream.send(&location.endpoint, &request).await?;
            if !matches!(response.status, 301 | 302 | 307 | 308) {
                return Ok((response, location));
            }
            let target = response
                .header("Location")
                .and_then(|l| Url::parse(&location.url()).ok()?.join(l).ok())
                .ok_or_else(|| UpstreamError::Protocol {
                    endpoint: location.url(),
                    reason: format!(
                        "HTTP {} redirect without a usable Location",
                        response.status
                    ),
                })?;
            let next = location
                .derive(&target)
                .ok_or_else(|| UpstreamError::Protocol {
                    endpoint: location.url(),
                    reason: format!("redirect to unsupported URL {target}"),
                })?;
            if location.endpoint.tls && !next.endpoint.tls {
                return Err(UpstreamError::Protocol {
                    endpoint: location.url(),
                    reason: format!("refusing redirect from HTTPS to {target}"),
                });
            }
            path = match target.query() {
                Some(q) => format!("{}?{q}", next.path),
                None => next.path.clone(),
            };
            location = next;
        }
        Err(UpstreamError::Protocol {
            endpoint: start.url(),
            reason: format!("more than {} redirects", self.config.limits.max_redirects),
        })
    }
}

/// The receivers' client as the scheduling core's native delivery.
#[async_trait]
impl NativeDelivery for Forwarder {
    async fn contact(&self, receiver: &Receiver) -> Result<Contact, Failure> {
        let locations = Forwarder::locations(receiver);
        let (capabilities, location) = self
            .capabilities_any(&receiver.id, &locations)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(Contact {
            capabilities,
            at: location.url(),
        })
    }

    async fn post(
        &self,
        request: &SchedulingRequest,
        receiver: &Receiver,
        contact: &Contact,
        recipients: &[CalAddress],
        body: Bytes,
    ) -> Vec<Delivered> {
        // Where the capabilities answered first, then the other targets.
        let locations = Forwarder::locations(receiver);
        let answered = Url::parse(&contact.at)
            .ok()
            .zip(locations.first())
            .and_then(|(u, first)| first.derive(&u));
        let others = locations
            .into_iter()
            .filter(|l| answered.as_ref().is_none_or(|a| a.endpoint != l.endpoint));
        let ordered: Vec<Location> = answered.clone().into_iter().chain(others).collect();
        self.post_part(request, &receiver.id, &ordered, recipients, body)
            .await
    }
}

/// Runs one request to a receiver, redirects included, into the latency
/// histogram: failures too, as a receiver that times out is what an
/// operator most needs to see.
async fn timed<T>(request: ReceiverRequest, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = work.await;
    metrics::get().receiver_request(request, started.elapsed().as_secs_f64());
    result
}

fn location_of(url: &Url, origin: Origin) -> Option<Location> {
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    Some(Location {
        endpoint: Endpoint {
            tls,
            host: url
                .host_str()?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port_or_known_default()?,
            origin,
        },
        path: url.path().to_string(),
    })
}

/// What the receivers' client could not do, as the recipients' status.
fn unreachable(e: &UpstreamError) -> Failure {
    Failure::unreachable(format!("receiver not reached: {e}"))
}

/// A receiver's responses by the address they name, each parsed once (a
/// search per recipient would parse n × n addresses for an n-recipient
/// part); the first response for an address counts, as a search would find.
fn responses_by_recipient(
    responses: &[RecipientResponse],
) -> HashMap<CalAddress, &RecipientResponse> {
    let mut by_recipient = HashMap::with_capacity(responses.len());
    for response in responses {
        if let Ok(address) = CalAddress::parse(&response.recipient) {
            by_recipient.entry(address).or_insert(response);
        }
    }
    by_recipient
}

/// A receiver's answer, one response per recipient of the part.
fn map_answer(part: &[CalAddress], response: &Response, at: &str) -> Vec<Delivered> {
    if response.status == 200 {
        return match ScheduleResponse::parse(&response.body) {
            Ok(answer) => {
                let by_recipient = responses_by_recipient(&answer.responses);
                part.iter()
                    .map(|r| {
                        by_recipient
                            .get(r)
                            .map(|&a| Delivered {
                                response: RecipientResponse {
                                    recipient: r.as_str().to_string(),
                                    ..a.clone()
                                },
                                fallback: false,
                                author: Author::Receiver,
                            })
                            .unwrap_or_else(|| {
                                let failure = Failure {
                                    status: RequestStatus::service_unavailable(),
                                    description: format!(
                                    "the receiver at {at} returned no status for this recipient"
                                ),
                                    fallback: false,
                                };
                                failure.for_all(std::slice::from_ref(r)).remove(0)
                            })
                    })
                    .collect()
            }
            Err(e) => Failure {
                status: RequestStatus::service_unavailable(),
                description: format!("unreadable schedule-response from {at}: {e}"),
                fallback: false,
            }
            .for_all(part),
        };
    }
    let document = parse_error_document(&response.body).ok();
    let element = document.as_ref().and_then(|d| d.element.clone());
    let detail = match &document {
        Some(d) => format!(
            "{}{}",
            element.as_deref().unwrap_or("error"),
            d.description
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ),
        None => "no iSchedule error document".into(),
    };
    let status = match element.as_deref().and_then(IsError::from_element) {
        Some(IsError::OriginatorDenied | IsError::VerificationFailed) => {
            RequestStatus::new(StatusCode::NO_AUTHORITY, "No authority")
        }
        Some(IsError::RecipientMissing | IsError::RecipientMismatch) => {
            RequestStatus::invalid_user()
        }
        _ => RequestStatus::service_unavailable(),
    };
    Failure {
        status,
        description: format!(
            "the receiver at {at} answered HTTP {}: {detail}",
            response.status
        ),
        fallback: response.status >= 500,
    }
    .for_all(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(list: &[&str]) -> Vec<CalAddress> {
        list.iter().map(|a| CalAddress::parse(a).unwrap()).collect()
    }

    fn answer(body: &str) -> Response {
        Response {
            status: 200,
            headers: Default::default(),
            body: Bytes::from(format!(
                r#"<?xml version="1.0" encoding="utf-8"?><schedule-response xmlns="urn:ietf:params:xml:ns:ischedule">{body}</schedule-response>"#
            )),
        }
    }

    fn one(recipient: &str, status: &str) -> String {
        format!("<response><recipient>{recipient}</recipient><request-status>{status}</request-status></response>")
    }

    #[test]
    fn each_recipient_gets_its_own_response_in_request_order() {
        let part = addresses(&["mailto:a@x.test", "mailto:B@X.test", "mailto:c@x.test"]);
        let body = [
            one("mailto:c@x.test", "3.7;Invalid calendar user"),
            one("mailto:b@x.test", "2.0;Success"),
            one("mailto:b@x.test", "5.1;Service unavailable"),
        ]
        .concat();
        let got = map_answer(&part, &answer(&body), "receiver.test");
        let statuses: Vec<_> = got.iter().map(|d| d.response.status.to_string()).collect();
        assert_eq!(
            statuses,
            [
                "5.1;Service unavailable",
                "2.0;Success",
                "3.7;Invalid calendar user"
            ]
        );
        // The sender's spelling comes back, however the receiver wrote it.
        assert_eq!(got[1].response.recipient, "mailto:B@X.test");
        assert_eq!(got[1].author, Author::Receiver);
        assert_eq!(
            got[0].response.description.as_deref(),
            Some("the receiver at receiver.test returned no status for this recipient")
        );
    }

    #[test]
    fn responses_for_recipients_not_asked_about_are_ignored() {
        let part = addresses(&["mailto:a@x.test"]);
        let body: String = (0..100)
            .map(|i| one(&format!("mailto:u{i}@x.test"), "2.0;Success"))
            .chain([one("mailto:a@x.test", "2.0;Success")])
            .collect();
        let got = map_answer(&part, &answer(&body), "receiver.test");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].response.status, RequestStatus::success());
    }
}
