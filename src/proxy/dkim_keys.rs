//! Where the bridge finds a remote signer's public key: the DNS TXT record
//! through its own resolver, the signer's iSchedule host (found by the
//! same routing as receivers) at `/.well-known/domainkey/<d>/<s>`, or a
//! key configured in `[[dkim.trusted]]`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::forward::Forwarder;
use super::upstream::Request;
use crate::config::Config;
use crate::discovery::DnsResolver;
use crate::dkim::{self, KeyFetchError, KeyMethod, KeySource, Lookup};
use crate::itip::CalAddress;
use crate::routing::{Decision, Router};

pub struct KeyFetcher {
    pub config: Arc<Config>,
    pub resolver: Arc<DnsResolver>,
    pub forwarder: Arc<Forwarder>,
}

#[async_trait]
impl KeySource for KeyFetcher {
    async fn records(
        &self,
        method: KeyMethod,
        domain: &str,
        selector: &str,
    ) -> Result<Lookup, KeyFetchError> {
        match method {
            KeyMethod::DnsTxt => {
                let name = dkim::dns_name(domain, selector);
                let records = self
                    .resolver
                    .txt(&name)
                    .await
                    .map_err(|e| KeyFetchError(e.to_string()))?;
                Ok(Lookup {
                    place: format!("TXT {name}"),
                    records,
                })
            }
            KeyMethod::PrivateExchange => Ok(Lookup {
                place: "[[dkim.trusted]]".into(),
                records: self
                    .config
                    .dkim
                    .trusted
                    .iter()
                    .filter(|t| t.domain == domain && t.selector == selector)
                    .map(|t| t.key.record())
                    .collect(),
            }),
            KeyMethod::HttpWellKnown => self.well_known(domain, selector).await,
        }
    }
}

impl KeyFetcher {
    async fn well_known(&self, domain: &str, selector: &str) -> Result<Lookup, KeyFetchError> {
        // Routes match addresses: any address of the domain finds the
        // domain's route or SRV record.
        let address = CalAddress::parse(&format!("mailto:dkim@{domain}"))
            .map_err(|e| KeyFetchError(format!("{domain}: {e}")))?;
        let router = Router {
            config: &self.config,
            resolver: &self.resolver,
        };
        let receiver = match router.route(&address).await.decision {
            Decision::Native { receiver } => receiver,
            Decision::Failed { why } => return Err(KeyFetchError(why)),
            Decision::Imip { why } | Decision::NoReceiver { why } => {
                return Ok(Lookup {
                    place: format!("no iSchedule host for {domain} ({why})"),
                    records: vec![],
                })
            }
        };
        let path = dkim::well_known_path(domain, selector);
        let mut unreachable = Vec::new();
        for location in Forwarder::locations(&receiver) {
            let url = format!("{}{path}", location.endpoint);
            let request = Request {
                method: "GET",
                path_and_query: &path,
                headers: &[],
                body: Bytes::new(),
            };
            match self
                .forwarder
                .upstream
                .send(&location.endpoint, &request)
                .await
            {
                Ok(r) if r.status == 200 => {
                    let plain = r
                        .header("Content-Type")
                        .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("text/plain"));
                    let records = if plain {
                        String::from_utf8_lossy(&r.body)
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string)
                            .collect()
                    } else {
                        vec![]
                    };
                    return Ok(Lookup {
                        place: url,
                        records,
                    });
                }
                Ok(r) if r.status >= 500 => {
                    unreachable.push(format!("{url} answered HTTP {}", r.status))
                }
                Ok(r) => {
                    return Ok(Lookup {
                        place: format!("{url} (HTTP {})", r.status),
                        records: vec![],
                    })
                }
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        Err(KeyFetchError(unreachable.join("; ")))
    }
}
