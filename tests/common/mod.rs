//! Real peers for the integration tests: frps 0.65.0 (fetched by resources/fetch-frp.sh), local
//! HTTP/TCP services on loopback, and the burrow binary itself with its JSON event stream.
#![allow(dead_code, clippy::type_complexity)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub const TOKEN: &str = "test-frp-token-5f1e";

/// Directory with the pinned frps/frpc; fetches them with the project's script when missing.
pub fn frp_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/fetch-frp.sh");
        let out = std::process::Command::new("bash").arg(&script).stderr(Stdio::inherit()).output();
        match out {
            Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            Ok(o) => panic!(
                "frps 0.65.0 is needed and {} failed ({}); run it by hand to see why",
                script.display(),
                o.status
            ),
            Err(e) => panic!("frps 0.65.0 is needed and {} could not run: {e}", script.display()),
        }
    })
    .clone()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// frps settings for one test.
#[derive(Clone)]
pub struct FrpsOpts {
    pub tcp_mux: bool,
    pub tls_force: bool,
    pub token: String,
    pub extra: String,
}

impl Default for FrpsOpts {
    fn default() -> Self {
        Self { tcp_mux: true, tls_force: false, token: TOKEN.into(), extra: String::new() }
    }
}

/// A real frps on loopback; killed when dropped.
pub struct Frps {
    pub bind_port: u16,
    pub vhost_port: u16,
    pub dir: tempdir::TempDir,
    opts: FrpsOpts,
    child: Option<Child>,
}

pub const SUBDOMAIN_HOST: &str = "burrow.test";

impl Frps {
    pub async fn start(opts: FrpsOpts) -> Frps {
        Self::start_on(free_port(), opts).await
    }

    pub async fn start_on(bind_port: u16, opts: FrpsOpts) -> Frps {
        let mut f = Frps { bind_port, vhost_port: free_port(), dir: tempdir::TempDir::new(), opts, child: None };
        f.launch().await;
        f
    }

    async fn launch(&mut self) {
        let cfg = format!(
            "bindAddr = \"127.0.0.1\"\nbindPort = {}\nvhostHTTPPort = {}\nsubDomainHost = \"{SUBDOMAIN_HOST}\"\nauth.token = \"{}\"\ntransport.tcpMux = {}\ntransport.tls.force = {}\nlog.to = \"{}\"\nlog.level = \"debug\"\n{}\n",
            self.bind_port,
            self.vhost_port,
            self.opts.token,
            self.opts.tcp_mux,
            self.opts.tls_force,
            self.dir.path().join("frps.log").display(),
            self.opts.extra
        );
        let path = self.dir.path().join("frps.toml");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new(frp_dir().join("frps"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn frps");
        self.child = Some(child);
        wait_port(self.bind_port).await;
        wait_port(self.vhost_port).await;
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("frps.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.bind_port)
    }
}

pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Minimal temporary directory (removed on drop).
pub mod tempdir {
    use std::path::{Path, PathBuf};
    pub struct TempDir(PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("burrow-test-{}-{}", std::process::id(), rand::random::<u64>()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A local HTTP/1.1 server (hyper) answering `hello <path>`; counts accepted connections.
pub struct HttpUpstream {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicUsize>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
}

pub async fn http_upstream() -> HttpUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (c, o) = (conns.clone(), open.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                struct Dec(Arc<AtomicUsize>);
                impl Drop for Dec {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _dec = Dec(o);
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("hello {}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    HttpUpstream { addr, conns, open }
}

/// A local TCP service: `E` echoes until EOF; `U<n:u64>` reads n bytes and answers their SHA-256;
/// `D<n:u64>` sends n pseudo-random bytes (seeded by n) and closes.
pub async fn tcp_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut cmd = [0u8; 1];
                if s.read_exact(&mut cmd).await.is_err() {
                    return;
                }
                match cmd[0] {
                    b'E' => {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    }
                    b'U' => {
                        // A cut upload just ends: the client sees no digest and reports it.
                        let Ok(n) = s.read_u64().await else { return };
                        let mut h = <sha2::Sha256 as sha2::Digest>::new();
                        let mut left = n;
                        let mut buf = vec![0u8; 64 * 1024];
                        while left > 0 {
                            match s.read(&mut buf[..(left.min(65536) as usize)]).await {
                                Ok(k) if k > 0 => {
                                    sha2::Digest::update(&mut h, &buf[..k]);
                                    left -= k as u64;
                                }
                                _ => return,
                            }
                        }
                        let d = sha2::Digest::finalize(h);
                        let _ = s.write_all(&d).await;
                        let _ = s.shutdown().await;
                    }
                    b'D' => {
                        let Ok(n) = s.read_u64().await else { return };
                        let mut g = Pattern::new(n);
                        let mut left = n;
                        let mut buf = vec![0u8; 64 * 1024];
                        while left > 0 {
                            let k = left.min(buf.len() as u64) as usize;
                            g.fill(&mut buf[..k]);
                            if s.write_all(&buf[..k]).await.is_err() {
                                return;
                            }
                            left -= k as u64;
                        }
                        let _ = s.shutdown().await;
                    }
                    _ => {}
                }
            });
        }
    });
    addr
}

/// SHA-256 of the first `n` bytes of `Pattern::new(seed)`, computed in 64 KiB pieces.
pub fn pattern_sha256(seed: u64, n: u64) -> [u8; 32] {
    use sha2::Digest;
    let (mut g, mut h, mut buf, mut left) = (Pattern::new(seed), sha2::Sha256::new(), vec![0u8; 64 * 1024], n);
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..k]);
        h.update(&buf[..k]);
        left -= k as u64;
    }
    h.finalize().into()
}

