//! The proxy's fast path: plain HTTP/1.1 requests forwarded as bytes, in the connection's task.
//!
//! Through hyper, a request is parsed into a `HeaderMap`, edited, serialized again by hyper's
//! client on the upstream connection's own task, and its response parsed into a second map and
//! serialized once more for the client: three times the instructions of the fast path. Most
//! requests need none of that. The fast path parses a head with `httparse` (hyper's own parser),
//! copies the header lines it keeps byte for byte, writes the `X-Forwarded-*` lines of
//! [`super::policy`], and moves bodies by their framing.
//!
//! It takes only a request that forwarding cannot misread ([`plan_request`] lists what that
//! means: HTTP/1.1, a plain path, one `Host`, no body or a small one of known length, and no
//! `Transfer-Encoding`, `Upgrade`, `Expect` or `Connection` options). At the first request that
//! is anything else it stops, and the connection — that request's bytes untouched, and all that
//! follows — goes to the hyper path. hyper stays the reference for every edge case (framing
//! checks, upgrades, streamed uploads, refusals); the fast path can only decline to go first.
//!
//! Responses are taken as upstreams send them: with a length, chunked (passed through as sent,
//! followed with [`step_chunk`] to find the end), or delimited by the end of the connection.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::framing::{step_chunk, Chunk};
use super::policy::decide::{Answer, Decision, View};
use super::policy::{
    accepts_json, bodiless, connect_tcp, error_page, kind, upstream_failed, Forwarded, Kind, Slot, Upstream,
    UpstreamFailure,
};
use super::routes::is_plain;
use super::stats::Counters;
use super::timer::ConnSleep;
use super::{Conn, Route, MAX_URI, UPSTREAM_BUF};

/// Request heads longer than this go to hyper (which takes up to [`super::MAX_HEAD`]).
const HEAD_MAX: usize = 16 * 1024;
/// Request bodies up to this size are read whole before forwarding: API calls and forms. Larger
/// ones stream through hyper.
const BODY_MAX: usize = 64 * 1024;
/// Header lines in a head; hyper's limit too.
pub(super) const MAX_HEADERS: usize = 100;
/// How much room a read is given.
const READ_SIZE: usize = 16 * 1024;
/// Buffers larger than this are let go between requests.
const KEEP_IDLE: usize = 2 * READ_SIZE;
/// Interim (1xx) responses taken before the final one; an upstream sending more is broken.
const MAX_INTERIM: usize = 16;

/// How the fast path left a connection.
pub(super) enum End {
    /// Served to its end.
    Closed,
    /// Declined at a request that starts the read buffer: hyper serves the rest.
    Handoff,
}

