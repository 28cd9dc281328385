//! The frpc fallback: run the bundled Go `frpc` when the native client cannot serve the server or
//! the configuration, and make it look, from outside, like the native client.
//!
//! burrow writes frpc's configuration into a private directory, starts frpc directly (never
//! through a shell), follows its tunnels through frpc's own admin API (loopback, random password)
//! to emit the same `connected`/`tunnel_up`/`tunnel_down` events, restarts it with backoff when it
//! dies, and stops it — and anything it started — when burrow stops.
//!
//! frpc must never outlive burrow, even when burrow is killed with SIGKILL:
//! * Linux: the child asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), and
//!   runs in its own process group, which burrow signals as a whole at shutdown.
//! * macOS has no parent-death signal: the process group is signalled at shutdown, and a host that
//!   kills burrow hard should kill its process group (`kill -9 -<pgid>`); Electron's
//!   `child_process.spawn(…, {detached: false})` plus `process.kill(-pid)` does that.
//! * Windows: put burrow in a job object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` (Electron's
//!   child processes are, by default); frpc, as burrow's child, is in the same job.

pub mod config;
pub mod locate;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::client::Fatal;
use crate::config::Config;
use crate::events::{ErrorCode, Events};
use crate::status::Status;
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

fn fatal(events: &Events, code: ErrorCode, message: String, hint: &str) -> Fatal {
    events.error(code, &message, hint, true);
    Fatal { code, message, fallback: false }
}

/// Runs frpc for `cfg` until shutdown (`Ok`) or a failure that retrying cannot fix.
pub async fn run(
    cfg: &Config,
    events: &Events,
    status: &Status,
    shutdown: CancellationToken,
    reconnect: Arc<tokio::sync::Notify>,
) -> Result<(), Fatal> {
    let public_urls: HashMap<String, String> =
        cfg.tunnels.iter().filter_map(|t| t.public_url.clone().map(|u| (t.name.clone(), u))).collect();
    let frpc = match locate::resolve(cfg.frpc_path.as_deref()) {
        Ok(p) => p,
        Err(tried) => {
            let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            return Err(fatal(
                events,
                ErrorCode::FrpcMissing,
                format!("frpc was not found; tried: {}", list.join(", ")),
                "put frpc in resources/bin/<os>-<arch>/ beside burrow (resources/fetch-frpc.sh), or set BURROW_FRPC_PATH",
            ));
        }
    };
    let Some(version) = locate::version(&frpc).await else {
        return Err(fatal(
            events,
            ErrorCode::FrpcFailed,
            format!("{} did not report an frpc version", frpc.display()),
            "check that BURROW_FRPC_PATH points at frpc (not frps) built for this platform",
        ));
    };
    if cfg.server.tls.pin.is_some() {
        return Err(fatal(
            events,
            ErrorCode::TlsFailed,
            "frpc cannot verify a certificate pin (BURROW_TLS_PIN / certSha256); refusing to fall back to an unverified connection".into(),
            "use BURROW_MODE=native, or verify frps with a CA (BURROW_TLS_CA)",
        ));
    }
    tracing::info!("using frpc {version} at {}", frpc.display());
    if cfg.server.tls.enabled && cfg.server.tls.ca_file.is_none() {
        events.warning(
            "tls_unverified",
            "frpc's TLS to frps is encrypted but the server is not authenticated; set BURROW_TLS_CA (or transport.tls.trustedCaFile) to verify it",
        );
    }

    let dir = PrivateDir::new().map_err(|e| {
        fatal(
            events,
            ErrorCode::Internal,
            format!("cannot create a private directory for frpc's configuration: {e}"),
            "check the temp directory (TMPDIR)",
        )
    })?;
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| {
            fatal(events, ErrorCode::Internal, format!("no free loopback port for frpc's admin API: {e}"), "")
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
        fatal(
            events,
            ErrorCode::Internal,
            format!("cannot write frpc's configuration: {e}"),
            "check the temp directory (TMPDIR)",
        )
    })?;

    let sup =
        Supervisor { frpc, file, admin, cfg, events, status, public_urls: &public_urls, http: reqwest::Client::new() };
    let r = sup.supervise(shutdown, reconnect).await;
    drop(dir);
    r
}

struct Supervisor<'a> {
    frpc: PathBuf,
    file: PathBuf,
    admin: Admin,
    cfg: &'a Config,
    events: &'a Events,
    status: &'a Status,
    public_urls: &'a HashMap<String, String>,
    http: reqwest::Client,
}

