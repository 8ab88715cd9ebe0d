//! The effective configuration, printed by `check` after its summary.
//!
//! An admin reads the file they wrote, but the bridge acts on it with every
//! default filled in: a `smtp.from` derived from the first local domain, how
//! long the queue keeps trying, every limit and timeout. Printing the
//! validated [`Config`] back in the file's own keys shows what the bridge
//! will actually do, in a form that can be copied into a file and checked
//! again.
//!
//! - Every section and key is printed, durations in the file's units
//!   (`*_secs`, `*_days`), paths made absolute (relative ones are taken from
//!   the configuration file's folder, so a copy elsewhere would find other
//!   files).
//! - Keys that have no value in effect are left out, as TOML has no null:
//!   no relay (mail goes to `smtp.outbox`), no origin, a route key that
//!   falls back to its section (`[imip] mode`, `[mail] accept`, `[dkim]
//!   verify`). Lists are printed even when empty (`route = []`: no static
//!   route).
//! - Secrets never appear: `senders.shared_secret`, `mail.users[].password`
//!   and the password in any URL are printed as [`REDACTED`]. DKIM private
//!   keys are files; their path is printed, never the key.
//!
//! Adding a key: add it to `file.rs`; the struct literals below then stop
//! compiling until it is printed here. Then set it to a value other than its
//! default in `EVERY_KEY` (`config/tests.rs`), whose round trip fails for
//! any key of `file.rs` that is not printed or not set there (a key that
//! cannot be in effect together with the others goes in `NEVER_IN_EFFECT`,
//! with the reason).

use std::path::Path;

use url::Url;

use super::file::{self, File};
use super::{Config, Route, RouteMatch, StoreLocation};
use crate::smtp;

/// Printed in place of a secret. Not a usable value: `validate.rs` refuses
/// it as the shared secret, a mail user's password and a relay's or next
/// hop's password, so a printed configuration copied back cannot run with a
/// password everyone knows. (The bridge logs in with no password of
/// `server.origin` or a route's `to`, so there it is only redacted.)
pub const REDACTED: &str = "<redacted>";

