//! Access control on the public URL (`BURROW_PUBLIC_ACCESS=protected`, share links, `;public=no`)
//! through real frps, with the native client and with the bundled frpc.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::*;

const T: Duration = Duration::from_secs(20);
const PASSWORD: &str = "pw-secret-access-4417";
const SHARE_KEY: &str = "share-key-secret-0c9d2e71-5b8a1f4e6d2c";
const ADMIN_TOKEN: &str = "admin-token-access-5521";

struct Protected {
    frps: Frps,
    burrow: Burrow,
    host: String,
    proxy_port: u16,
    admin_port: u16,
}

/// burrow in protected mode (basic auth `ann`, a share key) in front of the echo app, with
/// `/admin` closed to the public.
async fn protected(mode: &str, sub: &str) -> Protected {
    // `*.localhost` resolves, so the URL's own check can reach it.
    let frps = Frps::start(FrpsOpts { subdomain_host: "burrow.localhost", ..Default::default() }).await;
    protected_on(frps, mode, sub, &[]).await
}

/// [`protected`] on a given frps, with more environment.
async fn protected_on(frps: Frps, mode: &str, sub: &str, more: &[(&str, &str)]) -> Protected {
    let app = app_upstream("app").await;
    let routes = format!("/admin=http://{app};public=no,/=http://{app}");
    let (proxy_port, admin_port) = (free_port(), free_port());
    let (proxy_addr, admin_addr) = (format!("127.0.0.1:{proxy_port}"), format!("127.0.0.1:{admin_port}"));
    let auth = format!("ann:{PASSWORD}");
    let frpc = bundled_frpc().display().to_string();
    let burrow = Burrow::spawn(
        &[
            ("BURROW_FRPC_PATH", frpc.as_str()),
            ("BURROW_SERVER_ADDR", &frps.addr()),
            ("BURROW_SERVER_TOKEN", TOKEN),
            ("BURROW_SUBDOMAIN", sub),
            ("BURROW_MODE", mode),
            ("BURROW_ROUTES", &routes),
            ("BURROW_PROXY_ADDR", &proxy_addr),
            ("BURROW_ADMIN_ADDR", &admin_addr),
            ("BURROW_ADMIN_TOKEN", ADMIN_TOKEN),
            ("BURROW_PUBLIC_ACCESS", "protected"),
            ("BURROW_PUBLIC_AUTH", &auth),
            ("BURROW_SHARE_KEY", SHARE_KEY),
        ]
        .into_iter()
        .chain(more.iter().copied())
        .collect::<Vec<_>>(),
    );
    burrow.wait("tunnel_up", T).await;
    // As a browser names it: with the port, which share links are bound to.
    let host = format!("{sub}.{}:{}", frps.subdomain_host(), frps.vhost_port);
    Protected { host, frps, burrow, proxy_port, admin_port }
}

impl Protected {
    /// A request through frps, as the public makes it.
    async fn public(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, hyper::HeaderMap, String) {
        http_request(self.frps.vhost_port, &self.host, method, path, headers).await
    }

    /// A request on the loopback listener, as the local user makes it.
    async fn local(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let (code, _, body) = http_request(self.proxy_port, "127.0.0.1", method, path, headers).await;
        (code, body)
    }
}

fn basic(user_pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
}

/// The echo app's view of a request: what reached it, as JSON.
fn seen(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the app's echo ({e}): {body}"))
}

