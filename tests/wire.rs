//! What burrow puts on the wire, and how it notices a server that vanished: checked against real
//! frps 0.65.0 through a recording / blackholing relay.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::util::*;

const T: Duration = Duration::from_secs(15);

/// The SNI host name in a TLS ClientHello, if any (`None` when the extension is absent).
fn client_hello_sni(b: &[u8]) -> Option<String> {
    assert_eq!(b[0], 0x16, "a TLS handshake record");
    assert_eq!(b[5], 0x01, "a ClientHello");
    let mut i = 5 + 4 + 2 + 32;
    i += 1 + b[i] as usize; // session id
    i += 2 + u16::from_be_bytes([b[i], b[i + 1]]) as usize; // cipher suites
    i += 1 + b[i] as usize; // compression methods
    let end = i + 2 + u16::from_be_bytes([b[i], b[i + 1]]) as usize;
    i += 2;
    while i + 4 <= end {
        let ty = u16::from_be_bytes([b[i], b[i + 1]]);
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if ty == 0 {
            let name_len = u16::from_be_bytes([b[i + 7], b[i + 8]]) as usize;
            return Some(String::from_utf8_lossy(&b[i + 9..i + 9 + name_len]).into_owned());
        }
        i += 4 + len;
    }
    None
}

async fn first_bytes(frps: &Frps, env: &[(&str, &str)]) -> Vec<u8> {
    let relay = fault_relay(frps.bind_port).await;
    let addr = format!("127.0.0.1:{}", relay.port);
    let mut e =
        vec![("BURROW_SERVER_ADDR", addr.as_str()), ("BURROW_SERVER_TOKEN", TOKEN), ("BURROW_SUBDOMAIN", "wire")];
    e.extend_from_slice(env);
    let mut b = Burrow::spawn(&e);
    b.wait("connected", T).await;
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    let bytes = relay.first_bytes.lock().unwrap().clone();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_stream_open_matches_frpc_byte_for_byte() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let b = first_bytes(&frps, &[("BURROW_TLS", "off")]).await;
    // WINDOW_UPDATE|SYN on stream 1 with delta 6 MiB − 256 KiB, as frpc 0.65.0 sends it.
    assert_eq!(&b[..12], &[0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x5c, 0x00, 0x00]);
    // Then the Login frame in a DATA frame on stream 1.
    assert_eq!(&b[12..16], &[0x00, 0x00, 0x00, 0x00]);
    assert_eq!(&b[16..20], &[0, 0, 0, 1]);
    assert_eq!(b[24], b'o', "the first frp message is Login");
}

/// The bytes real frpc 0.65.0 opens a session with, captured through the same relay as burrow's.
async fn frpc_first_bytes(frps: &Frps) -> Vec<u8> {
    let relay = fault_relay(frps.bind_port).await;
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n\
             transport.tls.enable = false\ntransport.tcpMux = true\ntransport.poolCount = 1\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = 9\nsubdomain = \"wire\"\n",
            relay.port
        ),
    );
    let mut frpc = tokio::process::Command::new(frp_dir().join("frpc"))
        .arg("-c")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let until = Instant::now() + T;
    while login_end(&relay.first_bytes.lock().unwrap()).is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = frpc.kill().await;
    let bytes = relay.first_bytes.lock().unwrap().clone();
    bytes
}

/// Where the Login frame ends: after yamux's 12-byte stream open, a 12-byte DATA header, then the
/// frp frame (a type byte, an 8-byte length, the JSON).
fn login_end(b: &[u8]) -> Option<usize> {
    let len = u64::from_be_bytes(b.get(25..33)?.try_into().ok()?) as usize;
    Some(33 + len).filter(|&end| b.len() >= end)
}

