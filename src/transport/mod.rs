//! Transports: how burrow opens an frp connection to frps.
//!
//! One trait, [`Transport`], yields an `AsyncRead + AsyncWrite` stream per frp connection (the
//! control connection, then one per work connection). Implementations stack, one file each:
//! [`tcp::TcpTransport`] dials (or [`proxy::ProxyTransport`], through an HTTP or SOCKS5 proxy),
//! [`tls::TlsTransport`] wraps any transport's streams in TLS, [`ws`] carries them in a WebSocket
//! on `/~!frp` (TLS inside it for `websocket`, under it for `wss`), and
//! [`mux::MuxTransport`] opens yamux streams inside one established stream. Without `tcp_mux` the
//! client uses TCP(+TLS) directly, one connection per frp connection; with it, one TCP(+TLS)
//! connection carries a yamux session and every frp connection is a stream in it.

pub mod mux;
pub mod proxy;
pub mod tcp;
pub mod tls;
pub mod ws;

/// `host:port`, an IPv6 address in brackets: the one way burrow writes an address.
pub fn host_port(host: &str, port: u16) -> String {
    format!("{}:{port}", bracketed(host))
}

/// A host as it goes before `:port` (an IPv6 address in brackets).
pub fn bracketed(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

use std::io;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// A boxed stream, so that stacked transports need not be generic all the way up.
pub type BoxStream = Box<dyn AsyncStream>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TCP connect failed (refused, unreachable, name not found).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// TCP connect did not complete in time.
    #[error("connecting to {addr} timed out after {secs} s")]
    ConnectTimeout {
        /// The address dialled.
        addr: String,
        /// The timeout.
        secs: u64,
    },
    /// The TLS handshake failed or the certificate was refused.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The server.
        addr: String,
        /// What rustls said.
        #[source]
        source: io::Error,
    },
    /// The proxy to frps did not give a connection.
    #[error("the proxy {proxy} {source}")]
    Proxy {
        /// `scheme://host:port` (never the credentials).
        proxy: String,
        /// What it did.
        #[source]
        source: proxy::ProxyError,
    },
    /// The WebSocket upgrade failed.
    #[error("WebSocket to {addr}: {reason}")]
    WebSocket {
        /// The server.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The yamux session is gone.
    #[error("the multiplexed connection to frps is closed")]
    MuxClosed,
    /// yamux refused to open a stream.
    #[error("yamux: {0}")]
    Mux(#[from] yamux::ConnectionError),
}

/// Opens frp connections to one frps.
pub trait Transport: Send + Sync {
    /// Opens one frp connection.
    fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>>;
}

/// The layer that dials frps at `host:port`: through `proxy` when there is one, else TCP.
pub fn dialer(proxy: Option<&proxy::ProxyUrl>, host: &str, port: u16) -> std::sync::Arc<dyn Transport> {
    match proxy {
        Some(p) => std::sync::Arc::new(proxy::ProxyTransport::new(p.clone(), host, port)),
        None => std::sync::Arc::new(tcp::TcpTransport::new(host, port)),
    }
}

/// A shared transport is a transport, so layers stack on one chosen at run time.
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>> {
        (**self).connect()
    }
}
