//! What burrow is doing right now: the body of the `status` event and of `GET /api/status`.
//!
//! The [`Reporter`](crate::events::Reporter) keeps it current from the events it emits (a tunnel
//! is up once `tunnel_up` is out); the few states no event names are set directly. One small
//! mutex: updates happen a few times per connection, not per byte.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::proxy::Proxy;

/// burrow's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum State {
    Starting,
    Reserving,
    Connecting,
    Connected,
    Reconnecting,
    /// The tunnels are down on the host's request; the proxy serves.
    Stopped,
    Stopping,
}

/// A tunnel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum TunnelState {
    Pending,
    Up,
    Down,
}

/// Which client serves the tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum BackendKind {
    Native,
    Frpc,
}

/// A tunnel as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelStatus {
    /// Name.
    pub name: String,
    /// `http` or `tcp`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Public URL (http) or remote address (tcp), once known.
    pub url: Option<String>,
    /// Its state.
    pub state: TunnelState,
    /// Whether the public URL reached this burrow when last checked (`null`: not checked yet).
    pub verified: Option<bool>,
    /// Why it did not, or how long the check took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_message: Option<String>,
}

/// The `status` event's fields.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Overall state.
    pub state: State,
    /// Which client serves the tunnels.
    pub mode: BackendKind,
    /// Every tunnel.
    pub tunnels: Vec<TunnelStatus>,
    /// The reverse proxy's routes and counters, when it runs.
    pub proxy: Option<Vec<crate::proxy::RouteSnapshot>>,
    /// Tunnel work streams being served, and the cap (native client only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<Streams>,
}

/// Work streams in use.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Streams {
    /// Being served (or opening) now.
    pub active: usize,
    /// `BURROW_MAX_STREAMS`.
    pub max: usize,
}

struct Inner {
    state: State,
    mode: BackendKind,
    tunnels: Vec<TunnelStatus>,
    proxy: Option<Arc<Proxy>>,
    streams: Option<(Arc<tokio::sync::Semaphore>, usize)>,
}

/// Shared status board.
#[derive(Clone)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state: State::Starting,
                mode: BackendKind::Native,
                tunnels: Vec::new(),
                proxy: None,
                streams: None,
            })),
        }
    }
}

impl Status {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the tunnel list, all pending (the configuration, then a reservation, names them).
    pub fn set_tunnels(&self, tunnels: impl IntoIterator<Item = (String, &'static str)>) {
        self.lock().tunnels = tunnels
            .into_iter()
            .map(|(name, kind)| TunnelStatus {
                name,
                kind,
                url: None,
                state: TunnelState::Pending,
                verified: None,
                verify_message: None,
            })
            .collect();
    }

    /// The proxy whose counters the status shows.
    pub fn set_proxy(&self, proxy: Option<Arc<Proxy>>) {
        self.lock().proxy = proxy;
    }

    /// The native client's work-stream permits, counted in the status.
    pub fn set_streams(&self, permits: Arc<tokio::sync::Semaphore>, max: usize) {
        self.lock().streams = Some((permits, max));
    }

    /// Which client serves the tunnels; only the native client counts work streams.
    pub fn set_mode(&self, mode: BackendKind) {
        let mut g = self.lock();
        g.mode = mode;
        if mode != BackendKind::Native {
            g.streams = None;
        }
    }

    /// Sets the overall state.
    pub fn set_state(&self, state: State) {
        self.lock().state = state;
    }

    /// Records a tunnel's state (and its address when known).
    pub fn set_tunnel(&self, name: &str, state: TunnelState, url: Option<String>) {
        let mut g = self.lock();
        if let Some(t) = g.tunnels.iter_mut().find(|t| t.name == name) {
            t.state = state;
            if url.is_some() {
                t.url = url;
            }
            if state == TunnelState::Up {
                (t.verified, t.verify_message) = (None, None);
            }
        }
    }

    /// Records the outcome of checking a tunnel's public URL (`verify`).
    pub fn set_verified(&self, name: &str, verified: bool, message: String) {
        let mut g = self.lock();
        if let Some(t) = g.tunnels.iter_mut().find(|t| t.name == name) {
            (t.verified, t.verify_message) = (Some(verified), Some(message));
        }
    }

    /// What burrow is doing now.
    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            state: g.state,
            mode: g.mode,
            tunnels: g.tunnels.clone(),
            proxy: g.proxy.as_ref().map(|p| p.snapshot()),
            streams: g.streams.as_ref().map(|(p, max)| Streams { active: max - p.available_permits(), max: *max }),
        }
    }
}
