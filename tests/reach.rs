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
    let frps = Frps::start(FrpsOpts::default()).await;
    let (app, tcp, remote, proxy_port) = (http_upstream().await, tcp_upstream().await, free_port(), free_port());
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n{file_extra}\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {proxy_port}\nsubdomain = \"{sub}\"\n\
             [[proxies]]\nname = \"bulk\"\ntype = \"tcp\"\nlocalPort = {}\nremotePort = {remote}\n",
            frps.bind_port,
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
