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
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::framing::{step_chunk, Chunk};
use super::policy::decide::{Answer, Decision, View};
use super::policy::{
    accepts_json, bodiless, connect_tcp, error_page, kind, still_open, upstream_failed, Forwarded, Kind, Upstream,
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
const MAX_HEADERS: usize = 100;
/// How much room a read is given.
const READ_SIZE: usize = 16 * 1024;
/// Buffers larger than this are let go between requests.
const KEEP_IDLE: usize = 2 * READ_SIZE;
/// Interim (1xx) responses taken before the final one; an upstream sending more is broken.
const MAX_INTERIM: usize = 16;
/// How long a request head may take: from when a local client's connection waits for one (as
/// hyper's header-read timeout), from its first byte on a tunnel stream.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request's body (at most [`BODY_MAX`] here) may take once its head is in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

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
    let mut pool: Vec<Option<Upstream>> = conn.proxy.routes.all().iter().map(|_| None).collect();
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
                        deadline = Some(conn.timer.sleep_for(BODY_TIMEOUT));
                    }
                }
            }
            // A local client's head is due from the moment the connection waits for one. A tunnel
            // stream idles in frps' pool between requests, so its head is due once it has begun.
            if deadline.is_none() && (idle_timeout || !read.is_empty()) {
                deadline = Some(conn.timer.sleep_for(HEAD_TIMEOUT));
            }
            match read_some(io, read, deadline.as_mut()).await {
                Ok(Some(n)) if n > 0 => {}
                // A body that stopped coming: the request is answered, the connection closed.
                Ok(None) if body_json.is_some() => {
                    let why = format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs());
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
struct Request {
    /// Index of its route.
    route: usize,
    /// Bytes of the read buffer it takes: head and body.
    len: usize,
    /// Of which body.
    body: usize,
    /// The client asked to close after it.
    close: bool,
    /// A HEAD request: the response has no body, whatever its head says.
    head: bool,
    /// Whether the proxy's own answers should be JSON.
    json: bool,
    /// Safe to send again when a kept-alive upstream connection turns out closed (RFC 9110
    /// §9.2.2).
    idempotent: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Plan {
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
struct Answered {
    /// Bytes of the read buffer it takes.
    len: usize,
    answer: Answer,
    close: bool,
    head: bool,
    json: bool,
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
fn plan_request(conn: &Conn, data: &[u8], out: &mut Vec<u8>) -> Plan {
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
enum Framing {
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
struct Head {
    /// Its length in the upstream's buffer.
    len: usize,
    status: u16,
    framing: Framing,
    /// The upstream connection may serve another request after this response.
    reusable: bool,
}

/// Reads the response head at the start of `data` (`None`: incomplete). A final response is
/// written to `out` for the client, less hop-by-hop headers and those its `Connection` names;
/// an interim one (1xx) is only measured: hyper's client drops them too.
fn plan_response(data: &[u8], req: &Request, out: &mut Vec<u8>) -> Result<Option<Head>, &'static str> {
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
    slot: &mut Option<Upstream>,
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
                *slot = Some(up);
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
    slot: &mut Option<Upstream>,
    route: &Route,
    req: &Request,
    out: &[u8],
    to_client: &mut Vec<u8>,
) -> Result<(Upstream, Head), UpstreamFailure> {
    // An upstream that closed its idle connection (Node's default is after 5 s) has told the
    // reactor so already, as a rule: such a connection is not written to.
    let mut kept = slot.take().filter(|up| still_open(&up.tcp));
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

/// A stream with bytes already read from it put back in front: how the hyper path receives a
/// connection the fast path declined.
pub(super) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Both head parsers on arbitrary bytes, for the `fast_path` fuzz target: what they let through
/// is one well-formed head (and the body it announces), with no hop-by-hop header left in it.
#[doc(hidden)]
pub fn fuzz_heads(data: &[u8]) {
    use std::sync::OnceLock;
    static CONNS: OnceLock<[Conn; 2]> = OnceLock::new();
    let conns = CONNS.get_or_init(|| {
        let routes = super::Routes::parse(super::routes::DEFAULT_ROUTES).expect("the default routes parse");
        let proxy = super::Proxy::new(routes);
        [super::Origin::Local(([127, 0, 0, 1], 1).into()), super::Origin::Tunnel]
            .map(|origin| Conn::new(proxy.clone(), origin, Default::default()))
    });
    let hop = |name: &str| matches!(kind(name), Kind::Connection | Kind::Hop | Kind::Decline);
    let mut out = Vec::new();
    for conn in conns {
        out.clear();
        if let Plan::Ready(r) = plan_request(conn, data, &mut out) {
            assert!(r.body <= r.len && r.len <= data.len());
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(n)) = req.parse(&out) else { panic!("unparseable upstream request") };
            assert_eq!(out.len() - n, r.body, "the body is the one announced");
            assert!(req.headers.iter().all(|h| !hop(h.name) && !matches!(kind(h.name), Kind::TransferEncoding)));
        }
    }
    for req in [
        Request { route: 0, len: 0, body: 0, close: false, head: false, json: false, idempotent: true },
        Request { route: 0, len: 0, body: 0, close: true, head: true, json: false, idempotent: true },
    ] {
        out.clear();
        let Ok(Some(h)) = plan_response(data, &req, &mut out) else { continue };
        assert!(h.len <= data.len());
        if out.is_empty() {
            assert!((100..200).contains(&h.status));
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = resp.parse(&out) else { panic!("unparseable client response") };
        assert_eq!((n, resp.code), (out.len(), Some(h.status)));
        let chunked = matches!(h.framing, Framing::Chunked(_));
        let kept = |x: &httparse::Header| {
            x.name.eq_ignore_ascii_case("connection") || (chunked && x.name.eq_ignore_ascii_case("trailer"))
        };
        assert!(resp.headers.iter().all(|x| !hop(x.name) || kept(x)));
        assert!(resp.headers.iter().all(|x| chunked || !matches!(kind(x.name), Kind::TransferEncoding)));
    }
}

/// The fast path and hyper's server on the same request bytes, for the `differential` fuzz
/// target: every request the fast path forwards, hyper reads too, ending at the same byte (same
/// method, target and body), and where the fast path finds no complete request, hyper finds none.
/// Past a request the fast path declines, the connection is hyper's anyway.
#[doc(hidden)]
pub fn fuzz_differential(data: &[u8]) {
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex, OnceLock};
    type Seen = (String, String, Vec<u8>);
    static CONN: OnceLock<Conn> = OnceLock::new();
    let conn = CONN.get_or_init(|| {
        // A hidden route: its refusals are the pipeline's in both engines.
        let spec = format!("{},/admin=http://127.0.0.1:5002;public=no", super::routes::DEFAULT_ROUTES);
        let routes = super::Routes::parse(&spec).expect("the routes parse");
        Conn::new(super::Proxy::new(routes), super::Origin::Tunnel, Default::default())
    });

    // The fast path's reading of the bytes, request after request.
    let (mut fast, mut pos, mut declined, mut out) = (Vec::<Seen>::new(), 0, false, Vec::new());
    loop {
        out.clear();
        match plan_request(conn, &data[pos..], &mut out) {
            Plan::Ready(r) => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
                let mut req = httparse::Request::new(&mut headers);
                let Ok(httparse::Status::Complete(n)) = req.parse(&out) else { panic!("unparseable upstream request") };
                let (method, target) =
                    (req.method.unwrap_or_default().to_string(), req.path.unwrap_or_default().to_string());
                fast.push((method, target, out[n..].to_vec()));
                pos += r.len;
                if r.close {
                    break;
                }
            }
            Plan::Handoff => {
                declined = true;
                break;
            }
            // Answered by the proxy, never forwarded: hyper must still read the same request.
            Plan::Answer(a) => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                let Ok(httparse::Status::Complete(n)) = req.parse(&data[pos..]) else {
                    panic!("an answer to no request")
                };
                let (method, target) =
                    (req.method.unwrap_or_default().to_string(), req.path.unwrap_or_default().to_string());
                fast.push((method, target, data[pos + n..pos + a.len].to_vec()));
                pos += a.len;
                if a.close {
                    break;
                }
            }
            Plan::Partial | Plan::Body(..) => break,
        }
    }

    // hyper's, over an in-memory pipe, with the settings of the proxy's server.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let record = seen.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                if let Ok(body) = body.collect().await {
                    let target = parts.uri.path_and_query().map_or(String::new(), |p| p.to_string());
                    record.lock().unwrap().push((parts.method.to_string(), target, body.to_bytes().to_vec()));
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
            }
        });
        // Half-closes allowed: the bytes end with the pipe's write side, before the answers.
        let serve = hyper::server::conn::http1::Builder::new()
            .max_buf_size(2 * super::MAX_HEAD)
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        let feed = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
        };
        let _ = tokio::join!(serve, feed);
    });
    let hyper = seen.lock().unwrap();
    assert!(
        hyper.len() >= fast.len(),
        "hyper read {} requests where the fast path forwarded {}: {fast:?} {hyper:?}",
        hyper.len(),
        fast.len()
    );
    assert_eq!(&hyper[..fast.len()], &fast[..], "the two engines read different requests");
    if !declined {
        assert_eq!(hyper.len(), fast.len(), "hyper read a request the fast path did not find: {hyper:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::net::TcpListener;
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

    // ---- Against real sockets: an upstream on loopback, a client over an in-memory pipe. ----

    /// An upstream that records each request head and answers `answer(path)`; with `one_shot`,
    /// it closes each connection after one response (without saying so), as an upstream whose
    /// idle timeout has passed.
    async fn upstream(one_shot: bool) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (port, rx, _) = counted_upstream(one_shot).await;
        (port, rx)
    }

    /// The next request head on `s` (what follows it stays in `buf`); `None` at its end.
    async fn read_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
                return Some(String::from_utf8(buf.drain(..end + 4).collect()).unwrap());
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// [`upstream`], counting the connections it accepts.
    async fn counted_upstream(
        one_shot: bool,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(head) = read_head(&mut s, &mut buf).await {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap())
                            })
                            .unwrap_or(0);
                        while buf.len() < len {
                            let mut chunk = [0u8; 4096];
                            let n = s.read(&mut chunk).await.unwrap();
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let body: Vec<u8> = buf.drain(..len).collect();
                        let path = head.split(' ').nth(1).unwrap().to_string();
                        let _ = tx.send(head);
                        let answer = if path == "/chunked" {
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                                .to_string()
                        } else {
                            let body = format!("{path} {}", String::from_utf8_lossy(&body));
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: 1\r\n\r\n{body}", body.len())
                        };
                        if s.write_all(answer.as_bytes()).await.is_err() || one_shot {
                            return;
                        }
                    }
                });
            }
        });
        (port, rx, accepted)
    }

    fn routes_to(port: u16) -> Routes {
        Routes::parse(&format!("/api=http://127.0.0.1:{port};host=upstream,/=http://127.0.0.1:{port}")).unwrap()
    }

    /// A client connection to `proxy`, served as the listener would serve it.
    fn client(proxy: Arc<Proxy>, origin: Origin) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(proxy.serve_connection(theirs, origin, CancellationToken::new()));
        ours
    }

    /// Reads `n` responses (with a length or chunked) off `c`, as text, heads normalised: status
    /// line, then header lines lowercased and sorted, without `date` (hyper adds one).
    async fn responses(c: &mut DuplexStream, n: usize) -> Vec<String> {
        answers(c, &vec![false; n]).await
    }

    /// [`responses`] to requests of which those marked true were HEAD requests.
    async fn answers(c: &mut DuplexStream, head: &[bool]) -> Vec<String> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while out.len() < head.len() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let parsed = resp.parse(&buf).unwrap();
            let body_len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
            let chunked = resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
            if let httparse::Status::Complete(len) = parsed {
                let body_end = match (body_len, chunked) {
                    _ if head[out.len()] => Some(len),
                    (Some(b), _) => Some(len + b).filter(|e| *e <= buf.len()),
                    (None, true) => memchr::memmem::find(&buf[len..], b"0\r\n\r\n").map(|i| len + i + 5),
                    (None, false) => Some(len),
                };
                if let Some(end) = body_end {
                    let mut lines: Vec<String> = resp
                        .headers
                        .iter()
                        .filter(|h| !h.name.eq_ignore_ascii_case("date"))
                        .map(|h| format!("{}: {}", h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value)))
                        .collect();
                    lines.sort();
                    let body = String::from_utf8_lossy(&buf[len..end]).to_string();
                    out.push(format!("{} | {} | {body}", resp.code.unwrap(), lines.join(" | ")));
                    buf.drain(..end);
                    continue;
                }
            }
            let mut chunk = [0u8; 4096];
            let n =
                tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk)).await.expect("a response").unwrap();
            assert!(n > 0, "connection closed after {} responses: {out:?}", out.len());
            buf.extend_from_slice(&chunk[..n]);
        }
        out
    }

    /// The upstream's view of a request, normalised as [`responses`] does.
    fn normalised(head: &str) -> String {
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let first = lines.next().unwrap().to_string();
        let mut rest: Vec<String> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                format!("{}: {}", k.to_ascii_lowercase(), v.trim())
            })
            .collect();
        rest.sort();
        format!("{first} | {}", rest.join(" | "))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_fast_path_forwards_what_the_hyper_path_forwards() {
        let (port, mut seen) = upstream(false).await;
        let requests = [
            "GET /x?y=1 HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive\r\nX-Forwarded-For: 203.0.113.7\r\nUser-Agent: t\r\n\r\n",
            "HEAD /x HTTP/1.1\r\nHost: app.example\r\nAccept: text/html\r\n\r\n",
            "POST /api/v1 HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nTE: trailers\r\n\r\nhello",
            "GET /chunked HTTP/1.1\r\nhost: app.example\r\nX-Forwarded-Proto: https\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        ];
        for origin in [local(), Origin::Tunnel] {
            let mut views = Vec::new();
            for proxy in [Proxy::new(routes_to(port)), Proxy::hyper_only(routes_to(port), Duration::from_secs(5))] {
                let fast = proxy.fast_path;
                let mut c = client(proxy, origin);
                c.write_all(requests.concat().as_bytes()).await.unwrap();
                let answers = answers(&mut c, &[false, true, false, false]).await;
                let heads: Vec<String> = (0..requests.len()).map(|_| normalised(&seen.try_recv().unwrap())).collect();
                views.push((fast, heads, answers));
            }
            let (fast, hyper) = (&views[0], &views[1]);
            assert!(fast.0 && !hyper.0);
            for i in 0..requests.len() {
                assert_eq!(fast.1[i], hyper.1[i], "what the upstream saw of request {i} ({origin:?})");
                // hyper re-frames: its HEAD answer keeps the length, and it counts chunks anew.
                assert_eq!(fast.2[i], hyper.2[i], "what the client saw of response {i} ({origin:?})");
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn both_engines_apply_one_access_policy_to_tunnel_requests() {
        use super::super::access::{Access, Mode};
        use base64::Engine;
        let (port, mut seen) = upstream(false).await;
        let routes =
            || Routes::parse(&format!("/admin=http://127.0.0.1:{port};public=no,/=http://127.0.0.1:{port}")).unwrap();
        let key = b"a key for both engines";
        let access = || Access::new(Mode::Protected, Some("ann:pw"), Some(key), 0);
        let now = std::time::SystemTime::now();
        let share = access().mint(now, Duration::from_secs(600), false, false, "h").0;
        let read_only = access().mint(now, Duration::from_secs(600), true, false, "h").0;
        let elsewhere = access().mint(now, Duration::from_secs(600), false, false, "other").0;
        let basic = base64::engine::general_purpose::STANDARD.encode("ann:pw");
        let requests = [
            format!("GET /a HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\nCookie: a=1; burrow_share={share}\r\n\r\n"),
            format!("POST /b HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer app-token\r\nCookie: burrow_share={share}\r\nContent-Length: 2\r\n\r\nhi"),
            "GET /c HTTP/1.1\r\nHost: h\r\nCookie: burrow_share=forged\r\n\r\n".to_string(),
            format!("GET /d?x=1&burrow_share={share} HTTP/1.1\r\nHost: h\r\n\r\n"),
            format!("GET /admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
            format!("GET /e HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
            // Hidden under other spellings, with the right credentials.
            format!("GET /ADMIN/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
            format!("GET /%41dmin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
            format!("GET /admin;x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
            format!("GET /admin%20/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
            // Without credentials every path is the same 401, hidden or not.
            "GET /admin/x HTTP/1.1\r\nHost: h\r\n\r\n".to_string(),
            // A method named in a header never reaches the app; nor does a write in a read-only GET.
            format!("GET /f HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\nX-HTTP-Method-Override: DELETE\r\nX-Method-Override: PUT\r\nX-HTTP-Method: PATCH\r\nX_HTTP_Method_Override: DELETE\r\nX-Original-URL: /admin\r\nX-Rewrite-Url: /admin\r\n\r\n"),
            format!("GET /g HTTP/1.1\r\nHost: h\r\nCookie: burrow_share={read_only}\r\nContent-Length: 2\r\n\r\nhi"),
            // An upgrade other than a WebSocket goes on as a plain request.
            format!("GET /h HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
            // A link minted for another host opens nothing here.
            format!("GET /i?burrow_share={elsewhere} HTTP/1.1\r\nHost: h\r\n\r\n"),
            // Absolute-form targets (hyper's on both): the same decisions as origin form.
            format!("GET http://h/j?burrow_share={share} HTTP/1.1\r\nHost: h\r\n\r\n"),
            format!("GET http://h/admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
            format!("GET http://h/x/..;/admin HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        ];
        let mut views = Vec::new();
        for fast in [true, false] {
            let proxy = Proxy::build(routes(), Duration::from_secs(5), fast, access());
            let mut c = client(proxy, Origin::Tunnel);
            c.write_all(requests.concat().as_bytes()).await.unwrap();
            let answers = answers(&mut c, &[false; 18]).await;
            let heads: Vec<String> = std::iter::from_fn(|| seen.try_recv().ok()).map(|h| normalised(&h)).collect();
            views.push((heads, answers));
        }
        assert_eq!(views[0], views[1], "the fast path and hyper disagree");
        let (heads, answers) = &views[0];
        let codes: Vec<&str> = answers.iter().map(|a| &a[..3]).collect();
        assert_eq!(
            codes,
            [
                "200", "200", "401", "303", "404", "200", "404", "404", "404", "404", "401", "200", "403", "200",
                "401", "303", "404", "404"
            ],
            "{answers:#?}"
        );
        assert_eq!(heads.len(), 5, "{heads:#?}");
        assert!(
            heads[3].starts_with("GET /f ") && !heads[3].contains("override") && !heads[3].contains("method:"),
            "{}",
            heads[3]
        );
        assert!(!heads[3].contains("original") && !heads[3].contains("rewrite"), "{}", heads[3]);
        assert!(answers[15].contains("location: /j"), "{}", answers[15]);
        assert!(
            heads[4].starts_with("GET /h ") && !heads[4].contains("h2c") && !heads[4].contains("http2"),
            "{}",
            heads[4]
        );
        assert!(heads[0].starts_with("GET /a ") && heads[0].contains("| cookie: a=1 |"), "{}", heads[0]);
        assert!(heads[1].contains("authorization: Bearer app-token") && !heads[1].contains("cookie"), "{}", heads[1]);
        assert!(heads.iter().all(|h| !h.contains(&share) && !h.contains(&basic)), "{heads:#?}");
        assert!(answers[2].contains("www-authenticate: Basic realm=\"burrow\""), "{}", answers[2]);
        assert!(
            answers[3].contains("location: /d?x=1") && answers[3].contains("HttpOnly; SameSite=Lax"),
            "{}",
            answers[3]
        );
        assert!(answers[4].contains("no route serves /admin/x"), "{}", answers[4]);

        // The local user reaches every route, credentials untouched; another machine does not.
        let on_loopback = Origin::Local("127.0.0.1:4567".parse().unwrap());
        let mut c = client(Proxy::build(routes(), Duration::from_secs(5), true, access()), on_loopback);
        c.write_all(requests[4].as_bytes()).await.unwrap();
        assert!(responses(&mut c, 1).await[0].starts_with("200"));
        assert!(seen.try_recv().unwrap().contains(&basic));
        let mut c = client(Proxy::build(routes(), Duration::from_secs(5), true, access()), local());
        c.write_all(requests[4].as_bytes()).await.unwrap();
        assert!(responses(&mut c, 1).await[0].starts_with("404"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_moves_to_hyper_at_the_first_request_it_needs() {
        let (port, mut seen, accepted) = counted_upstream(false).await;
        let mut c = client(Proxy::new(routes_to(port)), local());
        let reqs = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
                    GET /two HTTP/1.1\r\nHost: a\r\nConnection: X-Hop\r\nX-Hop: secret\r\n\r\n\
                    GET /three HTTP/1.1\r\nHost: a\r\n\r\n";
        c.write_all(reqs.as_bytes()).await.unwrap();
        let answers = responses(&mut c, 3).await;
        for (answer, path) in answers.iter().zip(["/one", "/two", "/three"]) {
            assert!(answer.starts_with("200 |") && answer.ends_with(&format!("| {path} ")), "{answer}");
        }
        let two = seen.try_recv().and_then(|_| seen.try_recv()).unwrap();
        assert!(!two.to_ascii_lowercase().contains("x-hop"), "{two}");
        // hyper took over the fast path's kept-alive upstream connection.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_sent_after_its_head_is_waited_for() {
        let (port, mut seen) = upstream(false).await;
        let mut c = client(Proxy::new(routes_to(port)), local());
        c.write_all(b"PUT /doc HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(b" world").await.unwrap();
        let answer = &responses(&mut c, 1).await[0];
        assert!(answer.ends_with("| /doc hello world"), "{answer}");
        assert!(seen.try_recv().unwrap().contains("Content-Length: 11"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_idle_upstream_connection_is_not_reused() {
        let (port, _seen) = upstream(true).await;
        let mut c = client(Proxy::new(routes_to(port)), local());
        for (i, method) in ["GET", "POST", "GET"].iter().enumerate() {
            c.write_all(format!("{method} /{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let answer = &responses(&mut c, 1).await[0];
            assert!(answer.starts_with("200 |"), "request {i}: {answer}");
            // Time for the upstream's close to reach the reactor, as it would between requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dead_upstream_is_a_502_and_the_connection_goes_on() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let (port, _seen) = upstream(false).await;
        let routes =
            Routes::parse(&format!("/api=http://127.0.0.1:{dead};name=vibe app,/=http://127.0.0.1:{port}")).unwrap();
        let mut c = client(Proxy::new(routes), local());
        c.write_all(
            b"GET /api/x HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
        let answers = responses(&mut c, 2).await;
        assert!(
            answers[0].starts_with("502 |")
                && answers[0].contains(&format!("vibe app at 127.0.0.1:{dead} is not answering")),
            "{}",
            answers[0]
        );
        assert!(answers[0].contains("content-type: application/json"), "{}", answers[0]);
        assert!(answers[1].starts_with("200 |"), "{}", answers[1]);
    }

    /// An upstream whose answers to HEAD, and its 204s and 304s, carry a body anyway: a stray
    /// response ("evil") right behind the real head. Other requests get `{path}` as the body.
    async fn stray_bytes_upstream() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(head) = read_head(&mut s, &mut buf).await {
                        let (method, path) = head.split_once(' ').unwrap();
                        let path = path.split(' ').next().unwrap().to_string();
                        let evil = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";
                        let answer = match (method, path.as_str()) {
                            ("HEAD", _) => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_string(),
                            (_, "/204") => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
                            (_, "/304") => "HTTP/1.1 304 Not Modified\r\n\r\n".to_string(),
                            _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len()),
                        };
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        // The stray body comes a moment after its head, in a segment of its own:
                        // after the proxy has finished the response, before it reads the next one.
                        if method == "HEAD" || path == "/204" || path == "/304" {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            if s.write_all(evil.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_answer_reaches_the_next_request_after_a_bodiless_response() {
        let port = stray_bytes_upstream().await;
        let routes = || Routes::parse(&format!("/=http://127.0.0.1:{port}")).unwrap();
        for proxy in [Proxy::new(routes()), Proxy::hyper_only(routes(), Duration::from_secs(5))] {
            for (first, is_head) in [("HEAD /h", true), ("GET /204", false), ("GET /304", false)] {
                let mut c = client(proxy.clone(), Origin::Tunnel);
                c.write_all(format!("{first} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await.unwrap();
                answers(&mut c, &[is_head]).await;
                c.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
                let next = responses(&mut c, 1).await;
                assert!(next[0].ends_with("| /next"), "after {first}: {next:?}");
            }
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_body_that_stops_coming_is_answered_408_on_both_origins() {
        let (port, mut seen) = upstream(false).await;
        for origin in [local(), Origin::Tunnel] {
            let mut c = client(Proxy::new(routes_to(port)), origin);
            c.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").await.unwrap();
            let started = tokio::time::Instant::now();
            let mut answer = Vec::new();
            c.read_to_end(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
            assert!(answer.contains("within 30 s"), "{answer}");
            assert_eq!(started.elapsed().as_secs(), BODY_TIMEOUT.as_secs());
            assert!(seen.try_recv().is_err(), "the upstream never saw the request");
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_tunnel_stream_may_idle_but_not_stall_in_a_head() {
        let (port, _seen) = upstream(false).await;
        let mut c = client(Proxy::new(routes_to(port)), Origin::Tunnel);
        // Idle for longer than any timeout (frps keeps pooled work connections like this), then
        // half a head and nothing: closed once the head timeout has passed since that half.
        tokio::time::sleep(HEAD_TIMEOUT * 4).await;
        c.write_all(b"GET /half HTTP/1.1\r\nHo").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(started.elapsed().as_secs(), HEAD_TIMEOUT.as_secs());
    }

    /// An upstream on `l` that reads each connection's first request head, then leaves the
    /// connection to `then`.
    fn after_head<F, Fut>(l: TcpListener, then: F) -> u16
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let then = then.clone();
                tokio::spawn(async move {
                    let _ = read_head(&mut s, &mut Vec::new()).await;
                    then(s).await;
                });
            }
        });
        port
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_upstream_that_stops_reading_an_upload_gets_a_504() {
        // It reads the request head, then nothing more, and never answers.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = after_head(l, |s| async move {
            let _held = s;
            std::future::pending::<()>().await
        });
        // A chunked upload goes to hyper; its response deadline is 300 ms.
        let proxy = Proxy::hyper_only(routes_to(port), Duration::from_millis(300));
        let (mut rd, mut wr) = tokio::io::split(client(proxy, local()));
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            let _ = wr.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").await;
            let chunk = [b"10000\r\n".as_slice(), &[b'u'; 0x10000], b"\r\n"].concat();
            while wr.write_all(&chunk).await.is_ok() {}
        });
        let mut head = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut head)).await.expect("an answer").unwrap();
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(head.starts_with("HTTP/1.1 504"), "{head}");
        assert!(head.contains("stopped reading the request body"), "{head}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_early_answer_to_an_upload_reaches_the_client() {
        // It reads the request head, answers 413 at once and closes, the body unread (which makes
        // its kernel reset the connection). Its small receive buffer leaves even the fast path's
        // 60 KiB mid-write when that happens.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = after_head(socket.listen(16).unwrap(), |mut s| async move {
            let body = "too large";
            let answer = format!(
                "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        });
        // 60 KiB is read whole by the fast path; 4 MiB streams through hyper.
        for (method, len) in [("POST", 60 * 1024), ("PUT", 60 * 1024), ("POST", 4 << 20)] {
            for origin in [local(), Origin::Tunnel] {
                let (mut rd, mut wr) = tokio::io::split(client(Proxy::new(routes_to(port)), origin));
                tokio::spawn(async move {
                    let head = format!("{method} /up HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
                    let _ = wr.write_all(head.as_bytes()).await;
                    let _ = wr.write_all(&vec![b'u'; len]).await;
                    std::future::pending::<()>().await;
                });
                // The answer, up to its body's end (the client connection may stay open).
                let mut answer = Vec::new();
                while !answer.ends_with(b"too large") {
                    let mut chunk = [0u8; 4096];
                    match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                let answer = String::from_utf8_lossy(&answer);
                assert!(answer.starts_with("HTTP/1.1 413 "), "{method} of {len} bytes: {answer}");
                assert!(answer.ends_with("too large"), "{method} of {len} bytes: {answer}");
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_hangs_up_cancels_its_upstream_exchange() {
        // It reads the request head and never answers; it reports when the proxy lets go.
        let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let port = after_head(TcpListener::bind("127.0.0.1:0").await.unwrap(), move |mut s| {
            let tx = tx.clone();
            async move {
                let _ = s.read(&mut [0u8; 64]).await;
                let _ = tx.send(());
            }
        });
        let routes = || routes_to(port);
        // A plain GET (fast path) and one hyper takes (a chunked upload's head ends it).
        let requests = [
            "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /wait HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ];
        for request in requests {
            for origin in [local(), Origin::Tunnel] {
                // An upstream deadline far beyond the test's.
                let proxy = Proxy::with_timeout(routes(), Duration::from_secs(300));
                let mut c = client(proxy, origin);
                c.write_all(request.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(c);
                tokio::time::timeout(Duration::from_secs(2), ended.recv())
                    .await
                    .unwrap_or_else(|_| panic!("upstream still held 2 s after the client left: {request:?}"));
            }
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_tunnel_stream_hyper_serves_may_not_stall_in_a_head() {
        let (port, _seen) = upstream(false).await;
        let mut c = client(Proxy::hyper_only(routes_to(port), Duration::from_secs(5)), Origin::Tunnel);
        c.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        responses(&mut c, 1).await;
        // Idle as long as frps keeps a pooled work connection: still served.
        tokio::time::sleep(Duration::from_secs(59)).await;
        c.write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        responses(&mut c, 1).await;
        // Half a head and nothing more: closed once the tunnel head timeout has passed.
        c.write_all(b"GET /half HTTP/1.1\r\nHo").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(600), c.read_to_end(&mut rest)).await;
        let waited = started.elapsed().as_secs();
        assert!(waited <= super::super::server::TUNNEL_HEAD_TIMEOUT.as_secs(), "closed after {waited} s");
        assert!(waited >= 60, "closed after {waited} s");
    }

    #[test]
    fn the_differential_fuzz_target_passes_its_seeds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/differential");
        for seed in std::fs::read_dir(dir).unwrap() {
            fuzz_differential(&std::fs::read(seed.unwrap().path()).unwrap());
        }
    }

    /// An upstream that misbehaves by path; it records each request head it reads as
    /// "METHOD /path".
    async fn misbehaving_upstream() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut n = 0;
                    while let Some(head) = read_head(&mut s, &mut buf).await {
                        n += 1;
                        let mut words = head.split(' ');
                        let (method, path) = (words.next().unwrap(), words.next().unwrap().to_string());
                        record.lock().unwrap().push(format!("{method} {path}"));
                        let answer = match path.as_str() {
                            "/extra" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_string(),
                            "/hints" => "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_string(),
                            "/truncated" => "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_string(),
                            "/badchunks" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_string(),
                            // Closed just as a request arrives on a kept-alive connection.
                            "/closes" if n > 1 => return,
                            _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len()),
                        };
                        if s.write_all(answer.as_bytes()).await.is_err() || path == "/truncated" || path == "/badchunks"
                        {
                            return;
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn misbehaving_upstreams_on_both_engines_and_both_origins() {
        let (port, seen) = misbehaving_upstream().await;
        let routes = || Routes::parse(&format!("/=http://127.0.0.1:{port}")).unwrap();
        for (engine, proxy) in
            [("fast", Proxy::new(routes())), ("hyper", Proxy::hyper_only(routes(), Duration::from_secs(5)))]
        {
            for origin in [local(), Origin::Tunnel] {
                let case = format!("{engine} path, {origin:?}");
                let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
                // Bytes beyond Content-Length are not the next answer.
                let mut c = client(proxy.clone(), origin);
                c.write_all(get("/extra").as_bytes()).await.unwrap();
                assert!(responses(&mut c, 1).await[0].ends_with("| ok"), "{case}");
                c.write_all(get("/next").as_bytes()).await.unwrap();
                assert!(responses(&mut c, 1).await[0].ends_with("| /next"), "{case}");
                // 103 Early Hints is dropped; the final answer arrives.
                c.write_all(get("/hints").as_bytes()).await.unwrap();
                let r = responses(&mut c, 1).await;
                assert!(r[0].starts_with("200 ") && r[0].ends_with("| final"), "{case}: {r:?}");
                // A body cut short, or chunks that do not parse: the client's connection ends
                // there, without a complete message.
                for (path, never) in [("/truncated", "abcabc"), ("/badchunks", "0\r\n\r\n")] {
                    let mut c = client(proxy.clone(), origin);
                    c.write_all(get(path).as_bytes()).await.unwrap();
                    let mut got = Vec::new();
                    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
                        .await
                        .unwrap_or_else(|_| panic!("{case}: {path} left the client waiting"))
                        .unwrap();
                    let got = String::from_utf8_lossy(&got);
                    assert!(!got.contains(never), "{case}: {path}: {got}");
                }
                // A kept-alive connection closed as a request is sent: a GET goes again on a new
                // connection; a POST is answered 502 and never sent twice.
                seen.lock().unwrap().clear();
                let mut c = client(proxy.clone(), origin);
                c.write_all(get("/first").as_bytes()).await.unwrap();
                responses(&mut c, 1).await;
                c.write_all(get("/closes").as_bytes()).await.unwrap();
                let r = responses(&mut c, 1).await;
                assert!(r[0].starts_with("200 ") && r[0].ends_with("| /closes"), "{case}: {r:?}");
                let mut c = client(proxy.clone(), origin);
                c.write_all(get("/first").as_bytes()).await.unwrap();
                responses(&mut c, 1).await;
                c.write_all(b"POST /closes HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx").await.unwrap();
                let r = responses(&mut c, 1).await;
                assert!(r[0].starts_with("502 "), "{case}: {r:?}");
                let seen = seen.lock().unwrap().clone();
                assert_eq!(
                    seen.iter().filter(|s| *s == "GET /closes").count(),
                    2,
                    "{case}: the GET, sent again: {seen:?}"
                );
                assert_eq!(seen.iter().filter(|s| *s == "POST /closes").count(), 1, "{case}: {seen:?}");
            }
        }
    }
}
