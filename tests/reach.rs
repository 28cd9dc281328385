//! Reaching frps through real proxies (tinyproxy: HTTP CONNECT; danted: SOCKS5), with and without
//! credentials, set explicitly, in an frpc file or by the environment; and how each failure is told.

use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(20);
/// Bytes each way through the tcp tunnel.
const BULK: u64 = 16 << 20;

/// frps with an http tunnel (through the in-process proxy) and a tcp tunnel, for a burrow that
/// reaches frps as `env` says.
struct Setup {
    frps: Frps,
    burrow: Burrow,
    remote: u16,
    host: String,
    _dir: tempdir::TempDir,
}

async fn setup(sub: &str, file_extra: &str, env: &[(&str, &str)]) -> Setup {
    setup_on(Frps::start(FrpsOpts::default()).await, sub, file_extra, env).await
}

async fn setup_on(frps: Frps, sub: &str, file_extra: &str, env: &[(&str, &str)]) -> Setup {
    let port = frps.bind_port;
    setup_at(frps, port, sub, file_extra, env).await
}

/// As [`setup_on`], with burrow's `serverPort` at `server_port` (a server in front of frps).
async fn setup_at(frps: Frps, server_port: u16, sub: &str, file_extra: &str, env: &[(&str, &str)]) -> Setup {
    let (app, tcp, remote, proxy_port) = (http_upstream().await, tcp_upstream().await, free_port(), free_port());
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n{file_extra}\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {proxy_port}\nsubdomain = \"{sub}\"\n\
             [[proxies]]\nname = \"bulk\"\ntype = \"tcp\"\nlocalPort = {}\nremotePort = {remote}\n",
            server_port,
            tcp.port()
        ),
    );
    let (cfg, proxy_addr, routes) =
        (cfg.display().to_string(), format!("127.0.0.1:{proxy_port}"), format!("/=http://{}", app.addr));
    let mut all = vec![
        ("BURROW_CONFIG", cfg.as_str()),
        ("BURROW_PROXY_ADDR", proxy_addr.as_str()),
        ("BURROW_ROUTES", routes.as_str()),
    ];
    all.extend_from_slice(env);
    let burrow = Burrow::spawn(&all);
    Setup { frps, burrow, remote, host: format!("{sub}.{SUBDOMAIN_HOST}"), _dir: dir }
}

/// Both tunnels work: a request through the http one, `BULK` bytes each way through the tcp one.
async fn traffic(s: &Setup) {
    assert_eq!(vhost_get_ok(s.frps.vhost_port, &s.host, "/through", T).await, "hello /through");
    assert_eq!(tcp_download(s.remote, BULK).await.unwrap(), (BULK, pattern_sha256(BULK, BULK)), "download");
    assert!(tcp_upload(s.remote, 3, BULK).await.unwrap(), "upload's SHA-256 differs");
}

