//! What burrow is doing right now, for the `status` event (and, later, the admin API).
//!
//! The client writes tunnel and connection state here as it changes; readers take a JSON
//! snapshot. One small mutex: updates happen a few times per connection, not per byte.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::proxy::Proxy;

/// A tunnel as the status shows it.
#[derive(Debug, Clone)]
pub struct TunnelStatus {
    /// Name.
    pub name: String,
    /// `http` or `tcp`.
    pub kind: &'static str,
    /// Public URL (http) or remote address (tcp), once known.
    pub url: Option<String>,
    /// `pending`, `up`, `down`.
    pub state: &'static str,
}

#[derive(Debug)]
struct Inner {
    state: &'static str,
    mode: &'static str,
    tunnels: Vec<TunnelStatus>,
}

/// Shared status board.
#[derive(Clone)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
    proxy: Option<Arc<Proxy>>,
}

impl Status {
    /// A board for these tunnels, all pending.
    pub fn new(tunnels: impl IntoIterator<Item = (String, &'static str)>, proxy: Option<Arc<Proxy>>) -> Self {
        let tunnels =
            tunnels.into_iter().map(|(name, kind)| TunnelStatus { name, kind, url: None, state: "pending" }).collect();
        Self { inner: Arc::new(Mutex::new(Inner { state: "starting", mode: "native", tunnels })), proxy }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the tunnel list (a reservation names the tunnels).
    pub fn set_tunnels(&self, tunnels: impl IntoIterator<Item = (String, &'static str)>) {
        self.lock().tunnels =
            tunnels.into_iter().map(|(name, kind)| TunnelStatus { name, kind, url: None, state: "pending" }).collect();
    }

    /// `native` or `frpc`.
    pub fn set_mode(&self, mode: &'static str) {
        self.lock().mode = mode;
    }

    /// Sets the overall state: `starting`, `connecting`, `connected`, `reconnecting`, `stopping`.
    pub fn set_state(&self, state: &'static str) {
        self.lock().state = state;
    }

    /// Records a tunnel's state (and URL when known).
    pub fn set_tunnel(&self, name: &str, state: &'static str, url: Option<String>) {
        let mut g = self.lock();
        if let Some(t) = g.tunnels.iter_mut().find(|t| t.name == name) {
            t.state = state;
            if url.is_some() {
                t.url = url;
            }
        }
    }

    /// The body of the `status` event.
    pub fn snapshot(&self) -> Value {
        let g = self.lock();
        let tunnels: Vec<Value> =
            g.tunnels.iter().map(|t| json!({"name": t.name, "type": t.kind, "url": t.url, "state": t.state})).collect();
        json!({
            "state": g.state,
            "mode": g.mode,
            "tunnels": tunnels,
            "proxy": self.proxy.as_ref().map(|p| p.snapshot()),
        })
    }
}
