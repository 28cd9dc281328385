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

/// Where a chunked body is: hyper's decoder's states (`proto/h1/decode.rs`), so that the guard
/// and the proxy's fast path end a body, or give up on it, exactly where hyper would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// A size line's first byte, which must be a hex digit.
    Start,
    /// In the size's digits.
    Size(u64),
    /// Whitespace after the size: no more digits.
    SizeLws(u64),
    /// In a chunk extension, until CR.
    Ext(u64),
    /// The LF that ends a size line.
    SizeLf(u64),
    /// Skipping chunk data.
    Data(u64),
    /// The CRLF after chunk data.
    DataCr,
    DataLf,
    /// After the last chunk or a trailer line: CR ends the body, anything else starts a line.
    EndCr,
    /// The body's final LF.
    EndLf,
    /// In a trailer line, until CR.
    Trailer,
    /// The LF after a trailer line's CR.
    TrailerLf,
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
                    let (used, next) = step_chunk(*c, data, &mut 0, false);
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
            return State::Chunk(Chunk::START);
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

impl Chunk {
    /// Before the first size line.
    pub(super) const START: Chunk = Chunk::Start;
}

/// Advances a chunked body over `data`: bytes used, and the next state (`None` with bytes used:
/// the body ended; `None` with nothing used: malformed, stop following). Adds the chunk data
/// bytes among those used to `payload`.
///
/// The rules are hyper's: CRLF line ends only, a size of at least one digit that fits in a u64,
/// whitespace then only `;` or CR. A bare LF inside a trailer line is an ordinary byte to hyper's
/// decoder (which ends the body at the same byte, then refuses the trailer lines as headers);
/// `strict` (for responses, read by clients that may end a line there) makes it malformed.
pub(super) fn step_chunk(mut c: Chunk, data: &[u8], payload: &mut u64, strict: bool) -> (usize, Option<Chunk>) {
    let mut i = 0;
    while i < data.len() {
        if let Chunk::Data(left) = c {
            let n = left.min((data.len() - i) as u64);
            i += n as usize;
            *payload += n;
            c = if left == n { Chunk::DataCr } else { Chunk::Data(left - n) };
            continue;
        }
        let b = data[i];
        let digit = |size: u64| {
            let d = (b as char).to_digit(16)?;
            size.checked_mul(16)?.checked_add(u64::from(d))
        };
        c = match (c, b) {
            (Chunk::Start, _) => match digit(0) {
                Some(size) => Chunk::Size(size),
                None => return (0, None),
            },
            (Chunk::Size(size), b'\r') | (Chunk::SizeLws(size) | Chunk::Ext(size), b'\r') => Chunk::SizeLf(size),
            (Chunk::Size(size) | Chunk::SizeLws(size), b' ' | b'\t') => Chunk::SizeLws(size),
            (Chunk::Size(size) | Chunk::SizeLws(size), b';') => Chunk::Ext(size),
            (Chunk::Size(size), _) => match digit(size) {
                Some(size) => Chunk::Size(size),
                None => return (0, None),
            },
            (Chunk::SizeLws(_), _) => return (0, None),
            (Chunk::Ext(_), b'\n') => return (0, None),
            (Chunk::Ext(size), _) => Chunk::Ext(size),
            (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
            (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::EndLf, b'\n') => return (i + 1, None),
            (Chunk::EndCr | Chunk::Trailer, b'\n') if strict => return (0, None),
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            (Chunk::SizeLf(_) | Chunk::DataCr | Chunk::DataLf | Chunk::EndLf | Chunk::TrailerLf, _) => {
                return (0, None)
            }
            // Skipped above, a whole run at a time.
            (Chunk::Data(left), _) => Chunk::Data(left),
        };
        i += 1;
    }
    (i, Some(c))
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
    fn chunk_lines_follow_hyper_to_the_byte() {
        let run = |body: &[u8], strict: bool| {
            let mut payload = 0;
            let mut c = Chunk::START;
            for (i, b) in body.iter().enumerate() {
                match step_chunk(c, std::slice::from_ref(b), &mut payload, strict) {
                    (1, Some(next)) => c = next,
                    (1, None) => return Ok((i + 1, payload)),
                    _ => return Err(i),
                }
            }
            Err(body.len())
        };
        assert_eq!(run(b"5;a=b\r\nhello\r\n00 \t;x\r\nT: 1\r\n\r\nnext", false), Ok((30, 5)));
        assert_eq!(run(b"0\r\nT: a\nb\r\n\r\n", false), Ok((13, 0)), "hyper's decoder ends here too");
        assert_eq!(run(b"0\r\nT: a\nb\r\n\r\n", true), Err(7), "and malformed in a response");
        assert_eq!(run(b"0\r\n\n", true), Err(3));
        for (bad, at) in [
            (&b"\r\n"[..], 0),              // no size digit
            (b";x\r\n", 0),                 // nor before an extension
            (b"5 5\r\n", 2),                // digits after whitespace
            (b"5\nhello", 1),               // a bare LF ends no size line
            (b"5;x\nhello", 3),             // nor an extension
            (b"5\r\nhello\n0\r\n", 8),      // nor chunk data
            (b"0\r\nT: 1\rx", 8),           // CR then not LF in a trailer
            (b"10000000000000000\r\n", 16), // over u64
        ] {
            assert_eq!(run(bad, false), Err(at), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn stops_following_what_it_cannot_parse() {
        let bad_chunk = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(every_slicing(bad_chunk), (false, "Off".into()));
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD + 10]].concat();
        assert_eq!(watch(&huge, 4096), (false, "Off".into()));
    }
}