/// The query token of a share link.
fn token_of(url: &str) -> String {
    url.split_once("burrow_share=").map(|(_, t)| t.to_string()).unwrap_or_else(|| panic!("no token in {url}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_url_takes_basic_auth_and_share_links_and_the_app_never_sees_them() {
    let mut p = protected("native", "guarded").await;
    let creds = basic(&format!("ann:{PASSWORD}"));

    // No credentials: 401, asking for basic auth. The URL's own check still passes.
    let (code, h, body) = p.public("GET", "/page", &[]).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(h["www-authenticate"], "Basic realm=\"burrow\", charset=\"UTF-8\"");
    p.burrow.wait("url_verified", T).await;

    // Basic auth passes; the app gets neither the header nor anything else of it.
    let (code, _, body) = p.public("GET", "/page", &[("authorization", &creds), ("cookie", "theme=dark")]).await;
    assert_eq!(code, 200, "{body}");
    let app = seen(&body);
    assert_eq!(app["uri"], "/page");
    assert!(app["headers"].get("authorization").is_none(), "{app}");
    assert_eq!(app["headers"]["cookie"], "theme=dark");

    // Bad credentials are refused, however malformed.
    for bad in [
        basic(&format!("ann:{PASSWORD}x")),
        basic(&format!("bob:{PASSWORD}")),
        basic(&format!("ann{PASSWORD}")),
        "Basic %%%not-base64%%%".to_string(),
        "Basic".to_string(),
        format!("Basic {}", "QUFB".repeat(4000)),
    ] {
        assert_eq!(p.public("GET", "/", &[("authorization", &bad)]).await.0, 401, "{bad:.40}");
    }

    // A share link: its first use moves the token into a cookie and drops it from the URL.
    p.burrow.send(r#"{"cmd":"share","ttl_s":600,"read_only":false}"#).await;
    let link = p.burrow.wait("share_link", T).await;
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://{}/?burrow_share=", p.host)), "{link}");
    let expires = humantime::parse_rfc3339(link["expires"].as_str().unwrap()).unwrap();
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap().as_secs();
    assert!((590..=600).contains(&left), "{link}");
    let token = token_of(url);
    let (code, h, _) = p.public("GET", &format!("/docs?x=1&burrow_share={token}"), &[]).await;
    assert_eq!(code, 303);
    assert_eq!(h["location"], "/docs?x=1");
    let cookie = h["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with(&format!("burrow_share={token};")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"), "{cookie}");
    let jar = format!("theme=dark; burrow_share={token}");
    let (code, _, body) = p.public("POST", "/docs", &[("cookie", &jar)]).await;
    assert_eq!(code, 200, "{body}");
    let app = seen(&body);
    assert_eq!((app["method"].as_str(), app["headers"]["cookie"].as_str()), (Some("POST"), Some("theme=dark")));

    // A read-only link from the admin API: reading passes, writing does not.
    let (code, _, body) = http_request(
        p.admin_port,
        "127.0.0.1",
        "POST",
        "/api/share?ttl_s=120&read_only=true",
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    // The admin API's link is an event too (stdout may come after the HTTP answer).
    let event = p.burrow.wait_nth("share_link", 1, T).await;
    assert_eq!(event["url"], answer["url"], "{event}");
    let read_only = format!("burrow_share={}", token_of(answer["url"].as_str().unwrap()));
    assert_eq!(p.public("GET", "/r", &[("cookie", &read_only)]).await.0, 200);
    assert_eq!(p.public("HEAD", "/r", &[("cookie", &read_only)]).await.0, 200);
    let (code, _, body) = p.public("POST", "/r", &[("cookie", &read_only)]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");

    // Forged, truncated and oversized cookies are refused and break nothing.
    // Another last character (a token ending in `A` must not be "forged" into itself).
    let last = if token.ends_with('A') { 'E' } else { 'A' };
    let forged = format!("burrow_share={}{last}", &token[..token.len() - 1]);
    let truncated = format!("burrow_share={}", &token[..20]);
    let oversized = format!("burrow_share={}", "A".repeat(12_000));
    for bad in [forged, truncated, oversized, "burrow_share=".to_string()] {
        assert_eq!(p.public("GET", "/", &[("cookie", &bad)]).await.0, 401, "{bad:.40}");
    }

    // Revoking kills every link and cookie handed out, not the password.
    p.burrow.send(r#"{"cmd":"revoke_shares"}"#).await;
    assert_eq!(p.burrow.wait("shares_revoked", T).await["generation"], 1);
    for c in [&jar, &read_only] {
        let (code, _, body) = p.public("GET", "/", &[("cookie", c)]).await;
        assert_eq!(code, 401);
        assert!(body.contains("revoked"), "{body}");
    }
    assert_eq!(p.public("GET", &format!("/?burrow_share={token}"), &[]).await.0, 401);
    assert_eq!(p.public("GET", "/", &[("authorization", &creds)]).await.0, 200);

    // `;public=no`: 404 through the tunnel whatever the credentials, served on loopback.
    let (code, _, body) = p.public("GET", "/admin/panel", &[("authorization", &creds)]).await;
    assert_eq!(code, 404);
    assert!(body.contains("no route serves /admin/panel"), "{body}");
    let (code, body) = p.local("GET", "/admin/panel", &[]).await;
    assert_eq!(code, 200, "{body}");

    // Loopback requests pass untouched, credentials and cookies included: they are the user's.
    let (code, body) = p.local("GET", "/mine", &[("authorization", "Basic eDp5"), ("cookie", &jar)]).await;
    assert_eq!(code, 200);
    let app = seen(&body);
    assert_eq!(
        (app["headers"]["authorization"].as_str(), app["headers"]["cookie"].as_str()),
        (Some("Basic eDp5"), Some(jar.as_str()))
    );

    assert_eq!(p.burrow.count("error"), 0, "{}", p.burrow.output());
    // `*.localhost` is this machine alone: no other service shares the cookie.
    assert!(!p.burrow.output().contains("share_over_http"), "{}", p.burrow.output());
    p.burrow.assert_no_secret(&[PASSWORD, SHARE_KEY, ADMIN_TOKEN]);
    assert_eq!(p.burrow.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frpc_tunnels_meet_the_same_policy() {
    // frpc reaches the proxy over loopback; the policy must still see its requests as public.
    let mut p = protected("frpc", "guardedfrpc").await;
    let creds = basic(&format!("ann:{PASSWORD}"));
    let body = vhost_get_ok(p.frps.vhost_port, &p.host, "/.well-known/burrow-verify/n", T).await;
    assert_eq!(body.len(), 64, "{body}");
    // The verify answer is for GET alone, and bound to the host it is asked for.
    let (code, h, _) = p.public("POST", "/.well-known/burrow-verify/n", &[]).await;
    assert_eq!((code, h["allow"].to_str().unwrap()), (405, "GET"));
    let verify = |host: &'static str| async move {
        http_request(p.proxy_port, host, "GET", "/.well-known/burrow-verify/n", &[]).await.2
    };
    let (one, other) = (verify("one.example").await, verify("other.example").await);
    assert!(one.len() == 64 && other.len() == 64 && one != other, "{one} {other}");
    assert_eq!(verify("ONE.example:80").await, one);
    assert_eq!(p.public("GET", "/", &[]).await.0, 401);
    let (code, _, body) = p.public("GET", "/x", &[("authorization", &creds)]).await;
    assert_eq!(code, 200, "{body}");
    assert!(seen(&body)["headers"].get("authorization").is_none(), "{body}");
    assert_eq!(p.public("GET", "/admin", &[("authorization", &creds)]).await.0, 404);
    assert_eq!(p.local("GET", "/admin", &[]).await.0, 200);
    p.burrow.assert_no_secret(&[PASSWORD, SHARE_KEY]);
    assert_eq!(p.burrow.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_of_an_open_url_are_refused_with_what_to_do() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    let env = tunnel_env(&frps, "openurl", "native", up.addr);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut b = Burrow::spawn(&pairs);
    b.wait("tunnel_up", T).await;
    b.send(r#"{"cmd":"share"}"#).await;
    let e = b.wait("error", T).await;
    assert_eq!((e["code"].as_str(), e["fatal"].as_bool()), (Some("config_invalid"), Some(false)), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("BURROW_PUBLIC_ACCESS=protected"), "{e}");
    // Open means open: a share parameter is the app's business.
    let (code, body) = vhost_get(frps.vhost_port, &format!("openurl.{SUBDOMAIN_HOST}"), "/?burrow_share=x").await;
    assert_eq!((code, body.as_str()), (200, "hello /?burrow_share=x"));
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

// Every way around the policy that a security review found, tried as an attacker would through
// real frps; each fails without its fix.

/// A protected burrow on a fresh frps whose names resolve (`*.localhost`).
async fn protected_fresh(mode: &str, sub: &str, more: &[(&str, &str)]) -> Protected {
    let frps = Frps::start(FrpsOpts { subdomain_host: "burrow.localhost", ..Default::default() }).await;
    protected_on(frps, mode, sub, more).await
}

/// An frpc file for `frps` with one http proxy `sub` to `local_ip:local_port`, plus `extra` lines.
fn frpc_file(dir: &std::path::Path, frps: &Frps, proxies: &[(&str, &str, u16)], extra: &str) -> String {
    let mut text =
        format!("serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n{extra}\n", frps.bind_port);
    for (sub, ip, port) in proxies {
        text.push_str(&format!(
            "[[proxies]]\nname = \"{sub}\"\ntype = \"http\"\nsubdomain = \"{sub}\"\nlocalIP = \"{ip}\"\nlocalPort = {port}\n"
        ));
    }
    write_file(dir, &format!("frpc-{}.toml", proxies[0].0), &text).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_only_frpc_can_run_cannot_switch_protection_off() {
    // Finding 1: an http proxy straight to the app, plus a key only frpc knows.
    let frps = Frps::start(FrpsOpts { subdomain_host: "burrow.localhost", ..Default::default() }).await;
    let app = app_upstream("app").await;
    let dir = tempdir::TempDir::new();
    let proxy_port = free_port();
    let straight =
        frpc_file(dir.path(), &frps, &[("straight", "127.0.0.1", app.port())], "transport.dialServerTimeout = 10");
    let frpc = bundled_frpc().display().to_string();
    let auth = format!("ann:{PASSWORD}");
    let proxy_addr = format!("127.0.0.1:{proxy_port}");
    let env = |file: &str, mode: &str| -> Vec<(String, String)> {
        [
            ("BURROW_CONFIG", file),
            ("BURROW_MODE", mode),
            ("BURROW_FRPC_PATH", &frpc),
            ("BURROW_PROXY_ADDR", &proxy_addr),
            ("BURROW_ROUTES", &format!("/=http://{app}")),
            ("BURROW_PUBLIC_ACCESS", "protected"),
            ("BURROW_PUBLIC_AUTH", &auth),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let pairs = |e: &[(String, String)]| e.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    for mode in ["native", "auto", "frpc"] {
        let e = pairs(&env(&straight, mode));
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut b = Burrow::spawn(&e);
        assert_eq!(b.wait_exit(Duration::from_secs(10)).await, 2, "{mode}: {}", b.output());
        let ev = &b.events()[0];
        assert_eq!(ev["code"], "config_invalid", "{mode}: {ev}");
        assert!(ev["message"].as_str().unwrap().contains("tunnel straight (http) goes to 127.0.0.1:"), "{ev}");
        // `burrow check` says the same, and fails.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
            .arg("check")
            .env_clear()
            .envs(e.iter().copied())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{mode}: check: {text}");
        assert!(text.contains("tunnel straight (http) goes to"), "{text}");
        b.assert_no_secret(&[PASSWORD]);
    }
    // The same file pointed at the proxy runs on frpc (auto falls back for the key) and stays shut.
    let guarded =
        frpc_file(dir.path(), &frps, &[("guardedfile", "127.0.0.1", proxy_port)], "transport.dialServerTimeout = 10");
    let e = pairs(&env(&guarded, "auto"));
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut b = Burrow::spawn(&e);
    b.wait("tunnel_up", T).await;
    assert_eq!(b.wait("fallback", T).await["to"], "frpc");
    let host = "guardedfile.burrow.localhost";
    let (code, _, body) = http_request(frps.vhost_port, host, "GET", "/", &[]).await;
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = http_request(frps.vhost_port, host, "GET", "/", &[("authorization", &basic(&auth))]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_proxys_address_is_the_public_under_the_policy() {
    // Finding 2: `0.0.0.0`, `127.1` and `::ffff:127.0.0.1` name the proxy too; hidden stays hidden.
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    let dir = tempdir::TempDir::new();
    let frpc = bundled_frpc().display().to_string();
    for mode in ["native", "frpc"] {
        for (i, spelling) in ["0.0.0.0", "127.1", "::ffff:127.0.0.1"].iter().enumerate() {
            let proxy_port = free_port();
            let sub = format!("spell{i}{mode}");
            let file = frpc_file(dir.path(), &frps, &[(&sub, spelling, proxy_port)], "");
            let routes = format!("/admin=http://{app};public=no,/=http://{app}");
            let mut b = Burrow::spawn(&[
                ("BURROW_CONFIG", &file),
                ("BURROW_MODE", mode),
                ("BURROW_FRPC_PATH", &frpc),
                ("BURROW_PROXY_ADDR", &format!("127.0.0.1:{proxy_port}")),
                ("BURROW_ROUTES", &routes),
            ]);
            b.wait("tunnel_up", T).await;
            let host = format!("{sub}.{SUBDOMAIN_HOST}");
            let body = vhost_get_ok(frps.vhost_port, &host, "/page", T).await;
            assert!(body.contains("\"uri\":\"/page\""), "{mode} {spelling}: {body}");
            let (code, body) = vhost_get(frps.vhost_port, &host, "/admin/panel").await;
            assert_eq!(code, 404, "{mode} {spelling}: /admin served to the public: {body}");
            assert!(body.contains("no route serves /admin/panel"), "{body}");
            assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_routes_stay_hidden_under_every_spelling() {
    // Finding 3: one upstream behind `/admin` (hidden) and `/`; many servers fold case or decode.
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    for mode in ["native", "frpc"] {
        let sub = format!("spellings{mode}");
        let mut env = tunnel_env(&frps, &sub, mode, app);
        env.retain(|(k, _)| k != "BURROW_ROUTES");
        env.push(("BURROW_ROUTES".into(), format!("/admin=http://{app};public=no,/=http://{app}")));
        env.push(("BURROW_FRPC_PATH".into(), bundled_frpc().display().to_string()));
        let proxy_port = free_port();
        env.push(("BURROW_PROXY_ADDR".into(), format!("127.0.0.1:{proxy_port}")));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut b = Burrow::spawn(&pairs);
        b.wait("tunnel_up", T).await;
        let host = format!("{sub}.{SUBDOMAIN_HOST}");
        vhost_get_ok(frps.vhost_port, &host, "/", T).await;
        for path in ["/ADMIN/x", "/%41dmin/x", "/Admin", "/admin;x", "/admin%20/x", "/%2541dmin", "/admin./x"] {
            let (code, body) = vhost_get(frps.vhost_port, &host, path).await;
            assert_eq!(code, 404, "{mode}: {path} reached the app: {body}");
            assert!(!body.contains("\"name\":\"app\""), "{mode}: {path}: {body}");
        }
        // The local user's requests are unchanged.
        let (code, _, body) = http_request(proxy_port, "127.0.0.1", "GET", "/ADMIN/x", &[]).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_open_only_the_tunnel_they_were_minted_for() {
    // Finding 4: two burrows with one share key; a link of one must not open the other.
    for mode in ["native", "frpc"] {
        let fresh = || Frps::start(FrpsOpts { subdomain_host: "burrow.localhost", ..Default::default() });
        let mut a = protected_on(fresh().await, mode, &format!("alpha{mode}"), &[]).await;
        let b = protected_on(fresh().await, mode, &format!("beta{mode}"), &[]).await;
        a.burrow.send(r#"{"cmd":"share","ttl_s":600}"#).await;
        let token = token_of(a.burrow.wait("share_link", T).await["url"].as_str().unwrap());
        let cookie = format!("burrow_share={token}");
        let (code, _, body) = b.public("GET", &format!("/?burrow_share={token}"), &[]).await;
        assert_eq!(code, 401, "{mode}: {body}");
        assert!(body.contains("not valid here"), "{body}");
        let (code, h, _) = b.public("GET", "/", &[("cookie", &cookie)]).await;
        assert_eq!(code, 401, "{mode}");
        assert!(h.get("set-cookie").is_none());
        // On its own tunnel it opens.
        assert_eq!(a.public("GET", &format!("/?burrow_share={token}"), &[]).await.0, 303, "{mode}");
        assert_eq!(a.public("GET", "/", &[("cookie", &cookie)]).await.0, 200, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_links_and_every_visitor_carry_no_write_in_disguise() {
    // Findings 5 and 6, served natively and through frpc's door.
    for mode in ["native", "frpc"] {
        let mut p = protected_fresh(mode, &format!("disguise{mode}"), &[]).await;
        p.burrow.send(r#"{"cmd":"share","ttl_s":600,"read_only":true}"#).await;
        let read_only =
            format!("burrow_share={}", token_of(p.burrow.wait("share_link", T).await["url"].as_str().unwrap()));
        // A GET with a body is a write.
        let (code, _, body) =
            http_send(p.frps.vhost_port, &p.host, "GET", "/r", &[("cookie", &read_only)], "{\"delete\":1}").await;
        assert_eq!(code, 403, "{body}");
        // A method in a header never reaches the app, whoever asks.
        let creds = basic(&format!("ann:{PASSWORD}"));
        for who in [("cookie", read_only.as_str()), ("authorization", creds.as_str())] {
            let headers =
                [who, ("x-http-method-override", "DELETE"), ("x-http-method", "PUT"), ("x-method-override", "PATCH")];
            let (code, _, body) = p.public("GET", "/r", &headers).await;
            assert_eq!(code, 200, "{body}");
            let app = seen(&body);
            assert_eq!(app["method"], "GET");
            for h in ["x-http-method-override", "x-http-method", "x-method-override"] {
                assert!(app["headers"].get(h).is_none(), "{h} reached the app: {app}");
            }
        }
        // Without credentials every path gets the same 401: the hidden ones are not mapped by it.
        let (c1, _, b1) = p.public("GET", "/admin/panel", &[]).await;
        let (c2, _, b2) = p.public("GET", "/anything", &[]).await;
        let (c3, _, b3) = p.public("GET", "/api/x%2fy", &[]).await;
        assert_eq!((c1, c2, c3), (401, 401, 401));
        assert!(b1 == b2 && b2 == b3, "{b1}\n{b2}\n{b3}");
    }
}

/// The pid of `parent`'s child process named `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else { return false };
        comm.ends_with(&format!("({name}")) && rest.split(' ').nth(1) == Some(&parent.to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frpc_gets_no_burrow_setting_and_no_proxy_variable() {
    // Finding 7: frpc inherited BURROW_PUBLIC_AUTH and BURROW_SHARE_KEY.
    let p = protected_fresh(
        "frpc",
        "frpcenv",
        &[
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("no_proxy", "127.0.0.1,localhost"),
            ("ALL_PROXY", "socks5://127.0.0.1:9"),
        ],
    )
    .await;
    let pid = p.burrow.child.id().unwrap();
    let frpc = child_named(pid, "frpc").unwrap_or_else(|| panic!("no frpc under burrow {pid}"));
    let environ = std::fs::read(format!("/proc/{frpc}/environ")).unwrap();
    let vars: Vec<String> =
        environ.split(|&b| b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert!(!vars.is_empty() && vars.iter().any(|v| v.starts_with("PATH=")), "{vars:?}");
    for v in &vars {
        let name = v.split('=').next().unwrap().to_ascii_uppercase();
        assert!(!name.starts_with("BURROW_") && !name.ends_with("_PROXY"), "frpc has {name} in its environment");
        assert!(!v.contains(PASSWORD) && !v.contains(SHARE_KEY), "{v}");
    }
    // It still got what it needs from its file: the tunnel serves.
    assert_eq!(p.public("GET", "/", &[("authorization", &basic(&format!("ann:{PASSWORD}")))]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_password_is_throttled() {
    let p = protected_fresh("native", "guessing", &[]).await;
    let wrong = basic("ann:not-the-password");
    for i in 0..10 {
        assert_eq!(p.public("GET", "/", &[("authorization", &wrong)]).await.0, 401, "attempt {i}");
    }
    // frps names every visitor here 127.0.0.1: that address has used its ten failures.
    let (code, h, body) = p.public("GET", "/", &[("authorization", &wrong)]).await;
    assert_eq!(code, 429, "{body}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let right = basic(&format!("ann:{PASSWORD}"));
    assert_eq!(p.public("GET", "/", &[("authorization", &right)]).await.0, 429, "the address may not guess now");
    // A share link's holder is not the guesser.
    let mut p = p;
    p.burrow.send(r#"{"cmd":"share","ttl_s":60}"#).await;
    let cookie = format!("burrow_share={}", token_of(p.burrow.wait("share_link", T).await["url"].as_str().unwrap()));
    assert_eq!(p.public("GET", "/", &[("cookie", &cookie)]).await.0, 200);
    p.burrow.assert_no_secret(&[PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_other_than_websocket_does_not_leave_the_policy_behind() {
    // Finding 7: an upstream that answers 101 to h2c turned the stream into a raw pipe, after
    // which nothing on it met the policy.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    if head.contains("upgrade: h2c") {
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                            )
                            .await;
                        let _ = tokio::io::copy(&mut tokio::io::repeat(b'x').take(64), &mut s).await;
                        continue;
                    }
                    let body = format!("plain {}", head.contains("upgrade"));
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let frps = Frps::start(FrpsOpts { subdomain_host: "burrow.localhost", ..Default::default() }).await;
    let p = protected_on(frps, "native", "smuggle", &[("BURROW_ROUTES", &format!("/=http://{app}"))]).await;
    let creds = basic(&format!("ann:{PASSWORD}"));
    let s = TcpStream::connect(("127.0.0.1", p.frps.vhost_port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = hyper::Request::builder()
        .uri("/")
        .header("host", &p.host)
        .header("authorization", &creds)
        // Without HTTP2-Settings: with it, frps' own server takes the h2c upgrade (and speaks
        // HTTP/2 to the visitor, HTTP/1.1 to burrow); without it, frps passes it on as any upgrade.
        .header("connection", "Upgrade")
        .header("upgrade", "h2c")
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "the h2c upgrade went through");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(&body[..], b"plain false", "the upstream saw the upgrade");
    // The next request on the same connection still meets the policy.
    let next = hyper::Request::builder()
        .uri("/")
        .header("host", &p.host)
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .unwrap();
    // Once hyper's client has taken the connection back (the first answer's end is read).
    tx.ready().await.expect("the connection stays open after a plain answer");
    assert_eq!(tx.send_request(next).await.expect("the second request is answered").status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_through_a_protected_tunnel_meet_the_policy_on_the_upgrade() {
    use futures_util::StreamExt;
    let mut p = protected_fresh("native", "sockets", &[]).await;
    let creds = basic(&format!("ann:{PASSWORD}"));
    let open = |headers: Vec<(&'static str, String)>| {
        let (port, host) = (p.frps.vhost_port, p.host.clone());
        async move {
            let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut req = ws_request(&host, "/ws/headers");
            for (k, v) in headers {
                req.headers_mut().insert(k, v.parse().unwrap());
            }
            tokio_tungstenite::client_async(req, s).await
        }
    };
    // Basic auth: the app's upgrade request has no Authorization.
    let (mut ws, _) = open(vec![("authorization", creds.clone()), ("cookie", "theme=dark".into())]).await.unwrap();
    let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
    let seen: Value = serde_json::from_str(&first).unwrap();
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert_eq!(seen["cookie"], "theme=dark");
    // A share link's cookie: stripped on the upgrade too.
    p.burrow.send(r#"{"cmd":"share","ttl_s":600}"#).await;
    let token = token_of(p.burrow.wait("share_link", T).await["url"].as_str().unwrap());
    let (mut ws, _) = open(vec![("cookie", format!("theme=dark; burrow_share={token}"))]).await.unwrap();
    let seen: Value = serde_json::from_str(&ws.next().await.unwrap().unwrap().into_text().unwrap()).unwrap();
    assert_eq!(seen["cookie"], "theme=dark", "{seen}");
    // A read-only visitor's upgrade is refused.
    p.burrow.send(r#"{"cmd":"share","ttl_s":600,"read_only":true}"#).await;
    let ro = token_of(p.burrow.wait_nth("share_link", 1, T).await["url"].as_str().unwrap());
    match open(vec![("cookie", format!("burrow_share={ro}"))]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("a read-only visitor opened a WebSocket: {:?}", other.map(|(_, r)| r.status())),
    }
    // And without credentials, 401.
    match open(vec![]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("a WebSocket opened without credentials: {:?}", other.map(|(_, r)| r.status())),
    }
}

/// The token of the `nth` share link, asked for with `ttl`.
async fn mint(p: &mut Protected, ttl: u64, nth: usize) -> String {
    p.burrow.send(&format!(r#"{{"cmd":"share","ttl_s":{ttl}}}"#)).await;
    token_of(p.burrow.wait_nth("share_link", nth, T).await["url"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_survive_a_restart_until_revoked_or_expired() {
    let frps = Frps::start(FrpsOpts { subdomain_host: "burrow.localhost", ..Default::default() }).await;
    let mut p = protected_on(frps, "native", "restart", &[]).await;
    let revoked = mint(&mut p, 600, 0).await;
    let (code, h, _) = p.public("GET", &format!("/?burrow_share={revoked}"), &[]).await;
    assert_eq!(code, 303);
    let revoked_cookie = h["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    p.burrow.send(r#"{"cmd":"revoke_shares"}"#).await;
    let generation = p.burrow.wait("shares_revoked", T).await["generation"].as_u64().unwrap();
    let kept = mint(&mut p, 600, 1).await;
    let short = mint(&mut p, 1, 2).await;
    assert_eq!(p.burrow.close_stdin_and_wait(Duration::from_secs(5)).await, 0);

    // The binary again, with the same key and the generation the host kept.
    let gen = generation.to_string();
    let frps = std::mem::replace(&mut p.frps, Frps::start(FrpsOpts::default()).await);
    let q = protected_on(frps, "native", "restart", &[("BURROW_SHARE_GENERATION", &gen)]).await;
    let (code, _, body) = q.public("GET", &format!("/?burrow_share={revoked}"), &[]).await;
    assert_eq!(code, 401);
    assert!(body.contains("revoked"), "{body}");
    assert_eq!(q.public("GET", "/", &[("cookie", &revoked_cookie)]).await.0, 401);
    assert_eq!(q.public("GET", &format!("/?burrow_share={kept}"), &[]).await.0, 303);
    assert_eq!(q.public("GET", "/", &[("cookie", &format!("burrow_share={kept}"))]).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, _, body) = q.public("GET", &format!("/?burrow_share={short}"), &[]).await;
    assert_eq!(code, 401);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_url_and_a_tcp_tunnel_in_protected_mode_are_named() {
    // `burrow.test` does not resolve: an http URL anyone's services share a cookie jar on.
    let frps = Frps::start(FrpsOpts::default()).await;
    let p = protected_on(frps, "native", "plainhttp", &[]).await;
    let named = |b: &Burrow, code: &str| {
        b.events().iter().filter(|e| e["event"] == "warning" && e["code"] == code).cloned().collect::<Vec<Value>>()
    };
    assert!(wait_until(|| !named(&p.burrow, "share_over_http").is_empty(), T).await, "{}", p.burrow.output());
    // After the URL's own check (it does not resolve), still one.
    assert!(wait_until(|| !named(&p.burrow, "url_unverified").is_empty(), T).await, "{}", p.burrow.output());
    assert_eq!(named(&p.burrow, "share_over_http").len(), 1, "{}", p.burrow.output());

    // A tcp tunnel into the proxy: served in-process under the policy, and named.
    let frps = Frps::start(FrpsOpts::default()).await;
    let dir = tempdir::TempDir::new();
    let (proxy_port, remote) = (free_port(), free_port());
    let file = write_file(
        dir.path(),
        "tcp.toml",
        &format!("serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n[[proxies]]\nname = \"rawtcp\"\ntype = \"tcp\"\nlocalIP = \"127.0.0.1\"\nlocalPort = {proxy_port}\nremotePort = {remote}\n", frps.bind_port),
    );
    let app = app_upstream("app").await;
    let mut b = Burrow::spawn(&[
        ("BURROW_CONFIG", file.to_str().unwrap()),
        ("BURROW_MODE", "native"),
        ("BURROW_PROXY_ADDR", &format!("127.0.0.1:{proxy_port}")),
        ("BURROW_ROUTES", &format!("/=http://{app}")),
        ("BURROW_PUBLIC_ACCESS", "protected"),
        ("BURROW_PUBLIC_AUTH", &format!("ann:{PASSWORD}")),
    ]);
    b.wait("tunnel_up", T).await;
    let w = named(&b, "tcp_unprotected");
    assert_eq!(w.len(), 1, "{}", b.output());
    assert!(w[0]["message"].as_str().unwrap().contains("rawtcp"), "{w:?}");
    wait_port(remote).await;
    let (code, _, _) = http_request(remote, "anything", "GET", "/", &[]).await;
    assert_eq!(code, 401, "the tcp tunnel's HTTP went past the policy");
    let (code, _, _) =
        http_request(remote, "anything", "GET", "/", &[("authorization", &basic(&format!("ann:{PASSWORD}")))]).await;
    assert_eq!(code, 200);
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}
