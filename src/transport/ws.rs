//! frp over WebSocket: `GET /~!frp` with the upgrade, then the byte stream in WebSocket frames.
//!
//! [`WsTransport`] wraps each stream of the layer under it (TCP or a proxy for `websocket`, TLS
//! for `wss`) in a WebSocket client (tokio-tungstenite), and [`WsStream`] turns its messages back
//! into bytes for the layers above (TLS inside for `websocket`, yamux, frp). frps up to 0.69
//! sends text frames and 0.70 binary ones; [`TextAsBinary`] makes both binary before tungstenite
//! sees them. burrow sends binary frames, which frps' websocket reader takes from every version.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::tcp::CONNECT_TIMEOUT;
use super::{BoxStream, Transport, TransportError};

/// The path frps serves its websocket on.
pub const PATH: &str = "/~!frp";

/// The largest message burrow accepts from the server (frp's writes are at most a yamux frame
/// or a TLS record; 1 MiB leaves room without letting a peer make burrow buffer without end).
const MAX_MESSAGE: usize = 1 << 20;

/// Opens each connection as a WebSocket to `host:port` over the layer under it.
pub struct WsTransport<T> {
    inner: T,
    /// `host:port` for the request's `Host` and `Origin`.
    authority: String,
    secure: bool,
}

impl<T: Transport> WsTransport<T> {
    /// WebSocket to `authority` (`host:port`) over `inner`; `secure` when `inner` is TLS (wss).
    pub fn new(inner: T, authority: String, secure: bool) -> Self {
        Self { inner, authority, secure }
    }

    async fn open(&self) -> Result<BoxStream, TransportError> {
        let stream = self.inner.connect().await?;
        let failed = |reason: String| TransportError::WebSocket { addr: self.authority.clone(), reason };
        let scheme = if self.secure { "wss" } else { "ws" };
        let mut req = format!("{scheme}://{}{PATH}", self.authority)
            .into_client_request()
            .map_err(|e| failed(format!("cannot make the upgrade request: {e}")))?;
        // frpc (golang.org/x/net/websocket) sends an Origin; proxies in front of frps may want one.
        let origin = format!("{}://{}", if self.secure { "https" } else { "http" }, self.authority);
        req.headers_mut().insert("Origin", origin.parse().map_err(|_| failed("bad Origin".into()))?);
        let config = tungstenite::protocol::WebSocketConfig {
            max_message_size: Some(MAX_MESSAGE),
            max_frame_size: Some(MAX_MESSAGE),
            ..Default::default()
        };
        let stream = TextAsBinary { inner: stream, scan: Scan::Answer { matched: 0 } };
        let handshake = tokio_tungstenite::client_async_with_config(req, stream, Some(config));
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| failed(format!("no answer to the upgrade within {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| {
                failed(match e {
                    tungstenite::Error::Http(resp) => {
                        format!("the upgrade on {PATH} was answered {} instead of 101", resp.status())
                    }
                    e => format!("the upgrade on {PATH} failed: {e}"),
                })
            })?;
        Ok(Box::new(WsStream { ws, read: Bytes::new(), eof: false }))
    }
}

impl<T: Transport> Transport for WsTransport<T> {
    fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>> {
        Box::pin(self.open())
    }
}

/// frps up to 0.69 (golang.org/x/net/websocket) carries frp's bytes in *text* frames, which
/// tungstenite refuses as bad UTF-8. Under tungstenite, this marks each text frame from the server
/// binary; the HTTP answer to the upgrade passes untouched. Headers are parsed by tungstenite.
struct TextAsBinary<S> {
    inner: S,
    scan: Scan,
}

enum Scan {
    /// In the HTTP answer; `matched` bytes of its closing `\r\n\r\n` seen.
    Answer { matched: usize },
    /// In a frame header: its first `len` bytes.
    Header { head: [u8; 14], len: usize },
    /// In a frame's payload: the bytes left.
    Payload(u64),
    /// tungstenite refuses what came; nothing more to rewrite.
    Done,
}

