//! Requests to receivers through Pingora's pooled HTTP/TLS connector.
//!
//! Only what iSchedule needs: a GET or POST with a small body to one
//! endpoint, the whole answer read into memory up to a bound, every step
//! under a time limit. Redirects and target fail-over are the caller's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::Config;
use crate::discovery::{DnsResolver, Origin, TargetPolicy};
use crate::scheduling::peer_slots::PeerSlots;

/// Idle pooled connections are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Where a request goes: scheme, host (for SNI, certificate and `Host`),
/// port, and whether the admin or DNS named it (which decides the
/// addresses it may resolve to).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub origin: Origin,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'static str,
    pub path_and_query: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub body: Bytes,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request got no answer. `Unreachable` means the next SRV target
/// may be tried: nothing reached the receiver.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("{endpoint} unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} did not answer within {secs:.0} s")]
    Timeout { endpoint: String, secs: f64 },
    #[error("{endpoint}: {reason}")]
    Protocol { endpoint: String, reason: String },
    #[error("{endpoint} answered more than {limit} bytes")]
    TooLarge { endpoint: String, limit: usize },
    /// Every address of a learnt endpoint is one the policy refuses:
    /// nothing was sent.
    #[error("{endpoint} not contacted: {reasons}")]
    Refused { endpoint: String, reasons: String },
    /// All of the endpoint's slots stayed taken for the whole timeout:
    /// nothing was sent.
    #[error("{endpoint} busy: {limit} requests in flight to it for {secs:.0} s (limits.max_requests_per_receiver)")]
    Busy {
        endpoint: String,
        limit: usize,
        secs: f64,
    },
}

impl UpstreamError {
    /// Nothing reached the receiver, so its next target may be tried.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable { .. }
                | UpstreamError::Refused { .. }
                | UpstreamError::Busy { .. }
        )
    }
}

