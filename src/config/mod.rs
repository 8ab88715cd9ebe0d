//! Configuration: the TOML file an admin writes, checked once at start-up
//! into typed values, so the rest of the bridge never sees a bad setting.
//!
//! Every error names the file, the key and why, because an admin editing
//! rules at 2 a.m. should not have to guess which line broke the bridge.
//! [`effective`] prints the validated settings back in the file's keys,
//! defaults filled in and secrets redacted (`ischedule-bridge check`).

pub mod effective;
mod file;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::dkim::{KeyMethod, PublicKey, SigningKey};
use crate::itip::CalAddress;
use crate::itip::Stamp;

pub use validate::ConfigError;

/// The embedded default configuration, used by `serve` without `--config`.
pub const DEFAULT_TOML: &str = include_str!("../../bridge-rules/default.toml");
/// How the embedded default is named in messages.
pub const DEFAULT_NAME: &str = "bridge-rules/default.toml (embedded)";

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages and `check`.
    pub source: String,
    pub server: Server,
    pub dns: Dns,
    pub tls: Tls,
    pub local_domains: Vec<String>,
    pub senders: Senders,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub administrator: Option<String>,
    /// How long a receiver whose capabilities document could not be read
    /// is sent messages without asking for it again.
    pub unreadable_capabilities_retry: Duration,
    pub imip: Imip,
    pub smtp: Smtp,
    pub queue: Queue,
    /// How long a POST's answer is kept to answer a retry of it identically.
    pub idempotency_window: Duration,
    /// Where the durable state (queue, reply tokens, idempotency keys) is.
    pub store: StoreLocation,
    pub mail: Mail,
    pub dkim: Dkim,
    pub routes: Vec<Route>,
}

/// `[store]`: an embedded redb folder (the default, one bridge), or a
/// PostgreSQL database several bridges share.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Redb(PathBuf),
    Postgres(Postgres),
}

/// `[store] url = "postgres://…"` and the pool's settings.
#[derive(Debug, Clone)]
pub struct Postgres {
    pub url: DatabaseUrl,
    /// Connections per bridge.
    pub pool_size: usize,
    /// Bounds connecting, and waiting for a free pooled connection.
    pub connect_timeout: Duration,
}

/// A `postgres://` URL, which may hold a password: shown (Debug, Display,
/// logs, `check`) with the password replaced by `***`; only
/// [`DatabaseUrl::secret`] gives the real text, for connecting.
#[derive(Clone)]
pub struct DatabaseUrl(Url);

impl DatabaseUrl {
    pub fn secret(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Cannot fail: the URL has a host, or it would have no password.
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// DKIM for iSchedule: the keys this bridge signs with, the keys partners
/// gave it privately, and how strictly remote senders are checked.
#[derive(Debug, Clone)]
pub struct Dkim {
    /// In file order: the first key of a domain signs for it.
    pub keys: Vec<DkimKey>,
    pub trusted: Vec<TrustedKey>,
    /// How long a signature stays valid (`x=` minus `t=`).
    pub lifetime: Duration,
    /// For remote senders whose originator no `[[route]] dkim` matches.
    pub verify: DkimPolicy,
}

/// A local domain's signing key.
#[derive(Debug, Clone)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    pub key: SigningKey,
    /// Where verifiers may fetch the public key (`q=`).
    pub methods: Vec<KeyMethod>,
    /// The PEM file, for `check`.
    pub path: PathBuf,
}

/// A remote domain's public key, exchanged out of band (`private-exchange`).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub domain: String,
    pub selector: String,
    pub key: PublicKey,
}

/// How remote (not local) iSchedule senders must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DkimPolicy {
    /// A valid signature of the originator's domain, or 403.
    Require,
    /// A signature, if present, must be valid; unsigned requests are
    /// still taken, but never free-busy requests or cancellations.
    Optional,
    /// Signatures are not looked at.
    Off,
}

impl DkimPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimPolicy::Require => "require",
            DkimPolicy::Optional => "optional",
            DkimPolicy::Off => "off",
        }
    }
}

impl std::fmt::Display for DkimPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a domain is reached natively, by mail, or natively with mail as
/// the fallback (DESIGN.md "fallback").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    NativeOnly,
    ImipOnly,
    /// Native when a receiver exists; iMIP when none does, or when it is
    /// unreachable, answers 5xx, or lacks a needed capability.
    NativeThenImip,
}

