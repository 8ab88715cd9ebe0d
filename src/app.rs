//! Wiring: from a validated [`Config`] to the running parts.

use std::sync::Arc;

use crate::config::{Config, StoreLocation};
use crate::discovery::capability_cache::CapabilityCache;
use crate::discovery::{DnsResolver, TargetPolicy};
use crate::imip::authenticate::{AuthError, Authenticator};
use crate::mail::inbound::intake::Intake;
use crate::mail::inbound::listener::Protocol;
use crate::mail::outbound::imip_delivery::ImipDelivery;
use crate::mail::outbound::queue::Mailer;
use crate::mail::outbound::transport::{Transport, TransportError};
use crate::proxy::admin::AdminApp;
use crate::proxy::connections::ConnectionLimits;
use crate::proxy::dkim_keys::KeyFetcher;
use crate::proxy::forward::Forwarder;
use crate::proxy::in_flight::InFlight;
use crate::proxy::mail_listeners::MailApp;
use crate::proxy::own_capabilities::OwnCapabilities;
use crate::proxy::queue_worker::QueueWorker;
use crate::proxy::service::BridgeService;
use crate::proxy::upstream::Upstream;
use crate::routing::Router;
use crate::scheduling::Scheduler;
use crate::store::{Handover, PostgresStore, RedbStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Dns(#[from] crate::discovery::DnsFailure),
    #[error("receiver TLS trust store: {0}")]
    Trust(#[from] std::io::Error),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("outbound mail: {0}")]
    Mail(#[source] TransportError),
    #[error("mail.tls_cert, mail.tls_key: {0}")]
    MailTls(#[source] std::io::Error),
    #[error("mail.next_hop: {0}")]
    NextHop(#[source] TransportError),
    #[error("sender authentication: {0}")]
    Authentication(#[from] AuthError),
}

/// What routing and native forwarding need, and nothing that holds state
/// on disk: `route` uses it while a bridge is running.
pub struct Core {
    pub config: Arc<Config>,
    pub resolver: Arc<DnsResolver>,
    pub forwarder: Arc<Forwarder>,
}

impl Core {
    pub fn new(config: Config) -> Result<Core, StartError> {
        let config = Arc::new(config);
        let resolver = Arc::new(DnsResolver::new(&config.dns, config.timeouts.dns)?);
        let forwarder = Arc::new(Forwarder {
            upstream: Upstream::new(&config, resolver.clone())?,
            capabilities: CapabilityCache::default(),
            config: config.clone(),
        });
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
    Ok(match &config.store {
        StoreLocation::Redb(path) => Arc::new(RedbStore::open(path)?),
        StoreLocation::Postgres(settings) => Arc::new(PostgresStore::open(settings)?),
    })
}

/// The scheduling core with its two deliveries, and the mailer behind the
/// mail delivery (the queue worker and the intake's DSNs use it directly).
pub struct Scheduling {
    pub scheduler: Arc<Scheduler>,
    pub mailer: Arc<Mailer>,
}

pub fn scheduling(config: Config) -> Result<Scheduling, StartError> {
    let core = Core::new(config)?;
    let store = open_store(&core.config)?;
    scheduling_on(core, store)
}

fn scheduling_on(core: Core, store: Arc<dyn Store>) -> Result<Scheduling, StartError> {
    let smtp = &core.config.smtp;
    let transport = Transport::new(
        smtp.route.clone(),
        core.resolver.clone(),
        smtp.helo.clone(),
        smtp.timeout,
    )
    .map_err(StartError::Mail)?
    .with_direct_port(smtp.direct_port)
    .with_target_policy(TargetPolicy::from_config(&core.config))
    .with_max_sessions_per_host(smtp.max_sessions_per_host);
    let mailer = Arc::new(Mailer {
        transport,
        store: store.clone(),
        status_map: smtp.status_map.clone(),
        queue: core.config.queue.clone(),
        remember_sent: core.config.queue.max_age + core.config.idempotency_window,
        wake: Default::default(),
        lease: Mailer::lease_for(smtp.timeout, core.config.timeouts.request),
    });
    let mail = Arc::new(ImipDelivery {
        config: core.config.clone(),
        store: store.clone(),
        mailer: mailer.clone(),
    });
    let scheduler = Arc::new(Scheduler {
        config: core.config,
        resolver: core.resolver,
        native: core.forwarder,
        mail,
        store,
    });
    Ok(Scheduling { scheduler, mailer })
}

/// The inbound mail delivery: authentication, translation, next hop.
pub fn intake(scheduling: &Scheduling) -> Result<Intake, StartError> {
    let scheduler = scheduling.scheduler.clone();
    let config = scheduler.config.clone();
    let authenticator = Authenticator::new(&config.dns.nameservers, config.timeouts.dns)?;
    let next_hop = config
        .mail
        .next_hop
        .clone()
        .map(|route| {
            Transport::new(
                route,
                scheduler.resolver.clone(),
                config.smtp.helo.clone(),
                config.smtp.timeout,
            )
            .map(|t| {
                t.with_target_policy(TargetPolicy::from_config(&config))
                    .with_max_sessions_per_host(config.smtp.max_sessions_per_host)
            })
        })
        .transpose()
        .map_err(StartError::NextHop)?;
    Ok(Intake {
        scheduler,
        mailer: scheduling.mailer.clone(),
        authenticator,
        next_hop,
    })
}

/// Everything `serve` runs: the HTTP service, the queue worker and the
/// mail listeners, sharing one scheduler.
pub struct Services {
    pub http: BridgeService,
    pub connections: ConnectionLimits,
    /// The admin listener's address and application, when configured.
    pub admin: Option<(std::net::SocketAddr, AdminApp)>,
    pub worker: QueueWorker,
    pub mail: Vec<MailApp>,
    /// What the HTTP connections, mail sessions and queue passes count in.
    pub in_flight: InFlight,
    /// The store, to be handed to the next process on an upgrade.
    /// The embedded store's handover (redb); None on PostgreSQL, which
    /// old and new processes share as it is.
    pub handover: Option<Arc<Handover>>,
}

/// How `serve` comes by its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Alone: the store must be free now.
    Fresh,
    /// Taking over from a running bridge (`--upgrade`): the store is
    /// opened once the old process lets go (see [`Handover`]).
    Upgrade,
}

pub fn services(config: Config, start: Start) -> Result<Services, StartError> {
    let own = OwnCapabilities::from_config(&config);
    let core = Core::new(config)?;
    let keys = KeyFetcher {
        config: core.config.clone(),
        resolver: core.resolver.clone(),
        forwarder: core.forwarder.clone(),
    };
    // The redb store, wrapped so that an upgrade can hand it over.
    let (store, handover): (Arc<dyn Store>, _) = match &core.config.store {
        StoreLocation::Redb(path) => {
            let handover = Arc::new(match start {
                Start::Fresh => Handover::open(path.clone())?,
                Start::Upgrade => Handover::new(path.clone(), core.config.server.handover_timeout),
            });
            (handover.clone(), Some(handover))
        }
        StoreLocation::Postgres(_) => (open_store(&core.config)?, None),
    };
    let scheduling = scheduling_on(core, store)?;
    let scheduler = scheduling.scheduler.clone();
    let in_flight = InFlight::default();
    let worker = QueueWorker {
        scheduler: scheduler.clone(),
        mailer: scheduling.mailer.clone(),
        purged_at: Default::default(),
        in_flight: in_flight.clone(),
    };
    let mail_config = scheduler.config.clone();
    let listeners = [
        (Protocol::Smtp, mail_config.mail.smtp_listen),
        (Protocol::Lmtp, mail_config.mail.lmtp_listen),
    ];
    let mut mail = Vec::new();
    if listeners.iter().any(|(_, addr)| addr.is_some()) {
        let intake = Arc::new(intake(&scheduling)?);
        for (protocol, addr) in listeners {
            if let Some(addr) = addr {
                mail.push(
                    MailApp::new(
                        protocol,
                        addr,
                        &mail_config,
                        intake.clone(),
                        in_flight.clone(),
                    )
                    .map_err(StartError::MailTls)?,
                );
            }
        }
    }
    let server = &mail_config.server;
    let admin = server.admin_listen.map(|addr| {
        let listeners = server
            .listen
            .iter()
            .copied()
            .chain(server.tls.iter().map(|t| t.listen))
            .chain(listeners.iter().filter_map(|(_, a)| *a))
            .collect();
        let store = scheduler.store.clone();
        let app = AdminApp {
            store,
            handover: handover.clone(),
            listeners,
        };
        (addr, app)
    });
    Ok(Services {
        connections: ConnectionLimits::new(&scheduler.config.server),
        admin,
        http: BridgeService {
            scheduler,
            own,
            keys,
        },
        worker,
        mail,
        in_flight,
        handover,
    })
}
