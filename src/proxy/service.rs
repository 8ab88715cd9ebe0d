//! The Pingora HTTP service: iSchedule requests are answered here; anything
//! else is proxied unchanged to the configured origin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Result};
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};

use super::dkim_keys::KeyFetcher;
use super::own_capabilities::OwnCapabilities;
use super::paths::{self, Claim};
use super::senders::{self, Refusal};
use crate::discovery::WELL_KNOWN_PATH;
use crate::dkim;
use crate::ischedule::request::{self, SchedulingRequest};
use crate::ischedule::xml::error_document;
use crate::ischedule::{headers, IsError, Rejection, VERSION};
use crate::mail::outbound::queue_admin;
use crate::metrics::{self, PostOutcome};
use crate::scheduling::sender::{self, Sender};
use crate::scheduling::{unix_now, MailPolicy, Scheduled, Scheduler};
use crate::store;

/// Pingora application state shared by every request.
pub struct BridgeService {
    pub scheduler: Arc<Scheduler>,
    pub own: OwnCapabilities,
    /// Remote signers' public keys, for verifying their requests.
    pub keys: KeyFetcher,
}

/// How long a sender whose key could not be fetched should wait.
const RETRY_AFTER_SECS: u64 = 60;

/// What kind of request this is, decided from method and path alone.
enum Kind {
    /// Queue administration for `ischedule-bridge queue` (local senders only).
    Admin(queue_admin::Action),
    /// One of our own DKIM key records, for verifiers using http/well-known.
    DomainKey(String),
    Capabilities,
    Schedule,
    Options,
    BadMethod,
    BadAction,
    /// In the bridge's own name space but not a resource of it.
    NotFound,
    PassThrough,
}

impl BridgeService {
    fn classify(&self, session: &Session) -> Kind {
        let req = session.req_header();
        let path = paths::normalize(req.uri.path());
        if let Some(action) = queue_admin::Action::from_http(req.method.as_str(), &path) {
            return Kind::Admin(action);
        }
        if let Some(record) = self.domain_key(req.method.as_str(), &path) {
            return Kind::DomainKey(record);
        }
        let receiver = [WELL_KNOWN_PATH, self.scheduler.config.server.path.as_str()]
            .map(|own| paths::claim(&path, own));
        let is_receiver = receiver.contains(&Claim::Exact);
        if req.method == http::Method::OPTIONS && (is_receiver || req.uri == "*") {
            return Kind::Options;
        }
        if !is_receiver {
            // The admin folder is the bridge's as a whole, like the receivers'.
            let admin = queue_admin::ADMIN_PATH
                .rsplit_once('/')
                .map_or(queue_admin::ADMIN_PATH, |(folder, _)| folder);
            let ours = receiver.contains(&Claim::Near) || paths::claim(&path, admin) != Claim::None;
            return if ours {
                Kind::NotFound
            } else {
                Kind::PassThrough
            };
        }
        match req.method {
            http::Method::POST => Kind::Schedule,
            http::Method::GET | http::Method::HEAD => {
                let capabilities = req.uri.query().is_some_and(|q| {
                    q.split('&')
                        .any(|kv| kv.eq_ignore_ascii_case("action=capabilities"))
                });
                if capabilities {
                    Kind::Capabilities
                } else {
                    Kind::BadAction
                }
            }
            _ => Kind::BadMethod,
        }
    }

    /// `GET /.well-known/domainkey/<domain>/<selector>` for a configured key;
    /// other keys' paths are left to the origin, which may publish its own.
    fn domain_key(&self, method: &str, path: &str) -> Option<String> {
        if !matches!(method, "GET" | "HEAD") {
            return None;
        }
        let (domain, selector) = path
            .strip_prefix(dkim::WELL_KNOWN_PREFIX)?
            .split_once('/')?;
        self.scheduler
            .config
            .dkim
            .keys
            .iter()
            .find(|k| {
                k.domain.eq_ignore_ascii_case(domain) && k.selector.eq_ignore_ascii_case(selector)
            })
            .map(|k| k.key.public_key().record())
    }

