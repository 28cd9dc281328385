//! Fault injection between burrow and real frps 0.65.0: connections reset mid-transfer, a server
//! that drips one byte at a time, frps restarted under 100 transfers, descriptor leaks around
//! 1,000 connections, and memory with 100 readers that stopped reading. (The blackholed server is
//! in `wire.rs`.) Every test also checks, through `Burrow`'s drop, that nothing panicked and no
//! secret was printed.

use std::time::{Duration, Instant};

use crate::util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

/// A config with an http tunnel (subdomain `sub`) to `http` and a tcp tunnel on `remote` to `tcp`,
/// through frps at `server_port`.
/// Heartbeats are every second with a 4 s timeout unless `slow_heartbeat`.
fn config(dir: &tempdir::TempDir, server_port: u16, mux: bool, sub: &str, http: u16, tcp: u16, remote: u16) -> String {
    config_with(
        dir,
        server_port,
        mux,
        sub,
        http,
        tcp,
        remote,
        "transport.heartbeatInterval = 1\ntransport.heartbeatTimeout = 4\n",
    )
}

#[allow(clippy::too_many_arguments)]
fn config_with(
    dir: &tempdir::TempDir,
    server_port: u16,
    mux: bool,
    sub: &str,
    http: u16,
    tcp: u16,
    remote: u16,
    extra: &str,
) -> String {
    write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {server_port}\nauth.token = \"{TOKEN}\"\ntransport.tcpMux = {mux}\n{extra}\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {http}\nsubdomain = \"{sub}\"\n\n\
             [[proxies]]\nname = \"bulk\"\ntype = \"tcp\"\nlocalPort = {tcp}\nremotePort = {remote}\n"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// `n` bytes through the tcp tunnel: how many arrived and their SHA-256.
async fn download(port: u16, n: u64) -> (u64, [u8; 32]) {
    tcp_download(port, n).await.unwrap()
}

/// What [`download`] must return for `n` bytes.
fn expected(n: u64) -> (u64, [u8; 32]) {
    (n, pattern_sha256(n, n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_transfer_then_the_tunnel_returns_intact() {
    for mux in [true, false] {
        let frps = Frps::start(FrpsOpts { tcp_mux: mux, ..Default::default() }).await;
        let relay = fault_relay(frps.bind_port).await;
        let (up, tcp, remote) = (http_upstream().await, tcp_upstream().await, free_port());
        let dir = tempdir::TempDir::new();
        let cfg = config(&dir, relay.port, mux, "rst", up.addr.port(), tcp.port(), remote);
        let b = Burrow::spawn(&[("BURROW_CONFIG", &cfg)]);
        b.wait_nth("tunnel_up", 1, T).await;

        // A 1 GiB download, reset once a few MiB are through: it must end, short, not hang.
        let mut s = TcpStream::connect(("127.0.0.1", remote)).await.unwrap();
        s.write_all(b"D").await.unwrap();
        s.write_u64(1 << 30).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        while got < 4 << 20 {
            got += s.read(&mut buf).await.unwrap();
        }
        relay.reset_all();
        let drained = tokio::time::timeout(T, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => got += k,
                }
            }
        })
        .await;
        assert!(drained.is_ok(), "the public connection hung after the tunnel was reset (mux {mux})");
        assert!(got < 1 << 30);
        // Each direction's pump counts its reset on its own task, maybe after the close arrived.
        let counted = Instant::now() + T;
        while relay.resets.load(std::sync::atomic::Ordering::SeqCst) < 2 && Instant::now() < counted {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(relay.resets.load(std::sync::atomic::Ordering::SeqCst) >= 2);

        let down = b.wait("tunnel_down", T).await;
        assert!(!down["reason"].as_str().unwrap_or("").is_empty(), "{down}");
        b.wait_nth("tunnel_up", 3, T).await;
        let n = 8 << 20;
        assert_eq!(download(remote, n).await, expected(n), "after the reset (mux {mux})");
        let host = format!("rst.{SUBDOMAIN_HOST}");
        assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/again", T).await, "hello /again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dripping_one_byte_at_a_time_still_works() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let relay = fault_relay(frps.bind_port).await;
    relay.drip.store(true, std::sync::atomic::Ordering::SeqCst);
    let (up, tcp, remote) = (http_upstream().await, tcp_upstream().await, free_port());
    let dir = tempdir::TempDir::new();
    // TLS and yamux on: the TLS records, yamux frames and frp frames all arrive byte by byte.
    // frp's default heartbeat (30 s / 90 s): at a byte per millisecond a Pong queued behind a
    // transfer is late by seconds, and frp rightly counts only Pongs.
    let cfg = config_with(&dir, relay.port, true, "drip", up.addr.port(), tcp.port(), remote, "");
    let started = Instant::now();
    let b = Burrow::spawn(&[("BURROW_CONFIG", &cfg)]);
    b.wait_nth("tunnel_up", 1, Duration::from_secs(60)).await;
    let host = format!("drip.{SUBDOMAIN_HOST}");
    assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/slowly", Duration::from_secs(60)).await, "hello /slowly");
    let n = 1500;
    assert_eq!(download(remote, n).await, expected(n));
    eprintln!("drip: tunnel up and two transfers in {:?}", started.elapsed());
    assert_eq!(b.count("reconnecting"), 0, "a slow server is not a dead one: {}", b.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frps_restarted_during_100_transfers() {
    let mut frps = Frps::start(FrpsOpts::default()).await;
    let (up, tcp, remote) = (http_upstream().await, tcp_upstream().await, free_port());
    let dir = tempdir::TempDir::new();
    let cfg = config(&dir, frps.bind_port, true, "restart", up.addr.port(), tcp.port(), remote);
    let b = Burrow::spawn(&[("BURROW_CONFIG", &cfg)]);
    let pid = b.child.id().unwrap();
    b.wait_nth("tunnel_up", 1, T).await;
    let idle_fds = fd_count(pid);

    // 100 transfers of 256 MiB each, all past their first MiB when frps goes away.
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let mut transfers = Vec::new();
    for _ in 0..100 {
        let tx = tx.clone();
        transfers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", remote)).await.unwrap();
            s.write_all(b"D").await.unwrap();
            s.write_u64(256 << 20).await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            while got < 1 << 20 {
                got += s.read(&mut buf).await.unwrap();
            }
            tx.send(()).await.unwrap();
            // Then slowly, so that they are still running at the restart.
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(k) => got += k,
                }
            }
        }));
    }
    for _ in 0..100 {
        tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("100 transfers under way").unwrap();
    }
    frps.kill().await;
    for t in transfers {
        let got = tokio::time::timeout(T, t).await.expect("a transfer hung after frps went away").unwrap();
        assert!(got < 256 << 20);
    }
    b.wait("tunnel_down", T).await;
    frps.restart().await;
    b.wait_nth("tunnel_up", 3, T).await;

    // The tunnel is back and whole: 100 concurrent transfers, every byte checked.
    let n = 1 << 20;
    let want = expected(n);
    let again: Vec<_> = (0..100).map(|_| tokio::spawn(download(remote, n))).collect();
    for t in again {
        assert_eq!(tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap(), want);
    }
    // And the 100 dead transfers left nothing open behind them.
    let settled = wait_fds_at_most(pid, idle_fds + 2, Duration::from_secs(10)).await;
    assert!(settled <= idle_fds + 2, "{settled} descriptors open, {idle_fds} before the transfers");
}

