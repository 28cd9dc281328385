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

/// Streams open at once with the full [`STREAM_WINDOW`] (the control stream and three work
/// streams); the rest get yamux's base 256 KiB. frps may push a whole window into a stream before
/// burrow reads it (an upload to a slow app server), so this bounds the session's receive buffers
/// to `4 × 6 MiB + (streams − 4) × 256 KiB`: 73 MiB with 200 uploads stalled, not 1.2 GiB.
pub const LARGE_WINDOWS: usize = 4;

type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// The yamux configuration matching frp's.
pub fn config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_receive_window(STREAM_WINDOW);
    // A stream may buffer a whole window: frps sends up to the window before we read.
    c.set_max_buffer_size(STREAM_WINDOW as usize);
    c.set_window_update_mode(yamux::WindowUpdateMode::OnRead);
    c.set_large_windows(LARGE_WINDOWS);
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
        Self::client_with(io, config())
    }

    /// [`MuxTransport::client`] with another configuration (tests).
    pub fn client_with(io: BoxStream, config: yamux::Config) -> (Self, Driver) {
        let conn = yamux::Connection::new(io.compat(), config, yamux::Mode::Client);
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
                    // Too many streams fails that one open; the session and its other streams
                    // (every public user's) go on. Anything else means the session is gone.
                    let fatal = res.is_err() && !matches!(res, Err(yamux::ConnectionError::TooManyStreams));
                    if let Some(reply) = waiting.pop_front() {
                        let _ = reply.send(res);
                    }
                    if fatal {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A yamux server echoing every stream, as frps' side of the session.
    fn echo_server(io: tokio::io::DuplexStream) {
        tokio::spawn(async move {
            let mut conn = yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Server);
            while let Some(Ok(mut stream)) = poll_fn(|cx| conn.poll_next_inbound(cx)).await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    /// Bytes the server side manages to write into `stream` before burrow reads anything.
    async fn pushable(stream: &mut yamux::Stream) -> usize {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while let Ok(Ok(())) =
            tokio::time::timeout(std::time::Duration::from_millis(200), stream.write_all(&chunk)).await
        {
            sent += chunk.len();
            if sent >= 8 << 20 {
                break;
            }
        }
        sent
    }

    #[tokio::test]
    async fn only_a_few_streams_get_the_large_window() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (mux, drive) = MuxTransport::client(Box::new(a));
        tokio::spawn(drive);
        let (tx, mut accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn = yamux::Connection::new(b.compat(), config(), yamux::Mode::Server);
            while let Some(Ok(stream)) = poll_fn(|cx| conn.poll_next_inbound(cx)).await {
                let _ = tx.send(stream);
            }
        });
        let mut mine = Vec::new();
        let mut pushed = Vec::new();
        for _ in 0..LARGE_WINDOWS + 2 {
            let mut s = mux.connect().await.unwrap();
            s.write_all(b"x").await.unwrap(); // a stream reaches the server with its first frame
            mine.push(s);
            let mut theirs = accepted.recv().await.unwrap();
            pushed.push(pushable(&mut theirs).await);
        }
        let full = STREAM_WINDOW as usize;
        let base = 256 * 1024;
        assert_eq!(pushed, [vec![full; LARGE_WINDOWS], vec![base; 2]].concat());
        // A large stream closed frees its window for the next stream.
        drop(mine.remove(0));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut s = mux.connect().await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut theirs = accepted.recv().await.unwrap();
        assert_eq!(pushable(&mut theirs).await, full);
    }

    #[tokio::test]
    async fn one_stream_too_many_fails_alone() {
        let (a, b) = tokio::io::duplex(1 << 16);
        echo_server(b);
        let mut cfg = config();
        cfg.set_max_num_streams(3);
        let (mux, drive) = MuxTransport::client_with(Box::new(a), cfg);
        let driver = tokio::spawn(drive);
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(mux.connect().await.unwrap());
        }
        let err = mux.connect().await.err().expect("a fourth stream is refused");
        assert!(matches!(err, TransportError::Mux(yamux::ConnectionError::TooManyStreams)), "{err}");
        // The session and its streams live on.
        assert!(!driver.is_finished());
        let s = &mut open[0];
        s.write_all(b"still here").await.unwrap();
        let mut got = [0u8; 10];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"still here");
    }

    // ---- A hostile server: yamux frames written by hand. ----

    /// A yamux frame header: type (0 data, 1 window update, 2 ping), flags, stream id, length.
    fn raw(ty: u8, flags: u16, id: u32, len: u32) -> Vec<u8> {
        let mut v = vec![0, ty];
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    /// A client session over `io`'s other end with one stream open and acknowledged by hand.
    async fn session_with_one_stream(
        server: &mut tokio::io::DuplexStream,
        client: tokio::io::DuplexStream,
    ) -> (MuxTransport, tokio::task::JoinHandle<Result<(), yamux::ConnectionError>>, BoxStream) {
        let (mux, drive) = MuxTransport::client(Box::new(client));
        let driver = tokio::spawn(drive);
        let stream = mux.connect().await.unwrap();
        let mut syn = [0u8; 12];
        server.read_exact(&mut syn).await.unwrap();
        assert_eq!(&syn[..8], &raw(1, 1, 1, 0)[..8], "stream 1 opened with a SYN window update");
        server.write_all(&raw(1, 2, 1, 0)).await.unwrap();
        (mux, driver, stream)
    }

    #[tokio::test]
    async fn hostile_frames_leave_the_session_serving() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let (_mux, driver, mut stream) = session_with_one_stream(&mut server, client).await;
        let mut abuse = Vec::new();
        // Data for a stream that was never opened.
        abuse.extend(raw(0, 0, 99, 5));
        abuse.extend(b"stray");
        // Credit that would overflow a u32, on the open stream and on a stream the server opens.
        abuse.extend(raw(1, 0, 1, u32::MAX));
        abuse.extend(raw(1, 0, 1, u32::MAX));
        abuse.extend(raw(1, 1, 2, u32::MAX));
        // Then ordinary data on the open stream.
        abuse.extend(raw(0, 0, 1, 5));
        abuse.extend(b"hello");
        server.write_all(&abuse).await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"hello");
        // The stream still sends (its credit did not wrap to nothing).
        stream.write_all(&[b'x'; 1000]).await.unwrap();
        stream.flush().await.unwrap();
        let mut seen = Vec::new();
        while !seen.windows(1000).any(|w| w.iter().all(|b| *b == b'x')) {
            let mut buf = [0u8; 4096];
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(5), server.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "the session ended");
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(!driver.is_finished(), "the session lives on");
    }

    #[tokio::test]
    async fn a_ping_flood_from_a_server_that_never_reads_is_not_queued_without_end() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let (_mux, driver, _stream) = session_with_one_stream(&mut server, client).await;
        // 100,000 pings (1.2 MB), never reading the pongs: once its queue of answers is full the
        // client stops reading, and the flood stalls instead of filling burrow's memory.
        let flood: Vec<u8> = (0..100_000u32).flat_map(|n| raw(2, 1, 0, n)).collect();
        let sent = tokio::time::timeout(std::time::Duration::from_secs(3), server.write_all(&flood)).await;
        assert!(sent.is_err(), "the whole flood was taken in");
        assert!(!driver.is_finished());
    }

    #[tokio::test]
    async fn data_for_a_closed_stream_is_dropped_and_data_past_the_window_ends_the_session() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let (mux, driver, mut control) = session_with_one_stream(&mut server, client).await;
        // A second stream, opened and closed by the client.
        let gone = mux.connect().await.unwrap();
        drop(gone);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut abuse = raw(0, 0, 3, 4);
        abuse.extend(b"late");
        abuse.extend(raw(0, 0, 1, 2));
        abuse.extend(b"ok");
        server.write_all(&abuse).await.unwrap();
        let mut got = [0u8; 2];
        control.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");
        assert!(!driver.is_finished());
        // More than the stream's whole window (6 MiB) in one frame: the session ends with an
        // error the client reports, and the frame is not buffered.
        let over = STREAM_WINDOW + 1;
        let mut frame = raw(0, 0, 1, over);
        frame.resize(12 + over as usize, b'z');
        let writer = tokio::spawn(async move {
            let _ = server.write_all(&frame).await;
            server
        });
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), driver).await.expect("the session ended");
        assert!(matches!(ended, Ok(Err(yamux::ConnectionError::Decode(_)))), "{ended:?}");
        writer.abort();
    }
}
