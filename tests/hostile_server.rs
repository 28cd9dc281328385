//! A hostile "server": burrow must report `protocol_error` / `tls_failed`, retry, and never panic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use burrow_proto::msg::LoginResp;
use burrow_proto::{v2, Message};

use crate::util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(15);

fn frame(ty: u8, len: i64, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Listens, reads the client's first frame (Login), answers `reply`, then closes.
async fn hostile(reply: Vec<u8>, read_login: bool) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                if read_login {
                    let mut hdr = [0u8; 9];
                    if s.read_exact(&mut hdr).await.is_err() {
                        return;
                    }
                    assert_eq!(hdr[0], b'o', "first frame is Login");
                    let len = i64::from_be_bytes(hdr[1..].try_into().unwrap());
                    let mut body = vec![0u8; len as usize];
                    s.read_exact(&mut body).await.unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["client_spec"], serde_json::json!({}));
                } else {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                }
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    (port, n)
}

/// burrow meets a server answering `reply`: each case's own message, retried.
async fn expect_retried_error(reply: Vec<u8>, tls: bool, code: &str, says: &str) {
    let (port, conns) = hostile(reply, !tls).await;
    burrow_retries(port, conns, tls, "v1", code, says).await;
}

/// burrow against the hostile server at `port`: one `code` error whose message contains `says`,
/// retries, no connection, a clean exit.
async fn burrow_retries(port: u16, conns: Arc<AtomicUsize>, tls: bool, wire: &str, code: &str, says: &str) {
    let mut b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &format!("127.0.0.1:{port}")),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "x"),
        ("BURROW_TLS", if tls { "on" } else { "off" }),
        ("BURROW_TCP_MUX", "off"),
        ("BURROW_WIRE_PROTOCOL", wire),
        // The native client's own resilience: `auto` would switch to frpc after two of these.
        ("BURROW_MODE", "native"),
    ]);
    let err = b.wait("error", T).await;
    assert_eq!(err["code"], code, "{err}");
    assert!(err["message"].as_str().unwrap_or_default().contains(says), "{err}");
    assert_eq!(err["fatal"], false);
    assert!(!err["hint"].as_str().unwrap_or_default().is_empty());
    b.wait_nth("reconnecting", 1, T).await;
    assert!(conns.load(Ordering::SeqCst) >= 2, "burrow retried");
    assert_eq!(b.count("connected"), 0);
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0, "clean exit, no panic");
    assert!(!b.output().contains("panicked"), "{}", b.output());
    b.assert_no_secret(&[TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length() {
    // Refused on the header: nothing of the body is waited for.
    expect_retried_error(frame(b'1', 10241, b"{}"), false, "protocol_error", "frame body of 10241 bytes exceeds").await;
    let huge = format!("frame body of {} bytes exceeds", i64::MAX);
    expect_retried_error(frame(b'1', i64::MAX, b""), false, "protocol_error", &huge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json() {
    expect_retried_error(
        frame(b'1', 9, b"{not json"),
        false,
        "protocol_error",
        "malformed LoginResp ('1') body: key must be a string",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_byte() {
    expect_retried_error(frame(b'Z', 2, b"{}"), false, "protocol_error", "unknown frp message type byte 0x5a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame() {
    expect_retried_error(
        frame(b'1', 100, b"{\"version\""),
        false,
        "protocol_error",
        "in the middle of a frame, before answering the login",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_tls() {
    expect_retried_error(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(), true, "tls_failed", "")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_address_is_server_unreachable_and_retried() {
    // Over every native transport, and never a reason for `auto` (the default) to fall back.
    for protocol in ["tcp", "websocket", "wss"] {
        let port = free_port();
        let mut b = Burrow::spawn(&[
            ("BURROW_SERVER_ADDR", &format!("127.0.0.1:{port}")),
            ("BURROW_SERVER_TOKEN", TOKEN),
            ("BURROW_SUBDOMAIN", "x"),
            ("BURROW_TRANSPORT_PROTOCOL", protocol),
        ]);
        let err = b.wait("error", T).await;
        assert_eq!(err["code"], "server_unreachable", "{protocol}");
        assert_eq!(err["fatal"], false);
        let r = b.wait_nth("reconnecting", 2, T).await;
        assert_eq!(r["attempt"], 3);
        // Said once, not once per attempt.
        assert_eq!(b.count("error"), 1);
        assert_eq!(b.count("fallback"), 0, "{protocol}");
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    }
}

/// A wire v2 "server": reads the magic, the ClientHello and the Login, answers what `reply`
/// makes of the ClientHello's payload, then closes.
async fn hostile_v2(reply: fn(&[u8]) -> Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    async fn frame(s: &mut tokio::net::TcpStream) -> (u16, Vec<u8>) {
        let mut hdr = [0u8; 8];
        s.read_exact(&mut hdr).await.unwrap();
        let len = u32::from_be_bytes(hdr[4..].try_into().unwrap());
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.unwrap();
        (u16::from_be_bytes([hdr[0], hdr[1]]), payload)
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut magic = [0u8; 7];
                s.read_exact(&mut magic).await.unwrap();
                assert_eq!(magic, v2::MAGIC);
                let (ty, hello) = frame(&mut s).await;
                assert_eq!(ty, v2::CLIENT_HELLO);
                let (ty, login) = frame(&mut s).await;
                assert_eq!((ty, &login[..2]), (v2::MESSAGE, &[0u8, 1][..]), "Login follows the hello");
                let _ = s.write_all(&reply(&hello)).await;
                let _ = s.shutdown().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    (port, n)
}

fn server_hello(algorithm: &str) -> Vec<u8> {
    let random = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 bytes
    let json = format!(
        r#"{{"selected":{{"message":{{"codec":"json"}},"crypto":{{"algorithm":"{algorithm}","serverRandom":"{random}"}}}}}}"#
    );
    let mut out = Vec::new();
    v2::encode_frame(v2::SERVER_HELLO, json.as_bytes(), &mut out).unwrap();
    out
}

async fn expect_v2_error(reply: fn(&[u8]) -> Vec<u8>, says: &str) {
    let (port, conns) = hostile_v2(reply).await;
    burrow_retries(port, conns, false, "v2", "protocol_error", says).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_server_hello_with_an_unknown_algorithm() {
    expect_v2_error(|_| server_hello("rot13-gcm"), "rot13-gcm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_truncated_and_oversized_frames() {
    // A ServerHello that announces 100 bytes and brings 10.
    expect_v2_error(|_| [&[0, 2, 0, 0, 0, 0, 0, 100][..], b"{\"selected"].concat(), "middle of a frame").await;
    // One that announces 2 GiB: refused on its header, nothing buffered.
    expect_v2_error(|_| vec![0, 2, 0, 0, 0x7f, 0xff, 0xff, 0xff], "exceeds the 65536-byte limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_record_that_fails_authentication() {
    // A correct hello and LoginResp, then a sealed NewProxyResp with one bit of its tag flipped.
    expect_v2_error(
        |client_hello| {
            let mut out = server_hello("aes-256-gcm");
            let sh = &out[v2::HEADER_LEN..].to_vec();
            let resp = LoginResp { version: "0.70.1".into(), run_id: "r".into(), error: String::new() };
            v2::encode_message(&Message::LoginResp(resp), &mut out).unwrap();
            let keys =
                v2::control_keys(TOKEN.as_bytes(), v2::Algorithm::Aes256Gcm, &v2::transcript_hash(client_hello, sh));
            let mut frame = Vec::new();
            v2::encode_message(&Message::ReqWorkConn(Default::default()), &mut frame).unwrap();
            v2::Sealer::new(v2::Algorithm::Aes256Gcm, &keys.server_to_client, &[3; 12]).seal(&frame, &mut out).unwrap();
            *out.last_mut().unwrap() ^= 1;
            out
        },
        "failed authentication",
    )
    .await;
}
