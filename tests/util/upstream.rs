//! Local services on loopback: HTTP and TCP upstreams, the app server, deterministic byte patterns.

use super::*;

/// A local HTTP/1.1 server (hyper) answering `hello <path>`; counts accepted connections.
pub struct HttpUpstream {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicUsize>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
}

pub async fn http_upstream() -> HttpUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (c, o) = (conns.clone(), open.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                struct Dec(Arc<AtomicUsize>);
                impl Drop for Dec {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _dec = Dec(o);
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("hello {}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    HttpUpstream { addr, conns, open }
}

/// A local TCP service: `E` echoes until EOF; `U<n:u64>` reads n bytes and answers their SHA-256;
/// `D<n:u64>` sends n pseudo-random bytes (seeded by n) and closes.
pub async fn tcp_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut cmd = [0u8; 1];
                if s.read_exact(&mut cmd).await.is_err() {
                    return;
                }
                match cmd[0] {
                    b'E' => {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    }
                    b'U' => {
                        // A cut upload just ends: the client sees no digest and reports it.
                        let Ok(n) = s.read_u64().await else { return };
                        let mut h = <sha2::Sha256 as sha2::Digest>::new();
                        let mut left = n;
                        let mut buf = vec![0u8; 64 * 1024];
                        while left > 0 {
                            match s.read(&mut buf[..(left.min(65536) as usize)]).await {
                                Ok(k) if k > 0 => {
                                    sha2::Digest::update(&mut h, &buf[..k]);
                                    left -= k as u64;
                                }
                                _ => return,
                            }
                        }
                        let d = sha2::Digest::finalize(h);
                        let _ = s.write_all(&d).await;
                        let _ = s.shutdown().await;
                    }
                    b'D' => {
                        let Ok(n) = s.read_u64().await else { return };
                        let mut g = Pattern::new(n);
                        let mut left = n;
                        let mut buf = vec![0u8; 64 * 1024];
                        while left > 0 {
                            let k = left.min(buf.len() as u64) as usize;
                            g.fill(&mut buf[..k]);
                            if s.write_all(&buf[..k]).await.is_err() {
                                return;
                            }
                            left -= k as u64;
                        }
                        let _ = s.shutdown().await;
                    }
                    _ => {}
                }
            });
        }
    });
    addr
}

/// SHA-256 of the first `n` bytes of `Pattern::new(seed)`, computed in 64 KiB pieces.
pub fn pattern_sha256(seed: u64, n: u64) -> [u8; 32] {
    use sha2::Digest;
    let (mut g, mut h, mut buf, mut left) = (Pattern::new(seed), sha2::Sha256::new(), vec![0u8; 64 * 1024], n);
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..k]);
        h.update(&buf[..k]);
        left -= k as u64;
    }
    h.finalize().into()
}

/// Asks [`tcp_upstream`] (through whatever tunnel listens on `port`) for `n` bytes with `D`;
/// returns how many arrived before the end and their SHA-256. Compare with
/// `pattern_sha256(n, n)`: the service seeds its pattern with `n`.
pub async fn tcp_download(port: u16, n: u64) -> std::io::Result<(u64, [u8; 32])> {
    use sha2::Digest;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"D").await?;
    s.write_u64(n).await?;
    let (mut h, mut buf, mut got) = (sha2::Sha256::new(), vec![0u8; 64 * 1024], 0u64);
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            return Ok((got, h.finalize().into()));
        }
        h.update(&buf[..k]);
        got += k as u64;
    }
}

/// Sends `n` bytes of `Pattern::new(seed)` to [`tcp_upstream`] with `U`; true when the digest it
/// answers is that of what was sent.
pub async fn tcp_upload(port: u16, seed: u64, n: u64) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"U").await?;
    s.write_u64(n).await?;
    let (mut g, mut buf, mut left) = (Pattern::new(seed), vec![0u8; 64 * 1024], n);
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..k]);
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    let mut digest = [0u8; 32];
    s.read_exact(&mut digest).await?;
    Ok(digest == pattern_sha256(seed, n))
}

