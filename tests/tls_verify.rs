//! TLS verification against a real frps that has its own certificate: pin and CA, match and
//! mismatch. A mismatch is `tls_failed`: reported, retried, never a login.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(15);

async fn run_case(frps_port: u16, extra_env: &[(&str, &str)]) -> Burrow {
    let up = http_upstream().await;
    let addr = format!("127.0.0.1:{frps_port}");
    let routes = format!("/=http://{}", up.addr);
    let mut env = vec![
        ("BURROW_SERVER_ADDR", addr.as_str()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "tls"),
        ("BURROW_ROUTES", routes.as_str()),
    ];
    env.extend_from_slice(extra_env);
    let b = Burrow::spawn(&env);
    std::mem::forget(up);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_and_ca_verification() {
    let pki = Pki::new();
    let frps = Frps::start(FrpsOpts { extra: pki.frps_extra(), ..Default::default() }).await;

    // Pin match (upper case, colon separated, as `openssl x509 -fingerprint` prints it).
    let colons: String = pki
        .leaf_sha256
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let mut b = run_case(frps.bind_port, &[("BURROW_TLS_PIN", &colons)]).await;
    b.wait("tunnel_up", T).await;
    assert!(!b.events().iter().any(|e| e["code"] == "tls_unverified"), "verified TLS gives no tls_unverified warning");
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);

    // CA match with the certificate's name.
    let ca = pki.ca_pem.to_str().unwrap().to_string();
    let mut b = run_case(frps.bind_port, &[("BURROW_TLS_CA", &ca), ("BURROW_TLS_SERVER_NAME", "frps.test")]).await;
    b.wait("tunnel_up", T).await;
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);

    // Mismatches: wrong pin, right CA but wrong name, CA without a name for an IP address.
    let relay = counting_relay(frps.bind_port).await;
    let wrong_pin = "00".repeat(32);
    for env in [
        vec![("BURROW_TLS_PIN", wrong_pin.as_str())],
        vec![("BURROW_TLS_CA", ca.as_str()), ("BURROW_TLS_SERVER_NAME", "other.test")],
        vec![("BURROW_TLS_CA", ca.as_str())],
    ] {
        let before = relay.conns.load(Ordering::SeqCst);
        let mut b = run_case(relay.port, &env).await;
        let err = b.wait("error", T).await;
        assert_eq!(err["code"], "tls_failed", "{env:?}: {err}");
        b.wait_nth("reconnecting", 1, T).await;
        assert_eq!(b.count("connected"), 0);
        assert!(relay.conns.load(Ordering::SeqCst) >= before + 2, "retried");
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    }
    // No login ever reached frps from the mismatching clients.
    assert_eq!(
        frps.log().matches("client login info").count(),
        2,
        "only the two verified clients logged in:\n{}",
        frps.log()
    );
}
