//! Wiring: from a validated [`Config`] to the running parts.

use std::sync::Arc;

use crate::config::Config;
use crate::discovery::capability_cache::CapabilityCache;
use crate::discovery::DnsResolver;
use crate::proxy::forward::Forwarder;
use crate::proxy::own_capabilities::OwnCapabilities;
use crate::proxy::schedule::Scheduler;
use crate::proxy::service::BridgeService;
use crate::proxy::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Dns(#[from] crate::discovery::DnsFailure),
    #[error("receiver TLS trust store: {0}")]
    Trust(#[from] std::io::Error),
}

pub fn scheduler(config: Config) -> Result<Scheduler, StartError> {
    let config = Arc::new(config);
    let resolver = Arc::new(DnsResolver::new(&config.dns, config.timeouts.dns)?);
    let forwarder = Forwarder {
        upstream: Upstream::new(&config, resolver.clone())?,
        capabilities: CapabilityCache::default(),
        config: config.clone(),
    };
    Ok(Scheduler {
        config,
        resolver,
        forwarder,
    })
}

pub fn service(config: Config) -> Result<BridgeService, StartError> {
    let own = OwnCapabilities::from_config(&config);
    Ok(BridgeService {
        scheduler: Arc::new(scheduler(config)?),
        own,
    })
}
