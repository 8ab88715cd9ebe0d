//! Turns the file as written into a [`Config`], naming the key of every
//! value that is wrong and why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use url::Url;

use super::effective::REDACTED;
use super::file::{self, File};
use super::{
    Accept, Config, DatabaseUrl, Dkim, DkimKey, DkimPolicy, Dns, Imip, Limits, Mail, Mode,
    Postgres, Queue, ReplyRouting, Route, RouteMatch, Senders, Server, Smtp, StoreLocation,
    Timeouts, Tls, TlsListener, TrustedKey,
};
use crate::dkim::{KeyMethod, PublicKey, SigningKey};
use crate::itip::CalAddress;
use crate::itip::Stamp;
use crate::smtp::StatusMap;

/// A configuration error: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{why}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub why: String,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8008";
const DEFAULT_PATH: &str = "/ischedule";
const DEFAULT_SECRET_HEADER: &str = "X-Bridge-Secret";
/// During an upgrade the old process goes on accepting for this long after
/// it handed its listening sockets over (a constant of the HTTP framework),
/// so both serve at once before it starts its grace period.
pub const OLD_PROCESS_ACCEPTS_SECS: u64 = 5;

/// Collects the file name once so each check only says key and reason.
struct Checker<'a> {
    source: &'a str,
    base: &'a Path,
}

