//! The hyper engine: every request the fast path declines, and the rest of its connection —
//! upgrades and WebSockets, streamed bodies, framing checks and refusals. Its policy (headers,
//! error pages, upstream failures, the connection pool) is [`super::policy`]'s.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::policy::decide::{Answer, Decision, View};
use super::policy::*;
use super::stats::{Counters, CountingBody, Direction, Progress};
use super::{Conn, Proxy, ReqBody, RespBody, Route, Upstreams, MAX_HEAD, MAX_URI, UPSTREAM_BUF};

impl Proxy {
    pub(super) async fn handle(&self, mut req: Request<Incoming>, conn: &Conn) -> Response<RespBody> {
        let wants_json = wants_json(req.headers());
        if let Some(resp) = check_head(&req, wants_json) {
            return resp;
        }
        let decision = {
            let h = req.headers();
            // Origin form, whatever form the request came in.
            let target: Cow<'_, str> = match (req.uri().path_and_query(), req.uri().scheme().is_some()) {
                (Some(pq), false) => Cow::Borrowed(pq.as_str()),
                (Some(pq), true) => Cow::Owned(pq.as_str().to_string()),
                (None, _) => Cow::Borrowed("/"),
            };
            let host = match req.uri().authority() {
                Some(a) => a.as_str().as_bytes(),
                None => h.get(header::HOST).map_or(&b""[..], HeaderValue::as_bytes),
            };
            let length = h.get(header::CONTENT_LENGTH).map(HeaderValue::as_bytes);
            let view = View {
                method: req.method().as_str(),
                target: &target,
                host,
                authorization: h.get(header::AUTHORIZATION).map(HeaderValue::as_bytes),
                forwarded_for: h.get_all(X_FORWARDED_FOR).iter().next_back().map(HeaderValue::as_bytes),
                body: h.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|l| l.iter().any(|&d| d != b'0')),
                upgrade: is_upgrade(h).then(|| h.get(header::UPGRADE).map_or(&b""[..], HeaderValue::as_bytes)),
            };
            let cookies = h.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes);
            self.decide(conn, &view, cookies, std::time::SystemTime::now())
        };
        let (idx, edits) = match decision {
            Decision::Forward { route, edits } => (route, edits),
            Decision::Answer(a) => {
                if let Some(d) = a.delay {
                    conn.timer.sleep_for(d).await;
                }
                return answer(&a, wants_json);
            }
        };
        let route = &self.routes.all()[idx];
        let stats = self.stats[idx].local().clone();
        stats.requests.fetch_add(1, Relaxed);

        let upgrade = edits.upgrade;
        let head = req.method() == http::Method::HEAD;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // Origin-form on the upstream connection: only the path and query go on the wire.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            match Uri::try_from(pq) {
                Ok(u) => parts.uri = u,
                Err(_) => {
                    return local_error(
                        StatusCode::BAD_REQUEST,
                        "bad_uri",
                        "the request target cannot be forwarded",
                        wants_json,
                    )
                }
            }
        }
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&route.authority()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let (true, Some(v)) = (upgrade, upgrade_value) {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, v);
        }
        forwarded_headers(&mut parts.headers, conn.client_ip.as_ref());
        edits.apply(&mut parts.headers);
        if route.rewrite_host {
            if let Ok(v) = HeaderValue::from_str(&route.authority()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.version = http::Version::HTTP_11;
        // The upstream has the timeout for each step: to take more of the body, then, from the
        // body's end, to answer. One that stops reading an upload gets no longer than one that
        // says nothing.
        let ended = hyper::body::Body::is_end_stream(&body);
        let body = if ended { Either::Right(Empty::new()) } else { Either::Left(body) };
        let body = CountingBody::new(body, stats.clone(), Direction::In);
        let progress = (!ended).then(Progress::new);
        let body = match &progress {
            Some(p) => body.with_progress(p.clone()),
            None => body,
        };
        // An idempotent request without a body may be sent again (RFC 9110 §9.2.2): a copy for
        // when a kept-alive upstream connection closes under it.
        let replay = (ended && parts.method.is_idempotent() && !upgrade).then(|| {
            let mut r = Request::new(CountingBody::new(Either::Right(Empty::new()), stats.clone(), Direction::In));
            (*r.method_mut(), *r.uri_mut(), *r.version_mut()) =
                (parts.method.clone(), parts.uri.clone(), parts.version);
            *r.headers_mut() = parts.headers.clone();
            r
        });
        let upstream_req = Request::from_parts(parts, body);
        let timeout = self.response_timeout;
        let timer = async move {
            let Some(p) = progress else {
                conn.timer.sleep_for(timeout).await;
                return UpstreamFailure::Timeout(timeout);
            };
            loop {
                let seen = p.last();
                conn.timer.sleep_for((seen + timeout).saturating_duration_since(tokio::time::Instant::now())).await;
                if p.last() == seen {
                    // Read to its end (or dropped, for an early answer): this is the answer's wait.
                    return if p.ended() {
                        UpstreamFailure::Timeout(timeout)
                    } else {
                        UpstreamFailure::UploadStalled(timeout)
                    };
                }
            }
        };
        let sent = send_upstream(route, idx, &conn.upstreams, upstream_req, replay, upgrade, head);
        let outcome = tokio::select! {
            r = sent => r,
            f = timer => Err(f),
        };
        let mut resp = match outcome {
            Ok(r) => r,
            Err(f) => {
                let (status, code, message) = upstream_failed(route, &stats, f);
                return local_error(status, code, &message, wants_json);
            }
        };
        stats.record_status(resp.status().as_u16());

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                let stats = stats.clone();
                tokio::spawn(conn.stop.clone().run_until_cancelled_owned(async move {
                    let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                        (Ok(c), Ok(u)) => (c, u),
                        (c, u) => {
                            tracing::warn!("upgrade failed: client {:?}, upstream {:?}", c.err(), u.err());
                            return;
                        }
                    };
                    stats.websockets_open.fetch_add(1, Relaxed);
                    // Decremented however the task ends, cancellation by `stop` included.
                    let _open = OpenWebSocket(&stats);
                    let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                    match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        Ok((up, down)) => {
                            stats.bytes_in.fetch_add(up, Relaxed);
                            stats.bytes_out.fetch_add(down, Relaxed);
                        }
                        Err(e) => tracing::debug!("upgraded connection ended: {e}"),
                    }
                }));
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, Either::Right(Full::new(Bytes::new())));
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, Either::Left(CountingBody::new(body, stats, Direction::Out)))
    }
}

