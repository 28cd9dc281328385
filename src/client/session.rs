//! One control session: connect, log in, register tunnels, serve until something fails.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burrow_proto::msg::{CloseProxy, Login, NewProxy, Ping};
use burrow_proto::Message;
use tokio::io::BufReader;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::framed::{read_msg, write_msg, ReadError};
use super::{work, Shared, Tunnel};
use crate::config::TunnelKind;
use crate::events::{ErrorCode, Event, PublicAddr, TunnelUp};
use crate::layers::CryptoStream;
use crate::platform::{go_os_arch, unix_now};
use crate::status::Backend;
use crate::transport::mux::MuxTransport;
use crate::transport::tcp::TcpTransport;
use crate::transport::tls::TlsTransport;
use crate::transport::{Transport, TransportError};

/// How long frps may take to answer `Login` (frpc's own deadline).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Work connections opened but not yet started by frps, at most. frps pools at most
/// `pool_count + 10` and closes the rest, but asks for one more per connection it takes, so under
/// an HTTP burst hundreds can be in flight at once; past this a server asking for ever more is
/// refused (each costs a task and a yamux stream, a few KiB).
const MAX_PENDING_WORK: usize = 1024;
/// frpc re-sends a rejected `NewProxy` after this long.
const PROXY_RETRY: Duration = Duration::from_secs(30);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Connecting, TLS or yamux failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The connection closed before `LoginResp`.
    #[error("frps closed the connection without answering the login")]
    ClosedBeforeLogin,
    /// No `LoginResp` in time.
    #[error("frps did not answer the login within {} s", LOGIN_TIMEOUT.as_secs())]
    LoginTimeout,
    /// frps refused the login.
    #[error("frps rejected the login: {0}")]
    Rejected(String),
    /// A message broke the protocol.
    #[error("frp protocol error: {0}")]
    Protocol(String),
    /// frps closed the control connection.
    #[error("frps closed the control connection")]
    Closed,
    /// No heartbeat answer.
    #[error("no heartbeat answer from frps for {0} s")]
    HeartbeatTimeout(u64),
    /// frps refused a heartbeat.
    #[error("frps refused the heartbeat: {0}")]
    PongError(String),
    /// The control connection failed.
    #[error("control connection failed: {0}")]
    Io(#[from] io::Error),
}

impl SessionError {
    /// The contract's error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::Transport(TransportError::Tls { .. }) => ErrorCode::TlsFailed,
            SessionError::Transport(TransportError::Connect { .. } | TransportError::ConnectTimeout { .. }) => {
                ErrorCode::ServerUnreachable
            }
            SessionError::Transport(_) => ErrorCode::ProtocolError,
            SessionError::Rejected(_) if self.is_fatal() => ErrorCode::AuthFailed,
            SessionError::Rejected(_) => ErrorCode::ProtocolError,
            SessionError::PongError(_) => ErrorCode::AuthFailed,
            SessionError::ClosedBeforeLogin | SessionError::LoginTimeout | SessionError::Protocol(_) => {
                ErrorCode::ProtocolError
            }
            SessionError::Closed | SessionError::HeartbeatTimeout(_) | SessionError::Io(_) => {
                ErrorCode::ServerUnreachable
            }
        }
    }

    /// The transport came up but the frp exchange failed: the server may speak something the
    /// native client does not (another wire version, a different transport behind the port).
    pub fn is_incompatibility(&self) -> bool {
        matches!(
            self,
            SessionError::ClosedBeforeLogin
                | SessionError::LoginTimeout
                | SessionError::Protocol(_)
                | SessionError::Transport(TransportError::Mux(_) | TransportError::MuxClosed)
        )
    }

    /// Rejected credentials are not retried (unlike frpc's loginFailExit, everything else is).
    /// frps words token failures "token in login doesn't match …", and with
    /// `detailedErrorsToClient = false` says only "register control error"; other refusals
    /// (a duplicate client id, a server plugin) may pass and are retried.
    pub fn is_fatal(&self) -> bool {
        match self {
            SessionError::Rejected(m) => {
                let m = m.to_ascii_lowercase();
                ["token", "auth", "privilege", "register control error"].iter().any(|k| m.contains(k))
            }
            _ => false,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            SessionError::Transport(TransportError::Tls { .. }) => "check that frps has TLS enabled and, if BURROW_TLS_PIN or BURROW_TLS_CA is set, that it matches the server's certificate".into(),
            SessionError::Transport(TransportError::Connect { .. } | TransportError::ConnectTimeout { .. }) => "check BURROW_SERVER_ADDR and that frps is running and reachable; burrow keeps retrying".into(),
            SessionError::Transport(_) => "the multiplexed connection failed; burrow reconnects".into(),
            SessionError::ClosedBeforeLogin | SessionError::LoginTimeout => "likely a transport mismatch: BURROW_TCP_MUX must equal frps' transport.tcpMux, and BURROW_TLS must be on when frps sets transport.tls.force; or the address is not an frps bind port".into(),
            SessionError::Rejected(_) if self.is_fatal() => {
                "check BURROW_SERVER_TOKEN (auth.token): it must equal frps' auth.token".into()
            }
            SessionError::Rejected(_) => "frps refused this client for a reason other than its token; burrow retries".into(),
            SessionError::PongError(_) => "frps checks tokens in heartbeats (auth.additionalScopes); check BURROW_SERVER_TOKEN".into(),
            SessionError::Protocol(_) => "the server does not speak frp v1 as frps 0.52–0.70 do; check the address, or use the frpc fallback".into(),
            SessionError::Closed | SessionError::HeartbeatTimeout(_) | SessionError::Io(_) => "the connection to frps was lost; burrow reconnects".into(),
        }
    }
}