impl Scan {
    fn rewrite(&mut self, bytes: &mut [u8]) {
        const END: &[u8] = b"\r\n\r\n";
        let mut i = 0;
        while i < bytes.len() {
            let b = &mut bytes[i];
            match self {
                Scan::Answer { matched } => {
                    *matched = if *b == END[*matched] { *matched + 1 } else { usize::from(*b == b'\r') };
                    if *matched == END.len() {
                        *self = Scan::Header { head: [0; 14], len: 0 };
                    }
                    i += 1;
                }
                Scan::Header { head, len } => {
                    if *len == 0 && *b & 0x0F == 0x1 {
                        *b = (*b & 0xF0) | 0x2;
                    }
                    head[*len] = *b;
                    *len += 1;
                    i += 1;
                    let parsed = tungstenite::protocol::frame::FrameHeader::parse(&mut io::Cursor::new(&head[..*len]));
                    *self = match parsed {
                        Ok(Some((_, 0))) => Scan::Header { head: [0; 14], len: 0 },
                        Ok(Some((_, n))) => Scan::Payload(n),
                        Ok(None) if *len < head.len() => continue,
                        _ => Scan::Done,
                    };
                }
                Scan::Payload(left) => {
                    let n = (bytes.len() - i).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Scan::Header { head: [0; 14], len: 0 };
                    }
                    i += n;
                }
                Scan::Done => return,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TextAsBinary<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.scan.rewrite(&mut buf.filled_mut()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TextAsBinary<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A WebSocket as a byte stream: each message's payload is read in order; each write is one
/// binary message.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The rest of the message being read.
    read: Bytes,
    eof: bool,
}

/// What the websocket server did wrong, carried inside the `io::Error`s of the stream so the
/// session can name it rather than report a bare end of stream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WsError(String);

impl WsError {
    /// The websocket's own error inside `e`, if that is what `e` is.
    pub fn find(e: &io::Error) -> Option<&WsError> {
        e.get_ref()?.downcast_ref()
    }
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the websocket is closed")
        }
        e => io::Error::new(io::ErrorKind::InvalidData, WsError(format!("websocket: {e}"))),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.read = Bytes::from(b),
                Some(Ok(Message::Text(t))) => self.read = Bytes::from(t.into_bytes()),
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // frps ends a connection with a normal close; any other code is the server's
                // reason to drop it, worth naming.
                Some(Ok(Message::Close(Some(f)))) if f.code != CloseCode::Normal => {
                    let reason = if f.reason.is_empty() { String::new() } else { format!(" ({})", f.reason) };
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        WsError(format!(
                            "the websocket server closed the connection with code {}{reason}",
                            u16::from(f.code)
                        )),
                    )));
                }
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let ws = Pin::new(&mut self.ws);
        ready!(ws.poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.ws).start_send(Message::Binary(data.to_vec())).map_err(to_io)?;
        // Put it on the wire now if the socket takes it; a later flush sends it otherwise.
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.ws).poll_flush(cx) {
            return Poll::Ready(Err(to_io(e)));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;

    fn frames(kind: Data) -> Vec<u8> {
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        // Payloads around the 7-bit and 16-bit length boundaries, a ping, an empty frame.
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 0xC3) as u8).collect();
            Frame::message(payload, OpCode::Data(kind), true).format(&mut out).unwrap();
            Frame::ping(vec![1, 2, 3]).format(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn text_frames_become_binary_in_any_chunking() {
        let (text, binary) = (frames(Data::Text), frames(Data::Binary));
        assert_ne!(text, binary);
        for chunk in [1, 2, 3, 7, 13, 126, 4096, usize::MAX] {
            let mut seen = text.clone();
            let mut scan = Scan::Answer { matched: 0 };
            for part in seen.chunks_mut(chunk.min(text.len())) {
                scan.rewrite(part);
            }
            assert!(seen == binary, "chunks of {chunk}");
            // Binary frames (frps 0.70) pass untouched.
            let mut seen = binary.clone();
            let mut scan = Scan::Answer { matched: 0 };
            for part in seen.chunks_mut(chunk.min(text.len())) {
                scan.rewrite(part);
            }
            assert!(seen == binary, "binary, chunks of {chunk}");
        }
    }
}
