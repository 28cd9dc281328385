//! The long-running program: tunnels (native or frpc, reserved or configured) and the proxy
//! under the host's control.
//!
//! The host (an Electron main process, a shell) controls burrow's lifetime: SIGINT, SIGTERM, a
//! `shutdown` command and the end of stdin all mean "stop now, cleanly". `stopped` is always the
//! last line on stdout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Fatal, SetupError};
use crate::config::{Config, Mode, Secret, TunnelKind, DEFAULT_TUNNEL};
use crate::events::{ErrorCode, Events};
use crate::frpc;
use crate::provision::{self, Api, Reservation};
use crate::proxy::Proxy;
use crate::status::Status;

/// Why burrow is stopping; the first reason wins.
#[derive(Clone, Default)]
struct StopReason(Arc<Mutex<Option<&'static str>>>);

impl StopReason {
    fn set(&self, reason: &'static str, token: &CancellationToken) {
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        r.get_or_insert(reason);
        token.cancel();
    }
    fn get(&self) -> Option<&'static str> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs burrow until it is told to stop or fails fatally; returns the exit code.
pub async fn run(mut config: Config, events: Events) -> i32 {
    events.emit("starting", json!({"version": env!("CARGO_PKG_VERSION"), "mode": config.mode.as_str()}));
    let proxy = match start_proxy(&config, &events) {
        Ok(p) => p,
        Err(code) => {
            events.emit("stopped", json!({"reason": code.as_str()}));
            return code.exit_code();
        }
    };
    let status = Status::new(config.tunnels.iter().map(|t| (t.name.clone(), t.kind.type_name())), proxy.clone());
    let shutdown = CancellationToken::new();
    let reason = StopReason::default();
    watch_signals(reason.clone(), shutdown.clone());
    watch_stdin(reason.clone(), shutdown.clone(), events.clone(), status.clone());

    // Tunnels from the provisioning API: reserve first, renew in the background, release last.
    let mut lease: Option<(Arc<Api>, String)> = None;
    if let Some(api_cfg) = config.api.clone() {
        let api = match Api::new(api_cfg) {
            Ok(a) => Arc::new(a),
            Err(e) => return stop_fatal(&events, ErrorCode::Internal, &e, ""),
        };
        status.set_state("reserving");
        let reserved =
            provision::with_retry(&events, &shutdown, "reserving tunnels", || api.reserve(&[(DEFAULT_TUNNEL, "http")]))
                .await;
        let r = match reserved {
            None => return stop_ok(&events, &reason),
            Some(Err(e)) => return stop_fatal(&events, e.code(), &e.to_string(), e.hint()),
            Some(Ok(r)) => r,
        };
        if let Err(e) = apply_reservation(&mut config, &r) {
            return stop_fatal(
                &events,
                ErrorCode::ApiError,
                &e,
                "the reservation's server settings are unusable; report it to the API's operators",
            );
        }
        status.set_tunnels(config.tunnels.iter().map(|t| (t.name.clone(), t.kind.type_name())));
        let expires = r.expires_at.map(|t| humantime::format_rfc3339(t).to_string());
        events.emit("reserved", json!({"reservation_id": r.id, "expires_at": expires}));
        tokio::spawn(renew_loop(api.clone(), r.clone(), events.clone(), shutdown.clone()));
        lease = Some((api, r.id));
    }

    let result = serve(&config, &events, &status, proxy, shutdown.clone()).await;
    status.set_state("stopping");
    if let Some((api, id)) = lease {
        // Best effort, bounded: an exit must not hang on a dead API.
        match tokio::time::timeout(Duration::from_secs(3), api.release(&id)).await {
            Ok(Ok(())) => tracing::info!("released reservation {id}"),
            Ok(Err(e)) => tracing::warn!("releasing reservation {id} failed: {e}"),
            Err(_) => tracing::warn!("releasing reservation {id} timed out"),
        }
    }
    match result {
        Ok(()) => stop_ok(&events, &reason),
        Err(fatal) => {
            eprintln!("burrow: {}", fatal.message);
            events.emit("stopped", json!({"reason": fatal.code.as_str()}));
            fatal.code.exit_code()
        }
    }
}

fn stop_ok(events: &Events, reason: &StopReason) -> i32 {
    events.emit("stopped", json!({"reason": reason.get().unwrap_or("shutdown")}));
    0
}

fn stop_fatal(events: &Events, code: ErrorCode, message: &str, hint: &str) -> i32 {
    eprintln!("burrow: {message}");
    events.error(code, message, hint, true);
    events.emit("stopped", json!({"reason": code.as_str()}));
    code.exit_code()
}

/// Native client, or frpc, as the mode and the configuration say; `auto` switches to frpc when
/// the native client meets something it cannot serve.
async fn serve(
    config: &Config,
    events: &Events,
    status: &Status,
    proxy: Option<Arc<Proxy>>,
    shutdown: CancellationToken,
) -> Result<(), Fatal> {
    let frpc_now = match config.mode {
        Mode::Frpc => true,
        Mode::Native => false,
        Mode::Auto => config.native_gap.is_some(),
    };
    if frpc_now {
        if let (Mode::Auto, Some(gap)) = (config.mode, &config.native_gap) {
            events.emit(
                "fallback",
                json!({"from": "native", "to": "frpc", "reason": format!("the configuration needs frpc: {gap}")}),
            );
        }
        status.set_mode("frpc");
        return frpc::run(config, events, status, shutdown).await;
    }
    let client = match Client::new(config, events.clone(), proxy, status.clone()) {
        Ok(c) => c,
        Err(e) => {
            let hint = match &e {
                SetupError::Tls(_) => "fix the TLS settings (BURROW_TLS_CA or transport.tls.trustedCaFile, BURROW_TLS_SERVER_NAME or transport.tls.serverName; a server name must be a DNS name or an IP address) and start again",
                SetupError::TunnelTooLarge { .. } => "frp messages are limited to 10240 bytes: split the tunnel or list fewer domains, locations or headers",
            };
            events.error(ErrorCode::ConfigInvalid, &e.to_string(), hint, true);
            return Err(Fatal { code: ErrorCode::ConfigInvalid, message: e.to_string(), fallback: false });
        }
    };
    match client.run(shutdown.clone(), config.mode == Mode::Auto).await {
        Err(f) if f.fallback => {
            events.emit("fallback", json!({"from": "native", "to": "frpc", "reason": format!("the server does not speak the native client's protocol: {}", f.message)}));
            status.set_mode("frpc");
            frpc::run(config, events, status, shutdown).await
        }
        other => other,
    }
}

fn start_proxy(config: &Config, events: &Events) -> Result<Option<Arc<Proxy>>, ErrorCode> {
    let Some(addr) = config.proxy_addr else { return Ok(None) };
    match crate::proxy::bind(addr) {
        Ok(listener) => {
            let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
            if !addr.ip().is_loopback() {
                events.warning("proxy_not_loopback", &format!("the reverse proxy listens on {bound}, reachable from other machines; use 127.0.0.1 unless that is intended"));
            }
            let proxy = Proxy::with_timeout(config.routes.clone(), config.upstream_timeout);
            if let Err(e) = proxy.spawn_workers(listener) {
                events.error(ErrorCode::Internal, &format!("cannot start the proxy: {e}"), "", true);
                return Err(ErrorCode::Internal);
            }
            events.emit("proxy_ready", json!({"addr": bound, "routes": proxy.snapshot()}));
            Ok(Some(proxy))
        }
        Err(e) => {
            let (code, hint) = if e.kind() == std::io::ErrorKind::AddrInUse {
                (
                    ErrorCode::PortInUse,
                    format!("another program listens on {addr}; stop it or set BURROW_PROXY_ADDR to a free address"),
                )
            } else {
                (ErrorCode::Internal, "check BURROW_PROXY_ADDR".to_string())
            };
            eprintln!("burrow: cannot listen on {addr}: {e}");
            events.error(code, &format!("cannot listen on {addr}: {e}"), &hint, true);
            Err(code)
        }
    }
}

/// Puts the reservation's server and tunnels into the configuration.
fn apply_reservation(config: &mut Config, r: &Reservation) -> Result<(), String> {
    let s = &r.server;
    config.server.host = s.addr.trim_start_matches('[').trim_end_matches(']').to_string();
    config.server.port = s.port;
    config.server.token = Secret::new(s.token.clone());
    config.server.tls.enabled = s.tls;
    config.server.tcp_mux = s.tcp_mux;
    config.server.tls.server_name = s.server_name.clone().filter(|n| !n.is_empty());
    config.server.tls.pin = match &s.cert_sha256 {
        Some(p) if !p.is_empty() => Some(crate::config::parse_pin("server.certSha256", p).map_err(|e| e.to_string())?),
        _ => None,
    };
    if config.server.tls.pin.is_some() && !s.tls {
        return Err("server.certSha256 is set but server.tls is false".into());
    }
    let proxy = config.proxy_addr.ok_or("the proxy is off")?;
    config.tunnels = r
        .tunnels
        .iter()
        .map(|t| {
            let mut tc = crate::config::default_tunnel(t.subdomain.clone().filter(|s| !s.is_empty()), proxy);
            tc.name = t.name.clone();
            if let TunnelKind::Http { custom_domains, .. } = &mut tc.kind {
                *custom_domains = t.custom_domains.clone();
            }
            tc.public_url = t.public_url.clone();
            tc
        })
        .collect();
    config.reservation_id = Some(r.id.clone());
    Ok(())
}

/// Renews the reservation whenever a third of its lease remains.
async fn renew_loop(api: Arc<Api>, mut r: Reservation, events: Events, shutdown: CancellationToken) {
    while let Some(at) = provision::renew_at(&r) {
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        match provision::with_retry(&events, &shutdown, "renewing the reservation", || api.renew(&r.id)).await {
            None => return,
            Some(Ok(expires)) => {
                r.renewed_at = SystemTime::now();
                r.expires_at = expires;
                let e = expires.map(|t| humantime::format_rfc3339(t).to_string());
                events.emit("renewed", json!({"reservation_id": r.id, "expires_at": e}));
            }
            Some(Err(e)) => {
                events.error(e.code(), &e.to_string(), e.hint(), false);
                return;
            }
        }
    }
}

fn watch_signals(reason: StopReason, token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                tracing::warn!("cannot install signal handlers; stop burrow through stdin instead");
                return;
            };
            tokio::select! {
                _ = int.recv() => reason.set("signal", &token),
                _ = term.recv() => reason.set("signal", &token),
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                reason.set("signal", &token);
            }
        }
    });
}

fn watch_stdin(reason: StopReason, token: CancellationToken, events: Events, status: Status) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => match serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("cmd").and_then(|c| c.as_str()).map(String::from))
                {
                    Some(cmd) if cmd == "shutdown" => {
                        reason.set("shutdown", &token);
                        return;
                    }
                    Some(cmd) if cmd == "status" => events.emit("status", status.snapshot()),
                    Some(cmd) => events.error(
                        ErrorCode::Internal,
                        &format!("unknown command {cmd:?}"),
                        "commands: {\"cmd\":\"status\"}, {\"cmd\":\"shutdown\"}",
                        false,
                    ),
                    None => events.error(
                        ErrorCode::Internal,
                        "stdin line is not a JSON command",
                        "send one JSON object per line, e.g. {\"cmd\":\"shutdown\"}",
                        false,
                    ),
                },
                // End of stdin: the host is gone.
                Ok(None) | Err(_) => {
                    reason.set("stdin_closed", &token);
                    return;
                }
            }
        }
    });
}