impl Mode {
    pub fn allows_imip(self) -> bool {
        self != Mode::NativeOnly
    }

    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::NativeOnly => "native-only",
            Mode::ImipOnly => "imip-only",
            Mode::NativeThenImip => "native-then-imip",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How replies to an invitation sent by mail find their way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplyRouting {
    /// The organizer's own mail domain delivers calendar replies to the bridge.
    OrganizerDomain,
    /// ORGANIZER is rewritten to `<prefix>+<token>@<token_domain>`.
    Token,
}

impl ReplyRouting {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyRouting::OrganizerDomain => "organizer-domain",
            ReplyRouting::Token => "token",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Imip {
    pub mode: Mode,
    pub reply_routing: ReplyRouting,
    pub token_prefix: String,
    pub token_domain: String,
    /// How long a reply token stays valid after it was last issued for
    /// its event (each new mail for the event renews it).
    pub token_lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct Smtp {
    /// Relay, the recipients' MX, or the outbox folder.
    pub route: crate::smtp::Route,
    /// The bridge's own address: envelope sender and From.
    pub from: String,
    pub helo: Option<String>,
    pub direct_port: u16,
    pub status_map: crate::smtp::StatusMap,
    /// The file `status_map` was read from (`None`: the embedded one), for
    /// `check`.
    pub status_map_file: Option<PathBuf>,
    pub timeout: Duration,
    /// SMTP sessions open at once to one relay or MX host.
    pub max_sessions_per_host: usize,
}

/// Inbound iMIP: the listeners and who may hand mail to them.
#[derive(Debug, Clone)]
pub struct Mail {
    pub smtp_listen: Option<SocketAddr>,
    pub lmtp_listen: Option<SocketAddr>,
    /// Greeting, DSN Reporting-MTA and MAILER-DAEMON domain.
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    /// Sessions at once from one client address, per listener.
    pub max_connections_per_client: usize,
    /// How long one SMTP/LMTP session may last.
    pub session_timeout: Duration,
    /// Command lines per session (NOOP, RSET, HELP included).
    pub max_commands: usize,
    /// How long handling one delivered mail may take (authentication,
    /// receivers, next hop); then every recipient gets 451 4.4.7.
    pub delivery_timeout: Duration,
    /// Clients trusted to speak for the local domains without DMARC.
    pub local_clients: Vec<IpNet>,
    pub accept: Vec<Accept>,
    /// Where mail that is not turned into iSchedule goes unchanged.
    pub next_hop: Option<crate::smtp::Route>,
    /// STARTTLS certificate chain and key (SMTP listener).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// SMTP AUTH accounts (local clients by password).
    pub users: Vec<(String, String)>,
}

/// What may vouch for an inbound mail's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accept {
    /// A local client: allow-listed address or SMTP AUTH.
    Local,
    /// A reply token this bridge issued.
    Token,
    /// DMARC pass (aligned DKIM or SPF) for the From domain.
    Dmarc,
}

impl Accept {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Accept::Local => "local",
            Accept::Token => "token",
            Accept::Dmarc => "dmarc",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// Older messages are given up and reported to the organizer.
    pub max_age: Duration,
    /// Messages held at once; beyond it mail that would be queued is
    /// answered `5.1`, so its sender keeps it and retries.
    pub max_messages: usize,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub tls: Vec<TlsListener>,
    /// The receiver path served besides `/.well-known/ischedule`.
    pub path: String,
    /// Where requests that are not iSchedule go, unchanged.
    pub origin: Option<Url>,
    /// HTTP connections open at once, in all and from one client address.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// The whole request header must arrive within this, however slowly
    /// its bytes trickle in.
    pub header_timeout: Duration,
    /// Metrics and health checks (`proxy::admin`); none without it.
    pub admin_listen: Option<SocketAddr>,
    /// Zero-downtime upgrade (`serve --upgrade`): the Unix socket the old
    /// process hands its listening sockets over on.
    pub upgrade_sock: PathBuf,
    /// Where `serve` writes its process id (systemd's `PIDFile=` follows
    /// the new process through it).
    pub pid_file: PathBuf,
    /// After SIGQUIT or SIGTERM (and the upgrade's fixed 5 s of handing
    /// over): how long requests and mail sessions in progress may go on
    /// (an upper bound: an old process hands the store over as soon as it
    /// has no work in progress).
    pub grace_period: Duration,
    /// Then how long the runtimes get to stop (Pingora's
    /// `graceful_shutdown_timeout_seconds`: work on blocking threads,
    /// such as a store commit, is waited for this long).
    pub shutdown_timeout: Duration,
    /// How long, in a process started with `--upgrade`, store operations
    /// wait for the old process to let go of the redb state file.
    pub handover_timeout: Duration,
}

impl Server {
    /// After a stop, how long an idle connection (a kept-alive HTTP one,
    /// an SMTP session between commands) may still begin a request or a
    /// command: a client may have sent it already. Half the grace period,
    /// at most 1 s; then it is closed so the process can finish.
    pub fn drain(&self) -> Duration {
        (self.grace_period / 2).min(Duration::from_secs(1))
    }
}

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Dns {
    /// Empty: the system resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    pub strip_subdomains: bool,
    /// Upper bound for caching "no receiver" answers.
    pub negative_ttl: Duration,
    /// Upper bound for caching any answer, whatever its TTL says.
    pub max_ttl: Duration,
    /// Non-public ranges that addresses learnt from DNS or a redirect may
    /// still be in (internal receivers or mail servers).
    pub allow_private_targets: Vec<IpNet>,
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Extra CA certificates trusted for receivers, on top of the system roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Senders {
    pub allow: Vec<IpNet>,
    pub secret_header: String,
    pub shared_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_content_length: u64,
    pub max_recipients: usize,
    pub max_instances: Option<u64>,
    pub min_date_time: Option<Stamp>,
    pub max_date_time: Option<Stamp>,
    pub max_redirects: usize,
    /// Receivers answering more than this are cut off (a schedule-response
    /// with calendar-data for many recipients is the largest legitimate one).
    pub max_response_bytes: usize,
    /// Requests in flight at once to one receiver (scheme, host, port);
    /// the others wait their turn within the receiver timeout.
    pub max_requests_per_receiver: usize,
    pub inline_attachments: bool,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    /// One request to one receiver, connect to last byte.
    pub receiver: Duration,
    /// A whole inbound POST, fan-out included.
    pub request: Duration,
    pub dns: Duration,
}

/// A static route: first match wins, before any DNS lookup.
#[derive(Debug, Clone)]
pub struct Route {
    pub matcher: RouteMatch,
    /// The receiver; `None` only for `imip-only` routes.
    pub to: Option<Url>,
    pub mode: Option<Mode>,
    pub reply_routing: Option<ReplyRouting>,
    /// Inbound mail from addresses this route matches: what may vouch.
    pub accept: Option<Vec<Accept>>,
    /// iSchedule requests from originators this route matches: DKIM policy.
    pub dkim: Option<DkimPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// A whole domain (and its sub-domains when written `*.example.com`).
    Domain {
        name: String,
        subdomains: bool,
    },
    Address(CalAddress),
}

impl RouteMatch {
    pub fn matches(&self, address: &CalAddress) -> bool {
        match self {
            RouteMatch::Address(a) => a == address,
            RouteMatch::Domain { name, subdomains } => address.domain().is_some_and(|d| {
                d == *name
                    || (*subdomains
                        && d.strip_suffix(name.as_str())
                            .is_some_and(|p| p.ends_with('.')))
            }),
        }
    }
}

impl std::fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteMatch::Address(a) => write!(f, "address {a}"),
            RouteMatch::Domain {
                name,
                subdomains: true,
            } => write!(f, "domain *.{name}"),
            RouteMatch::Domain { name, .. } => write!(f, "domain {name}"),
        }
    }
}

