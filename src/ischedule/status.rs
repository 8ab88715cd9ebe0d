//! iTIP `REQUEST-STATUS` values (RFC 5545 3.8.8.3, RFC 5546 3.6) as carried in
//! `<request-status>` of a schedule-response.

use std::fmt;
use std::str::FromStr;

/// A status code `class.major[.minor]`. Only the class decides success; the
/// rest is kept so a receiver's code reaches the sender unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode {
    pub class: u8,
    pub major: u16,
    pub minor: Option<u16>,
}

impl StatusCode {
    pub const PENDING: StatusCode = StatusCode::new(1, 0);
    pub const SENT: StatusCode = StatusCode::new(1, 1);
    pub const DELIVERED: StatusCode = StatusCode::new(1, 2);
    pub const SUCCESS: StatusCode = StatusCode::new(2, 0);
    pub const INVALID_USER: StatusCode = StatusCode::new(3, 7);
    pub const NO_AUTHORITY: StatusCode = StatusCode::new(3, 8);
    pub const TOO_LARGE: StatusCode = StatusCode::new(3, 10);
    pub const UNSUPPORTED_CAPABILITY: StatusCode = StatusCode::new(3, 14);
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode::new(5, 1);
    pub const NO_SCHEDULING_SUPPORT: StatusCode = StatusCode::new(5, 3);

    pub const fn new(class: u8, major: u16) -> StatusCode {
        StatusCode {
            class,
            major,
            minor: None,
        }
    }

    /// 1.x (pending/sent) and 2.x (success) mean the message was taken.
    pub fn is_success(self) -> bool {
        matches!(self.class, 1 | 2)
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.class, self.major)?;
        if let Some(minor) = self.minor {
            write!(f, ".{minor}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a request-status (expected class.code[;description])")]
pub struct BadStatus(pub String);

impl FromStr for StatusCode {
    type Err = BadStatus;
    fn from_str(s: &str) -> Result<StatusCode, BadStatus> {
        let bad = || BadStatus(s.to_string());
        let mut parts = s.trim().split('.');
        let class: u8 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let major: u16 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = match parts.next() {
            Some(p) => Some(p.parse().map_err(|_| bad())?),
            None => None,
        };
        if parts.next().is_some() || !(1..=5).contains(&class) {
            return Err(bad());
        }
        Ok(StatusCode {
            class,
            major,
            minor,
        })
    }
}

/// A code plus its description, written `2.0;Success`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestStatus {
    pub code: StatusCode,
    pub description: String,
}

impl RequestStatus {
    pub fn new(code: StatusCode, description: impl Into<String>) -> RequestStatus {
        RequestStatus {
            code,
            description: description.into(),
        }
    }

    pub fn success() -> RequestStatus {
        RequestStatus::new(StatusCode::SUCCESS, "Success")
    }

    pub fn no_scheduling_support() -> RequestStatus {
        RequestStatus::new(
            StatusCode::NO_SCHEDULING_SUPPORT,
            "No scheduling support for user",
        )
    }

    pub fn service_unavailable() -> RequestStatus {
        RequestStatus::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
    }

    pub fn invalid_user() -> RequestStatus {
        RequestStatus::new(StatusCode::INVALID_USER, "Invalid calendar user")
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{}", self.code, self.description)
    }
}

impl FromStr for RequestStatus {
    type Err = BadStatus;
    fn from_str(s: &str) -> Result<RequestStatus, BadStatus> {
        let (code, description) = s.split_once(';').unwrap_or((s, ""));
        Ok(RequestStatus {
            code: code.parse()?,
            description: description.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_receiver_statuses() {
        let s: RequestStatus = "3.7;Invalid calendar user".parse().unwrap();
        assert_eq!(s.code, StatusCode::INVALID_USER);
        assert!(!s.code.is_success());
        let s: RequestStatus = "2.0".parse().unwrap();
        assert!(s.code.is_success());
        assert_eq!(
            "2.8.1;x".parse::<RequestStatus>().unwrap().code.minor,
            Some(1)
        );
        assert_eq!(
            RequestStatus::no_scheduling_support().to_string(),
            "5.3;No scheduling support for user"
        );
        assert_eq!(StatusCode::TOO_LARGE.to_string(), "3.10");
        assert!("9.0;x".parse::<RequestStatus>().is_err());
        assert!("ok".parse::<RequestStatus>().is_err());
    }
}
