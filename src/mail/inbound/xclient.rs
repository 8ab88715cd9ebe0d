//! `XCLIENT` (Postfix's syntax, www.postfix.org/XCLIENT_README.html): how
//! `ingest`, handing a piped mail to the running bridge over LMTP, tells the
//! listener where the mail really came from. Without it the listener sees
//! loopback, so SPF would be checked against 127.0.0.1 and a loopback entry
//! in `mail.local_clients` would make every piped mail local.
//!
//! `XCLIENT ADDR=192.0.2.7 HELO=mx.example.org`: attribute values are xtext
//! (RFC 3461: `+HH` for bytes outside `!`..`~`, and for `+` and `=`); an
//! IPv6 ADDR is written `IPV6:2001:db8::1`; `[UNAVAILABLE]` and
//! `[TEMPUNAVAIL]` mean unknown, kept as the unspecified address `0.0.0.0`
//! (never in an allow-list, never an SPF pass) or an empty HELO. NAME,
//! REVERSE_NAME and PROTO are accepted and ignored; anything else, LOGIN
//! included, is refused rather than silently dropped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// The attributes of one XCLIENT command that the listener acts on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Xclient {
    /// The client address; `0.0.0.0` when the sender said it is unknown.
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    /// The client's EHLO/HELO name; empty when unknown.
    pub helo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XclientError {
    #[error("XCLIENT needs at least one attribute, e.g. XCLIENT ADDR=192.0.2.1")]
    Empty,
    #[error("XCLIENT attribute {0} has no =value")]
    NoValue(String),
    #[error(
        "XCLIENT attribute {0} is not supported (ADDR, PORT, HELO, NAME, REVERSE_NAME, PROTO are)"
    )]
    Unsupported(String),
    #[error("XCLIENT attribute {0} is given twice")]
    Repeated(String),
    #[error("XCLIENT {attribute}={value}: not valid xtext (a + must be followed by two upper-case hex digits)")]
    BadXtext { attribute: String, value: String },
    #[error("XCLIENT ADDR={0}: not an IPv4 address, IPV6:address or [UNAVAILABLE]")]
    BadAddr(String),
    #[error("XCLIENT PORT={0}: not a port number")]
    BadPort(String),
}

const UNKNOWN: [&str; 2] = ["[UNAVAILABLE]", "[TEMPUNAVAIL]"];

impl Xclient {
    /// Parses the arguments after the `XCLIENT` verb.
    pub fn parse(args: &str) -> Result<Xclient, XclientError> {
        let mut out = Xclient::default();
        let mut seen: Vec<String> = Vec::new();
        for attribute in args.split_ascii_whitespace() {
            let (name, raw) = attribute
                .split_once('=')
                .ok_or_else(|| XclientError::NoValue(attribute.to_owned()))?;
            let name = name.to_ascii_uppercase();
            if seen.contains(&name) {
                return Err(XclientError::Repeated(name));
            }
            let value = xtext_decode(raw).ok_or_else(|| XclientError::BadXtext {
                attribute: name.clone(),
                value: raw.to_owned(),
            })?;
            let unknown = UNKNOWN.iter().any(|u| value.eq_ignore_ascii_case(u));
            match name.as_str() {
                "ADDR" => out.addr = Some(parse_addr(&value, unknown)?),
                "PORT" if unknown => {}
                "PORT" => {
                    let port = value
                        .parse()
                        .map_err(|_| XclientError::BadPort(value.clone()))?;
                    out.port = Some(port);
                }
                "HELO" => out.helo = Some(if unknown { String::new() } else { value }),
                "NAME" | "REVERSE_NAME" | "PROTO" => {}
                _ => return Err(XclientError::Unsupported(name)),
            }
            seen.push(name);
        }
        if seen.is_empty() {
            return Err(XclientError::Empty);
        }
        Ok(out)
    }
}

