//! burrow as an Electron host sees it: stdin commands, lifetime, the admin API and the event
//! schema.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::util::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

async fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (code, _, body) = http_request(port, &format!("127.0.0.1:{port}"), method, path, headers).await;
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_commands_admin_api_and_every_event_type() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    let api = provisioning_api().await;
    *api.lease_secs.lock().unwrap() = 3;
    api.push(201, reservation_json("res-h", frps.bind_port, TOKEN, "host", 3));
    let admin_port = free_port();
    let routes = format!("/=http://{app}");
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let proxy_port = free_port();
    let proxy_addr = format!("127.0.0.1:{proxy_port}");
    let mut b = Burrow::spawn(&[
        ("BURROW_API_URL", &api.url),
        ("BURROW_API_TOKEN", "api-token-host-77"),
        ("BURROW_USER_ID", "u"),
        ("BURROW_PROJECT_ID", "p"),
        ("BURROW_ROUTES", &routes),
        ("BURROW_PROXY_ADDR", &proxy_addr),
        ("BURROW_ADMIN_ADDR", &admin_addr),
    ]);
    let ready = b.wait("admin_ready", T).await;
    assert_eq!(ready["url"], format!("http://{admin_addr}/"));
    let token = ready["token"].as_str().expect("a generated token is given").to_string();
    b.wait("tunnel_up", T).await;

    // Malformed lines are answered and change nothing: not JSON, unknown, no cmd, not UTF-8,
    // longer than the 64 KiB a command line may be.
    for bad in ["hello", "{\"cmd\":\"fly\"}", "{\"nocmd\":1}"] {
        b.send(bad).await;
    }
    b.send_bytes(b"\xff\xfe{\"cmd\":\"status\"}\n").await;
    b.send_bytes(&[b"{\"cmd\":\"".as_slice(), &[b'a'; 100_000], b"\"}\n"].concat()).await;
    let too_long = b.wait_nth("error", 4, T).await;
    assert!(too_long["message"].as_str().unwrap().contains("longer than 64 KiB"), "{too_long}");
    let not_utf8 = &b.events().into_iter().filter(|e| e["event"] == "error").collect::<Vec<_>>()[3];
    assert!(not_utf8["message"].as_str().unwrap().contains("not UTF-8"), "{not_utf8}");
    assert!(b.events().iter().filter(|e| e["event"] == "error").all(|e| e["fatal"] == false));
    b.send(r#"{"cmd":"status"}"#).await;
    let st = b.wait("status", T).await;
    assert_eq!((st["state"].as_str(), st["tunnels"][0]["state"].as_str()), (Some("connected"), Some("up")));
    assert_eq!(st["tunnels"][0]["url"], "https://host.public.example");

    // Admin API: the page needs no token; the API needs the right one; other origins are refused.
    let auth = format!("Bearer {token}");
    let (code, page) = http(admin_port, "GET", "/", &[]).await;
    assert_eq!(code, 200);
    assert!(page.contains("<title>burrow</title>"));
    assert_eq!(http(admin_port, "GET", "/api/status", &[]).await.0, 401);
    assert_eq!(
        http(admin_port, "GET", "/api/status", &[("authorization", "Bearer wrong-token-wrong-token")]).await.0,
        401
    );
    assert_eq!(
        http(admin_port, "GET", "/api/status", &[("authorization", &auth), ("origin", "https://evil.example")]).await.0,
        403
    );
    assert_eq!(
        http(admin_port, "POST", "/api/stop", &[("authorization", &auth), ("origin", "http://attacker.localhost:9")])
            .await
            .0,
        403
    );
    let (code, body) = http(
        admin_port,
        "GET",
        "/api/status",
        &[("authorization", &auth), ("origin", &format!("http://{admin_addr}"))],
    )
    .await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tunnels"][0]["name"], "web");

    // SSE: the current status first, then live events.
    let s = TcpStream::connect(("127.0.0.1", admin_port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/api/events")
        .header("host", &admin_addr)
        .header("authorization", &auth)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut sse = resp.into_body();
    let first = sse.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("data: {"), "{first:?}");

    // Stop through the admin API: tunnels down, the proxy keeps serving; start again.
    assert_eq!(http(admin_port, "POST", "/api/stop", &[("authorization", &auth)]).await.0, 202);
    b.wait("tunnel_down", T).await;
    let mut saw_down = false;
    while let Some(Ok(f)) = tokio::time::timeout(T, sse.frame()).await.unwrap() {
        if std::str::from_utf8(f.data_ref().unwrap()).unwrap().contains("\"tunnel_down\"") {
            saw_down = true;
            break;
        }
    }
    assert!(saw_down, "tunnel_down arrived over SSE");
    assert_eq!(http(proxy_port, "GET", "/still-here", &[]).await.0, 200, "the proxy stays up after stop");
    b.send(r#"{"cmd":"start"}"#).await;
    b.wait_nth("tunnel_up", 1, T).await;
    b.wait("renewed", T).await;

    // Wake from sleep: reconnect now.
    b.send(r#"{"cmd":"reconnect"}"#).await;
    let r = b.wait("reconnecting", T).await;
    assert_eq!(r["reason"], "reconnect requested");
    b.wait_nth("tunnel_up", 2, T).await;

    // End of stdin: graceful, quick, `stopped` last.
    let t0 = Instant::now();
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let evs = b.events();
    assert_eq!(evs.last().unwrap()["event"], "stopped");
    assert!(api.requests().iter().any(|r| r.0 == "DELETE"));

    // A second burrow for the remaining event types (fallback, error with fatal).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let mut c = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &format!("127.0.0.1:{port}")),
        ("BURROW_SUBDOMAIN", "x"),
        ("BURROW_TLS", "off"),
        ("BURROW_FRPC_PATH", "/nonexistent/frpc"),
    ]);
    assert_eq!(c.wait_exit(T).await, 1);
    let mut seen: BTreeSet<String> =
        evs.iter().chain(c.events().iter()).map(|e| e["event"].as_str().unwrap().to_string()).collect();
    seen.retain(|_| true);
    for want in [
        "starting",
        "proxy_ready",
        "admin_ready",
        "reserved",
        "renewed",
        "connected",
        "tunnel_up",
        "tunnel_down",
        "reconnecting",
        "fallback",
        "warning",
        "error",
        "status",
        "stopped",
    ] {
        assert!(seen.contains(want), "event {want} not observed; saw {seen:?}");
    }
    for e in evs.iter().chain(c.events().iter()) {
        validate_event(e).unwrap_or_else(|why| panic!("{why}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_transfer_exits_cleanly() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    let routes = format!("/=http://{app}");
    let mut b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &frps.addr()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "term"),
        ("BURROW_ROUTES", &routes),
    ]);
    b.wait("tunnel_up", T).await;
    // A long download through the tunnel, then SIGTERM in the middle of it.
    let host = format!("term.{SUBDOMAIN_HOST}");
    let vhost = frps.vhost_port;
    let dl = tokio::spawn(async move {
        let s = TcpStream::connect(("127.0.0.1", vhost)).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        let resp = tx
            .send_request(
                hyper::Request::get("/download?n=2000000000")
                    .header("host", host)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(Ok(f)) = body.frame().await {
            n += f.data_ref().map_or(0, |d| d.len() as u64);
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &b.child.id().unwrap().to_string()]).status().unwrap();
    assert_eq!(b.wait_exit(Duration::from_secs(5)).await, 0);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let evs = b.events();
    assert_eq!(evs.last().unwrap()["event"], "stopped");
    assert_eq!(evs.last().unwrap()["reason"], "signal");
    let moved = tokio::time::timeout(T, dl).await.unwrap().unwrap();
    assert!(moved > 0 && moved < 2_000_000_000, "the transfer was under way ({moved} bytes) and ended with burrow");
}
