//! The `ischedule-bridge` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ischedule_bridge::config::{effective, Config, DkimPolicy, StoreLocation};
use ischedule_bridge::discovery::Origin;
use ischedule_bridge::dkim::{self, KeyRecord, SigningKey};
use ischedule_bridge::itip::CalAddress;
use ischedule_bridge::mail::inbound::listener::{Delivery, Envelope};
use ischedule_bridge::mail::inbound::lmtp_client;
use ischedule_bridge::mail::inbound::xclient::Xclient;
use ischedule_bridge::mail::outbound::queue_admin;
use ischedule_bridge::proxy::connections::Guarded;
use ischedule_bridge::proxy::forward::Forwarder;
use ischedule_bridge::proxy::in_flight::InFlight;
use ischedule_bridge::proxy::upstream::{Endpoint, Request};
use ischedule_bridge::routing::explain::{self, ReceiverCheck};
use ischedule_bridge::routing::Decision;
use ischedule_bridge::smtp::{EnhancedStatus, SmtpReply};
use ischedule_bridge::store::{Handover, StoreError};
use ischedule_bridge::{app, proxy::own_capabilities::OwnCapabilities};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

#[derive(Parser)]
#[command(
    name = "ischedule-bridge",
    version,
    about = "iSchedule gateway: native forwarding by DNS SRV, iMIP where there is none"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (embedded default configuration without --config).
    Serve {
        /// The configuration file (TOML); without it, the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log one JSON object per line instead of text.
        #[arg(long)]
        log_json: bool,
        /// Take over from the running bridge without downtime: receive its
        /// listening sockets on server.upgrade_sock once it gets SIGQUIT,
        /// and use the store as soon as it lets go of it.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration, print a summary, then the effective
    /// configuration (every key, defaults filled in, secrets redacted).
    Check {
        /// The configuration file (TOML) to check.
        #[arg(long)]
        config: PathBuf,
    },
    /// Explain how each calendar user address would be routed.
    Route {
        /// The configuration file (TOML); without it, the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// One JSON object per address.
        #[arg(long)]
        json: bool,
        /// Do not contact receivers for their capabilities.
        #[arg(long)]
        no_capabilities: bool,
        /// Calendar user addresses, such as mailto:bob@example.com.
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Deliver one iMIP mail from standard input, as an MTA pipe transport
    /// does; exits 0, 65 (EX_DATAERR), 67 (EX_NOUSER) or 75 (EX_TEMPFAIL).
    Ingest {
        /// The configuration file (TOML); without it, the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The envelope sender (MAIL FROM); empty for the null sender.
        #[arg(long)]
        sender: String,
        /// The envelope recipients (RCPT TO).
        #[arg(long, required = true, num_args = 1..)]
        rcpt: Vec<String>,
        /// The address the MTA received the mail from (for SPF and the
        /// local-client allow-list); unknown when not given.
        #[arg(long)]
        client_ip: Option<std::net::IpAddr>,
        /// The name the sending host gave in EHLO.
        #[arg(long, default_value = "unknown")]
        helo: String,
    },
    /// Inspect and manage the outbound mail queue (through the running
    /// bridge when there is one, else directly on its state).
    Queue {
        /// The configuration file (TOML); without it, the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: QueueAction,
    },
    /// DKIM keys for signing iSchedule requests and mail.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
}

#[derive(Subcommand)]
enum DkimAction {
    /// Write a new RSA signing key (PKCS#8 PEM, mode 0600) and print the
    /// DNS TXT record and well-known URL that publish its public half.
    Keygen {
        /// The domain the key signs for (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=): the key record is published at <selector>._domainkey.<domain>.
        #[arg(long)]
        selector: String,
        /// Where to write the key (default: <selector>.<domain>.pem); never overwritten.
        #[arg(long)]
        out: Option<PathBuf>,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum QueueAction {
    /// Every queued message: id, attempts, next attempt, recipient, last error.
    List,
    /// Make a message due now.
    Retry {
        /// The message's id, as `queue list` shows it.
        id: u64,
    },
    /// Remove a message without sending it.
    Drop {
        /// The message's id, as `queue list` shows it.
        id: u64,
    },
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            log_json,
            upgrade,
        } => {
            let start = if upgrade {
                app::Start::Upgrade
            } else {
                app::Start::Fresh
            };
            serve(load(config.as_ref())?, log_json, start)
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            print!("{}", summary(&config));
            print!("{}", dkim_summary(&config)?);
            print!("{}", effective_section(&config)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dkim {
            action:
                DkimAction::Keygen {
                    domain,
                    selector,
                    out,
                    bits,
                },
        } => keygen(&domain, &selector, out, bits),
        Command::Route {
            config,
            json,
            no_capabilities,
            addresses,
        } => route(load(config.as_ref())?, json, !no_capabilities, &addresses),
        Command::Queue {
            config,
            json,
            action,
        } => queue(load(config.as_ref())?, json, action),
        Command::Ingest {
            config,
            sender,
            rcpt,
            client_ip,
            helo,
        } => ingest(load(config.as_ref())?, sender, rcpt, client_ip, helo),
    }
}

fn serve(config: Config, log_json: bool, start: app::Start) -> anyhow::Result<ExitCode> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let server_config = config.server.clone();
    let (listen, tls) = (&server_config.listen, &server_config.tls);
    tracing::info!(config = %config.source, listen = ?listen, tls = tls.len(), upgrade = start == app::Start::Upgrade, "starting");
    if start == app::Start::Fresh {
        check_free(&config)?;
    }
    let services = app::services(config, start).context("starting the bridge")?;

    let upgrade_sock = &server_config.upgrade_sock;
    if let Some(dir) = upgrade_sock.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("server.upgrade_sock: creating {}", dir.display()))?;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let conf = pingora::server::configuration::ServerConf {
        threads,
        // The pass-through's idle connections to the origin, which Pingora
        // counts per thread: room for every admitted connection, so a busy
        // minute does not close and reopen them.
        upstream_keepalive_pool_size: server_config.max_connections.div_ceil(threads),
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        pid_file: server_config.pid_file.to_string_lossy().into_owned(),
        grace_period_seconds: Some(server_config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(server_config.shutdown_timeout.as_secs()),
        ..Default::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: start == app::Start::Upgrade,
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(opt, conf);
    // With --upgrade this waits for the old process's sockets (it sends
    // them on SIGQUIT); Pingora exits if none come within about 5 s.
    server.bootstrap();
    write_pid_file(&server_config.pid_file)?;
    let http = pingora::proxy::http_proxy(&server.configuration, services.http);
    let mut proxy = Service::new(
        "iSchedule HTTP".to_string(),
        Guarded::new(http, services.connections, services.in_flight.clone()),
    );
    for addr in listen {
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .l4_buffer(L4BufferSettings::default().read(PLAIN_READ_BUFFER)),
        );
    }
    for t in tls {
        proxy
            .add_tls(
                &t.listen.to_string(),
                &t.cert.to_string_lossy(),
                &t.key.to_string_lossy(),
            )
            .with_context(|| format!("TLS listener {}", t.listen))?;
    }
    server.add_service(proxy);
    if let Some((addr, app)) = services.admin {
        let mut admin = pingora::services::listening::Service::new("admin".into(), app);
        admin.add_tcp(&addr.to_string());
        // Scrapes and health checks: one thread, not a runtime per core.
        admin.threads = Some(1);
        server.add_service(admin);
    }
    server.add_service(background_service("imip queue", services.worker));
    for listener in services.mail {
        server.add_service(listener.service());
    }
    let phases = server.watch_execution_phase();
    let (in_flight, handover) = (services.in_flight, services.handover);
    let settle = server_config.drain();
    std::thread::spawn(move || release_when_idle(phases, settle, &in_flight, handover.as_deref()));
    server.run_forever()
}

/// Once the shutdown began (after SIGQUIT's 5 s of handing over, or on
/// SIGTERM), closes the store as soon as no work is in progress, instead
/// of when the grace period ends: a new process waits for it meanwhile.
/// Pingora drops a service's state once its connections are gone, but an
/// idle kept-alive connection to the admin listener (a metrics scraper)
/// keeps the admin app, and with it the store, until the process exits;
/// so the store is closed here rather than left to the last owner.
/// Work counts from when Pingora hands a connection over, after the
/// accept (and a TLS handshake): `settle` first lets connections accepted
/// just before the stop get there. (A TLS handshake slower than that can
/// still find the store gone: its store operations then fail with
/// `StoreError::HandedOver`, as if the store were down.)
fn release_when_idle(
    mut phases: tokio::sync::broadcast::Receiver<pingora::server::ExecutionPhase>,
    settle: std::time::Duration,
    in_flight: &InFlight,
    handover: Option<&Handover>,
) {
    use pingora::server::ExecutionPhase;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownGracePeriod) => break,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
    std::thread::sleep(settle);
    while in_flight.count() > 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if let Some(handover) = handover {
        handover.release();
    }
}

/// Pingora binds the listeners only when their services start, and when
/// an address is in use it retries for 30 s, then runs on without that
/// listener. Started alone (not taking over from a running bridge, whose
/// sockets these are), the bridge checks each address first, so that a
/// port in use stops it at once with an error naming the key.
fn check_free(config: &Config) -> anyhow::Result<()> {
    let server = &config.server;
    let mut listeners: Vec<(String, std::net::SocketAddr)> = server
        .listen
        .iter()
        .map(|a| ("server.listen".to_string(), *a))
        .collect();
    for (i, t) in server.tls.iter().enumerate() {
        listeners.push((format!("server.tls[{i}].listen"), t.listen));
    }
    let others = [
        ("server.admin_listen", server.admin_listen),
        ("mail.smtp_listen", config.mail.smtp_listen),
        ("mail.lmtp_listen", config.mail.lmtp_listen),
    ];
    for (key, addr) in others {
        if let Some(addr) = addr {
            listeners.push((key.to_string(), addr));
        }
    }
    for (key, addr) in listeners {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("{key}: cannot listen on {addr}"))?;
    }
    Ok(())
}