impl Checker<'_> {
    fn err(&self, key: impl Into<String>, why: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_string(),
            key: key.into(),
            why: why.into(),
        }
    }

    fn socket(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value
            .parse()
            .map_err(|_| self.err(key, format!("'{value}' is not an IP:port socket address")))
    }

    fn existing_file(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let path = self.base.join(value);
        if path.is_file() {
            Ok(path)
        } else {
            Err(self.err(key, format!("file '{}' does not exist", path.display())))
        }
    }

    /// A PEM certificate chain: Pingora only reads it when the listener
    /// starts, where a bad file would take every listener down.
    fn certificate(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let path = self.existing_file(key, value)?;
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                self.err(
                    key,
                    format!("'{}' is not a PEM certificate file: {e}", path.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(self.err(
                key,
                format!("'{}' holds no PEM certificate", path.display()),
            ));
        }
        Ok(path)
    }

    fn private_key(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let path = self.existing_file(key, value)?;
        PrivateKeyDer::from_pem_file(&path).map_err(|e| {
            self.err(
                key,
                format!("'{}' is not a PEM private key: {e}", path.display()),
            )
        })?;
        Ok(path)
    }

    /// The placeholder `check` prints for a secret is not one: a printed
    /// configuration copied back must not run with a password everyone knows.
    fn secret(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if value == REDACTED {
            return Err(self.err(
                key,
                format!("'{REDACTED}' is what `check` prints in place of a secret: write the secret itself"),
            ));
        }
        Ok(())
    }

    /// A relay or next hop; its password, if any, must not be the placeholder.
    fn mail_route(
        &self,
        key: &str,
        value: Option<&str>,
        outbox: &Path,
    ) -> Result<crate::smtp::Route, ConfigError> {
        let route = crate::smtp::Route::parse(value, outbox)
            .map_err(|why| self.err(key, why.to_string()))?;
        if let crate::smtp::Route::Relay {
            credentials: Some((_, password)),
            ..
        } = &route
        {
            self.secret(key, password)?;
        }
        Ok(route)
    }

    fn url(&self, key: &str, value: &str) -> Result<Url, ConfigError> {
        let url =
            Url::parse(value).map_err(|e| self.err(key, format!("'{value}' is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.err(
                key,
                format!("'{value}' must be an http:// or https:// URL with a host"),
            ));
        }
        Ok(url)
    }

    fn seconds(
        &self,
        key: &str,
        value: Option<f64>,
        default: f64,
    ) -> Result<Duration, ConfigError> {
        let v = value.unwrap_or(default);
        if !(v > 0.0 && v <= 86_400.0) {
            return Err(self.err(
                key,
                format!("{v} is not a number of seconds between 0 and 86400"),
            ));
        }
        Ok(Duration::from_secs_f64(v))
    }

    fn domain(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let d = value.trim().trim_end_matches('.').to_ascii_lowercase();
        let ok = !d.is_empty()
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if ok {
            Ok(d)
        } else {
            Err(self.err(key, format!("'{value}' is not a domain name")))
        }
    }

    fn mode(&self, key: &str, value: Option<&str>) -> Result<Option<Mode>, ConfigError> {
        value
            .map(|v| match v {
                "native-only" => Ok(Mode::NativeOnly),
                "imip-only" => Ok(Mode::ImipOnly),
                "native-then-imip" => Ok(Mode::NativeThenImip),
                _ => Err(self.err(
                    key,
                    format!("'{v}' is not one of native-only, imip-only, native-then-imip"),
                )),
            })
            .transpose()
    }

    fn reply_routing(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<ReplyRouting>, ConfigError> {
        value
            .map(|v| match v {
                "organizer-domain" => Ok(ReplyRouting::OrganizerDomain),
                "token" => Ok(ReplyRouting::Token),
                _ => Err(self.err(key, format!("'{v}' is not one of organizer-domain, token"))),
            })
            .transpose()
    }

    fn accept(&self, key: &str, values: &[String]) -> Result<Vec<Accept>, ConfigError> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                "local" => Ok(Accept::Local),
                "token" => Ok(Accept::Token),
                "dmarc" => Ok(Accept::Dmarc),
                _ => Err(self.err(
                    format!("{key}[{i}]"),
                    format!("'{v}' is not one of local, token, dmarc"),
                )),
            })
            .collect()
    }

    fn dkim_policy(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<DkimPolicy>, ConfigError> {
        value
            .map(|v| match v {
                "require" => Ok(DkimPolicy::Require),
                "optional" => Ok(DkimPolicy::Optional),
                "off" => Ok(DkimPolicy::Off),
                _ => Err(self.err(key, format!("'{v}' is not one of require, optional, off"))),
            })
            .transpose()
    }

    fn cidrs(&self, key: &str, values: &[String]) -> Result<Vec<IpNet>, ConfigError> {
        values
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse::<IpNet>()
                    .or_else(|_| a.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        self.err(
                            format!("{key}[{i}]"),
                            format!("'{a}' is not an IP address or CIDR block"),
                        )
                    })
            })
            .collect()
    }

    fn email(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        match CalAddress::parse(&format!("mailto:{value}"))
            .ok()
            .and_then(|a| a.email().map(str::to_string))
        {
            Some(email) => Ok(email),
            None => Err(self.err(key, format!("'{value}' is not an e-mail address"))),
        }
    }

    fn stamp(&self, key: &str, value: Option<&str>) -> Result<Option<Stamp>, ConfigError> {
        value
            .map(|v| {
                Stamp::parse(v).ok_or_else(|| {
                    self.err(
                        key,
                        format!("'{v}' is not a UTC DATE-TIME like 19910101T000000Z"),
                    )
                })
            })
            .transpose()
    }
}

/// A count between 1 and `max`, `default` when unset.
fn bounded(
    c: &Checker,
    key: &str,
    value: Option<u64>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if (1..=max).contains(&v) {
        Ok(v)
    } else {
        Err(c.err(key, format!("{v} is not between 1 and {max}")))
    }
}

