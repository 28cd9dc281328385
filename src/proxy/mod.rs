//! The in-process reverse proxy: one local URL for the app's three servers.
//!
//! A hyper HTTP/1.1 server with the route table of [`routes`] (`/api/alt` → backend, `/api` → vibe
//! app, the rest → frontend by default). It serves connections from its loopback listener and —
//! with no loopback hop — the tunnel's work streams, which the native client hands over after
//! `StartWorkConn` and any encryption/compression layers. Each such stream is a persistent
//! keep-alive HTTP/1.1 connection, as frps' reverse proxy expects.
//!
//! Bodies stream in both directions with backpressure and are never buffered whole; upgrades
//! (WebSocket or any HTTP/1.1 `Upgrade`) become raw byte pipes after the upstream's `101`. Headers
//! are handled as careful reverse proxies do: hop-by-hop headers (and those named by `Connection`)
//! are dropped, `X-Forwarded-For/-Proto/-Host` appended or set, `Host` preserved unless a route
//! asks for the upstream's. Upstream connections are pooled (keep-alive). A dead upstream is an
//! immediate 502 naming it; a slow one, a 504.
//!
//! Plain requests are forwarded as bytes by the [`fast`] path; a connection moves to hyper at the
//! first request that is not plain, and hyper serves the rest of it.

pub mod access;
mod fast;
pub mod framing;
#[doc(hidden)]
pub mod fuzz;
mod hyper_path;
mod policy;
pub mod routes;
mod server;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod timer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

pub use access::Access;
use policy::client_ip;
pub use routes::{Route, Routes};
use stats::{CountingBody, RouteStats};
use timer::ConnTimer;

/// How long an upstream may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time an upstream may take to start its response once the request is sent (frps' own
/// vhost timeout is 60 s); `BURROW_UPSTREAM_TIMEOUT` changes it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Cap of hyper's read buffer per upstream connection (its default is about 400 KiB). A response
/// whose reader stalls holds at most this much here; backpressure keeps the rest in the upstream.
const UPSTREAM_BUF: usize = 64 * 1024;

/// Largest request head (request line + headers) the proxy forwards; larger is 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest request target; longer is 414.
pub const MAX_URI: usize = 16 * 1024;

/// The body of a request sent upstream: a request whose body has ended already (most have none)
/// carries an empty one instead, so that it can be sent again whole.
type ReqBody = CountingBody<Either<Incoming, http_body_util::Empty<Bytes>>>;
/// The proxy's response body: streamed from an upstream, or a short local answer.
pub type RespBody = Either<CountingBody<Incoming>, Full<Bytes>>;

/// Where a connection comes from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A client of the loopback listener.
    Local(SocketAddr),
    /// A tunnel work stream: frps already set `X-Forwarded-*` for the public client.
    Tunnel,
}

/// A route and its counters, as `status.proxy` and `proxy_ready.routes` list them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteSnapshot {
    /// How errors name the upstream.
    pub name: String,
    /// The route's path prefix.
    pub prefix: String,
    /// `http://host:port`.
    pub upstream: String,
    /// Its counters.
    #[serde(flatten)]
    pub totals: stats::Totals,
}

/// The reverse proxy.
pub struct Proxy {
    routes: Routes,
    stats: Vec<RouteStats>,
    response_timeout: Duration,
    /// Whether plain requests take the [`fast`] path (off: every request goes through hyper).
    fast_path: bool,
    /// Keys this process's answers on [`VERIFY_PREFIX`], so that only this burrow can give them.
    verify_key: [u8; 32],
    /// Who may use the public URL.
    access: Access,
}

/// Where the proxy answers for itself, never forwarded to an app: `VERIFY_PREFIX<nonce>` answers
/// [`Proxy::verify_answer`] of the nonce, which proves a public URL reaches this burrow.
pub const VERIFY_PREFIX: &str = "/.well-known/burrow-verify/";

