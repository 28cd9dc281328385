//! Soak: mixed HTTP, WebSocket and bulk traffic through burrow and real frps for a long time, with
//! frps restarted on a schedule. Not part of the suite (`#[ignore]`); run it with `bench/soak.sh`.
//!
//! Settings (environment): `SOAK_MINUTES` (30), `SOAK_RESTART_SECS` (300), `SOAK_SAMPLE_SECS`
//! (30). It prints a sample line per period (RSS, descriptors, requests, errors, reconnects) and a
//! summary, and fails when a failure happens outside the seconds after a restart, when the tunnel
//! does not come back after a restart, or when burrow panics or exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Failures within this long after a restart are the restart's doing (the public connections
/// frps had are gone); later ones count against burrow.
const RESTART_GRACE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Tally {
    http_ok: AtomicU64,
    ws_ok: AtomicU64,
    bulk_ok: AtomicU64,
    bulk_bytes: AtomicU64,
    failed_in_restart: AtomicU64,
    failed: AtomicU64,
    /// When frps was last restarted.
    restart_at: Mutex<Option<Instant>>,
    last_failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        let in_restart = self.restart_at.lock().unwrap().is_some_and(|t| t.elapsed() < RESTART_GRACE);
        if in_restart {
            self.failed_in_restart.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut l = self.last_failures.lock().unwrap();
            if l.len() < 20 {
                l.push(what);
            }
        }
    }
}