pub fn validate(raw: File, source: &str, base: &Path) -> Result<Config, ConfigError> {
    let c = Checker { source, base };
    let store = store(&c, raw.store)?;
    // The upgrade socket and the pid file live beside the embedded store,
    // or where it would be when the state is in PostgreSQL.
    let runtime_dir = match &store {
        StoreLocation::Redb(path) => path.clone(),
        StoreLocation::Postgres(_) => c.base.join("state"),
    };
    let server = server(&c, raw.server, &runtime_dir)?;
    let dns = dns(&c, raw.dns)?;
    let tls = Tls {
        ca_file: raw
            .tls
            .ca_file
            .map(|f| c.existing_file("tls.ca_file", &f))
            .transpose()?,
    };
    let local_domains = raw
        .domains
        .local
        .iter()
        .enumerate()
        .map(|(i, d)| c.domain(&format!("domains.local[{i}]"), d))
        .collect::<Result<Vec<_>, _>>()?;
    let senders = senders(&c, raw.senders)?;
    let limits = limits(&c, raw.limits)?;
    let timeouts = Timeouts {
        connect: c.seconds("timeouts.connect_secs", raw.timeouts.connect_secs, 5.0)?,
        receiver: c.seconds("timeouts.receiver_secs", raw.timeouts.receiver_secs, 30.0)?,
        request: c.seconds("timeouts.request_secs", raw.timeouts.request_secs, 60.0)?,
        dns: c.seconds("timeouts.dns_secs", raw.timeouts.dns_secs, 5.0)?,
    };
    if timeouts.receiver > timeouts.request {
        return Err(c.err(
            "timeouts.receiver_secs",
            "must not exceed timeouts.request_secs",
        ));
    }
    let administrator = raw
        .capabilities
        .administrator
        .map(|a| {
            CalAddress::parse(&a)
                .map(|_| a.clone())
                .map_err(|e| c.err("capabilities.administrator", e.to_string()))
        })
        .transpose()?;
    let unreadable_capabilities_retry = c.seconds(
        "capabilities.unreadable_retry_secs",
        raw.capabilities.unreadable_retry_secs,
        60.0,
    )?;
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(&c, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let smtp = smtp(&c, raw.smtp, local_domains.first())?;
    let imip = imip(&c, raw.imip, &smtp)?;
    let queue = queue(&c, raw.queue)?;
    let idempotency_window = Duration::from_secs(raw.idempotency.window_secs.unwrap_or(86_400));
    let mail = mail(&c, raw.mail, &imip)?;
    let dkim = dkim(&c, raw.dkim)?;
    Ok(Config {
        source: source.to_string(),
        server,
        dns,
        tls,
        local_domains,
        senders,
        limits,
        timeouts,
        administrator,
        unreadable_capabilities_retry,
        imip,
        smtp,
        queue,
        idempotency_window,
        store,
        mail,
        dkim,
        routes,
    })
}

/// `[store]`: `path` (redb, the default) or `url` (PostgreSQL), never both.
/// The URL's syntax is checked here; nothing connects before the bridge
/// starts.
fn store(c: &Checker, s: file::Store) -> Result<StoreLocation, ConfigError> {
    let Some(url) = s.url else {
        for (key, set) in [
            ("store.pool_size", s.pool_size.is_some()),
            (
                "store.connect_timeout_secs",
                s.connect_timeout_secs.is_some(),
            ),
        ] {
            if set {
                return Err(c.err(key, "applies to PostgreSQL only: set store.url too"));
            }
        }
        let path = s.path.unwrap_or_else(|| "state".into());
        return Ok(StoreLocation::Redb(c.base.join(path)));
    };
    if s.path.is_some() {
        return Err(c.err(
            "store.url",
            "store.path and store.url are both set: choose one (path for the embedded redb, url for PostgreSQL)",
        ));
    }
    let parsed = Url::parse(&url)
        .ok()
        .filter(|u| matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some());
    // Shown without its password, whatever is wrong with it.
    let shown = |u: &Url| DatabaseUrl(u.clone()).to_string();
    let Some(parsed) = parsed else {
        return Err(c.err(
            "store.url",
            "must be a postgres:// URL with a host, e.g. postgres://bridge@db.example:5432/bridge",
        ));
    };
    match url.parse::<tokio_postgres::Config>() {
        Ok(settings) => {
            if let Some(password) = settings.get_password() {
                c.secret("store.url", &String::from_utf8_lossy(password))?;
            }
        }
        Err(e) => {
            return Err(c.err(
                "store.url",
                format!("{} is not a usable PostgreSQL URL: {e}", shown(&parsed)),
            ))
        }
    }
    let pool_size = match s.pool_size.unwrap_or(8) {
        n @ 1..=1000 => n as usize,
        n => return Err(c.err("store.pool_size", format!("{n} is not between 1 and 1000"))),
    };
    let connect_timeout = c.seconds("store.connect_timeout_secs", s.connect_timeout_secs, 5.0)?;
    Ok(StoreLocation::Postgres(Postgres {
        url: DatabaseUrl(parsed),
        pool_size,
        connect_timeout,
    }))
}

fn dkim(c: &Checker, d: file::Dkim) -> Result<Dkim, ConfigError> {
    let lifetime = d.lifetime_secs.unwrap_or(3600);
    if !(60..=7 * 86_400).contains(&lifetime) {
        return Err(c.err("dkim.lifetime_secs", "must be between 60 and 604800"));
    }
    let mut keys: Vec<DkimKey> = Vec::new();
    for (i, k) in d.keys.into_iter().enumerate() {
        let key = |name: &str| format!("dkim.keys[{i}].{name}");
        let domain = c.domain(&key("domain"), &k.domain)?;
        let selector = c.domain(&key("selector"), &k.selector)?;
        if keys
            .iter()
            .any(|o| o.domain == domain && o.selector == selector)
        {
            return Err(c.err(
                key("selector"),
                format!("{selector}._domainkey.{domain} is configured twice"),
            ));
        }
        let path = c.existing_file(&key("private_key"), &k.private_key)?;
        let pem = std::fs::read(&path).map_err(|e| {
            c.err(
                key("private_key"),
                format!("cannot read '{}': {e}", path.display()),
            )
        })?;
        let signing = SigningKey::from_pem(&pem)
            .map_err(|e| c.err(key("private_key"), format!("'{}': {e}", path.display())))?;
        if signing.bits() < 1024 {
            return Err(c.err(
                key("private_key"),
                format!(
                    "'{}' is an RSA key of {} bits; at least 1024 are needed (RFC 8301)",
                    path.display(),
                    signing.bits()
                ),
            ));
        }
        let methods = match k.methods {
            None => vec![KeyMethod::DnsTxt, KeyMethod::HttpWellKnown],
            Some(list) if list.is_empty() => {
                return Err(c.err(
                    key("methods"),
                    "give at least one of dns/txt, http/well-known, private-exchange",
                ))
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    KeyMethod::parse(m).ok_or_else(|| {
                        c.err(
                            format!("dkim.keys[{i}].methods[{j}]"),
                            format!(
                                "'{m}' is not one of dns/txt, http/well-known, private-exchange"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        keys.push(DkimKey {
            domain,
            selector,
            key: signing,
            methods,
            path,
        });
    }
    let trusted = d
        .trusted
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let key = |name: &str| format!("dkim.trusted[{i}].{name}");
            Ok(TrustedKey {
                domain: c.domain(&key("domain"), &t.domain)?,
                selector: c.domain(&key("selector"), &t.selector)?,
                key: PublicKey::from_base64(&t.public_key)
                    .map_err(|e| c.err(key("public_key"), e.to_string()))?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(Dkim {
        keys,
        trusted,
        lifetime: Duration::from_secs(lifetime),
        verify: c
            .dkim_policy("dkim.verify", d.verify.as_deref())?
            .unwrap_or(DkimPolicy::Require),
    })
}

fn mail(c: &Checker, m: file::Mail, imip: &Imip) -> Result<Mail, ConfigError> {
    let secs = |n: usize| Duration::from_secs(n as u64);
    let listen = |key: &str, v: Option<String>| v.map(|v| c.socket(key, &v)).transpose();
    let bounded = |key: &str, v: Option<u64>, default: u64, max: u64| {
        bounded(c, key, v, default, max).map(|v| v as usize)
    };
    let tls = match (m.tls_cert, m.tls_key) {
        (Some(cert), Some(key)) => Some((
            c.certificate("mail.tls_cert", &cert)?,
            c.private_key("mail.tls_key", &key)?,
        )),
        (None, None) => None,
        (Some(_), None) => return Err(c.err("mail.tls_key", "missing: mail.tls_cert needs a key")),
        (None, Some(_)) => {
            return Err(c.err("mail.tls_cert", "missing: mail.tls_key needs a certificate"))
        }
    };
    let next_hop = m
        .next_hop
        .map(|hop| c.mail_route("mail.next_hop", Some(&hop), Path::new("")))
        .transpose()?;
    Ok(Mail {
        smtp_listen: listen("mail.smtp_listen", m.smtp_listen)?,
        lmtp_listen: listen("mail.lmtp_listen", m.lmtp_listen)?,
        hostname: match m.hostname {
            Some(h) => c.domain("mail.hostname", &h)?,
            None => imip.token_domain.clone(),
        },
        max_message_bytes: bounded(
            "mail.max_message_bytes",
            m.max_message_bytes,
            10 << 20,
            100 << 20,
        )?,
        max_recipients: bounded("mail.max_recipients", m.max_recipients, 100, 10_000)?,
        max_connections: bounded("mail.max_connections", m.max_connections, 100, 10_000)?,
        max_connections_per_client: bounded(
            "mail.max_connections_per_client",
            m.max_connections_per_client,
            10,
            10_000,
        )?,
        session_timeout: secs(bounded(
            "mail.session_timeout_secs",
            m.session_timeout_secs,
            600,
            86_400,
        )?),
        max_commands: bounded("mail.max_commands", m.max_commands, 1000, 1_000_000)?,
        delivery_timeout: secs(bounded(
            "mail.delivery_timeout_secs",
            m.delivery_timeout_secs,
            120,
            3600,
        )?),
        // Empty by default: a local MTA on loopback hands over mail from
        // anywhere, so nothing is trusted for the local domains unless named.
        local_clients: c.cidrs("mail.local_clients", &m.local_clients.unwrap_or_default())?,
        accept: match m.accept {
            Some(list) => c.accept("mail.accept", &list)?,
            None => vec![Accept::Local, Accept::Token, Accept::Dmarc],
        },
        next_hop,
        tls,
        users: m
            .users
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                c.secret(&format!("mail.users[{i}].password"), &u.password)?;
                Ok((u.name, u.password))
            })
            .collect::<Result<_, ConfigError>>()?,
    })
}

/// Without `smtp.from`, the bridge writes as `calendar-bridge@` the first
/// local domain: mail from `@localhost` fails SPF and DMARC everywhere.
fn smtp(c: &Checker, s: file::Smtp, first_local: Option<&String>) -> Result<Smtp, ConfigError> {
    let default_from = format!(
        "calendar-bridge@{}",
        first_local.map_or("localhost", String::as_str)
    );
    let from = c.email("smtp.from", s.from.as_deref().unwrap_or(&default_from))?;
    let outbox = c.base.join(s.outbox.unwrap_or_else(|| "outbox".into()));
    let route = c.mail_route("smtp.relay", s.relay.as_deref(), &outbox)?;
    let status_map_file = s
        .status_map
        .map(|f| c.existing_file("smtp.status_map", &f))
        .transpose()?;
    let status_map = match &status_map_file {
        None => StatusMap::embedded(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                c.err(
                    "smtp.status_map",
                    format!("cannot read '{}': {e}", path.display()),
                )
            })?;
            StatusMap::parse(&text, &path.display().to_string()).map_err(|e| ConfigError {
                file: e.file,
                key: e.key,
                why: e.why,
            })?
        }
    };
    Ok(Smtp {
        route,
        from,
        helo: s.helo,
        direct_port: s.direct_port.unwrap_or(25),
        status_map,
        status_map_file,
        timeout: c.seconds("smtp.timeout_secs", s.timeout_secs, 30.0)?,
        max_sessions_per_host: bounded(
            c,
            "smtp.max_sessions_per_host",
            s.max_sessions_per_host,
            10,
            1_000,
        )? as usize,
    })
}

fn imip(c: &Checker, i: file::Imip, smtp: &Smtp) -> Result<Imip, ConfigError> {
    let token_prefix = i.token_prefix.unwrap_or_else(|| "ischedule".into());
    if token_prefix.is_empty()
        || !token_prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
    {
        return Err(c.err(
            "imip.token_prefix",
            format!("'{token_prefix}' must be letters, digits, '-' or '.'"),
        ));
    }
    let token_domain = match i.token_domain {
        Some(d) => c.domain("imip.token_domain", &d)?,
        None => smtp
            .from
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default(),
    };
    Ok(Imip {
        mode: c
            .mode("imip.mode", i.mode.as_deref())?
            .unwrap_or(Mode::NativeThenImip),
        reply_routing: c
            .reply_routing("imip.reply_routing", i.reply_routing.as_deref())?
            .unwrap_or(ReplyRouting::OrganizerDomain),
        token_prefix,
        token_domain,
        token_lifetime: Duration::from_secs(
            bounded(
                c,
                "imip.token_lifetime_days",
                i.token_lifetime_days,
                400,
                36_500,
            )? * 86_400,
        ),
    })
}

fn queue(c: &Checker, q: file::Queue) -> Result<Queue, ConfigError> {
    let first_retry = Duration::from_secs(q.first_retry_secs.unwrap_or(60));
    let max_retry = Duration::from_secs(q.max_retry_secs.unwrap_or(3600));
    let max_age = Duration::from_secs(q.max_age_secs.unwrap_or(5 * 86_400));
    if first_retry.is_zero() {
        return Err(c.err("queue.first_retry_secs", "must be at least 1"));
    }
    if max_retry < first_retry {
        return Err(c.err(
            "queue.max_retry_secs",
            "must not be below queue.first_retry_secs",
        ));
    }
    Ok(Queue {
        first_retry,
        max_retry,
        max_age,
        max_messages: bounded(
            c,
            "queue.max_messages",
            q.max_messages,
            100_000,
            100_000_000,
        )? as usize,
    })
}

fn server(c: &Checker, s: file::Server, state: &Path) -> Result<Server, ConfigError> {
    let listen = s
        .listen
        .map(file::OneOrMany::into_vec)
        .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()])
        .iter()
        .enumerate()
        .map(|(i, l)| c.socket(&format!("server.listen[{i}]"), l))
        .collect::<Result<Vec<_>, _>>()?;
    let tls = s
        .tls
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(TlsListener {
                listen: c.socket(&format!("server.tls[{i}].listen"), &t.listen)?,
                cert: c.certificate(&format!("server.tls[{i}].cert"), &t.cert)?,
                key: c.private_key(&format!("server.tls[{i}].key"), &t.key)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if listen.is_empty() && tls.is_empty() {
        return Err(c.err("server.listen", "no listener: give at least one address"));
    }
    let path = s.path.unwrap_or_else(|| DEFAULT_PATH.to_string());
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(c.err(
            "server.path",
            format!("'{path}' must be an absolute path without query"),
        ));
    }
    let origin = s.origin.map(|o| c.url("server.origin", &o)).transpose()?;
    let max_connections = bounded(
        c,
        "server.max_connections",
        s.max_connections,
        1_000,
        1_000_000,
    )? as usize;
    let max_connections_per_client = bounded(
        c,
        "server.max_connections_per_client",
        s.max_connections_per_client,
        64,
        1_000_000,
    )? as usize;
    if max_connections_per_client > max_connections {
        return Err(c.err(
            "server.max_connections_per_client",
            "must not exceed server.max_connections",
        ));
    }
    let admin_listen = s
        .admin_listen
        .map(|a| c.socket("server.admin_listen", &a))
        .transpose()?;
    // Beside the state by default: a directory the bridge owns and writes
    // anyway (systemd's StateDirectory=), unlike a shared /tmp.
    let upgrade_sock = s
        .upgrade_sock
        .map_or_else(|| state.join("upgrade.sock"), |p| c.base.join(p));
    // sun_path holds 108 bytes with the terminating NUL.
    let sock_len = upgrade_sock.as_os_str().len();
    if sock_len > 107 {
        return Err(c.err(
            "server.upgrade_sock",
            format!(
                "'{}' is {sock_len} bytes, a Unix socket path may have at most 107: give a shorter one",
                upgrade_sock.display()
            ),
        ));
    }
    let pid_file = s
        .pid_file
        .map_or_else(|| state.join("bridge.pid"), |p| c.base.join(p));
    let grace_period = bounded(c, "server.grace_period_secs", s.grace_period_secs, 5, 3600)?;
    let shutdown_timeout = bounded(
        c,
        "server.shutdown_timeout_secs",
        s.shutdown_timeout_secs,
        5,
        3600,
    )?;
    // The old process lets go of the store when it exits: after it kept
    // accepting while the new one took over, the grace period and the
    // runtimes' stop.
    let old_process_lasts = OLD_PROCESS_ACCEPTS_SECS + grace_period + shutdown_timeout;
    let handover_timeout = bounded(
        c,
        "server.handover_timeout_secs",
        s.handover_timeout_secs,
        old_process_lasts + 10,
        86_400,
    )?;
    if handover_timeout <= old_process_lasts {
        return Err(c.err(
            "server.handover_timeout_secs",
            format!(
                "{handover_timeout} s is too short: the old process may hold the store for \
                 {old_process_lasts} s ({OLD_PROCESS_ACCEPTS_SECS} s handing over, \
                 server.grace_period_secs, server.shutdown_timeout_secs)"
            ),
        ));
    }
    Ok(Server {
        listen,
        tls,
        path,
        origin,
        max_connections,
        max_connections_per_client,
        header_timeout: c.seconds("server.header_timeout_secs", s.header_timeout_secs, 10.0)?,
        admin_listen,
        upgrade_sock,
        pid_file,
        grace_period: Duration::from_secs(grace_period),
        shutdown_timeout: Duration::from_secs(shutdown_timeout),
        handover_timeout: Duration::from_secs(handover_timeout),
    })
}

fn dns(c: &Checker, d: file::Dns) -> Result<Dns, ConfigError> {
    let nameservers = d
        .nameservers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let key = format!("dns.nameservers[{i}]");
            // A bare IP means port 53, as in resolv.conf.
            n.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
                .or_else(|_| c.socket(&key, n))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let negative_ttl = Duration::from_secs(d.negative_ttl_secs.unwrap_or(300));
    let max_ttl = Duration::from_secs(d.max_ttl_secs.unwrap_or(86_400));
    if max_ttl.is_zero() {
        return Err(c.err("dns.max_ttl_secs", "must be at least 1"));
    }
    Ok(Dns {
        nameservers,
        strip_subdomains: d.strip_subdomains,
        negative_ttl,
        max_ttl,
        allow_private_targets: c.cidrs(
            "dns.allow_private_targets",
            &d.allow_private_targets.unwrap_or_default(),
        )?,
    })
}

fn senders(c: &Checker, s: file::Senders) -> Result<Senders, ConfigError> {
    let allow = c.cidrs(
        "senders.allow",
        &s.allow
            .unwrap_or_else(|| vec!["127.0.0.0/8".into(), "::1/128".into()]),
    )?;
    let secret_header = s
        .secret_header
        .unwrap_or_else(|| DEFAULT_SECRET_HEADER.to_string());
    if http::HeaderName::from_bytes(secret_header.as_bytes()).is_err() {
        return Err(c.err(
            "senders.secret_header",
            format!("'{secret_header}' is not an HTTP header name"),
        ));
    }
    if let Some(secret) = &s.shared_secret {
        c.secret("senders.shared_secret", secret)?;
        if secret.len() < 16 {
            return Err(c.err("senders.shared_secret", "must be at least 16 characters"));
        }
    }
    Ok(Senders {
        allow,
        secret_header,
        shared_secret: s.shared_secret,
    })
}

/// Requests in flight at once to one receiver. A calendar server takes
/// dozens at once from one peer, not thousands (Cyrus forks a process per
/// connection); past this the bridge queues instead of opening more
/// connections, which also keeps a burst's memory to the requests being
/// sent (bench/PROFILE.md, "One receiver, a bounded number of requests").
const DEFAULT_REQUESTS_PER_RECEIVER: u64 = 64;

fn limits(c: &Checker, l: file::Limits) -> Result<Limits, ConfigError> {
    let max_content_length = l.max_content_length.unwrap_or(1 << 20);
    if !(1024..=64 << 20).contains(&max_content_length) {
        return Err(c.err(
            "limits.max_content_length",
            "must be between 1024 and 67108864 bytes",
        ));
    }
    let max_recipients = l.max_recipients.unwrap_or(100);
    if !(1..=10_000).contains(&max_recipients) {
        return Err(c.err("limits.max_recipients", "must be between 1 and 10000"));
    }
    let min_date_time = c.stamp("limits.min_date_time", l.min_date_time.as_deref())?;
    let max_date_time = c.stamp("limits.max_date_time", l.max_date_time.as_deref())?;
    if let (Some(min), Some(max)) = (min_date_time, max_date_time) {
        if min >= max {
            return Err(c.err(
                "limits.max_date_time",
                "must be later than limits.min_date_time",
            ));
        }
    }
    let max_redirects = l.max_redirects.unwrap_or(3);
    if max_redirects > 10 {
        return Err(c.err("limits.max_redirects", "must be at most 10"));
    }
    let max_response_bytes = l.max_response_bytes.unwrap_or(4 << 20);
    if !(4096..=256 << 20).contains(&max_response_bytes) {
        return Err(c.err(
            "limits.max_response_bytes",
            "must be between 4096 and 268435456",
        ));
    }
    let max_requests_per_receiver = bounded(
        c,
        "limits.max_requests_per_receiver",
        l.max_requests_per_receiver,
        DEFAULT_REQUESTS_PER_RECEIVER,
        100_000,
    )? as usize;
    Ok(Limits {
        max_content_length,
        max_recipients: max_recipients as usize,
        max_instances: l.max_instances,
        min_date_time,
        max_date_time,
        max_redirects: max_redirects as usize,
        max_response_bytes: max_response_bytes as usize,
        max_requests_per_receiver,
        inline_attachments: l.inline_attachments.unwrap_or(false),
    })
}

fn route(c: &Checker, i: usize, r: file::Route) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("route[{i}].{k}");
    let matcher = match (r.domain, r.address) {
        (Some(d), None) => {
            let (name, subdomains) = match d.strip_prefix("*.") {
                Some(rest) => (rest, true),
                None => (d.as_str(), false),
            };
            RouteMatch::Domain {
                name: c.domain(&key("domain"), name)?,
                subdomains,
            }
        }
        (None, Some(a)) => RouteMatch::Address(
            CalAddress::parse(&a).map_err(|e| c.err(key("address"), e.to_string()))?,
        ),
        (Some(_), Some(_)) => {
            return Err(c.err(key("domain"), "give either domain or address, not both"))
        }
        (None, None) => {
            return Err(c.err(
                format!("route[{i}]"),
                "needs a domain or an address to match",
            ))
        }
    };
    let mode = c.mode(&key("mode"), r.mode.as_deref())?;
    let to = match (r.to, mode) {
        (Some(_), Some(Mode::ImipOnly)) => {
            return Err(c.err(
                key("to"),
                "an imip-only route sends mail: it takes no receiver URL",
            ))
        }
        (Some(to), _) => Some(c.url(&key("to"), &to)?),
        (None, Some(Mode::ImipOnly)) => None,
        (None, _) => {
            return Err(c.err(
                key("to"),
                "missing: the receiver URL (or mode = \"imip-only\")",
            ))
        }
    };
    Ok(Route {
        matcher,
        to,
        mode,
        reply_routing: c.reply_routing(&key("reply_routing"), r.reply_routing.as_deref())?,
        accept: r.accept.map(|a| c.accept(&key("accept"), &a)).transpose()?,
        dkim: c.dkim_policy(&key("dkim"), r.dkim.as_deref())?,
    })
}
