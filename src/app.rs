//! The long-running program: tunnels (native or frpc, reserved or configured) and the proxy
//! under the host's control.
//!
//! The host (an Electron main process, a shell) controls burrow's lifetime: SIGINT, SIGTERM, a
//! `shutdown` command and the end of stdin all mean "stop now, cleanly". `stopped` is always the
//! last line on stdout.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Fatal, SetupError};
use crate::config::{Config, Mode, Secret, TunnelKind, DEFAULT_TUNNEL};
use crate::control::Controller;
use crate::events::{ErrorCode, Events};
use crate::frpc;
use crate::provision::{self, Api, Reservation};
use crate::proxy::Proxy;
use crate::status::Status;

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
    let ctl = Controller::new(events.clone(), status.clone());
    ctl.watch_signals();
    ctl.watch_stdin();
    let shutdown = ctl.shutdown.clone();
    if let Some(addr) = config.admin_addr {
        if let Err(code) = start_admin(addr, config.admin_token.clone(), &ctl, &status, &events).await {
            events.emit("stopped", json!({"reason": code.as_str()}));
            return code.exit_code();
        }
    }

    // Tunnels from the provisioning API: reserve first, renew in the background, release last.
    let mut lease: Option<(Arc<Api>, String)> = None;
    let renew_fatal: Arc<std::sync::Mutex<Option<Fatal>>> = Arc::default();
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
            None => return stop_ok(&events, &ctl),
            Some(Err(e)) => return stop_fatal(&events, e.code(), &e.to_string(), e.hint()),
            Some(Ok(r)) => r,
        };
        if let Err(e) = apply_reservation(&mut config, &r) {
            release(&api, &r.id).await;
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
        tokio::spawn(renew_loop(api.clone(), r.clone(), events.clone(), ctl.clone(), renew_fatal.clone()));
        lease = Some((api, r.id));
    }

    let mut result = manage(&config, &events, &status, proxy, &ctl).await;
    status.set_state("stopping");
    // Whatever ended the run, everything else stops now (the renewal loop included).
    ctl.shutdown.cancel();
    if let Some(f) = renew_fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        result = Err(f);
    }
    if let Some((api, id)) = lease {
        release(&api, &id).await;
    }
    match result {
        Ok(()) => stop_ok(&events, &ctl),
        Err(fatal) => {
            crate::say!("burrow: {}", fatal.message);
            events.emit("stopped", json!({"reason": fatal.code.as_str()}));
            fatal.code.exit_code()
        }
    }
}

/// Releases a reservation: best effort, bounded, so an exit never hangs on a dead API.
async fn release(api: &Api, id: &str) {
    match tokio::time::timeout(Duration::from_secs(3), api.release(id)).await {
        Ok(Ok(())) => tracing::info!("released reservation {id}"),
        Ok(Err(e)) => tracing::warn!("releasing reservation {id} failed: {e}"),
        Err(_) => tracing::warn!("releasing reservation {id} timed out"),
    }
}

fn stop_ok(events: &Events, ctl: &Controller) -> i32 {
    events.emit("stopped", json!({"reason": ctl.reason().unwrap_or("shutdown")}));
    0
}

/// Keeps the tunnels as the host wants them: up after `start`, down after `stop` (the proxy
/// stays), until shutdown or a fatal failure. Once `auto` has fallen back to frpc it stays there.
async fn manage(
    config: &Config,
    events: &Events,
    status: &Status,
    proxy: Option<Arc<Proxy>>,
    ctl: &Controller,
) -> Result<(), Fatal> {
    let mut wanted = ctl.wanted();
    let mut on_frpc = false;
    loop {
        // Wait until the tunnels are wanted (they are, at first).
        while !*wanted.borrow_and_update() {
            status.set_state("stopped");
            tokio::select! {
                r = wanted.changed() => if r.is_err() { return Ok(()) },
                _ = ctl.shutdown.cancelled() => return Ok(()),
            }
        }
        let run = ctl.shutdown.child_token();
        let stopper = {
            let (run, mut w) = (run.clone(), ctl.wanted());
            tokio::spawn(async move {
                while *w.borrow_and_update() {
                    if w.changed().await.is_err() {
                        return;
                    }
                }
                run.cancel();
            })
        };
        let r = serve(config, events, status, proxy.clone(), run, ctl, &mut on_frpc).await;
        stopper.abort();
        if ctl.shutdown.is_cancelled() || r.is_err() {
            return r;
        }
        tracing::info!("tunnels stopped on request; the proxy keeps serving");
    }
}