/// The printed configuration could not be written as TOML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the effective configuration as TOML: {0}")]
pub struct EffectiveError(#[from] toml::ser::Error);

/// `config` in the file's TOML keys, defaults filled in, secrets redacted.
pub fn config(config: &Config) -> Result<String, EffectiveError> {
    Ok(toml::to_string(&to_file(config))?)
}

fn to_file(c: &Config) -> File {
    File {
        server: server(&c.server),
        dns: file::Dns {
            nameservers: strings(&c.dns.nameservers),
            strip_subdomains: c.dns.strip_subdomains,
            negative_ttl_secs: Some(c.dns.negative_ttl.as_secs()),
            max_ttl_secs: Some(c.dns.max_ttl.as_secs()),
            allow_private_targets: Some(strings(&c.dns.allow_private_targets)),
        },
        tls: file::Tls {
            ca_file: c.tls.ca_file.as_deref().map(path),
        },
        domains: file::Domains {
            local: c.local_domains.clone(),
        },
        senders: file::Senders {
            allow: Some(strings(&c.senders.allow)),
            secret_header: Some(c.senders.secret_header.clone()),
            shared_secret: c.senders.shared_secret.as_ref().map(|_| REDACTED.into()),
        },
        limits: limits(&c.limits),
        timeouts: file::Timeouts {
            connect_secs: Some(c.timeouts.connect.as_secs_f64()),
            receiver_secs: Some(c.timeouts.receiver.as_secs_f64()),
            request_secs: Some(c.timeouts.request.as_secs_f64()),
            dns_secs: Some(c.timeouts.dns.as_secs_f64()),
        },
        capabilities: file::Capabilities {
            administrator: c.administrator.clone(),
            unreadable_retry_secs: Some(c.unreadable_capabilities_retry.as_secs_f64()),
        },
        imip: file::Imip {
            mode: Some(c.imip.mode.as_str().into()),
            reply_routing: Some(c.imip.reply_routing.as_str().into()),
            token_prefix: Some(c.imip.token_prefix.clone()),
            token_domain: Some(c.imip.token_domain.clone()),
            token_lifetime_days: Some(c.imip.token_lifetime.as_secs() / 86_400),
        },
        smtp: smtp(&c.smtp),
        queue: file::Queue {
            first_retry_secs: Some(c.queue.first_retry.as_secs()),
            max_retry_secs: Some(c.queue.max_retry.as_secs()),
            max_age_secs: Some(c.queue.max_age.as_secs()),
            max_messages: Some(c.queue.max_messages as u64),
        },
        idempotency: file::Idempotency {
            window_secs: Some(c.idempotency_window.as_secs()),
        },
        store: store(&c.store),
        mail: mail(&c.mail),
        dkim: dkim(&c.dkim),
        routes: c.routes.iter().map(route).collect(),
    }
}

fn server(s: &super::Server) -> file::Server {
    file::Server {
        // Always a list: the one form that holds any number of listeners.
        listen: Some(file::OneOrMany::Many(strings(&s.listen))),
        path: Some(s.path.clone()),
        origin: s.origin.as_ref().map(redacted_url),
        admin_listen: s.admin_listen.map(|a| a.to_string()),
        tls: s
            .tls
            .iter()
            .map(|t| file::TlsListener {
                listen: t.listen.to_string(),
                cert: path(&t.cert),
                key: path(&t.key),
            })
            .collect(),
        max_connections: Some(s.max_connections as u64),
        max_connections_per_client: Some(s.max_connections_per_client as u64),
        header_timeout_secs: Some(s.header_timeout.as_secs_f64()),
        upgrade_sock: Some(path(&s.upgrade_sock)),
        pid_file: Some(path(&s.pid_file)),
        grace_period_secs: Some(s.grace_period.as_secs()),
        shutdown_timeout_secs: Some(s.shutdown_timeout.as_secs()),
        handover_timeout_secs: Some(s.handover_timeout.as_secs()),
    }
}

fn store(s: &StoreLocation) -> file::Store {
    match s {
        StoreLocation::Redb(dir) => file::Store {
            path: Some(path(dir)),
            url: None,
            pool_size: None,
            connect_timeout_secs: None,
        },
        StoreLocation::Postgres(pg) => file::Store {
            path: None,
            url: Url::parse(pg.url.secret()).ok().map(|u| redacted_url(&u)),
            pool_size: Some(pg.pool_size as u64),
            connect_timeout_secs: Some(pg.connect_timeout.as_secs_f64()),
        },
    }
}

fn limits(l: &super::Limits) -> file::Limits {
    file::Limits {
        max_content_length: Some(l.max_content_length),
        max_recipients: Some(l.max_recipients as u64),
        max_instances: l.max_instances,
        min_date_time: l.min_date_time.map(|s| s.to_string()),
        max_date_time: l.max_date_time.map(|s| s.to_string()),
        max_redirects: Some(l.max_redirects as u64),
        max_response_bytes: Some(l.max_response_bytes as u64),
        max_requests_per_receiver: Some(l.max_requests_per_receiver as u64),
        inline_attachments: Some(l.inline_attachments),
    }
}

fn smtp(s: &super::Smtp) -> file::Smtp {
    file::Smtp {
        relay: mail_route(&s.route),
        outbox: match &s.route {
            smtp::Route::Outbox { dir } => Some(path(dir)),
            _ => None,
        },
        from: Some(s.from.clone()),
        helo: s.helo.clone(),
        direct_port: Some(s.direct_port),
        status_map: s.status_map_file.as_deref().map(path),
        timeout_secs: Some(s.timeout.as_secs_f64()),
        max_sessions_per_host: Some(s.max_sessions_per_host as u64),
    }
}

fn mail(m: &super::Mail) -> file::Mail {
    file::Mail {
        smtp_listen: m.smtp_listen.map(|a| a.to_string()),
        lmtp_listen: m.lmtp_listen.map(|a| a.to_string()),
        hostname: Some(m.hostname.clone()),
        max_message_bytes: Some(m.max_message_bytes as u64),
        max_recipients: Some(m.max_recipients as u64),
        max_connections: Some(m.max_connections as u64),
        max_connections_per_client: Some(m.max_connections_per_client as u64),
        session_timeout_secs: Some(m.session_timeout.as_secs()),
        max_commands: Some(m.max_commands as u64),
        delivery_timeout_secs: Some(m.delivery_timeout.as_secs()),
        local_clients: Some(strings(&m.local_clients)),
        accept: Some(m.accept.iter().map(|a| a.as_str().into()).collect()),
        next_hop: m.next_hop.as_ref().and_then(mail_route),
        tls_cert: m.tls.as_ref().map(|(cert, _)| path(cert)),
        tls_key: m.tls.as_ref().map(|(_, key)| path(key)),
        users: m
            .users
            .iter()
            .map(|(name, _)| file::MailUser {
                name: name.clone(),
                password: REDACTED.into(),
            })
            .collect(),
    }
}

fn dkim(d: &super::Dkim) -> file::Dkim {
    file::Dkim {
        lifetime_secs: Some(d.lifetime.as_secs()),
        verify: Some(d.verify.as_str().into()),
        keys: d
            .keys
            .iter()
            .map(|k| file::DkimKey {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                private_key: path(&k.path),
                methods: Some(k.methods.iter().map(|m| m.as_str().into()).collect()),
            })
            .collect(),
        trusted: d
            .trusted
            .iter()
            .map(|t| file::TrustedKey {
                domain: t.domain.clone(),
                selector: t.selector.clone(),
                public_key: t.key.to_base64(),
            })
            .collect(),
    }
}

fn route(r: &Route) -> file::Route {
    let (domain, address) = match &r.matcher {
        RouteMatch::Domain { name, subdomains } => (
            Some(if *subdomains {
                format!("*.{name}")
            } else {
                name.clone()
            }),
            None,
        ),
        RouteMatch::Address(a) => (None, Some(a.to_string())),
    };
    file::Route {
        domain,
        address,
        to: r.to.as_ref().map(redacted_url),
        mode: r.mode.map(|m| m.as_str().into()),
        reply_routing: r.reply_routing.map(|m| m.as_str().into()),
        accept: r
            .accept
            .as_ref()
            .map(|a| a.iter().map(|a| a.as_str().into()).collect()),
        dkim: r.dkim.map(|d| d.as_str().into()),
    }
}

/// `smtp.relay` or `mail.next_hop` as written: `direct`, or the relay URL
/// with the user name it logs in with and the password redacted; none for
/// the outbox, which is `smtp.outbox`.
fn mail_route(route: &smtp::Route) -> Option<String> {
    Some(match route {
        smtp::Route::Relay {
            url,
            credentials: Some((user, _)),
        } => {
            // `Route::parse` took the user info out of the URL, so it is
            // `scheme://host[:port]`: the credentials go back after `://`.
            let (scheme, rest) = url.as_str().split_once("://").unwrap_or(("", url.as_str()));
            format!("{scheme}://{}:{REDACTED}@{rest}", encode_userinfo(user))
        }
        smtp::Route::Relay { url, .. } => url.to_string(),
        smtp::Route::Direct => "direct".into(),
        smtp::Route::Outbox { .. } => return None,
    })
}

/// A URL with its password (if any) redacted: for every URL `check`
/// prints, the summary's included.
pub fn redacted_url(url: &Url) -> String {
    match url.password() {
        Some(password) => {
            url.as_str()
                .replacen(&format!(":{password}@"), &format!(":{REDACTED}@"), 1)
        }
        None => url.to_string(),
    }
}

/// Percent-encodes all but RFC 3986 unreserved characters, so a user name
/// reads back the same from URL user info (which `Route::parse` decodes).
fn encode_userinfo(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Absolute, so the printed file means the same files wherever it is read
/// from; as the bridge resolves it when the current folder cannot be known.
fn path(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(T::to_string).collect()
}
