//! Per-route counters for the status API and the `status` event.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};

/// Counters of one route, kept apart per thread and summed when read.
///
/// Every request bumps a few counters (and clones the handle its bodies count with). With one
/// set of counters, the proxy's worker threads would pass its cache line back and forth on every
/// request; a set per thread keeps each worker on its own line.
#[derive(Debug)]
pub struct RouteStats {
    shards: Box<[Arc<Counters>]>,
}

/// How many sets of counters a route keeps (threads beyond this share them).
const SHARDS: usize = 16;

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % SHARDS
    };
}

impl Default for RouteStats {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Arc::default()).collect() }
    }
}

impl RouteStats {
    /// This thread's counters.
    pub fn local(&self) -> &Arc<Counters> {
        &self.shards[SHARD.with(|s| *s)]
    }

    /// The route's counters, summed over the threads. A gauge (open WebSockets) may go up on one
    /// thread's counters and down on another's; the wrapping sum is still right.
    pub fn snapshot(&self) -> Totals {
        let sum = |f: &dyn Fn(&Counters) -> &AtomicU64| {
            self.shards.iter().fold(0u64, |acc, c| acc.wrapping_add(f(c).load(Relaxed)))
        };
        let s = |i: usize| sum(&|c| &c.status[i]);
        Totals {
            requests: sum(&|c| &c.requests),
            status: StatusClasses { x1: s(0), x2: s(1), x3: s(2), x4: s(3), x5: s(4) },
            bytes_in: sum(&|c| &c.bytes_in),
            bytes_out: sum(&|c| &c.bytes_out),
            websockets_open: sum(&|c| &c.websockets_open),
            upstream_errors: sum(&|c| &c.upstream_errors),
        }
    }
}

/// A route's counters at one moment, as `status.proxy` and `proxy_ready.routes` show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Requests routed here.
    pub requests: u64,
    /// Responses by status class.
    pub status: StatusClasses,
    /// Request body (and upgraded client→upstream) bytes.
    pub bytes_in: u64,
    /// Response body (and upgraded upstream→client) bytes.
    pub bytes_out: u64,
    /// Upgraded connections open now.
    pub websockets_open: u64,
    /// Exchanges the upstream failed (502, 504).
    pub upstream_errors: u64,
}

/// Responses by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct StatusClasses {
    #[serde(rename = "1xx")]
    pub x1: u64,
    #[serde(rename = "2xx")]
    pub x2: u64,
    #[serde(rename = "3xx")]
    pub x3: u64,
    #[serde(rename = "4xx")]
    pub x4: u64,
    #[serde(rename = "5xx")]
    pub x5: u64,
}

/// One thread's counters of a route. Relaxed atomics: they are statistics, read as a snapshot.
/// Aligned to keep two threads' counters off one cache line (128: adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
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

impl Counters {
    /// Counts a response status.
    pub fn record_status(&self, code: u16) {
        if let Some(c) = self.status.get((code / 100).wrapping_sub(1) as usize) {
            c.fetch_add(1, Relaxed);
        }
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
        stats: Arc<Counters>,
        dir: Direction,
        progress: Option<Arc<Progress>>,
    }
}

impl<B> CountingBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, stats: Arc<Counters>, dir: Direction) -> Self {
        Self { inner, stats, dir, progress: None }
    }

    /// Also records when the body was last read from.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }
}

/// When an upload was last read from: by hyper's client, as the upstream makes room for more. An
/// upstream that stops reading stops it moving.
#[derive(Debug)]
pub struct Progress {
    start: tokio::time::Instant,
    last_ns: std::sync::atomic::AtomicU64,
    ended: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// Progress made now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { start: tokio::time::Instant::now(), last_ns: Default::default(), ended: Default::default() })
    }

    fn touch(&self) {
        self.last_ns.store(self.start.elapsed().as_nanos() as u64, Relaxed);
    }

    /// When the body was last read from.
    pub fn last(&self) -> tokio::time::Instant {
        self.start + std::time::Duration::from_nanos(self.last_ns.load(Relaxed))
    }

    /// The body was read to its end, or dropped (an upstream that answered early).
    pub fn ended(self: &Arc<Self>) -> bool {
        self.ended.load(Relaxed) || Arc::strong_count(self) == 1
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
        if let (Poll::Ready(r), Some(p)) = (&r, this.progress) {
            p.touch();
            if !matches!(r, Some(Ok(_))) {
                p.ended.store(true, Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_apart_and_the_snapshot_sums_them() {
        let stats = Arc::new(RouteStats::default());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    stats.local().requests.fetch_add(10, Relaxed);
                    stats.local().record_status(204);
                    Arc::as_ptr(stats.local()) as usize
                })
            })
            .collect();
        let shards: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(shards.windows(2).any(|w| w[0] != w[1]), "threads share one set of counters");
        // A gauge raised on one thread and lowered on another still sums to the truth.
        stats.local().websockets_open.fetch_add(1, Relaxed);
        let s = stats.clone();
        std::thread::spawn(move || s.local().websockets_open.fetch_sub(1, Relaxed)).join().unwrap();
        let snap = stats.snapshot();
        assert_eq!((snap.requests, snap.status.x2, snap.websockets_open), (30, 3, 0));
    }
}
