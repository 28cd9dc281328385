//! The native client against real frps 0.65.0: tunnels, transports, integrity, failures.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(15);

fn env_for(frps: &Frps, sub: &str, local: std::net::SocketAddr, tls: bool, mux: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("BURROW_SERVER_ADDR".into(), frps.addr()),
        ("BURROW_SERVER_TOKEN".into(), TOKEN.into()),
        ("BURROW_SUBDOMAIN".into(), sub.into()),
        ("BURROW_TLS".into(), if tls { "on" } else { "off" }.into()),
        ("BURROW_TCP_MUX".into(), if mux { "on" } else { "off" }.into()),
        ("BURROW_MODE".into(), "native".into()),
    ];
    env.extend(route_all_to(local));
    env
}

fn spawn(env: &[(String, String)]) -> Burrow {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Burrow::spawn(&pairs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tunnel_serves_keep_alive_requests_on_one_work_conn() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    let mut b = spawn(&env_for(&frps, "app", up.addr, true, true));
    let connected = b.wait("connected", T).await;
    assert_eq!(connected["transport"], "tls+yamux");
    assert_eq!(connected["mode"], "native");
    let ev = b.wait("tunnel_up", T).await;
    assert_eq!(ev["name"], "web");
    assert_eq!(ev["type"], "http");
    assert_eq!(ev["url"], format!("http://app.{SUBDOMAIN_HOST}:{}", frps.vhost_port));
    let host = format!("app.{SUBDOMAIN_HOST}");
    let mut c = VhostClient::connect(frps.vhost_port, &host).await;
    for i in 0..5 {
        assert_eq!(c.get(&format!("/item/{i}?q=1")).await, (200, format!("hello /item/{i}?q=1")));
    }
    // frps reuses the idle work connection for sequential requests: one local connection served all.
    assert_eq!(up.conns.load(Ordering::SeqCst), 1, "sequential requests should share one work connection");
    assert!(b.events().iter().any(|e| e["event"] == "warning" && e["code"] == "tls_unverified"));
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    let evs = b.events();
    assert_eq!(evs.last().unwrap()["event"], "stopped");
    assert_eq!(evs.first().unwrap()["event"], "starting");
    b.assert_no_secret(&[TOKEN]);
}

/// Runs an http request and an encrypted+compressed tcp echo through one burrow.
async fn exercise_transport(frps: &Frps, tls: bool, mux: bool) {
    let up = http_upstream().await;
    let echo = tcp_upstream().await;
    let remote_port = free_port();
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\ntransport.tls.enable = {tls}\ntransport.tcpMux = {mux}\n\n\
             [[proxies]]\nname = \"site\"\ntype = \"http\"\nlocalPort = {}\nsubdomain = \"m{}{}\"\ntransport.useEncryption = true\n\n\
             [[proxies]]\nname = \"echo\"\ntype = \"tcp\"\nlocalPort = {}\nremotePort = {remote_port}\ntransport.useEncryption = true\ntransport.useCompression = true\n",
            frps.bind_port,
            up.addr.port(),
            tls as u8,
            mux as u8,
            echo.port()
        ),
    );
    let b = Burrow::spawn(&[("BURROW_CONFIG", cfg.to_str().unwrap())]);
    let c = b.wait("connected", T).await;
    let want = format!("{}{}", if tls { "tls" } else { "tcp" }, if mux { "+yamux" } else { "" });
    assert_eq!(c["transport"], want);
    b.wait_nth("tunnel_up", 1, T).await;
    let tcp_ev = b.events().into_iter().find(|e| e["event"] == "tunnel_up" && e["name"] == "echo").unwrap();
    assert_eq!(tcp_ev["remote_addr"], format!("127.0.0.1:{remote_port}"));
    let host = format!("m{}{}.{SUBDOMAIN_HOST}", tls as u8, mux as u8);
    assert_eq!(vhost_get(frps.vhost_port, &host, "/x").await, (200, "hello /x".to_string()));
    let mut s = TcpStream::connect(("127.0.0.1", remote_port)).await.unwrap();
    let msg: Vec<u8> = b"E".iter().copied().chain((0..100_000u32).map(|i| (i % 10) as u8 + b'0')).collect();
    // frps closes both sides when either side's copy ends (golib io.Join), so a half-close does
    // not cross frp: read the echo back before closing.
    let (mut r, mut w) = s.split();
    let mut back = vec![0u8; msg.len() - 1];
    let (wr, rd) = tokio::join!(w.write_all(&msg), tokio::time::timeout(T, r.read_exact(&mut back)));
    wr.unwrap();
    rd.expect("echo in time").unwrap();
    assert!(
        back == msg[1..],
        "echo through an encrypted, compressed tcp tunnel ({want}): got {} of {} bytes",
        back.len(),
        msg.len() - 1
    );
    b.assert_no_secret(&[TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_matrix_with_encryption_and_compression() {
    for mux in [true, false] {
        let frps = Frps::start(FrpsOpts { tcp_mux: mux, ..Default::default() }).await;
        for tls in [true, false] {
            exercise_transport(&frps, tls, mux).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_force_server_works_with_tls_and_refuses_plain() {
    let frps = Frps::start(FrpsOpts { tls_force: true, ..Default::default() }).await;
    exercise_transport(&frps, true, true).await;
    // Plain TCP to a tls.force frps: closed before LoginResp, reported with a hint, retried.
    let up = http_upstream().await;
    let mut b = spawn(&env_for(&frps, "plain", up.addr, false, true));
    let err = b.wait("error", T).await;
    assert_eq!(err["code"], "protocol_error");
    assert_eq!(err["fatal"], false);
    assert!(err["hint"].as_str().unwrap().contains("BURROW_TLS"), "{err}");
    b.wait_nth("reconnecting", 1, T).await;
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_64_mib_each_way() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let svc = tcp_upstream().await;
    let remote_port = free_port();
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!("serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n[[proxies]]\nname = \"bulk\"\ntype = \"tcp\"\nlocalPort = {}\nremotePort = {remote_port}\n", frps.bind_port, svc.port()),
    );
    let b = Burrow::spawn(&[("BURROW_CONFIG", cfg.to_str().unwrap())]);
    b.wait("tunnel_up", T).await;
    const N: u64 = 64 << 20;
    let upload = async {
        assert!(tcp_upload(remote_port, 7, N).await.unwrap(), "upload SHA-256");
    };
    let download = async {
        let (total, digest) = tcp_download(remote_port, N).await.unwrap();
        assert_eq!(total, N);
        assert_eq!(digest, pattern_sha256(N, N), "download SHA-256");
    };
    tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(upload, download) })
        .await
        .expect("64 MiB each way within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_http_connections() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    let b = spawn(&env_for(&frps, "many", up.addr, true, true));
    b.wait("tunnel_up", T).await;
    let host = format!("many.{SUBDOMAIN_HOST}");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let host = host.clone();
            let port = frps.vhost_port;
            tokio::spawn(async move { vhost_get(port, &host, &format!("/c/{i}")).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(60), t).await.expect("answer in time").unwrap();
        assert_eq!(r, (200, format!("hello /c/{i}")));
    }
}

/// One public user opening thousands of requests that never send their body must not take the
/// tunnel down for everyone: work streams beyond `BURROW_MAX_STREAMS` wait, the session lives on,
/// and requests are served again once the stalled ones go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_beyond_the_stream_cap_wait_and_the_session_lives() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    let mut env = env_for(&frps, "cap", up.addr, true, true);
    env.push(("BURROW_MAX_STREAMS".into(), "20".into()));
    let mut b = spawn(&env);
    b.wait("tunnel_up", T).await;
    let host = format!("cap.{SUBDOMAIN_HOST}");
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(("127.0.0.1", frps.vhost_port)).await.unwrap();
        let head = format!("POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    // The cap holds: 20 work streams are served and the other requests wait.
    let until = Instant::now() + T;
    let mut peak = 0;
    loop {
        let k = b.count("status");
        b.send(r#"{"cmd":"status"}"#).await;
        let st = b.wait_nth("status", k, T).await;
        assert_eq!(st["streams"]["max"], 20, "{st}");
        let active = st["streams"]["active"].as_u64().expect("the status counts work streams");
        assert!(active <= 20, "{st}");
        peak = peak.max(active);
        if peak == 20 || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(peak, 20, "the stalled requests hold every stream the cap allows");
    drop(stalled);
    assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/after", T).await, "hello /after");
    assert_eq!(b.count("connected"), 1, "the session never ended: {:#?}", b.events());
    assert_eq!(b.count("tunnel_down"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_fatal_after_exactly_one_login() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let relay = counting_relay(frps.bind_port).await;
    let up = http_upstream().await;
    let wrong = "wrong-token-c0ffee";
    let routes = format!("/=http://{}", up.addr);
    let mut b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &format!("127.0.0.1:{}", relay.port)),
        ("BURROW_SERVER_TOKEN", wrong),
        ("BURROW_SUBDOMAIN", "denied"),
        ("BURROW_ROUTES", &routes),
    ]);
    assert_eq!(b.wait_exit(T).await, 3);
    let errors: Vec<_> = b.events().into_iter().filter(|e| e["event"] == "error").collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "auth_failed");
    assert_eq!(errors[0]["fatal"], true);
    assert_eq!(b.events().last().unwrap()["event"], "stopped");
    assert_eq!(b.count("reconnecting"), 0);
    assert_eq!(relay.conns.load(Ordering::SeqCst), 1, "exactly one login attempt");
    b.assert_no_secret(&[wrong, TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_frps_restart_with_the_same_url() {
    for mux in [true, false] {
        let mut frps = Frps::start(FrpsOpts { tcp_mux: mux, ..Default::default() }).await;
        let up = http_upstream().await;
        let b = spawn(&env_for(&frps, "back", up.addr, true, mux));
        let first = b.wait("tunnel_up", T).await;
        let host = format!("back.{SUBDOMAIN_HOST}");
        vhost_get_ok(frps.vhost_port, &host, "/before", T).await;

        frps.kill().await;
        let down = b.wait("tunnel_down", T).await;
        assert_eq!(down["name"], "web");
        b.wait_nth("reconnecting", 1, T).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        frps.restart().await;
        let back_at = Instant::now();
        assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/after", Duration::from_secs(10)).await, "hello /after");
        assert!(back_at.elapsed() < Duration::from_secs(10));
        let second = b.wait_nth("tunnel_up", 1, T).await;
        assert_eq!(second["url"], first["url"], "same public URL after reconnect");
        // Order per the contract: tunnel_down, reconnecting…, connected, tunnel_up.
        let names: Vec<String> = b.events().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect();
        let down_i = names.iter().position(|n| n == "tunnel_down").unwrap();
        let rec_i = names.iter().position(|n| n == "reconnecting").unwrap();
        let conn2_i = names.iter().enumerate().filter(|(_, n)| *n == "connected").nth(1).unwrap().0;
        let up2_i = names.iter().enumerate().filter(|(_, n)| *n == "tunnel_up").nth(1).unwrap().0;
        assert!(down_i < rec_i && rec_i < conn2_i && conn2_i < up2_i, "{names:?}");
        let delays: Vec<u64> = b
            .events()
            .iter()
            .filter(|e| e["event"] == "reconnecting")
            .map(|e| e["delay_ms"].as_u64().unwrap())
            .collect();
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "delays grow: {delays:?}");
    }
}

/// frps half-closes a yamux stream with WINDOW_UPDATE|FIN when its HTTP transport drops a work
/// connection (it keeps 5 idle). burrow must see that end, or every such stream, and the local
/// connection behind it, stays open for good (vendor/yamux fixes the wake-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_streams_closed_by_frps_end() {
    let frps = Frps::start(FrpsOpts::default()).await;
    for in_process in [true, false] {
        let up = http_upstream().await;
        let sub = if in_process { "fin1" } else { "fin2" };
        let b = if in_process {
            spawn(&env_for(&frps, sub, up.addr, true, true))
        } else {
            let dir = tempdir::TempDir::new();
            let cfg = write_file(
                dir.path(),
                "frpc.toml",
                &format!("serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n[[proxies]]\nname = \"p\"\ntype = \"http\"\nlocalPort = {}\nsubdomain = \"{sub}\"\n", frps.bind_port, up.addr.port()),
            );
            let b = Burrow::spawn(&[("BURROW_CONFIG", cfg.to_str().unwrap()), ("BURROW_MODE", "native")]);
            std::mem::forget(dir);
            b
        };
        b.wait("tunnel_up", T).await;
        let host = format!("{sub}.{SUBDOMAIN_HOST}");
        // 30 requests at once: frps opens about 30 work streams and keeps 5 of them afterwards.
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let host = host.clone();
                let port = frps.vhost_port;
                tokio::spawn(async move { vhost_get(port, &host, &format!("/fin/{i}")).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().0, 200);
        }
        assert!(up.conns.load(Ordering::SeqCst) >= 10, "the burst used many work connections");
        let deadline = Instant::now() + Duration::from_secs(10);
        while up.open.load(Ordering::SeqCst) > 8 {
            assert!(
                Instant::now() < deadline,
                "{} local connections still open 10 s after frps closed their work streams (in_process={in_process})",
                up.open.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
