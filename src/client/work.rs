//! Work connections: opened on `ReqWorkConn`, parked until frps sends `StartWorkConn`, then joined
//! with the tunnel's local service.
//!
//! An http tunnel's work connection is a keep-alive HTTP/1.1 connection that frps reuses for many
//! requests (its reverse proxy pools them); the byte pipe below is transparent to that, and it
//! forwards half-closes, so a request body's end or a WebSocket's close reaches the other side.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use burrow_proto::msg::NewWorkConn;
use burrow_proto::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::framed::{read_msg, write_first_msg, ReadError};
use super::{Shared, Tunnel};
use crate::config::TunnelKind;
use crate::layers::wrap_work_conn;
use crate::transport::{BoxStream, Transport, TransportError};

/// Copy buffer per direction: large enough for bulk transfers, small enough for many conns.
const PIPE_BUF: usize = 64 * 1024;
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a work connection was not started.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// Opening the connection or stream failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The handshake failed.
    #[error("work connection handshake: {0}")]
    Read(#[from] ReadError),
    /// Writing `NewWorkConn` failed.
    #[error("sending NewWorkConn: {0}")]
    Io(#[from] io::Error),
    /// frps sent something else than `StartWorkConn`.
    #[error("expected StartWorkConn, got {0}")]
    Unexpected(burrow_proto::MsgType),
    /// frps refused the work connection.
    #[error("frps refused the work connection: {0}")]
    Refused(String),
    /// `StartWorkConn` names a proxy this client did not register.
    #[error("StartWorkConn for unknown proxy {0:?}")]
    UnknownProxy(String),
    /// The client is shutting down.
    #[error("the client is closed")]
    Closed,
}

/// Opens one work connection and waits (indefinitely: frps pools it) for its user connection;
/// then hands it to a task of its own, so a connection in use outlives the session that opened it
/// where the transport allows (without tcp_mux): a reconnect does not cut transfers. `stop` ends
/// it: when the host stops the tunnels, no user connection may go on reaching the app.
pub(super) async fn open(
    conns: Arc<dyn Transport>,
    shared: Arc<Shared>,
    hello: NewWorkConn,
    stop: CancellationToken,
) -> Result<(), WorkError> {
    // Held until the stream is done; while none is free, frps' request waits here.
    let permit = shared.streams.clone().acquire_owned().await.map_err(|_| WorkError::Closed)?;
    let mut conn = conns.connect().await?;
    let wire = shared.server.wire;
    write_first_msg(&mut conn, &Message::NewWorkConn(hello), wire).await?;
    let start = match read_msg(&mut conn, wire).await? {
        Message::StartWorkConn(s) => s,
        other => return Err(WorkError::Unexpected(other.msg_type())),
    };
    if !start.error.is_empty() {
        return Err(WorkError::Refused(start.error));
    }
    let tunnel =
        shared.tunnel(&start.proxy_name).cloned().ok_or_else(|| WorkError::UnknownProxy(start.proxy_name.clone()))?;
    tracing::debug!("user {}:{} on tunnel {}", start.src_addr, start.src_port, tunnel.config.name);
    let key = shared.key;
    if let (true, Some(proxy)) = (tunnel.in_process, shared.proxy.clone()) {
        // Straight into the proxy's HTTP server: no loopback connection, no second copy loop.
        let c = &tunnel.config;
        let stream = wrap_work_conn(conn, c.use_encryption.then_some(&key), c.use_compression);
        let serve = proxy.serve_connection(stream, crate::proxy::Origin::Tunnel, stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            stop.run_until_cancelled(serve).await;
        });
        return Ok(());
    }
    tokio::spawn(async move {
        let _permit = permit;
        stop.run_until_cancelled(async {
            if let Err(e) = pipe(conn, &tunnel, &key).await {
                tracing::debug!("tunnel {} connection ended: {e}", tunnel.config.name);
            }
        })
        .await;
    });
    Ok(())
}

async fn pipe(conn: BoxStream, tunnel: &Tunnel, key: &[u8; 16]) -> io::Result<()> {
    let c = &tunnel.config;
    let mut remote = wrap_work_conn(conn, c.use_encryption.then_some(key), c.use_compression);
    let local = match tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, TcpStream::connect(&c.local_addr)).await {
        Ok(Ok(s)) => s,
        res => {
            let err = match res {
                Ok(Err(e)) => e,
                _ => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            };
            tracing::warn!("tunnel {}: local service at {} is not answering: {err}", c.name, c.local_addr);
            if matches!(c.kind, TunnelKind::Http { .. }) {
                let body =
                    format!("burrow: the local service of tunnel {} at {} is not answering\n", c.name, c.local_addr);
                let resp = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = remote.write_all(resp.as_bytes()).await;
                let _ = remote.shutdown().await;
            }
            return Err(err);
        }
    };
    let _ = local.set_nodelay(true);
    join(remote, local).await
}