/// Asks [`tcp_upstream`] (through whatever tunnel listens on `port`) for `n` bytes with `D`;
/// returns how many arrived before the end and their SHA-256. Compare with
/// `pattern_sha256(n, n)`: the service seeds its pattern with `n`.
pub async fn tcp_download(port: u16, n: u64) -> std::io::Result<(u64, [u8; 32])> {
    use sha2::Digest;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"D").await?;
    s.write_u64(n).await?;
    let (mut h, mut buf, mut got) = (sha2::Sha256::new(), vec![0u8; 64 * 1024], 0u64);
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            return Ok((got, h.finalize().into()));
        }
        h.update(&buf[..k]);
        got += k as u64;
    }
}

/// Sends `n` bytes of `Pattern::new(seed)` to [`tcp_upstream`] with `U`; true when the digest it
/// answers is that of what was sent.
pub async fn tcp_upload(port: u16, seed: u64, n: u64) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"U").await?;
    s.write_u64(n).await?;
    let (mut g, mut buf, mut left) = (Pattern::new(seed), vec![0u8; 64 * 1024], n);
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..k]);
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    let mut digest = [0u8; 32];
    s.read_exact(&mut digest).await?;
    Ok(digest == pattern_sha256(seed, n))
}

/// A WebSocket handshake request for `ws://{host}{path}`, to send with
/// `tokio_tungstenite::client_async` over a connection to frps' vhost port or the proxy.
pub fn ws_request(host: &str, path: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    tokio_tungstenite::tungstenite::handshake::client::Request::builder()
        .uri(format!("ws://{host}{path}"))
        .header("host", host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), cheap enough for hundreds of MiB.
pub struct Pattern(u64);
impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// An HTTP/1.1 client connection to frps' vhost port for `host`.
pub struct VhostClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl VhostClient {
    pub async fn connect(vhost_port: u16, host: &str) -> VhostClient {
        let s = TcpStream::connect(("127.0.0.1", vhost_port)).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        VhostClient { sender, host: host.into() }
    }

    pub async fn get(&mut self, path: &str) -> (u16, String) {
        self.sender.ready().await.expect("connection to frps usable");
        let req = hyper::Request::get(path).header("host", &self.host).body(Full::new(Bytes::new())).unwrap();
        let resp = self.sender.send_request(req).await.expect("request through frps");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// GET through frps on a fresh connection.
pub async fn vhost_get(vhost_port: u16, host: &str, path: &str) -> (u16, String) {
    VhostClient::connect(vhost_port, host).await.get(path).await
}

/// Retries `vhost_get` until it answers 200 or the deadline passes.
pub async fn vhost_get_ok(vhost_port: u16, host: &str, path: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            match TcpStream::connect(("127.0.0.1", vhost_port)).await {
                Ok(_) => Some(vhost_get(vhost_port, host, path).await),
                Err(_) => None,
            }
        })
        .await;
        if let Ok(Some((200, body))) = r {
            return body;
        }
        assert!(Instant::now() < deadline, "no 200 for {host}{path} within {within:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The burrow binary under test, with its stdout events collected.
pub struct Burrow {
    pub child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<String>>,
    stdin: Option<tokio::process::ChildStdin>,
    pub env: Vec<(String, String)>,
}

impl Burrow {
    pub fn spawn(env: &[(&str, &str)]) -> Burrow {
        Self::spawn_with_args(env, &[])
    }

    pub fn spawn_with_args(env: &[(&str, &str)], args: &[&str]) -> Burrow {
        Self::spawn_exe(Path::new(env!("CARGO_BIN_EXE_burrow")), env, args)
    }

    pub fn spawn_exe(exe: &Path, env: &[(&str, &str)], args: &[&str]) -> Burrow {
        let mut cmd = Command::new(exe);
        cmd.args(args);
        cmd.env_clear();
        for k in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("BURROW_LOG", "debug");
        // Never the default 127.0.0.1:8080: tests run in parallel.
        if !env.iter().any(|(k, _)| *k == "BURROW_PROXY_ADDR") {
            cmd.env("BURROW_PROXY_ADDR", format!("127.0.0.1:{}", free_port()));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn burrow");
        let events = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let (ev, rw) = (events.clone(), raw.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                rw.lock().unwrap().push_str(&format!("{line}\n"));
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                assert!(v.get("event").is_some() && v.get("ts").is_some(), "event without event/ts: {line}");
                ev.lock().unwrap().push(v);
            }
        });
        let err = child.stderr.take().unwrap();
        let rw = raw.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                rw.lock().unwrap().push_str(&format!("[stderr] {line}\n"));
            }
        });
        let stdin = child.stdin.take();
        Burrow { child, events, raw, stdin, env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Everything burrow wrote on stdout and stderr so far.
    pub fn output(&self) -> String {
        self.raw.lock().unwrap().clone()
    }

    pub fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    /// Waits for the `nth` (0-based) event named `event`.
    pub async fn wait_nth(&self, event: &str, nth: usize, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.events().into_iter().filter(|e| e["event"] == event).nth(nth) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {event:?} #{nth} within {within:?}; output so far:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait(&self, event: &str, within: Duration) -> Value {
        self.wait_nth(event, 0, within).await
    }

    pub async fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin open");
        s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        s.flush().await.unwrap();
    }

    /// Closes stdin (the host going away) and waits for the exit code.
    pub async fn close_stdin_and_wait(&mut self, within: Duration) -> i32 {
        self.stdin = None;
        self.wait_exit(within).await
    }

    pub async fn wait_exit(&mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("burrow did not exit within {within:?}; output:\n{}", self.output()))
            .unwrap();
        // Give the stdout reader a moment to drain the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status.code().unwrap_or(-1)
    }

    /// Asserts that no secret appears anywhere in burrow's output.
    pub fn assert_no_secret(&self, secrets: &[&str]) {
        let out = self.output();
        for s in secrets {
            assert!(!out.contains(s), "secret {s:?} leaked into burrow's output:\n{out}");
        }
    }
}

