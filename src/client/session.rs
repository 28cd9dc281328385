//! The driver of one control session: it connects the transport, then moves bytes and time
//! between the connection and `burrow_proto::session::Session`, which decides everything frp's
//! control protocol asks for, and acts on what the session reports (events, work connections).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burrow_proto::codec::{Codec, V1Codec};
use burrow_proto::msg::{Login, NewProxy};
use burrow_proto::session::{self, Session, SessionError};
use burrow_proto::v2::{self, V2Codec};
use burrow_proto::Wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::framed::ReadError;
use super::{work, Shared, Tunnel};
use crate::config::{Protocol, TunnelKind};
use crate::events::{ErrorCode, Event, PublicAddr, TunnelUp};
use crate::platform::{go_os_arch, unix_now};
use crate::status::BackendKind;
use crate::supervise::{Failure, Verdict};
use crate::transport::mux::MuxTransport;
use crate::transport::proxy::ProxyError;
use crate::transport::tls::TlsTransport;
use crate::transport::ws::{WsError, WsTransport};
use crate::transport::{BoxStream, Transport, TransportError};

/// How long frps may take to answer `Login` (frpc's own deadline).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Work connections opened but not yet started by frps, at most. frps pools at most
/// `pool_count + 10` and closes the rest, but asks for one more per connection it takes, so under
/// an HTTP burst hundreds can be in flight at once; past this a server asking for ever more is
/// refused (each costs a task and a yamux stream, a few KiB).
const MAX_PENDING_WORK: usize = 1024;
/// frpc re-sends a rejected `NewProxy` after this long.
const PROXY_RETRY: Duration = Duration::from_secs(30);

const WS_HINT: &str = "check that frps (or the server in front of it, for wss) serves frp's websocket on /~!frp at this address (BURROW_TRANSPORT_PROTOCOL); burrow keeps retrying";

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// Connecting, TLS or yamux failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The frp exchange failed, as the session judged it.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The control connection failed after the login.
    #[error("control connection failed: {0}")]
    Io(io::Error),
}

