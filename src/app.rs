//! Wiring: from a validated [`Config`] to the running parts.

use std::sync::Arc;

use crate::config::Config;
use crate::discovery::capability_cache::CapabilityCache;
use crate::discovery::DnsResolver;
use crate::mail::queue::Mailer;
use crate::mail::transport::Transport;
use crate::proxy::forward::Forwarder;
use crate::proxy::own_capabilities::OwnCapabilities;
use crate::proxy::queue_worker::QueueWorker;
use crate::proxy::schedule::Scheduler;
use crate::proxy::service::BridgeService;
use crate::proxy::upstream::Upstream;
use crate::routing::Router;
use crate::store::{RedbStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Dns(#[from] crate::discovery::DnsFailure),
    #[error("receiver TLS trust store: {0}")]
    Trust(#[from] std::io::Error),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("outbound mail: {0}")]
    Mail(String),
}

/// What routing and native forwarding need, and nothing that holds state
/// on disk: `route` uses it while a bridge is running.
pub struct Core {
    pub config: Arc<Config>,
    pub resolver: Arc<DnsResolver>,
    pub forwarder: Forwarder,
}

impl Core {
    pub fn new(config: Config) -> Result<Core, StartError> {
        let config = Arc::new(config);
        let resolver = Arc::new(DnsResolver::new(&config.dns, config.timeouts.dns)?);
        let forwarder = Forwarder {
            upstream: Upstream::new(&config, resolver.clone())?,
            capabilities: CapabilityCache::default(),
            config: config.clone(),
        };
        Ok(Core {
            config,
            resolver,
            forwarder,
        })
    }

    pub fn router(&self) -> Router<'_> {
        Router {
            config: &self.config,
            resolver: &self.resolver,
        }
    }
}

/// Opens the durable state named by the configuration.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(RedbStore::open(&config.store_path)?))
}

pub fn scheduler(config: Config) -> Result<Scheduler, StartError> {
    let core = Core::new(config)?;
    let store = open_store(&core.config)?;
    let smtp = &core.config.smtp;
    let transport = Transport::new(
        smtp.route.clone(),
        core.resolver.clone(),
        smtp.helo.clone(),
        smtp.timeout,
    )
    .map_err(StartError::Mail)?
    .with_direct_port(smtp.direct_port);
    let mailer = Mailer {
        transport,
        store: store.clone(),
        status_map: smtp.status_map.clone(),
        queue: core.config.queue.clone(),
    };
    Ok(Scheduler {
        config: core.config,
        resolver: core.resolver,
        forwarder: core.forwarder,
        mailer,
        store,
    })
}

/// The HTTP service and the queue worker, sharing one scheduler.
pub fn services(config: Config) -> Result<(BridgeService, QueueWorker), StartError> {
    let own = OwnCapabilities::from_config(&config);
    let scheduler = Arc::new(scheduler(config)?);
    let worker = QueueWorker {
        scheduler: scheduler.clone(),
    };
    Ok((BridgeService { scheduler, own }, worker))
}
