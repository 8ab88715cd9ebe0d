//! Turns the file as written into a [`Config`], naming the key of every
//! value that is wrong and why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::file::{self, File};
use super::{Config, Dns, Limits, Route, RouteMatch, Senders, Server, Timeouts, Tls, TlsListener};
use crate::ischedule::CalAddress;
use crate::itip::Stamp;

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

pub fn validate(raw: File, source: &str, base: &Path) -> Result<Config, ConfigError> {
    let c = Checker { source, base };
    let server = server(&c, raw.server)?;
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
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(&c, i, r))
        .collect::<Result<Vec<_>, _>>()?;
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
        routes,
    })
}

fn server(c: &Checker, s: file::Server) -> Result<Server, ConfigError> {
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
                cert: c.existing_file(&format!("server.tls[{i}].cert"), &t.cert)?,
                key: c.existing_file(&format!("server.tls[{i}].key"), &t.key)?,
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
    Ok(Server {
        listen,
        tls,
        path,
        origin,
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
    })
}

fn senders(c: &Checker, s: file::Senders) -> Result<Senders, ConfigError> {
    let allow = s
        .allow
        .unwrap_or_else(|| vec!["127.0.0.0/8".into(), "::1/128".into()])
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    c.err(
                        format!("senders.allow[{i}]"),
                        format!("'{a}' is not an IP address or CIDR block"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
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
    Ok(Limits {
        max_content_length,
        max_recipients: max_recipients as usize,
        max_instances: l.max_instances,
        min_date_time,
        max_date_time,
        max_redirects: max_redirects as usize,
        max_response_bytes: max_response_bytes as usize,
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
    let to =
        r.to.ok_or_else(|| c.err(key("to"), "missing: the receiver URL"))?;
    Ok(Route {
        matcher,
        to: c.url(&key("to"), &to)?,
    })
}