    /// Headers every iSchedule response carries (spec 9.1, 9.2).
    fn response(&self, status: u16) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(status, Some(6))?;
        resp.insert_header(headers::ISCHEDULE_VERSION, VERSION)?;
        resp.insert_header(
            headers::ISCHEDULE_CAPABILITIES,
            self.own.serial().to_string(),
        )?;
        Ok(resp)
    }

    async fn send(
        &self,
        session: &mut Session,
        mut resp: ResponseHeader,
        content_type: &str,
        body: Bytes,
    ) -> Result<()> {
        let head_only = session.req_header().method == http::Method::HEAD;
        resp.insert_header("Content-Type", content_type)?;
        resp.insert_header("Content-Length", body.len().to_string())?;
        session
            .write_response_header(Box::new(resp), head_only || body.is_empty())
            .await?;
        if !head_only && !body.is_empty() {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    async fn send_xml(&self, session: &mut Session, status: u16, xml: String) -> Result<()> {
        let mut resp = self.response(status)?;
        resp.insert_header("Cache-Control", "no-cache, no-transform")?;
        self.send(
            session,
            resp,
            "application/xml; charset=utf-8",
            Bytes::from(xml),
        )
        .await
    }

    async fn reject(&self, session: &mut Session, rejection: &Rejection) -> Result<()> {
        self.send_xml(
            session,
            rejection.error.http_status(),
            error_document(rejection),
        )
        .await
    }

    /// 503 with Retry-After: the sender's key could not be fetched, so
    /// nothing was decided about the request.
    async fn try_later(&self, session: &mut Session, why: &str) -> Result<()> {
        let mut resp = self.response(503)?;
        resp.insert_header("Retry-After", RETRY_AFTER_SECS.to_string())?;
        resp.insert_header("Cache-Control", "no-cache")?;
        let body = Bytes::from(format!("DKIM verification could not finish: {why}\n"));
        self.send(session, resp, "text/plain; charset=utf-8", body)
            .await
    }

    async fn capabilities(&self, session: &mut Session) -> Result<()> {
        let not_modified = session
            .req_header()
            .headers
            .get_all("If-None-Match")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == self.own.etag
            });
        let mut resp = self.response(if not_modified { 304 } else { 200 })?;
        resp.insert_header("ETag", self.own.etag.as_str())?;
        resp.insert_header("Cache-Control", "max-age=300")?;
        if not_modified {
            session.write_response_header(Box::new(resp), true).await
        } else {
            let body = Bytes::from(self.own.xml.clone());
            self.send(session, resp, "application/xml; charset=utf-8", body)
                .await
        }
    }

    async fn admin(&self, session: &mut Session, action: queue_admin::Action) -> Result<()> {
        let config = &self.scheduler.config;
        let sender = senders::classify(config, client_ip(session), &session.req_header().headers);
        let (status, body) = match sender {
            Sender::Local { .. } => {
                let now = unix_now();
                let done = store::blocking(&self.scheduler.store, "queue", move |s| {
                    queue_admin::run(s, action, now)
                });
                match done.await {
                    Ok(answer @ queue_admin::Answer::Done { done: false, .. }) => {
                        (404, serde_json::to_string(&answer).unwrap_or_default())
                    }
                    Ok(answer) => (200, serde_json::to_string(&answer).unwrap_or_default()),
                    Err(e) => (
                        500,
                        serde_json::json!({ "error": format!("{e:#}") }).to_string(),
                    ),
                }
            }
            _ => (
                403,
                r#"{"error":"queue administration is for local senders only"}"#.to_string(),
            ),
        };
        let resp = ResponseHeader::build(status, Some(2))?;
        self.send(session, resp, "application/json", Bytes::from(body))
            .await
    }

    async fn schedule(&self, session: &mut Session) -> Result<()> {
        let started = Instant::now();
        let config = &self.scheduler.config;
        let body = match read_body(
            session,
            config.limits.max_content_length,
            config.timeouts.request,
        )
        .await
        {
            Ok(body) => body,
            Err(rejection) => {
                // The rest of the body was not read: the connection cannot be reused.
                session.set_keepalive(None);
                log_rejection(session, &rejection, started);
                return self.reject(session, &rejection).await;
            }
        };
        let own = &self.own.capabilities;
        let request = match request::validate(&session.req_header().headers, body, own) {
            Ok(r) => r,
            Err(rejection) => {
                log_rejection(session, &rejection, started);
                return self.reject(session, &rejection).await;
            }
        };
        let peer = client_ip(session);
        let headers = &session.req_header().headers;
        let sender = senders::classify(config, peer, headers);
        // The no-open-relay rules first: they need no key lookup, and a
        // signature would not lift them.
        if let Err(rejection) = sender::authorize(config, &sender, &request) {
            log_rejection(session, &rejection, started);
            return self.reject(session, &rejection).await;
        }
        let sender = if sender.is_local() {
            sender
        } else {
            match senders::verify(config, headers, &request, &self.keys, unix_now()).await {
                Ok(verified) => verified,
                Err(Refusal::Rejected(rejection)) => {
                    log_rejection(session, &rejection, started);
                    return self.reject(session, &rejection).await;
                }
                Err(Refusal::TryLater(why)) => {
                    tracing::info!(target: "ischedule::post", originator = %request.originator, why = %why, "deferred: DKIM key unavailable");
                    return self.try_later(session, &why).await;
                }
            }
        };
        let mut scheduled = self.scheduler.schedule(&request, MailPolicy::PerMode).await;
        scheduled.disclose_to(&sender);
        log_post(&request, &sender, &scheduled, started);
        metrics::get().post(if scheduled.repeated {
            PostOutcome::Repeated
        } else {
            PostOutcome::Scheduled
        });
        self.send_xml(session, 200, scheduled.response.to_xml())
            .await
    }
}