impl AttemptError {
    /// The websocket's own complaint, when a websocket layer ended the connection.
    fn websocket(&self) -> Option<&WsError> {
        match self {
            AttemptError::Transport(TransportError::Mux(
                yamux::ConnectionError::Io(e) | yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(e)),
            ))
            | AttemptError::Io(e) => WsError::find(e),
            _ => None,
        }
    }

    /// What the failure means to the supervisor and the host: the contract's code, whether to
    /// retry, give up or count toward `auto` mode's fallback, and what the user can do — decided
    /// together, once per kind of failure.
    pub fn failure(&self) -> Failure {
        use ErrorCode as C;
        use Verdict::{Fatal, Incompatible, Retry};
        let lost = "the connection to frps was lost; burrow reconnects";
        let proxy_where =
            "BURROW_SERVER_PROXY_URL (or transport.proxyURL, or the HTTPS_PROXY/ALL_PROXY variable in use)";
        let (code, verdict, hint): (ErrorCode, Verdict, String) = if self.websocket().is_some() {
            // frpc would meet the same websocket server: retry, never a fallback.
            (C::ProtocolError, Retry, WS_HINT.into())
        } else {
            match self {
                AttemptError::Transport(TransportError::Tls { .. }) => (C::TlsFailed, Retry, "check that frps has TLS enabled and, if BURROW_TLS_PIN or BURROW_TLS_CA is set, that it matches the server's certificate".into()),
                // Credentials the proxy refuses will not pass on a retry; anything else a proxy
                // does is retried, never a reason to fall back.
                AttemptError::Transport(TransportError::Proxy { source: ProxyError::Auth(_), .. }) => (C::ProxyFailed, Fatal, format!("check the proxy's user name and password in {proxy_where}")),
                AttemptError::Transport(TransportError::Proxy { .. }) => (C::ProxyFailed, Retry, format!("check that the proxy in {proxy_where} is running and lets connections through to frps; BURROW_SERVER_PROXY_URL=off connects directly; burrow keeps retrying")),
                AttemptError::Transport(TransportError::Connect { .. } | TransportError::ConnectTimeout { .. }) => (C::ServerUnreachable, Retry, "check BURROW_SERVER_ADDR and that frps is running and reachable; burrow keeps retrying".into()),
                // The multiplexed connection lost (reset, closed) is the server lost, as without yamux.
                AttemptError::Transport(TransportError::Mux(
                    yamux::ConnectionError::Io(_)
                    | yamux::ConnectionError::Closed
                    | yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(_)),
                )) => (C::ServerUnreachable, Incompatible, lost.into()),
                AttemptError::Transport(TransportError::Mux(_) | TransportError::MuxClosed) => (C::ProtocolError, Incompatible, "the multiplexed connection failed; burrow reconnects".into()),
                AttemptError::Transport(TransportError::WebSocket { .. }) => (C::ProtocolError, Retry, WS_HINT.into()),
                AttemptError::Session(e) => {
                    let verdict = if e.is_fatal() { Fatal } else if e.is_incompatibility() { Incompatible } else { Retry };
                    let (code, hint): (ErrorCode, &str) = match e {
                        SessionError::NoServerHello => (C::ProtocolError, "frps older than 0.69 speaks wire v1 only: set BURROW_WIRE_PROTOCOL=v1 (or transport.wireProtocol = \"v1\"); if frps is 0.69 or newer, BURROW_TCP_MUX must equal its transport.tcpMux, and BURROW_TLS must be on when it sets transport.tls.force"),
                        SessionError::ClosedBeforeLogin | SessionError::LoginTimeout(_) => (C::ProtocolError, "likely a transport mismatch: BURROW_TCP_MUX must equal frps' transport.tcpMux, and BURROW_TLS must be on when frps sets transport.tls.force; or the address is not an frps bind port"),
                        SessionError::CutBeforeLogin => (C::ProtocolError, "likely a transport mismatch: BURROW_TLS must be on when frps sets transport.tls.force, and BURROW_TCP_MUX must equal frps' transport.tcpMux; otherwise the wire protocol: BURROW_WIRE_PROTOCOL=v1 for frps before 0.69"),
                        SessionError::TakeoverTimeout(_) => (C::ProtocolError, "frps answers a returning client once it has let the old session go (up to about 40 s after the network dropped); burrow keeps trying"),
                        SessionError::Rejected(_) if e.is_fatal() => (C::AuthFailed, "check BURROW_SERVER_TOKEN (auth.token): it must equal frps' auth.token"),
                        SessionError::Rejected(_) => (C::ProtocolError, "frps refused this client for a reason other than its token; burrow retries"),
                        SessionError::PongError(_) => (C::AuthFailed, "frps checks tokens in heartbeats (auth.additionalScopes); check BURROW_SERVER_TOKEN"),
                        SessionError::Protocol(_) => (C::ProtocolError, "the server does not speak frp as frps 0.52–0.70 do; check the address and BURROW_WIRE_PROTOCOL, or use the frpc fallback"),
                        SessionError::Closed | SessionError::HeartbeatTimeout(_) => (C::ServerUnreachable, lost),
                    };
                    (code, verdict, hint.into())
                }
                AttemptError::Io(_) => (C::ServerUnreachable, Retry, lost.into()),
            }
        };
        Failure { code, message: self.to_string(), hint, verdict }
    }
}

/// Aborts a task when dropped, so nothing of a session outlives it by accident.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The session's transport: where work connections are opened, the control connection, and
/// the yamux driver when there is one.
type Connected = (Arc<dyn Transport>, BoxStream, Option<AbortOnDrop<Result<(), yamux::ConnectionError>>>);

