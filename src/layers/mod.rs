//! Stream layers frp puts on a connection after its handshake: AES-128-CFB encryption (the
//! control connection after `LoginResp`; work connections with `useEncryption`) and snappy
//! framing (work connections with `useCompression`). Each wraps any `AsyncRead + AsyncWrite` and
//! is one itself, so they stack in frp's order: the application writes into compression, which
//! writes into encryption, which writes into the connection.

mod crypto;
mod snappy;

pub use crypto::CryptoStream;
pub use snappy::SnappyStream;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

use crate::transport::BoxStream;

/// Largest plaintext a layer takes in one `poll_write`; bounds each layer's write buffer.
pub const MAX_WRITE: usize = 64 * 1024;

/// Bytes a layer has produced but the inner stream has not taken yet.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    pos: usize,
}

impl Pending {
    /// Writes out everything pending; `Ready(Ok)` means the buffer is empty.
    fn poll_drain<S: AsyncWrite + Unpin>(&mut self, inner: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.buf[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.buf.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }

    /// A layer's `poll_write`: once earlier output is out, `produce` turns up to [`MAX_WRITE`]
    /// bytes of `data` into output, which starts going out at once (what does not fit goes with
    /// the next write or flush).
    fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        data: &[u8],
        produce: impl FnOnce(&[u8], &mut Vec<u8>),
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(inner, cx))?;
        let n = data.len().min(MAX_WRITE);
        produce(&data[..n], &mut self.buf);
        if let Poll::Ready(Err(e)) = self.poll_drain(inner, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    /// A layer's `poll_flush`: pending output first, then the inner stream.
    fn poll_flush<S: AsyncWrite + Unpin>(&mut self, inner: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner, cx))?;
        Pin::new(inner).poll_flush(cx)
    }

    /// A layer's `poll_shutdown`: pending output first, then the inner stream.
    fn poll_shutdown<S: AsyncWrite + Unpin>(&mut self, inner: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner, cx))?;
        Pin::new(inner).poll_shutdown(cx)
    }
}

/// Applies a proxy's `useEncryption`/`useCompression` to a work connection, in frp's order.
pub fn wrap_work_conn(conn: BoxStream, key: Option<&[u8; 16]>, compress: bool) -> BoxStream {
    let conn = match key {
        Some(k) => Box::new(CryptoStream::new(conn, k)) as BoxStream,
        None => conn,
    };
    if compress {
        Box::new(SnappyStream::new(conn))
    } else {
        conn
    }
}