/// Serves requests of `io` while they are plain; `read` holds what was read and not yet used.
pub(super) async fn serve<S>(conn: &Conn, io: &mut S, read: &mut BytesMut, idle_timeout: bool) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // One kept-alive upstream connection per route, as on the hyper path.
    let mut pool: Vec<Slot> = conn.proxy.routes.all().iter().map(|_| Slot::Empty).collect();
    let (mut to_upstream, mut to_client) = (Vec::new(), Vec::new());
    loop {
        to_upstream.clear();
        let (mut deadline, mut need, mut body_json) = (None, 0, None);
        let req = loop {
            // A body arriving in pieces is waited for whole, its head parsed once.
            if read.len() >= need {
                match plan_request(conn, read, &mut to_upstream) {
                    Plan::Ready(r) => break r,
                    Plan::Answer(a) => {
                        read.advance(a.len);
                        if let Some(d) = a.answer.delay {
                            conn.timer.sleep_for(d).await;
                        }
                        let (ctype, body) = a.answer.body(a.json);
                        let bytes = render(a.answer.status, ctype, &body, &a.answer.headers, a.close, a.head);
                        if write_flush(io, &bytes).await.is_err() || a.close {
                            let _ = io.shutdown().await;
                            return End::Closed;
                        }
                        (deadline, need, body_json) = (None, 0, None);
                        continue;
                    }
                    Plan::Handoff => {
                        conn.adopt(pool);
                        return End::Handoff;
                    }
                    Plan::Partial => {}
                    // The head's deadline ends with the head; the body has one of its own.
                    Plan::Body(len, json) => {
                        (need, body_json) = (len, Some(json));
                        deadline = Some(conn.timer.sleep_for(super::policy::BODY_TIMEOUT));
                    }
                }
            }
            // A local client's head is due from the moment the connection waits for one. A tunnel
            // stream idles in frps' pool between requests, so its head is due once it has begun.
            if deadline.is_none() && (idle_timeout || !read.is_empty()) {
                deadline = Some(conn.timer.sleep_for(super::policy::HEAD_TIMEOUT));
            }
            match read_some(io, read, deadline.as_mut()).await {
                Ok(Some(n)) if n > 0 => {}
                // A body that stopped coming: the request is answered, the connection closed.
                Ok(None) if body_json.is_some() => {
                    let why =
                        format!("the request body did not arrive within {} s", super::policy::BODY_TIMEOUT.as_secs());
                    let answer = local_answer(
                        http::StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        &why,
                        body_json.unwrap_or(false),
                        true,
                        false,
                    );
                    let _ = write_flush(io, &answer).await;
                    let _ = io.shutdown().await;
                    return End::Closed;
                }
                // The end of the connection, a reset, or a client too slow to send its head:
                // hyper closes without an answer in all three cases too.
                _ => return End::Closed,
            }
        };
        // Measured before the request is consumed: `capacity` counts only what lies past it.
        let big = read.capacity() > KEEP_IDLE;
        read.advance(req.len);
        to_client.clear();
        let keep = exchange(conn, io, read, &mut pool[req.route], &req, &to_upstream, &mut to_client).await;
        if !keep || req.close {
            let _ = io.shutdown().await;
            return End::Closed;
        }
        // An idle connection keeps small buffers, whatever its last exchange needed.
        for buf in [&mut to_upstream, &mut to_client] {
            if buf.capacity() > KEEP_IDLE {
                *buf = Vec::new();
            }
        }
        if read.is_empty() && big {
            *read = BytesMut::new();
        }
    }
}

/// A request the fast path forwards.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Request {
    /// Index of its route.
    pub(super) route: usize,
    /// Bytes of the read buffer it takes: head and body.
    pub(super) len: usize,
    /// Of which body.
    pub(super) body: usize,
    /// The client asked to close after it.
    pub(super) close: bool,
    /// A HEAD request: the response has no body, whatever its head says.
    pub(super) head: bool,
    /// Whether the proxy's own answers should be JSON.
    pub(super) json: bool,
    /// Safe to send again when a kept-alive upstream connection turns out closed (RFC 9110
    /// §9.2.2).
    pub(super) idempotent: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    Ready(Request),
    /// More bytes needed.
    Partial,
    /// The head is complete; the request is this many bytes with its body (and its error pages
    /// are JSON).
    Body(usize, bool),
    /// Not for the fast path.
    Handoff,
    /// The proxy answers it itself.
    Answer(Answered),
}

/// A request the proxy answers itself, as the pipeline decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answered {
    /// Bytes of the read buffer it takes.
    pub(super) len: usize,
    pub(super) answer: Answer,
    pub(super) close: bool,
    pub(super) head: bool,
    pub(super) json: bool,
}

/// Bytes of a request target the fast path forwards as they are: RFC 3986's unreserved,
/// sub-delims, `:@/?` and `%`. Anything else (which hyper may refuse) goes to hyper.
fn target_byte(b: u8) -> bool {
    // A table: this runs for every byte of every target.
    const TABLE: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let extra = b"-._~!$&'()*+,;=:@/?%";
        let mut i = 0;
        while i < extra.len() {
            t[extra[i] as usize] = true;
            i += 1;
        }
        t
    };
    TABLE[usize::from(b)]
}