impl Drop for Burrow {
    /// Every test, whatever it checks, also checks that the secrets it gave burrow (frp token, API
    /// token, secrets in its config file) never appeared on burrow's stdout or stderr.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let mut secrets: Vec<String> = self
            .env
            .iter()
            .filter(|(k, v)| (k.ends_with("_TOKEN") || k.ends_with("_PASSWORD")) && v.len() >= 6)
            .map(|(_, v)| v.clone())
            .collect();
        if let Some((_, cfg)) = self.env.iter().find(|(k, _)| k == "BURROW_CONFIG") {
            let text = std::fs::read_to_string(cfg).unwrap_or_default();
            for l in text.lines().filter(|l| l.contains("token") || l.contains("assword")) {
                if let Some(v) =
                    l.split('=').nth(1).map(|v| v.trim().trim_matches('"').to_string()).filter(|v| v.len() >= 6)
                {
                    secrets.push(v);
                }
            }
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        self.assert_no_secret(&refs);
        // A panic in any task is a bug even when the process survives it.
        assert!(!self.output().contains("panicked at"), "burrow panicked:\n{}", self.output());
        // And every event it printed follows the published schema.
        for e in self.events() {
            if let Err(why) = validate_event(&e) {
                panic!("event does not match resources/events.schema.json: {why}\n{e}");
            }
        }
    }
}

