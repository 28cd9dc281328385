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