/// A WebSocket handshake request for `ws://{host}{path}`, to send with
/// `tokio_tungstenite::client_async` over a connection to frps' vhost port or the proxy.
pub fn ws_request(host: &str, path: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    tokio_tungstenite::tungstenite::handshake::client::Request::builder()
        .uri(format!("ws://{host}{path}"))
        .header("host", host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), cheap enough for hundreds of MiB.
pub struct Pattern(u64);
impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// Environment for one http tunnel `sub` through `frps` in `mode`, its proxy sending everything to
/// `upstream`.
pub fn tunnel_env(frps: &Frps, sub: &str, mode: &str, upstream: std::net::SocketAddr) -> Vec<(String, String)> {
    let mut env = vec![
        ("BURROW_SERVER_ADDR".to_string(), frps.addr()),
        ("BURROW_SERVER_TOKEN".into(), TOKEN.into()),
        ("BURROW_SUBDOMAIN".into(), sub.into()),
        ("BURROW_MODE".into(), mode.into()),
    ];
    env.extend(route_all_to(upstream));
    env
}

/// Environment that sends everything the in-process proxy gets to `upstream`.
pub fn route_all_to(upstream: std::net::SocketAddr) -> Vec<(String, String)> {
    vec![
        ("BURROW_PROXY_ADDR".into(), format!("127.0.0.1:{}", free_port())),
        ("BURROW_ROUTES".into(), format!("/=http://{upstream}")),
    ]
}

/// A local app server like the desktop app's: an HTTP echo (`{name, method, uri, headers}` as JSON),
/// `/sse` (5 server-sent events 200 ms apart), `POST /upload` (answers `{bytes, sha256}`),
/// `/download?n=N` (N pattern bytes, streamed), and WebSocket echo on any path (close codes echoed;
/// on `.../headers` the upgrade request's headers first).
pub async fn app_upstream(name: &'static str) -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::{combinators::BoxBody, StreamBody};
    use hyper::body::Frame;
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role, Message};

    type B = BoxBody<Bytes, std::convert::Infallible>;
    fn full(s: impl Into<Bytes>) -> B {
        Full::new(s.into()).boxed()
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        if req.headers().contains_key("sec-websocket-key") {
                            let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
                            // `.../headers`: the upgrade request's headers come first, as JSON.
                            let seen: serde_json::Map<String, Value> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or("").into())))
                                .collect();
                            let first = path.ends_with("/headers").then(|| Value::Object(seen).to_string());
                            let up = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let io = hyper_util::rt::TokioIo::new(up.await.unwrap());
                                let mut ws =
                                    tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                                if let Some(first) = first {
                                    ws.send(Message::Text(first)).await.unwrap();
                                }
                                while let Some(Ok(m)) = ws.next().await {
                                    match m {
                                        Message::Text(t) => {
                                            ws.send(Message::Text(format!("{name}:{t}"))).await.unwrap()
                                        }
                                        Message::Binary(b) => ws.send(Message::Binary(b)).await.unwrap(),
                                        // tungstenite answers a close with the same code itself; keep
                                        // polling so the answer is flushed.
                                        Message::Close(_) => {}
                                        _ => {}
                                    }
                                }
                            });
                            let resp = hyper::Response::builder()
                                .status(101)
                                .header("upgrade", "websocket")
                                .header("connection", "Upgrade")
                                .header("sec-websocket-accept", derive_accept_key(&key))
                                .body(full(""))
                                .unwrap();
                            return Ok::<_, std::convert::Infallible>(resp);
                        }
                        if path.ends_with("/sse") {
                            let stream = futures_util::stream::unfold(0u32, |i| async move {
                                if i == 5 {
                                    return None;
                                }
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                Some((
                                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(format!(
                                        "data: {i}\n\n"
                                    )))),
                                    i + 1,
                                ))
                            });
                            let resp = hyper::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(BodyExt::boxed(StreamBody::new(stream)))
                                .unwrap();
                            return Ok(resp);
                        }
                        if path.ends_with("/slow") {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            return Ok(hyper::Response::new(full("slow")));
                        }
                        if path.ends_with("/upload") {
                            let mut body = req.into_body();
                            let mut h = <sha2::Sha256 as sha2::Digest>::new();
                            let mut n = 0u64;
                            while let Some(f) = body.frame().await {
                                if let Ok(d) = f.unwrap().into_data() {
                                    n += d.len() as u64;
                                    sha2::Digest::update(&mut h, &d);
                                }
                            }
                            let hex: String = sha2::Digest::finalize(h).iter().map(|b| format!("{b:02x}")).collect();
                            return Ok(hyper::Response::new(full(
                                serde_json::json!({"bytes": n, "sha256": hex}).to_string(),
                            )));
                        }
                        if path.ends_with("/download") {
                            let n: u64 = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("n="))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            let stream =
                                futures_util::stream::unfold((Pattern::new(n), n), |(mut g, left)| async move {
                                    if left == 0 {
                                        return None;
                                    }
                                    let k = left.min(64 * 1024) as usize;
                                    let mut buf = vec![0u8; k];
                                    g.fill(&mut buf);
                                    Some((
                                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(buf))),
                                        (g, left - k as u64),
                                    ))
                                });
                            return Ok(hyper::Response::builder()
                                .header("content-length", n.to_string())
                                .body(BodyExt::boxed(StreamBody::new(stream)))
                                .unwrap());
                        }
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").to_string())))
                            .collect();
                        let body = serde_json::json!({"name": name, "method": req.method().as_str(), "uri": req.uri().to_string(), "headers": headers});
                        Ok(hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(full(body.to_string()))
                            .unwrap())
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}
