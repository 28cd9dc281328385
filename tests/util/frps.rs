//! frps: the pinned binaries, a real frps on loopback, and a public user of its vhost port.

use super::*;

pub const TOKEN: &str = "test-frp-token-5f1e";

/// Runs one of the project's scripts in `resources/` (they fetch or build once and cache) and
/// returns its standard output; `needed_for` says, in a failure, what needed it.
fn run_script(script: &str, args: &[&str], needed_for: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources").join(script);
    match std::process::Command::new("bash").arg(&script).args(args).stderr(Stdio::inherit()).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            panic!("{needed_for} needs {} and it failed ({}); run it by hand to see why", script.display(), o.status)
        }
        Err(e) => panic!("{needed_for} needs {} and it could not run: {e}", script.display()),
    }
}

/// Directory with the pinned frps/frpc 0.65.0; fetches them with the project's script when missing.
pub fn frp_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| PathBuf::from(run_script("fetch-frp.sh", &[], "frps 0.65.0").trim())).clone()
}

/// The frpc burrow bundles (resources/frpc-manifest.json), for this machine's platform: laid out
/// in resources/bin/<os>-<arch>/ by the project's script (built from Go source once, cached),
/// where a development build of burrow finds it.
pub fn bundled_frpc() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let os = if std::env::consts::OS == "macos" { "darwin" } else { std::env::consts::OS };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        let out = run_script("fetch-frpc.sh", &[&format!("{os}-{arch}")], "the bundled frpc");
        PathBuf::from(out.split_whitespace().nth(1).unwrap_or_default())
    })
    .clone()
}

/// Every frp version the matrix runs: 0.65.0 (the official binary) and the ones
/// `resources/build-frp.sh` builds from source.
pub const FRP_VERSIONS: [&str; 7] = ["0.52.3", "0.58.1", "0.61.2", "0.65.0", "0.68.1", "0.69.1", "0.70.1"];

/// Directory with frps/frpc of `version`, built (once, cached) by the project's script.
pub fn frp_version_dir(version: &str) -> PathBuf {
    if version == "0.65.0" {
        return frp_dir();
    }
    static DIRS: std::sync::OnceLock<std::collections::HashMap<String, PathBuf>> = std::sync::OnceLock::new();
    let dirs = DIRS.get_or_init(|| {
        run_script("build-frp.sh", &[], "the frp version matrix")
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(v, d)| (v.to_string(), PathBuf::from(d))))
            .collect()
    });
    dirs.get(version).unwrap_or_else(|| panic!("frp {version} is not pinned in resources/build-frp.sh")).clone()
}

/// frp's module source at `version` (for its example files), fetched and checked against its
/// pinned hash by the project's script.
pub fn frp_source(version: &str) -> PathBuf {
    PathBuf::from(run_script("build-frp.sh", &["--source", version], "frp's source").trim())
}

/// A loopback port nobody listens on, from below Linux's ephemeral range (32768–60999): a port
/// the kernel hands out (`bind :0`) can meanwhile become the local port of some test's outgoing
/// connection, and then frps cannot bind it. No port is handed out twice in one test binary.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), 20000..32000);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// frps settings for one test.
#[derive(Clone)]
pub struct FrpsOpts {
    pub tcp_mux: bool,
    pub tls_force: bool,
    pub token: String,
    pub extra: String,
    /// frp version (one of [`FRP_VERSIONS`]); the pinned 0.65.0 when `None`.
    pub version: Option<&'static str>,
    /// frps' `subDomainHost`: [`SUBDOMAIN_HOST`], which does not resolve, unless a test needs
    /// URLs that do (`*.localhost` is loopback).
    pub subdomain_host: &'static str,
}

impl Default for FrpsOpts {
    fn default() -> Self {
        Self {
            tcp_mux: true,
            tls_force: false,
            token: TOKEN.into(),
            extra: String::new(),
            version: None,
            subdomain_host: SUBDOMAIN_HOST,
        }
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
        f.launch(false).await;
        f
    }

    fn write_config(&self) -> PathBuf {
        let cfg = format!(
            "bindAddr = \"127.0.0.1\"\nbindPort = {}\nvhostHTTPPort = {}\nsubDomainHost = \"{}\"\nauth.token = \"{}\"\ntransport.tcpMux = {}\ntransport.tls.force = {}\nlog.to = \"{}\"\nlog.level = \"debug\"\n{}\n",
            self.bind_port,
            self.vhost_port,
            self.opts.subdomain_host,
            self.opts.token,
            self.opts.tcp_mux,
            self.opts.tls_force,
            self.dir.path().join("frps.log").display(),
            self.opts.extra
        );
        let path = self.dir.path().join("frps.toml");
        std::fs::write(&path, cfg).unwrap();
        path
    }

    /// Starts frps and waits for both its ports. A port taken between choosing and binding
    /// (frps exits, "address already in use") is chosen again, or waited for on a restart,
    /// which must keep its ports.
    async fn launch(&mut self, restart: bool) {
        let dir = self.opts.version.map_or_else(frp_dir, frp_version_dir);
        let version = self.opts.version.unwrap_or("0.65.0");
        for attempt in 1..=5 {
            let path = self.write_config();
            let out = std::fs::File::create(self.dir.path().join("frps.out")).unwrap();
            let mut child = Command::new(dir.join("frps"))
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .expect("spawn frps");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let said = self.output();
                    assert!(
                        attempt < 5 && said.contains("address already in use"),
                        "frps {version} exited ({status}) at start (attempt {attempt}); it said:\n{said}"
                    );
                    break;
                }
                if port_open(self.bind_port).await && port_open(self.vhost_port).await {
                    self.child = Some(child);
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "frps {version} did not open ports {} and {} within 20 s; it said:\n{}",
                    self.bind_port,
                    self.vhost_port,
                    self.output()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !restart {
                self.vhost_port = free_port();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch(true).await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("frps.log")).unwrap_or_default()
    }

    /// frps's own output and log, for failure messages.
    fn output(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("frps.out")).unwrap_or_default();
        format!("{out}{}", self.log())
    }

    /// frps' `subDomainHost`.
    pub fn subdomain_host(&self) -> &'static str {
        self.opts.subdomain_host
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.bind_port)
    }
}

async fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` every 20 ms until it holds (true) or `within` passes (false).
pub async fn wait_until(cond: impl Fn() -> bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
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

/// One request on a fresh connection to `port` with `host` as its Host: status, headers, body.
pub async fn http_request(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, String) {
    http_send(port, host, method, path, headers, "").await
}

/// [`http_request`] with a body (sent with its `Content-Length` when not empty).
pub async fn http_send(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tx.send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
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
