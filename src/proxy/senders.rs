//! Who counts as a local calendar server over HTTP: an allow-listed
//! address or the shared-secret header. What each kind of sender may do is
//! the core's rule ([`crate::scheduling::sender::authorize`]).

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::Config;
use crate::scheduling::sender::constant_time_eq;
use crate::scheduling::Sender;

/// Who sent a POST: local by the shared secret or an allow-listed
/// address, else a remote sender nothing vouches for yet.
pub fn classify(config: &Config, peer: Option<IpAddr>, headers: &HeaderMap) -> Sender {
    if let Some(secret) = &config.senders.shared_secret {
        let offered = headers
            .get(config.senders.secret_header.as_str())
            .map(|v| v.as_bytes());
        if offered.is_some_and(|o| constant_time_eq(o, secret.as_bytes())) {
            return Sender::Local {
                by: format!("{} header", config.senders.secret_header),
            };
        }
    }
    match peer.and_then(|ip| config.senders.allow.iter().find(|net| net.contains(&ip))) {
        Some(net) => Sender::Local {
            by: format!("address in {net}"),
        },
        None => Sender::remote(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            "[domains]\nlocal = [\"example.com\"]\n[senders]\nallow = [\"10.0.0.0/8\"]\nshared_secret = \"0123456789abcdef\"\n",
            "t",
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn allow_list_and_secret_make_a_local_sender() {
        let c = config();
        let mut h = HeaderMap::new();
        assert!(matches!(
            classify(&c, Some("10.1.2.3".parse().unwrap()), &h),
            Sender::Local { .. }
        ));
        assert_eq!(
            classify(&c, Some("192.0.2.1".parse().unwrap()), &h),
            Sender::remote()
        );
        h.insert("X-Bridge-Secret", "0123456789abcdeX".parse().unwrap());
        assert_eq!(classify(&c, None, &h), Sender::remote());
        h.insert("X-Bridge-Secret", "0123456789abcdef".parse().unwrap());
        assert!(matches!(classify(&c, None, &h), Sender::Local { .. }));
    }
}
