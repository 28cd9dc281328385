//! The frpc fallback: run the bundled Go `frpc` when the native client cannot serve the server or
//! the configuration, and make it look, from outside, like the native client.
//!
//! burrow writes frpc's configuration into a private directory, starts frpc directly (never
//! through a shell), and follows its tunnels through frpc's own admin API (loopback, random
//! password) to emit the same `connected`/`tunnel_up`/`tunnel_down` events. Each frpc process is
//! one attempt of the [`Backend`] trait: the supervisor restarts it with backoff when it dies.
//!
//! frpc must never outlive burrow, even when burrow is killed outright. frpc stays in burrow's
//! process group; at shutdown burrow sends its process tree SIGTERM, then SIGKILL after a second.
//! * Linux: the child also asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`).
//! * macOS has no parent-death signal: a host that kills burrow hard should kill its process
//!   group (`kill -9 -<pgid>`); the Electron module starts burrow as a group leader and does that.
//! * Windows: every frpc runs in a job object that kills it when burrow's handle closes, however
//!   burrow dies ([`job`]).

pub mod config;
#[cfg(windows)]
mod job;
pub mod locate;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::{ErrorCode, Event, Fatal, PublicAddr, Reporter, TunnelUp, WarningCode};
use crate::lines::{Line, LineReader};
use crate::status::BackendKind;
use crate::supervise::{Backend, Ended, Failure, Verdict};
use config::{Admin, PrivateDir};

/// How often frpc's admin API is asked for its tunnels.
const POLL: Duration = Duration::from_millis(300);

#[derive(Debug, Deserialize)]
struct ProxyStatus {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default)]
    err: String,
    #[serde(default)]
    remote_addr: String,
}

fn auth_failure() -> Failure {
    Failure {
        code: ErrorCode::AuthFailed,
        message: "frps rejected the login of frpc: token in login doesn't match token from configuration".into(),
        hint: "check BURROW_SERVER_TOKEN (auth.token): it must equal frps' auth.token".into(),
        verdict: Verdict::Fatal,
    }
}

/// The bundled frpc, configured and ready to run attempt after attempt.
pub struct Frpc {
    frpc: PathBuf,
    file: PathBuf,
    admin: Admin,
    cfg: Config,
    reporter: Reporter,
    public_urls: HashMap<String, String>,
    http: reqwest::Client,
    /// frpc's configuration holds the token: removed when this is dropped.
    _dir: PrivateDir,
}