/// Aborts a task when dropped, so nothing of a session outlives it by accident.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Default)]
struct TunnelState {
    up: bool,
}

/// Runs one session. `Ok(())` means a requested shutdown; `logged_in` tells the caller whether
/// the session got as far as a successful login (which resets the backoff).
pub(super) async fn run(
    shared: &Arc<Shared>,
    run_id: &mut String,
    shutdown: &CancellationToken,
    logged_in: &mut bool,
) -> Result<(), SessionError> {
    let mut states: HashMap<String, TunnelState> = HashMap::new();
    let flag = AtomicBool::new(false);
    let result = tokio::select! {
        r = serve(shared, run_id, shutdown, &flag, &mut states) => r,
        // Shutdown before login: nothing is registered yet, drop the attempt. After login `serve`
        // handles shutdown itself (CloseProxy for every tunnel), so this arm then stays pending.
        _ = async {
            shutdown.cancelled().await;
            if flag.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        } => Ok(()),
    };
    *logged_in = flag.load(Ordering::SeqCst);
    result
}

async fn serve(
    shared: &Arc<Shared>,
    run_id: &mut String,
    shutdown: &CancellationToken,
    logged_in: &AtomicBool,
    states: &mut HashMap<String, TunnelState>,
) -> Result<(), SessionError> {
    let server = &shared.server;
    let addr = server.display_addr();

    // The transport stack for this session.
    let tcp = TcpTransport::new(server.host.clone(), server.port);
    let base: Arc<dyn Transport> = match &shared.tls {
        Some((cfg, name)) => Arc::new(TlsTransport::new(tcp, cfg.clone(), name.clone(), addr.clone())),
        None => Arc::new(tcp),
    };
    let (conns, mut driver): (Arc<dyn Transport>, Option<tokio::task::JoinHandle<_>>) = if server.tcp_mux {
        let io = base.connect().await?;
        let (mux, drive) = MuxTransport::client(io);
        (Arc::new(mux), Some(tokio::spawn(drive)))
    } else {
        (base, None)
    };
    let _driver_guard = driver.as_ref().map(|d| d.abort_handle()).map(AbortHandleGuard);

    // Login, in plaintext (TLS aside).
    let mut control = conns.connect().await?;
    let (os, arch) = go_os_arch();
    let ts = unix_now();
    let login = Login {
        version: burrow_proto::FRP_VERSION.into(),
        os: os.into(),
        arch: arch.into(),
        user: server.user.clone(),
        privilege_key: burrow_proto::auth::privilege_key(server.token.expose(), ts),
        timestamp: ts,
        run_id: run_id.clone(),
        metas: server.metas.clone(),
        pool_count: server.pool_count,
        ..Default::default()
    };
    if let Err(e) = write_msg(&mut control, &Message::Login(login)).await {
        tracing::debug!("writing Login failed: {e}");
        return Err(SessionError::ClosedBeforeLogin);
    }
    let resp = match tokio::time::timeout(LOGIN_TIMEOUT, read_msg(&mut control)).await {
        Err(_) => return Err(SessionError::LoginTimeout),
        Ok(Ok(Message::LoginResp(r))) => r,
        Ok(Ok(other)) => return Err(SessionError::Protocol(format!("expected LoginResp, got {}", other.msg_type()))),
        Ok(Err(ReadError::Protocol(e))) => return Err(SessionError::Protocol(e.to_string())),
        Ok(Err(e)) => {
            tracing::debug!("reading LoginResp failed: {e}");
            return Err(SessionError::ClosedBeforeLogin);
        }
    };
    if !resp.error.is_empty() {
        return Err(SessionError::Rejected(resp.error));
    }
    if resp.run_id.is_empty() {
        return Err(SessionError::Protocol("LoginResp carries neither run_id nor error".into()));
    }
    *run_id = resp.run_id;
    logged_in.store(true, Ordering::SeqCst);
    tracing::info!("logged in to frps {} at {addr} (run id {run_id})", resp.version);
    shared.reporter.emit(Event::Connected {
        server: addr,
        transport: shared.transport_name(),
        mode: Backend::Native,
        server_version: Some(resp.version),
    });

    // From here on the control connection is AES-CFB in both directions.
    let (rd, wr) = tokio::io::split(CryptoStream::new(control, &shared.key));
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let (in_tx, mut in_rx) = mpsc::channel::<Result<Message, ReadError>>(64);
    let mut writer = tokio::spawn(async move {
        let mut wr = wr;
        while let Some(m) = out_rx.recv().await {
            write_msg(&mut wr, &m).await?;
        }
        Ok::<(), io::Error>(())
    });
    let _writer_guard = AbortHandleGuard(writer.abort_handle());
    // A dedicated reader task: reading a message is not cancel-safe, so it never sits in select!.
    let _reader = AbortOnDrop(tokio::spawn(async move {
        let mut rd = BufReader::with_capacity(16 * 1024, rd);
        loop {
            let r = read_msg(&mut rd).await;
            let stop = r.is_err();
            if in_tx.send(r).await.is_err() || stop {
                return;
            }
        }
    }));

    let send = |m: Message| out_tx.send(m).map_err(|_| SessionError::Closed);
    for t in &shared.tunnels {
        states.insert(t.wire_name.clone(), TunnelState::default());
        send(Message::NewProxy(new_proxy(t)))?;
    }

    let mut heartbeat = tokio::time::interval(server.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_pong = Instant::now();
    let mut pending_work: JoinSet<Result<(), work::WorkError>> = JoinSet::new();
    let mut retries: JoinSet<String> = JoinSet::new();
    let mut cap_warned = false;

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                for t in &shared.tunnels {
                    if states.get(&t.wire_name).is_some_and(|s| s.up) {
                        let _ = send(Message::CloseProxy(CloseProxy { proxy_name: t.wire_name.clone() }));
                    }
                }
                drop(out_tx);
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
                return Ok(());
            }
            msg = in_rx.recv() => match msg {
                Some(Ok(Message::ReqWorkConn(_))) => {
                    // frps asks for one per user connection; a server asking for thousands that it
                    // never starts would make burrow dial without end.
                    // Count only connections still waiting: reap the finished ones first (under
                    // a burst of requests the select loop may not have got round to them).
                    while let Some(done) = pending_work.try_join_next() {
                        if let Ok(Err(e)) = done {
                            tracing::debug!("work connection failed: {e}");
                        }
                    }
                    if pending_work.len() >= MAX_PENDING_WORK {
                        if !cap_warned {
                            tracing::warn!("frps asked for more than {MAX_PENDING_WORK} unused work connections; ignoring such requests");
                            cap_warned = true;
                        }
                        continue;
                    }
                    pending_work.spawn(work::open(conns.clone(), shared.clone(), run_id.clone(), shutdown.clone()));
                }
                Some(Ok(Message::NewProxyResp(r))) => {
                    let Some(t) = shared.tunnel(&r.proxy_name) else {
                        tracing::warn!("frps answered for a proxy burrow did not register: {:?}", r.proxy_name);
                        continue;
                    };
                    if !r.error.is_empty() {
                        shared.reporter.error(ErrorCode::ProxyRejected, format!("frps refused tunnel {:?}: {}", t.config.name, r.error), proxy_hint(&r.error));
                        let name = t.wire_name.clone();
                        retries.spawn(async move { tokio::time::sleep(PROXY_RETRY).await; name });
                        continue;
                    }
                    if let Some(s) = states.get_mut(&t.wire_name) {
                        s.up = true;
                    }
                    tunnel_up(shared, t, &r.remote_addr);
                }
                Some(Ok(Message::Pong(p))) => {
                    if !p.error.is_empty() {
                        return Err(SessionError::PongError(p.error));
                    }
                    last_pong = Instant::now();
                }
                Some(Ok(other)) => return Err(SessionError::Protocol(format!("unexpected {} on the control connection", other.msg_type()))),
                Some(Err(ReadError::Protocol(e))) => return Err(SessionError::Protocol(e.to_string())),
                Some(Err(ReadError::Io(e))) => return Err(SessionError::Io(e)),
                Some(Err(ReadError::Closed | ReadError::Truncated)) | None => return Err(SessionError::Closed),
            },
            _ = heartbeat.tick() => {
                if last_pong.elapsed() > server.heartbeat_timeout {
                    return Err(SessionError::HeartbeatTimeout(server.heartbeat_timeout.as_secs()));
                }
                send(Message::Ping(ping(shared)))?;
            }
            Some(done) = pending_work.join_next(), if !pending_work.is_empty() => {
                match done {
                    // frps closes pooled work connections it has no use for: routine.
                    Ok(Err(work::WorkError::Read(ReadError::Closed))) => {}
                    Ok(Err(e)) => tracing::warn!("work connection failed: {e}"),
                    _ => {}
                }
            }
            Some(Ok(name)) = retries.join_next(), if !retries.is_empty() => {
                if let Some(t) = shared.tunnel(&name) {
                    send(Message::NewProxy(new_proxy(t)))?;
                }
            }
            r = &mut writer => {
                return Err(match r {
                    Ok(Err(e)) => SessionError::Io(e),
                    _ => SessionError::Closed,
                });
            }
            r = async { driver.as_mut().expect("guarded").await }, if driver.is_some() => {
                return Err(match r {
                    Ok(Err(e)) => SessionError::Transport(TransportError::Mux(e)),
                    _ => SessionError::Closed,
                });
            }
        }
    }
}

