//! The SMTP and LMTP listeners for inbound iMIP, run by Pingora as
//! background services beside the HTTP service.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::config::Config;
use crate::mail::inbound::intake::Intake;
use crate::mail::inbound::listener::{Connections, Limits, Listener, Protocol};

pub struct MailListenerService {
    /// Bound at start-up, so a port in use stops the bridge with an error
    /// instead of leaving it running without its mail listener.
    socket: std::sync::Mutex<Option<std::net::TcpListener>>,
    addr: SocketAddr,
    listener: Listener,
    connections: Connections,
}

impl MailListenerService {
    pub fn bind(
        protocol: Protocol,
        addr: SocketAddr,
        config: &Config,
        intake: Arc<Intake>,
    ) -> std::io::Result<MailListenerService> {
        let socket = std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("mail listener {addr}: {e}")))?;
        socket.set_nonblocking(true)?;
        let tls = match (&config.mail.tls, protocol) {
            (Some((cert, key)), Protocol::Smtp) => Some(acceptor(cert, key)?),
            _ => None,
        };
        let limits = Limits {
            max_message_bytes: config.mail.max_message_bytes,
            max_recipients: config.mail.max_recipients,
            session_timeout: config.mail.session_timeout,
            max_commands: config.mail.max_commands,
            ..Limits::default()
        };
        Ok(MailListenerService {
            socket: std::sync::Mutex::new(Some(socket)),
            addr,
            listener: Listener::new(protocol, limits, config.mail.hostname.clone(), tls, intake),
            connections: Connections {
                total: config.mail.max_connections,
                per_client: config.mail.max_connections_per_client,
            },
        })
    }
}

fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[async_trait]
impl BackgroundService for MailListenerService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.socket.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(socket) = taken.and_then(|s| tokio::net::TcpListener::from_std(s).ok()) else {
            tracing::error!(target: "ischedule::mail", addr = %self.addr, "mail listener socket unusable");
            return;
        };
        tracing::info!(target: "ischedule::mail", addr = %self.addr, "mail listener ready");
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        self.listener.serve(socket, self.connections, stop).await;
    }
}