fn stop_fatal(events: &Events, code: ErrorCode, message: &str, hint: &str) -> i32 {
    crate::say!("burrow: {message}");
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
    ctl: &Controller,
    on_frpc: &mut bool,
) -> Result<(), Fatal> {
    let frpc_now = *on_frpc
        || match config.mode {
            Mode::Frpc => true,
            Mode::Native => false,
            Mode::Auto => config.native_gap.is_some(),
        };
    if frpc_now {
        if let (Mode::Auto, Some(gap), false) = (config.mode, &config.native_gap, *on_frpc) {
            events.emit(
                "fallback",
                json!({"from": "native", "to": "frpc", "reason": format!("the configuration needs frpc: {gap}")}),
            );
        }
        *on_frpc = true;
        status.set_mode("frpc");
        return frpc::run(config, events, status, shutdown, ctl.reconnect.clone()).await;
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
    // frpc cannot check a pin: a pinned configuration never falls back.
    let auto_fallback = config.mode == Mode::Auto && config.server.tls.pin.is_none();
    match client.run(shutdown.clone(), auto_fallback, ctl.reconnect.clone()).await {
        Err(f) if f.fallback => {
            events.emit("fallback", json!({"from": "native", "to": "frpc", "reason": format!("the server does not speak the native client's protocol: {}", f.message)}));
            *on_frpc = true;
            status.set_mode("frpc");
            frpc::run(config, events, status, shutdown, ctl.reconnect.clone()).await
        }
        other => other,
    }
}

async fn start_admin(
    addr: std::net::SocketAddr,
    token: Option<Secret>,
    ctl: &Controller,
    status: &Status,
    events: &Events,
) -> Result<(), ErrorCode> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            let code =
                if e.kind() == std::io::ErrorKind::AddrInUse { ErrorCode::PortInUse } else { ErrorCode::Internal };
            crate::say!("burrow: cannot listen on {addr} for the admin API: {e}");
            events.error(
                code,
                &format!("cannot listen on {addr} for the admin API: {e}"),
                "set BURROW_ADMIN_ADDR to a free loopback address, or to off (or unset it)",
                true,
            );
            return Err(code);
        }
    };
    if !addr.ip().is_loopback() {
        events.warning(
            "admin_not_loopback",
            &format!(
                "the admin API listens on {addr}, reachable from other machines; use 127.0.0.1 unless that is intended"
            ),
        );
    }
    let generated = token.is_none();
    let token = token.map(|t| t.expose().to_string()).unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let bound = crate::admin::serve(listener, token.clone(), ctl.clone(), status.clone(), events.clone())
        .map_err(|_| ErrorCode::Internal)?;
    let url = format!("http://{bound}/");
    let mut ev = json!({"url": url});
    if generated {
        // The contract gives a generated token to the host in this event; a token the host chose
        // it already knows and is never echoed.
        ev["token"] = json!(token);
        ev["page"] = json!(format!("{url}#token={token}"));
    }
    events.emit("admin_ready", ev);
    Ok(())
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
            crate::say!("burrow: cannot listen on {addr}: {e}");
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

/// Renews the reservation whenever a third of its lease remains. A refusal (401/403) or an
/// unreadable answer is fatal, as for the reservation itself: burrow stops rather than run on a
/// lease that is about to lapse.
async fn renew_loop(
    api: Arc<Api>,
    mut r: Reservation,
    events: Events,
    ctl: Controller,
    fatal: Arc<std::sync::Mutex<Option<Fatal>>>,
) {
    let shutdown = ctl.shutdown.clone();
    while let Some(at) = provision::renew_at(&r) {
        // At least a second apart, even when the clock says the lease is already past.
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_secs(1));
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
                events.error(e.code(), &e.to_string(), e.hint(), true);
                *fatal.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Fatal { code: e.code(), message: e.to_string(), fallback: false });
                ctl.stop_burrow("fatal");
                return;
            }
        }
    }
}