/// Decides on the request at the start of `data`; when it is taken, writes the request for the
/// upstream to `out`: its header lines in order, less the hop-by-hop ones and those the pipeline's
/// edits drop, with the `X-Forwarded-*` lines of [`super::policy::Forwarded`] and the `Host` of the
/// route's choice. The request is decided once, here, by [`Proxy::decide`](super::Proxy).
pub(super) fn plan_request(conn: &Conn, data: &[u8], out: &mut Vec<u8>) -> Plan {
    // Uninitialised: this runs for every request, and 100 headers are 3 KiB to fill.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(data, &mut headers) {
        Ok(httparse::Status::Complete(n)) if n <= HEAD_MAX => n,
        Ok(httparse::Status::Partial) if data.len() <= HEAD_MAX => return Plan::Partial,
        _ => return Plan::Handoff,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Plan::Handoff;
    };
    // CONNECT (a tunnel after a 2xx), TRACE and extension methods are hyper's.
    let idempotent = match method {
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" => true,
        "POST" | "PATCH" => false,
        _ => return Plan::Handoff,
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !path.starts_with('/')
        || target.len() > MAX_URI
        || !target.bytes().all(target_byte)
        || !is_plain(path.as_bytes())
    {
        return Plan::Handoff;
    }
    let (mut authorization, mut forwarded_for) = (None, None);
    let (mut host, mut hosts, mut length, mut lengths) = (None, 0, None, 0);
    let (mut close, mut json, mut xff, mut xfp, mut xfh) = (false, None, None, false, false);
    for h in req.headers.iter() {
        match kind(h.name) {
            Kind::Host => (host, hosts) = (Some(h.value), hosts + 1),
            Kind::ContentLength => (length, lengths) = (Some(h.value), lengths + 1),
            Kind::Connection => {
                for token in connection_tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        // It names headers to drop, or asks for an upgrade.
                        return Plan::Handoff;
                    }
                }
            }
            Kind::XForwardedFor => (xff, forwarded_for) = (xff.or(Some(h.value)), Some(h.value)),
            Kind::XForwardedProto => xfp = true,
            Kind::XForwardedHost => xfh = true,
            Kind::Accept => json = json.or(Some(accepts_json(h.value))),
            Kind::Authorization => authorization = authorization.or(Some(h.value)),
            Kind::TransferEncoding | Kind::Decline => return Plan::Handoff,
            Kind::Hop | Kind::Cookie | Kind::TunnelDropped | Kind::Other => {}
        }
    }
    let (Some(host), 1) = (host, hosts) else { return Plan::Handoff };
    let body = match (length.map(decimal), lengths) {
        (None, _) => 0,
        (Some(Some(n)), 1) if n <= BODY_MAX as u64 => n as usize,
        _ => return Plan::Handoff,
    };
    let json = json.unwrap_or(false);
    if data.len() < head_len + body {
        return Plan::Body(head_len + body, json);
    }
    // Decided once the whole request is here, not again for each read of a body.
    let view = View { method, target, host, authorization, forwarded_for, body: body > 0, upgrade: None };
    let cookies = req.headers.iter().filter(|h| matches!(kind(h.name), Kind::Cookie)).map(|h| h.value);
    let (route_idx, edits) = match conn.proxy.decide(conn, &view, cookies, std::time::SystemTime::now()) {
        Decision::Forward { route, edits } => (route, edits),
        Decision::Answer(answer) => {
            return Plan::Answer(Answered { len: head_len + body, answer, close, head: method == "HEAD", json })
        }
    };
    let route = &conn.proxy.routes.all()[route_idx];

    out.reserve(head_len + body + 128);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let fwd = Forwarded::decide(conn.client_ip.as_ref(), xff, xfp, xfh, Some(host));
    for h in req.headers.iter() {
        match kind(h.name) {
            Kind::Host if route.rewrite_host => line(out, b"Host", route.authority().as_bytes()),
            Kind::Connection | Kind::Hop => {}
            Kind::Authorization | Kind::TunnelDropped if edits.drops(h.name) => {}
            Kind::Cookie => {
                if let Some(kept) = edits.cookie(h.value) {
                    line(out, h.name.as_bytes(), &kept);
                }
            }
            Kind::XForwardedFor | Kind::XForwardedProto | Kind::XForwardedHost if fwd.replace => {}
            _ => line(out, h.name.as_bytes(), h.value),
        }
    }
    fwd.write(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&data[head_len..head_len + body]);
    Plan::Ready(Request {
        route: route_idx,
        len: head_len + body,
        body,
        close,
        head: method == "HEAD",
        json,
        idempotent,
    })
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// This many bytes left.
    Length(u64),
    /// Chunked, at this point of it.
    Chunked(Chunk),
    /// When the upstream closes the connection.
    UntilClose,
}

