//! The in-process reverse proxy: one local URL for the app's three servers.
//!
//! A hyper HTTP/1.1 server with the route table of [`routes`] (`/api/alt` → backend, `/api` → vibe
//! app, the rest → frontend by default). It serves connections from its loopback listener and —
//! with no loopback hop — the tunnel's work streams, which the native client hands over after
//! `StartWorkConn` and any encryption/compression layers. Each such stream is a persistent
//! keep-alive HTTP/1.1 connection, as frps' reverse proxy expects.
//!
//! Bodies stream in both directions with backpressure and are never buffered whole; upgrades
//! (WebSocket or any HTTP/1.1 `Upgrade`) become raw byte pipes after the upstream's `101`. Headers
//! are handled as careful reverse proxies do: hop-by-hop headers (and those named by `Connection`)
//! are dropped, `X-Forwarded-For/-Proto/-Host` appended or set, `Host` preserved unless a route
//! asks for the upstream's. Upstream connections are pooled (keep-alive). A dead upstream is an
//! immediate 502 naming it; a slow one, a 504.
//!
//! Plain requests are forwarded as bytes by the [`fast`] path; a connection moves to hyper at the
//! first request that is not plain, and hyper serves the rest of it.

#[doc(hidden)]
pub mod fast;
pub mod framing;
pub mod routes;
pub mod stats;
pub mod timer;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

pub use routes::{Route, Routes};
use stats::{Counters, CountingBody, Direction, RouteStats};
use timer::ConnTimer;

/// How long an upstream may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time an upstream may take to start its response once the request is sent (frps' own
/// vhost timeout is 60 s); `BURROW_UPSTREAM_TIMEOUT` changes it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Cap of hyper's read buffer per upstream connection (its default is about 400 KiB). A response
/// whose reader stalls holds at most this much here; backpressure keeps the rest in the upstream.
const UPSTREAM_BUF: usize = 64 * 1024;

/// Largest request head (request line + headers) the proxy forwards; larger is 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest request target; longer is 414.
pub const MAX_URI: usize = 16 * 1024;

type ReqBody = CountingBody<Incoming>;
/// The proxy's response body: streamed from an upstream, or a short local answer.
pub type RespBody = Either<CountingBody<Incoming>, Full<Bytes>>;

/// Where a connection comes from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A client of the loopback listener.
    Local(SocketAddr),
    /// A tunnel work stream: frps already set `X-Forwarded-*` for the public client.
    Tunnel,
}

/// The reverse proxy.
pub struct Proxy {
    routes: Routes,
    stats: Vec<RouteStats>,
    response_timeout: Duration,
    /// Whether plain requests take the [`fast`] path (off: every request goes through hyper).
    fast_path: bool,
}

/// Upstream connections of one client connection, one keep-alive connection per route.
///
/// HTTP/1.1 serves a connection's requests one after another, so each client connection needs at
/// most one upstream connection per route at a time. Keeping them with the client connection (as
/// a per-connection keep-alive pool) avoids a shared pool's locking and checkout on every request;
/// they close when the client connection does.
type Upstreams = std::sync::Mutex<Vec<Option<SendRequest<ReqBody>>>>;

/// A connection the accepting worker hands to another.
type Dealt = (std::net::TcpStream, SocketAddr);

/// What the requests of one client connection share. Each request takes one handle to it, which
/// only this connection's thread touches (a handle to the [`Proxy`] itself, shared by all
/// workers, would move a cache line between threads on every request).
struct Conn {
    proxy: Arc<Proxy>,
    client_ip: Option<HeaderValue>,
    upstreams: Upstreams,
    /// Only this connection's task may poll its sleeps (see [`timer`]): hyper's header-read
    /// timeout and `handle`'s response timeout, never an upgrade's task.
    timer: ConnTimer,
    stop: CancellationToken,
}

impl Conn {
    fn new(proxy: Arc<Proxy>, origin: Origin, stop: CancellationToken) -> Self {
        Conn {
            upstreams: std::sync::Mutex::new(proxy.routes.all().iter().map(|_| None).collect()),
            proxy,
            client_ip: client_ip(origin),
            timer: ConnTimer::default(),
            stop,
        }
    }
}

/// Why an upstream did not answer.
enum UpstreamError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl Proxy {
    /// A proxy for `routes`.
    pub fn new(routes: Routes) -> Arc<Self> {
        Self::with_timeout(routes, RESPONSE_TIMEOUT)
    }

