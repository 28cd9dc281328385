//! Tunnels reserved from a real HTTP provisioning API (contract §5), served on real frps.

use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(20);
const API_TOKEN: &str = "api-token-8b1d-secret";

fn api_env<'a>(api: &'a ProvisioningApi, app: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("BURROW_API_URL", api.url.as_str()),
        ("BURROW_API_TOKEN", API_TOKEN),
        ("BURROW_USER_ID", "user-1"),
        ("BURROW_PROJECT_ID", "proj-9"),
        ("BURROW_ROUTES", app),
        ("BURROW_MODE", "native"),
    ]
}

/// A reservation's `server.wireProtocol` and `server.protocol` choose the wire and the
/// transport, whatever the environment says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_chooses_wire_v2_over_websocket() {
    let frps = Frps::start(FrpsOpts { version: Some("0.70.1"), ..Default::default() }).await;
    let app = app_upstream("app").await;
    let api = provisioning_api().await;
    let mut answer: serde_json::Value =
        serde_json::from_str(&reservation_json("res-v2", frps.bind_port, TOKEN, "wire2", 60)).unwrap();
    answer["server"]["wireProtocol"] = "v2".into();
    answer["server"]["protocol"] = "websocket".into();
    api.push(201, answer.to_string());
    let routes = format!("/=http://{app}");
    let mut env = api_env(&api, &routes);
    env.extend([("BURROW_WIRE_PROTOCOL", "v1"), ("BURROW_TRANSPORT_PROTOCOL", "tcp")]);
    let b = Burrow::spawn(&env);
    let c = b.wait("connected", T).await;
    assert_eq!((c["wire"].as_str(), c["transport"].as_str()), (Some("v2"), Some("ws+yamux")), "{c}");
    let body = vhost_get_ok(frps.vhost_port, &format!("wire2.{SUBDOMAIN_HOST}"), "/v2", T).await;
    assert!(body.contains("\"name\":\"app\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_serve_renew_release() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    let api = provisioning_api().await;
    // A 3 s lease: renewed when a third remains, i.e. about 2 s after each (re)newal.
    *api.lease_secs.lock().unwrap() = 3;
    api.push(201, reservation_json("res-42", frps.bind_port, TOKEN, "reserved", 3));
    let routes = format!("/=http://{app}");
    let mut b = Burrow::spawn(&api_env(&api, &routes));
    let reserved = b.wait("reserved", T).await;
    assert_eq!(reserved["reservation_id"], "res-42");
    assert!(reserved["expires_at"].is_string());
    let up = b.wait("tunnel_up", T).await;
    assert_eq!(up["url"], "https://reserved.public.example", "the reservation's public URL");
    assert_eq!(up["reservation_id"], "res-42");
    let body = vhost_get_ok(frps.vhost_port, &format!("reserved.{SUBDOMAIN_HOST}"), "/hello", T).await;
    assert!(body.contains("\"name\":\"app\""), "{body}");

    let first = &api.requests()[0];
    assert_eq!((first.0.as_str(), first.1.as_str()), ("POST", "/tunnels/v1/reservations"));
    assert_eq!(first.2, format!("Bearer {API_TOKEN}"));
    let sent: serde_json::Value = serde_json::from_str(&first.3).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"userId": "user-1", "projectId": "proj-9", "tunnels": [{"name": "web", "type": "http"}]})
    );

    let renewed = b.wait("renewed", Duration::from_secs(6)).await;
    assert!(api.requests().iter().any(|r| r.0 == "POST" && r.1 == "/tunnels/v1/reservations/res-42/renew"));
    // Contract: renewal at two-thirds of the lease (2 s of 3), as stamped on the two events.
    let at = |e: &serde_json::Value| humantime::parse_rfc3339(e["ts"].as_str().unwrap()).unwrap();
    let after = at(&renewed).duration_since(at(&reserved)).unwrap();
    assert!(
        (Duration::from_millis(1700)..Duration::from_millis(2700)).contains(&after),
        "renewed {after:?} after the reservation of a 3 s lease"
    );
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    assert!(
        api.requests().iter().any(|r| r.0 == "DELETE" && r.1 == "/tunnels/v1/reservations/res-42"),
        "released at shutdown: {:?}",
        api.requests()
    );
    b.assert_no_secret(&[API_TOKEN, TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_exit_3_after_one_request() {
    let api = provisioning_api().await;
    api.push(401, r#"{"error":{"code":"unauthorized","message":"bad token"}}"#);
    let mut b = Burrow::spawn(&api_env(&api, "/=http://127.0.0.1:9"));
    assert_eq!(b.wait_exit(T).await, 3);
    let err = b.events().into_iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(err["code"], "api_rejected");
    assert_eq!(err["fatal"], true);
    assert_eq!(api.requests().len(), 1, "no retry on 401");
    assert_eq!(b.events().last().unwrap()["event"], "stopped");
    b.assert_no_secret(&[API_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_success() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let api = provisioning_api().await;
    api.push(500, r#"{"error":{"code":"oops","message":"try later"}}"#);
    api.push(503, "");
    api.push(200, reservation_json("res-7", frps.bind_port, TOKEN, "retried", 600));
    let mut b = Burrow::spawn(&api_env(&api, "/=http://127.0.0.1:9"));
    b.wait("tunnel_up", T).await;
    let reserves = api.requests().iter().filter(|r| r.1 == "/tunnels/v1/reservations").count();
    assert_eq!(reserves, 3);
    let err = b.events().into_iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!((err["code"].as_str(), err["fatal"].as_bool()), (Some("api_error"), Some(false)));
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_api_error_naming_the_problem() {
    for (body, want) in [
        ("{not json", "line 1 column 2"),
        (r#"{"reservationId":"r","expiresAt":null,"tunnels":[]}"#, "missing field `server`"),
        (
            r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t"},"tunnels":[{"name":"web","type":"ftp","subdomain":"a"}]}"#,
            "ftp",
        ),
    ] {
        let api = provisioning_api().await;
        api.push(200, body);
        let mut b = Burrow::spawn(&api_env(&api, "/=http://127.0.0.1:9"));
        assert_eq!(b.wait_exit(T).await, 1, "{body}");
        let err = b.events().into_iter().find(|e| e["event"] == "error").unwrap();
        assert_eq!(err["code"], "api_error");
        assert!(err["message"].as_str().unwrap().contains(want), "{err}");
        assert_eq!(api.requests().len(), 1, "a malformed 2xx is not retried");
    }
}

#[tokio::test]
async fn one_source_of_tunnels_at_a_time() {
    let mut b = Burrow::spawn(&[
        ("BURROW_API_URL", "http://127.0.0.1:9/api"),
        ("BURROW_USER_ID", "u"),
        ("BURROW_PROJECT_ID", "p"),
        ("BURROW_SERVER_ADDR", "127.0.0.1:7000"),
    ]);
    assert_eq!(b.wait_exit(T).await, 2);
    assert!(b.output().contains("BURROW_SERVER_ADDR"), "{}", b.output());
}
