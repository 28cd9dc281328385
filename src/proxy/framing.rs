//! A watch on the request bytes hyper reads, for the two smuggling shapes hyper settles by itself.
//!
//! hyper's parser refuses most ambiguous framing, but it *resolves* two cases before the proxy
//! sees the request: `Content-Length` together with `Transfer-Encoding` (chunked wins, the length
//! is dropped) and a repeated, equal `Content-Length` (merged). Both are legal for an
//! intermediary (RFC 9112 §6.3, RFC 9110 §8.6), but a request that carries them is an attempt to
//! make two parsers disagree, and the proxy refuses it outright, as it does the rest.
//!
//! [`FramingGuard`] passes every byte through unchanged and follows the request framing on the
//! side: it parses each head with `httparse`, then skips the body by its length or its chunks to
//! find the next head. It never rejects anything itself; it raises a flag that the request handler
//! checks. It cannot lag behind hyper, which only gets bytes through it. When it cannot follow the
//! stream (a head it cannot parse, a malformed chunk — both of which hyper refuses too, closing
//! the connection), it stops watching. Its line rules follow hyper's where they differ from the
//! RFC's leniencies (trailer lines end at CRLF only; chunk sizes may have leading zeros), so that
//! no input makes it read a body as a head, or a head as a body, where hyper does not.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads longer than this are left to hyper (which answers 431 past its own limit).
const MAX_HEAD: usize = 2 * super::MAX_HEAD;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// In a chunked body.
    Chunk(Chunk),
    /// No longer following (upgrade, CONNECT, unparseable, or already flagged).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the size line; `size` so far, `in_ext` after a `;`.
    Size {
        size: u64,
        digits: u8,
        in_ext: bool,
    },
    /// Expecting the LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    /// Skipping chunk data.
    Data(u64),
    /// The CRLF after chunk data.
    DataCr,
    DataLf,
    /// Trailer section: `line_len` bytes of the current line seen (0 at a line start), `cr`
    /// after a CR. Lines end at CRLF only, as hyper reads them: a bare LF is an ordinary byte.
    Trailer {
        line_len: usize,
        cr: bool,
    },
}

/// The request stream of one proxy connection, watched for ambiguous framing.
pub struct FramingGuard<S> {
    inner: S,
    state: State,
    head: Vec<u8>,
    ambiguous: Arc<AtomicBool>,
}

impl<S> FramingGuard<S> {
    /// Wraps `inner`; the returned flag turns true once a request with ambiguous framing was read.
    pub fn new(inner: S) -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (Self { inner, state: State::Head, head: Vec::new(), ambiguous: flag.clone() }, flag)
    }

    /// Follows `data`, the next bytes of the request stream (what `poll_read` does with each
    /// read; public for the fuzz target).
    pub fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Chunk(c) => {
                    let (used, next) = step_chunk(*c, data);
                    data = &data[used..];
                    self.state = match next {
                        Some(c) => State::Chunk(c),
                        None if used == 0 => State::Off,
                        None => State::Head,
                    };
                    if used == 0 {
                        return;
                    }
                }
                State::Head => {
                    // Blank lines between requests are allowed (RFC 9112 §2.2).
                    if self.head.is_empty() {
                        let skip = data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let before = self.head.len();
                    let end = find_head_end(&self.head, data);
                    if let (0, Some(end)) = (before, end) {
                        // The whole head is in this read (the usual case): judged where it lies.
                        self.state = self.judge_head(&data[..end]);
                        data = &data[end..];
                        continue;
                    }
                    let take = end.map_or(data.len(), |e| e - before);
                    self.head.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if end.is_none() {
                        if self.head.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    }
                    self.state = self.judge_head(&self.head);
                    self.head.clear();
                }
            }
        }
    }

    /// Decides what follows a complete head, and raises the flag for ambiguous framing.
    /// Whether the guard still follows the stream (false after an upgrade or what it could not
    /// parse), and whether it is between requests.
    pub fn following(&self) -> (bool, bool) {
        (!matches!(self.state, State::Off), matches!(self.state, State::Head) && self.head.is_empty())
    }

    fn judge_head(&self, head: &[u8]) -> State {
        // Uninitialised: this runs for every request, and 128 headers are 4 KiB to fill.
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; 128];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return State::Off,
        }
        let (mut cl, mut cls, mut te) = (None, 0, 0);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl = Some(h.value);
                cls += 1;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te += 1;
            }
        }
        if (te > 0 && cls > 0) || cls > 1 {
            self.ambiguous.store(true, Ordering::Relaxed);
            return State::Off;
        }
        // An `Upgrade` or CONNECT request is followed like any other: hyper goes on serving HTTP
        // unless the answer switches protocols, and after a switch it dispatches no more
        // requests, so whatever the guard makes of the upgraded bytes is never acted on.
        if te > 0 {
            return State::Chunk(Chunk::Size { size: 0, digits: 0, in_ext: false });
        }
        match cl {
            None => State::Head,
            Some(v) => match std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Off,
            },
        }
    }
}

