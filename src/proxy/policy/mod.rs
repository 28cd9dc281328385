//! The one HTTP policy of the proxy, whichever engine serves a request (the [`super::fast`] path
//! or hyper, [`super::hyper_path`]): which headers are hop-by-hop, what `X-Forwarded-*` says, the
//! proxy's own error pages and what a failed upstream is answered with, and the kept-alive
//! upstream connections a client connection holds.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use hyper::client::conn::http1::SendRequest;
use serde_json::json;
use tokio::net::TcpStream;

use super::stats::Counters;

pub(super) mod decide;
use super::{Origin, ReqBody, Route, CONNECT_TIMEOUT};

/// How long a request head may take on the fast path: from when a local client's connection
/// waits for one (as hyper's header-read timeout, [`LOCAL_HEAD_TIMEOUT`]), from its first byte on a
/// tunnel stream.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request's body (at most 64 KiB on the fast path) may take once its head is in.
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's header-read timeout on a local client's connection.
pub(super) const LOCAL_HEAD_TIMEOUT: Duration = HEAD_TIMEOUT;
/// hyper's head timeout on a tunnel stream. Its clock runs while a kept-alive connection idles
/// too, and frps keeps idle work connections in its HTTP pool for up to 60 s (its transport's
/// `IdleConnTimeout`): a tunnel stream gets longer than that, so the guard never closes one frps
/// may still reuse, yet a stalled head on it ends.
pub(super) const TUNNEL_HEAD_TIMEOUT: Duration = Duration::from_secs(90);

/// A kept-alive connection to an upstream, with what has been read from it.
pub(super) struct Upstream {
    pub(super) tcp: TcpStream,
    pub(super) buf: BytesMut,
}

/// What a header is to the fast path.
pub(super) enum Kind {
    Host,
    ContentLength,
    Connection,
    /// Hop-by-hop, dropped.
    Hop,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Accept,
    /// Looked at by the access policy on tunnel requests.
    Authorization,
    Cookie,
    /// A method override or `HTTP2-Settings` ([`decide::TUNNEL_DROPPED`]): dropped from tunnel
    /// requests.
    TunnelDropped,
    TransferEncoding,
    /// `Upgrade` or `Expect`: the request is for hyper.
    Decline,
    Other,
}

pub(super) fn kind(name: &str) -> Kind {
    // Dispatch on the length first: most headers are compared once, or not at all.
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 if is("te") => Kind::Hop,
        4 if is("host") => Kind::Host,
        6 if is("accept") => Kind::Accept,
        6 if is("cookie") => Kind::Cookie,
        6 if is("expect") => Kind::Decline,
        7 if is("upgrade") => Kind::Decline,
        7 if is("trailer") => Kind::Hop,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::Hop,
        13 if is("authorization") => Kind::Authorization,
        13 | 14 | 17 | 22 if decide::tunnel_dropped(name) => Kind::TunnelDropped,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        16 if is("x-forwarded-host") => Kind::XForwardedHost,
        16 if is("proxy-connection") => Kind::Hop,
        17 if is("x-forwarded-proto") => Kind::XForwardedProto,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        18 if is("proxy-authenticate") => Kind::Hop,
        19 if is("proxy-authorization") => Kind::Hop,
        _ => Kind::Other,
    }
}

