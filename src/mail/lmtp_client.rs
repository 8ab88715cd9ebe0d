//! A minimal LMTP client (RFC 2033) for `ischedule-bridge ingest`: when a
//! running bridge holds the store, the message is handed to its LMTP
//! listener and each recipient's reply comes back, as if delivered locally.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::listener::Reply;

#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    #[error("LMTP {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("LMTP {addr}: unexpected reply to {step}: {line}")]
    Protocol {
        addr: SocketAddr,
        step: &'static str,
        line: String,
    },
    #[error("LMTP {addr}: no answer within {0:?}", .timeout)]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// Delivers `message`; one reply per recipient, in order (a recipient
/// refused at RCPT keeps that refusal).
pub async fn deliver(
    addr: SocketAddr,
    from: &str,
    recipients: &[String],
    message: &[u8],
    timeout: Duration,
) -> Result<Vec<Reply>, LmtpError> {
    tokio::time::timeout(timeout, exchange(addr, from, recipients, message))
        .await
        .unwrap_or(Err(LmtpError::Timeout { addr, timeout }))
}

async fn exchange(
    addr: SocketAddr,
    from: &str,
    recipients: &[String],
    message: &[u8],
) -> Result<Vec<Reply>, LmtpError> {
    let io = |source| LmtpError::Io { addr, source };
    let stream = TcpStream::connect(addr).await.map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, addr, "greeting", 2).await?;
    write
        .write_all(b"LHLO ischedule-bridge-ingest\r\n")
        .await
        .map_err(io)?;
    expect(&mut read, addr, "LHLO", 2).await?;
    write
        .write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
        .await
        .map_err(io)?;
    expect(&mut read, addr, "MAIL FROM", 2).await?;
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(recipients.len());
    for rcpt in recipients {
        write
            .write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await
            .map_err(io)?;
        let reply = read_reply(&mut read).await.map_err(io)?;
        replies.push((reply.code / 100 != 2).then_some(reply));
    }
    if replies.iter().all(Option::is_some) {
        return Ok(replies.into_iter().flatten().collect());
    }
    write.write_all(b"DATA\r\n").await.map_err(io)?;
    expect(&mut read, addr, "DATA", 3).await?;
    write.write_all(&dot_stuffed(message)).await.map_err(io)?;
    for slot in replies.iter_mut().filter(|r| r.is_none()) {
        *slot = Some(read_reply(&mut read).await.map_err(io)?);
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
) -> Result<Reply, LmtpError> {
    let reply = read_reply(read)
        .await
        .map_err(|source| LmtpError::Io { addr, source })?;
    if reply.code / 100 == class {
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

/// One (possibly multi-line) reply: `250-…` lines up to `250 …`.
async fn read_reply<R: AsyncBufReadExt + Unpin>(read: &mut R) -> std::io::Result<Reply> {
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let line = line.trim_end();
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a reply: {line}"),
            )
        })?;
        let rest = line.get(4..).unwrap_or_default();
        text.push(rest.to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            let (enhanced, first) = split_enhanced(&text[0]);
            text[0] = first;
            return Ok(Reply {
                code,
                enhanced,
                text: text.join(" "),
            });
        }
    }
}

fn split_enhanced(text: &str) -> (Option<(u8, u16, u16)>, String) {
    let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = head.split('.').map(|p| p.parse::<u16>().ok());
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next(),
    ) {
        (Some(a), Some(b), Some(c), None) if a <= 5 => (Some((a as u8, b, c)), rest.to_string()),
        _ => (None, text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_stuffed_and_line_ends_made_crlf() {
        assert_eq!(dot_stuffed(b"a\n.b\r\n..c"), b"a\r\n..b\r\n...c\r\n.\r\n");
    }

    #[test]
    fn enhanced_codes_are_split_off() {
        assert_eq!(
            split_enhanced("5.1.1 No such user"),
            (Some((5, 1, 1)), "No such user".into())
        );
        assert_eq!(split_enhanced("OK"), (None, "OK".into()));
    }
}