/// A response head, read and rewritten for the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// Its length in the upstream's buffer.
    pub(super) len: usize,
    pub(super) status: u16,
    pub(super) framing: Framing,
    /// The upstream connection may serve another request after this response.
    pub(super) reusable: bool,
}

/// Reads the response head at the start of `data` (`None`: incomplete). A final response is
/// written to `out` for the client, less hop-by-hop headers and those its `Connection` names;
/// an interim one (1xx) is only measured: hyper's client drops them too.
pub(super) fn plan_response(data: &[u8], req: &Request, out: &mut Vec<u8>) -> Result<Option<Head>, &'static str> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, data, &mut headers)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if data.len() < UPSTREAM_BUF => return Ok(None),
        Ok(httparse::Status::Partial) => return Err("sent a response head over 64 KiB"),
        Err(_) => return Err("sent a malformed response"),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err("sent a malformed response");
    };
    if status < 100 {
        return Err("sent a malformed response");
    }
    if status == 101 {
        return Err("switched protocols unasked");
    }
    if (100..200).contains(&status) {
        return Ok(Some(Head { len, status, framing: Framing::Empty, reusable: true }));
    }
    let mut reusable = version == 1;
    let (mut named, mut lengths, mut length, mut codings, mut chunked) = (Vec::new(), 0, None, 0, false);
    for h in resp.headers.iter() {
        match kind(h.name) {
            Kind::Connection => {
                for token in connection_tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        reusable = false;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        named.push(token);
                    }
                }
            }
            Kind::ContentLength => (length, lengths) = (Some(h.value), lengths + 1),
            Kind::TransferEncoding => {
                codings += 1;
                chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            _ => {}
        }
    }
    let framing = if req.head || status == 204 || status == 304 {
        Framing::Empty
    } else if codings > 0 {
        if codings > 1 || !chunked || lengths > 0 {
            return Err("sent a response with ambiguous framing");
        }
        Framing::Chunked(Chunk::START)
    } else {
        match (length.map(decimal), lengths) {
            (None, _) => {
                reusable = false;
                Framing::UntilClose
            }
            (Some(Some(n)), 1) => Framing::Length(n),
            _ => return Err("sent a response with ambiguous framing"),
        }
    };

    status_line(out, status, resp.reason.unwrap_or(""));
    for h in resp.headers.iter() {
        let drop = match kind(h.name) {
            // Chunks pass as sent, trailer fields included: the `Trailer` that announces them
            // stays with them. (hyper's path drops both: its server sends only trailers that a
            // `Trailer` announces, and it strips that as hop-by-hop.)
            Kind::Hop if h.name.eq_ignore_ascii_case("trailer") => {
                !matches!(framing, Framing::Chunked(_)) || named.iter().any(|n| n.eq_ignore_ascii_case(b"trailer"))
            }
            Kind::Connection | Kind::Hop => true,
            Kind::Decline => h.name.eq_ignore_ascii_case("upgrade"),
            // Passed through with the chunks it describes.
            Kind::TransferEncoding => !matches!(framing, Framing::Chunked(_)),
            // The framing was decided on it: `Connection` naming it changes nothing.
            Kind::ContentLength => false,
            _ => named.iter().any(|n| n.eq_ignore_ascii_case(h.name.as_bytes())),
        };
        if !drop {
            line(out, h.name.as_bytes(), h.value);
        }
    }
    if req.close || framing == Framing::UntilClose {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Head { len, status, framing, reusable }))
}