/// One GET on a new connection to frps' vhost port; never panics.
async fn try_get(port: u16, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

async fn http_worker(port: u16, host: String, tally: Arc<Tally>, until: Instant, id: usize) {
    let mut n = 0u64;
    while Instant::now() < until {
        let path = format!("/soak/{id}/{n}");
        let r = tokio::time::timeout(Duration::from_secs(10), try_get(port, &host, &path)).await;
        match r {
            Ok(Ok((200, body))) if body.contains(&path) => {
                tally.http_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok((status, body))) => {
                tally.fail(format!("http {path}: {status} {}", body.chars().take(80).collect::<String>()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => {
                tally.fail(format!("http {path}: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => tally.fail(format!("http {path}: no answer in 10 s")),
        }
        n += 1;
    }
}

async fn ws_session(port: u16, host: &str, msgs: usize) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(ws_request(host, "/api/socket"), stream).await.map_err(|e| e.to_string())?;
    for i in 0..msgs {
        ws.send(Message::Text(format!("m{i}"))).await.map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t == format!("soak:m{i}") => {}
            other => return Err(format!("echo {i}: {other:?}")),
        }
    }
    ws.close(None).await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn ws_worker(port: u16, host: String, tally: Arc<Tally>, until: Instant) {
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(20), ws_session(port, &host, 200)).await {
            Ok(Ok(())) => {
                tally.ws_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tally.fail(format!("websocket: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => tally.fail("websocket: stuck for 20 s".into()),
        }
    }
}

async fn bulk_once(port: u16, n: u64, up: bool) -> Result<(), String> {
    if up {
        match tcp_upload(port, n, n).await.map_err(|e| e.to_string())? {
            true => Ok(()),
            false => Err("upload arrived corrupted".into()),
        }
    } else {
        match tcp_download(port, n).await.map_err(|e| e.to_string())? {
            (got, _) if got != n => Err(format!("download ended after {got} of {n} bytes")),
            (_, digest) if digest != pattern_sha256(n, n) => Err("download arrived corrupted".into()),
            _ => Ok(()),
        }
    }
}

async fn bulk_worker(port: u16, tally: Arc<Tally>, until: Instant, up: bool) {
    let n = 32 << 20;
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(60), bulk_once(port, n, up)).await {
            Ok(Ok(())) => {
                tally.bulk_ok.fetch_add(1, Ordering::Relaxed);
                tally.bulk_bytes.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tally.fail(format!("bulk {}: {e}", if up { "upload" } else { "download" }));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => tally.fail("bulk: stuck for 60 s".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 30-minute soak; run bench/soak.sh"]
async fn soak() {
    let minutes = setting("SOAK_MINUTES", 30);
    let restart_every = Duration::from_secs(setting("SOAK_RESTART_SECS", 300));
    let sample_every = Duration::from_secs(setting("SOAK_SAMPLE_SECS", 30));
    let mut frps = Frps::start(FrpsOpts::default()).await;
    let (app, tcp, remote, proxy) = (app_upstream("soak").await, tcp_upstream().await, free_port(), free_port());
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{TOKEN}\"\n\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {proxy}\nsubdomain = \"soak\"\n\n\
             [[proxies]]\nname = \"bulk\"\ntype = \"tcp\"\nlocalPort = {}\nremotePort = {remote}\n",
            frps.bind_port,
            tcp.port()
        ),
    );
    let (proxy_addr, routes) = (format!("127.0.0.1:{proxy}"), format!("/=http://{app}"));
    let mut b = Burrow::spawn(&[
        ("BURROW_CONFIG", cfg.to_str().unwrap()),
        ("BURROW_PROXY_ADDR", &proxy_addr),
        ("BURROW_ROUTES", &routes),
        ("BURROW_MODE", "native"),
    ]);
    let pid = b.child.id().unwrap();
    b.wait_nth("tunnel_up", 1, Duration::from_secs(20)).await;
    let host = format!("soak.{SUBDOMAIN_HOST}");
    vhost_get_ok(frps.vhost_port, &host, "/warm", Duration::from_secs(20)).await;

    let start = Instant::now();
    let until = start + Duration::from_secs(minutes * 60);
    let tally = Arc::new(Tally::default());
    let mut workers = Vec::new();
    for id in 0..8 {
        workers.push(tokio::spawn(http_worker(frps.vhost_port, host.clone(), tally.clone(), until, id)));
    }
    for _ in 0..4 {
        workers.push(tokio::spawn(ws_worker(frps.vhost_port, host.clone(), tally.clone(), until)));
    }
    workers.push(tokio::spawn(bulk_worker(remote, tally.clone(), until, false)));
    workers.push(tokio::spawn(bulk_worker(remote, tally.clone(), until, true)));

    println!("soak: {minutes} min, frps restarted every {} s, burrow pid {pid}", restart_every.as_secs());
    println!(
        "| t (s) | RSS MiB | fds | http ok | ws ok | bulk ok | failures (in restart) | failures (other) | reconnects |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (mut rss, mut fds) = (Vec::new(), Vec::new());
    let mut restarts = 0usize;
    let mut next_restart = start + restart_every;
    let mut next_sample = start;
    let mut tunnel_missing = Vec::new();
    while Instant::now() < until {
        if Instant::now() >= next_sample {
            let (r, f) = (rss_kib(pid), fd_count(pid));
            rss.push(r);
            fds.push(f);
            println!(
                "| {} | {:.1} | {f} | {} | {} | {} | {} | {} | {} |",
                start.elapsed().as_secs(),
                r as f64 / 1024.0,
                tally.http_ok.load(Ordering::Relaxed),
                tally.ws_ok.load(Ordering::Relaxed),
                tally.bulk_ok.load(Ordering::Relaxed),
                tally.failed_in_restart.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                b.count("reconnecting"),
            );
            next_sample += sample_every;
        }
        if Instant::now() >= next_restart && next_restart + Duration::from_secs(30) < until {
            *tally.restart_at.lock().unwrap() = Some(Instant::now());
            let ups_before = b.count("tunnel_up");
            frps.kill().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            frps.restart().await;
            restarts += 1;
            println!("| {} | frps restarted (#{restarts}) | | | | | | | |", start.elapsed().as_secs());
            // Both tunnels must come back: two more tunnel_up events.
            let want = ups_before + 2;
            let deadline = Instant::now() + RESTART_GRACE;
            while b.count("tunnel_up") < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if b.count("tunnel_up") < want {
                tunnel_missing.push(restarts);
            }
            next_restart += restart_every;
        }
        if let Ok(Some(status)) = b.child.try_wait() {
            panic!("burrow exited during the soak: {status}\n{}", b.output());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for w in workers {
        w.await.expect("a traffic worker panicked");
    }
    let (rss_min, rss_max) = (*rss.iter().min().unwrap(), *rss.iter().max().unwrap());
    let (fd_min, fd_max) = (*fds.iter().min().unwrap(), *fds.iter().max().unwrap());
    println!("\nsummary after {:.1} min:", start.elapsed().as_secs_f64() / 60.0);
    println!(
        "- requests: {} HTTP, {} WebSocket sessions of 200 messages, {} bulk transfers ({} MiB, SHA-256 checked)",
        tally.http_ok.load(Ordering::Relaxed),
        tally.ws_ok.load(Ordering::Relaxed),
        tally.bulk_ok.load(Ordering::Relaxed),
        tally.bulk_bytes.load(Ordering::Relaxed) >> 20
    );
    println!(
        "- frps restarts: {restarts}; reconnects: {}; tunnel back within {} s after each: {}",
        b.count("reconnecting"),
        RESTART_GRACE.as_secs(),
        if tunnel_missing.is_empty() { "yes".to_string() } else { format!("NO after restarts {tunnel_missing:?}") }
    );
    println!(
        "- failures within {} s of a restart: {}; other failures: {}",
        RESTART_GRACE.as_secs(),
        tally.failed_in_restart.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
    for f in tally.last_failures.lock().unwrap().iter() {
        println!("  - {f}");
    }
    println!(
        "- RSS {:.1}–{:.1} MiB (first {:.1}, last {:.1}); descriptors {fd_min}–{fd_max} (first {}, last {})",
        rss_min as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        rss[0] as f64 / 1024.0,
        rss[rss.len() - 1] as f64 / 1024.0,
        fds[0],
        fds[fds.len() - 1]
    );
    assert!(tunnel_missing.is_empty(), "the tunnel did not come back after restarts {tunnel_missing:?}");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "failures outside restarts");
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(10)).await, 0);
}
