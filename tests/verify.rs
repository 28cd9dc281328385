//! The public URL verified end to end (`url_verified`, `url_unverified`) through real frps.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_that_reaches_this_burrow_is_verified_and_the_app_never_sees_the_check() {
    let frps = Frps::start(FrpsOpts { subdomain_host: "burrow.localhost", ..Default::default() }).await;
    let up = http_upstream().await;
    let env = tunnel_env(&frps, "checked", "native", up.addr);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut b = Burrow::spawn(&pairs);
    let tunnel = b.wait("tunnel_up", T).await;
    let url = format!("http://checked.burrow.localhost:{}", frps.vhost_port);
    assert_eq!(tunnel["url"], url);
    let ok = b.wait("url_verified", T).await;
    assert_eq!((ok["name"].as_str(), ok["url"].as_str()), (Some("web"), Some(url.as_str())), "{ok}");
    assert!(ok["ms"].as_u64().is_some_and(|ms| ms < 10_000), "{ok}");
    assert_eq!(b.count("warning") - tls_unverified(&b), 0, "{}", b.output());
    b.send(r#"{"cmd":"status"}"#).await;
    let st = b.wait("status", T).await;
    assert_eq!(st["tunnels"][0]["verified"], true, "{st}");

    // The check's path is the proxy's own: a visitor gets a digest only this process can make, the
    // app gets nothing.
    let (code, body) = vhost_get(frps.vhost_port, "checked.burrow.localhost", "/.well-known/burrow-verify/n1").await;
    let (_, again) = vhost_get(frps.vhost_port, "checked.burrow.localhost", "/.well-known/burrow-verify/n2").await;
    assert_eq!(code, 200);
    assert!(body.len() == 64 && body.bytes().all(|c| c.is_ascii_hexdigit()) && body != again, "{body} {again}");
    assert_eq!(up.conns.load(Ordering::SeqCst), 0, "the app saw the verification requests");
    assert_eq!(vhost_get(frps.vhost_port, "checked.burrow.localhost", "/app").await, (200, "hello /app".into()));
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

fn tls_unverified(b: &Burrow) -> usize {
    b.events().iter().filter(|e| e["event"] == "warning" && e["code"] == "tls_unverified").count()
}

/// burrow with a reservation whose tunnel says `public_url`, through `frps`.
async fn reserved(frps: &Frps, sub: &str, public_url: &str) -> (Burrow, ProvisioningApi) {
    let api = provisioning_api().await;
    let mut r: serde_json::Value =
        serde_json::from_str(&reservation_json("res-v", frps.bind_port, TOKEN, sub, 600)).unwrap();
    r["tunnels"][0]["publicUrl"] = public_url.into();
    // One frps holds each tunnel name once.
    r["tunnels"][0]["name"] = sub.into();
    api.push(201, r.to_string());
    let up = app_upstream("app").await;
    let routes = format!("/=http://{up}");
    let proxy_addr = format!("127.0.0.1:{}", free_port());
    let b = Burrow::spawn(&[
        ("BURROW_API_URL", &api.url),
        ("BURROW_API_TOKEN", "api-token-verify-1"),
        ("BURROW_USER_ID", "u"),
        ("BURROW_PROJECT_ID", "p"),
        ("BURROW_ROUTES", &routes),
        ("BURROW_PROXY_ADDR", &proxy_addr),
    ]);
    (b, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_that_does_not_reach_this_burrow_is_a_warning_naming_why() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let other = app_upstream("someone-else").await;
    let closed = free_port();
    // frps' vhost port speaks plain HTTP: TLS to it fails at the handshake.
    let cases = [
        ("unresolved", "http://nowhere.burrow.invalid".to_string(), "the name nowhere.burrow.invalid does not resolve"),
        ("refused", format!("http://refused.localhost:{closed}"), "refused"),
        ("tls", format!("https://tls.localhost:{}", frps.vhost_port), "TLS at the edge failed"),
        ("other", format!("http://other.localhost:{}", other.port()), "something other than this burrow answered"),
    ];
    let mut running = Vec::new();
    for (sub, url, _) in &cases {
        running.push(reserved(&frps, sub, url).await);
    }
    for ((sub, url, why), (b, _api)) in cases.iter().zip(&running) {
        b.wait("tunnel_up", T).await;
        let w = wait_warning(b, "url_unverified").await;
        let msg = w["message"].as_str().unwrap();
        assert!(msg.contains(url.as_str()) && msg.contains(why), "{sub}: {msg}");
        assert!(msg.contains(&format!("\"{sub}\"")), "names the tunnel: {msg}");
        assert_eq!(b.count("url_verified"), 0, "{sub}");
        b.assert_no_secret(&[TOKEN, "api-token-verify-1"]);
    }
    // The tunnel itself still serves: the warning is advice, not a failure.
    assert!(vhost_get_ok(frps.vhost_port, &format!("refused.{SUBDOMAIN_HOST}"), "/x", T).await.contains("app"));
    for (mut b, _) in running {
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    }
}

async fn wait_warning(b: &Burrow, code: &str) -> serde_json::Value {
    let found = || b.events().into_iter().find(|e| e["event"] == "warning" && e["code"] == code);
    assert!(wait_until(|| found().is_some(), T).await, "no {code} warning: {}", b.output());
    found().unwrap()
}
