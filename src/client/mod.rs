//! The native frp client: one control session at a time, rebuilt with backoff when it ends.
//!
//! * [`session`] logs in, registers the tunnels, answers `ReqWorkConn`, keeps the heartbeat.
//! * [`work`] opens one work connection per request and hands it to the in-process proxy (a tunnel
//!   that reaches it) or joins it with the local service.
//! * [`framed`] reads and writes whole frp messages.
//!
//! A session is everything that shares one fate: with `tcp_mux` the TCP(+TLS) connection, its
//! yamux session, the control stream and every pooled work stream. When any part fails the whole
//! session is dropped and a new one logs in with the old `run_id`, so frps hands the same tunnel
//! names (and URLs) back. Rejected credentials (frps' token, a proxy's password) are the failures
//! not retried.

pub mod framed;
mod session;
mod work;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Protocol, ServerConfig, TunnelConfig};
use crate::events::{Reporter, WarningCode};
use crate::proxy::Proxy;
use crate::status::BackendKind;
use crate::supervise::{Backend, Ended};
use crate::transport::tls::{self, TlsSetupError};

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

impl SetupError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            SetupError::Tls(_) => "fix the TLS settings (BURROW_TLS_CA or transport.tls.trustedCaFile, BURROW_TLS_SERVER_NAME or transport.tls.serverName; a server name must be a DNS name or an IP address) and start again",
            SetupError::TunnelTooLarge { .. } => "frp messages are limited to 10240 bytes: split the tunnel or list fewer domains, locations or headers",
        }
    }
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
    pub reporter: Reporter,
    /// PBKDF2 key of the token, derived once.
    pub key: [u8; 16],
    pub tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    /// The in-process reverse proxy, for tunnels whose local target is its address.
    pub proxy: Option<Arc<Proxy>>,
    /// The reservation the tunnels belong to, for `tunnel_up`.
    pub reservation_id: Option<String>,
    /// One permit per work stream being served (`BURROW_MAX_STREAMS`): past the cap, new work
    /// connections wait, and one user's thousands of stalled requests cannot exhaust the yamux
    /// session everyone shares.
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    pub fn tunnel(&self, wire_name: &str) -> Option<&Tunnel> {
        self.by_wire_name.get(wire_name).map(|&i| &self.tunnels[i])
    }
}

/// The native client.
pub struct Client {
    shared: Arc<Shared>,
    /// The `run_id` frps gave the last login: the next one asks for the same tunnels back.
    run_id: String,
}

impl Client {
    /// Prepares a client; fails when the TLS settings cannot be used or a tunnel cannot be
    /// registered as configured. Tunnels whose local target is the address of `proxy` are served
    /// by it in-process.
    pub fn new(config: &Config, reporter: Reporter, proxy: Option<Arc<Proxy>>) -> Result<Self, SetupError> {
        let server = config.server.clone();
        // wss is TLS to the front server whatever BURROW_TLS says (it then means no TLS inside).
        let tls = if server.tls.enabled || server.protocol == Protocol::Wss {
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
                // Any tunnel to the proxy's address is served in-process as tunnel traffic: the
                // proxy's loopback listener would take it for the local user's.
                in_process: proxy.is_some() && config.proxy_addr.is_some_and(|a| t.reaches_proxy(a)),
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
        if server.tls.is_unverified() {
            reporter.warning(
                WarningCode::TlsUnverified,
                "TLS to frps is encrypted but the server is not authenticated (as frpc does by default); set BURROW_TLS_PIN or BURROW_TLS_CA to verify it",
            );
        }
        let streams = Arc::new(tokio::sync::Semaphore::new(config.max_streams));
        reporter.status().set_streams(streams.clone(), config.max_streams);
        let shared =
            Arc::new(Shared { server, tunnels, by_wire_name, reporter, key, tls, proxy, reservation_id, streams });
        Ok(Self { shared, run_id: String::new() })
    }

    async fn run_session(&mut self, stop: &CancellationToken) -> Ended {
        let mut logged_in = false;
        match session::run(&self.shared, &mut self.run_id, stop, &mut logged_in).await {
            Ok(()) => Ended::stopped(logged_in),
            Err(e) => Ended::failed(logged_in, e.failure()),
        }
    }
}

impl Backend for Client {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn attempt<'a>(&'a mut self, stop: &'a CancellationToken) -> Pin<Box<dyn Future<Output = Ended> + Send + 'a>> {
        Box::pin(self.run_session(stop))
    }
}
