//! The proxy's server: worker threads (one single-threaded runtime per core), the accept loop
//! that deals connections out, and the life of one client connection (fast path, then hyper).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::hyper_path::refuse_framing;
use super::policy::{wants_json, LOCAL_HEAD_TIMEOUT, TUNNEL_HEAD_TIMEOUT};
use super::{fast, framing, Conn, Origin, Proxy, MAX_HEAD};

/// A connection the accepting worker hands to another.
type Dealt = (std::net::TcpStream, SocketAddr);

impl Proxy {
    /// Serves `listener` on one thread per core, each with a single-threaded runtime. A client
    /// connection and its upstream connections then live on one thread, as in nginx's worker
    /// model: no cross-thread wake-ups per request.
    ///
    /// The first worker accepts and deals the connections out in turn, so that a burst of them
    /// (a browser's six, a load test's sixteen) is spread evenly; the kernel's `SO_REUSEPORT`
    /// hashing can leave one worker with most of a burst, and its queue then sets the tail.
    pub fn spawn_workers(self: &Arc<Self>, listener: std::net::TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        // One worker per core (at least two): the proxy shares the machine with its upstreams and
        // clients, and a preempted worker stalls every connection on it; with the fast path's
        // short requests more workers per core only add wake-ups (bench/RESULTS.md).
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = cores.clamp(2, 16);
        let mut others = Vec::new();
        for i in 1..workers {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Dealt>();
            others.push(tx);
            let this = self.clone();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::Builder::new().name(format!("burrow-proxy-{i}")).spawn(move || {
                rt.block_on(async move {
                    while let Some((stream, peer)) = rx.recv().await {
                        this.clone().spawn_dealt_client(stream, peer);
                    }
                    // The accepting worker is gone; the connections here still run to their end.
                    std::future::pending::<()>().await
                })
            })?;
        }
        let this = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered here, so that a listener the runtime cannot take is an error of this call.
        let listener = {
            let _enter = rt.enter();
            TcpListener::from_std(listener)?
        };
        std::thread::Builder::new()
            .name("burrow-proxy-0".into())
            .spawn(move || rt.block_on(this.accept_loop(listener, others)))?;
        Ok(())
    }

    /// Whether tunnel requests meet the access policy anywhere: then a tunnel client that
    /// connects over loopback (frpc) must come in through [`Self::open_tunnel_door`].
    pub fn guards_tunnels(&self) -> bool {
        super::access::guards(self.access.mode(), &self.routes)
    }

    /// A second loopback listener, on a free port, whose connections are served as tunnel work
    /// streams: frpc's connections come from loopback, and the access policy must still see them
    /// as the public's. Served on the current runtime until burrow exits.
    pub fn open_tunnel_door(self: &Arc<Self>) -> std::io::Result<SocketAddr> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(this.clone().serve_connection(stream, Origin::Tunnel, CancellationToken::new()));
                    }
                    Err(e) => {
                        tracing::warn!("proxy accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(addr)
    }

    /// Serves the listener until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.accept_loop(listener, Vec::new()).await
    }

    /// Accepts connections, serving one in `others.len() + 1` here and handing the rest to the
    /// other workers in turn.
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, others: Vec<UnboundedSender<Dealt>>) {
        let mut turn = 0;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("proxy accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            turn = (turn + 1) % (others.len() + 1);
            let Some(worker) = turn.checked_sub(1).and_then(|w| others.get(w)) else {
                self.clone().spawn_client(stream, peer);
                continue;
            };
            // Off this runtime's reactor, onto the other worker's.
            match stream.into_std() {
                Ok(stream) => {
                    if let Err(back) = worker.send((stream, peer)) {
                        // That worker is gone: serve the connection here.
                        self.clone().spawn_dealt_client(back.0 .0, peer);
                    }
                }
                Err(e) => tracing::warn!("proxy cannot hand over a connection from {peer}: {e}"),
            }
        }
    }

    /// Serves a loopback client's connection on a task of the current runtime.
    fn spawn_client(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        tokio::spawn(self.serve_connection(stream, Origin::Local(peer), CancellationToken::new()));
    }

    /// [`Self::spawn_client`] for a connection taken off another runtime's reactor.
    fn spawn_dealt_client(self: Arc<Self>, stream: std::net::TcpStream, peer: SocketAddr) {
        match TcpStream::from_std(stream) {
            Ok(stream) => self.spawn_client(stream, peer),
            Err(e) => tracing::warn!("proxy cannot serve a connection from {peer}: {e}"),
        }
    }

    /// Serves one connection (a local client, or a tunnel work stream) as persistent HTTP/1.1.
    /// `stop` also ends the WebSockets and other upgraded connections it hands off, which outlive
    /// the HTTP connection: stopping a tunnel must cut them too.
    ///
    /// Requests start on the [`fast`] path; the first one it declines, and the rest of the
    /// connection, are served by hyper.
    pub async fn serve_connection<S>(self: Arc<Self>, mut io: S, origin: Origin, stop: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(Conn::new(self, origin, stop));
        let timer = conn.timer.clone();
        let mut read = bytes::BytesMut::new();
        if conn.proxy.fast_path {
            let local = matches!(origin, Origin::Local(_));
            if let fast::End::Closed = fast::serve(&conn, &mut io, &mut read, local).await {
                return;
            }
        }
        let (io, ambiguous) = framing::FramingGuard::new(Prefixed::new(read.freeze(), io));
        let svc = hyper::service::service_fn(move |req| {
            let conn = conn.clone();
            let ambiguous = ambiguous.load(Relaxed);
            async move {
                if ambiguous {
                    return Ok::<_, Infallible>(refuse_framing(
                        "the request has both Transfer-Encoding and Content-Length, or Content-Length twice",
                        wants_json(req.headers()),
                    ));
                }
                Ok::<_, Infallible>(conn.proxy.handle(req, &conn).await)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // hyper's own read-buffer cap bounds memory per connection (past it hyper answers 431 by
        // itself); the exact head limit is checked per request in `handle`. Heads and bodies are
        // copied into one buffer rather than queued for writev: for the small responses that make
        // up most requests the copy is cheaper than hyper's queue; large bodies stay bounded by
        // the same cap.
        builder.max_buf_size(2 * MAX_HEAD).keep_alive(true).writev(false).timer(timer);
        // Slow-loris guard (the timeouts are the policy's).
        builder.header_read_timeout(match origin {
            Origin::Local(_) => LOCAL_HEAD_TIMEOUT,
            Origin::Tunnel => TUNNEL_HEAD_TIMEOUT,
        });
        if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).with_upgrades().await {
            tracing::debug!("proxy connection ended: {e}");
        }
    }
}

/// A stream with bytes already read from it put back in front: how the hyper path receives a
/// connection the fast path declined.
pub(super) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Binds the proxy's address, with a listen backlog that takes a burst of a thousand connects
/// (the standard library's is 128; past it, connects wait for SYN retries, a second or more).
/// Linux caps it at `net.core.somaxconn` (4096 since 5.4, 128 before).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As the standard library does on Unix: rebinding while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}