#[async_trait]
impl ProxyHttp for BridgeService {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        match self.classify(session) {
            Kind::PassThrough if self.scheduler.config.server.origin.is_some() => return Ok(false),
            Kind::PassThrough => {
                let resp = ResponseHeader::build(404, Some(2))?;
                let body =
                    Bytes::from_static(b"not an iSchedule resource, and no origin is configured\n");
                self.send(session, resp, "text/plain; charset=utf-8", body)
                    .await?;
            }
            Kind::Options => {
                let mut resp = self.response(200)?;
                resp.insert_header("Allow", "GET, HEAD, POST, OPTIONS")?;
                resp.insert_header("Content-Length", "0")?;
                session.write_response_header(Box::new(resp), true).await?;
            }
            Kind::BadMethod => {
                let mut resp = self.response(405)?;
                resp.insert_header("Allow", "GET, HEAD, POST, OPTIONS")?;
                let body = Bytes::from_static(
                    b"iSchedule receivers take GET ?action=capabilities and POST\n",
                );
                self.send(session, resp, "text/plain; charset=utf-8", body)
                    .await?;
            }
            Kind::NotFound => {
                let resp = self.response(404)?;
                let body = Bytes::from_static(
                    b"not an iSchedule resource: the receiver is at /.well-known/ischedule\n",
                );
                self.send(session, resp, "text/plain; charset=utf-8", body)
                    .await?;
            }
            Kind::BadAction => {
                let resp = self.response(400)?;
                let body =
                    Bytes::from_static(b"unknown action: GET supports ?action=capabilities only\n");
                self.send(session, resp, "text/plain; charset=utf-8", body)
                    .await?;
            }
            Kind::DomainKey(record) => {
                let resp = ResponseHeader::build(200, Some(2))?;
                let body = Bytes::from(record + "\n");
                self.send(session, resp, "text/plain; charset=utf-8", body)
                    .await?;
            }
            Kind::Capabilities => self.capabilities(session).await?,
            Kind::Admin(action) => self.admin(session, action).await?,
            Kind::Schedule => self.schedule(session).await?,
        }
        Ok(true)
    }

    /// The shared secret proves a local sender to the bridge; it is never
    /// the origin's to see.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_request.remove_header(self.scheduler.config.senders.secret_header.as_str());
        Ok(())
    }

    /// Pass-through answers lose the origin's hop-by-hop `Upgrade` offer
    /// (it belongs to the origin's connection, not ours) and its `Alt-Svc`,
    /// which would point clients past the bridge at the origin's own port.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        if upstream_response.status != 101 {
            upstream_response.remove_header("Upgrade");
        }
        upstream_response.remove_header("Alt-Svc");
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let origin = self
            .scheduler
            .config
            .server
            .origin
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no origin configured"))?;
        let host = origin
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = origin.port_or_known_default().unwrap_or(80);
        let ip = self
            .scheduler
            .resolver
            .ips(host)
            .await
            .ok()
            .and_then(|ips| ips.first().copied())
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("origin host {host} has no address"),
                )
            })?;
        let tls = origin.scheme() == "https";
        Ok(Box::new(HttpPeer::new(
            SocketAddr::new(ip, port),
            tls,
            host.to_string(),
        )))
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The most [`read_body`] allocates ahead on a client's declared length.
const BODY_PREALLOCATION: u64 = 64 * 1024;

