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
    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

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