struct AbortHandleGuard(tokio::task::AbortHandle);
impl Drop for AbortHandleGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn ping(shared: &Shared) -> Ping {
    // Keys in heartbeats are only checked by frps with auth.additionalScopes = ["HeartBeats"];
    // sending them always is harmless and makes such servers work without configuration.
    let ts = unix_now();
    Ping { privilege_key: burrow_proto::auth::privilege_key(shared.server.token.expose(), ts), timestamp: ts }
}

pub(super) fn new_proxy(t: &Tunnel) -> NewProxy {
    let c = &t.config;
    let mut m = NewProxy {
        proxy_name: t.wire_name.clone(),
        proxy_type: c.kind.type_name().into(),
        use_encryption: c.use_encryption,
        use_compression: c.use_compression,
        ..Default::default()
    };
    match &c.kind {
        TunnelKind::Http {
            subdomain,
            custom_domains,
            locations,
            host_header_rewrite,
            http_user,
            http_password,
            request_headers,
            response_headers,
        } => {
            m.subdomain = subdomain.clone().unwrap_or_default();
            m.custom_domains = custom_domains.clone();
            m.locations = locations.clone();
            m.host_header_rewrite = host_header_rewrite.clone().unwrap_or_default();
            m.http_user = http_user.clone().unwrap_or_default();
            m.http_pwd = http_password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
            m.headers = request_headers.clone();
            m.response_headers = response_headers.clone();
        }
        TunnelKind::Tcp { remote_port } => m.remote_port = *remote_port,
    }
    m
}