/// The upstream connections of one client connection, one slot per route ([`policy::Slot`]).
type Upstreams = std::sync::Mutex<Vec<policy::Slot>>;

/// What the requests of one client connection share. Each request takes one handle to it, which
/// only this connection's thread touches (a handle to the [`Proxy`] itself, shared by all
/// workers, would move a cache line between threads on every request).
struct Conn {
    proxy: Arc<Proxy>,
    client_ip: Option<HeaderValue>,
    /// A tunnel work stream or a client from another machine: the [`access`] policy applies.
    tunnel: bool,
    upstreams: Upstreams,
    /// Only this connection's task may poll its sleeps (see [`timer`]): hyper's header-read
    /// timeout and `handle`'s response timeout, never an upgrade's task.
    timer: ConnTimer,
    stop: CancellationToken,
}

impl Conn {
    fn new(proxy: Arc<Proxy>, origin: Origin, stop: CancellationToken) -> Self {
        Conn {
            upstreams: std::sync::Mutex::new(proxy.routes.all().iter().map(|_| policy::Slot::Empty).collect()),
            proxy,
            client_ip: client_ip(origin),
            // A client from another machine (a proxy listening beyond loopback) is not the local
            // user: the policy applies to it as to the tunnel's.
            tunnel: match origin {
                Origin::Tunnel => true,
                Origin::Local(peer) => !peer.ip().to_canonical().is_loopback(),
            },
            timer: ConnTimer::default(),
            stop,
        }
    }

    /// Takes the fast path's kept-alive upstream connections for the hyper path.
    fn adopt(&self, pool: Vec<policy::Slot>) {
        let mut slots = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, up) in slots.iter_mut().zip(pool) {
            if !matches!(up, policy::Slot::Empty) {
                *slot = up;
            }
        }
    }
}

impl Proxy {
    /// A proxy for `routes`.
    pub fn new(routes: Routes) -> Arc<Self> {
        Self::with_timeout(routes, RESPONSE_TIMEOUT)
    }

    /// A proxy whose upstreams may take `response_timeout` to answer.
    pub fn with_timeout(routes: Routes, response_timeout: Duration) -> Arc<Self> {
        Self::build(routes, response_timeout, true, Access::default())
    }

    /// A proxy whose tunnel requests pass `access`.
    pub fn with_access(routes: Routes, response_timeout: Duration, access: Access) -> Arc<Self> {
        Self::build(routes, response_timeout, true, access)
    }

    /// A proxy that serves every request through hyper, as the reference the [`fast`] path is
    /// tested against.
    pub fn hyper_only(routes: Routes, response_timeout: Duration) -> Arc<Self> {
        Self::build(routes, response_timeout, false, Access::default())
    }

    fn build(routes: Routes, response_timeout: Duration, fast_path: bool, access: Access) -> Arc<Self> {
        let stats = routes.all().iter().map(|_| RouteStats::default()).collect();
        Arc::new(Self { routes, stats, response_timeout, fast_path, verify_key: rand::random(), access })
    }

    /// The access policy, for share links and their revocation.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// What this proxy answers on [`VERIFY_PREFIX`]`nonce` asked for `host`: an HMAC of both
    /// under this process's key, hex. Bound to the host, the answer for one URL says nothing
    /// that links another URL to this machine.
    pub fn verify_answer(&self, nonce: &str, host: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut m =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.verify_key).expect("HMAC takes keys of any length");
        m.update(nonce.as_bytes());
        m.update(b"\0");
        m.update(access::site(host).as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// Counters per route.
    pub fn snapshot(&self) -> Vec<RouteSnapshot> {
        self.routes
            .all()
            .iter()
            .zip(&self.stats)
            .map(|(r, s)| RouteSnapshot {
                name: r.name.clone(),
                prefix: r.prefix.clone(),
                upstream: format!("http://{}", r.authority()),
                totals: s.snapshot(),
            })
            .collect()
    }
}

pub use server::bind;