/// `HTTP/1.1 <status> <reason>` and its CRLF.
fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    let digit = |d: u16| b'0' + (status / d % 10) as u8;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[digit(100), digit(10), digit(1), b' ']);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The tokens of a `Connection` value, trimmed, empty ones skipped.
fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// A `Content-Length` value: decimal digits only, as hyper reads it (no sign, no list), and no
/// more than fit in a u64 whatever they are.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Sends the request (`out`) upstream and the response to the client. Whether the client
/// connection may go on.
async fn exchange<S>(
    conn: &Conn,
    io: &mut S,
    read: &mut BytesMut,
    slot: &mut Slot,
    req: &Request,
    out: &[u8],
    to_client: &mut Vec<u8>,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let route = &conn.proxy.routes.all()[req.route];
    let stats = conn.proxy.stats[req.route].local();
    stats.requests.fetch_add(1, Relaxed);
    stats.bytes_in.fetch_add(req.body as u64, Relaxed);
    // A client that hangs up while its answer is awaited ends the exchange (and its upstream
    // connection) then, not at the upstream's deadline; hyper's server does the same.
    let answer = tokio::select! {
        biased;
        r = roundtrip(conn, slot, route, req, out, to_client) => r,
        () = hung_up(io, read) => return false,
    };
    let (mut up, head) = match answer {
        Ok(r) => r,
        Err(f) => return answer_failure(io, route, stats, req, f).await,
    };
    stats.record_status(head.status);
    // Measured before the head is consumed, as in `serve`.
    let big = up.buf.capacity() > KEEP_IDLE;
    up.buf.advance(head.len);
    let mut framing = head.framing;
    // The head goes out with the first part of the body: one write for a small response.
    loop {
        let mut payload = 0;
        let (take, done) = match &mut framing {
            Framing::Empty => (0, true),
            Framing::Length(left) => {
                let n = (*left).min(up.buf.len() as u64);
                *left -= n;
                payload = n;
                (n as usize, *left == 0)
            }
            Framing::Chunked(c) => match step_chunk(*c, &up.buf, &mut payload, true) {
                (0, None) if !up.buf.is_empty() => {
                    tracing::warn!("{} at {} sent malformed chunks", route.name, route.authority());
                    return false;
                }
                (n, Some(next)) => {
                    *c = next;
                    (n, false)
                }
                (n, None) => (n, true),
            },
            Framing::UntilClose => {
                payload = up.buf.len() as u64;
                (up.buf.len(), false)
            }
        };
        stats.bytes_out.fetch_add(payload, Relaxed);
        let sent = if to_client.is_empty() {
            write_flush(io, &up.buf[..take]).await
        } else {
            to_client.extend_from_slice(&up.buf[..take]);
            let r = write_flush(io, to_client).await;
            to_client.clear();
            r
        };
        up.buf.advance(take);
        if sent.is_err() {
            return false;
        }
        if done {
            // Bytes past the response are the upstream's mistake; the connection is not reused.
            if head.reusable && up.buf.is_empty() && !bodiless(req.head, head.status) {
                if big {
                    up.buf = BytesMut::new();
                }
                *slot = Slot::Raw(up);
            }
            return true;
        }
        match read_some(&mut up.tcp, &mut up.buf, None).await {
            Ok(Some(n)) if n > 0 => {}
            // A body that ends with the connection: the client's connection ends with it
            // (the head said `Connection: close`).
            _ if framing == Framing::UntilClose => return false,
            _ => {
                tracing::warn!("{} at {} closed the connection within a response", route.name, route.authority());
                return false;
            }
        }
    }
}

/// Returns when the client's connection ends (or fails). What it sends meanwhile is kept for the
/// next request, up to one request's worth; then it is no longer read.
async fn hung_up<R: AsyncRead + Unpin>(io: &mut R, read: &mut BytesMut) {
    while read.len() < HEAD_MAX + BODY_MAX {
        match read_some(io, read, None).await {
            Ok(Some(n)) if n > 0 => {}
            _ => return,
        }
    }
    std::future::pending().await
}

