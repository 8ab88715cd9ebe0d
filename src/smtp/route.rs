//! How outbound mail leaves the bridge, as the configuration names it: a
//! relay URL, `direct` to the MX hosts, or an outbox folder. Only the
//! syntax and the security rules live here; `mail::outbound::transport`
//! connects.

use std::path::{Path, PathBuf};

use url::Url;

/// How outbound mail leaves the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A relay/submission server. `url` is `scheme://host[:port]` without
    /// credentials: `smtp://` (port 25; STARTTLS when offered, certificate not
    /// checked: protects against eavesdropping only), `smtp+starttls://`
    /// (port 587; STARTTLS required, certificate checked against the
    /// webpki roots) or `smtps://` (port 465; implicit TLS, checked likewise).
    /// Credentials need one of the TLS schemes.
    Relay {
        url: Url,
        credentials: Option<(String, String)>,
    },
    /// Straight to the recipient domain's MX (RFC 5321 5.1: MX by preference,
    /// the domain's own address when it has no MX), port 25 unless the
    /// transport is told otherwise, opportunistic STARTTLS (certificate not
    /// checked, as MTAs do between themselves).
    Direct,
    /// No mail server configured: each message is written to
    /// `<dir>/<stem>.eml`, byte for byte, next to `<dir>/<stem>.envelope`
    /// holding `{"from": "...", "to": "..."}` (the SMTP envelope, which the
    /// headers do not carry), so a fresh install works without SMTP and an
    /// admin can still send what piled up. The envelope is written first and
    /// each file appears whole (written aside, then renamed); `<stem>` is
    /// `<unix seconds>.<nanoseconds>.<pid>.<sequence>`.
    Outbox { dir: PathBuf },
}

/// Why a relay setting is refused. `shown` is the value with any user info
/// hidden: no message repeats a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "'{shown}' is neither \"direct\" nor an smtp://, smtp+starttls:// or smtps:// URL: {source}"
    )]
    NotAUrl {
        shown: String,
        source: url::ParseError,
    },
    #[error("'{shown}': the scheme must be smtp, smtp+starttls or smtps, not {scheme}")]
    Scheme { shown: String, scheme: String },
    #[error("'{shown}' names no host")]
    NoHost { shown: String },
    #[error(
        "'{shown}': a relay is scheme://host[:port], without path, query or fragment \
         (the EHLO name is configured on its own)"
    )]
    NotJustHost { shown: String },
    #[error("'{shown}' has a password but no user name")]
    NoUser { shown: String },
    #[error("'{shown}' has a user name but no password")]
    NoPassword { shown: String },
    #[error("'{shown}': cannot take the credentials out")]
    Credentials { shown: String },
    #[error("a bad %-escape in the relay URL's user info")]
    BadEscape,
    #[error("the relay URL's user info is not UTF-8 once decoded")]
    NotUtf8,
    #[error(
        "relay {host}: credentials need smtp+starttls:// or smtps://; over smtp:// \
         they could be sent unencrypted or to an impostor"
    )]
    CredentialsInTheClear { host: String },
}

/// How a relay session is protected, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: STARTTLS when offered, certificate not checked.
    Opportunistic,
    /// `smtp+starttls://`: STARTTLS required, certificate checked.
    StartTls,
    /// `smtps://`: TLS from the first byte, certificate checked.
    Implicit,
}

impl Security {
    pub fn of_scheme(scheme: &str) -> Option<Security> {
        match scheme {
            "smtp" => Some(Security::Opportunistic),
            "smtp+starttls" => Some(Security::StartTls),
            "smtps" => Some(Security::Implicit),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Security::Opportunistic => 25,
            Security::StartTls => 587,
            Security::Implicit => 465,
        }
    }
}