/// Checks one event against resources/events.schema.json.
pub fn validate_event(e: &Value) -> Result<(), String> {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = V.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/events.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    });
    if v.is_valid(e) {
        Ok(())
    } else {
        Err(v.iter_errors(e).map(|err| err.to_string()).collect::<Vec<_>>().join("; "))
    }
}

/// A TCP relay in front of a server that counts the connections it forwards.
pub struct CountingRelay {
    pub port: u16,
    pub conns: Arc<AtomicUsize>,
}

pub async fn counting_relay(target: u16) -> CountingRelay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut t) = TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                }
            });
        }
    });
    CountingRelay { port, conns }
}

/// Environment that sends everything the in-process proxy gets to `upstream`.
pub fn route_all_to(upstream: std::net::SocketAddr) -> Vec<(String, String)> {
    vec![
        ("BURROW_PROXY_ADDR".into(), format!("127.0.0.1:{}", free_port())),
        ("BURROW_ROUTES".into(), format!("/=http://{upstream}")),
    ]
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A local app server like the desktop app's: an HTTP echo (`{name, method, uri, headers}` as JSON),
/// `/sse` (5 server-sent events 200 ms apart), `POST /upload` (answers `{bytes, sha256}`),
/// `/download?n=N` (N pattern bytes, streamed), and WebSocket echo on any path (close codes echoed).
pub async fn app_upstream(name: &'static str) -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::{combinators::BoxBody, StreamBody};
    use hyper::body::Frame;
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role, Message};

    type B = BoxBody<Bytes, std::convert::Infallible>;
    fn full(s: impl Into<Bytes>) -> B {
        Full::new(s.into()).boxed()
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        if req.headers().contains_key("sec-websocket-key") {
                            let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
                            let up = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let io = hyper_util::rt::TokioIo::new(up.await.unwrap());
                                let mut ws =
                                    tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                                while let Some(Ok(m)) = ws.next().await {
                                    match m {
                                        Message::Text(t) => {
                                            ws.send(Message::Text(format!("{name}:{t}"))).await.unwrap()
                                        }
                                        Message::Binary(b) => ws.send(Message::Binary(b)).await.unwrap(),
                                        // tungstenite answers a close with the same code itself; keep
                                        // polling so the answer is flushed.
                                        Message::Close(_) => {}
                                        _ => {}
                                    }
                                }
                            });
                            let resp = hyper::Response::builder()
                                .status(101)
                                .header("upgrade", "websocket")
                                .header("connection", "Upgrade")
                                .header("sec-websocket-accept", derive_accept_key(&key))
                                .body(full(""))
                                .unwrap();
                            return Ok::<_, std::convert::Infallible>(resp);
                        }
                        if path.ends_with("/sse") {
                            let stream = futures_util::stream::unfold(0u32, |i| async move {
                                if i == 5 {
                                    return None;
                                }
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                Some((
                                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(format!(
                                        "data: {i}\n\n"
                                    )))),
                                    i + 1,
                                ))
                            });
                            let resp = hyper::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(BodyExt::boxed(StreamBody::new(stream)))
                                .unwrap();
                            return Ok(resp);
                        }
                        if path.ends_with("/slow") {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            return Ok(hyper::Response::new(full("slow")));
                        }
                        if path.ends_with("/upload") {
                            let mut body = req.into_body();
                            let mut h = <sha2::Sha256 as sha2::Digest>::new();
                            let mut n = 0u64;
                            while let Some(f) = body.frame().await {
                                if let Ok(d) = f.unwrap().into_data() {
                                    n += d.len() as u64;
                                    sha2::Digest::update(&mut h, &d);
                                }
                            }
                            let hex: String = sha2::Digest::finalize(h).iter().map(|b| format!("{b:02x}")).collect();
                            return Ok(hyper::Response::new(full(
                                serde_json::json!({"bytes": n, "sha256": hex}).to_string(),
                            )));
                        }
                        if path.ends_with("/download") {
                            let n: u64 = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("n="))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            let stream =
                                futures_util::stream::unfold((Pattern::new(n), n), |(mut g, left)| async move {
                                    if left == 0 {
                                        return None;
                                    }
                                    let k = left.min(64 * 1024) as usize;
                                    let mut buf = vec![0u8; k];
                                    g.fill(&mut buf);
                                    Some((
                                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(buf))),
                                        (g, left - k as u64),
                                    ))
                                });
                            return Ok(hyper::Response::builder()
                                .header("content-length", n.to_string())
                                .body(BodyExt::boxed(StreamBody::new(stream)))
                                .unwrap());
                        }
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").to_string())))
                            .collect();
                        let body = serde_json::json!({"name": name, "method": req.method().as_str(), "uri": req.uri().to_string(), "headers": headers});
                        Ok(hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(full(body.to_string()))
                            .unwrap())
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP relay in front of a server that injects faults. It records what the first client sent,
/// and can
/// - turn into a **blackhole**: existing connections then swallow every byte both ways without
///   closing (a server that vanished without FIN or RST); new connections are forwarded whenever
///   it is off;
/// - **drip**: forward one byte per write, a millisecond apart, both ways, so every parser on the
///   path sees its input one byte at a time;
/// - **reset** every open connection at once (RST both ways, as a NAT or a crashed box would).
pub struct FaultRelay {
    pub port: u16,
    pub blackhole: Arc<std::sync::atomic::AtomicBool>,
    pub drip: Arc<std::sync::atomic::AtomicBool>,
    pub first_bytes: Arc<Mutex<Vec<u8>>>,
    reset: tokio::sync::watch::Sender<u64>,
    /// Connections reset so far.
    pub resets: Arc<AtomicUsize>,
}

