//! A minimal LMTP client (RFC 2033) for `ischedule-bridge ingest`: when a
//! running bridge holds the store, the message is handed to its LMTP
//! listener and each recipient's reply comes back, as if delivered locally.
//! The client address and HELO name the MTA saw go along by XCLIENT (see
//! [`super::xclient`]); a listener that does not offer it gets nothing,
//! since the mail would be judged as coming from loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::xclient::Xclient;
use crate::smtp::{ReplyLine, ReplyLineError, SmtpReply};

#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    #[error("LMTP {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("LMTP {addr}: connection closed")]
    Closed { addr: SocketAddr },
    #[error("LMTP {addr}: {source}")]
    NotAReply {
        addr: SocketAddr,
        source: ReplyLineError,
    },
    #[error("LMTP {addr}: unexpected reply to {step}: {line}")]
    Protocol {
        addr: SocketAddr,
        step: &'static str,
        line: String,
    },
    #[error("LMTP {addr}: no answer within {0:?}", .timeout)]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("LMTP {addr} does not offer XCLIENT to this client, so the mail's client address and HELO cannot be passed on; not handing it over (the listener offers XCLIENT to loopback clients only)")]
    NoXclient { addr: SocketAddr },
}

/// Delivers `message` from the client `client` names; one reply per
/// recipient, in order (a recipient refused at RCPT keeps that refusal).
pub async fn deliver(
    addr: SocketAddr,
    client: &Xclient,
    from: &str,
    recipients: &[String],
    message: &[u8],
    timeout: Duration,
) -> Result<Vec<SmtpReply>, LmtpError> {
    tokio::time::timeout(timeout, exchange(addr, client, from, recipients, message))
        .await
        .unwrap_or(Err(LmtpError::Timeout { addr, timeout }))
}

async fn exchange(
    addr: SocketAddr,
    client: &Xclient,
    from: &str,
    recipients: &[String],
    message: &[u8],
) -> Result<Vec<SmtpReply>, LmtpError> {
    let io = |source| LmtpError::Io { addr, source };
    let stream = TcpStream::connect(addr).await.map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, addr, "greeting", 2).await?;
    let lhlo = b"LHLO ischedule-bridge-ingest\r\n";
    write.write_all(lhlo).await.map_err(io)?;
    let offered = expect(&mut read, addr, "LHLO", 2).await?;
    if !offered
        .text
        .split_ascii_whitespace()
        .any(|word| word.eq_ignore_ascii_case("XCLIENT"))
    {
        return Err(LmtpError::NoXclient { addr });
    }
    write
        .write_all(format!("{client}\r\n").as_bytes())
        .await
        .map_err(io)?;
    expect(&mut read, addr, "XCLIENT", 2).await?;
    write.write_all(lhlo).await.map_err(io)?;
    expect(&mut read, addr, "LHLO after XCLIENT", 2).await?;
    write
        .write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
        .await
        .map_err(io)?;
    expect(&mut read, addr, "MAIL FROM", 2).await?;
    let mut replies: Vec<Option<SmtpReply>> = Vec::with_capacity(recipients.len());
    for rcpt in recipients {
        write
            .write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await
            .map_err(io)?;
        let reply = read_reply(&mut read, addr).await?;
        replies.push((!reply.is_positive()).then_some(reply));
    }
    if replies.iter().all(Option::is_some) {
        return Ok(replies.into_iter().flatten().collect());
    }
    write.write_all(b"DATA\r\n").await.map_err(io)?;
    expect(&mut read, addr, "DATA", 3).await?;
    write.write_all(&dot_stuffed(message)).await.map_err(io)?;
    for slot in replies.iter_mut().filter(|r| r.is_none()) {
        *slot = Some(read_reply(&mut read, addr).await?);
    }
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok(replies.into_iter().flatten().collect())
}

/// Reads a reply that must be of `class` (2 = positive, 3 = go ahead).
async fn expect<R: AsyncBufReadExt + Unpin>(
    read: &mut R,
    addr: SocketAddr,
    step: &'static str,
    class: u16,
) -> Result<SmtpReply, LmtpError> {
    let reply = read_reply(read, addr).await?;
    if reply.code.class() == class {
        Ok(reply)
    } else {
        Err(LmtpError::Protocol {
            addr,
            step,
            line: reply.to_string(),
        })
    }
}

/// The message with CRLF line ends, leading dots doubled, and the final dot.
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.split_inclusive(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// One (possibly multi-line) reply: `250-…` lines up to `250 …`, the code
/// of the last line, the texts joined by spaces.
async fn read_reply<R: AsyncBufReadExt + Unpin>(
    read: &mut R,
    addr: SocketAddr,
) -> Result<SmtpReply, LmtpError> {
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        let n = read
            .read_line(&mut line)
            .await
            .map_err(|source| LmtpError::Io { addr, source })?;
        if n == 0 {
            return Err(LmtpError::Closed { addr });
        }
        let line = ReplyLine::parse(line.trim_end())
            .map_err(|source| LmtpError::NotAReply { addr, source })?;
        text.push(line.text.to_string());
        if line.last {
            return Ok(SmtpReply::from_text(line.code, &text.join(" ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_stuffed_and_line_ends_made_crlf() {
        assert_eq!(dot_stuffed(b"a\n.b\r\n..c"), b"a\r\n..b\r\n...c\r\n.\r\n");
    }

    #[tokio::test]
    async fn multi_line_replies_are_joined() {
        let addr: SocketAddr = "127.0.0.1:24".parse().unwrap();
        let mut wire: &[u8] = b"550-5.1.1 No such\r\n550 user here\r\n250 2.0.0 OK\r\n";
        let first = read_reply(&mut wire, addr).await.unwrap();
        assert_eq!(first.to_string(), "550 5.1.1 No such user here");
        let second = read_reply(&mut wire, addr).await.unwrap();
        assert_eq!(second.to_string(), "250 2.0.0 OK");
        assert!(matches!(
            read_reply(&mut wire, addr).await,
            Err(LmtpError::Closed { .. })
        ));
        let mut garbage: &[u8] = b"hello\r\n";
        let e = read_reply(&mut garbage, addr).await.unwrap_err();
        assert_eq!(e.to_string(), "LMTP 127.0.0.1:24: not a reply: hello");
    }
}