/// Reads the whole body, never more than `max` bytes (spec 10.2.1.7): a
/// declared length over the limit is refused before reading anything.
async fn read_body(
    session: &mut Session,
    max: u64,
    limit: std::time::Duration,
) -> Result<Bytes, Rejection> {
    let too_large = |n: String| {
        Rejection::new(
            IsError::MaxContentLength,
            format!("the calendar data is {n} bytes; at most {max} are accepted"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max) {
        return Err(too_large(n.to_string()));
    }
    let read = async {
        // A small body usually arrives as one chunk: kept as it is, without
        // a copy. Only a second chunk starts a buffer, sized for the
        // declared length (bounded, since the length is the client's word).
        let mut first: Option<Bytes> = None;
        let mut body = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    let so_far = first.as_ref().map_or(body.len(), Bytes::len);
                    if (so_far + chunk.len()) as u64 > max {
                        return Err(too_large(format!("more than {max}")));
                    }
                    if let Some(head) = first.take() {
                        let expected = declared.unwrap_or(0).min(BODY_PREALLOCATION) as usize;
                        body.reserve(expected.max(head.len() + chunk.len()));
                        body.extend_from_slice(&head);
                        body.extend_from_slice(&chunk);
                    } else if body.is_empty() {
                        first = Some(chunk);
                    } else {
                        body.extend_from_slice(&chunk);
                    }
                }
                Ok(None) => return Ok(first.unwrap_or_else(|| body.freeze())),
                Err(e) => {
                    return Err(Rejection::new(
                        IsError::InvalidCalendarData,
                        format!("the request body could not be read: {e}"),
                    ))
                }
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
        Err(Rejection::new(
            IsError::InvalidCalendarData,
            format!(
                "the request body did not arrive within {:.0} s",
                limit.as_secs_f64()
            ),
        ))
    })
}

fn log_post(request: &SchedulingRequest, sender: &Sender, scheduled: &Scheduled, started: Instant) {
    tracing::info!(
        target: "ischedule::post",
        message_id = request.message_id.as_deref().unwrap_or("-"),
        originator = %request.originator,
        method = %request.itip.method,
        component = %request.itip.component,
        sender = %sender,
        repeated = scheduled.repeated,
        recipients = %serde_json::to_string(&scheduled.log).unwrap_or_default(),
        duration_ms = started.elapsed().as_millis() as u64,
        "scheduled"
    );
}

fn log_rejection(session: &Session, rejection: &Rejection, started: Instant) {
    metrics::get().post(PostOutcome::Rejected);
    let h = &session.req_header().headers;
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    tracing::info!(
        target: "ischedule::post",
        message_id = header(headers::ISCHEDULE_MESSAGE_ID),
        originator = header(headers::ORIGINATOR),
        client = ?client_ip(session),
        error = rejection.error.element(),
        why = %rejection.description,
        duration_ms = started.elapsed().as_millis() as u64,
        "rejected"
    );
}