/// Whether an idle upstream connection may still take a request: not if the reactor has seen it
/// readable (closed, or sending what nobody asked for). No system call unless it has.
pub(super) fn still_open(tcp: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match tcp.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus those `Connection` names.
///
/// This runs twice per request. A message carries one of these at most, as a rule (`Connection:
/// keep-alive`), so the names present are found in one pass over the map ([`hop_by_hop_index`]),
/// and only those are removed: each removal hashes a name and probes the map.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
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
pub(super) fn connection_named(h: &HeaderMap) -> impl Iterator<Item = &str> {
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
pub(super) fn hop_by_hop_index(k: &HeaderName) -> Option<usize> {
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
pub(super) static HOP_BY_HOP: [HeaderName; 9] = [
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

pub(super) const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

pub(super) const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How `X-Forwarded-For` names the client of a connection: a local client by its address,
/// rendered once per connection rather than per request; a tunnel stream by nothing, since frps
/// has named the public client already.
pub(super) fn client_ip(origin: Origin) -> Option<HeaderValue> {
    match origin {
        // An IP address is always a valid header value; "unknown" (RFC 7239's word) keeps a
        // local client from ever being taken for a tunnel stream.
        Origin::Local(peer) => {
            Some(HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")))
        }
        Origin::Tunnel => None,
    }
}

/// The `X-Forwarded-*` a request goes upstream with, decided once for both engines.
pub(super) struct Forwarded<'a> {
    /// The incoming `X-Forwarded-*` are dropped: a local client's are its own word. A tunnel
    /// stream's were set by frps for the public client and are kept.
    pub replace: bool,
    /// `X-Forwarded-For`: the earlier hops, if any, then this client.
    pub for_: Option<(Option<&'a [u8]>, &'a [u8])>,
    /// `X-Forwarded-Proto: http`.
    pub proto: bool,
    /// `X-Forwarded-Host`.
    pub host: Option<&'a [u8]>,
}

impl<'a> Forwarded<'a> {
    /// `client` is [`client_ip`]'s answer for the connection; the rest is what the request has.
    pub(super) fn decide(
        client: Option<&'a HeaderValue>,
        xff: Option<&'a [u8]>,
        has_proto: bool,
        has_host: bool,
        host: Option<&'a [u8]>,
    ) -> Self {
        match client {
            Some(ip) => Self {
                replace: true,
                for_: Some((xff.map(<[u8]>::trim_ascii).filter(|p| !p.is_empty()), ip.as_bytes())),
                proto: true,
                host,
            },
            // frps has appended the public client to X-Forwarded-For and set Proto and Host; only
            // what is missing is filled in.
            None => Self { replace: false, for_: None, proto: !has_proto, host: host.filter(|_| !has_host) },
        }
    }

    fn for_value(&self) -> Option<Vec<u8>> {
        self.for_.map(|(prev, ip)| match prev {
            Some(p) => [p, b", ", ip].concat(),
            None => ip.to_vec(),
        })
    }

    /// As header lines.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        if let Some((prev, ip)) = self.for_ {
            // Written in pieces, not through `for_value`: this runs for every fast-path request.
            out.extend_from_slice(b"X-Forwarded-For: ");
            if let Some(p) = prev {
                out.extend_from_slice(p);
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(ip);
            out.extend_from_slice(b"\r\n");
        }
        let mut line = |name: &[u8], value: &[u8]| {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        if self.proto {
            line(b"X-Forwarded-Proto", b"http");
        }
        if let Some(h) = self.host {
            line(b"X-Forwarded-Host", h);
        }
    }
}

/// Sets the `X-Forwarded-*` headers of a request hyper forwards.
pub(super) fn forwarded_headers(h: &mut HeaderMap, client: Option<&HeaderValue>) {
    let get = |n: &HeaderName| h.get(n).map(HeaderValue::as_bytes);
    let f = Forwarded::decide(
        client,
        get(&X_FORWARDED_FOR),
        h.contains_key(X_FORWARDED_PROTO),
        h.contains_key(X_FORWARDED_HOST),
        get(&header::HOST),
    );
    // The values are the request's own (a clone shares its bytes) or made of them.
    let for_ = match f.for_ {
        Some((None, _)) => client.cloned(),
        Some(_) => f.for_value().and_then(|v| HeaderValue::from_bytes(&v).ok()),
        None => None,
    };
    let host = f.host.and_then(|_| h.get(header::HOST).cloned());
    let proto = f.proto;
    if let Some(v) = for_ {
        h.insert(X_FORWARDED_FOR, v);
    }
    if proto {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(v) = host {
        h.insert(X_FORWARDED_HOST, v);
    }
}

/// Why an upstream did not answer, whichever engine asked.
pub(super) enum UpstreamFailure {
    /// No connection (refused, unreachable, timed out connecting).
    Connect(io::Error),
    /// The connection closed, or the answer was not HTTP, before a response began.
    Closed(String),
    /// No response within the route's timeout.
    Timeout(Duration),
    /// The upstream stopped reading the request body for the route's timeout.
    UploadStalled(Duration),
}

/// Counts a failed exchange, logs it, and says what the client is answered: a 502 or 504
/// naming the route and its upstream.
pub(super) fn upstream_failed(
    route: &Route,
    stats: &Counters,
    failure: UpstreamFailure,
) -> (StatusCode, &'static str, String) {
    stats.upstream_errors.fetch_add(1, Relaxed);
    let name = (&route.name, route.authority());
    let unreachable = |what: &str, detail: &dyn std::fmt::Display| {
        tracing::warn!("{} at {} {what}: {detail}", name.0, name.1);
        (StatusCode::BAD_GATEWAY, "upstream_unreachable", format!("{} at {} {what}", name.0, name.1))
    };
    let (status, code, message) = match failure {
        UpstreamFailure::Timeout(t) => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("{} at {} did not answer within {} s", name.0, name.1, t.as_secs_f64()),
        ),
        UpstreamFailure::UploadStalled(t) => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("{} at {} stopped reading the request body for {} s", name.0, name.1, t.as_secs_f64()),
        ),
        UpstreamFailure::Connect(e) => unreachable("is not answering", &e),
        UpstreamFailure::Closed(why) => unreachable("closed the connection before answering", &why),
    };
    stats.record_status(status.as_u16());
    (status, code, message)
}

/// A response that ends at its head (to HEAD, or 204 or 304). An upstream that sends a body
/// anyway — at once or a moment later — has bytes coming that the next request on the connection
/// would take for its answer, and frps pools work connections across public users: no check
/// before reuse can see bytes still on their way, so such a connection is not reused.
pub(super) fn bodiless(head: bool, status: u16) -> bool {
    head || status == 204 || status == 304
}

/// One route's kept-alive upstream connection of a client connection: the fast path's raw one,
/// or hyper's. HTTP/1.1 serves a connection's requests one after another, so a client connection
/// needs one per route at most; kept with the client connection, they need no shared pool's
/// locking, and they close with it. A connection the fast path hands to hyper hands its
/// upstream connections over too.
#[derive(Default)]
pub(super) enum Slot {
    #[default]
    Empty,
    Raw(Upstream),
    Hyper(SendRequest<ReqBody>),
}

impl Slot {
    /// The raw connection, if it may take another request: nothing unread in it, and not seen
    /// closing.
    pub(super) fn take_raw(&mut self) -> Option<Upstream> {
        match std::mem::take(self) {
            Slot::Raw(up) if up.buf.is_empty() && still_open(&up.tcp) => Some(up),
            _ => None,
        }
    }
}

pub(super) fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT).is_some_and(|v| accepts_json(v.as_bytes()))
}

/// Whether an `Accept` value asks for JSON rather than a page.
pub(super) fn accepts_json(accept: &[u8]) -> bool {
    let has = |what: &[u8]| memchr::memmem::find(accept, what).is_some();
    has(b"application/json") && !has(b"text/html")
}

/// The content type and body of [`local_error`]'s answer.
pub(super) fn error_page(status: StatusCode, code: &str, message: &str, json: bool) -> (&'static str, String) {
    if json {
        ("application/json", json!({"error": {"code": code, "message": message}}).to_string())
    } else {
        let esc = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
        ("text/html; charset=utf-8", format!("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{esc}.</p>\n<p><small>burrow</small></p></body></html>\n"))
    }
}

/// A new connection to the route's upstream, within [`CONNECT_TIMEOUT`].
pub(super) async fn connect_tcp(route: &Route) -> std::io::Result<TcpStream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((route.host.as_str(), route.port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::hyper_path::{is_upgrade, local_error};

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

    #[test]
    fn the_fast_paths_header_kinds_agree_with_the_hop_by_hop_table() {
        for name in HOP_BY_HOP.iter() {
            let k = kind(name.as_str());
            // Never forwarded as it is: dropped, read for the framing, or left to hyper.
            assert!(matches!(k, Kind::Hop | Kind::Connection | Kind::TransferEncoding | Kind::Decline), "{name}");
            assert!(matches!(
                kind(&name.as_str().to_ascii_uppercase()),
                Kind::Hop | Kind::Connection | Kind::TransferEncoding | Kind::Decline
            ));
        }
        for kept in ["host", "user-agent", "content-type", "x-connection", "tee", "accept"] {
            assert!(!matches!(kind(kept), Kind::Hop), "{kept}");
        }
    }

    #[test]
    fn both_engines_write_the_same_forwarded_values() {
        let ip = HeaderValue::from_static("127.0.0.1");
        for (client, xff, proto, host) in [
            (Some(&ip), Some(&b" 203.0.113.7 "[..]), true, true),
            (Some(&ip), Some(&b"  "[..]), false, false),
            (Some(&ip), None, false, true),
            (None, Some(&b"203.0.113.7"[..]), true, false),
            (None, None, false, true),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("app.example"));
            if let Some(v) = xff {
                h.insert(X_FORWARDED_FOR, HeaderValue::from_bytes(v).unwrap());
            }
            if proto {
                h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            }
            if host {
                h.insert(X_FORWARDED_HOST, HeaderValue::from_static("public.example"));
            }
            // The bytes engine: the incoming lines kept unless replaced, then the decided ones.
            let f = Forwarded::decide(client, xff, proto, host, Some(b"app.example"));
            let mut lines = Vec::new();
            for (k, v) in h.iter().filter(|(k, _)| k.as_str().starts_with("x-forwarded")) {
                if !f.replace {
                    lines.extend_from_slice(format!("{k}: ").as_bytes());
                    lines.extend_from_slice(v.as_bytes());
                    lines.extend_from_slice(b"\r\n");
                }
            }
            f.write(&mut lines);
            let mut from_bytes: Vec<(String, String)> = String::from_utf8(lines)
                .unwrap()
                .lines()
                .map(|l| l.split_once(": ").unwrap())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect();
            from_bytes.sort();
            // The header-map engine.
            forwarded_headers(&mut h, client);
            let mut from_map: Vec<(String, String)> = h
                .iter()
                .filter(|(k, _)| k.as_str().starts_with("x-forwarded"))
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            from_map.sort();
            assert_eq!(from_bytes, from_map, "{client:?} {xff:?} {proto} {host}");
        }
    }
}