impl Supervisor<'_> {
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.frpc);
        cmd.arg("-c")
            .arg(&self.file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // frpc needs none of burrow's secrets in its environment: its token is in its config.
        for k in ["BURROW_API_TOKEN", "BURROW_SERVER_TOKEN", "BURROW_ADMIN_TOKEN"] {
            cmd.env_remove(k);
        }
        // The crate's one `unsafe`: std offers no safe way to run code between fork and exec,
        // and without PR_SET_PDEATHSIG a SIGKILLed burrow would leave frpc running.
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
        cmd.spawn()
    }

    async fn supervise(&self, shutdown: CancellationToken, reconnect: Arc<tokio::sync::Notify>) -> Result<(), Fatal> {
        let mut failures = 0u32;
        'restart: loop {
            let mut child = self.spawn().map_err(|e| {
                fatal(
                    self.events,
                    ErrorCode::FrpcFailed,
                    format!("cannot start {}: {e}", self.frpc.display()),
                    "check that the file is an executable frpc for this platform",
                )
            })?;
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
                    let mut lines = tokio::io::BufReader::new(out).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
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
            let mut lost = false;
            let mut ticker = tokio::time::interval(POLL);
            let ended = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.stop(&mut child, pid).await;
                        self.all_down(&mut up, "shutdown");
                        return Ok(());
                    }
                    st = child.wait() => break st,
                    _ = reconnect.notified() => {
                        // A fresh frpc connects at once (its own retry timer may be long).
                        self.stop(&mut child, pid).await;
                        self.all_down(&mut up, "reconnect requested");
                        failures = 0;
                        self.events.emit("reconnecting", json!({"attempt": 1, "delay_ms": 0, "reason": "reconnect requested"}));
                        continue 'restart;
                    }
                    Some(logged_in) = session_rx.recv() => {
                        if logged_in {
                            lost = false;
                        } else if connected || !up.is_empty() {
                            lost = true;
                            connected = false;
                            self.all_down(&mut up, "frpc lost the connection to frps");
                            self.status.set_state("reconnecting");
                            self.events.emit("reconnecting", json!({"attempt": 1, "delay_ms": 0, "reason": "frpc lost the connection to frps; it reconnects by itself"}));
                        }
                    }
                    _ = ticker.tick() => {
                        if auth_failed.load(Ordering::SeqCst) {
                            self.stop(&mut child, pid).await;
                            self.all_down(&mut up, "frps rejected the token");
                            return Err(fatal(self.events, ErrorCode::AuthFailed, "frps rejected the login of frpc: token in login doesn't match token from configuration".into(), "check BURROW_SERVER_TOKEN (auth.token): it must equal frps' auth.token"));
                        }
                        if lost {
                            continue;
                        }
                        if let Some(list) = self.poll().await {
                            self.update(&list, &mut up, &mut connected);
                            if connected {
                                failures = 0;
                            }
                        }
                    }
                }
            };
            self.all_down(&mut up, "frpc exited");
            if auth_failed.load(Ordering::SeqCst) {
                return Err(fatal(
                    self.events,
                    ErrorCode::AuthFailed,
                    "frps rejected the login of frpc: token in login doesn't match token from configuration".into(),
                    "check BURROW_SERVER_TOKEN (auth.token): it must equal frps' auth.token",
                ));
            }
            failures += 1;
            let delay = crate::client::backoff(failures);
            let msg = format!(
                "frpc exited ({}); restarting in {} ms",
                ended.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                delay.as_millis()
            );
            self.events.error(ErrorCode::FrpcFailed, &msg, "see frpc's log lines on stderr", false);
            self.events.emit(
                "reconnecting",
                json!({"attempt": failures, "delay_ms": delay.as_millis() as u64, "reason": msg}),
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// SIGTERM to frpc, SIGKILL after 1 s (burrow's whole shutdown must fit in 5 s).
    ///
    /// frpc stays in burrow's process group (it starts no processes of its own), so a host that
    /// kills burrow's group kills frpc with it.
    async fn stop(&self, child: &mut tokio::process::Child, pid: Option<u32>) {
        #[cfg(unix)]
        if let Some(pid) = pid {
            let p = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(1), child.wait()).await.is_ok() {
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
                    self.status.set_state("connected");
                    self.events.emit("connected", json!({"server": self.cfg.server.display_addr(), "transport": transport_name(self.cfg), "mode": "frpc"}));
                }
                up.insert(name.clone());
                let mut ev = json!({"name": name, "type": p.kind, "mode": "frpc"});
                if p.kind == "http" || p.kind == "https" {
                    let url = self.public_urls.get(&name).cloned().or_else(|| {
                        p.remote_addr
                            .split(',')
                            .map(str::trim)
                            .find(|s| !s.is_empty())
                            .map(|h| format!("{}://{h}", p.kind))
                    });
                    self.status.set_tunnel(&name, "up", url.clone());
                    ev["url"] = json!(url);
                } else {
                    let host = self.cfg.server.host.clone();
                    let remote = if p.remote_addr.starts_with(':') {
                        format!("{host}{}", p.remote_addr)
                    } else {
                        p.remote_addr.clone()
                    };
                    self.status.set_tunnel(&name, "up", Some(remote.clone()));
                    ev["remote_addr"] = json!(remote);
                }
                if let Some(id) = &self.cfg.reservation_id {
                    ev["reservation_id"] = json!(id);
                }
                self.events.emit("tunnel_up", ev);
            } else if !running && up.remove(&name) {
                let reason = if p.err.is_empty() { format!("frpc reports {}", p.status) } else { p.err.clone() };
                self.status.set_tunnel(&name, "down", None);
                self.events.emit("tunnel_down", json!({"name": name, "reason": reason}));
            }
        }
    }

    fn all_down(&self, up: &mut HashSet<String>, reason: &str) {
        for name in up.drain() {
            self.status.set_tunnel(&name, "down", None);
            self.events.emit("tunnel_down", json!({"name": name, "reason": reason}));
        }
    }
}

fn transport_name(cfg: &Config) -> String {
    if let Some((_, raw)) = &cfg.frpc_file {
        let proto = raw.get("transport").and_then(|t| t.get("protocol")).and_then(|p| p.as_str()).unwrap_or("tcp");
        if proto != "tcp" {
            return proto.to_string();
        }
    }
    let base = if cfg.server.tls.enabled { "tls" } else { "tcp" };
    if cfg.server.tcp_mux {
        format!("{base}+yamux")
    } else {
        base.to_string()
    }
}