/// Sends the request and reads the response head, on the kept-alive connection if there is one.
/// A kept-alive connection that closed before answering anything (the upstream's idle timeout
/// raced the request) is replaced by a new one once, for an idempotent request.
async fn roundtrip(
    conn: &Conn,
    slot: &mut Slot,
    route: &Route,
    req: &Request,
    out: &[u8],
    to_client: &mut Vec<u8>,
) -> Result<(Upstream, Head), UpstreamFailure> {
    // An upstream that closed its idle connection (Node's default is after 5 s) has told the
    // reactor so already, as a rule: such a connection is not written to.
    let mut kept = slot.take_raw();
    loop {
        let reused = kept.is_some();
        let mut up = match kept.take() {
            Some(up) => up,
            None => Upstream {
                tcp: connect_tcp(route).await.map_err(UpstreamFailure::Connect)?,
                buf: BytesMut::with_capacity(READ_SIZE),
            },
        };
        let retry = reused && req.idempotent;
        // The deadline covers the request's sending too: an upstream that stops reading without
        // closing must not hold the connection for ever.
        let mut deadline = conn.timer.sleep_for(conn.proxy.response_timeout);
        let written = tokio::select! {
            biased;
            r = up.tcp.write_all(out) => r,
            () = &mut deadline => return Err(UpstreamFailure::Timeout(conn.proxy.response_timeout)),
        };
        if written.is_err() {
            if retry {
                continue;
            }
            return Err(UpstreamFailure::Closed("connection closed".into()));
        }
        let (mut answered, mut interim) = (false, 0);
        loop {
            if !up.buf.is_empty() {
                answered = true;
                match plan_response(&up.buf, req, to_client).map_err(|why| UpstreamFailure::Closed(why.into()))? {
                    Some(h) if (100..200).contains(&h.status) => {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(UpstreamFailure::Closed("sent too many interim (1xx) responses".into()));
                        }
                        up.buf.advance(h.len);
                        continue;
                    }
                    Some(h) => return Ok((up, h)),
                    None => {}
                }
            }
            match read_some(&mut up.tcp, &mut up.buf, Some(&mut deadline)).await {
                Ok(Some(n)) if n > 0 => {}
                Ok(None) => return Err(UpstreamFailure::Timeout(conn.proxy.response_timeout)),
                _ if retry && !answered => break,
                _ => return Err(UpstreamFailure::Closed("connection closed".into())),
            }
        }
    }
}

/// Answers the client for an upstream that failed, as the hyper path does.
async fn answer_failure<S>(io: &mut S, route: &Route, stats: &Counters, req: &Request, failure: UpstreamFailure) -> bool
where
    S: AsyncWrite + Unpin,
{
    let (status, code, message) = upstream_failed(route, stats, failure);
    write_flush(io, &local_answer(status, code, &message, req.json, req.close, req.head)).await.is_ok()
}

/// A short answer of the proxy itself, as bytes: the hyper path's page, framed by length.
fn local_answer(status: http::StatusCode, code: &str, message: &str, json: bool, close: bool, head: bool) -> Vec<u8> {
    let (ctype, body) = error_page(status, code, message, json);
    render(status, ctype, &body, &[], close, head)
}