/// Writes this process's id, replacing the file at once (a reader never
/// sees it empty): after an upgrade it names the new process, which is
/// how systemd's `PIDFile=` follows the service to it. Never removed on
/// exit, since by then it may name the successor.
fn write_pid_file(path: &std::path::Path) -> anyhow::Result<()> {
    let context = || format!("server.pid_file: writing {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(context)?;
    }
    let partial = path.with_extension("pid.partial");
    std::fs::write(&partial, format!("{}\n", std::process::id())).with_context(context)?;
    std::fs::rename(&partial, path).with_context(context)
}

fn summary(config: &Config) -> String {
    let own = OwnCapabilities::from_config(config);
    let mut out = format!("{}: OK\n", config.source);
    out += &format!("  listen: {:?}", config.server.listen);
    for t in &config.server.tls {
        out += &format!(", TLS {} ({})", t.listen, t.cert.display());
    }
    out += &format!(
        "\n  receiver path: {} and /.well-known/ischedule\n",
        config.server.path
    );
    out += &format!(
        "  origin (pass-through): {}\n",
        config
            .server
            .origin
            .as_ref()
            .map_or("none".into(), effective::redacted_url)
    );
    out += &format!(
        "  DNS: {}, sub-domain stripping {}\n",
        if config.dns.nameservers.is_empty() {
            "system resolver".to_string()
        } else {
            format!("{:?}", config.dns.nameservers)
        },
        if config.dns.strip_subdomains {
            "on"
        } else {
            "off"
        }
    );
    out += &format!("  local domains: {}\n", list_or_none(&config.local_domains));
    out += &format!(
        "  local senders: {}{}\n",
        config
            .senders
            .allow
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if config.senders.shared_secret.is_some() {
            format!(", or the {} header", config.senders.secret_header)
        } else {
            String::new()
        }
    );
    out += &format!(
        "  limits: {} bytes, {} recipients per POST; capabilities serial {}\n",
        config.limits.max_content_length,
        config.limits.max_recipients,
        own.serial()
    );
    // The URL as shown never carries its password; `check` does not connect.
    out += &match &config.store {
        StoreLocation::Redb(path) => format!("  store: redb in {}\n", path.display()),
        StoreLocation::Postgres(pg) => format!(
            "  store: PostgreSQL {} (pool of {}; not connected by check)\n",
            pg.url, pg.pool_size
        ),
    };
    out += &format!("  static routes: {}\n", config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let to =
            r.to.as_ref()
                .map_or("mail (imip-only)".to_string(), effective::redacted_url);
        let mode = r.mode.map(|m| format!(" [{m}]")).unwrap_or_default();
        out += &format!("    #{i} {} -> {to}{mode}\n", r.matcher);
    }
    out
}

