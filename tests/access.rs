//! Access control on the public URL (`BURROW_PUBLIC_ACCESS=protected`, share links, `;public=no`)
//! through real frps, with the native client and with the bundled frpc.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::util::*;

const T: Duration = Duration::from_secs(20);
const PASSWORD: &str = "pw-secret-access-4417";
const SHARE_KEY: &str = "share-key-secret-0c9d2e71";
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
    let app = app_upstream("app").await;
    let routes = format!("/admin=http://{app};public=no,/=http://{app}");
    let (proxy_port, admin_port) = (free_port(), free_port());
    let (proxy_addr, admin_addr) = (format!("127.0.0.1:{proxy_port}"), format!("127.0.0.1:{admin_port}"));
    let auth = format!("ann:{PASSWORD}");
    let frpc = bundled_frpc().display().to_string();
    let burrow = Burrow::spawn(&[
        ("BURROW_FRPC_PATH", &frpc),
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
    ]);
    burrow.wait("tunnel_up", T).await;
    Protected { host: format!("{sub}.burrow.localhost"), frps, burrow, proxy_port, admin_port }
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
    assert!(url.starts_with(&format!("http://{}:{}/?burrow_share=", p.host, p.frps.vhost_port)), "{link}");
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
    let forged = format!("burrow_share={}A", &token[..token.len() - 1]);
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