async fn connect(shared: &Shared) -> Result<Connected, TransportError> {
    let server = &shared.server;
    // The layers from the bottom: dial (TCP or a proxy); then TLS, a WebSocket with TLS inside,
    // or TLS with a WebSocket inside (wss); yamux comes last.
    let dial = crate::transport::dialer(server.proxy(), &server.host, server.port);
    let tls = |inner: Arc<dyn Transport>| -> Arc<dyn Transport> {
        match &shared.tls {
            Some((cfg, name)) => Arc::new(TlsTransport::new(inner, cfg.clone(), name.clone(), server.display_addr())),
            None => inner,
        }
    };
    let ws = |inner: Arc<dyn Transport>, secure: bool| -> Arc<dyn Transport> {
        Arc::new(WsTransport::new(inner, server.display_addr(), secure))
    };
    let base = match server.protocol {
        Protocol::Tcp => tls(dial),
        Protocol::Websocket => tls(ws(dial, false)),
        Protocol::Wss => ws(tls(dial), true),
    };
    if !server.tcp_mux {
        let control = base.connect().await?;
        return Ok((base, control, None));
    }
    let (mux, drive) = MuxTransport::client(base.connect().await?);
    let driver = AbortOnDrop(tokio::spawn(drive));
    let mux: Arc<dyn Transport> = Arc::new(mux);
    let control = mux.connect().await?;
    Ok((mux, control, Some(driver)))
}

fn session_config(shared: &Shared) -> session::Config {
    let server = &shared.server;
    let (os, arch) = go_os_arch();
    session::Config {
        login: Login {
            version: burrow_proto::FRP_VERSION.into(),
            os: os.into(),
            arch: arch.into(),
            user: server.user.clone(),
            metas: server.metas.clone(),
            pool_count: server.pool_count,
            ..Default::default()
        },
        token: server.token.expose().to_string(),
        proxies: shared.tunnels.iter().map(new_proxy).collect(),
        login_timeout: LOGIN_TIMEOUT,
        heartbeat_interval: server.heartbeat_interval,
        heartbeat_timeout: server.heartbeat_timeout,
        proxy_retry: PROXY_RETRY,
        max_pending_work: MAX_PENDING_WORK,
    }
}

/// The control connection's codec for the configured wire version, with fresh randomness.
fn codec(shared: &Shared) -> Box<dyn Codec> {
    let server = &shared.server;
    match server.wire {
        Wire::V1 => Box::new(V1Codec::new(shared.key, rand::random())),
        Wire::V2 => {
            // As frpc fills it in: wss is TLS whatever tls.enable says.
            let bootstrap = v2::Bootstrap {
                transport: server.protocol.name().into(),
                tls: server.tls.enabled || server.protocol == Protocol::Wss,
                tcp_mux: server.tcp_mux,
            };
            Box::new(V2Codec::new(
                server.token.expose(),
                &bootstrap,
                &aead_preference(),
                rand::random(),
                rand::random(),
            ))
        }
    }
}

/// frpc's order: AES-GCM first where the CPU has AES instructions, XChaCha20-Poly1305 first
/// where AES would run in software (frps takes the first one it supports).
fn aead_preference() -> [v2::Algorithm; 2] {
    #[cfg(target_arch = "x86_64")]
    let fast_aes = std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let fast_aes = std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let fast_aes = false;
    let mut order = v2::Algorithm::ALL;
    if !fast_aes {
        order.reverse();
    }
    order
}