pub struct Upstream {
    connector: Connector,
    slots: PeerSlots<Endpoint>,
    ca: Option<Arc<CaType>>,
    resolver: Arc<DnsResolver>,
    policy: TargetPolicy,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl Upstream {
    pub fn new(config: &Config, resolver: Arc<DnsResolver>) -> Result<Upstream, std::io::Error> {
        let ca = config.tls.ca_file.as_deref().map(trust_store).transpose()?;
        Ok(Upstream {
            // Room for one idle connection per HTTP connection the bridge
            // admits: with Pingora's default of 128, more concurrent POSTs
            // than that close their receiver connections after each answer
            // and open new ones for the next.
            connector: Connector::new(Some(ConnectorOptions::new(config.server.max_connections))),
            slots: PeerSlots::new(config.limits.max_requests_per_receiver),
            ca,
            resolver,
            policy: TargetPolicy::from_config(config),
            connect_timeout: config.timeouts.connect,
            request_timeout: config.timeouts.receiver,
            max_response_bytes: config.limits.max_response_bytes,
        })
    }

    /// Sends to each address of the endpoint's host that the target policy
    /// allows, in turn, until one connects, once one of the endpoint's slots
    /// is free; the wait and the exchange together are bounded by the
    /// receiver timeout. The address checked is the one connected to: the
    /// peer is built from it, so nothing resolves the name again.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        request: &Request<'_>,
    ) -> Result<Response, UpstreamError> {
        let secs = self.request_timeout.as_secs_f64();
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        // Taken before the exchange exists: a waiting request holds neither
        // a connection nor the exchange's state.
        let Ok(_slot) = tokio::time::timeout_at(deadline, self.slots.acquire(endpoint)).await
        else {
            return Err(UpstreamError::Busy {
                endpoint: endpoint.to_string(),
                limit: self.slots.per_peer(),
                secs,
            });
        };
        // Boxed: the exchange's state (Pingora's client session, its
        // timers) runs to several KiB, and unboxed it would be part of every
        // future awaiting this one, each of which async_trait moves to the
        // heap, copying it whole, even when no request is sent at all (a
        // cached capabilities document). bench/PROFILE.md has the numbers.
        match tokio::time::timeout_at(deadline, Box::pin(self.send_any_address(endpoint, request)))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout {
                endpoint: endpoint.to_string(),
                secs,
            }),
        }
    }

    async fn send_any_address(
        &self,
        endpoint: &Endpoint,
        request: &Request<'_>,
    ) -> Result<Response, UpstreamError> {
        let unreachable = |reason: String| UpstreamError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let ips = self
            .resolver
            .ips(&endpoint.host)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if ips.is_empty() {
            return Err(unreachable(format!(
                "{} has no address record",
                endpoint.host
            )));
        }
        let mut last = None;
        let mut refused = Vec::new();
        for ip in ips {
            let addr = SocketAddr::new(ip, endpoint.port);
            if let Err(refusal) = self.policy.check(endpoint.origin, addr) {
                refused.push(refusal.to_string());
                continue;
            }
            let peer = self.peer(endpoint, addr);
            match self.exchange(endpoint, &peer, request).await {
                Err(e) if e.is_unreachable() => last = Some(e),
                other => return other,
            }
        }
        if !refused.is_empty() {
            tracing::warn!(target: "ischedule::upstream", endpoint = %endpoint, refused = %refused.join("; "), "learnt address refused");
        }
        Err(last.unwrap_or_else(|| UpstreamError::Refused {
            endpoint: endpoint.to_string(),
            reasons: refused.join("; "),
        }))
    }

    fn peer(&self, endpoint: &Endpoint, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, endpoint.tls, endpoint.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout * 2);
        peer.options.read_timeout = Some(self.request_timeout);
        peer.options.write_timeout = Some(self.request_timeout);
        peer.options.idle_timeout = Some(POOL_IDLE);
        peer.options.ca = self.ca.clone();
        peer
    }

    /// One request on a pooled connection; a pooled connection the
    /// receiver closed meanwhile is retried once on a fresh one.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        peer: &HttpPeer,
        request: &Request<'_>,
    ) -> Result<Response, UpstreamError> {
        let (session, reused) = self.connect(endpoint, peer).await?;
        match self.round_trip(endpoint, peer, session, request).await {
            Err(RoundTripError::BeforeAnswer(_)) if reused => {
                let (fresh, _) = self.connect(endpoint, peer).await?;
                self.round_trip(endpoint, peer, fresh, request)
                    .await
                    .map_err(RoundTripError::into_inner)
            }
            other => other.map_err(RoundTripError::into_inner),
        }
    }

    /// A pooled connection, or a new one. Pingora's connect (TCP and TLS
    /// handshakes) is boxed: its state, about 9 KiB, would otherwise be part
    /// of the exchange's and stay allocated while the answer is awaited.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        peer: &HttpPeer,
    ) -> Result<(pingora::protocols::http::client::HttpSession, bool), UpstreamError> {
        Box::pin(self.connector.get_http_session(peer))
            .await
            .map_err(|e| UpstreamError::Unreachable {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })
    }

    async fn round_trip(
        &self,
        endpoint: &Endpoint,
        peer: &HttpPeer,
        mut session: pingora::protocols::http::client::HttpSession,
        request: &Request<'_>,
    ) -> Result<Response, RoundTripError> {
        let protocol = |reason: String| UpstreamError::Protocol {
            endpoint: endpoint.to_string(),
            reason,
        };
        let header = request_header(endpoint, request)
            .map_err(|e| RoundTripError::BeforeAnswer(protocol(e.to_string())))?;
        let sent = async {
            session.write_request_header(Box::new(header)).await?;
            session
                .write_request_body(request.body.clone(), true)
                .await?;
            session.finish_request_body().await?;
            session.read_response_header().await
        }
        .await;
        sent.map_err(|e| RoundTripError::BeforeAnswer(protocol(e.to_string())))?;
        let (status, headers) = match session.response_header() {
            Some(h) => (h.status.as_u16(), h.headers.clone()),
            None => {
                return Err(RoundTripError::BeforeAnswer(protocol(
                    "no response header".into(),
                )))
            }
        };
        let mut body = BytesMut::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| RoundTripError::After(protocol(e.to_string())))?
        {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(RoundTripError::After(UpstreamError::TooLarge {
                    endpoint: endpoint.to_string(),
                    limit: self.max_response_bytes,
                }));
            }
            body.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(session, peer, Some(POOL_IDLE))
            .await;
        Ok(Response {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

/// Separates failures a fresh connection could cure from the rest.
enum RoundTripError {
    BeforeAnswer(UpstreamError),
    After(UpstreamError),
}

impl RoundTripError {
    fn into_inner(self) -> UpstreamError {
        match self {
            RoundTripError::BeforeAnswer(e) | RoundTripError::After(e) => e,
        }
    }
}

fn request_header(endpoint: &Endpoint, request: &Request<'_>) -> pingora::Result<RequestHeader> {
    let mut header = RequestHeader::build(request.method, request.path_and_query.as_bytes(), None)?;
    let default_port = if endpoint.tls { 443 } else { 80 };
    let host = if endpoint.port == default_port {
        endpoint.host.clone()
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    };
    header.append_header("Host", host)?;
    for (name, value) in request.headers {
        header.append_header(name.to_string(), value.as_str())?;
    }
    header.append_header("Content-Length", request.body.len().to_string())?;
    Ok(header)
}

/// The system roots plus the configured CA file: Pingora's `ca_file`
/// replaces the roots, but an admin adding a test CA still wants public
/// receivers to verify.
fn trust_store(extra: &std::path::Path) -> Result<Arc<CaType>, std::io::Error> {
    let pem = std::fs::read(extra)?;
    let mut certs = CertificateDer::pem_slice_iter(&pem)
        .map(|der| der.map(|d| WrappedX509::new(d.to_vec(), parse_x509)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", extra.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: no PEM certificate found", extra.display()),
        ));
    }
    // A machine without a system bundle still trusts the configured CA.
    let native = pingora::tls::load_native_certs().unwrap_or_default();
    certs.extend(
        native
            .into_iter()
            .map(|c| WrappedX509::new(c.to_vec(), parse_x509)),
    );
    Ok(Arc::from(certs.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A listener that counts the connections made to it.
    fn counting_listener() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn a_request_finding_every_slot_taken_until_its_timeout_sends_nothing() {
        let config = Config::parse(
            "[limits]\nmax_requests_per_receiver = 1\n[timeouts]\nreceiver_secs = 0.3\n",
            "test",
            std::path::Path::new("."),
        )
        .unwrap();
        let resolver = Arc::new(DnsResolver::new(&config.dns, config.timeouts.dns).unwrap());
        let upstream = Upstream::new(&config, resolver).unwrap();
        let (port, accepted) = counting_listener();
        let endpoint = Endpoint {
            tls: false,
            host: "127.0.0.1".into(),
            port,
            origin: Origin::Configured,
        };
        let request = Request {
            method: "GET",
            path_and_query: "/ischedule?action=capabilities",
            headers: &[],
            body: Bytes::new(),
        };
        let held = upstream.slots.acquire(&endpoint).await;
        let error = upstream.send(&endpoint, &request).await.unwrap_err();
        assert!(
            matches!(error, UpstreamError::Busy { limit: 1, .. }),
            "{error}"
        );
        assert!(error.is_unreachable(), "the next target may be tried");
        assert!(
            error
                .to_string()
                .contains("limits.max_requests_per_receiver"),
            "{error}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing was sent");
        // Once the slot is free the same request goes out.
        drop(held);
        let _ = upstream.send(&endpoint, &request).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
