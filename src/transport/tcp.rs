//! Plain TCP to frps.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpStream;

use super::{BoxStream, Transport, TransportError};

/// How long a TCP connect may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Dials `host:port` for every connection.
#[derive(Debug, Clone)]
pub struct TcpTransport {
    host: String,
    port: u16,
}

impl TcpTransport {
    /// A transport to `host:port` (`host` is a name or an IP address, without brackets).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port }
    }

    fn addr(&self) -> String {
        super::host_port(&self.host, self.port)
    }

    /// Opens one TCP connection, with `TCP_NODELAY` (frp's messages are small and latency-bound).
    pub async fn dial(&self) -> Result<TcpStream, TransportError> {
        let addr = self.addr();
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| TransportError::ConnectTimeout { addr: addr.clone(), secs: CONNECT_TIMEOUT.as_secs() })?
            .map_err(|source| TransportError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Transport for TcpTransport {
    fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>> {
        Box::pin(async move { Ok(Box::new(self.dial().await?) as BoxStream) })
    }
}
