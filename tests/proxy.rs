//! The in-process reverse proxy with real upstream HTTP and WebSocket servers on loopback.

use std::time::{Duration, Instant};

use crate::util::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(15);

struct Stack {
    burrow: Burrow,
    port: u16,
    backend: std::net::SocketAddr,
    vibe: std::net::SocketAddr,
    frontend: std::net::SocketAddr,
}

/// burrow with the app's three-route table over three real upstreams; no frps needed (the
/// client retries in the background, the proxy serves regardless).
async fn stack(extra_routes: &str) -> Stack {
    stack_with(extra_routes, &[]).await
}

async fn stack_with(extra_routes: &str, extra_env: &[(&str, &str)]) -> Stack {
    let (backend, vibe, frontend) =
        (app_upstream("backend").await, app_upstream("vibe").await, app_upstream("frontend").await);
    let port = free_port();
    let routes = format!("/api/alt=http://{backend};name=backend,/api=http://{vibe};name=vibe app,/=http://{frontend};name=frontend{extra_routes}");
    let server = format!("127.0.0.1:{}", free_port());
    let proxy_addr = format!("127.0.0.1:{port}");
    let mut env = vec![
        ("BURROW_SERVER_ADDR", server.as_str()),
        ("BURROW_SUBDOMAIN", "app"),
        ("BURROW_PROXY_ADDR", proxy_addr.as_str()),
        ("BURROW_ROUTES", routes.as_str()),
    ];
    env.extend_from_slice(extra_env);
    let b = Burrow::spawn(&env);
    let ready = b.wait("proxy_ready", T).await;
    assert_eq!(ready["addr"], format!("127.0.0.1:{port}"));
    Stack { burrow: b, port, backend, vibe, frontend }
}