fn proxy_hint(error: &str) -> String {
    if error.contains("already exists") {
        "another client holds this tunnel name on frps; pick another name or subdomain (burrow retries every 30 s)"
            .into()
    } else if error.contains("port") {
        "choose another remotePort, or 0 to let frps pick one (burrow retries every 30 s)".into()
    } else if error.contains("subdomain") || error.contains("vhost") || error.contains("router config conflict") {
        "the server's vhost settings do not allow this tunnel (subDomainHost, vhostHTTPPort, or the domain is taken); burrow retries every 30 s".into()
    } else {
        "burrow retries every 30 s".into()
    }
}

/// Reports a registered tunnel with its public address.
fn tunnel_up(shared: &Shared, t: &Tunnel, remote_addr: &str) {
    let name = &t.config.name;
    let addr = match &t.config.kind {
        TunnelKind::Http { .. } => {
            // A reservation's public URL wins: frps may sit behind a TLS-terminating proxy.
            let first = remote_addr.split(',').map(str::trim).find(|s| !s.is_empty());
            let url = t.config.public_url.clone().or_else(|| first.map(|h| format!("http://{h}")));
            tracing::info!("tunnel {name} is up at {}", url.as_deref().unwrap_or("(no public host)"));
            PublicAddr::Url { url }
        }
        TunnelKind::Tcp { .. } => {
            let port = remote_addr.rsplit(':').next().unwrap_or_default();
            let host = &shared.server.host;
            let remote = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            tracing::info!("tunnel {name} is up at {remote}");
            PublicAddr::Remote { remote_addr: remote }
        }
    };
    shared.reporter.emit(Event::TunnelUp(TunnelUp {
        name: name.clone(),
        kind: t.config.kind.type_name().into(),
        addr,
        mode: Backend::Native,
        reservation_id: shared.reservation_id.clone(),
    }));
}
