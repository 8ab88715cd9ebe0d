//! The byte level of a session: command lines and message data read with
//! their limits, replies buffered until the client waits for them, and the
//! switch to TLS. Kept apart from the commands because this is where the
//! line-ending rules that stop SMTP smuggling live.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::Limits;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Reply lines are cut to this many octets before CRLF (RFC 5321 4.5.3.1.5: 512 with CRLF).
const MAX_REPLY_LINE: usize = 510;
/// How long closing a connection (TLS close_notify, FIN) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection, plain or after STARTTLS.
enum Io<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// During a TLS handshake, and after a failed one.
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read_buf(buf).await,
            Io::Tls(s) => s.read_buf(buf).await,
            Io::Closed => Ok(0),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Io::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Io::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Io::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.shutdown().await,
            Io::Tls(s) => s.shutdown().await,
            Io::Closed => Ok(()),
        }
    }
}

/// What reading a line gave.
pub(super) enum Input {
    /// A line without its CRLF / LF; `crlf` tells which it had.
    Line {
        line: BytesMut,
        crlf: bool,
    },
    /// A line over the limit (read to its end and dropped).
    TooLong {
        crlf: bool,
    },
    Eof,
    Timeout,
    /// The listener is shutting down.
    Stop,
}

/// The outcome of reading the message after 354.
pub(super) enum Data {
    Complete(Vec<u8>),
    TooBig,
    LineTooLong,
    Timeout,
    Eof,
}

/// Why STARTTLS did not give a TLS session; the connection is unusable.
pub(super) enum TlsFailure {
    /// Already under TLS or closed: nothing to hand to the handshake.
    NotPlain,
    Handshake(io::Error),
    Timeout,
}

/// One client connection at the byte level.
pub(super) struct Connection<S> {
    io: Io<S>,
    rbuf: BytesMut,
    /// Replies not sent yet: flushed when the session needs more input, so
    /// pipelined commands get their replies in one write (RFC 2920).
    wbuf: Vec<u8>,
    stop: watch::Receiver<bool>,
    /// Longest line, CRLF included.
    max_line_bytes: usize,
    /// How long the client may take to take our replies.
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(super) fn new(stream: S, stop: watch::Receiver<bool>, limits: &Limits) -> Self {
        Connection {
            io: Io::Plain(stream),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            stop,
            max_line_bytes: limits.max_line_bytes.max(3),
            write_timeout: limits.command_timeout,
        }
    }

    /// Queues one reply line, cut to the length RFC 5321 allows.
    pub(super) fn write_line(&mut self, line: &str) {
        let mut end = line.len().min(MAX_REPLY_LINE);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        self.wbuf.extend_from_slice(&line.as_bytes()[..end]);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match timeout(self.write_timeout, self.io.write_all(&self.wbuf)).await {
            Ok(written) => written?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
        self.wbuf.clear();
        Ok(())
    }

    /// The next line, at most `max_line_bytes` with its line end. Flushes
    /// pending replies before it waits for the client. `interruptible`: give
    /// up with [`Input::Stop`] when the listener shuts down.
    pub(super) async fn read_line(
        &mut self,
        deadline: Instant,
        interruptible: bool,
    ) -> io::Result<Input> {
        let max = self.max_line_bytes;
        let mut discarding = false;
        loop {
            if let Some(lf) = self.rbuf.iter().position(|&b| b == b'\n') {
                let mut line = self.rbuf.split_to(lf + 1);
                line.truncate(lf);
                let crlf = line.last() == Some(&b'\r');
                if crlf {
                    line.truncate(lf - 1);
                }
                if discarding || line.len() + 2 > max {
                    return Ok(Input::TooLong { crlf });
                }
                return Ok(Input::Line { line, crlf });
            }
            if self.rbuf.len() >= max {
                // Too long whatever follows: drop it and look for the line end.
                discarding = true;
                self.rbuf.clear();
            }
            self.flush().await?;
            self.rbuf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                () = stopped(&mut self.stop), if interruptible => return Ok(Input::Stop),
                read = timeout_at(deadline, self.io.read_buf(&mut self.rbuf)) => match read {
                    Err(_) => return Ok(Input::Timeout),
                    Ok(Ok(0)) => return Ok(Input::Eof),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                },
            }
        }
    }

    /// Reads the message after 354 up to `<CRLF>.<CRLF>`: dot-unstuffed,
    /// line ends as CRLF; over `max_bytes` or the line limit it reads on to
    /// the end and keeps nothing.
    pub(super) async fn read_data(
        &mut self,
        max_bytes: usize,
        limit: Duration,
    ) -> io::Result<Data> {
        let deadline = Instant::now() + limit;
        let mut message = Vec::new();
        let (mut too_big, mut too_long) = (false, false);
        // The DATA command line counts as the CRLF before a leading ".".
        let mut after_crlf = true;
        loop {
            match self.read_line(deadline, false).await? {
                Input::Line { line, crlf } => {
                    if crlf && after_crlf && line[..] == b"."[..] {
                        break;
                    }
                    after_crlf = crlf;
                    if too_big || too_long {
                        continue;
                    }
                    let text = match line.strip_prefix(b".") {
                        Some(rest) if !rest.is_empty() => rest,
                        _ => &line[..],
                    };
                    if message.len() + text.len() + 2 > max_bytes {
                        too_big = true;
                        message = Vec::new();
                        continue;
                    }
                    message.extend_from_slice(text);
                    message.extend_from_slice(b"\r\n");
                }
                Input::TooLong { crlf } => {
                    after_crlf = crlf;
                    too_long = true;
                    message = Vec::new();
                }
                Input::Eof => return Ok(Data::Eof),
                Input::Timeout => return Ok(Data::Timeout),
                Input::Stop => unreachable!("DATA is not interruptible"),
            }
        }
        Ok(if too_long {
            Data::LineTooLong
        } else if too_big {
            Data::TooBig
        } else {
            Data::Complete(message)
        })
    }

    /// Drops what the client sent ahead of our reply; how many bytes.
    /// Whether the listener has been told to stop.
    pub(super) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub(super) fn discard_input(&mut self) -> usize {
        let pending = self.rbuf.len();
        self.rbuf.clear();
        pending
    }

    /// The TLS handshake on the plain connection, bounded by `limit`.
    pub(super) async fn start_tls(
        &mut self,
        acceptor: &TlsAcceptor,
        limit: Duration,
    ) -> Result<(), TlsFailure> {
        let Io::Plain(stream) = std::mem::replace(&mut self.io, Io::Closed) else {
            return Err(TlsFailure::NotPlain);
        };
        match timeout(limit, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                self.io = Io::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => Err(TlsFailure::Handshake(e)),
            Err(_) => Err(TlsFailure::Timeout),
        }
    }

    /// Sends what is pending and closes, without waiting long for either.
    pub(super) async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = timeout(CLOSE_TIMEOUT, self.io.shutdown()).await;
    }
}

/// Resolves once the listener shuts down (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}
