//! The admin listener (`server.admin_listen`): Prometheus metrics, and the
//! health checks a load balancer or an orchestrator asks. Kept off the
//! iSchedule listeners so that it can stay on a loopback or management
//! address while those face the internet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics;
use crate::scheduling::unix_now;
use crate::store::handover::HandoverState;
use crate::store::{Handover, Store};

/// How long one readiness probe of a listener or the store may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct AdminApp {
    pub store: Arc<dyn Store>,
    /// After `--upgrade`, until the old process let go of the store.
    pub handover: Option<Arc<Handover>>,
    /// Every listener the bridge serves on, HTTP and mail.
    pub listeners: Vec<SocketAddr>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => {
                self.read_queue().await;
                answer(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics::get().render(),
                )
            }
            // The process answers: that is all liveness means.
            "/healthz" => answer(StatusCode::OK, "text/plain", "alive\n".into()),
            "/readyz" => match self.unready().await {
                None => answer(StatusCode::OK, "text/plain", "ready\n".into()),
                Some(why) => answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                ),
            },
            _ => answer(
                StatusCode::NOT_FOUND,
                "text/plain",
                "the admin listener serves /metrics, /healthz and /readyz\n".into(),
            ),
        }
    }
}

impl AdminApp {
    /// The queue gauges, read when scraped so they are never stale. A
    /// store that does not answer leaves them as last read: `/readyz`
    /// is where that shows.
    async fn read_queue(&self) {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || store.queue_summary());
        if let Ok(Ok(Ok(summary))) = tokio::time::timeout(PROBE_TIMEOUT, read).await {
            let age = summary
                .oldest_queued_at
                .map_or(0, |at| unix_now().saturating_sub(at));
            metrics::get().queue(summary.messages, age);
        }
    }

    /// Why the bridge cannot take traffic yet: a listener that does not
    /// accept, or a store that does not answer.
    async fn unready(&self) -> Option<String> {
        for listener in &self.listeners {
            let probe = tokio::net::TcpStream::connect(reachable(*listener));
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Some(format!("listener {listener}: {e}")),
                Err(_) => return Some(format!("listener {listener}: no answer")),
            }
        }
        if let Some(handover) = self.handover.clone() {
            // Asked without waiting: a probe must not wait for the handover.
            match tokio::task::spawn_blocking(move || handover.state()).await {
                Ok(Ok(HandoverState::Open)) => {}
                Ok(Ok(HandoverState::Released)) => {
                    return Some("store: handed over to the new process".into())
                }
                Ok(Ok(HandoverState::Waiting { waited, timeout })) => {
                    return Some(format!(
                    "store: waiting for the previous process to let go of it ({} of at most {} s)",
                    waited.as_secs(),
                    timeout.as_secs()
                ))
                }
                Ok(Err(e)) => return Some(format!("store: {e}")),
                Err(e) => return Some(format!("store: {e}")),
            }
        }
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || store.next_due());
        match tokio::time::timeout(PROBE_TIMEOUT, read).await {
            Ok(Ok(Ok(_))) => None,
            Ok(Ok(Err(e))) => Some(format!("store: {e}")),
            Ok(Err(e)) => Some(format!("store: {e}")),
            Err(_) => Some("store: no answer".into()),
        }
    }
}

/// A wildcard listener is probed on loopback.
fn reachable(listener: SocketAddr) -> SocketAddr {
    let ip = match listener.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listener.port())
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body)
        .unwrap_or_default()
}
