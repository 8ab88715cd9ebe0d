//! Calendar user addresses (RFC 5545 CAL-ADDRESS): the values of the
//! `Originator` and `Recipient` headers and of ORGANIZER / ATTENDEE.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Why a string is not a usable calendar user address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty calendar user address")]
    Empty,
    #[error("'{0}' is not an absolute URI (no scheme)")]
    NoScheme(String),
    #[error("'{0}' is a mailto URI without local-part@domain")]
    BadMailto(String),
    #[error("'{0}' contains whitespace or control characters")]
    BadCharacter(String),
}

/// A calendar user address as written, compared the way iTIP compares them:
/// scheme case-insensitively and, for `mailto:`, the whole address
/// case-insensitively (real clients vary `MAILTO:` and domain case freely).
#[derive(Debug, Clone, Eq)]
pub struct CalAddress {
    raw: String,
    normalized: String,
}

impl CalAddress {
    pub fn parse(s: &str) -> Result<CalAddress, AddressError> {
        let raw = s.trim();
        if raw.is_empty() {
            return Err(AddressError::Empty);
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::BadCharacter(raw.to_string()));
        }
        let (scheme, rest) = raw
            .split_once(':')
            .filter(|(scheme, _)| is_scheme(scheme))
            .ok_or_else(|| AddressError::NoScheme(raw.to_string()))?;
        let scheme = scheme.to_ascii_lowercase();
        let normalized = if scheme == "mailto" {
            let addr = rest.split('?').next().unwrap_or_default();
            match addr.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && is_host(domain) => {
                    format!("mailto:{}", addr.to_ascii_lowercase())
                }
                _ => return Err(AddressError::BadMailto(raw.to_string())),
            }
        } else {
            format!("{scheme}:{rest}")
        };
        Ok(CalAddress {
            raw: raw.to_string(),
            normalized,
        })
    }

    /// The address exactly as the sender wrote it; responses echo this.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The comparison form (lower-case scheme, lower-case mailto address).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    pub fn is_mailto(&self) -> bool {
        self.normalized.starts_with("mailto:")
    }

    /// For `mailto:` the bare e-mail address, lower case.
    pub fn email(&self) -> Option<&str> {
        self.normalized.strip_prefix("mailto:")
    }

    /// The host part used for receiver discovery (spec clause 6): the mailto
    /// domain, or the authority host of a hierarchical URI; lower case.
    pub fn domain(&self) -> Option<String> {
        if let Some(email) = self.email() {
            return email.rsplit_once('@').map(|(_, d)| d.to_string());
        }
        let rest = self.normalized.split_once("://")?.1;
        let authority = rest.split(['/', '?', '#']).next()?;
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = host.split(':').next()?.to_ascii_lowercase();
        is_host(&host).then_some(host)
    }
}

impl PartialEq for CalAddress {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Hash for CalAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalized.hash(state)
    }
}

impl fmt::Display for CalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl serde::Serialize for CalAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailto_compares_case_insensitively_and_keeps_raw() {
        let a = CalAddress::parse("MAILTO:Cyrus@Example.ORG").unwrap();
        let b = CalAddress::parse("mailto:cyrus@example.org").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "MAILTO:Cyrus@Example.ORG");
        assert_eq!(a.domain().as_deref(), Some("example.org"));
        assert_eq!(a.email(), Some("cyrus@example.org"));
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        assert_eq!(CalAddress::parse(" "), Err(AddressError::Empty));
        assert!(matches!(
            CalAddress::parse("cyrus@example.org"),
            Err(AddressError::NoScheme(_))
        ));
        assert!(matches!(
            CalAddress::parse("mailto:nobody"),
            Err(AddressError::BadMailto(_))
        ));
        assert!(matches!(
            CalAddress::parse("mailto:a b@x.org"),
            Err(AddressError::BadCharacter(_))
        ));
    }

    #[test]
    fn http_addresses_have_a_domain() {
        let a = CalAddress::parse("https://Cal.Example.com:8443/principals/bob").unwrap();
        assert_eq!(a.domain().as_deref(), Some("cal.example.com"));
        assert_eq!(CalAddress::parse("urn:uuid:1234").unwrap().domain(), None);
    }
}
