//! yamux multiplexing (`tcp_mux`), as frp runs it: burrow is the yamux *client* (odd stream ids,
//! stream 1 is the control connection), frps the server, which never opens streams.
//!
//! frp pins hashicorp/yamux with a 6 MiB maximum stream window: every stream it opens announces
//! `6 MiB − 256 KiB` of extra credit in its SYN. yamux 0.12's `set_receive_window` reproduces that
//! handshake byte for byte (later versions auto-tune the window instead), so burrow uses it. The
//! library answers frps' keepalive pings (every 30 s; frps drops a session that does not answer
//! within 10 s); dead-server detection is the control session's heartbeat.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::Poll;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use super::{BoxStream, Transport, TransportError};

/// frp's `MaxStreamWindowSize`.
pub const STREAM_WINDOW: u32 = 6 * 1024 * 1024;

type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// The yamux configuration matching frp's.
pub fn config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_receive_window(STREAM_WINDOW);
    // A stream may buffer a whole window: frps sends up to the window before we read.
    c.set_max_buffer_size(STREAM_WINDOW as usize);
    c.set_window_update_mode(yamux::WindowUpdateMode::OnRead);
    c.set_split_send_size(64 * 1024);
    c
}

/// Opens streams in one yamux session. Dropping it (and every stream) ends the session.
pub struct MuxTransport {
    open: mpsc::Sender<OpenReply>,
}

/// The task that runs the session's I/O; it ends when the connection does.
pub type Driver = BoxFuture<'static, Result<(), yamux::ConnectionError>>;

impl MuxTransport {
    /// Starts a client session over `io`. Run (spawn) the returned driver for the session to move.
    pub fn client(io: BoxStream) -> (Self, Driver) {
        let conn = yamux::Connection::new(io.compat(), config(), yamux::Mode::Client);
        let (tx, rx) = mpsc::channel(64);
        (Self { open: tx }, Box::pin(drive(conn, rx)))
    }
}

async fn drive(
    mut conn: yamux::Connection<tokio_util::compat::Compat<BoxStream>>,
    mut requests: mpsc::Receiver<OpenReply>,
) -> Result<(), yamux::ConnectionError> {
    let mut waiting: VecDeque<OpenReply> = VecDeque::new();
    poll_fn(|cx| loop {
        while let Poll::Ready(Some(req)) = requests.poll_recv(cx) {
            waiting.push_back(req);
        }
        let mut progressed = false;
        if !waiting.is_empty() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(res) => {
                    let failed = res.is_err();
                    if let Some(reply) = waiting.pop_front() {
                        let _ = reply.send(res);
                    }
                    if failed {
                        return Poll::Ready(Err(yamux::ConnectionError::Closed));
                    }
                    progressed = true;
                }
                Poll::Pending => {}
            }
        }
        // Polling for inbound streams is what moves the session's I/O (reads, writes, pings).
        match conn.poll_next_inbound(cx) {
            // frps never opens streams; one that does is refused by dropping it (yamux resets it).
            Poll::Ready(Some(Ok(stream))) => {
                tracing::debug!("frps opened yamux stream {}; refusing it", stream.id());
                drop(stream);
                progressed = true;
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => {}
        }
        if !progressed {
            return Poll::Pending;
        }
    })
    .await
}

impl Transport for MuxTransport {
    fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.open.send(tx).await.map_err(|_| TransportError::MuxClosed)?;
            let stream = rx.await.map_err(|_| TransportError::MuxClosed)??;
            Ok(Box::new(stream.compat()) as BoxStream)
        })
    }
}