/// An answer of the proxy's, as bytes, with the headers hyper's server would write.
fn render(
    status: http::StatusCode,
    ctype: &str,
    body: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
    close: bool,
    head: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 160);
    status_line(&mut out, status.as_u16(), status.canonical_reason().unwrap_or(""));
    line(&mut out, b"content-type", ctype.as_bytes());
    line(&mut out, b"cache-control", b"no-store");
    for (k, v) in headers {
        line(&mut out, k.as_str().as_bytes(), v.as_bytes());
    }
    line(&mut out, b"content-length", body.len().to_string().as_bytes());
    if close {
        line(&mut out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn write_flush<S: AsyncWrite + Unpin>(io: &mut S, data: &[u8]) -> io::Result<()> {
    io.write_all(data).await?;
    io.flush().await
}

/// Reads once into `buf`: `Some(0)` at the end of the stream, `None` when `deadline` passed
/// first. The deadline is only looked at while the read waits.
fn read_some<'a, R: AsyncRead + Unpin>(
    io: &'a mut R,
    buf: &'a mut BytesMut,
    mut deadline: Option<&'a mut ConnSleep>,
) -> impl Future<Output = io::Result<Option<usize>>> + 'a {
    std::future::poll_fn(move |cx| {
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(r) => Poll::Ready(r.map(Some)),
            Poll::Pending => match deadline.as_mut().map(|d| Pin::new(&mut **d).poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Ok(None)),
                _ => Poll::Pending,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::super::{Origin, Proxy, Routes};
    use super::*;

    const ROUTES: &str =
        "/api/alt=http://127.0.0.1:5003;name=backend,/api=http://127.0.0.1:8000;host=upstream,/=http://127.0.0.1:5002";

    fn local() -> Origin {
        Origin::Local("10.1.2.3:4567".parse().unwrap())
    }

    fn plan(origin: Origin, req: &str) -> (Plan, String) {
        let conn = Conn::new(Proxy::new(Routes::parse(ROUTES).unwrap()), origin, CancellationToken::new());
        let mut out = Vec::new();
        let p = plan_request(&conn, req.as_bytes(), &mut out);
        (p, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_plain_request_goes_upstream_without_its_hop_by_hop_headers() {
        let req = "GET /api/alt/items?q=1 HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nAccept: application/json\r\n\r\nGET /next";
        let (p, out) = plan(local(), req);
        let Plan::Ready(r) = p else { panic!("{p:?}") };
        assert_eq!(
            (r.route, r.len, r.body, r.close, r.head, r.json, r.idempotent),
            (0, req.len() - 9, 0, false, false, true, true)
        );
        assert_eq!(
            out,
            "GET /api/alt/items?q=1 HTTP/1.1\r\nHost: app.example\r\nAccept: application/json\r\n\
             X-Forwarded-For: 203.0.113.7, 10.1.2.3\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: app.example\r\n\r\n"
        );
    }

    #[test]
    fn a_tunnel_stream_keeps_what_frps_set_and_a_route_may_rewrite_host() {
        let req = "POST /api/v1 HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let (p, out) = plan(Origin::Tunnel, req);
        let Plan::Ready(r) = p else { panic!("{p:?}") };
        assert_eq!((r.route, r.len, r.body, r.close, r.idempotent), (1, req.len(), 5, true, false));
        assert_eq!(
            out,
            "POST /api/v1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Length: 5\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.example\r\n\r\nhello"
        );
    }

    #[test]
    fn what_needs_judgement_is_left_to_hyper() {
        let h = "Host: a\r\n";
        for req in [
            format!("GET / HTTP/1.0\r\n{h}\r\n"),
            format!("GET http://a/ HTTP/1.1\r\n{h}\r\n"),
            format!("OPTIONS * HTTP/1.1\r\n{h}\r\n"),
            format!("GET /a/../api HTTP/1.1\r\n{h}\r\n"),
            format!("GET /api%2falt HTTP/1.1\r\n{h}\r\n"),
            format!("GET //api HTTP/1.1\r\n{h}\r\n"),
            format!("GET /a\"b HTTP/1.1\r\n{h}\r\n"),
            "GET / HTTP/1.1\r\n\r\n".to_string(),
            format!("GET / HTTP/1.1\r\n{h}{h}\r\n"),
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n"),
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
            format!("POST / HTTP/1.1\r\n{h}Content-Length: +1\r\n\r\nx"),
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 65537\r\n\r\n"),
            format!("POST / HTTP/1.1\r\n{h}Expect: 100-continue\r\nContent-Length: 1\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{h}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{h}Upgrade: websocket\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{h}Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n"),
            format!("CONNECT /x HTTP/1.1\r\n{h}\r\n"),
            format!("TRACE / HTTP/1.1\r\n{h}\r\n"),
            format!("PROPFIND / HTTP/1.1\r\n{h}\r\n"),
            format!("GET / HTTP/1.1\r\n{h}X-Folded: a\r\n b\r\n\r\n"),
            format!("GET / HTTP/1.1\r\n{h}{}\r\n", "X-Many: 1\r\n".repeat(MAX_HEADERS)),
            format!("GET / HTTP/1.1\r\n{h}X-Big: {}\r\n\r\n", "x".repeat(HEAD_MAX)),
            format!("GET / HTTP/1.1\r\n{h}X-Big: {}", "x".repeat(HEAD_MAX)),
            "GET /\0 HTTP/1.1\r\n\r\n".to_string(),
        ] {
            assert_eq!(plan(local(), &req).0, Plan::Handoff, "{req:?}");
        }
    }

    #[test]
    fn an_incomplete_head_or_body_waits_for_more() {
        for req in ["GE", "GET / HTTP/1.1\r\nHost: a\r\n"] {
            let (p, out) = plan(local(), req);
            assert_eq!((p, out.as_str()), (Plan::Partial, ""), "{req:?}");
        }
        let req = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabc";
        assert_eq!(plan(local(), req), (Plan::Body(req.len() + 1, false), String::new()));
    }

    fn request(head: bool, close: bool) -> Request {
        Request { route: 0, len: 0, body: 0, close, head, json: false, idempotent: true }
    }

    fn respond(resp: &str, req: &Request) -> (Result<Option<Head>, &'static str>, String) {
        let mut out = Vec::new();
        let r = plan_response(resp.as_bytes(), req, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn response_framing_decides_reuse() {
        let get = request(false, false);
        let cases: [(&str, &Request, Framing, bool); 8] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &get, Framing::Length(3), true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &get, Framing::Chunked(Chunk::START), true),
            ("HTTP/1.1 200 OK\r\n\r\n", &get, Framing::UntilClose, false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", &get, Framing::Length(3), false),
            ("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", &get, Framing::Length(3), false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &request(true, false), Framing::Empty, true),
            ("HTTP/1.1 204 No Content\r\n\r\n", &get, Framing::Empty, true),
            ("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", &get, Framing::Empty, true),
        ];
        for (resp, req, framing, reusable) in cases {
            let (r, _) = respond(resp, req);
            assert_eq!(
                r,
                Ok(Some(Head {
                    len: resp.len(),
                    status: r.as_ref().unwrap().as_ref().unwrap().status,
                    framing,
                    reusable
                })),
                "{resp:?}"
            );
        }
        assert_eq!(respond("HTTP/1.1 200 OK\r\nContent-Le", &get).0, Ok(None));
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x3\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 042 Odd\r\n\r\n",
        ] {
            assert!(respond(bad, &get).0.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_heads_lose_hop_by_hop_headers_and_interim_ones_are_skipped() {
        let (r, out) = respond(
            "HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\nX-Keep: yes\r\n\r\n",
            &request(false, true),
        );
        assert!(matches!(r, Ok(Some(Head { status: 200, framing: Framing::Chunked(_), reusable: true, .. }))));
        assert_eq!(out, "HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nX-Keep: yes\r\nConnection: close\r\n\r\n");
        // Named by `Connection` or not, the length the body is framed by goes to the client.
        let (r, out) = respond(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n",
            &request(false, false),
        );
        assert!(matches!(r, Ok(Some(Head { framing: Framing::Length(2), .. }))));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        let (r, out) = respond("HTTP/1.1 200 OK\r\n\r\n", &request(false, false));
        assert!(matches!(r, Ok(Some(Head { framing: Framing::UntilClose, .. }))));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let (r, out) =
            respond("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n", &request(false, false));
        let interim = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n".len();
        assert_eq!(r, Ok(Some(Head { len: interim, status: 103, framing: Framing::Empty, reusable: true })));
        assert_eq!(out, "");
        // `Trailer` goes with the chunks (and the trailer fields in them), not with a length.
        let (_, out) =
            respond("HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n", &request(false, false));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n");
        let (_, out) =
            respond("HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nContent-Length: 2\r\n\r\n", &request(false, false));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        let (_, out) = respond(
            "HTTP/1.1 200 OK\r\nConnection: trailer\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n",
            &request(false, false),
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    }
}