    /// A proxy whose upstreams may take `response_timeout` to answer.
    pub fn with_timeout(routes: Routes, response_timeout: Duration) -> Arc<Self> {
        Self::build(routes, response_timeout, true)
    }

    /// A proxy that serves every request through hyper, as the reference the [`fast`] path is
    /// tested against.
    pub fn hyper_only(routes: Routes, response_timeout: Duration) -> Arc<Self> {
        Self::build(routes, response_timeout, false)
    }

    fn build(routes: Routes, response_timeout: Duration, fast_path: bool) -> Arc<Self> {
        let stats = routes.all().iter().map(|_| RouteStats::default()).collect();
        Arc::new(Self { routes, stats, response_timeout, fast_path })
    }

    /// Counters per route, as JSON.
    pub fn snapshot(&self) -> Value {
        Value::Array(
            self.routes
                .all()
                .iter()
                .zip(&self.stats)
                .map(|(r, s)| {
                    let mut v = s.snapshot();
                    v["prefix"] = json!(r.prefix);
                    v["upstream"] = json!(format!("http://{}", r.authority()));
                    v["name"] = json!(r.name);
                    v
                })
                .collect(),
        )
    }

    /// Serves `listener` on one thread per core, each with a single-threaded runtime. A client
    /// connection and its upstream connections then live on one thread, as in nginx's worker
    /// model: no cross-thread wake-ups per request.
    ///
    /// The first worker accepts and deals the connections out in turn, so that a burst of them
    /// (a browser's six, a load test's sixteen) is spread evenly. The kernel's `SO_REUSEPORT`
    /// hashing, used before, left one worker of two with 10 or 11 of 16 connections about one run
    /// in three; that worker's queue then set the tail latency and capped the throughput.
    pub fn spawn_workers(self: &Arc<Self>, listener: std::net::TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        // One worker per core (at least two). The proxy always shares the machine with its
        // upstreams and its clients, and when the scheduler preempts a worker, every connection
        // on it waits. Through hyper, a request took 28k instructions, the waits were long, and
        // two workers per core were needed to keep the p99 at 16 connections near nginx's (0.7
        // against 2.8-3.3 ms with one). On the fast path a request takes 9k; with one worker per
        // core the p99 stays below nginx's and the workers sleep and wake half as often (0.35
        // context switches per request against 0.75): in five interleaved rounds on 2 cores,
        // 1.00-1.07x the request rate of two per core at 16 connections (one round 0.92) and
        // 0.96-1.07x at 128.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = cores.clamp(2, 16);
        let mut others = Vec::new();
        for i in 1..workers {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Dealt>();
            others.push(tx);
            let this = self.clone();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::Builder::new().name(format!("burrow-proxy-{i}")).spawn(move || {
                rt.block_on(async move {
                    while let Some((stream, peer)) = rx.recv().await {
                        this.clone().spawn_dealt_client(stream, peer);
                    }
                    // The accepting worker is gone; the connections here still run to their end.
                    std::future::pending::<()>().await
                })
            })?;
        }
        let this = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered here, so that a listener the runtime cannot take is an error of this call.
        let listener = {
            let _enter = rt.enter();
            TcpListener::from_std(listener)?
        };
        std::thread::Builder::new()
            .name("burrow-proxy-0".into())
            .spawn(move || rt.block_on(this.accept_loop(listener, others)))?;
        Ok(())
    }