async fn send(port: u16, req: hyper::Request<Full<Bytes>>) -> (u16, hyper::HeaderMap, Bytes) {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn get_json(port: u16, path: &str) -> (u16, Value) {
    let req = hyper::Request::get(path).header("host", "app.example").body(Full::new(Bytes::new())).unwrap();
    let (status, _, body) = send(port, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_headers() {
    let s = stack(";host=upstream,/rewrite=http://127.0.0.1:1;name=x").await;
    for (path, name) in [
        ("/api/alt", "backend"),
        ("/api/alt/x?y=1", "backend"),
        ("/api/alternative", "vibe"),
        ("/api", "vibe"),
        ("/api/v1/chat?q=a%20b", "vibe"),
        ("/apix", "frontend"),
        ("/", "frontend"),
        ("//api/alt/merged", "backend"),
        ("/api/%61lt/decoded", "backend"),
    ] {
        let (status, v) = get_json(s.port, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(v["name"], name, "{path}");
        assert_eq!(v["uri"], path, "path and query forwarded unchanged");
    }
    // Method, body, Host and the forwarding headers.
    let req = hyper::Request::builder()
        .method("PUT")
        .uri("/api/alt/items/7?force=1")
        .header("host", "public.example:8443")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must-not-pass")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
        .unwrap();
    let (status, _, body) = send(s.port, req).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["method"], "PUT");
    let h = &v["headers"];
    assert_eq!(h["host"], "public.example:8443", "Host preserved by default");
    assert!(h.get("x-hop").is_none() && h.get("proxy-authorization").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "public.example:8443");
    assert_eq!(h["content-length"], "7");
    // A route with ;host=upstream sends the upstream's authority.
    let req = hyper::Request::get("/x").header("host", "public.example").body(Full::new(Bytes::new())).unwrap();
    let (_, _, body) = send(s.port, req).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["name"], "frontend");
    assert_eq!(v["headers"]["host"], s.frontend.to_string());
    let _ = (s.backend, s.vibe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_encoded_slashes_are_refused() {
    let s = stack("").await;
    for path in ["/api/../api/alt/x", "/api/%2e%2e/alt", "/api%2Falt/x", "/api/./alt", "/x/%2E%2E/api/alt"] {
        // Raw request line: clients normalise these paths themselves.
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
        assert!(out.contains("bad_path"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_every_route_with_close_code() {
    let s = stack("").await;
    for (path, name) in [("/api/alt/ws", "backend"), ("/api/ws", "vibe"), ("/ws", "frontend")] {
        let (mut ws, resp) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}{path}", s.port)).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::Text("hi".into())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text(format!("{name}:hi")));
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        ws.send(Message::Binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(big));
        ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Library(4001), reason: "bye".into() })))
            .await
            .unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!((f.code, f.reason.as_ref()), (CloseCode::Library(4001), "bye")),
            other => panic!("expected the close echoed, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    let s = stack("").await;
    let c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(c)).await.unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(hyper::Request::get("/sse").header("host", "a").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut text = String::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&d).unwrap());
            while let Some(i) = text.find("\n\n") {
                seen.push((text[..i].to_string(), start.elapsed()));
                text.drain(..i + 2);
            }
        }
    }
    assert_eq!(
        seen.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        ["data: 0", "data: 1", "data: 2", "data: 3", "data: 4"]
    );
    // Written 200 ms apart: delivered as written, not all at the end.
    assert!(seen[4].1 - seen[0].1 >= Duration::from_millis(600), "{seen:?}");
    for w in seen.windows(2) {
        assert!(w[1].1 - w[0].1 >= Duration::from_millis(100), "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_and_download_stream_in_bounded_memory() {
    let s = stack("").await;
    let pid = s.burrow.child.id().unwrap();
    const N: u64 = 256 << 20;
    let base = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let p2 = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            p2.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // Upload: 256 MiB, chunked, generated as it is sent.
    let mut want = Sha256::new();
    let mut g = Pattern::new(3);
    let mut chunks = Vec::new();
    let mut left = N;
    while left > 0 {
        let k = left.min(1 << 20) as usize;
        let mut buf = vec![0u8; k];
        g.fill(&mut buf);
        want.update(&buf);
        chunks.push(buf);
        left -= k as u64;
    }
    let want_hex: String = want.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let stream = futures_util::stream::iter(
        chunks.into_iter().map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c)))),
    );
    let c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(c)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/api/alt/upload").header("host", "a").body(StreamBody::new(stream)).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), tx.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "{}", s.burrow.output());
    let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["bytes"], N);
    assert_eq!(v["sha256"], want_hex);

    // Download: 256 MiB streamed back, hashed as it arrives.
    let c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(c)).await.unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            hyper::Request::get(format!("/download?n={N}")).header("host", "a").body(Full::new(Bytes::new())).unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (mut got, mut total) = (Sha256::new(), 0u64);
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            total += d.len() as u64;
            got.update(&d);
        }
    }
    assert_eq!(total, N);
    let mut expect = Sha256::new();
    let mut g = Pattern::new(N);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = N;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..k]);
        expect.update(&buf[..k]);
        left -= k as u64;
    }
    assert_eq!(got.finalize(), expect.finalize());
    sampler.abort();
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(base);
    assert!(growth < 32 * 1024, "burrow's RSS grew by {growth} KiB moving 2 × 256 MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_is_an_immediate_502_naming_it() {
    let dead = free_port();
    let port = free_port();
    let b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &format!("127.0.0.1:{}", free_port())),
        ("BURROW_SUBDOMAIN", "app"),
        ("BURROW_PROXY_ADDR", &format!("127.0.0.1:{port}")),
        ("BURROW_ROUTES", &format!("/=http://127.0.0.1:{dead};name=frontend")),
    ]);
    b.wait("proxy_ready", T).await;
    let start = Instant::now();
    let req = hyper::Request::get("/")
        .header("host", "a")
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(port, req).await;
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!(status, 502);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(&format!("frontend at 127.0.0.1:{dead} is not answering")), "{text}");
    let req = hyper::Request::get("/x")
        .header("host", "a")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(port, req).await;
    assert_eq!(status, 502);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["message"], format!("frontend at 127.0.0.1:{dead} is not answering"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_keep_alive_requests() {
    let s = stack("").await;
    let port = s.port;
    // 1,000 keep-alive connections with a request in flight on each at once, then a second
    // request on each connection.
    let tasks: Vec<_> = (0..1000)
        .map(|c| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let (mut tx, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                for r in 0..2 {
                    let path = if r % 2 == 0 { format!("/api/alt/c{c}/r{r}") } else { format!("/page/c{c}/r{r}") };
                    tx.ready().await.unwrap();
                    let resp = tx
                        .send_request(
                            hyper::Request::get(&path).header("host", "a").body(Full::new(Bytes::new())).unwrap(),
                        )
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let v: Value =
                        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
                    assert_eq!(v["uri"], path);
                    assert_eq!(v["name"], if r % 2 == 0 { "backend" } else { "frontend" });
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let s = stack("").await;
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let filler = "x".repeat(100 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {filler}\r\n\r\n");
    let _ = c.write_all(req.as_bytes()).await;
    let mut out = vec![0u8; 64];
    let n = c.read(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out[..n]).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&out[..n]));
    // The proxy still serves.
    assert_eq!(get_json(s.port, "/ok").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_end_to_end_through_frps_and_the_tunnel() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let vibe = app_upstream("vibe").await;
    let front = app_upstream("frontend").await;
    let b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &frps.addr()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "chat"),
        ("BURROW_PROXY_ADDR", &format!("127.0.0.1:{}", free_port())),
        ("BURROW_ROUTES", &format!("/api=http://{vibe},/=http://{front}")),
    ]);
    b.wait("tunnel_up", T).await;
    let host = format!("chat.{SUBDOMAIN_HOST}");
    // The default tunnel is served by the in-process proxy: routes apply to public traffic.
    let body = vhost_get_ok(frps.vhost_port, &host, "/api/v1/x", T).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "vibe");
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1", "frps' X-Forwarded-For is kept, not doubled");

    let stream = TcpStream::connect(("127.0.0.1", frps.vhost_port)).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(ws_request(&host, "/api/socket"), stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::Text(format!("m{i}"))).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text(format!("vibe:m{i}")));
    }
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_counters_in_the_status_event() {
    let dead = free_port();
    let mut s = stack(&format!(",/dead=http://127.0.0.1:{dead}")).await;
    for i in 0..3 {
        assert_eq!(get_json(s.port, &format!("/api/alt/{i}")).await.0, 200);
    }
    assert_eq!(get_json(s.port, "/dead/x").await.0, 502);
    let req = hyper::Request::post("/api/alt/upload")
        .header("host", "a")
        .body(Full::new(Bytes::from(vec![7u8; 1000])))
        .unwrap();
    assert_eq!(send(s.port, req).await.0, 200);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/api/ws", s.port)).await.unwrap();
    ws.send(Message::Text("x".into())).await.unwrap();
    ws.next().await.unwrap().unwrap();

    s.burrow.send(r#"{"cmd":"status"}"#).await;
    let st = s.burrow.wait("status", T).await;
    assert_eq!(st["mode"], "native");
    assert_eq!(st["tunnels"][0]["name"], "web");
    let route = |p: &str| st["proxy"].as_array().unwrap().iter().find(|r| r["prefix"] == p).unwrap().clone();
    let alt = route("/api/alt");
    assert_eq!(alt["requests"], 4);
    assert_eq!(alt["status"]["2xx"], 4);
    assert_eq!(alt["bytes_in"], 1000);
    assert!(alt["bytes_out"].as_u64().unwrap() > 100);
    let d = route("/dead");
    assert_eq!(
        (d["requests"].as_u64(), d["upstream_errors"].as_u64(), d["status"]["5xx"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    let api = route("/api");
    assert_eq!(api["websockets_open"], 1);
    assert_eq!(api["status"]["1xx"], 1);

    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.burrow.send(r#"{"cmd":"status"}"#).await;
    let st = s.burrow.wait_nth("status", 1, T).await;
    let api = st["proxy"].as_array().unwrap().iter().find(|r| r["prefix"] == "/api").unwrap().clone();
    assert_eq!(api["websockets_open"], 0);
    assert!(api["bytes_in"].as_u64().unwrap() > 0 && api["bytes_out"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_504_but_slow_upload_is_fine() {
    let s = stack_with("", &[("BURROW_UPSTREAM_TIMEOUT", "1")]).await;
    let start = Instant::now();
    let req = hyper::Request::get("/api/slow")
        .header("host", "a")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(s.port, req).await;
    assert_eq!(status, 504);
    assert!(start.elapsed() < Duration::from_millis(2500), "{:?}", start.elapsed());
    assert!(String::from_utf8_lossy(&body).contains("vibe app at"), "{}", String::from_utf8_lossy(&body));
    // An upload slower than the timeout: the timer starts when the body has been sent.
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 5 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![1u8; 1000]))), i + 1))
    });
    let c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(c)).await.unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(hyper::Request::post("/api/upload").header("host", "a").body(StreamBody::new(chunks)).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["bytes"], 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_address_in_use_exits_4() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let server = format!("127.0.0.1:{}", free_port());
    let addr = format!("127.0.0.1:{port}");
    let mut b =
        Burrow::spawn(&[("BURROW_SERVER_ADDR", &server), ("BURROW_SUBDOMAIN", "a"), ("BURROW_PROXY_ADDR", &addr)]);
    assert_eq!(b.wait_exit(T).await, 4);
    let err = b.events().into_iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(err["code"], "port_in_use");
    assert!(err["hint"].as_str().unwrap().contains("BURROW_PROXY_ADDR"));
    drop(taken);
    // Nor may a second burrow share a running burrow's proxy address.
    let first =
        Burrow::spawn(&[("BURROW_SERVER_ADDR", &server), ("BURROW_SUBDOMAIN", "a"), ("BURROW_PROXY_ADDR", &addr)]);
    first.wait("proxy_ready", T).await;
    let mut second =
        Burrow::spawn(&[("BURROW_SERVER_ADDR", &server), ("BURROW_SUBDOMAIN", "a"), ("BURROW_PROXY_ADDR", &addr)]);
    assert_eq!(second.wait_exit(T).await, 4);
}
