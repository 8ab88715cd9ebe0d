//! SMTP AUTH PLAIN and LOGIN (RFC 4954, RFC 4616): offered only where the
//! password cannot be sniffed (TLS, or a loopback client), and checked by
//! the [`Delivery`](super::Delivery), which knows the accounts.

use std::io;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::info;

use super::framing::Input;
use super::session::{Flow, Session};
use super::TARGET;
use crate::smtp::EnhancedStatus;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn auth(&mut self, args: &str) -> io::Result<Flow> {
        if self.helo.is_none() || !self.esmtp {
            return Ok(self.bad(503, EnhancedStatus::new(5, 5, 1), "send EHLO first"));
        }
        if self.authenticated_as.is_some() {
            return Ok(self.bad(503, EnhancedStatus::new(5, 5, 1), "already authenticated"));
        }
        if self.in_transaction() {
            return Ok(self.bad(
                503,
                EnhancedStatus::new(5, 5, 1),
                "AUTH not allowed during a mail transaction",
            ));
        }
        if !auth_allowed(self.tls, self.peer) {
            return Ok(self.bad(
                538,
                EnhancedStatus::new(5, 7, 11),
                "encryption required for requested authentication mechanism",
            ));
        }
        let (mechanism, initial) = match args.split_once(' ') {
            Some((m, i)) => (m, Some(i.trim())),
            None => (args, None),
        };
        let credentials = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => i.to_owned(),
                    None => match self.auth_response("").await? {
                        Ok(r) => r,
                        Err(flow) => return Ok(flow),
                    },
                };
                match auth_decode(&response) {
                    Ok(plain) => plain_credentials(&plain),
                    Err(e) => return Ok(self.auth_failed(e)),
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => i.to_owned(),
                    None => match self.auth_response(&STANDARD.encode("Username:")).await? {
                        Ok(r) => r,
                        Err(flow) => return Ok(flow),
                    },
                };
                let user = match auth_decode(&user) {
                    Ok(u) => u,
                    Err(e) => return Ok(self.auth_failed(e)),
                };
                let password = match self.auth_response(&STANDARD.encode("Password:")).await? {
                    Ok(r) => r,
                    Err(flow) => return Ok(flow),
                };
                match auth_decode(&password) {
                    Ok(p) => match (String::from_utf8(user), String::from_utf8(p)) {
                        (Ok(u), Ok(p)) => Some((u, p)),
                        _ => None,
                    },
                    Err(e) => return Ok(self.auth_failed(e)),
                }
            }
            "" => return Ok(self.bad(501, EnhancedStatus::new(5, 5, 4), "syntax: AUTH mechanism")),
            _ => {
                return Ok(self.bad(
                    504,
                    EnhancedStatus::new(5, 5, 4),
                    "unrecognized authentication type",
                ))
            }
        };
        let verified = credentials
            .filter(|(user, password)| self.inner.delivery.check_credentials(user, password));
        match verified {
            Some((user, _)) => {
                info!(target: TARGET, client = %self.client, user, "authenticated");
                self.authenticated_as = Some(user);
                self.send(
                    235,
                    EnhancedStatus::new(2, 7, 0),
                    "authentication successful",
                );
                Ok(Flow::Continue)
            }
            None => {
                info!(target: TARGET, client = %self.client, "authentication failed");
                Ok(self.bad(
                    535,
                    EnhancedStatus::new(5, 7, 8),
                    "authentication credentials invalid",
                ))
            }
        }
    }

    /// Sends `334 <challenge>` and reads the client's response line; `Err`
    /// carries how the session goes on when there is none.
    async fn auth_response(&mut self, challenge: &str) -> io::Result<Result<String, Flow>> {
        self.conn.write_line(&format!("334 {challenge}"));
        let deadline = Instant::now() + self.limits().command_timeout;
        Ok(match self.conn.read_line(deadline, true).await? {
            Input::Line { line, .. } => Ok(String::from_utf8_lossy(&line).trim().to_owned()),
            Input::TooLong { .. } => Err(self.bad(
                500,
                EnhancedStatus::new(5, 5, 6),
                "authentication exchange line is too long",
            )),
            Input::Eof => Err(Flow::Close),
            Input::Timeout => Err(self.timed_out("idle timeout")),
            Input::Stop => Err(self.shutting_down()),
        })
    }

    fn auth_failed(&mut self, why: AuthDecodeError) -> Flow {
        match why {
            AuthDecodeError::Cancelled => self.bad(
                501,
                EnhancedStatus::new(5, 0, 0),
                "authentication cancelled",
            ),
            AuthDecodeError::Base64 => {
                self.bad(501, EnhancedStatus::new(5, 5, 2), "cannot decode response")
            }
        }
    }
}

/// AUTH is offered over TLS, or in the clear to a loopback client only.
pub(super) fn auth_allowed(tls: bool, client: SocketAddr) -> bool {
    tls || client.ip().to_canonical().is_loopback()
}

enum AuthDecodeError {
    /// The client answered "*".
    Cancelled,
    Base64,
}

/// An AUTH response: base64, "=" for empty, "*" to cancel.
fn auth_decode(response: &str) -> Result<Vec<u8>, AuthDecodeError> {
    match response {
        "*" => Err(AuthDecodeError::Cancelled),
        "=" => Ok(Vec::new()),
        r => STANDARD.decode(r).map_err(|_| AuthDecodeError::Base64),
    }
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL password`; an authzid other
/// than the authcid (acting for someone else) is not supported.
fn plain_credentials(message: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut fields = text.split('\0');
    let (authz, user, password) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || user.is_empty() || (!authz.is_empty() && authz != user) {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_plain() {
        assert!(matches!(auth_decode("*"), Err(AuthDecodeError::Cancelled)));
        assert_eq!(auth_decode("=").ok(), Some(Vec::new()));
        assert_eq!(auth_decode("YWJj").ok(), Some(b"abc".to_vec()));
        for bad in ["YQ=", "Y===", "YQ==YWJj", "YW=j", "YWJ!"] {
            assert!(
                matches!(auth_decode(bad), Err(AuthDecodeError::Base64)),
                "{bad}"
            );
        }
        assert_eq!(
            plain_credentials(b"\0alice\0secret"),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(
            plain_credentials(b"alice\0alice\0secret"),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(plain_credentials(b"bob\0alice\0secret"), None);
        assert_eq!(plain_credentials(b"\0\0secret"), None);
        assert_eq!(plain_credentials(b"alice\0secret"), None);
    }

    #[test]
    fn auth_needs_tls_or_loopback() {
        assert!(auth_allowed(false, "127.0.0.1:1".parse().unwrap()));
        assert!(auth_allowed(false, "[::1]:1".parse().unwrap()));
        assert!(auth_allowed(false, "[::ffff:127.0.0.2]:1".parse().unwrap()));
        assert!(!auth_allowed(false, "192.0.2.1:1".parse().unwrap()));
        assert!(!auth_allowed(
            false,
            "[::ffff:192.0.2.1]:1".parse().unwrap()
        ));
        assert!(auth_allowed(true, "192.0.2.1:1".parse().unwrap()));
    }
}