    /// Serves the listener until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.accept_loop(listener, Vec::new()).await
    }

    /// Accepts connections, serving one in `others.len() + 1` here and handing the rest to the
    /// other workers in turn.
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, others: Vec<UnboundedSender<Dealt>>) {
        let mut turn = 0;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("proxy accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            turn = (turn + 1) % (others.len() + 1);
            let Some(worker) = turn.checked_sub(1).and_then(|w| others.get(w)) else {
                self.clone().spawn_client(stream, peer);
                continue;
            };
            // Off this runtime's reactor, onto the other worker's.
            match stream.into_std() {
                Ok(stream) => {
                    if let Err(back) = worker.send((stream, peer)) {
                        // That worker is gone: serve the connection here.
                        self.clone().spawn_dealt_client(back.0 .0, peer);
                    }
                }
                Err(e) => tracing::warn!("proxy cannot hand over a connection from {peer}: {e}"),
            }
        }
    }

    /// Serves a loopback client's connection on a task of the current runtime.
    fn spawn_client(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        tokio::spawn(self.serve_connection(stream, Origin::Local(peer), CancellationToken::new()));
    }

    /// [`Self::spawn_client`] for a connection taken off another runtime's reactor.
    fn spawn_dealt_client(self: Arc<Self>, stream: std::net::TcpStream, peer: SocketAddr) {
        match TcpStream::from_std(stream) {
            Ok(stream) => self.spawn_client(stream, peer),
            Err(e) => tracing::warn!("proxy cannot serve a connection from {peer}: {e}"),
        }
    }

    /// Serves one connection (a local client, or a tunnel work stream) as persistent HTTP/1.1.
    /// `stop` also ends the WebSockets and other upgraded connections it hands off, which outlive
    /// the HTTP connection: stopping a tunnel must cut them too.
    ///
    /// Requests start on the [`fast`] path; the first one it declines, and the rest of the
    /// connection, are served by hyper.
    pub async fn serve_connection<S>(self: Arc<Self>, mut io: S, origin: Origin, stop: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(Conn::new(self, origin, stop));
        let timer = conn.timer.clone();
        let mut read = bytes::BytesMut::new();
        if conn.proxy.fast_path {
            let local = matches!(origin, Origin::Local(_));
            if let fast::End::Closed = fast::serve(&conn, &mut io, &mut read, local).await {
                return;
            }
        }
        let (io, ambiguous) = framing::FramingGuard::new(fast::Prefixed::new(read.freeze(), io));
        let svc = hyper::service::service_fn(move |req| {
            let conn = conn.clone();
            let ambiguous = ambiguous.load(Relaxed);
            async move {
                if ambiguous {
                    return Ok::<_, Infallible>(refuse_framing(
                        "the request has both Transfer-Encoding and Content-Length, or Content-Length twice",
                        wants_json(req.headers()),
                    ));
                }
                Ok::<_, Infallible>(conn.proxy.handle(req, &conn).await)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // hyper's own read-buffer cap bounds memory per connection (past it hyper answers 431 by
        // itself); the exact head limit is checked per request in `handle`. Heads and bodies are
        // copied into one buffer rather than queued for writev: for the small responses that make
        // up most requests the copy is cheaper than hyper's queue (callgrind: 2 % fewer
        // instructions per request); large bodies stay bounded by the same cap.
        builder.max_buf_size(2 * MAX_HEAD).keep_alive(true).writev(false).timer(timer);
        // Slow-loris guard for local clients. frps manages its own idle work connections: hyper
        // would otherwise close them after its default 30 s, racing frps reusing one.
        builder.header_read_timeout(match origin {
            Origin::Local(_) => Some(Duration::from_secs(30)),
            Origin::Tunnel => None,
        });
        if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).with_upgrades().await {
            tracing::debug!("proxy connection ended: {e}");
        }
    }

    async fn handle(&self, mut req: Request<Incoming>, conn: &Conn) -> Response<RespBody> {
        let wants_json = wants_json(req.headers());
        if let Some(resp) = check_head(&req, wants_json) {
            return resp;
        }
        let (idx, route) = match self.routes.select_index(req.uri().path()) {
            Ok(Some(i)) => (i, &self.routes.all()[i]),
            Ok(None) => {
                return local_error(
                    StatusCode::NOT_FOUND,
                    "no_route",
                    &format!("no route serves {}", req.uri().path()),
                    wants_json,
                )
            }
            Err(e) => {
                return local_error(StatusCode::BAD_REQUEST, "bad_path", &format!("{e}; request refused"), wants_json)
            }
        };
        let stats = self.stats[idx].local().clone();
        stats.requests.fetch_add(1, Relaxed);

        let upgrade = is_upgrade(req.headers());
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
        if route.rewrite_host {
            if let Ok(v) = HeaderValue::from_str(&route.authority()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.version = http::Version::HTTP_11;
        // The response timer starts once the request body has been sent: an upload may take as
        // long as it takes, an upstream that then says nothing may not.
        let body = CountingBody::new(body, stats.clone(), Direction::In);
        let (body, body_sent) = if hyper::body::Body::is_end_stream(&body) {
            (body, None)
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (body.with_end_signal(tx), Some(rx))
        };
        let upstream_req = Request::from_parts(parts, body);
        let timeout = self.response_timeout;
        let timer = async move {
            if let Some(rx) = body_sent {
                let _ = rx.await;
            }
            conn.timer.sleep_for(timeout).await;
        };
        let sent = send_upstream(route, idx, &conn.upstreams, upstream_req, upgrade);
        let outcome = tokio::select! {
            r = sent => Ok(r),
            _ = timer => Err(()),
        };
        let mut resp = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                stats.upstream_errors.fetch_add(1, Relaxed);
                stats.record_status(502);
                let (what, detail) = match e {
                    UpstreamError::Connect(e) => ("is not answering", e.to_string()),
                    UpstreamError::Http(e) => ("closed the connection before answering", e.to_string()),
                };
                tracing::warn!("{} at {} {what}: {detail}", route.name, route.authority());
                return local_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    &format!("{} at {} {what}", route.name, route.authority()),
                    wants_json,
                );
            }
            Err(_) => {
                stats.upstream_errors.fetch_add(1, Relaxed);
                stats.record_status(504);
                return local_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &format!(
                        "{} at {} did not answer within {} s",
                        route.name,
                        route.authority(),
                        timeout.as_secs_f64()
                    ),
                    wants_json,
                );
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

/// Binds the proxy's address, with a listen backlog that takes a burst of a thousand connects
/// (the standard library's is 128; past it, connects wait for SYN retries, a second or more).
/// Linux caps it at `net.core.somaxconn` (4096 since 5.4, 128 before).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As the standard library does on Unix: rebinding while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Sends `req` on this client connection's upstream connection for the route, opening one when
/// there is none or it has closed. A request the connection did not take (it closed between
/// requests) is retried once on a fresh connection; one it took is not, since it may have acted.
async fn send_upstream(
    route: &Route,
    idx: usize,
    upstreams: &Upstreams,
    mut req: Request<ReqBody>,
    upgrade: bool,
) -> Result<Response<Incoming>, UpstreamError> {
    let mut sender = upstreams.lock().unwrap_or_else(|e| e.into_inner())[idx].take();
    for attempt in 0..2 {
        let mut s = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => connect_upstream(route).await?,
        };
        if s.ready().await.is_err() {
            s = connect_upstream(route).await?;
            s.ready().await.map_err(UpstreamError::Http)?;
        }
        match s.try_send_request(req).await {
            Ok(resp) => {
                // An upgraded connection belongs to the upgrade now.
                if !(upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS) {
                    upstreams.lock().unwrap_or_else(|e| e.into_inner())[idx] = Some(s);
                }
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                Some(r) if attempt == 0 => req = r,
                _ => return Err(UpstreamError::Http(e.into_error())),
            },
        }
    }
    unreachable!("the second attempt returns")
}

/// A new connection to the route's upstream, within [`CONNECT_TIMEOUT`].
async fn connect_tcp(route: &Route) -> std::io::Result<TcpStream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((route.host.as_str(), route.port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn connect_upstream(route: &Route) -> Result<SendRequest<ReqBody>, UpstreamError> {
    let tcp = connect_tcp(route).await.map_err(UpstreamError::Connect)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(UPSTREAM_BUF)
        // As on the server side: one copied buffer is cheaper than a writev queue for small heads.
        .writev(false)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// Refuses request heads over the limits: 414 for the target, 431 for the whole head.
fn check_head<B>(req: &Request<B>, json: bool) -> Option<Response<RespBody>> {
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
fn refuse_framing(why: &str, json: bool) -> Response<RespBody> {
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
fn check_framing(h: &HeaderMap) -> Result<(), &'static str> {
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
struct OpenWebSocket<'a>(&'a Counters);

impl Drop for OpenWebSocket<'_> {
    fn drop(&mut self) {
        self.0.websockets_open.fetch_sub(1, Relaxed);
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus those `Connection` names.
///
/// This runs twice per request. A message carries one of these at most, as a rule (`Connection:
/// keep-alive`), so the names present are found in one pass over the map ([`hop_by_hop_index`]),
/// and only those are removed: each removal hashes a name and probes the map.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = 0u16;
    for k in h.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Looked at as text first: `Connection` rarely names anything more (`keep-alive` goes anyway),
    // and a `HeaderName` for a non-standard name is an allocation.
    if present & 1 != 0 /* Connection */ && connection_named(h).next().is_some() {
        let named: Vec<HeaderName> =
            connection_named(h).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
        for n in named {
            h.remove(n);
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
}

/// The headers `Connection` names for removal with it, besides the hop-by-hop ones (removed once
/// each anyway); `close` names none.
fn connection_named(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP.iter().any(|n| n.as_str().eq_ignore_ascii_case(t))
        })
}

/// Where `k` is in [`HOP_BY_HOP`]. A match on the name compiles to a switch on its length, so the
/// usual header costs one comparison instead of nine.
fn hop_by_hop_index(k: &HeaderName) -> Option<usize> {
    Some(match k.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "proxy-authenticate" => 7,
        "proxy-authorization" => 8,
        _ => return None,
    })
}

/// The hop-by-hop headers (RFC 9110 §7.6.1, and the older `Keep-Alive` and `Proxy-Connection`).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How `X-Forwarded-For` names the client of a connection: a local client by its address,
/// rendered once per connection rather than per request; a tunnel stream by nothing, since frps
/// has named the public client already.
fn client_ip(origin: Origin) -> Option<HeaderValue> {
    match origin {
        // An IP address is always a valid header value; "unknown" (RFC 7239's word) keeps a
        // local client from ever being taken for a tunnel stream.
        Origin::Local(peer) => {
            Some(HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")))
        }
        Origin::Tunnel => None,
    }
}

/// Sets the `X-Forwarded-*` headers; `client` is [`client_ip`]'s answer for the connection.
fn forwarded_headers(h: &mut HeaderMap, client: Option<&HeaderValue>) {
    match client {
        Some(ip) => {
            let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.trim().is_empty() => {
                    HeaderValue::from_str(&format!("{prev}, {}", ip.to_str().unwrap_or_default())).ok()
                }
                _ => Some(ip.clone()),
            };
            if let Some(v) = xff {
                h.insert(X_FORWARDED_FOR, v);
            }
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            if let Some(host) = h.get(header::HOST).cloned() {
                h.insert(X_FORWARDED_HOST, host);
            }
        }
        None => {
            // frps has appended the public client to X-Forwarded-For and set Proto and Host; keep
            // them, and fill in only what is missing.
            if !h.contains_key(X_FORWARDED_PROTO) {
                h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            }
            if !h.contains_key(X_FORWARDED_HOST) {
                if let Some(host) = h.get(header::HOST).cloned() {
                    h.insert(X_FORWARDED_HOST, host);
                }
            }
        }
    }
}

fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT).is_some_and(|v| accepts_json(v.as_bytes()))
}

/// Whether an `Accept` value asks for JSON rather than a page.
fn accepts_json(accept: &[u8]) -> bool {
    let has = |what: &[u8]| memchr::memmem::find(accept, what).is_some();
    has(b"application/json") && !has(b"text/html")
}

/// A short answer of the proxy itself: HTML for browsers, JSON for API clients.
fn local_error(status: StatusCode, code: &str, message: &str, json: bool) -> Response<RespBody> {
    let (ctype, body) = error_page(status, code, message, json);
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The content type and body of [`local_error`]'s answer.
fn error_page(status: StatusCode, code: &str, message: &str, json: bool) -> (&'static str, String) {
    if json {
        ("application/json", json!({"error": {"code": code, "message": message}}).to_string())
    } else {
        let esc = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
        ("text/html; charset=utf-8", format!("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{esc}.</p>\n<p><small>burrow</small></p></body></html>\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.append("connection", "Close, ,X-Other-Hop ".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("x-other-hop", "2".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn each_hop_by_hop_header_alone_goes() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
            let mut h = HeaderMap::new();
            h.insert(name.clone(), "x".parse().unwrap());
            h.insert("x-keep", "yes".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was kept");
        }
        for kept in ["host", "user-agent", "content-length", "content-type", "x-connection", "tee"] {
            assert_eq!(hop_by_hop_index(&HeaderName::from_static(kept)), None, "{kept}");
        }
    }

    #[test]
    fn forwarded_for_is_appended_locally_and_kept_from_frps() {
        let mut h = HeaderMap::new();
        h.insert("host", "app.example".parse().unwrap());
        h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        forwarded_headers(&mut h, client_ip(Origin::Local("127.0.0.1:5555".parse().unwrap())).as_ref());
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        let mut h = HeaderMap::new();
        h.insert("host", "app.example".parse().unwrap());
        h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        forwarded_headers(&mut h, client_ip(Origin::Tunnel).as_ref());
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.example");
    }

    #[test]
    fn upgrade_detection_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(!is_upgrade(&h));
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        assert!(is_upgrade(&h));
    }

    #[test]
    fn error_bodies_follow_accept() {
        let mut h = HeaderMap::new();
        h.insert("accept", "application/json".parse().unwrap());
        assert!(wants_json(&h));
        h.insert("accept", "text/html,application/xhtml+xml,application/json;q=0.9".parse().unwrap());
        assert!(!wants_json(&h));
        let r = local_error(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            "frontend at 127.0.0.1:5002 is not answering",
            false,
        );
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    }
}
