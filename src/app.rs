//! The long-running program: tunnels (native or frpc, reserved or configured) and the proxy
//! under the host's control.
//!
//! The host (an Electron main process, a shell) controls burrow's lifetime: SIGINT, SIGTERM, a
//! `shutdown` command and the end of stdin all mean "stop now, cleanly". `stopped` is always the
//! last line on stdout.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::client::Client;
use crate::config::{Config, Secret, TunnelKind, DEFAULT_TUNNEL};
use crate::control::Controller;
use crate::events::{ErrorCode, Event, Fatal, Outcome, Reporter, WarningCode};
use crate::frpc::Frpc;
use crate::provision::{self, Api, Reservation};
use crate::proxy::Proxy;
use crate::status::State;
use crate::supervise::{Backend, MakeBackend, Supervisor};

/// Runs burrow until it is told to stop or fails fatally. The caller reports the outcome
/// ([`Reporter::exit`]), so `stopped` is always the last line on stdout.
pub async fn run(mut config: Config, reporter: Reporter) -> Outcome {
    reporter.emit(Event::Starting { version: env!("CARGO_PKG_VERSION"), mode: config.mode.as_str() });
    let proxy = match start_proxy(&config, &reporter) {
        Ok(p) => p,
        Err(f) => return Outcome::Fatal(f),
    };
    for name in &config.access.unprotected {
        reporter.warning(
            WarningCode::TcpUnprotected,
            format!("tunnel {name} is not http: burrow's proxy asks for credentials on the HTTP inside it, but frps names none of its visitors (guessing limits are shared) and share links are bound to no host name; make it an http tunnel"),
        );
    }
    let status = reporter.status();
    status.set_tunnels(config.tunnels.iter().map(|t| (t.name.clone(), t.kind.type_name())));
    status.set_proxy(proxy.clone());
    let ctl = Controller::new(reporter.clone(), proxy.clone());
    ctl.watch_signals();
    ctl.watch_stdin();
    let shutdown = ctl.shutdown.clone();
    if let Some(addr) = config.admin_addr {
        if let Err(f) = start_admin(addr, config.admin_token.clone(), &ctl, &reporter).await {
            return Outcome::Fatal(f);
        }
    }

    // Tunnels from the provisioning API: reserve first, renew in the background, release last.
    let mut lease: Option<(Arc<Api>, String)> = None;
    let renew_fatal: Arc<std::sync::Mutex<Option<Fatal>>> = Arc::default();
    if let Some(api_cfg) = config.api.clone() {
        let api = match Api::new(api_cfg, &config.server.proxy) {
            Ok(a) => Arc::new(a),
            Err(e) => return Outcome::Fatal(Fatal::new(ErrorCode::Internal, e, "")),
        };
        reporter.set_state(State::Reserving);
        let reserved = provision::with_retry(&reporter, &shutdown, "reserving tunnels", || {
            api.reserve(&[(DEFAULT_TUNNEL, "http")])
        })
        .await;
        let r = match reserved {
            None => return Outcome::Stopped(ctl.reason().unwrap_or("shutdown")),
            Some(Err(e)) => return Outcome::Fatal(e.fatal()),
            Some(Ok(r)) => r,
        };
        if let Err(e) = apply_reservation(&mut config, &r) {
            release(&api, &r.id).await;
            return Outcome::Fatal(Fatal::new(
                ErrorCode::ApiError,
                e,
                "the reservation's server settings are unusable; report it to the API's operators",
            ));
        }
        status.set_tunnels(config.tunnels.iter().map(|t| (t.name.clone(), t.kind.type_name())));
        let expires_at = r.expires_at.map(|t| humantime::format_rfc3339(t).to_string());
        reporter.emit(Event::Reserved { reservation_id: r.id.clone(), expires_at });
        tokio::spawn(renew_loop(api.clone(), r.clone(), reporter.clone(), ctl.clone(), renew_fatal.clone()));
        lease = Some((api, r.id));
    }

    // The http tunnels the proxy serves get their public URL checked each time they come up.
    if let (Some(p), Some(addr)) = (&proxy, config.proxy_addr) {
        let at_proxy = config
            .tunnels
            .iter()
            .filter(|t| matches!(t.kind, crate::config::TunnelKind::Http { .. }) && t.reaches_proxy(addr))
            .map(|t| t.name.clone())
            .collect();
        crate::verify::watch(reporter.clone(), p.clone(), at_proxy, config.server.proxy.clone());
    }
    let mut result = manage(&config, &reporter, proxy, &ctl).await;
    reporter.set_state(State::Stopping);
    // Whatever ended the run, everything else stops now (the renewal loop included).
    ctl.shutdown.cancel();
    if let Some(f) = renew_fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        result = Err(f);
    }
    if let Some((api, id)) = lease {
        release(&api, &id).await;
    }
    match result {
        Ok(()) => Outcome::Stopped(ctl.reason().unwrap_or("shutdown")),
        Err(fatal) => Outcome::Fatal(fatal),
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

/// Keeps the tunnels as the host wants them: up after `start`, down after `stop` (the proxy
/// stays), until shutdown or a fatal failure. Once `auto` has fallen back to frpc it stays there.
async fn manage(
    config: &Config,
    reporter: &Reporter,
    proxy: Option<Arc<Proxy>>,
    ctl: &Controller,
) -> Result<(), Fatal> {
    let frpc: MakeBackend = {
        let (mut config, reporter) = (config.clone(), reporter.clone());
        // frpc reaches the proxy over loopback: through its door, when the access policy applies.
        if let (Some(p), Some(addr)) = (proxy.as_ref().filter(|p| p.guards_tunnels()), config.proxy_addr) {
            let door = p.open_tunnel_door().map_err(|e| {
                Fatal::new(ErrorCode::Internal, format!("cannot listen on loopback for frpc's tunnels: {e}"), "")
            })?;
            let file = config.frpc_file.as_mut().map(|(_, raw)| raw);
            crate::frpc::config::through_door(&mut config.tunnels, file, addr, door);
        }
        Box::new(move || {
            Box::pin(async move { Frpc::prepare(&config, reporter).await.map(|f| Box::new(f) as Box<dyn Backend>) })
        })
    };
    let native = || {
        Client::new(config, reporter.clone(), proxy)
            .map(|c| Box::new(c) as Box<dyn Backend>)
            .map_err(|e| Fatal::new(ErrorCode::ConfigInvalid, e.to_string(), e.hint()))
    };
    let mut supervisor = Supervisor::start(
        config.mode,
        config.native_gap.as_deref(),
        config.server.tls.pin.is_some(),
        native,
        frpc,
        reporter.clone(),
        ctl.reconnect.clone(),
    )
    .await?;
    let mut wanted = ctl.wanted();
    loop {
        // Wait until the tunnels are wanted (they are, at first).
        while !*wanted.borrow_and_update() {
            reporter.set_state(State::Stopped);
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
        let r = supervisor.run(&run).await;
        stopper.abort();
        if ctl.shutdown.is_cancelled() || r.is_err() {
            return r;
        }
        tracing::info!("tunnels stopped on request; the proxy keeps serving");
    }
}

async fn start_admin(
    addr: std::net::SocketAddr,
    token: Option<Secret>,
    ctl: &Controller,
    reporter: &Reporter,
) -> Result<(), Fatal> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            let code =
                if e.kind() == std::io::ErrorKind::AddrInUse { ErrorCode::PortInUse } else { ErrorCode::Internal };
            return Err(Fatal::new(
                code,
                format!("cannot listen on {addr} for the admin API: {e}"),
                "set BURROW_ADMIN_ADDR to a free loopback address, or to off (or unset it)",
            ));
        }
    };
    let generated = token.is_none();
    let token = token.map(|t| t.expose().to_string()).unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let bound = crate::admin::serve(listener, token.clone(), ctl.clone(), reporter.clone())
        .map_err(|e| Fatal::new(ErrorCode::Internal, format!("cannot start the admin API: {e}"), ""))?;
    let url = format!("http://{bound}/");
    // The contract gives a generated token to the host in this event; a token the host chose it
    // already knows and is never echoed.
    let (token, page) =
        if generated { (Some(token.clone()), Some(format!("{url}#token={token}"))) } else { (None, None) };
    reporter.emit(Event::AdminReady { url, token, page });
    Ok(())
}

