//! The SMTP and LMTP listeners for inbound iMIP as Pingora listening
//! services beside the HTTP service.
//!
//! Pingora owns their sockets, as it owns the HTTP ones: it binds them (or,
//! started with `--upgrade`, receives them from the old process over
//! `server.upgrade_sock`) and hands them to the next process on SIGQUIT.
//! So an upgrade never closes a mail port: connections queued in its
//! backlog are accepted by whichever process is still accepting, and
//! nothing is refused. Each accepted connection goes to the transport-
//! neutral [`Listener`], which enforces the connection caps, speaks SMTP or
//! LMTP (STARTTLS included) and, when Pingora's shutdown watch turns, lets
//! the sessions in progress finish (see [`Listener::serve_connection`]).

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::config::Config;
use crate::mail::inbound::intake::Intake;
use crate::mail::inbound::listener::{Connections, Limits, Listener, Protocol};
use crate::proxy::in_flight::InFlight;

/// One mail listener: its address and the protocol server behind it.
pub struct MailApp {
    addr: SocketAddr,
    listener: Listener,
    in_flight: InFlight,
}

impl MailApp {
    pub fn new(
        protocol: Protocol,
        addr: SocketAddr,
        config: &Config,
        intake: Arc<Intake>,
        in_flight: InFlight,
    ) -> std::io::Result<MailApp> {
        let tls = match (&config.mail.tls, protocol) {
            (Some((cert, key)), Protocol::Smtp) => Some(acceptor(cert, key)?),
            _ => None,
        };
        let limits = Limits {
            max_message_bytes: config.mail.max_message_bytes,
            max_recipients: config.mail.max_recipients,
            session_timeout: config.mail.session_timeout,
            max_commands: config.mail.max_commands,
            // A client that connected just before the stop still gets its
            // mail in.
            stop_drain: config.server.drain(),
            ..Limits::default()
        };
        let connections = Connections {
            total: config.mail.max_connections,
            per_client: config.mail.max_connections_per_client,
        };
        let hostname = config.mail.hostname.clone();
        Ok(MailApp {
            addr,
            listener: Listener::new(protocol, limits, connections, hostname, tls, intake),
            in_flight,
        })
    }

    /// The Pingora service that listens on the app's address.
    pub fn service(self) -> Service<MailApp> {
        let name = format!("mail listener {}", self.addr);
        let addr = self.addr.to_string();
        let mut service = Service::new(name, self);
        service.add_tcp(&addr);
        service
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
impl ServerApp for MailApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _busy = self.in_flight.enter();
        let Some(client) = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
        else {
            tracing::warn!(target: "ischedule::mail", addr = %self.addr, "connection without a peer address, closed");
            return None;
        };
        self.listener
            .serve_connection(stream, client, shutdown.clone())
            .await;
        // An SMTP connection is never handed back for reuse.
        None
    }
}