impl FaultRelay {
    /// Resets every connection open now; later connections are forwarded normally.
    pub fn reset_all(&self) {
        self.reset.send_modify(|g| *g += 1);
    }
}

pub async fn fault_relay(target: u16) -> FaultRelay {
    use std::sync::atomic::AtomicBool;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let blackhole = Arc::new(AtomicBool::new(false));
    let drip = Arc::new(AtomicBool::new(false));
    let first_bytes = Arc::new(Mutex::new(Vec::new()));
    let (reset, reset_rx) = tokio::sync::watch::channel(0u64);
    let resets = Arc::new(AtomicUsize::new(0));
    let (bh, dr, fb, rs) = (blackhole.clone(), drip.clone(), first_bytes.clone(), resets.clone());
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let Ok(t) = TcpStream::connect(("127.0.0.1", target)).await else { continue };
            let _ = (s.set_nodelay(true), t.set_nodelay(true));
            let record = if first { Some(fb.clone()) } else { None };
            first = false;
            let (sr, sw) = s.into_split();
            let (tr, tw) = t.into_split();
            let dirs = [(sr, tw, record, true), (tr, sw, None, false)];
            for (mut from, mut to, record, toward_server) in dirs {
                let (bh, dr, rs) = (bh.clone(), dr.clone(), rs.clone());
                let mut reset = reset_rx.clone();
                reset.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = relay_pump(&mut from, &mut to, record, &bh, &dr, toward_server) => {}
                        _ = reset.changed() => {
                            // Linger 0: closing sends RST instead of FIN.
                            let _ = socket2::SockRef::from(from.as_ref()).set_linger(Some(Duration::ZERO));
                            let _ = socket2::SockRef::from(to.as_ref()).set_linger(Some(Duration::ZERO));
                            // Dropping a write half would send FIN first; only the RST must go.
                            to.forget();
                            rs.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        }
    });
    FaultRelay { port, blackhole, drip, first_bytes, reset, resets }
}