/// Runs one session. `Ok(())` means a requested stop; `logged_in` tells the caller whether the
/// session got as far as a successful login (which resets the backoff). `run_id` is asked for
/// at login and updated from frps' answer, so the next session gets the same tunnels back.
pub(super) async fn run(
    shared: &Arc<Shared>,
    run_id: &mut String,
    stop: &CancellationToken,
    logged_in: &mut bool,
) -> Result<(), AttemptError> {
    // Until the login nothing is registered: a stop just drops the attempt.
    let (conns, control, mut mux) = tokio::select! {
        c = connect(shared) => c?,
        _ = stop.cancelled() => return Ok(()),
    };
    let mut session = Session::new(session_config(shared), codec(shared), run_id.clone(), Instant::now(), unix_now());
    let (mut rd, mut wr) = tokio::io::split(control);
    // The control connection is written by a task of its own, so a slow write never stops
    // reading (frps may be writing to us at the same moment).
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut writer = AbortOnDrop(tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            wr.write_all(&bytes).await?;
            wr.flush().await?;
        }
        Ok::<(), io::Error>(())
    }));
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending_work: JoinSet<Result<(), work::WorkError>> = JoinSet::new();
    loop {
        let out = session.poll_transmit();
        if !out.is_empty() && out_tx.send(out).is_err() {
            return Err(session.handle_eof().into());
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                session::Event::LoggedIn { run_id: id, server_version } => {
                    *run_id = id;
                    *logged_in = true;
                    let addr = shared.server.display_addr();
                    tracing::info!("logged in to frps {server_version} at {addr} (run id {run_id})");
                    shared.reporter.emit(Event::Connected {
                        server: addr,
                        transport: shared.server.transport_name(),
                        mode: BackendKind::Native,
                        wire: shared.server.wire.name(),
                        via: shared.server.proxy().map(|p| p.to_string()),
                        server_version: Some(server_version),
                    });
                }
                session::Event::ProxyUp { index, remote_addr } => {
                    tunnel_up(shared, &shared.tunnels[index], &remote_addr)
                }
                session::Event::ProxyRefused { index, error } => {
                    let name = &shared.tunnels[index].config.name;
                    shared.reporter.error(
                        ErrorCode::ProxyRejected,
                        format!("frps refused tunnel {name:?}: {error}"),
                        proxy_hint(&error),
                    );
                }
                session::Event::UnknownProxy(name) => {
                    tracing::warn!("frps answered for a proxy burrow did not register: {name:?}")
                }
                session::Event::OpenWorkConn => {
                    let hello = session.new_work_conn(Instant::now());
                    pending_work.spawn(work::open(conns.clone(), shared.clone(), hello, stop.clone()));
                }
                session::Event::WorkCapReached => {
                    tracing::warn!(
                        "frps asked for more than {MAX_PENDING_WORK} unused work connections; ignoring such requests"
                    )
                }
            }
        }
        let deadline = tokio::time::Instant::from_std(session.poll_timeout());
        tokio::select! {
            _ = stop.cancelled() => {
                if session.is_logged_in() {
                    session.close();
                    let _ = out_tx.send(session.poll_transmit());
                    drop(out_tx);
                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer.0).await;
                }
                return Ok(());
            }
            n = rd.read(&mut buf) => {
                // Work connections that finished since the last turn no longer count toward the cap.
                while let Some(done) = pending_work.try_join_next() {
                    session.work_conn_done();
                    log_work(done);
                }
                match n {
                    Ok(0) => return Err(ended(&mut session, &mut mux).await),
                    Ok(n) => session.handle_input(&buf[..n], Instant::now())?,
                    Err(e) if session.is_logged_in() || WsError::find(&e).is_some() => return Err(AttemptError::Io(e)),
                    Err(e) => {
                        tracing::debug!("reading LoginResp failed: {e}");
                        return Err(session.handle_eof().into());
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => session.handle_timeout(Instant::now())?,
            Some(done) = pending_work.join_next(), if !pending_work.is_empty() => {
                session.work_conn_done();
                log_work(done);
            }
            r = &mut writer.0 => {
                return Err(match r {
                    Ok(Err(e)) if session.is_logged_in() || WsError::find(&e).is_some() => AttemptError::Io(e),
                    _ => ended(&mut session, &mut mux).await,
                });
            }
            r = async { (&mut mux.as_mut().expect("guarded").0).await }, if mux.is_some() => {
                // Before the login, the multiplexed connection failing is frps closing the
                // connection without an answer, whichever of the two is noticed first.
                return Err(match r.map(|r| r.map_err(|e| AttemptError::Transport(TransportError::Mux(e)))) {
                    Ok(Err(e)) if session.is_logged_in() || e.websocket().is_some() => e,
                    _ => session.handle_eof().into(),
                });
            }
        }
    }
}

/// The control stream ended. With yamux, the connection under it may say why (a websocket
/// closed with a reason, a frame too large): that is worth more than "closed", so it gets a
/// moment to finish.
async fn ended(
    session: &mut Session,
    mux: &mut Option<AbortOnDrop<Result<(), yamux::ConnectionError>>>,
) -> AttemptError {
    if let Some(driver) = mux {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(200), &mut driver.0).await {
            let e = AttemptError::Transport(TransportError::Mux(e));
            if e.websocket().is_some() {
                return e;
            }
        }
    }
    session.handle_eof().into()
}