/// The Login's privilege key and timestamp differ by the second they were made: same-length
/// placeholders in their place; every other byte is kept.
fn masked(b: &[u8]) -> Vec<u8> {
    let mut out = b.to_vec();
    for (start, end, fill) in [(&b"\"privilege_key\":\""[..], b'"', b'k'), (&b"\"timestamp\":"[..], b',', b't')] {
        if let Some(i) = out.windows(start.len()).position(|w| w == start) {
            let from = i + start.len();
            let to = from + out[from..].iter().position(|&c| c == end).unwrap_or(0);
            out[from..to].fill(fill);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_opening_and_login_bytes_equal_real_frpcs() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let theirs = frpc_first_bytes(&frps).await;
    let ours = first_bytes(&frps, &[("BURROW_TLS", "off")]).await;
    let (t_end, o_end) = (login_end(&theirs).expect("frpc's Login"), login_end(&ours).expect("burrow's Login"));
    // yamux's stream open, the DATA header and the Login frame, byte for byte but for the key and
    // the timestamp.
    assert_eq!(
        masked(&ours[..o_end]),
        masked(&theirs[..t_end]),
        "burrow:\n{}\nfrpc:\n{}",
        String::from_utf8_lossy(&ours[..o_end]),
        String::from_utf8_lossy(&theirs[..t_end])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_only_for_host_names() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let by_ip = first_bytes(&frps, &[]).await;
    assert_eq!(client_hello_sni(&by_ip), None, "no SNI when connecting to an IP address");
    let named = first_bytes(&frps, &[("BURROW_TLS_SERVER_NAME", "frps.example.test")]).await;
    assert_eq!(client_hello_sni(&named).as_deref(), Some("frps.example.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_server_is_detected_by_the_heartbeat_and_the_tunnel_returns() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let relay = fault_relay(frps.bind_port).await;
    let up = http_upstream().await;
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\ntransport.heartbeatInterval = 1\ntransport.heartbeatTimeout = 3\n[[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {}\nsubdomain = \"hb\"\n",
            relay.port,
            up.addr.port()
        ),
    );
    let b = Burrow::spawn(&[("BURROW_CONFIG", cfg.to_str().unwrap())]);
    b.wait("tunnel_up", T).await;
    let host = format!("hb.{SUBDOMAIN_HOST}");
    vhost_get_ok(frps.vhost_port, &host, "/", T).await;

    relay.blackhole.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let down = b.wait("tunnel_down", T).await;
    assert!(down["reason"].as_str().unwrap().contains("heartbeat"), "{down}");
    let took = cut.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(6), "detected after {took:?}");
    relay.blackhole.store(false, Ordering::SeqCst);
    b.wait_nth("tunnel_up", 1, T).await;
    assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/back", T).await, "hello /back");
}

/// With the default heartbeat, a path that dies silently (a laptop asleep, a new network: old
/// connections dead, new ones hanging) is noticed during a half-minute outage, and the URL comes
/// back on its own soon after the path does, without a `reconnect`: retries stay close together
/// after a session that served. (How soon, beside frpc: bench/recovery.sh.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_outage_is_noticed_with_the_defaults_and_the_url_returns_on_its_own() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let relay = fault_relay(frps.bind_port).await;
    let up = http_upstream().await;
    let (addr, routes) = (format!("127.0.0.1:{}", relay.port), format!("/=http://{}", up.addr));
    let b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", addr.as_str()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "outage"),
        ("BURROW_ROUTES", routes.as_str()),
    ]);
    b.wait("tunnel_up", T).await;
    let host = format!("outage.{SUBDOMAIN_HOST}");
    vhost_get_ok(frps.vhost_port, &host, "/", T).await;

    relay.blackhole.store(true, Ordering::SeqCst);
    let down = b.wait("tunnel_down", Duration::from_secs(35)).await;
    assert!(down["reason"].as_str().unwrap().contains("heartbeat"), "{down}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    relay.blackhole.store(false, Ordering::SeqCst);
    let back = Instant::now();
    b.wait_nth("tunnel_up", 1, Duration::from_secs(30)).await;
    eprintln!("the tunnel was back {:?} after the path", back.elapsed());
    assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/back", T).await, "hello /back");
    // Each retry in the outage was at most RECOVERY_CAP (2 s) after the last.
    let delays: Vec<u64> =
        b.events().iter().filter(|e| e["event"] == "reconnecting").map(|e| e["delay_ms"].as_u64().unwrap()).collect();
    assert!(!delays.is_empty() && delays.iter().all(|&d| d <= 2000), "{delays:?}");
    assert_eq!(b.count("fallback"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_options_reach_frps() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\nuser = \"alice\"\n\
             [[proxies]]\nname = \"site\"\ntype = \"http\"\nlocalPort = {}\ncustomDomains = [\"app.example.test\"]\nlocations = [\"/docs\"]\n\
             hostHeaderRewrite = \"inner.local\"\nrequestHeaders.set.x-from = \"burrow\"\nresponseHeaders.set.x-served-by = \"frps\"\n",
            frps.bind_port,
            app.port()
        ),
    );
    let b = Burrow::spawn(&[("BURROW_CONFIG", cfg.to_str().unwrap())]);
    let up = b.wait("tunnel_up", T).await;
    assert_eq!(up["name"], "site");
    assert_eq!(up["url"], format!("http://app.example.test:{}", frps.vhost_port));
    assert!(frps.log().contains("alice.site"), "the wire name carries the user prefix");
    let body = vhost_get_ok(frps.vhost_port, "app.example.test", "/docs/intro", T).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["host"], "inner.local", "hostHeaderRewrite applied by frps");
    assert_eq!(v["headers"]["x-from"], "burrow");
    // Outside the location: frps answers 404 itself.
    assert_eq!(vhost_get(frps.vhost_port, "app.example.test", "/elsewhere").await.0, 404);
}
