//! DNS I/O: SRV, TXT (receiver paths and DKIM keys), MX and address
//! lookups through hickory.
//!
//! Answers are cached by hickory itself, positive ones for their TTL and
//! negative ones for the SOA minimum, both capped by `[dns]` settings, so a
//! busy bridge asks DNS once per TTL and a missing record is not asked for
//! on every POST.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{ResolverBuilder, TokioResolver};

use super::srv::SrvRecord;
use crate::config;

/// A lookup that failed for a reason other than "no such record": the
/// answer is unknown, so nothing may be concluded from it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DNS lookup of {name} failed: {reason}")]
pub struct DnsFailure {
    pub name: String,
    pub reason: String,
}

/// The TXT `path=` key next to an SRV record (spec 6.2, RFC 6763 section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtPath {
    pub path: String,
    pub ttl: u32,
}

pub struct DnsResolver {
    inner: TokioResolver,
}

impl DnsResolver {
    pub fn new(dns: &config::Dns, timeout: Duration) -> Result<DnsResolver, DnsFailure> {
        let failure = |e: NetError| DnsFailure {
            name: "resolver configuration".into(),
            reason: e.to_string(),
        };
        let mut builder = resolver_builder(&dns.nameservers, timeout).map_err(failure)?;
        let opts = builder.options_mut();
        opts.positive_max_ttl = Some(dns.max_ttl);
        opts.negative_max_ttl = Some(dns.negative_ttl.min(dns.max_ttl));
        Ok(DnsResolver {
            inner: builder.build().map_err(failure)?,
        })
    }

    /// `Ok(None)` when the name has no SRV records (NXDOMAIN or NODATA).
    pub async fn srv(&self, name: &str) -> Result<Option<Vec<SrvRecord>>, DnsFailure> {
        let Some(lookup) = absent_is_none(name, self.inner.srv_lookup(fqdn(name)).await)? else {
            return Ok(None);
        };
        let records: Vec<SrvRecord> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: host_text(&srv.target.to_ascii()),
                    ttl: r.ttl,
                }),
                _ => None,
            })
            .collect();
        Ok((!records.is_empty()).then_some(records))
    }

    /// The `path=` value of the TXT records at `name`, if any.
    pub async fn txt_path(&self, name: &str) -> Result<Option<TxtPath>, DnsFailure> {
        let Some(lookup) = absent_is_none(name, self.inner.txt_lookup(fqdn(name)).await)? else {
            return Ok(None);
        };
        Ok(lookup.answers().iter().find_map(|r| match &r.data {
            RData::TXT(txt) => txt.txt_data.iter().find_map(|s| {
                let s = std::str::from_utf8(s).ok()?;
                let (key, value) = s.split_once('=')?;
                (key.eq_ignore_ascii_case("path") && is_request_path(value)).then(|| TxtPath {
                    path: value.to_string(),
                    ttl: r.ttl,
                })
            }),
            _ => None,
        }))
    }

    /// Every TXT record at `name`, each record's strings joined (a DKIM key
    /// record is longer than one 255-byte string); empty when there are none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsFailure> {
        let Some(lookup) = absent_is_none(name, self.inner.txt_lookup(fqdn(name)).await)? else {
            return Ok(vec![]);
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Mail exchangers of `domain` as (preference, exchange host without the
    /// trailing dot), in answer order; empty when the domain has none
    /// (NXDOMAIN or NODATA). A null MX (RFC 7505) comes back as `(0, ".")`.
    pub async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsFailure> {
        let Some(lookup) = absent_is_none(domain, self.inner.mx_lookup(fqdn(domain)).await)? else {
            return Ok(vec![]);
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, host_text(&mx.exchange.to_ascii()))),
                _ => None,
            })
            .collect())
    }

    /// Addresses of a host; an IP literal is returned as is.
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        match absent_is_none(host, self.inner.lookup_ip(fqdn(host)).await)? {
            Some(lookup) => Ok(lookup.iter().collect()),
            None => Ok(vec![]),
        }
    }
}

/// A resolver on the configured servers (each over UDP and TCP), or the
/// system's when none are configured; `timeout` per query, two attempts.
/// Shared with sender authentication, so both ask the same DNS.
pub fn resolver_builder(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, NetError> {
    // Hickory takes its cache counters from the recorder installed when
    // the resolver is built: make sure ours is.
    crate::metrics::get();
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = nameservers.iter().map(name_server).collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 2;
    Ok(builder)
}

fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let connection = |mut c: ConnectionConfig| {
        c.port = addr.port();
        c
    };
    NameServerConfig::new(
        addr.ip(),
        true,
        vec![
            connection(ConnectionConfig::udp()),
            connection(ConnectionConfig::tcp()),
        ],
    )
}

/// Longest TXT `path=` taken.
const MAX_PATH_LEN: usize = 255;

/// A TXT `path=` is whatever the recipient's domain publishes: only an
/// absolute path of RFC 3986 path characters is used, so it cannot carry a
/// query, a fragment, another authority (`//host`), or bytes that would
/// break the request line. Anything else is ignored like a missing key
/// (RFC 6763 6.4), and the well-known URI applies.
fn is_request_path(value: &str) -> bool {
    value.starts_with('/')
        && !value.starts_with("//")
        && value.len() <= MAX_PATH_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&b))
}

/// Names from calendar addresses are absolute: never apply search domains.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn host_text(name: &str) -> String {
    match name.trim_end_matches('.') {
        "" => ".".to_string(),
        host => host.to_ascii_lowercase(),
    }
}

fn absent_is_none<T>(name: &str, result: Result<T, NetError>) -> Result<Option<T>, DnsFailure> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
        Err(e) => Err(DnsFailure {
            name: name.to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::is_request_path;

    #[test]
    fn only_plain_absolute_paths_are_taken_from_txt() {
        assert!(is_request_path("/ischedule"));
        assert!(is_request_path("/cal/%7Euser/ischedule;v=1"));
        for bad in [
            "ischedule",
            "//evil.example/x",
            "/a?b",
            "/a#b",
            "/a b",
            "/a\r\nHost: x",
            "/\\server",
            &format!("/{}", "a".repeat(300)),
        ] {
            assert!(!is_request_path(bad), "{bad:?}");
        }
    }
}
