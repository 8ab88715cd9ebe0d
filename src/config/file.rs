//! The configuration file as written: serde types mirroring the TOML keys.
//! Unknown keys are errors, so a typo never silently falls back to a default.
//! The same types are serialised by `effective.rs`, so `check` prints the
//! effective configuration in exactly these keys.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub domains: Domains,
    #[serde(default)]
    pub senders: Senders,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub imip: Imip,
    #[serde(default)]
    pub smtp: Smtp,
    #[serde(default)]
    pub queue: Queue,
    #[serde(default)]
    pub idempotency: Idempotency,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub mail: Mail,
    #[serde(default)]
    pub dkim: Dkim,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
}

/// `listen` takes one address or a list.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged, expecting = "an \"IP:port\" string or a list of them")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<OneOrMany>,
    pub path: Option<String>,
    pub origin: Option<String>,
    pub admin_listen: Option<String>,
    #[serde(default)]
    pub tls: Vec<TlsListener>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub header_timeout_secs: Option<f64>,
    pub upgrade_sock: Option<String>,
    pub pid_file: Option<String>,
    pub grace_period_secs: Option<u64>,
    pub shutdown_timeout_secs: Option<u64>,
    pub handover_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub strip_subdomains: bool,
    pub negative_ttl_secs: Option<u64>,
    pub max_ttl_secs: Option<u64>,
    pub allow_private_targets: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Domains {
    #[serde(default)]
    pub local: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Senders {
    pub allow: Option<Vec<String>>,
    pub secret_header: Option<String>,
    pub shared_secret: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_content_length: Option<u64>,
    pub max_recipients: Option<u64>,
    pub max_instances: Option<u64>,
    pub min_date_time: Option<String>,
    pub max_date_time: Option<String>,
    pub max_redirects: Option<u64>,
    pub max_response_bytes: Option<u64>,
    pub max_requests_per_receiver: Option<u64>,
    pub inline_attachments: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect_secs: Option<f64>,
    pub receiver_secs: Option<f64>,
    pub request_secs: Option<f64>,
    pub dns_secs: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    pub administrator: Option<String>,
    pub unreadable_retry_secs: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Imip {
    pub mode: Option<String>,
    pub reply_routing: Option<String>,
    pub token_prefix: Option<String>,
    pub token_domain: Option<String>,
    pub token_lifetime_days: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub relay: Option<String>,
    pub outbox: Option<String>,
    pub from: Option<String>,
    pub helo: Option<String>,
    pub direct_port: Option<u16>,
    pub status_map: Option<String>,
    pub timeout_secs: Option<f64>,
    pub max_sessions_per_host: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub first_retry_secs: Option<u64>,
    pub max_retry_secs: Option<u64>,
    pub max_age_secs: Option<u64>,
    pub max_messages: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    pub window_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub path: Option<String>,
    pub url: Option<String>,
    pub pool_size: Option<u64>,
    pub connect_timeout_secs: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Mail {
    pub smtp_listen: Option<String>,
    pub lmtp_listen: Option<String>,
    pub hostname: Option<String>,
    pub max_message_bytes: Option<u64>,
    pub max_recipients: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub session_timeout_secs: Option<u64>,
    pub max_commands: Option<u64>,
    pub delivery_timeout_secs: Option<u64>,
    pub local_clients: Option<Vec<String>>,
    pub accept: Option<Vec<String>>,
    pub next_hop: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    #[serde(default)]
    pub users: Vec<MailUser>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailUser {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    pub lifetime_secs: Option<u64>,
    pub verify: Option<String>,
    #[serde(default)]
    pub keys: Vec<DkimKey>,
    #[serde(default)]
    pub trusted: Vec<TrustedKey>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    pub private_key: String,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub domain: String,
    pub selector: String,
    pub public_key: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub domain: Option<String>,
    pub address: Option<String>,
    pub to: Option<String>,
    pub mode: Option<String>,
    pub reply_routing: Option<String>,
    pub accept: Option<Vec<String>>,
    pub dkim: Option<String>,
}

/// Syntax and shape errors, with the key path serde was in and the line.
pub fn parse(text: &str, source: &str) -> Result<File, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| syntax_error(source, text, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let why = inner.message().to_string();
        let at = inner
            .span()
            .map(|s| format!(" (line {})", line_of(text, s.start)))
            .unwrap_or_default();
        ConfigError {
            file: source.to_string(),
            key: if key == "." { String::new() } else { key },
            why: format!("{why}{at}"),
        }
    })
}

fn syntax_error(source: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e
        .span()
        .map(|s| format!(" (line {})", line_of(text, s.start)))
        .unwrap_or_default();
    ConfigError {
        file: source.to_string(),
        key: String::new(),
        why: format!("TOML syntax: {}{at}", e.message()),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}