fn parse_addr(value: &str, unknown: bool) -> Result<IpAddr, XclientError> {
    if unknown {
        return Ok(Ipv4Addr::UNSPECIFIED.into());
    }
    let bad = || XclientError::BadAddr(value.to_owned());
    match value.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("IPV6:") => value[5..]
            .parse::<std::net::Ipv6Addr>()
            .map(IpAddr::from)
            .map_err(|_| bad()),
        _ => value
            .parse::<Ipv4Addr>()
            .map(IpAddr::from)
            .map_err(|_| bad()),
    }
}

/// The command line, without CRLF.
impl fmt::Display for Xclient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XCLIENT")?;
        match self.addr {
            Some(ip) if ip.is_unspecified() => f.write_str(" ADDR=[UNAVAILABLE]")?,
            Some(IpAddr::V4(ip)) => write!(f, " ADDR={ip}")?,
            Some(IpAddr::V6(ip)) => write!(f, " ADDR=IPV6:{ip}")?,
            None => {}
        }
        if let Some(port) = self.port {
            write!(f, " PORT={port}")?;
        }
        match self.helo.as_deref() {
            Some("") => f.write_str(" HELO=[UNAVAILABLE]")?,
            Some(helo) => write!(f, " HELO={}", xtext_encode(helo))?,
            None => {}
        }
        Ok(())
    }
}

fn xtext_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// `None` when malformed, or when the bytes it stands for are not UTF-8.
fn xtext_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = value.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_syntax_is_read() {
        let x = Xclient::parse("ADDR=192.0.2.7 HELO=mx.example.org NAME=mx.example.org").unwrap();
        assert_eq!(x.addr, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(x.helo.as_deref(), Some("mx.example.org"));
        let x = Xclient::parse("addr=IPV6:2001:db8::1 port=2525 helo=a+20b+2Bc").unwrap();
        assert_eq!(x.addr, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(x.port, Some(2525));
        assert_eq!(x.helo.as_deref(), Some("a b+c"));
        let x = Xclient::parse("ADDR=[UNAVAILABLE] HELO=[TEMPUNAVAIL] PORT=[UNAVAILABLE]").unwrap();
        assert_eq!(x.addr, Some(Ipv4Addr::UNSPECIFIED.into()));
        assert_eq!(x.helo.as_deref(), Some(""));
        assert_eq!(x.port, None);
    }

    #[test]
    fn malformed_commands_are_refused_with_the_reason() {
        let e = |args: &str| Xclient::parse(args).unwrap_err();
        assert_eq!(e(""), XclientError::Empty);
        assert_eq!(e("ADDR"), XclientError::NoValue("ADDR".into()));
        assert_eq!(e("LOGIN=alice"), XclientError::Unsupported("LOGIN".into()));
        assert_eq!(
            e("ADDR=1.2.3.4 addr=1.2.3.5"),
            XclientError::Repeated("ADDR".into())
        );
        assert_eq!(
            e("ADDR=999.1.1.1"),
            XclientError::BadAddr("999.1.1.1".into())
        );
        assert_eq!(e("ADDR=::1"), XclientError::BadAddr("::1".into()));
        assert_eq!(e("PORT=70000"), XclientError::BadPort("70000".into()));
        assert!(matches!(e("HELO=a+2"), XclientError::BadXtext { .. }));
        assert!(matches!(e("HELO=a+zz"), XclientError::BadXtext { .. }));
        assert!(matches!(e("HELO=+FF"), XclientError::BadXtext { .. }));
        assert!(e("LOGIN=x").to_string().contains("not supported"));
    }

    #[test]
    fn the_command_written_reads_back() {
        for x in [
            Xclient {
                addr: Some("198.51.100.9".parse().unwrap()),
                port: Some(25),
                helo: Some("odd name=+".into()),
            },
            Xclient {
                addr: Some("2001:db8::2".parse().unwrap()),
                port: None,
                helo: Some(String::new()),
            },
            Xclient {
                addr: Some(Ipv4Addr::UNSPECIFIED.into()),
                port: None,
                helo: None,
            },
        ] {
            let line = x.to_string();
            let args = line.strip_prefix("XCLIENT ").unwrap();
            assert_eq!(Xclient::parse(args).unwrap(), x, "{line}");
        }
    }
}