/// The descriptor count once it has not changed for half a second.
async fn wait_fds_settled(pid: u32) -> usize {
    let mut last = fd_count(pid);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = fd_count(pid);
        if n == last {
            return n;
        }
        last = n;
    }
    last
}

/// Polls until the process has at most `limit` descriptors open; returns the last count.
async fn wait_fds_at_most(pid: u32, limit: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = fd_count(pid);
        if n <= limit || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_descriptor_leak_around_1000_connections() {
    // Without tcp_mux every work connection is a socket of its own, so a leak would show.
    let frps = Frps::start(FrpsOpts { tcp_mux: false, ..Default::default() }).await;
    let (app, tcp, remote) = (app_upstream("leak").await, tcp_upstream().await, free_port());
    let dir = tempdir::TempDir::new();
    let proxy = format!("127.0.0.1:{}", free_port());
    // The http tunnel goes to the in-process proxy, which routes to the app.
    let cfg = config(
        &dir,
        frps.bind_port,
        false,
        "leak",
        proxy.rsplit(':').next().unwrap().parse().unwrap(),
        tcp.port(),
        remote,
    );
    let routes = format!("/=http://{app}");
    let mut b = Burrow::spawn(&[("BURROW_CONFIG", &cfg), ("BURROW_PROXY_ADDR", &proxy), ("BURROW_ROUTES", &routes)]);
    let pid = b.child.id().unwrap();
    b.wait_nth("tunnel_up", 1, T).await;
    let host = format!("leak.{SUBDOMAIN_HOST}");
    vhost_get_ok(frps.vhost_port, &host, "/warm", T).await;
    // The baseline is burrow with its tunnels stopped: then every connection a tunnel made (the
    // work connections frps keeps pooled, the proxy's keep-alive upstreams) must be gone.
    b.send(r#"{"cmd":"stop"}"#).await;
    b.wait_nth("tunnel_down", 1, T).await;
    let before = wait_fds_settled(pid).await;
    b.send(r#"{"cmd":"start"}"#).await;
    b.wait_nth("tunnel_up", 3, T).await;
    vhost_get_ok(frps.vhost_port, &host, "/warm-again", T).await;
    let running_before = wait_fds_settled(pid).await;

    let mut peak = before;
    for round in 0..20 {
        // 25 tcp connections (connect, one echo round trip, close) and 25 HTTP requests, each on
        // a new public connection, at once.
        let mut tasks = Vec::new();
        for i in 0..25 {
            tasks.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(("127.0.0.1", remote)).await.unwrap();
                let msg = format!("Eround {round} conn {i}");
                s.write_all(msg.as_bytes()).await.unwrap();
                let mut back = vec![0u8; msg.len() - 1];
                s.read_exact(&mut back).await.unwrap();
                assert_eq!(&back[..], &msg.as_bytes()[1..]);
            }));
            let (port, host) = (frps.vhost_port, host.clone());
            tasks.push(tokio::spawn(async move {
                let (status, body) = vhost_get(port, &host, &format!("/r{round}/{i}")).await;
                assert_eq!(status, 200, "{body}");
                assert!(body.contains(&format!("/r{round}/{i}")), "{body}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        peak = peak.max(fd_count(pid));
    }
    // Running, burrow may hold what frps keeps pooled (up to 10 idle work connections per
    // tunnel, and frps' idle HTTP connections to the proxy with their upstreams), never more.
    let running = wait_fds_settled(pid).await;
    assert!(
        running <= running_before + 30,
        "{running} descriptors open while running after 1,000 connections, {running_before} before"
    );
    b.send(r#"{"cmd":"stop"}"#).await;
    b.wait_nth("tunnel_down", 3, T).await;
    let after = wait_fds_at_most(pid, before, Duration::from_secs(15)).await;
    eprintln!("descriptors with the tunnels stopped: {before} before, {after} after 1,000 connections (running: peak {peak}, {running} at the end)");
    assert!(after <= before, "{after} descriptors open after 1,000 connections, {before} before (peak {peak})");
}

/// Memory burrow may add for 100 readers that stopped reading: 48 MiB, about 480 KiB each.
/// Every hop applies backpressure — yamux stops sending once frps' window for the stream is used
/// up, and then the upstream is simply not read further — so a stalled connection holds only
/// its buffers: on the tcp path two 64 KiB copy buffers; on the proxy path hyper's upstream read
/// buffer (capped at 64 KiB; hyper's default of ~400 KiB made this 1.4 MiB per reader) and its
/// server write queue (128 KiB, the head-size cap), plus allocator slack. Measured: ~27 MiB.
const BOUND_KIB: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_100_stalled_readers() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let (app, tcp, remote) = (app_upstream("big").await, tcp_upstream().await, free_port());
    let dir = tempdir::TempDir::new();
    let proxy_port = free_port();
    let cfg = config(&dir, frps.bind_port, true, "stall", proxy_port, tcp.port(), remote);
    let (proxy, routes) = (format!("127.0.0.1:{proxy_port}"), format!("/=http://{app}"));
    let b = Burrow::spawn(&[("BURROW_CONFIG", &cfg), ("BURROW_PROXY_ADDR", &proxy), ("BURROW_ROUTES", &routes)]);
    let pid = b.child.id().unwrap();
    b.wait_nth("tunnel_up", 1, T).await;
    let host = format!("stall.{SUBDOMAIN_HOST}");
    vhost_get_ok(frps.vhost_port, &host, "/warm", T).await;
    let base = rss_kib(pid);

    // 50 public HTTP clients through the in-process proxy and 50 tcp-tunnel clients each start a
    // 1 GiB download, read its first 64 KiB, then stop reading but keep the connection open.
    let mut held = Vec::new();
    for i in 0..100 {
        let mut s;
        if i % 2 == 0 {
            s = TcpStream::connect(("127.0.0.1", frps.vhost_port)).await.unwrap();
            let req = format!("GET /download?n={} HTTP/1.1\r\nHost: {host}\r\n\r\n", 1u64 << 30);
            s.write_all(req.as_bytes()).await.unwrap();
        } else {
            s = TcpStream::connect(("127.0.0.1", remote)).await.unwrap();
            s.write_all(b"D").await.unwrap();
            s.write_u64(1 << 30).await.unwrap();
        }
        let mut buf = vec![0u8; 64 * 1024];
        s.read_exact(&mut buf).await.unwrap();
        held.push(s);
    }
    // Let every buffer on the way fill up, then look twice: memory must have stopped growing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = rss_kib(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = rss_kib(pid);
    eprintln!("RSS: {base} KiB before, {first} KiB then {second} KiB with 100 stalled readers");
    assert!(second.saturating_sub(base) < BOUND_KIB, "grew {} KiB with 100 stalled readers", second - base);
    assert!(second <= first + 1024, "still growing: {first} → {second} KiB");

    // The tunnel still serves everyone else meanwhile.
    assert!(vhost_get_ok(frps.vhost_port, &host, "/alive", T).await.contains("/alive"));
    drop(held);
}

/// `n` requests at once through the http tunnel, each answer checked (with long targets, so the
/// answers fill several encrypted, compressed frames, unless `short`).
async fn requests(n: usize, short: bool, vhost: u16, host: &str, round: &str) {
    let pad = if short { String::new() } else { "p".repeat(4000) };
    let all: Vec<_> = (0..n)
        .map(|i| {
            let (host, path) = (host.to_string(), format!("/{round}/{i}?{pad}"));
            tokio::spawn(async move { (vhost_get_ok(vhost, &host, &path, T).await, path) })
        })
        .collect();
    for r in all {
        let (body, path) = r.await.unwrap();
        assert_eq!(body, format!("hello {path}"), "{round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_proxy_on_encrypted_compressed_streams_survives_drip_reset_and_restart() {
    // The product's default path: frps' work streams served by burrow's own proxy (the tunnel's
    // local port is the proxy's address, which burrow serves in-process), here with frp's
    // per-proxy encryption and compression on them.
    let mut frps = Frps::start(FrpsOpts::default()).await;
    let relay = fault_relay(frps.bind_port).await;
    let up = http_upstream().await;
    let proxy_port = free_port();
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {proxy_port}\nsubdomain = \"inproc\"\n\
             transport.useEncryption = true\ntransport.useCompression = true\n",
            relay.port
        ),
    );
    let b = Burrow::spawn(&[
        ("BURROW_CONFIG", cfg.to_str().unwrap()),
        ("BURROW_PROXY_ADDR", &format!("127.0.0.1:{proxy_port}")),
        ("BURROW_ROUTES", &format!("/=http://{}", up.addr)),
    ]);
    b.wait("tunnel_up", T).await;
    let host = format!("inproc.{SUBDOMAIN_HOST}");
    requests(20, false, frps.vhost_port, &host, "plain").await;

    // A byte per millisecond: every frame layer (TLS, yamux, frp, AES-CFB, snappy, HTTP) gets its
    // input a byte at a time.
    relay.drip.store(true, std::sync::atomic::Ordering::SeqCst);
    requests(2, true, frps.vhost_port, &host, "drip").await;
    relay.drip.store(false, std::sync::atomic::Ordering::SeqCst);

    relay.reset_all();
    b.wait("tunnel_down", T).await;
    // A reset under yamux is the server lost, not a protocol error.
    let err = b.wait("error", T).await;
    assert_eq!((err["code"].as_str(), err["fatal"].as_bool()), (Some("server_unreachable"), Some(false)), "{err}");
    b.wait_nth("tunnel_up", 1, T).await;
    requests(20, false, frps.vhost_port, &host, "reset").await;

    frps.restart().await;
    b.wait_nth("tunnel_down", 1, T).await;
    b.wait_nth("tunnel_up", 2, T).await;
    requests(20, false, frps.vhost_port, &host, "restart").await;
}