/// Sends `req` on this client connection's upstream connection for the route: hyper's, or one
/// the fast path left, or a new one. A request the connection did not take (it closed between
/// requests) is retried once on a fresh connection. One it took is not, since it may have acted,
/// unless the kept-alive connection closed before answering and `replay` (an idempotent request's
/// copy) may be sent instead, as the fast path does.
pub(super) async fn send_upstream(
    route: &Route,
    idx: usize,
    upstreams: &Upstreams,
    mut req: Request<ReqBody>,
    mut replay: Option<Request<ReqBody>>,
    upgrade: bool,
    head: bool,
) -> Result<Response<Incoming>, UpstreamFailure> {
    let slot = std::mem::take(&mut upstreams.lock().unwrap_or_else(|e| e.into_inner())[idx]);
    let mut sender = match slot {
        Slot::Hyper(s) => Some(s),
        mut raw => match raw.take_raw() {
            Some(up) => handshake(up.tcp).await.ok(),
            None => None,
        },
    };
    for attempt in 0..2 {
        let (mut s, reused) = match sender.take() {
            Some(s) if !s.is_closed() => (s, true),
            _ => (connect_upstream(route).await?, false),
        };
        if s.ready().await.is_err() {
            s = connect_upstream(route).await?;
            s.ready().await.map_err(closed)?;
        }
        match s.try_send_request(req).await {
            Ok(resp) => {
                // An upgraded connection belongs to the upgrade now; one whose answer ends at its
                // head may hold stray bytes hyper would read as the next answer.
                let upgraded = upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                if !upgraded && !bodiless(head, resp.status().as_u16()) {
                    upstreams.lock().unwrap_or_else(|e| e.into_inner())[idx] = Slot::Hyper(s);
                }
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                Some(r) if attempt == 0 => req = r,
                None if attempt == 0 && reused && e.error().is_incomplete_message() && replay.is_some() => {
                    req = replay.take().expect("checked");
                }
                _ => return Err(closed(e.into_error())),
            },
        }
    }
    unreachable!("the second attempt returns")
}

fn closed(e: hyper::Error) -> UpstreamFailure {
    UpstreamFailure::Closed(e.to_string())
}