fn proxy_url(scheme: &str, port: u16, auth: bool) -> String {
    let creds = if auth { format!("{PROXY_USER}:{PROXY_PASS}@") } else { String::new() };
    format!("{scheme}://{creds}127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_tinyproxy_with_and_without_credentials() {
    for auth in [false, true] {
        let proxy = tinyproxy(auth).await;
        let url = proxy_url("http", proxy.port, auth);
        let s = setup("viahttp", "", &[("BURROW_SERVER_PROXY_URL", &url)]).await;
        let c = s.burrow.wait("connected", T).await;
        assert_eq!(c["via"], format!("http://127.0.0.1:{}", proxy.port), "{c}");
        s.burrow.wait_nth("tunnel_up", 1, T).await;
        traffic(&s).await;
        // The proxy carried it: its log has the CONNECT to frps.
        let log = proxy.log();
        assert!(log.contains(&format!("CONNECT 127.0.0.1:{}", s.frps.bind_port)), "{log}");
        s.burrow.assert_no_secret(&[PROXY_PASS, TOKEN]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_danted_with_and_without_credentials() {
    for (scheme, auth) in [("socks5", false), ("socks5h", true)] {
        let proxy = danted(auth).await;
        let url = proxy_url(scheme, proxy.port, auth);
        // Set in the frpc file this time (transport.proxyURL).
        let s = setup("viasocks", &format!("transport.proxyURL = \"{url}\""), &[]).await;
        let c = s.burrow.wait("connected", T).await;
        assert_eq!(c["via"], format!("{scheme}://127.0.0.1:{}", proxy.port), "{c}");
        s.burrow.wait_nth("tunnel_up", 1, T).await;
        traffic(&s).await;
        let log = proxy.log();
        assert!(log.contains(&format!("127.0.0.1.{}", s.frps.bind_port)), "danted's log names frps: {log}");
        s.burrow.assert_no_secret(&[PROXY_PASS, TOKEN]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_proxy_applies_unless_no_proxy_names_frps() {
    let proxy = tinyproxy(false).await;
    let url = proxy_url("http", proxy.port, false);
    let s = setup("viaenv", "", &[("HTTPS_PROXY", &url)]).await;
    let c = s.burrow.wait("connected", T).await;
    assert_eq!(c["via"], format!("http://127.0.0.1:{}", proxy.port), "{c}");
    // NO_PROXY names frps: straight there, no `via`.
    let s = setup("noproxy", "", &[("HTTPS_PROXY", &url), ("NO_PROXY", "localhost,127.0.0.1")]).await;
    let c = s.burrow.wait("connected", T).await;
    assert!(c.get("via").is_none(), "{c}");
    // BURROW_SERVER_PROXY_URL=off: the environment's proxy is not used either.
    let s = setup("off", "", &[("ALL_PROXY", &url), ("BURROW_SERVER_PROXY_URL", "off")]).await;
    let c = s.burrow.wait("connected", T).await;
    assert!(c.get("via").is_none(), "{c}");
    s.burrow.wait("tunnel_up", T).await;
    assert_eq!(vhost_get_ok(s.frps.vhost_port, &s.host, "/direct", T).await, "hello /direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_fatal_proxy_failed_exit_3() {
    let http = tinyproxy(true).await;
    let socks = danted(true).await;
    for url in [
        format!("http://{PROXY_USER}:wrong-pass@127.0.0.1:{}", http.port),
        format!("http://127.0.0.1:{}", http.port),
        format!("socks5://{PROXY_USER}:wrong-pass@127.0.0.1:{}", socks.port),
    ] {
        let mut s = setup("denied", "", &[("BURROW_SERVER_PROXY_URL", &url)]).await;
        assert_eq!(s.burrow.wait_exit(T).await, 3, "{url}");
        let err = s.burrow.events().into_iter().find(|e| e["event"] == "error").expect("an error");
        assert_eq!((err["code"].as_str(), err["fatal"].as_bool()), (Some("proxy_failed"), Some(true)), "{err}");
        assert!(err["hint"].as_str().unwrap().contains("BURROW_SERVER_PROXY_URL"), "{err}");
        assert_eq!(s.burrow.count("fallback"), 0);
        s.burrow.assert_no_secret(&["wrong-pass", TOKEN]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_down_is_retried_and_never_a_fallback() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let s = setup("later", "", &[("BURROW_SERVER_PROXY_URL", &url)]).await;
    let err = s.burrow.wait("error", T).await;
    assert_eq!((err["code"].as_str(), err["fatal"].as_bool()), (Some("proxy_failed"), Some(false)), "{err}");
    assert!(err["message"].as_str().unwrap().contains(&url), "names the proxy: {err}");
    s.burrow.wait_nth("reconnecting", 3, T).await;
    assert_eq!(s.burrow.count("fallback"), 0, "auto mode does not fall back on a proxy failure");
    // The proxy comes up: burrow connects through it.
    let _proxy = tinyproxy_on(port, false).await;
    let c = s.burrow.wait("connected", Duration::from_secs(40)).await;
    assert_eq!(c["via"], url, "{c}");
}

/// The provisioning API is called through the same proxy as frps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisioning_api_goes_through_the_proxy_too() {
    let proxy = tinyproxy(true).await;
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    let api = provisioning_api().await;
    api.push(201, reservation_json("res-px", frps.bind_port, TOKEN, "viaapi", 60));
    let (url, routes) = (proxy_url("http", proxy.port, true), format!("/=http://{app}"));
    let b = Burrow::spawn(&[
        ("BURROW_API_URL", api.url.as_str()),
        ("BURROW_API_TOKEN", "api-token-through-proxy"),
        ("BURROW_USER_ID", "u"),
        ("BURROW_PROJECT_ID", "p"),
        ("BURROW_ROUTES", routes.as_str()),
        ("ALL_PROXY", url.as_str()),
    ]);
    b.wait("reserved", T).await;
    let c = b.wait("connected", T).await;
    assert_eq!(c["via"], format!("http://127.0.0.1:{}", proxy.port), "{c}");
    let log = proxy.log();
    assert!(log.contains(&format!("POST {}/v1/reservations", api.url)), "the API call went through the proxy: {log}");
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{}", frps.bind_port)), "{log}");
    b.assert_no_secret(&[PROXY_PASS, "api-token-through-proxy"]);
}

/// A "proxy" that reads the request and answers `reply`, then closes.
async fn hostile_proxy(reply: &'static [u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                if reply.starts_with(&[5, 0]) {
                    // SOCKS5: the method answer, then read the CONNECT request before the reply.
                    let _ = s.write_all(&reply[..2]).await;
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(&reply[2..]).await;
                } else {
                    let _ = s.write_all(reply).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_proxy_answers_are_named_proxy_failed_and_retried() {
    static HUGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let huge: &'static [u8] = HUGE.get_or_init(|| [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 64 * 1024]].concat());
    for (scheme, reply, says) in [
        ("http", &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..], "is not HTTP"),
        ("http", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", "closed the connection inside its answer"),
        ("http", b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "502 Bad Gateway"),
        ("http", huge, "no end of head within 16384 bytes"),
        // SOCKS5: no authentication, then a success reply with an address type that does not exist.
        ("socks5", &[5, 0, 5, 0, 0, 9, 1, 2, 3, 4, 0, 80], "SOCKS5 answer is invalid"),
        ("socks5", &[5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0], "refused SOCKS5 CONNECT"),
    ] {
        let port = hostile_proxy(reply).await;
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut s = setup("hostile", "", &[("BURROW_SERVER_PROXY_URL", &url)]).await;
        let err = s.burrow.wait("error", T).await;
        assert_eq!((err["code"].as_str(), err["fatal"].as_bool()), (Some("proxy_failed"), Some(false)), "{err}");
        assert!(err["message"].as_str().unwrap().contains(says), "{says}: {err}");
        s.burrow.wait_nth("reconnecting", 1, T).await;
        assert_eq!(s.burrow.count("fallback") + s.burrow.count("connected"), 0);
        assert_eq!(s.burrow.close_stdin_and_wait(Duration::from_secs(5)).await, 0, "clean exit, no panic");
        assert!(!s.burrow.output().contains("panicked"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_killed_mid_session_and_back_brings_the_tunnels_back() {
    let port = free_port();
    let mut proxy = tinyproxy_on(port, false).await;
    let url = proxy_url("http", port, false);
    let s = setup("flaky", "", &[("BURROW_SERVER_PROXY_URL", &url)]).await;
    s.burrow.wait_nth("tunnel_up", 1, T).await;
    traffic(&s).await;
    proxy.kill().await;
    s.burrow.wait("tunnel_down", T).await;
    let _back = tinyproxy_on(port, false).await;
    s.burrow.wait_nth("tunnel_up", 3, Duration::from_secs(40)).await;
    assert_eq!(s.burrow.count("connected"), 2);
    traffic(&s).await;
}

/// `websocket` straight to frps: the upgrade on `/~!frp`, TLS and yamux inside, against frps that
/// sends text frames (0.65) and binary frames (0.70); without yamux; wire v2 inside; through an
/// HTTP proxy; and run by frpc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::type_complexity)]
async fn websocket_to_frps_of_each_frame_kind_and_through_a_proxy() {
    let proxy = tinyproxy(false).await;
    let via = proxy_url("http", proxy.port, false);
    let cases: [(&str, bool, &[(&str, &str)]); 6] = [
        ("0.65.0", true, &[]),
        ("0.70.1", true, &[]),
        ("0.70.1", false, &[]),
        ("0.70.1", true, &[("BURROW_WIRE_PROTOCOL", "v2")]),
        ("0.70.1", true, &[("BURROW_SERVER_PROXY_URL", &via)]),
        ("0.70.1", true, &[("BURROW_MODE", "frpc")]),
    ];
    for (version, mux, extra) in cases {
        let frps = Frps::start(FrpsOpts { version: Some(version), tcp_mux: mux, ..Default::default() }).await;
        let mut env = vec![("BURROW_TRANSPORT_PROTOCOL", "websocket")];
        env.extend_from_slice(extra);
        let s = setup_on(frps, "overws", &format!("transport.tcpMux = {mux}"), &env).await;
        let c = s.burrow.wait("connected", T).await;
        let want = if mux { "ws+yamux" } else { "ws" };
        assert_eq!(c["transport"].as_str(), Some(want), "{extra:?}: {c}");
        let (mode, wire) = (env_of(&env, "BURROW_MODE", "native"), env_of(&env, "BURROW_WIRE_PROTOCOL", "v1"));
        assert_eq!((c["mode"].as_str(), c["wire"].as_str()), (Some(mode), Some(wire)), "{c}");
        if mode == "native" {
            assert_eq!(c["server_version"].as_str(), Some(version), "{c}");
        }
        assert_eq!(c.get("via").is_some(), !env_of(&env, "BURROW_SERVER_PROXY_URL", "").is_empty(), "{c}");
        s.burrow.wait_nth("tunnel_up", 1, T).await;
        traffic(&s).await;
    }
}

fn env_of<'a>(env: &[(&str, &'a str)], name: &str, default: &'a str) -> &'a str {
    env.iter().find(|(k, _)| *k == name).map_or(default, |(_, v)| v)
}

/// frps' websocket behind nginx terminating TLS, verified with the test's CA.
fn wss_file(pki: &Pki) -> String {
    format!(
        "transport.protocol = \"wss\"\ntransport.tls.serverName = \"{CERT_NAME}\"\ntransport.tls.trustedCaFile = \"{}\"",
        pki.ca_pem.display()
    )
}

/// `wss` through nginx terminating TLS (the 443 setup an operator uses), in front of frps that
/// sends text frames (0.65) and binary frames (0.70); and through tinyproxy (CONNECT, then TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_nginx_and_through_a_proxy() {
    let pki = Pki::new();
    let proxy = tinyproxy(false).await;
    let via = proxy_url("http", proxy.port, false);
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("0.65.0", &[]),
        ("0.70.1", &[]),
        ("0.70.1", &[("BURROW_SERVER_PROXY_URL", &via)]),
        ("0.70.1", &[("BURROW_MODE", "frpc")]),
    ];
    for (version, env) in cases {
        let through = !env_of(env, "BURROW_SERVER_PROXY_URL", "").is_empty();
        let frps = Frps::start(FrpsOpts { version: Some(version), ..Default::default() }).await;
        let nginx = nginx_wss(&pki, frps.bind_port).await;
        let mut s = setup_at(frps, nginx.port, "overwss", &wss_file(&pki), env).await;
        let c = s.burrow.wait("connected", T).await;
        assert_eq!(c["transport"].as_str(), Some("wss+yamux"), "{c}");
        assert_eq!(c["mode"].as_str(), Some(env_of(env, "BURROW_MODE", "native")), "{c}");
        if c["mode"] == "native" {
            assert_eq!(c["server_version"].as_str(), Some(version), "{c}");
        }
        assert_eq!(c.get("via").is_some(), through, "{c}");
        s.burrow.wait_nth("tunnel_up", 1, T).await;
        traffic(&s).await;
        assert!(
            !s.burrow.events().iter().any(|e| e["code"] == "tls_unverified"),
            "the front server's certificate is verified: no tls_unverified"
        );
        // nginx logs a websocket when it ends.
        assert_eq!(s.burrow.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
        let carried = || nginx.log().contains("\"GET /~!frp HTTP/1.1\" 101");
        assert!(wait_until(carried, Duration::from_secs(5)).await, "nginx carried the websocket: {}", nginx.log());
        if through {
            let log = proxy.log();
            assert!(log.contains(&format!("CONNECT 127.0.0.1:{}", nginx.port)), "{log}");
        }
    }
}

/// nginx restarted under a wss session: the tunnels go down, come back on the same port, and carry
/// whole transfers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_restarted_under_wss_brings_the_tunnels_back() {
    let pki = Pki::new();
    let frps = Frps::start(FrpsOpts::default()).await;
    let (port, frps_port) = (free_port(), frps.bind_port);
    let mut nginx = nginx_wss_on(port, &pki, frps_port).await;
    let s = setup_at(frps, port, "wssflaky", &wss_file(&pki), &[]).await;
    s.burrow.wait_nth("tunnel_up", 1, T).await;
    traffic(&s).await;
    nginx.kill().await;
    s.burrow.wait("tunnel_down", T).await;
    let _back = nginx_wss_on(port, &pki, frps_port).await;
    s.burrow.wait_nth("tunnel_up", 3, Duration::from_secs(40)).await;
    assert_eq!(s.burrow.count("connected"), 2);
    traffic(&s).await;
}

/// A websocket "frps" that takes the upgrade and then misbehaves as `kind` says, or answers the
/// upgrade with a plain 200.
async fn hostile_websocket(kind: &'static str) -> u16 {
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    use tokio_tungstenite::tungstenite::Message;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if kind == "200" {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                let _ = match kind {
                    "close" => {
                        let frame = CloseFrame { code: CloseCode::Policy, reason: "go away".into() };
                        ws.send(Message::Close(Some(frame))).await
                    }
                    // 4 MiB in one frame, beyond what burrow takes in one message.
                    _ => ws.send(Message::Binary(vec![0x17; 4 << 20])).await,
                };
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_websocket_servers_are_named_and_retried() {
    for (kind, says) in [
        ("200", "answered 200 OK instead of 101"),
        ("close", "closed the connection with code 1008 (go away)"),
        ("huge", "Message too long"),
    ] {
        let port = hostile_websocket(kind).await;
        let addr = format!("127.0.0.1:{port}");
        let mut b = Burrow::spawn(&[
            ("BURROW_SERVER_ADDR", addr.as_str()),
            ("BURROW_SERVER_TOKEN", TOKEN),
            ("BURROW_SUBDOMAIN", "hostilews"),
            ("BURROW_TRANSPORT_PROTOCOL", "websocket"),
            ("BURROW_TLS", "off"),
            ("BURROW_ROUTES", "/=http://127.0.0.1:9"),
        ]);
        let err = b.wait("error", T).await;
        assert!(err["message"].as_str().unwrap().contains(says), "{kind}: {err}");
        assert_eq!(err["fatal"], false, "{err}");
        b.wait_nth("reconnecting", 2, T).await;
        assert_eq!(b.count("connected") + b.count("fallback"), 0);
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0, "clean exit, no panic");
        assert!(!b.output().contains("panicked"));
    }
}