/// Copies until EOF through a buffer that starts at 4 KiB and doubles, up to [`PIPE_BUF`], each
/// time a read fills it. Most tunnel connections are short (a request, an answer): they never
/// pay for zeroing and faulting in 2 × 64 KiB, which dominated the cost of a new connection.
///
/// Like `tokio::io::copy_buf`, it flushes whenever the reader has nothing ready: the TLS, cipher
/// and snappy writers may accept bytes they have not sent yet, and the last bytes of a burst on a
/// connection that then goes quiet must not wait for the next write.
async fn copy<R, W>(mut r: R, w: &mut W) -> io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use std::pin::Pin;
    use std::task::Poll;
    let mut buf = vec![0u8; 4096];
    let mut total = 0u64;
    let mut unflushed = false;
    loop {
        let n = std::future::poll_fn(|cx| {
            let mut rb = tokio::io::ReadBuf::new(&mut buf);
            match Pin::new(&mut r).poll_read(cx, &mut rb) {
                Poll::Ready(res) => Poll::Ready(res.map(|()| rb.filled().len())),
                Poll::Pending => {
                    if unflushed {
                        std::task::ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        unflushed = false;
                    }
                    Poll::Pending
                }
            }
        })
        .await?;
        if n == 0 {
            w.flush().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        unflushed = true;
        total += n as u64;
        if n == buf.len() && buf.len() < PIPE_BUF {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// After one direction ends, how long the other may go on before both are closed.
///
/// The end of one direction is passed on as a half-close, and the other direction gets this long
/// to finish. Waiting longer would not help: frps closes both sides of a user connection as soon
/// as either ends (golib `io.Join`), as frpc does. And a local server that keeps its side of an
/// idle keep-alive connection open after our FIN would otherwise hold the connection, its
/// buffers and the frps work stream for good — thousands of them under HTTP load.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Copies both ways with backpressure until both directions end, or one ends and the grace
/// period passes.
async fn join(remote: BoxStream, local: TcpStream) -> io::Result<()> {
    let (rr, mut rw) = tokio::io::split(remote);
    let (lr, mut lw) = local.into_split();
    let up = async move {
        let r = copy(rr, &mut lw).await;
        let _ = lw.shutdown().await;
        r
    };
    let down = async move {
        let r = copy(lr, &mut rw).await;
        let _ = rw.shutdown().await;
        r
    };
    tokio::pin!(up, down);
    let first = tokio::select! {
        r = &mut up => { let _ = tokio::time::timeout(HALF_CLOSE_GRACE, &mut down).await; r }
        r = &mut down => { let _ = tokio::time::timeout(HALF_CLOSE_GRACE, &mut up).await; r }
    };
    first.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use burrow_proto::msg::StartWorkConn;
    use burrow_proto::Wire;
    use futures::future::BoxFuture;

    use super::*;
    use crate::config::{Secret, ServerConfig};
    use crate::events::Reporter;

    /// frps' side of each work connection opened: it reads `NewWorkConn` and answers `answer`
    /// (or nothing, holding the connection as frps' pool does).
    struct Frps {
        opened: AtomicUsize,
        answer: Option<StartWorkConn>,
    }

    impl Transport for Frps {
        fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>> {
            self.opened.fetch_add(1, Ordering::SeqCst);
            let (ours, mut theirs) = tokio::io::duplex(4096);
            let answer = self.answer.clone();
            tokio::spawn(async move {
                assert!(matches!(read_msg(&mut theirs, Wire::V1).await, Ok(Message::NewWorkConn(_))));
                if let Some(a) = answer {
                    let bytes = Message::StartWorkConn(a).to_bytes().unwrap();
                    let _ = theirs.write_all(&bytes).await;
                }
                std::future::pending::<()>().await;
            });
            Box::pin(async move { Ok(Box::new(ours) as BoxStream) })
        }
    }

    fn shared(max_streams: usize) -> Arc<Shared> {
        Arc::new(Shared {
            server: ServerConfig::new("127.0.0.1", 7000, Secret::new("t")),
            tunnels: Vec::new(),
            by_wire_name: Default::default(),
            reporter: Reporter::silent(),
            key: [0; 16],
            tls: None,
            proxy: None,
            reservation_id: None,
            streams: Arc::new(tokio::sync::Semaphore::new(max_streams)),
        })
    }

    #[tokio::test]
    async fn start_work_conn_for_an_unknown_proxy_fails_that_connection_alone() {
        let shared = shared(1);
        let frps = Arc::new(Frps {
            opened: AtomicUsize::new(0),
            answer: Some(StartWorkConn { proxy_name: "not-mine".into(), ..Default::default() }),
        });
        for _ in 0..3 {
            let r = open(frps.clone(), shared.clone(), NewWorkConn::default(), CancellationToken::new()).await;
            assert!(matches!(&r, Err(WorkError::UnknownProxy(p)) if p == "not-mine"), "{r:?}");
        }
        // Each failure gave its stream back: the cap of one served all three.
        assert_eq!(shared.streams.available_permits(), 1);
        assert_eq!(frps.opened.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn work_connections_beyond_the_stream_cap_wait_without_opening_a_stream() {
        let shared = shared(2);
        let frps = Arc::new(Frps { opened: AtomicUsize::new(0), answer: None });
        let waiting: Vec<_> = (0..5)
            .map(|_| tokio::spawn(open(frps.clone(), shared.clone(), NewWorkConn::default(), CancellationToken::new())))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(frps.opened.load(Ordering::SeqCst), 2, "streams opened past the cap of 2");
        assert!(waiting.iter().all(|w| !w.is_finished()));
    }
}
