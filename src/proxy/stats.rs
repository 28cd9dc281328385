//! Per-route counters for the status API and the `status` event.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use serde_json::{json, Value};

/// Counters of one route. Relaxed atomics: they are statistics, read as a snapshot.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Requests routed here.
    pub requests: AtomicU64,
    /// Responses by status class, 1xx … 5xx.
    pub status: [AtomicU64; 5],
    /// Request body (and upgraded client→upstream) bytes.
    pub bytes_in: AtomicU64,
    /// Response body (and upgraded upstream→client) bytes.
    pub bytes_out: AtomicU64,
    /// WebSocket (upgraded) connections open now.
    pub websockets_open: AtomicU64,
    /// Upstream connect failures, resets and timeouts.
    pub upstream_errors: AtomicU64,
}

impl RouteStats {
    /// Counts a response status.
    pub fn record_status(&self, code: u16) {
        if let Some(c) = self.status.get((code / 100).wrapping_sub(1) as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// A JSON snapshot.
    pub fn snapshot(&self) -> Value {
        let s = |i: usize| self.status[i].load(Relaxed);
        json!({
            "requests": self.requests.load(Relaxed),
            "status": {"1xx": s(0), "2xx": s(1), "3xx": s(2), "4xx": s(3), "5xx": s(4)},
            "bytes_in": self.bytes_in.load(Relaxed),
            "bytes_out": self.bytes_out.load(Relaxed),
            "websockets_open": self.websockets_open.load(Relaxed),
            "upstream_errors": self.upstream_errors.load(Relaxed),
        })
    }
}

/// Which counter a [`CountingBody`] feeds.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client → upstream.
    In,
    /// Upstream → client.
    Out,
}

pin_project_lite::pin_project! {
    /// A body that counts its data bytes as they stream through (nothing is buffered).
    pub struct CountingBody<B> {
        #[pin]
        inner: B,
        stats: Arc<RouteStats>,
        dir: Direction,
        ended: Option<tokio::sync::oneshot::Sender<()>>,
    }
}

impl<B> CountingBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, stats: Arc<RouteStats>, dir: Direction) -> Self {
        Self { inner, stats, dir, ended: None }
    }

    /// Also reports when the body has been read to its end (or dropped).
    pub fn with_end_signal(mut self, ended: tokio::sync::oneshot::Sender<()>) -> Self {
        self.ended = Some(ended);
        self
    }
}

impl<B: Body> Body for CountingBody<B>
where
    B::Data: bytes::Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            if let Some(tx) = this.ended.take() {
                let _ = tx.send(());
            }
        }
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                let n = bytes::Buf::remaining(d) as u64;
                match this.dir {
                    Direction::In => this.stats.bytes_in.fetch_add(n, Relaxed),
                    Direction::Out => this.stats.bytes_out.fetch_add(n, Relaxed),
                };
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
