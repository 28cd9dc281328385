//! [`SnappyStream`]: snappy framing in both directions, one chunk per write as Go's writer does.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use burrow_proto::snappy::{Compressor, Decompressor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Pending;

const READ_CHUNK: usize = 32 * 1024;

/// Compresses what is written and decompresses what is read.
pub struct SnappyStream<S> {
    inner: S,
    comp: Compressor,
    decomp: Decompressor,
    out: Pending,
    plain: Vec<u8>,
    plain_pos: usize,
    raw: Box<[u8]>,
}

impl<S> SnappyStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            comp: Compressor::new(),
            decomp: Decompressor::new(),
            out: Pending::default(),
            plain: Vec::new(),
            plain_pos: 0,
            raw: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SnappyStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.plain_pos < this.plain.len() {
                let n = (this.plain.len() - this.plain_pos).min(buf.remaining());
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            this.plain.clear();
            this.plain_pos = 0;
            let mut rb = ReadBuf::new(&mut this.raw);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                if this.decomp.buffered() > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "compressed stream ended inside a snappy chunk",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            this.decomp
                .decompress(&this.raw[..n], &mut this.plain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SnappyStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let comp = &mut this.comp;
        this.out.poll_write(&mut this.inner, cx, data, |data, buf| comp.compress(data, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.out.poll_flush(&mut this.inner, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.out.poll_shutdown(&mut this.inner, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn compress_then_encrypt_round_trip() {
        let key = [3u8; 16];
        let (a, b) = tokio::io::duplex(1000);
        let mut w = SnappyStream::new(super::super::CryptoStream::new(a, &key));
        let mut r = SnappyStream::new(super::super::CryptoStream::new(b, &key));
        let data: Vec<u8> = (0..300_000u32).map(|i| if i % 3 == 0 { b'a' } else { (i % 7) as u8 }).collect();
        let send = data.clone();
        tokio::spawn(async move {
            w.write_all(&send).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn truncated_stream_is_an_error() {
        let (mut a, b) = tokio::io::duplex(1000);
        let mut wire = Vec::new();
        Compressor::new().compress(b"hello world, hello world", &mut wire);
        a.write_all(&wire[..wire.len() - 3]).await.unwrap();
        drop(a);
        let mut r = SnappyStream::new(b);
        let mut got = Vec::new();
        assert_eq!(r.read_to_end(&mut got).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
