//! The long-running program: the native client under the host's control.
//!
//! The host (an Electron main process, a shell) controls burrow's lifetime: SIGINT, SIGTERM, a
//! `shutdown` command and the end of stdin all mean "stop now, cleanly". `stopped` is always the
//! last line on stdout.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, SetupError};
use crate::config::Config;
use crate::events::{ErrorCode, Events};
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
pub async fn run(config: Config, events: Events) -> i32 {
    events.emit("starting", json!({"version": env!("CARGO_PKG_VERSION"), "mode": "native"}));
    let proxy = match config.proxy_addr {
        None => None,
        Some(addr) => match crate::proxy::bind(addr) {
            Ok(listener) => {
                let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
                if !addr.ip().is_loopback() {
                    events.warning("proxy_not_loopback", &format!("the reverse proxy listens on {bound}, reachable from other machines; use 127.0.0.1 unless that is intended"));
                }
                let proxy = Proxy::with_timeout(config.routes.clone(), config.upstream_timeout);
                if let Err(e) = proxy.spawn_workers(listener) {
                    events.error(ErrorCode::Internal, &format!("cannot start the proxy: {e}"), "", true);
                    events.emit("stopped", json!({"reason": "internal"}));
                    return ErrorCode::Internal.exit_code();
                }
                events.emit("proxy_ready", json!({"addr": bound, "routes": proxy.snapshot()}));
                Some(proxy)
            }
            Err(e) => {
                let (code, hint) = if e.kind() == std::io::ErrorKind::AddrInUse {
                    (
                        ErrorCode::PortInUse,
                        format!(
                            "another program listens on {addr}; stop it or set BURROW_PROXY_ADDR to a free address"
                        ),
                    )
                } else {
                    (ErrorCode::Internal, "check BURROW_PROXY_ADDR".to_string())
                };
                events.error(code, &format!("cannot listen on {addr}: {e}"), &hint, true);
                events.emit("stopped", json!({"reason": code.as_str()}));
                return code.exit_code();
            }
        },
    };
    let client = match Client::new(&config, events.clone(), proxy) {
        Ok(c) => c,
        Err(e) => {
            let hint = match &e {
                SetupError::Tls(_) => "fix the TLS settings (BURROW_TLS_CA or transport.tls.trustedCaFile, BURROW_TLS_SERVER_NAME or transport.tls.serverName; a server name must be a DNS name or an IP address) and start again",
                SetupError::TunnelTooLarge { .. } => "frp messages are limited to 10240 bytes: split the tunnel or list fewer domains, locations or headers",
            };
            eprintln!("burrow: {e}");
            events.error(ErrorCode::ConfigInvalid, &e.to_string(), hint, true);
            events.emit("stopped", json!({"reason": "config_invalid"}));
            return ErrorCode::ConfigInvalid.exit_code();
        }
    };
    let shutdown = CancellationToken::new();
    let reason = StopReason::default();
    watch_signals(reason.clone(), shutdown.clone());
    watch_stdin(reason.clone(), shutdown.clone(), events.clone(), client.status());

    let result = client.run(shutdown.clone()).await;
    match result {
        Ok(()) => {
            events.emit("stopped", json!({"reason": reason.get().unwrap_or("shutdown")}));
            0
        }
        Err(fatal) => {
            eprintln!("burrow: {}", fatal.message);
            events.emit("stopped", json!({"reason": fatal.code.as_str()}));
            fatal.code.exit_code()
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