impl Frpc {
    /// Finds and checks frpc and writes its configuration for `cfg`; fails when frpc cannot serve.
    pub async fn prepare(cfg: &Config, reporter: Reporter) -> Result<Self, Fatal> {
        let public_urls: HashMap<String, String> =
            cfg.tunnels.iter().filter_map(|t| t.public_url.clone().map(|u| (t.name.clone(), u))).collect();
        let frpc = match locate::resolve(cfg.frpc_path.as_deref()) {
            Ok(p) => p,
            Err(tried) => {
                let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                return Err(Fatal::new(
                    ErrorCode::FrpcMissing,
                    format!("frpc was not found; tried: {}", list.join(", ")),
                    "put frpc in resources/bin/<os>-<arch>/ beside burrow (resources/fetch-frpc.sh), or set BURROW_FRPC_PATH",
                ));
            }
        };
        let Some(version) = locate::version(&frpc).await else {
            return Err(Fatal::new(
                ErrorCode::FrpcFailed,
                format!("{} did not report an frpc version", frpc.display()),
                "check that BURROW_FRPC_PATH points at frpc (not frps) built for this platform",
            ));
        };
        if cfg.server.tls.pin.is_some() {
            return Err(Fatal::new(
                ErrorCode::TlsFailed,
                "frpc cannot verify a certificate pin (BURROW_TLS_PIN / certSha256); refusing to fall back to an unverified connection",
                "use BURROW_MODE=native, or verify frps with a CA (BURROW_TLS_CA)",
            ));
        }
        tracing::info!("using frpc {version} at {}", frpc.display());
        if cfg.server.tls.enabled && cfg.server.tls.ca_file.is_none() {
            reporter.warning(
                WarningCode::TlsUnverified,
                "frpc's TLS to frps is encrypted but the server is not authenticated; set BURROW_TLS_CA (or transport.tls.trustedCaFile) to verify it",
            );
        }
        let tmp_hint = "check the temp directory (TMPDIR)";
        let dir = PrivateDir::new().map_err(|e| {
            Fatal::new(
                ErrorCode::Internal,
                format!("cannot create a private directory for frpc's configuration: {e}"),
                tmp_hint,
            )
        })?;
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| {
                Fatal::new(ErrorCode::Internal, format!("no free loopback port for frpc's admin API: {e}"), "")
            })?;
        let admin = Admin { port, user: "burrow".into(), password: format!("{:032x}", rand::random::<u128>()) };
        let (name, text) = match &cfg.frpc_file {
            Some((_, raw)) => ("frpc.toml", config::toml_from_file(raw, &cfg.server, &admin)),
            None if locate::speaks_toml(&version) => {
                ("frpc.toml", config::toml_from_model(&cfg.server, &cfg.tunnels, &admin))
            }
            None => ("frpc.ini", config::ini_from_model(&cfg.server, &cfg.tunnels, &admin)),
        };
        let file = dir.write(name, &text).map_err(|e| {
            Fatal::new(ErrorCode::Internal, format!("cannot write frpc's configuration: {e}"), tmp_hint)
        })?;
        Ok(Self { frpc, file, admin, cfg: cfg.clone(), reporter, public_urls, http: reqwest::Client::new(), _dir: dir })
    }

    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.frpc);
        cmd.arg("-c")
            .arg(&self.file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // frpc gets all it needs from its private config file: none of burrow's settings (secrets
        // among them, readable in /proc/<pid>/environ) and no proxy variable, since burrow chose
        // the proxy and wrote it there.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(kept_from_frpc) {
                cmd.env_remove(&k);
            }
        }
        // `unsafe` (as in `job` on Windows): std offers no safe way to run code between fork and
        // exec, and without PR_SET_PDEATHSIG a SIGKILLed burrow would leave frpc running.
        #[cfg(target_os = "linux")]
        #[allow(unsafe_code)]
        {
            let parent = std::process::id();
            // SAFETY: runs in the child between fork and exec. It only makes two system calls
            // (prctl, getppid), which are async-signal-safe, and neither allocates nor locks.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                    // burrow may have died before prctl: then nobody would send the signal.
                    if nix::unistd::getppid().as_raw() as u32 != parent {
                        return Err(nix::errno::Errno::ESRCH.into());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn()?;
        #[cfg(windows)]
        if let Some(handle) = child.raw_handle() {
            // Without it a hard kill of burrow would leave frpc running: refuse to run it so.
            if let Err(e) = job::adopt(handle) {
                return Err(std::io::Error::other(format!("cannot tie frpc's life to burrow's (job object): {e}")));
            }
        }
        Ok(child)
    }

    /// Runs one frpc process until it exits, fails, or `stop` is cancelled.
    async fn run_once(&self, stop: &CancellationToken) -> Ended {
        let mut child = match self.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Ended::failed(
                    false,
                    Failure {
                        code: ErrorCode::FrpcFailed,
                        message: format!("cannot start {}: {e}", self.frpc.display()),
                        hint: "check that the file is an executable frpc for this platform".into(),
                        verdict: Verdict::Fatal,
                    },
                )
            }
        };
        let pid = child.id();
        let auth_failed = Arc::new(AtomicBool::new(false));
        // frpc's admin API keeps saying "running" after frpc lost frps, so the session's
        // state is read from frpc's log: a login, then a failed (re)connect.
        let (session_tx, mut session_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
        for (out, is_err) in [
            (child.stdout.take().map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), false),
            (child.stderr.take().map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), true),
        ] {
            let Some(out) = out else { continue };
            let flag = auth_failed.clone();
            let session = session_tx.clone();
            tokio::spawn(async move {
                // Read to the end whatever frpc writes: a reader that stopped would leave frpc
                // blocked on a full pipe, and its login and session lines unseen.
                let mut lines = LineReader::new(tokio::io::BufReader::new(out), 16 * 1024);
                while let Ok(Some(line)) = lines.next().await {
                    let Line::Bytes(bytes) = line else { continue };
                    let l = String::from_utf8_lossy(bytes);
                    if l.contains("token in login doesn't match") || l.contains("authorization failed") {
                        flag.store(true, Ordering::SeqCst);
                    }
                    if l.contains("login to server success") {
                        let _ = session.send(true);
                    } else if l.contains("connect to server error") || l.contains("control writer is closing") {
                        let _ = session.send(false);
                    }
                    if is_err || l.contains("[W]") || l.contains("[E]") {
                        tracing::warn!("frpc: {l}");
                    } else {
                        tracing::debug!("frpc: {l}");
                    }
                }
            });
        }
        drop(session_tx);
        let mut up: HashSet<String> = HashSet::new();
        let mut connected = false;
        let mut progressed = false;
        let mut lost = false;
        let mut ticker = tokio::time::interval(POLL);
        let ended = loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    self.stop(&mut child, pid).await;
                    return Ended::stopped(progressed);
                }
                st = child.wait() => break st,
                Some(logged_in) = session_rx.recv() => {
                    if logged_in {
                        lost = false;
                    } else if connected || !up.is_empty() {
                        lost = true;
                        connected = false;
                        for name in up.drain() {
                            self.reporter.emit(Event::TunnelDown { name, reason: "frpc lost the connection to frps".into() });
                        }
                        self.reporter.emit(Event::Reconnecting { attempt: 1, delay_ms: 0, reason: "frpc lost the connection to frps; it reconnects by itself".into() });
                    }
                }
                _ = ticker.tick() => {
                    if auth_failed.load(Ordering::SeqCst) {
                        self.stop(&mut child, pid).await;
                        return Ended::failed(progressed, auth_failure());
                    }
                    if lost {
                        continue;
                    }
                    if let Some(list) = self.poll().await {
                        self.update(&list, &mut up, &mut connected);
                        progressed |= connected;
                    }
                }
            }
        };
        if auth_failed.load(Ordering::SeqCst) {
            return Ended::failed(progressed, auth_failure());
        }
        let message = format!("frpc exited ({})", ended.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
        Ended::failed(
            progressed,
            Failure {
                code: ErrorCode::FrpcFailed,
                message,
                hint: "see frpc's log lines on stderr".into(),
                verdict: Verdict::Retry,
            },
        )
    }

    /// SIGTERM to frpc's process tree, SIGKILL after 1 s (burrow's whole shutdown must fit in
    /// 5 s). The tree, not the process: `BURROW_FRPC_PATH` may name a wrapper script whose frpc
    /// would otherwise outlive it.
    ///
    /// frpc stays in burrow's process group, so a host that kills burrow's group kills frpc with
    /// it.
    async fn stop(&self, child: &mut tokio::process::Child, pid: Option<u32>) {
        #[cfg(unix)]
        if let Some(pid) = pid {
            use nix::sys::signal::{kill, Signal};
            let signal = |tree: &[u32], s: Signal| {
                for p in tree {
                    let _ = kill(nix::unistd::Pid::from_raw(*p as i32), s);
                }
            };
            let tree = crate::platform::process_tree(pid);
            signal(&tree, Signal::SIGTERM);
            let exited = tokio::time::timeout(Duration::from_secs(1), child.wait()).await.is_ok();
            // What is left of the tree below frpc (reparented by now if frpc has gone).
            signal(&tree[1..], Signal::SIGKILL);
            if exited {
                return;
            }
        }
        let _ = pid;
        let _ = child.kill().await;
    }

    async fn poll(&self) -> Option<Vec<ProxyStatus>> {
        let url = format!("http://127.0.0.1:{}/api/status", self.admin.port);
        let resp = self
            .http
            .get(url)
            .basic_auth(&self.admin.user, Some(&self.admin.password))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let by_type: HashMap<String, Vec<ProxyStatus>> = resp.json().await.ok()?;
        Some(by_type.into_values().flatten().collect())
    }

    fn update(&self, list: &[ProxyStatus], up: &mut HashSet<String>, connected: &mut bool) {
        let user_prefix =
            if self.cfg.server.user.is_empty() { String::new() } else { format!("{}.", self.cfg.server.user) };
        for p in list {
            let name = p.name.strip_prefix(&user_prefix).unwrap_or(&p.name).to_string();
            let running = p.status == "running";
            if running && !up.contains(&name) {
                if !*connected {
                    *connected = true;
                    self.reporter.emit(Event::Connected {
                        server: self.cfg.server.display_addr(),
                        transport: transport_name(&self.cfg),
                        mode: BackendKind::Frpc,
                        wire: self.cfg.server.wire.name(),
                        via: self.cfg.server.proxy().map(|p| p.to_string()),
                        server_version: None,
                    });
                }
                up.insert(name.clone());
                let addr = if p.kind == "http" || p.kind == "https" {
                    let url = self.public_urls.get(&name).cloned().or_else(|| {
                        p.remote_addr
                            .split(',')
                            .map(str::trim)
                            .find(|s| !s.is_empty())
                            .map(|h| format!("{}://{h}", p.kind))
                    });
                    PublicAddr::Url { url }
                } else {
                    let host = &self.cfg.server.host;
                    let remote = if p.remote_addr.starts_with(':') {
                        format!("{host}{}", p.remote_addr)
                    } else {
                        p.remote_addr.clone()
                    };
                    PublicAddr::Remote { remote_addr: remote }
                };
                self.reporter.emit(Event::TunnelUp(TunnelUp {
                    name,
                    kind: p.kind.clone(),
                    addr,
                    mode: BackendKind::Frpc,
                    reservation_id: self.cfg.reservation_id.clone(),
                }));
            } else if !running && up.remove(&name) {
                let reason = if p.err.is_empty() { format!("frpc reports {}", p.status) } else { p.err.clone() };
                self.reporter.emit(Event::TunnelDown { name, reason });
            }
        }
    }
}

impl Backend for Frpc {
    fn kind(&self) -> BackendKind {
        BackendKind::Frpc
    }

    fn attempt<'a>(&'a mut self, stop: &'a CancellationToken) -> Pin<Box<dyn Future<Output = Ended> + Send + 'a>> {
        Box::pin(self.run_once(stop))
    }
}

fn transport_name(cfg: &Config) -> String {
    // kcp and quic, which only frpc speaks, go by their own names.
    if let Some((_, raw)) = &cfg.frpc_file {
        let proto = raw.get("transport").and_then(|t| t.get("protocol")).and_then(|p| p.as_str()).unwrap_or("tcp");
        if crate::config::Protocol::from_name(proto).is_none() {
            return proto.to_string();
        }
    }
    cfg.server.transport_name()
}

/// Whether an environment variable stays out of frpc's environment.
fn kept_from_frpc(name: &str) -> bool {
    name.to_ascii_uppercase().starts_with("BURROW_")
        || crate::config::PROXY_VARS.iter().any(|v| v.eq_ignore_ascii_case(name))
}
