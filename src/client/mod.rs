//! The native frp client: one control session at a time, rebuilt with backoff when it ends.
//!
//! * [`session`] logs in, registers the tunnels, answers `ReqWorkConn`, keeps the heartbeat.
//! * [`work`] opens one work connection per request and joins it with the local service.
//! * [`framed`] reads and writes whole frp messages.
//!
//! A session is everything that shares one fate: with `tcp_mux` the TCP(+TLS) connection, its
//! yamux session, the control stream and every pooled work stream. When any part fails the whole
//! session is dropped and a new one logs in with the old `run_id`, so frps hands the same tunnel
//! names (and URLs) back. Rejected credentials are the one failure not retried.

pub mod framed;
mod session;
mod work;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerConfig, TunnelConfig};
use crate::events::{ErrorCode, Events};
use crate::proxy::Proxy;
use crate::status::Status;
use crate::transport::tls::{self, TlsSetupError};
use session::SessionError;

/// Why the client cannot start with this configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// TLS settings.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// A tunnel's registration would exceed frp's message limit.
    #[error("tunnel {name:?} cannot be registered: {reason} (too many customDomains, locations or headers)")]
    TunnelTooLarge {
        /// The tunnel.
        name: String,
        /// The framing error.
        reason: String,
    },
}

/// A failure that ends burrow.
#[derive(Debug, Clone)]
pub struct Fatal {
    /// The contract's error code.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
    /// The server looks incompatible with the native client: `auto` mode should use frpc.
    pub fallback: bool,
}

/// A tunnel as the session serves it.
#[derive(Debug, Clone)]
pub(crate) struct Tunnel {
    pub config: TunnelConfig,
    /// The name on the wire (`user.name` when a user is set).
    pub wire_name: String,
    /// Served by the in-process proxy instead of a loopback connection.
    pub in_process: bool,
}

/// What every task of the client shares.
pub(crate) struct Shared {
    pub server: ServerConfig,
    pub tunnels: Vec<Tunnel>,
    pub by_wire_name: HashMap<String, usize>,
    pub events: Events,
    /// PBKDF2 key of the token, derived once.
    pub key: [u8; 16],
    pub tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    /// The in-process reverse proxy, for tunnels whose local target is its address.
    pub proxy: Option<Arc<Proxy>>,
    /// What the client is doing, for `status`.
    pub status: Status,
    /// The reservation the tunnels belong to, for `tunnel_up`.
    pub reservation_id: Option<String>,
}

impl Shared {
    /// `tls+yamux`, `tcp`, … as the `connected` event reports it.
    pub fn transport_name(&self) -> String {
        let base = if self.tls.is_some() { "tls" } else { "tcp" };
        if self.server.tcp_mux {
            format!("{base}+yamux")
        } else {
            base.to_string()
        }
    }

    pub fn tunnel(&self, wire_name: &str) -> Option<&Tunnel> {
        self.by_wire_name.get(wire_name).map(|&i| &self.tunnels[i])
    }
}