async fn connect_upstream(route: &Route) -> Result<SendRequest<ReqBody>, UpstreamFailure> {
    let tcp = connect_tcp(route).await.map_err(UpstreamFailure::Connect)?;
    handshake(tcp).await.map_err(closed)
}

/// hyper's client on an upstream connection.
async fn handshake(tcp: TcpStream) -> Result<SendRequest<ReqBody>, hyper::Error> {
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(UPSTREAM_BUF)
        // As on the server side: one copied buffer is cheaper than a writev queue for small heads.
        .writev(false)
        .handshake(TokioIo::new(KeepReading { tcp, write_failed: false }))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// An upstream connection whose failed writes are taken as sent: an upstream that answers an
/// upload early (413, 401) and closes resets the connection under the body still being written,
/// and hyper would report that write's error instead of the answer already on its way. Reads go
/// on, so the answer arrives, or the reset ends the exchange as a 502; nothing is sent again.
struct KeepReading {
    tcp: TcpStream,
    write_failed: bool,
}

impl AsyncRead for KeepReading {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for KeepReading {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.write_failed {
            return Poll::Ready(Ok(buf.len()));
        }
        match ready!(Pin::new(&mut self.tcp).poll_write(cx, buf)) {
            Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
                tracing::debug!("upstream stopped taking the request ({e}); reading its answer");
                self.write_failed = true;
                Poll::Ready(Ok(buf.len()))
            }
            r => Poll::Ready(r),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The proxy's own answer, as the pipeline decided it.
pub(super) fn answer(a: &Answer, json: bool) -> Response<RespBody> {
    let (ctype, body) = a.body(json);
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = a.status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (k, v) in &a.headers {
        h.append(k.clone(), v.clone());
    }
    resp
}

/// Refuses request heads over the limits: 414 for the target, 431 for the whole head.
pub(super) fn check_head<B>(req: &Request<B>, json: bool) -> Option<Response<RespBody>> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI {
        return Some(local_error(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            &format!("the request target is longer than {} KiB", MAX_URI / 1024),
            json,
        ));
    }
    let head: usize = uri_len + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
    if head > MAX_HEAD {
        return Some(local_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("the request headers are larger than {} KiB", MAX_HEAD / 1024),
            json,
        ));
    }
    if let Err(why) = check_framing(req.headers()) {
        return Some(refuse_framing(why, json));
    }
    None
}

/// 400 for a request whose body length is in doubt. Nothing after it on the connection can be
/// trusted either, so the connection closes.
pub(super) fn refuse_framing(why: &str, json: bool) -> Response<RespBody> {
    let mut resp = local_error(StatusCode::BAD_REQUEST, "ambiguous_framing", why, json);
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Refuses a request whose body length two parsers could read differently — the stuff of
/// request smuggling (RFC 9112 §6.3, §11.2) — so no upstream ever sees one. hyper's parser
/// already refuses conflicting or non-numeric lengths, obs-fold and a final coding other than
/// chunked; what it resolves by itself (Content-Length with chunked, equal repeated lengths) is
/// caught on the raw bytes by [`framing::FramingGuard`], so the Content-Length checks here only
/// guard against a change in hyper. What hyper lets through and this refuses: codings besides
/// chunked, and Transfer-Encoding given more than once.
pub(super) fn check_framing(h: &HeaderMap) -> Result<(), &'static str> {
    let te: Vec<_> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    let cl: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err("the request has both Transfer-Encoding and Content-Length");
    }
    if cl.len() > 1 {
        return Err("the request has more than one Content-Length");
    }
    if cl.first().is_some_and(|v| v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit)) {
        return Err("the request's Content-Length is not a number");
    }
    if te.len() > 1 || te.first().is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked")) {
        return Err("the request's Transfer-Encoding is not exactly \"chunked\"");
    }
    Ok(())
}

/// Counts an upgraded connection as open for as long as it lives.
pub(super) struct OpenWebSocket<'a>(&'a Counters);

impl Drop for OpenWebSocket<'_> {
    fn drop(&mut self) {
        self.0.websockets_open.fetch_sub(1, Relaxed);
    }
}

pub(super) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// A short answer of the proxy itself: HTML for browsers, JSON for API clients.
pub(super) fn local_error(status: StatusCode, code: &str, message: &str, json: bool) -> Response<RespBody> {
    let (ctype, body) = error_page(status, code, message, json);
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