fn log_work(done: Result<Result<(), work::WorkError>, tokio::task::JoinError>) {
    match done {
        // frps closes pooled work connections it has no use for: routine.
        Ok(Err(work::WorkError::Read(ReadError::Closed))) => {}
        Ok(Err(e)) => tracing::warn!("work connection failed: {e}"),
        _ => {}
    }
}

pub(super) fn new_proxy(t: &Tunnel) -> NewProxy {
    t.config.frp_proxy(t.wire_name.clone())
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
        mode: BackendKind::Native,
        reservation_id: shared.reservation_id.clone(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_multiplexed_connection_is_the_server_lost_and_a_broken_one_a_protocol_error() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let lost = [
            yamux::ConnectionError::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
            yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(reset)),
            yamux::ConnectionError::Closed,
        ];
        for e in lost {
            let f = AttemptError::Transport(TransportError::Mux(e)).failure();
            assert_eq!(f.code, ErrorCode::ServerUnreachable, "{}", f.message);
            assert!(f.hint.contains("lost"), "{}", f.hint);
        }
        let broken = AttemptError::Transport(TransportError::Mux(yamux::ConnectionError::NoMoreStreamIds)).failure();
        assert_eq!(broken.code, ErrorCode::ProtocolError);
    }

    #[test]
    fn each_failure_is_decided_once_code_verdict_and_hint_together() {
        use crate::supervise::Verdict;
        let cases: Vec<(AttemptError, ErrorCode, Verdict, &str)> = vec![
            (
                SessionError::Rejected("token in login doesn't match".into()).into(),
                ErrorCode::AuthFailed,
                Verdict::Fatal,
                "BURROW_SERVER_TOKEN",
            ),
            (
                SessionError::Rejected("duplicate client".into()).into(),
                ErrorCode::ProtocolError,
                Verdict::Retry,
                "other than its token",
            ),
            (
                SessionError::LoginTimeout(LOGIN_TIMEOUT).into(),
                ErrorCode::ProtocolError,
                Verdict::Incompatible,
                "BURROW_TCP_MUX",
            ),
            // A returning client's login that frps answers late: slow, never toward a fallback.
            (
                SessionError::TakeoverTimeout(LOGIN_TIMEOUT).into(),
                ErrorCode::ProtocolError,
                Verdict::Retry,
                "let the old session go",
            ),
            (
                SessionError::NoServerHello.into(),
                ErrorCode::ProtocolError,
                Verdict::Incompatible,
                "BURROW_WIRE_PROTOCOL=v1",
            ),
            // Cut mid-frame before the login answer: the transport settings first, then the wire.
            (
                SessionError::CutBeforeLogin.into(),
                ErrorCode::ProtocolError,
                Verdict::Incompatible,
                "BURROW_TLS must be on",
            ),
            (
                SessionError::HeartbeatTimeout(LOGIN_TIMEOUT).into(),
                ErrorCode::ServerUnreachable,
                Verdict::Retry,
                "lost",
            ),
            (SessionError::PongError("x".into()).into(), ErrorCode::AuthFailed, Verdict::Retry, "additionalScopes"),
            (AttemptError::Io(io::Error::other("x")), ErrorCode::ServerUnreachable, Verdict::Retry, "lost"),
        ];
        for (e, code, verdict, hint) in cases {
            let f = e.failure();
            assert_eq!((f.code, f.verdict), (code, verdict), "{}", f.message);
            assert!(f.hint.contains(hint), "{}: {}", f.message, f.hint);
        }
        let cut = AttemptError::from(SessionError::CutBeforeLogin).failure().hint;
        let at = |k: &str| cut.find(k).unwrap_or_else(|| panic!("{k} not in {cut}"));
        assert!(
            at("BURROW_TLS") < at("BURROW_WIRE_PROTOCOL") && at("BURROW_TCP_MUX") < at("BURROW_WIRE_PROTOCOL"),
            "{cut}"
        );
    }
}