fn start_proxy(config: &Config, reporter: &Reporter) -> Result<Option<Arc<Proxy>>, Fatal> {
    let Some(addr) = config.proxy_addr else { return Ok(None) };
    match crate::proxy::bind(addr) {
        Ok(listener) => {
            let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
            if !addr.ip().is_loopback() {
                reporter.warning(WarningCode::ProxyNotLoopback, format!("the reverse proxy listens on {bound}, reachable from other machines; use 127.0.0.1 unless that is intended"));
            }
            let proxy = Proxy::with_access(config.routes.clone(), config.upstream_timeout, config.access.policy());
            if let Err(e) = proxy.spawn_workers(listener) {
                return Err(Fatal::new(ErrorCode::Internal, format!("cannot start the proxy: {e}"), ""));
            }
            reporter.emit(Event::ProxyReady { addr: bound, routes: proxy.snapshot() });
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
            Err(Fatal::new(code, format!("cannot listen on {addr}: {e}"), hint))
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
    if let Some(p) = s.protocol.as_deref().filter(|p| !p.is_empty()) {
        config.server.protocol = crate::config::parse_protocol("server.protocol", p).map_err(|e| e.to_string())?;
    }
    if let Some(p) = s.proxy_url.as_deref().filter(|p| !p.is_empty()) {
        let p = crate::config::parse_proxy_url("server.proxyUrl", p).map_err(|e| e.to_string())?;
        config.server.proxy = crate::config::ServerProxy::Explicit(p);
    }
    if let Some(w) = s.wire_protocol.as_deref().filter(|w| !w.is_empty()) {
        config.server.wire = crate::config::parse_wire("server.wireProtocol", w).map_err(|e| e.to_string())?;
    }
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
    reporter: Reporter,
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
        match provision::with_retry(&reporter, &shutdown, "renewing the reservation", || api.renew(&r.id)).await {
            None => return,
            Some(Ok(expires)) => {
                r.renewed_at = SystemTime::now();
                r.expires_at = expires;
                let expires_at = expires.map(|t| humantime::format_rfc3339(t).to_string());
                reporter.emit(Event::Renewed { reservation_id: r.id.clone(), expires_at });
            }
            Some(Err(e)) => {
                *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.fatal());
                ctl.stop_burrow("fatal");
                return;
            }
        }
    }
}