impl Route {
    /// `None` (no relay configured) writes to `outbox`; `"direct"` delivers to
    /// MX hosts; anything else must be a relay URL. Credentials in the URL
    /// (`smtps://user:pass@host`, percent-encoded) are moved to
    /// `credentials`.
    pub fn parse(value: Option<&str>, outbox: &Path) -> Result<Route, RouteError> {
        let Some(value) = value else {
            return Ok(Route::Outbox {
                dir: outbox.to_path_buf(),
            });
        };
        let value = value.trim();
        if value.eq_ignore_ascii_case("direct") {
            return Ok(Route::Direct);
        }
        let shown = redact(value);
        let mut url = Url::parse(value).map_err(|source| RouteError::NotAUrl {
            shown: shown.clone(),
            source,
        })?;
        if Security::of_scheme(url.scheme()).is_none() {
            return Err(RouteError::Scheme {
                shown,
                scheme: url.scheme().to_string(),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(RouteError::NoHost { shown });
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(RouteError::NotJustHost { shown });
        }
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(RouteError::NoUser { shown }),
            (_, None) => return Err(RouteError::NoPassword { shown }),
            (user, Some(password)) => {
                let (user, password) = (percent_decode(user)?, percent_decode(password)?);
                url.set_username("")
                    .and_then(|()| url.set_password(None))
                    .map_err(|()| RouteError::Credentials { shown })?;
                Some((user, password))
            }
        };
        let route = Route::Relay { url, credentials };
        route.check()?;
        Ok(route)
    }

    /// Credentials only over a session TLS protects for sure.
    pub fn check(&self) -> Result<(), RouteError> {
        if let Route::Relay {
            url,
            credentials: Some(_),
        } = self
        {
            if Security::of_scheme(url.scheme()) == Some(Security::Opportunistic) {
                return Err(RouteError::CredentialsInTheClear {
                    host: url.host_str().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// `%XX` escapes of URL user info -> text.
fn percent_decode(s: &str) -> Result<String, RouteError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next(), bytes.next()];
            let value = match hex {
                [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok()),
                _ => None,
            };
            out.push(value.ok_or(RouteError::BadEscape)?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| RouteError::NotUtf8)
}

/// The URL with any user info hidden, for messages.
fn redact(value: &str) -> String {
    match value.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => value.to_string(),
            }
        }
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(value: &str) -> Result<Route, RouteError> {
        Route::parse(Some(value), Path::new("/o"))
    }

    #[test]
    fn route_parse() {
        assert_eq!(
            Route::parse(None, Path::new("/var/outbox")),
            Ok(Route::Outbox {
                dir: PathBuf::from("/var/outbox")
            })
        );
        assert_eq!(relay("direct"), Ok(Route::Direct));
        assert_eq!(relay(" Direct "), Ok(Route::Direct));
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com",
            "smtp://mail.example.com/",
            "smtp+starttls://mail.example.com:587",
            "smtps://[::1]:465",
        ] {
            let Ok(Route::Relay { url, credentials }) = relay(ok) else {
                panic!("{ok}: {:?}", relay(ok));
            };
            assert_eq!(credentials, None);
            assert!(url.as_str().starts_with(url.scheme()), "{url}");
        }
        let Ok(Route::Relay { url, credentials }) =
            relay("smtps://bridge%40x:p%3Ass%20w@smtp.x.test:465")
        else {
            panic!()
        };
        assert_eq!(
            credentials,
            Some(("bridge@x".to_string(), "p:ss w".to_string()))
        );
        assert_eq!(
            url.as_str(),
            "smtps://smtp.x.test:465",
            "credentials out of the URL"
        );
        assert!(relay("smtp+starttls://u:p@h").is_ok());

        for (bad, why) in [
            ("", "neither"),
            ("mail.example.com", "neither"),
            ("http://mail.example.com", "scheme must be"),
            ("smtp://", "names no host"),
            ("smtp://h:25/ehlo.name", "without path"),
            ("smtp://h?tls=required", "without path"),
            ("smtp://u:secret@h", "credentials need"),
            ("smtps://u@h", "no password"),
            ("smtps://:secret@h", "no user name"),
            ("smtps://u:%zz@h", "%-escape"),
            ("smtp://h:99999", "neither"),
        ] {
            let e = relay(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "password repeated: {e}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(redact("smtps://u:secret@h:465/x"), "smtps://***@h:465/x");
        assert_eq!(redact("smtp://h@x/a@b"), "smtp://***@x/a@b");
        assert_eq!(redact("smtp://h"), "smtp://h");
        assert_eq!(percent_decode("a%2Fb%c3%a9"), Ok("a/bé".to_string()));
        assert!(percent_decode("%4").is_err());
        assert_eq!(
            Security::of_scheme("smtps").map(Security::default_port),
            Some(465)
        );
    }
}
