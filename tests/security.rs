//! Security properties seen from outside: what the proxy and admin API listen on, request
//! smuggling attempts, size limits. (Secrets never appearing in output is checked for every test
//! by `Burrow`'s drop; TLS pin and CA mismatches are in `tls_verify.rs`; the frpc config file's
//! mode and removal in `fallback.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(15);

/// A raw HTTP upstream that records every byte it receives and answers each read with a 200.
struct RawUpstream {
    port: u16,
    conns: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<u8>>>,
}

async fn raw_upstream() -> RawUpstream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (conns, seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let (c, s) = (conns.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                    if sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    RawUpstream { port, conns, seen }
}

/// Sends raw bytes to the proxy; returns everything it answers until it closes (or 3 s pass).
async fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn spawn_proxy(upstream: u16, extra: &[(&str, &str)]) -> (Burrow, u16) {
    let port = free_port();
    let (addr, routes) = (format!("127.0.0.1:{port}"), format!("/=http://127.0.0.1:{upstream}"));
    let server = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("BURROW_SERVER_ADDR", server.as_str()),
        ("BURROW_SUBDOMAIN", "sec"),
        ("BURROW_PROXY_ADDR", addr.as_str()),
        ("BURROW_ROUTES", routes.as_str()),
    ];
    env.extend_from_slice(extra);
    (Burrow::spawn(&env), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_refused_before_any_upstream_byte() {
    let up = raw_upstream().await;
    let (b, port) = spawn_proxy(up.port, &[]);
    b.wait("proxy_ready", T).await;

    let attempts: &[(&str, &str)] = &[
        (
            "two different Content-Lengths",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcdGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("a Content-Length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd"),
        ("a signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd"),
        (
            "an obs-folded header",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
        (
            "an obs-folded Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "a space before the colon",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "a Transfer-Encoding that does not end in chunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "two Transfer-Encoding lines",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        ("a Transfer-Encoding list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("an unknown Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ];
    for (what, req) in attempts {
        let answer = raw(port, req.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: answered {answer:?}");
        assert!(!answer.contains("ok"), "{what}: reached the upstream: {answer:?}");
    }
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        0,
        "upstream saw: {:?}",
        String::from_utf8_lossy(&up.seen.lock().unwrap())
    );

    // hyper resolves these two itself (chunked wins; equal lengths merge); the proxy's framing
    // guard sees the raw head and refuses them like the rest.
    for (what, req) in [
        ("CL then TE", "POST /outer HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("TE then CL", "POST /outer HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("two equal Content-Lengths", "POST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"),
        ("the same, as the second request", "GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST /dup HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"),
    ] {
        let answer = raw(port, req.as_bytes()).await;
        assert!(answer.contains("HTTP/1.1 400"), "{what}: answered {answer:?}");
        let seen = String::from_utf8_lossy(&up.seen.lock().unwrap()).to_ascii_lowercase();
        assert!(!seen.contains("/smuggled") && !seen.contains("/outer") && !seen.contains("/dup"), "{what}: reached the upstream: {seen:?}");
    }
    up.seen.lock().unwrap().clear();

    // A well-formed chunked POST still goes through, re-framed by the proxy.
    let answer = raw(port, b"POST /fine HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let seen = String::from_utf8_lossy(&up.seen.lock().unwrap()).into_owned();
    assert!(seen.starts_with("POST /fine HTTP/1.1\r\n"), "{seen:?}");
    assert_eq!(seen.matches("HTTP/1.1").count(), 1, "exactly one request reached the upstream: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_on_the_request_head() {
    let up = raw_upstream().await;
    let (b, port) = spawn_proxy(up.port, &[]);
    b.wait("proxy_ready", T).await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20 * 1024));
    assert!(raw(port, long_target.as_bytes()).await.starts_with("HTTP/1.1 414"));
    let many = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    let answer = raw(port, format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "200 headers: {answer:?}");
    assert_eq!(up.conns.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_loopback_unless_told_and_then_warn() {
    let up = raw_upstream().await;
    // The proxy may be told 0.0.0.0, with a warning; the admin API never listens beyond loopback.
    let admin = format!("0.0.0.0:{}", free_port());
    let proxy_addr = format!("0.0.0.0:{}", free_port());
    let (mut b, _) = spawn_proxy(up.port, &[("BURROW_ADMIN_ADDR", &admin)]);
    assert_eq!(b.wait_exit(T).await, 2);
    let err = b.wait("error", T).await;
    assert_eq!(err["code"], "config_invalid");
    assert!(err["message"].as_str().unwrap().contains("BURROW_ADMIN_ADDR"), "{err}");
    assert!(err["message"].as_str().unwrap().contains("loopback only"), "{err}");
    let (b, _) = spawn_proxy(up.port, &[("BURROW_PROXY_ADDR", &proxy_addr)]);
    b.wait("proxy_ready", T).await;
    let w = b.wait("warning", T).await;
    assert_eq!(w["code"], "proxy_not_loopback", "{w}");

    // Not told: loopback, no warning.
    let admin = format!("127.0.0.1:{}", free_port());
    let (b, port) = spawn_proxy(up.port, &[("BURROW_ADMIN_ADDR", &admin)]);
    let ready = b.wait("proxy_ready", T).await;
    assert_eq!(ready["addr"], format!("127.0.0.1:{port}"));
    b.wait("admin_ready", T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.events().iter().any(|e| e["code"].as_str().is_some_and(|c| c.ends_with("not_loopback"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_tunnels_cuts_open_websockets() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // Without tcp_mux a WebSocket has a work connection of its own, which outlives the session.
    let frps = Frps::start(FrpsOpts { tcp_mux: false, ..Default::default() }).await;
    let app = app_upstream("ws").await;
    let (proxy, routes) = (format!("127.0.0.1:{}", free_port()), format!("/=http://{app}"));
    let server = frps.addr();
    let mut b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", server.as_str()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "shared"),
        ("BURROW_TCP_MUX", "off"),
        ("BURROW_PROXY_ADDR", proxy.as_str()),
        ("BURROW_ROUTES", routes.as_str()),
    ]);
    b.wait("tunnel_up", T).await;
    let host = format!("shared.{SUBDOMAIN_HOST}");
    vhost_get_ok(frps.vhost_port, &host, "/", T).await;
    let stream = TcpStream::connect(("127.0.0.1", frps.vhost_port)).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(ws_request(&host, "/socket"), stream).await.unwrap();
    ws.send(Message::Text("before".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("ws:before".into()));

    // The user stops sharing: the open WebSocket must not go on reaching the app.
    b.send(r#"{"cmd":"stop"}"#).await;
    b.wait("tunnel_down", T).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = ws.send(Message::Text("after".into())).await;
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(Message::Text(t))) if t == "ws:after" => return false,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "the WebSocket still reached the app after stop");
}
