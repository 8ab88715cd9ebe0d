//! Which addresses the bridge may connect to when DNS or a redirect named
//! them (DESIGN.md "No requests into the private network").
//!
//! A recipient's domain is chosen by whoever sends the invitation, and so
//! are its SRV, MX and A records and a receiver's redirects: without this
//! check anyone could make the bridge POST or speak SMTP to its own
//! loopback, the LAN, or a cloud metadata address. Static routes and the
//! configured relay are the admin's choice and are not checked. The check
//! is on the resolved address that is then connected to, never on a name
//! that could resolve differently a moment later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::config::Config;

/// Where a connection target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Written in the configuration (a `[[route]]`, the relay): trusted.
    Configured,
    /// Learnt from DNS or a redirect: checked against the policy.
    Learnt,
}

/// A learnt address the bridge will not connect to, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{ip} is {range}, not a public address (allow it with dns.allow_private_targets)")]
    NotPublic { ip: IpAddr, range: &'static str },
    #[error("{addr} is one of this bridge's own listening addresses")]
    OwnListener { addr: SocketAddr },
}

#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allowed: Vec<IpNet>,
    own: Vec<SocketAddr>,
}

impl TargetPolicy {
    /// Public addresses only, plus `allowed`; never `own`.
    pub fn new(allowed: Vec<IpNet>, own: Vec<SocketAddr>) -> TargetPolicy {
        TargetPolicy { allowed, own }
    }

    /// `dns.allow_private_targets`, and every listener of this bridge.
    pub fn from_config(config: &Config) -> TargetPolicy {
        let own = config
            .server
            .listen
            .iter()
            .copied()
            .chain(config.server.tls.iter().map(|t| t.listen))
            .chain(config.server.admin_listen)
            .chain(config.mail.smtp_listen)
            .chain(config.mail.lmtp_listen)
            .collect();
        TargetPolicy::new(config.dns.allow_private_targets.clone(), own)
    }

    /// May a connection to `addr`, which came from `origin`, be made?
    pub fn check(&self, origin: Origin, addr: SocketAddr) -> Result<(), Refusal> {
        if origin == Origin::Configured {
            return Ok(());
        }
        let ip = canonical(addr.ip());
        // Even an allowed range does not make the bridge post to itself. A
        // wildcard listener is known to be reached on loopback; its other
        // addresses would need the interface list, and a public one is no
        // private network anyway.
        let own = self.own.iter().any(|listen| {
            listen.port() == addr.port()
                && (canonical(listen.ip()) == ip
                    || (listen.ip().is_unspecified() && ip.is_loopback()))
        });
        if own {
            return Err(Refusal::OwnListener { addr });
        }
        match non_public_range(ip) {
            Some(range) if !self.allowed.iter().any(|net| net.contains(&ip)) => {
                Err(Refusal::NotPublic { ip, range })
            }
            _ => Ok(()),
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it maps, so
/// `::ffff:127.0.0.1` cannot slip past the IPv4 ranges.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The special-purpose range `ip` is in (IANA registries, RFC 6890), or
/// `None` for a public address.
fn non_public_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10, CGNAT)",
        (169, 254, _) => "link-local (169.254.0.0/16, cloud metadata)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation (RFC 5737)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4) or broadcast",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match first {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        0xfc00..=0xfdff => "unique-local (fc00::/7)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (fec0::/10, deprecated)",
        0xff00..=0xffff => "multicast",
        0x2001 if ip.segments()[1] == 0x0db8 => "documentation (2001:db8::/32)",
        // IPv4-compatible, NAT64 and 6to4 forms embed an IPv4 address that
        // could be private; none is needed to reach a receiver.
        0x0000 => "IPv4-embedding or reserved (::/8)",
        0x0064 if ip.segments()[1] == 0xff9b => "NAT64 (64:ff9b::/96)",
        0x2002 => "6to4 (2002::/16)",
        0x0100 if ip.segments()[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learnt(policy: &TargetPolicy, addr: &str) -> Result<(), Refusal> {
        policy.check(Origin::Learnt, addr.parse().unwrap())
    }

    #[test]
    fn only_public_addresses_pass_by_default() {
        let policy = TargetPolicy::default();
        for refused in [
            "127.0.0.1:443",
            "10.1.2.3:443",
            "172.20.0.1:443",
            "192.168.1.1:443",
            "100.64.0.1:443",
            "169.254.169.254:80",
            "0.0.0.0:443",
            "224.0.0.1:443",
            "255.255.255.255:443",
            "192.0.2.1:443",
            "198.18.0.1:443",
            "[::1]:443",
            "[::]:443",
            "[fd00::1]:443",
            "[fe80::1]:443",
            "[ff02::1]:443",
            "[::ffff:127.0.0.1]:443",
            "[::ffff:10.0.0.1]:443",
            "[2001:db8::1]:443",
            "[64:ff9b::a00:1]:443",
            "[2002:a00:1::]:443",
        ] {
            assert!(learnt(&policy, refused).is_err(), "{refused} passed");
        }
        for public in [
            "93.184.216.34:443",
            "[2606:2800:220:1::1]:443",
            "8.8.8.8:25",
        ] {
            assert_eq!(learnt(&policy, public), Ok(()), "{public}");
        }
    }

    #[test]
    fn refusals_name_the_range_and_the_key() {
        let e = learnt(&TargetPolicy::default(), "169.254.169.254:80").unwrap_err();
        assert_eq!(
            e.to_string(),
            "169.254.169.254 is link-local (169.254.0.0/16, cloud metadata), not a public address \
             (allow it with dns.allow_private_targets)"
        );
    }

    #[test]
    fn allowed_ranges_pass_but_never_the_bridge_itself() {
        let policy = TargetPolicy::new(
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            vec![
                "127.0.0.1:8008".parse().unwrap(),
                "0.0.0.0:2525".parse().unwrap(),
            ],
        );
        assert_eq!(learnt(&policy, "127.0.0.1:9000"), Ok(()));
        assert_eq!(learnt(&policy, "10.1.9.9:443"), Ok(()));
        assert!(learnt(&policy, "10.2.0.1:443").is_err());
        assert!(matches!(
            learnt(&policy, "127.0.0.1:8008"),
            Err(Refusal::OwnListener { .. })
        ));
        assert!(matches!(
            learnt(&policy, "127.0.0.5:2525"),
            Err(Refusal::OwnListener { .. })
        ));
        assert_eq!(learnt(&policy, "10.1.0.7:2525"), Ok(()));
    }

    #[test]
    fn configured_targets_are_the_admins_choice() {
        let policy = TargetPolicy::default();
        let addr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(policy.check(Origin::Configured, addr), Ok(()));
    }
}