/// Where the head ends (index into `head ++ data`, after the blank line), if it does in `data`.
/// A head ends at an empty line: LF LF, or LF CR LF (so CRLF CRLF too).
fn find_head_end(head: &[u8], data: &[u8]) -> Option<usize> {
    let at = |k: usize| if k < head.len() { head[k] } else { data[k - head.len()] };
    memchr::memchr_iter(b'\n', data).map(|off| head.len() + off).find_map(|k| {
        let blank = (k >= 1 && at(k - 1) == b'\n') || (k >= 2 && at(k - 1) == b'\r' && at(k - 2) == b'\n');
        blank.then_some(k + 1)
    })
}

/// Advances a chunked body over `data`: bytes used, and the next state (`None` with bytes used:
/// the body ended; `None` with nothing used: malformed, stop following).
fn step_chunk(mut c: Chunk, data: &[u8]) -> (usize, Option<Chunk>) {
    let mut i = 0;
    while i < data.len() {
        if let Chunk::Data(left) = c {
            let n = left.min((data.len() - i) as u64);
            i += n as usize;
            c = if left == n { Chunk::DataCr } else { Chunk::Data(left - n) };
            continue;
        }
        let b = data[i];
        c = match c {
            Chunk::Size { size, digits, in_ext } => match b {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => end_of_size(size),
                _ if in_ext => c,
                b';' | b' ' | b'\t' => Chunk::Size { size, digits, in_ext: true },
                // Leading zeros are free (hyper only checks that the value fits in a u64).
                _ => match (b as char).to_digit(16) {
                    Some(0) if size == 0 => Chunk::Size { size, digits, in_ext },
                    Some(d) if digits < 16 => {
                        Chunk::Size { size: size * 16 + u64::from(d), digits: digits + 1, in_ext }
                    }
                    _ => return (0, None),
                },
            },
            Chunk::SizeLf { size } if b == b'\n' => end_of_size(size),
            Chunk::SizeLf { .. } => return (0, None),
            Chunk::Data(_) => c,
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataCr | Chunk::DataLf if b == b'\n' => Chunk::Size { size: 0, digits: 0, in_ext: false },
            Chunk::DataCr | Chunk::DataLf => return (0, None),
            Chunk::Trailer { line_len, cr } => match b {
                b'\n' if cr && line_len == 0 => return (i + 1, None),
                b'\n' if cr => Chunk::Trailer { line_len: 0, cr: false },
                b'\r' => Chunk::Trailer { line_len, cr: true },
                _ => Chunk::Trailer { line_len: line_len + 1 + usize::from(cr), cr: false },
            },
        };
        i += 1;
    }
    (i, Some(c))
}

fn end_of_size(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Trailer { line_len: 0, cr: false }
    } else {
        Chunk::Data(size)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if !matches!(this.state, State::Off) {
                this.observe(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step`; whether the flag went up, and the final state.
    fn watch(bytes: &[u8], step: usize) -> (bool, String) {
        let (mut g, flag) = FramingGuard::new(());
        for piece in bytes.chunks(step) {
            g.observe(piece);
        }
        (flag.load(Ordering::Relaxed), format!("{:?}", g.state))
    }

    fn every_slicing(bytes: &[u8]) -> (bool, String) {
        let whole = watch(bytes, bytes.len().max(1));
        for step in 1..bytes.len().min(64) {
            assert_eq!(watch(bytes, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn follows_keep_alive_requests_with_bodies() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n11;ext=1\r\nContent-Length: 9\r\n0\r\nX-Trailer: t\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        // The chunk data looks like a header; it must be skipped as data, not read as one.
        assert_eq!(every_slicing(stream), (false, "Head".into()));
    }

    #[test]
    fn flags_the_shapes_hyper_resolves_itself() {
        for req in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        ] {
            assert!(every_slicing(req).0, "{}", String::from_utf8_lossy(req));
        }
        // Also when it is the second request on the connection.
        let second = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na";
        assert!(every_slicing(second).0);
    }

    #[test]
    fn an_upgrade_request_does_not_end_the_watch() {
        // hyper goes on serving HTTP when the answer is not 101: so must the guard.
        let s = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: a\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(every_slicing(s).0);
        let c = b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na";
        assert!(every_slicing(c).0);
    }

    #[test]
    fn trailers_end_at_crlf_only_and_sizes_take_leading_zeros() {
        // A bare LF in the trailers is data to hyper: the GET below is part of the trailer
        // section, and the smuggling request after it is the next request.
        let s = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\n\r\nGET / HTTP/1.1\r\nContent-Length: 80\r\n\r\n\
POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na";
        assert!(every_slicing(s).0);
        let z =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000005\r\nhello\r\n0\r\n\r\n\
POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na";
        assert!(every_slicing(z).0);
    }

    #[test]
    fn stops_following_what_it_cannot_parse() {
        let bad_chunk = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(every_slicing(bad_chunk), (false, "Off".into()));
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD + 10]].concat();
        assert_eq!(watch(&huge, 4096), (false, "Off".into()));
    }
}
