//! TCP relays between burrow and frps: one that counts connections, one that injects faults.

use super::*;

/// A TCP relay in front of a server that counts the connections it forwards.
pub struct CountingRelay {
    pub port: u16,
    pub conns: Arc<AtomicUsize>,
}

pub async fn counting_relay(target: u16) -> CountingRelay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut t) = TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                }
            });
        }
    });
    CountingRelay { port, conns }
}

/// A TCP relay in front of a server that injects faults. It records what the first client sent,
/// and can
/// - turn into a **blackhole**: existing connections then swallow every byte both ways without
///   closing (a server that vanished without FIN or RST); new connections are forwarded whenever
///   it is off;
/// - **drip**: forward one byte per write, a millisecond apart, both ways, so every parser on the
///   path sees its input one byte at a time;
/// - **reset** every open connection at once (RST both ways, as a NAT or a crashed box would).
pub struct FaultRelay {
    pub port: u16,
    pub blackhole: Arc<std::sync::atomic::AtomicBool>,
    pub drip: Arc<std::sync::atomic::AtomicBool>,
    pub first_bytes: Arc<Mutex<Vec<u8>>>,
    reset: tokio::sync::watch::Sender<u64>,
    /// Connections reset so far.
    pub resets: Arc<AtomicUsize>,
}

impl FaultRelay {
    /// Resets every connection open now; later connections are forwarded normally.
    pub fn reset_all(&self) {
        self.reset.send_modify(|g| *g += 1);
    }
}

pub async fn fault_relay(target: u16) -> FaultRelay {
    use std::sync::atomic::AtomicBool;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let blackhole = Arc::new(AtomicBool::new(false));
    let drip = Arc::new(AtomicBool::new(false));
    let first_bytes = Arc::new(Mutex::new(Vec::new()));
    let (reset, reset_rx) = tokio::sync::watch::channel(0u64);
    let resets = Arc::new(AtomicUsize::new(0));
    let (bh, dr, fb, rs) = (blackhole.clone(), drip.clone(), first_bytes.clone(), resets.clone());
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let Ok(t) = TcpStream::connect(("127.0.0.1", target)).await else { continue };
            let _ = (s.set_nodelay(true), t.set_nodelay(true));
            let record = if first { Some(fb.clone()) } else { None };
            first = false;
            let (sr, sw) = s.into_split();
            let (tr, tw) = t.into_split();
            let dirs = [(sr, tw, record, true), (tr, sw, None, false)];
            for (mut from, mut to, record, toward_server) in dirs {
                let (bh, dr, rs) = (bh.clone(), dr.clone(), rs.clone());
                let mut reset = reset_rx.clone();
                reset.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = relay_pump(&mut from, &mut to, record, &bh, &dr, toward_server) => {}
                        _ = reset.changed() => {
                            // Linger 0: closing sends RST instead of FIN.
                            let _ = socket2::SockRef::from(from.as_ref()).set_linger(Some(Duration::ZERO));
                            let _ = socket2::SockRef::from(to.as_ref()).set_linger(Some(Duration::ZERO));
                            // Dropping a write half would send FIN first; only the RST must go.
                            to.forget();
                            rs.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        }
    });
    FaultRelay { port, blackhole, drip, first_bytes, reset, resets }
}

/// One direction of a [`FaultRelay`] connection, until EOF or an error.
async fn relay_pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    record: Option<Arc<Mutex<Vec<u8>>>>,
    blackhole: &std::sync::atomic::AtomicBool,
    drip: &std::sync::atomic::AtomicBool,
    toward_server: bool,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else { return };
        if n == 0 {
            if !toward_server && blackhole.load(Ordering::SeqCst) {
                // A blackholed server never closes: keep the client's side open. (The client's
                // own close still reaches the server, so that frps lets the next login with the
                // same run id in without waiting for its own 90 s heartbeat timeout.)
                std::future::pending::<()>().await;
            }
            let _ = to.shutdown().await;
            return;
        }
        if let Some(r) = &record {
            let mut r = r.lock().unwrap();
            if r.len() < 64 * 1024 {
                r.extend_from_slice(&buf[..n]);
            }
        }
        if blackhole.load(Ordering::SeqCst) {
            continue;
        }
        if drip.load(Ordering::SeqCst) {
            for b in &buf[..n] {
                if to.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