/// The DKIM part of `check`: the policy, each signing key and what DNS
/// publishes for it, and the keys partners exchanged privately.
fn dkim_summary(config: &Config) -> anyhow::Result<String> {
    let dkim = &config.dkim;
    let mut out = format!(
        "  DKIM: remote senders {} (unless a route says otherwise), signatures valid {} s\n",
        dkim.verify,
        dkim.lifetime.as_secs()
    );
    if dkim.keys.is_empty() {
        out += "    no signing keys: requests and mail go out unsigned\n";
        return Ok(out);
    }
    let core = app::Core::new(config.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for key in &dkim.keys {
        let methods: Vec<&str> = key.methods.iter().map(|m| m.as_str()).collect();
        out += &format!(
            "    key d={} s={}: RSA {} bits from {}, q={}\n",
            key.domain,
            key.selector,
            key.key.bits(),
            key.path.display(),
            methods.join(":")
        );
        let name = dkim::dns_name(&key.domain, &key.selector);
        let own = key.key.public_key();
        let published = match runtime.block_on(core.resolver.txt(&name)) {
            Err(e) => format!("lookup failed: {e}"),
            Ok(records) if records.is_empty() => "no record published".into(),
            Ok(records) => {
                let judged: Vec<KeyRecord> = records.iter().map(|r| KeyRecord::parse(r)).collect();
                if judged.contains(&KeyRecord::Usable(own.clone())) {
                    "publishes this key".into()
                } else if judged.contains(&KeyRecord::Revoked) {
                    "publishes it revoked (empty p=)".into()
                } else {
                    format!("publishes a DIFFERENT key: {}", records.join(" | "))
                }
            }
        };
        out += &format!("      DNS TXT {name}: {published}\n");
        out += &format!(
            "      well-known: {} (served by this bridge)\n",
            dkim::well_known_path(&key.domain, &key.selector)
        );
    }
    for t in &dkim.trusted {
        out += &format!(
            "    trusted d={} s={} (private-exchange)\n",
            t.domain, t.selector
        );
    }
    Ok(out)
}

/// The last part of `check`: what the bridge will do, in the file's own
/// keys, so an admin need not know every default. From its heading on it is
/// a configuration file in itself.
fn effective_section(config: &Config) -> anyhow::Result<String> {
    Ok(format!(
        "\n# effective configuration (defaults filled in)\n\
         # Keys without a value in effect are left out; secrets show as \"{}\".\n\n{}",
        effective::REDACTED,
        effective::config(config)?
    ))
}

fn keygen(
    domain: &str,
    selector: &str,
    out: Option<PathBuf>,
    bits: u32,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = SigningKey::generate(bits)?;
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{selector}.{domain}.pem")));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(key.to_pkcs8_pem()?.as_bytes())?;
    let record = key.public_key().record();
    // A TXT string holds at most 255 bytes: longer records go in several.
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    println!("wrote {} (RSA {bits}, PKCS#8, mode 0600)", path.display());
    println!(
        "DNS:        {} IN TXT {}",
        dkim::dns_name(domain, selector),
        strings.join(" ")
    );
    println!(
        "well-known: https://<the iSchedule host of {domain}>{}",
        dkim::well_known_path(domain, selector)
    );
    println!(
        "config:     [[dkim.keys]]\n            domain = \"{domain}\"\n            selector = \"{selector}\"\n            private_key = \"{}\"",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn route(
    config: Config,
    json: bool,
    ask_receivers: bool,
    addresses: &[String],
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let core = app::Core::new(config)?;
    let mut failed = false;
    runtime.block_on(async {
        for raw in addresses {
            let address = match CalAddress::parse(raw) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: {raw}: {e}");
                    failed = true;
                    continue;
                }
            };
            let routed = core.router().route(&address).await;
            let check = match (&routed.decision, ask_receivers) {
                (Decision::Native { receiver }, true) => {
                    let locations = Forwarder::locations(receiver);
                    match core
                        .forwarder
                        .capabilities_any(&receiver.id, &locations)
                        .await
                    {
                        Ok((outcome, _)) => ReceiverCheck::Capabilities(outcome),
                        Err(e) => ReceiverCheck::Unreachable(e.to_string()),
                    }
                }
                _ => ReceiverCheck::NotAsked,
            };
            let signing = dkim_route(&core.config, &address);
            if json {
                let mut value = explain::json(&routed, &check);
                if let Some(signing) = signing {
                    value["dkim"] = serde_json::Value::String(signing);
                }
                println!("{value}");
            } else {
                print!("{}", explain::text(&routed, &check));
                if let Some(signing) = signing {
                    println!("  DKIM: {signing}");
                }
            }
        }
    });
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// How DKIM applies to requests with this address as Originator.
/// Nothing when the configuration says nothing about DKIM (the default
/// policy, no keys), so the routing explanation stays as it was.
fn dkim_route(config: &Config, address: &CalAddress) -> Option<String> {
    let dkim = &config.dkim;
    let configured = !dkim.keys.is_empty()
        || !dkim.trusted.is_empty()
        || dkim.verify != DkimPolicy::Require
        || config.routes.iter().any(|r| r.dkim.is_some());
    if !configured {
        return None;
    }
    let domain = address.domain().unwrap_or_default();
    if let Some(k) = config.signing_key(&domain) {
        let methods: Vec<&str> = k.methods.iter().map(|m| m.as_str()).collect();
        return Some(format!(
            "signed by this bridge with d={} s={} (q={})",
            k.domain,
            k.selector,
            methods.join(":")
        ));
    }
    if config.is_local(address) {
        return Some("a local domain without a key: its requests go out unsigned".into());
    }
    let trusted: Vec<String> = config
        .dkim
        .trusted
        .iter()
        .filter(|t| t.domain == domain)
        .map(|t| format!("s={}", t.selector))
        .collect();
    let mut out = format!(
        "requests from this originator: {}",
        config.dkim_policy_for(address)
    );
    if !trusted.is_empty() {
        out += &format!("; privately exchanged keys {}", trusted.join(", "));
    }
    Some(out)
}

fn queue(config: Config, json: bool, action: QueueAction) -> anyhow::Result<ExitCode> {
    let action = match action {
        QueueAction::List => queue_admin::Action::List,
        QueueAction::Retry { id } => queue_admin::Action::Retry(id),
        QueueAction::Drop { id } => queue_admin::Action::Drop(id),
    };
    let now = ischedule_bridge::scheduling::unix_now();
    let answer = match app::open_store(&config) {
        Ok(store) => queue_admin::run(store.as_ref(), action, now)?,
        // A running bridge holds the store: ask it instead.
        Err(StoreError::AlreadyOpen { .. }) => queue_via_bridge(config, action)?,
        Err(e) => return Err(e.into()),
    };
    match answer {
        queue_admin::Answer::List(entries) if json => {
            println!("{}", serde_json::to_string_pretty(&entries)?)
        }
        queue_admin::Answer::List(entries) => print!("{}", queue_admin::table(&entries, now)),
        queue_admin::Answer::Done { id, done: true } => println!("#{id}: done"),
        queue_admin::Answer::Done { id, done: false } => {
            eprintln!("error: no queued message #{id}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The admin endpoint of the bridge running with this configuration.
fn queue_via_bridge(
    config: Config,
    action: queue_admin::Action,
) -> anyhow::Result<queue_admin::Answer> {
    let listen = *config
        .server
        .listen
        .first()
        .context("the store is in use, and the configuration has no plain listener to ask the running bridge")?;
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    let mut headers = Vec::new();
    if let Some(secret) = &config.senders.shared_secret {
        headers.push((config.senders.secret_header.clone(), secret.clone()));
    }
    let headers: Vec<(&str, String)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    let core = app::Core::new(config)?;
    let endpoint = Endpoint {
        tls: false,
        host,
        port: listen.port(),
        origin: Origin::Configured,
    };
    let (method, path) = action.to_http();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let response = runtime.block_on(core.forwarder.upstream.send(
        &endpoint,
        &Request {
            method,
            path_and_query: &path,
            headers: &headers,
            body: bytes::Bytes::new(),
        },
    ))?;
    serde_json::from_slice(&response.body).with_context(|| {
        format!(
            "the bridge at {endpoint} answered HTTP {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    })
}

/// The read buffer under each plain HTTP connection: none. Pingora's
/// default (64 KiB, for TLS's 16 KiB records) was allocated for every
/// connection; a 4 KiB one still cost memory for nothing, because
/// `connections::read_head` reads each request's head straight into the
/// buffer Pingora then parses, and a buffer under it would only copy the
/// bytes once more. Pingora reads its receivers' plain connections
/// unbuffered too. TLS listeners keep the default.
const PLAIN_READ_BUFFER: usize = 0;

/// sysexits.h codes an MTA pipe transport understands.
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_TEMPFAIL: u8 = 75;

fn ingest(
    config: Config,
    sender: String,
    rcpts: Vec<String>,
    client_ip: Option<std::net::IpAddr>,
    helo: String,
) -> anyhow::Result<ExitCode> {
    use std::io::Read;
    let max = config.mail.max_message_bytes;
    let mut message = Vec::new();
    std::io::stdin()
        .take(max as u64 + 1)
        .read_to_end(&mut message)?;
    if message.len() > max {
        eprintln!("ischedule-bridge ingest: the message is larger than {max} bytes (mail.max_message_bytes)");
        return Ok(ExitCode::from(EX_DATAERR));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let lmtp = config.mail.lmtp_listen;
    let timeout = config.timeouts.request;
    let envelope = Envelope {
        mail_from: sender.clone(),
        recipients: rcpts.clone(),
        helo,
        client: std::net::SocketAddr::new(
            client_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            0,
        ),
        tls: false,
        authenticated_as: None,
    };
    let replies = match app::scheduling(config) {
        Ok(scheduling) => {
            let intake = app::intake(&scheduling)?;
            runtime.block_on(async {
                let mut refused = Vec::new();
                for rcpt in &rcpts {
                    refused.push(intake.accept_recipient(&envelope, rcpt).await.err());
                }
                let accepted: Vec<String> = rcpts
                    .iter()
                    .zip(&refused)
                    .filter(|(_, r)| r.is_none())
                    .map(|(rcpt, _)| rcpt.clone())
                    .collect();
                let delivered = if accepted.is_empty() {
                    Vec::new()
                } else {
                    intake
                        .deliver(
                            &Envelope {
                                recipients: accepted,
                                ..envelope.clone()
                            },
                            &message,
                        )
                        .await
                };
                let mut delivered = delivered.into_iter();
                refused
                    .into_iter()
                    .map(|r| r.or_else(|| delivered.next()).unwrap_or_else(no_reply))
                    .collect::<Vec<SmtpReply>>()
            })
        }
        // A running bridge holds the store: hand the mail to its LMTP listener.
        Err(app::StartError::Store(StoreError::AlreadyOpen { .. })) => {
            let addr = lmtp.context("a running bridge holds the store and has no LMTP listener (mail.lmtp_listen) to take the mail")?;
            let client = Xclient {
                addr: Some(envelope.client.ip()),
                port: None,
                helo: Some(envelope.helo.clone()),
            };
            runtime.block_on(lmtp_client::deliver(
                addr, &client, &sender, &rcpts, &message, timeout,
            ))?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(ExitCode::from(exit_code(&rcpts, &replies)))
}

fn no_reply() -> SmtpReply {
    SmtpReply::new(
        451,
        Some(EnhancedStatus::new(4, 3, 0)),
        "no reply for this recipient",
    )
}

/// One exit code for the whole message: any temporary failure asks the MTA
/// to retry; otherwise a permanent one says whether the user or the data
/// was wrong. The first failure is the one-line reason on stderr.
fn exit_code(rcpts: &[String], replies: &[SmtpReply]) -> u8 {
    let failures: Vec<(&String, &SmtpReply)> = rcpts
        .iter()
        .zip(replies)
        .filter(|(_, r)| r.code.class() >= 4)
        .collect();
    let Some((rcpt, first)) = failures.first() else {
        return 0;
    };
    eprintln!("ischedule-bridge ingest: {rcpt}: {first}");
    if failures.iter().any(|(_, r)| r.code.class() < 5) {
        EX_TEMPFAIL
    } else if failures.iter().all(|(_, r)| {
        r.enhanced
            .is_some_and(|e| e.class() == 5 && e.subject() == 1)
    }) {
        EX_NOUSER
    } else {
        EX_DATAERR
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// An admin reads `--help` before the README: every argument says
    /// what it is for.
    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !matches!(arg.get_id().as_str(), "help" | "version")
                {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "ischedule-bridge", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