/// The native client.
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Prepares a client; fails when the TLS settings cannot be used or a tunnel cannot be
    /// registered as configured. Tunnels whose local target is the address of `proxy` are served
    /// by it in-process.
    pub fn new(config: &Config, events: Events, proxy: Option<Arc<Proxy>>, status: Status) -> Result<Self, SetupError> {
        let server = config.server.clone();
        let tls = if server.tls.enabled {
            let cfg =
                tls::client_config(&tls::Verification { ca_file: server.tls.ca_file.as_deref(), pin: server.tls.pin })?;
            let name = tls::server_name(&server.host, server.tls.server_name.as_deref())?;
            Some((cfg, name))
        } else {
            None
        };
        let tunnels: Vec<Tunnel> = config
            .tunnels
            .iter()
            .map(|t| Tunnel {
                wire_name: if server.user.is_empty() { t.name.clone() } else { format!("{}.{}", server.user, t.name) },
                config: t.clone(),
                in_process: proxy.is_some()
                    && matches!(t.kind, crate::config::TunnelKind::Http { .. })
                    && config.proxy_addr.is_some_and(|a| t.local_addr.parse::<std::net::SocketAddr>().ok() == Some(a)),
            })
            .collect();
        for t in &tunnels {
            // frps drops a frame over 10240 bytes: refuse the configuration instead of a session
            // that can never register.
            let msg = burrow_proto::Message::NewProxy(session::new_proxy(t));
            if let Err(e) = msg.to_bytes() {
                return Err(SetupError::TunnelTooLarge { name: t.config.name.clone(), reason: e.to_string() });
            }
        }
        let by_wire_name = tunnels.iter().enumerate().map(|(i, t)| (t.wire_name.clone(), i)).collect();
        let key = burrow_proto::auth::derive_key(server.token.expose());
        let reservation_id = config.reservation_id.clone();
        Ok(Self {
            shared: Arc::new(Shared { server, tunnels, by_wire_name, events, key, tls, proxy, status, reservation_id }),
        })
    }

    /// Runs until `shutdown` is cancelled (`Ok`) or a failure that must not be retried (`Err`).
    /// With `auto_fallback`, two sessions in a row whose transport came up but whose frp
    /// exchange failed end the run with [`Fatal::fallback`] set, for the caller to start frpc.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        auto_fallback: bool,
        reconnect: Arc<tokio::sync::Notify>,
    ) -> Result<(), Fatal> {
        let events = &self.shared.events;
        if self.shared.server.tls.is_unverified() {
            events.warning(
                "tls_unverified",
                "TLS to frps is encrypted but the server is not authenticated (as frpc does by default); set BURROW_TLS_PIN or BURROW_TLS_CA to verify it",
            );
        }
        let mut run_id = String::new();
        let mut failures: u32 = 0;
        let mut last_error: Option<String> = None;
        let mut incompatible = 0u32;
        loop {
            self.shared.status.set_state("connecting");
            let mut logged_in = false;
            let result = tokio::select! {
                r = session::run(&self.shared, &mut run_id, &shutdown, &mut logged_in) => r,
                // The host says the network changed (wake from sleep): this session may be dead
                // without knowing it; start over at once.
                _ = reconnect.notified() => Err(SessionError::Requested),
            };
            let err = match result {
                Ok(()) => return Ok(()),
                Err(SessionError::Requested) => {
                    failures = 0;
                    last_error = None;
                    incompatible = 0;
                    events.emit("reconnecting", json!({"attempt": 1, "delay_ms": 0, "reason": "reconnect requested"}));
                    continue;
                }
                Err(e) => e,
            };
            let code = err.code();
            let message = err.to_string();
            if err.is_fatal() {
                events.error(code, &message, &err.hint(), true);
                return Err(Fatal { code, message, fallback: false });
            }
            // "Twice in a row" counts sessions that never logged in: a session that did proves the
            // server speaks the protocol, whatever ended it later.
            incompatible = if err.is_incompatibility() && !logged_in { incompatible + 1 } else { 0 };
            if auto_fallback && incompatible >= 2 {
                return Err(Fatal { code, message, fallback: true });
            }
            if logged_in {
                failures = 0;
                last_error = None;
            }
            failures += 1;
            // Say what is wrong once per change, not once per attempt.
            if last_error.as_deref() != Some(&message) {
                events.error(code, &message, &err.hint(), false);
                last_error = Some(message.clone());
            }
            let delay = backoff(failures);
            self.shared.status.set_state("reconnecting");
            tracing::info!("session ended ({message}); reconnecting in {} ms", delay.as_millis());
            events.emit(
                "reconnecting",
                json!({"attempt": failures, "delay_ms": delay.as_millis() as u64, "reason": message}),
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = reconnect.notified() => failures = 0,
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// Capped exponential backoff with ±10% jitter: 0.5 s, 1 s, 2 s, … 20 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16)).min(20_000);
    let jitter = rand::random::<f64>() * 0.2 - 0.1;
    Duration::from_millis((base as f64 * (1.0 + jitter)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let ms = |a| backoff(a).as_millis() as u64;
        assert!((450..=550).contains(&ms(1)));
        assert!((900..=1100).contains(&ms(2)));
        assert!((3600..=4400).contains(&ms(4)));
        for a in [7, 10, 50, u32::MAX] {
            assert!((18_000..=22_000).contains(&ms(a)), "{a}");
        }
    }
}