/// One direction of a [`FaultRelay`] connection, until EOF or an error.
async fn relay_pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    record: Option<Arc<Mutex<Vec<u8>>>>,
    blackhole: &std::sync::atomic::AtomicBool,
    drip: &std::sync::atomic::AtomicBool,
    toward_server: bool,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else { return };
        if n == 0 {
            if !toward_server && blackhole.load(Ordering::SeqCst) {
                // A blackholed server never closes: keep the client's side open. (The client's
                // own close still reaches the server, so that frps lets the next login with the
                // same run id in without waiting for its own 90 s heartbeat timeout.)
                std::future::pending::<()>().await;
            }
            let _ = to.shutdown().await;
            return;
        }
        if let Some(r) = &record {
            let mut r = r.lock().unwrap();
            if r.len() < 64 * 1024 {
                r.extend_from_slice(&buf[..n]);
            }
        }
        if blackhole.load(Ordering::SeqCst) {
            continue;
        }
        if drip.load(Ordering::SeqCst) {
            for b in &buf[..n] {
                if to.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A real HTTP provisioning API on loopback (contract §5) with scripted reservation answers.
/// Every request is logged as `(method, path, authorization, body)`.
pub struct ProvisioningApi {
    /// Base URL, with a path prefix (`http://127.0.0.1:port/tunnels`).
    pub url: String,
    pub log: Arc<Mutex<Vec<(String, String, String, String)>>>,
    pub script: Arc<Mutex<std::collections::VecDeque<(u16, String)>>>,
    pub lease_secs: Arc<Mutex<u64>>,
}

pub fn rfc3339_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Civil-from-days (Howard Hinnant), to avoid a date dependency in tests.
    let (days, rem) = ((d / 86400) as i64, d % 86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A contract reservation answer for frps at `bind_port` with subdomain `sub`.
pub fn reservation_json(id: &str, bind_port: u16, token: &str, sub: &str, lease_secs: u64) -> String {
    serde_json::json!({
        "reservationId": id,
        "expiresAt": rfc3339_in(lease_secs),
        "server": {"addr": "127.0.0.1", "port": bind_port, "token": token, "tls": true, "tcpMux": true, "serverName": null, "certSha256": null},
        "tunnels": [{"name": "web", "type": "http", "subdomain": sub, "customDomains": [], "remotePort": null, "publicUrl": format!("https://{sub}.public.example")}],
    })
    .to_string()
}

pub async fn provisioning_api() -> ProvisioningApi {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Mutex<std::collections::VecDeque<(u16, String)>>> = Arc::new(Mutex::new(Default::default()));
    let lease_secs = Arc::new(Mutex::new(60u64));
    let (l2, s2, ls2) = (log.clone(), script.clone(), lease_secs.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let (log, script, lease) = (l2.clone(), s2.clone(), ls2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (log, script, lease) = (log.clone(), script.clone(), lease.clone());
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap_or("").to_string())
                            .unwrap_or_default();
                        let body =
                            String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes()).into_owned();
                        log.lock().unwrap().push((method.clone(), path.clone(), auth, body));
                        let (status, body) = if method == "POST" && path == "/tunnels/v1/reservations" {
                            script
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or((500, r#"{"error":{"code":"empty","message":"no scripted answer"}}"#.into()))
                        } else if method == "POST" && path.ends_with("/renew") {
                            (200, serde_json::json!({"expiresAt": rfc3339_in(*lease.lock().unwrap())}).to_string())
                        } else if method == "DELETE" {
                            (204, String::new())
                        } else {
                            (404, r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#.into())
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    ProvisioningApi { url: format!("http://{addr}/tunnels"), log, script, lease_secs }
}

impl ProvisioningApi {
    pub fn push(&self, status: u16, body: impl Into<String>) {
        self.script.lock().unwrap().push_back((status, body.into()));
    }
    pub fn requests(&self) -> Vec<(String, String, String, String)> {
        self.log.lock().unwrap().clone()
    }
}