impl Config {
    /// Loads and validates a file; relative paths in it are taken from the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            key: String::new(),
            why: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// The embedded default.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_TOML, DEFAULT_NAME, Path::new("."))
    }

    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw = file::parse(text, source)?;
        validate::validate(raw, source, base)
    }

    /// What may vouch for inbound mail from `originator`: its route's
    /// `accept`, else `[mail] accept`.
    pub fn accepted_for(&self, originator: &CalAddress) -> &[Accept] {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(originator))
            .and_then(|r| r.accept.as_deref())
            .unwrap_or(&self.mail.accept)
    }

    /// How a remote sender speaking for `originator` must authenticate:
    /// its route's `dkim`, else `dkim.verify`.
    pub fn dkim_policy_for(&self, originator: &CalAddress) -> DkimPolicy {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(originator))
            .and_then(|r| r.dkim)
            .unwrap_or(self.dkim.verify)
    }

    /// The key that signs for `domain`: its first; later ones stay published
    /// at the well-known URI while verifiers still hold old signatures
    /// (key rotation).
    pub fn signing_key(&self, domain: &str) -> Option<&DkimKey> {
        self.dkim.keys.iter().find(|k| k.domain == domain)
    }

    /// Is this a domain whose users the bridge serves?
    pub fn is_local(&self, address: &CalAddress) -> bool {
        address
            .domain()
            .is_some_and(|d| self.local_domains.contains(&d))
    }
}

#[cfg(test)]
mod tests;
