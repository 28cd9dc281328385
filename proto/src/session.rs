//! The client's control session as a state machine without I/O, in quinn-proto's shape.
//!
//! The driver feeds it the control connection's bytes ([`Session::handle_input`]), its end
//! ([`Session::handle_eof`]) and the passing of time ([`Session::handle_timeout`]); it takes out
//! bytes to write ([`Session::poll_transmit`]), the next deadline ([`Session::poll_timeout`]) and
//! what happened ([`Session::poll_event`]). Everything frp's control protocol decides lives here:
//! the login and its deadline, registering each proxy and re-registering a refused one, the
//! heartbeat and its timeout, the cap on work connections frps may ask for, and which failures are
//! fatal or suggest a server that speaks another protocol. The session never reads a clock: `now`
//! comes in with every call, so tests run it on virtual time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::msg::{CloseProxy, Login, Message, NewProxy, NewWorkConn, Ping};

/// What the session needs to know, fixed for its life.
pub struct Config {
    /// `Login.version`, `os`, `arch`, `user`, `metas`, `pool_count`; the session fills in the key,
    /// the timestamp and the run id.
    pub login: Login,
    /// The shared token (`auth.token`).
    pub token: String,
    /// The proxies to register, in order; events name them by index.
    pub proxies: Vec<NewProxy>,
    /// How long frps may take to answer the login (frpc: 10 s).
    pub login_timeout: Duration,
    /// Ping period (frpc: 30 s).
    pub heartbeat_interval: Duration,
    /// No Pong for this long ends the session (frpc: 90 s).
    pub heartbeat_timeout: Duration,
    /// A refused proxy is registered again after this long (frpc: 30 s).
    pub proxy_retry: Duration,
    /// Work connections asked for and not yet finished, at most; requests beyond are ignored.
    pub max_pending_work: usize,
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// frps accepted the login; re-logins should ask for `run_id` again.
    LoggedIn {
        /// The session's run id.
        run_id: String,
        /// frps' version.
        server_version: String,
    },
    /// frps registered proxy `index` at `remote_addr` (a host list for http, `:port` for tcp).
    ProxyUp {
        /// Index into [`Config::proxies`].
        index: usize,
        /// What frps said.
        remote_addr: String,
    },
    /// frps refused proxy `index`; it is registered again after [`Config::proxy_retry`].
    ProxyRefused {
        /// Index into [`Config::proxies`].
        index: usize,
        /// frps' reason.
        error: String,
    },
    /// frps answered for a proxy this client did not register (ignored).
    UnknownProxy(String),
    /// frps asked for a work connection: open one, and call
    /// [`Session::work_conn_done`] when it is no longer waiting.
    OpenWorkConn,
    /// frps asked for more work connections than the cap; this and later requests are ignored
    /// until some finish. Reported once per session.
    WorkCapReached,
}

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The connection closed (or failed) before `LoginResp`.
    #[error("frps closed the connection without answering the login")]
    ClosedBeforeLogin,
    /// Wire v2: the connection closed before a `ServerHello`, as frps before 0.69 does.
    #[error("frps closed the connection without answering the wire v2 hello (no ServerHello)")]
    NoServerHello,
    /// The connection ended in the middle of a frame before `LoginResp`: most often TLS or
    /// tcp_mux set otherwise than frps (it reads our bytes as something else and hangs up), less
    /// often another wire version.
    #[error("frps closed the connection in the middle of a frame, before answering the login")]
    CutBeforeLogin,
    /// No `LoginResp` in time.
    #[error("frps did not answer the login within {} s", .0.as_secs())]
    LoginTimeout(Duration),
    /// No `LoginResp` in time to a login that asked for an earlier session's `run_id` back: frps
    /// answers such a login only once it has let the old control go (up to ~40 s after the path
    /// died, as after a sleep). Slow, not a sign of another protocol.
    #[error("frps did not answer the login within {} s while it still held the previous session", .0.as_secs())]
    TakeoverTimeout(Duration),
    /// frps refused the login.
    #[error("frps rejected the login: {0}")]
    Rejected(String),
    /// A message broke the protocol.
    #[error("frp protocol error: {0}")]
    Protocol(String),
    /// frps closed the control connection.
    #[error("frps closed the control connection")]
    Closed,
    /// No heartbeat answer in time.
    #[error("no heartbeat answer from frps for {} s", .0.as_secs())]
    HeartbeatTimeout(Duration),
    /// frps refused a heartbeat.
    #[error("frps refused the heartbeat: {0}")]
    PongError(String),
}

impl SessionError {
    /// Rejected credentials, which retrying cannot fix (unlike frpc's loginFailExit, everything
    /// else is retried). frps words token failures "token in login doesn't match …", and with
    /// `detailedErrorsToClient = false` says only "register control error"; other refusals (a
    /// duplicate client id, a server plugin) may pass and are retried.
    pub fn is_fatal(&self) -> bool {
        match self {
            SessionError::Rejected(m) => {
                let m = m.to_ascii_lowercase();
                ["token", "auth", "privilege", "register control error"].iter().any(|k| m.contains(k))
            }
            _ => false,
        }
    }

    /// The connection came up but the frp exchange failed: the server may speak something else
    /// (another wire version, another transport behind the port).
    pub fn is_incompatibility(&self) -> bool {
        matches!(
            self,
            SessionError::ClosedBeforeLogin
                | SessionError::CutBeforeLogin
                | SessionError::NoServerHello
                | SessionError::LoginTimeout(_)
                | SessionError::Protocol(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Login sent; `LoginResp` due by the deadline.
    LoggingIn {
        deadline: Instant,
    },
    Running,
}

#[derive(Debug, Default)]
struct Proxy {
    up: bool,
    retry_at: Option<Instant>,
}

/// One control session, from `Login` to its end.
pub struct Session {
    cfg: Config,
    codec: Box<dyn Codec>,
    phase: Phase,
    /// `now` and the Unix time at the start, for the timestamps frp's keys are made with.
    epoch: (Instant, i64),
    run_id: String,
    transmit: Vec<u8>,
    events: VecDeque<Event>,
    by_name: BTreeMap<String, usize>,
    proxies: Vec<Proxy>,
    next_ping: Instant,
    last_pong: Instant,
    pending_work: usize,
    cap_reported: bool,
    /// The login asks for an earlier session's `run_id` back.
    takeover: bool,
}

impl Session {
    /// A session that logs in (asking for `run_id` back, when not empty) at `now`, whose wall
    /// clock reads `unix_now`. The `Login` is ready to transmit.
    pub fn new(cfg: Config, codec: Box<dyn Codec>, run_id: String, now: Instant, unix_now: i64) -> Self {
        let by_name = cfg.proxies.iter().enumerate().map(|(i, p)| (p.proxy_name.clone(), i)).collect();
        let proxies = cfg.proxies.iter().map(|_| Proxy::default()).collect();
        let mut s = Self {
            phase: Phase::LoggingIn { deadline: now + cfg.login_timeout },
            cfg,
            codec,
            epoch: (now, unix_now),
            run_id,
            transmit: Vec::new(),
            events: VecDeque::new(),
            by_name,
            proxies,
            next_ping: now,
            last_pong: now,
            pending_work: 0,
            cap_reported: false,
            takeover: false,
        };
        s.takeover = !s.run_id.is_empty();
        let ts = s.unix(now);
        let login = Login {
            privilege_key: crate::auth::privilege_key(&s.cfg.token, ts),
            timestamp: ts,
            run_id: s.run_id.clone(),
            ..s.cfg.login.clone()
        };
        s.send(&Message::Login(login));
        s
    }

    fn unix(&self, now: Instant) -> i64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs() as i64
    }

    fn send(&mut self, msg: &Message) {
        // Every message the session sends was sized when the configuration was checked
        // (`NewProxy` is the only one that can grow); one that still does not fit is not sent.
        if let Err(e) = self.codec.encode(msg, &mut self.transmit) {
            debug_assert!(false, "{} does not fit a frame: {e}", msg.msg_type());
        }
    }

    /// Whether frps accepted the login.
    pub fn is_logged_in(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The run id frps gave (empty before the login; the one asked for, until then).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The greeting of a new work connection, keyed for `now`.
    pub fn new_work_conn(&self, now: Instant) -> NewWorkConn {
        let ts = self.unix(now);
        // Checked only by frps with auth.additionalScopes = ["NewWorkConns"]; harmless otherwise.
        NewWorkConn {
            run_id: self.run_id.clone(),
            privilege_key: crate::auth::privilege_key(&self.cfg.token, ts),
            timestamp: ts,
        }
    }

    /// Bytes the control connection carried in.
    pub fn handle_input(&mut self, mut input: &[u8], now: Instant) -> Result<(), SessionError> {
        loop {
            let msg = match self.codec.decode(&mut input) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(SessionError::Protocol(e.to_string())),
            };
            self.handle_message(msg, now)?;
        }
    }

    fn handle_message(&mut self, msg: Message, now: Instant) -> Result<(), SessionError> {
        if let Phase::LoggingIn { .. } = self.phase {
            let Message::LoginResp(resp) = msg else {
                return Err(SessionError::Protocol(format!("expected LoginResp, got {}", msg.msg_type())));
            };
            if !resp.error.is_empty() {
                return Err(SessionError::Rejected(resp.error));
            }
            if resp.run_id.is_empty() {
                return Err(SessionError::Protocol("LoginResp carries neither run_id nor error".into()));
            }
            self.run_id = resp.run_id.clone();
            self.phase = Phase::Running;
            self.codec.logged_in();
            self.events.push_back(Event::LoggedIn { run_id: resp.run_id, server_version: resp.version });
            for p in self.cfg.proxies.clone() {
                self.send(&Message::NewProxy(p));
            }
            // A first Ping at once, then one per interval.
            self.last_pong = now;
            self.next_ping = now;
            return self.handle_timeout(now);
        }
        match msg {
            Message::ReqWorkConn(_) => {
                // frps asks for one per user connection; one asking for thousands it never
                // starts must not make burrow dial without end.
                if self.pending_work >= self.cfg.max_pending_work {
                    if !self.cap_reported {
                        self.cap_reported = true;
                        self.events.push_back(Event::WorkCapReached);
                    }
                } else {
                    self.pending_work += 1;
                    self.events.push_back(Event::OpenWorkConn);
                }
            }
            Message::NewProxyResp(r) => {
                let Some(&index) = self.by_name.get(&r.proxy_name) else {
                    self.events.push_back(Event::UnknownProxy(r.proxy_name));
                    return Ok(());
                };
                let p = &mut self.proxies[index];
                if r.error.is_empty() {
                    p.up = true;
                    p.retry_at = None;
                    self.events.push_back(Event::ProxyUp { index, remote_addr: r.remote_addr });
                } else {
                    // One retry per proxy at most, however often frps says no.
                    p.up = false;
                    p.retry_at = Some(now + self.cfg.proxy_retry);
                    self.events.push_back(Event::ProxyRefused { index, error: r.error });
                }
            }
            Message::Pong(p) => {
                if !p.error.is_empty() {
                    return Err(SessionError::PongError(p.error));
                }
                self.last_pong = now;
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {} on the control connection",
                    other.msg_type()
                )))
            }
        }
        Ok(())
    }

    /// The control connection ended (EOF, or an error reading or writing it).
    pub fn handle_eof(&self) -> SessionError {
        match self.phase {
            Phase::LoggingIn { .. } if self.codec.mid_frame() => SessionError::CutBeforeLogin,
            _ if self.codec.mid_frame() => {
                SessionError::Protocol("frps closed the control connection in the middle of a frame".into())
            }
            Phase::LoggingIn { .. } if self.codec.awaiting_hello() => SessionError::NoServerHello,
            Phase::LoggingIn { .. } => SessionError::ClosedBeforeLogin,
            Phase::Running => SessionError::Closed,
        }
    }

    /// Time passed: the login deadline, heartbeats, proxy retries.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        match self.phase {
            Phase::LoggingIn { deadline } => {
                if now >= deadline {
                    let t = self.cfg.login_timeout;
                    return Err(if self.takeover {
                        SessionError::TakeoverTimeout(t)
                    } else {
                        SessionError::LoginTimeout(t)
                    });
                }
            }
            Phase::Running => {
                if now >= self.next_ping {
                    if now.saturating_duration_since(self.last_pong) > self.cfg.heartbeat_timeout {
                        return Err(SessionError::HeartbeatTimeout(self.cfg.heartbeat_timeout));
                    }
                    let ts = self.unix(now);
                    // Keys in heartbeats are only checked by frps with auth.additionalScopes =
                    // ["HeartBeats"]; sending them always makes such servers work unconfigured.
                    let ping = Ping { privilege_key: crate::auth::privilege_key(&self.cfg.token, ts), timestamp: ts };
                    self.send(&Message::Ping(ping));
                    self.next_ping = now + self.cfg.heartbeat_interval;
                }
                for i in 0..self.proxies.len() {
                    if self.proxies[i].retry_at.is_some_and(|t| now >= t) {
                        self.proxies[i].retry_at = None;
                        let msg = Message::NewProxy(self.cfg.proxies[i].clone());
                        self.send(&msg);
                    }
                }
            }
        }
        Ok(())
    }

    /// The next moment [`Session::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Instant {
        match self.phase {
            Phase::LoggingIn { deadline } => deadline,
            Phase::Running => self.proxies.iter().filter_map(|p| p.retry_at).fold(self.next_ping, std::cmp::Ord::min),
        }
    }

    /// Bytes to write to the control connection, in order (empty when there are none).
    pub fn poll_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.transmit)
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A work connection asked for by [`Event::OpenWorkConn`] is started or gone.
    pub fn work_conn_done(&mut self) {
        self.pending_work = self.pending_work.saturating_sub(1);
    }

    /// Work connections asked for and not yet done.
    pub fn pending_work(&self) -> usize {
        self.pending_work
    }

    /// Ends the session politely: `CloseProxy` for every registered proxy, ready to transmit.
    pub fn close(&mut self) {
        for i in 0..self.proxies.len() {
            if std::mem::take(&mut self.proxies[i].up) {
                let name = self.cfg.proxies[i].proxy_name.clone();
                self.send(&Message::CloseProxy(CloseProxy { proxy_name: name }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::V1Codec;
    use crate::crypto::{Decryptor, Encryptor};
    use crate::msg::{LoginResp, NewProxyResp, Pong, ReqWorkConn};

    const TOKEN: &str = "secret";
    const SECOND: Duration = Duration::from_secs(1);

    /// frps' side of the control connection, in memory.
    struct Frps {
        key: [u8; 16],
        enc: Option<Encryptor>,
        dec: Option<Decryptor>,
        plain: Vec<u8>,
    }

    impl Frps {
        fn new() -> Self {
            Self { key: crate::auth::derive_key(TOKEN), enc: None, dec: None, plain: Vec::new() }
        }

        /// What frps reads from `bytes` the client wrote.
        fn read(&mut self, mut bytes: Vec<u8>) -> Vec<Message> {
            if let Some(d) = &mut self.dec {
                let start = d.decrypt(&mut bytes);
                self.plain.extend_from_slice(&bytes[start..]);
            } else {
                self.plain.extend_from_slice(&bytes);
            }
            let mut out = Vec::new();
            while let Some((m, n)) = Message::decode(&self.plain).unwrap() {
                self.plain.drain(..n);
                out.push(m);
            }
            out
        }

        /// The bytes frps writes for `msg`.
        fn write(&mut self, msg: Message) -> Vec<u8> {
            let mut b = msg.to_bytes().unwrap();
            if let Some(e) = &mut self.enc {
                e.encrypt(&mut b);
                if let Some(iv) = e.take_iv() {
                    b.splice(0..0, iv);
                }
            }
            b
        }

        /// Accepts the login: the answer, after which both directions are encrypted.
        fn accept(&mut self, run_id: &str) -> Vec<u8> {
            let b = self.write(Message::LoginResp(LoginResp {
                version: "0.65.0".into(),
                run_id: run_id.into(),
                error: String::new(),
            }));
            self.enc = Some(Encryptor::new(&self.key, [7; 16]));
            self.dec = Some(Decryptor::new(&self.key));
            b
        }
    }

    fn config(proxies: &[&str]) -> Config {
        Config {
            login: Login { version: "0.65.0".into(), os: "linux".into(), arch: "amd64".into(), ..Default::default() },
            token: TOKEN.into(),
            proxies: proxies
                .iter()
                .map(|n| NewProxy { proxy_name: n.to_string(), proxy_type: "http".into(), ..Default::default() })
                .collect(),
            login_timeout: 10 * SECOND,
            heartbeat_interval: 30 * SECOND,
            heartbeat_timeout: 90 * SECOND,
            proxy_retry: 30 * SECOND,
            max_pending_work: 2,
        }
    }

    fn session(proxies: &[&str], run_id: &str, t0: Instant) -> Session {
        Session::new(
            config(proxies),
            Box::new(V1Codec::new(crate::auth::derive_key(TOKEN), [3; 16])),
            run_id.into(),
            t0,
            1_700_000_000,
        )
    }

    /// A session logged in at `t0`, with what frps read so far.
    fn logged_in(proxies: &[&str], t0: Instant) -> (Session, Frps, Vec<Message>) {
        let mut s = session(proxies, "", t0);
        let mut frps = Frps::new();
        let mut read = frps.read(s.poll_transmit());
        s.handle_input(&frps.accept("run-1"), t0).unwrap();
        read.extend(frps.read(s.poll_transmit()));
        (s, frps, read)
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn login_carries_the_key_and_run_id_then_registers_and_pings_encrypted() {
        let t0 = Instant::now();
        let mut s = session(&["web", "db"], "old-run", t0);
        let mut frps = Frps::new();
        let sent = frps.read(s.poll_transmit());
        let [Message::Login(login)] = &sent[..] else { panic!("{sent:?}") };
        assert_eq!(login.run_id, "old-run");
        assert_eq!(login.timestamp, 1_700_000_000);
        assert_eq!(login.privilege_key, crate::auth::privilege_key(TOKEN, 1_700_000_000));
        assert_eq!(s.poll_timeout(), t0 + 10 * SECOND, "the login deadline");
        assert!(!s.is_logged_in());

        // LoginResp and the first encrypted message in one read: the codec switches mid-buffer.
        let mut bytes = frps.accept("run-2");
        bytes.extend(frps.write(Message::ReqWorkConn(ReqWorkConn {})));
        s.handle_input(&bytes, t0 + SECOND).unwrap();
        assert_eq!(
            events(&mut s),
            [Event::LoggedIn { run_id: "run-2".into(), server_version: "0.65.0".into() }, Event::OpenWorkConn]
        );
        assert_eq!(s.run_id(), "run-2");
        let types: Vec<_> = frps.read(s.poll_transmit()).iter().map(Message::msg_type).collect();
        use crate::MsgType as T;
        assert_eq!(types, [T::NewProxy, T::NewProxy, T::Ping]);
        assert_eq!(s.poll_timeout(), t0 + 31 * SECOND, "the next ping");
        assert_eq!(s.new_work_conn(t0 + 5 * SECOND).timestamp, 1_700_000_005);
    }

    #[test]
    fn no_login_answer_in_time_is_a_login_timeout() {
        let t0 = Instant::now();
        let mut s = session(&["web"], "", t0);
        s.handle_timeout(t0 + 9 * SECOND).unwrap();
        let e = s.handle_timeout(t0 + 10 * SECOND).unwrap_err();
        assert_eq!(e, SessionError::LoginTimeout(10 * SECOND));
        assert!(e.is_incompatibility() && !e.is_fatal());
    }

    #[test]
    fn a_slow_answer_to_a_login_that_takes_over_is_slow_not_incompatible() {
        let t0 = Instant::now();
        let mut s = session(&["web"], "old-run", t0);
        let e = s.handle_timeout(t0 + 10 * SECOND).unwrap_err();
        assert_eq!(e, SessionError::TakeoverTimeout(10 * SECOND));
        assert!(!e.is_incompatibility() && !e.is_fatal());
    }

    #[test]
    fn heartbeats_every_interval_and_a_silent_server_times_out() {
        let t0 = Instant::now();
        let (mut s, mut frps, _) = logged_in(&["web"], t0);
        // Answered pings keep the session alive for as long as they come.
        for i in 1..=10u32 {
            let t = t0 + 30 * i * SECOND;
            assert_eq!(s.poll_timeout(), t);
            s.handle_timeout(t).unwrap();
            assert_eq!(
                frps.read(s.poll_transmit()).iter().map(Message::msg_type).collect::<Vec<_>>(),
                [crate::MsgType::Ping]
            );
            s.handle_input(&frps.write(Message::Pong(Pong::default())), t).unwrap();
        }
        // Then silence: pings go out until 90 s have passed without a Pong.
        let last = t0 + 300 * SECOND;
        for i in 1..=3u32 {
            s.handle_timeout(last + 30 * i * SECOND).unwrap();
        }
        let e = s.handle_timeout(last + 120 * SECOND).unwrap_err();
        assert_eq!(e, SessionError::HeartbeatTimeout(90 * SECOND));
        assert!(!e.is_incompatibility() && !e.is_fatal());
    }

    #[test]
    fn a_refused_login_is_fatal_only_for_credentials() {
        for (error, fatal) in [
            ("token in login doesn't match token from configuration", true),
            ("register control error", true),
            ("client id is already online", false),
        ] {
            let t0 = Instant::now();
            let mut s = session(&["web"], "", t0);
            let mut frps = Frps::new();
            let resp = frps.write(Message::LoginResp(LoginResp { error: error.into(), ..Default::default() }));
            let e = s.handle_input(&resp, t0).unwrap_err();
            assert_eq!(e, SessionError::Rejected(error.into()));
            assert_eq!(e.is_fatal(), fatal, "{error}");
            assert!(!e.is_incompatibility());
        }
    }

    #[test]
    fn a_refused_proxy_is_registered_again_once_per_retry_period() {
        let t0 = Instant::now();
        let (mut s, mut frps, _) = logged_in(&["web", "db"], t0);
        let refuse = |frps: &mut Frps| {
            frps.write(Message::NewProxyResp(NewProxyResp {
                proxy_name: "db".into(),
                error: "port already used".into(),
                ..Default::default()
            }))
        };
        let up = frps.write(Message::NewProxyResp(NewProxyResp {
            proxy_name: "web".into(),
            remote_addr: "web.example.com".into(),
            ..Default::default()
        }));
        s.handle_input(&up, t0).unwrap();
        // Refused twice in a row: still one retry pending, 30 s after the last refusal.
        s.handle_input(&refuse(&mut frps), t0 + SECOND).unwrap();
        s.handle_input(&refuse(&mut frps), t0 + 2 * SECOND).unwrap();
        assert_eq!(
            events(&mut s),
            [
                Event::LoggedIn { run_id: "run-1".into(), server_version: "0.65.0".into() },
                Event::ProxyUp { index: 0, remote_addr: "web.example.com".into() },
                Event::ProxyRefused { index: 1, error: "port already used".into() },
                Event::ProxyRefused { index: 1, error: "port already used".into() },
            ]
        );
        assert_eq!(s.poll_timeout(), t0 + 30 * SECOND, "the ping comes first");
        s.handle_timeout(t0 + 30 * SECOND).unwrap();
        assert_eq!(s.poll_timeout(), t0 + 32 * SECOND);
        s.handle_timeout(t0 + 32 * SECOND).unwrap();
        let sent = frps.read(s.poll_transmit());
        let registered: Vec<&str> = sent
            .iter()
            .filter_map(|m| if let Message::NewProxy(p) = m { Some(p.proxy_name.as_str()) } else { None })
            .collect();
        assert_eq!(registered, ["db"]);
        // An answer for a name this client never registered is ignored, not an error.
        let stray = frps.write(Message::NewProxyResp(NewProxyResp { proxy_name: "x".into(), ..Default::default() }));
        s.handle_input(&stray, t0 + 33 * SECOND).unwrap();
        assert_eq!(events(&mut s), [Event::UnknownProxy("x".into())]);
    }

    #[test]
    fn work_connection_requests_beyond_the_cap_are_ignored() {
        let t0 = Instant::now();
        let (mut s, mut frps, _) = logged_in(&["web"], t0);
        let _ = events(&mut s);
        let mut flood = Vec::new();
        for _ in 0..5 {
            flood.extend(frps.write(Message::ReqWorkConn(ReqWorkConn {})));
        }
        s.handle_input(&flood, t0).unwrap();
        assert_eq!(events(&mut s), [Event::OpenWorkConn, Event::OpenWorkConn, Event::WorkCapReached]);
        assert_eq!(s.pending_work(), 2);
        s.work_conn_done();
        s.handle_input(&frps.write(Message::ReqWorkConn(ReqWorkConn {})), t0).unwrap();
        assert_eq!(events(&mut s), [Event::OpenWorkConn]);
    }

    #[test]
    fn endings_before_and_after_login_are_told_apart() {
        let t0 = Instant::now();
        let s = session(&["web"], "", t0);
        assert_eq!(s.handle_eof(), SessionError::ClosedBeforeLogin);
        assert!(s.handle_eof().is_incompatibility());
        let (mut s, mut frps, _) = logged_in(&["web"], t0);
        assert_eq!(s.handle_eof(), SessionError::Closed);
        assert!(!s.handle_eof().is_incompatibility());
        // A message frps never sends on the control connection.
        let e = s.handle_input(&frps.write(Message::Login(Login::default())), t0).unwrap_err();
        assert!(matches!(e, SessionError::Protocol(ref m) if m.contains("unexpected Login")), "{e}");
        assert!(e.is_incompatibility());
        // Garbage where the login answer should be: another protocol behind the port.
        let mut s = session(&["web"], "", t0);
        let e = s.handle_input(b"HTTP/1.1 400 Bad Request\r\n\r\n", t0).unwrap_err();
        assert!(matches!(e, SessionError::Protocol(_)) && e.is_incompatibility(), "{e}");
        let mut s = session(&["web"], "", t0);
        let e = s.handle_input(&frps_pong_in_clear(), t0).unwrap_err();
        assert!(matches!(e, SessionError::Protocol(ref m) if m.contains("expected LoginResp")), "{e}");
    }

    #[test]
    fn a_v2_login_closed_without_a_server_hello_says_so() {
        use crate::v2::{Algorithm, Bootstrap, V2Codec};
        let t0 = Instant::now();
        let codec = V2Codec::new(TOKEN, &Bootstrap::default(), &Algorithm::ALL, [1; 32], [2; 24]);
        let mut s = Session::new(config(&["web"]), Box::new(codec), String::new(), t0, 1_700_000_000);
        let sent = s.poll_transmit();
        assert!(sent.starts_with(&crate::v2::MAGIC), "the magic comes first");
        assert_eq!(s.handle_eof(), SessionError::NoServerHello);
        assert!(s.handle_eof().is_incompatibility() && !s.handle_eof().is_fatal());
        // Half a frame header, then the end: cut short, not "no hello".
        s.handle_input(&[0, 2, 0], t0).unwrap();
        assert_eq!(s.handle_eof(), SessionError::CutBeforeLogin);
        assert!(s.handle_eof().to_string().contains("middle of a frame") && s.handle_eof().is_incompatibility());
    }

    fn frps_pong_in_clear() -> Vec<u8> {
        Message::Pong(Pong::default()).to_bytes().unwrap()
    }

    #[test]
    fn a_refused_heartbeat_ends_the_session() {
        let t0 = Instant::now();
        let (mut s, mut frps, _) = logged_in(&["web"], t0);
        let pong = frps.write(Message::Pong(Pong { error: "invalid privilege key".into() }));
        assert_eq!(s.handle_input(&pong, t0).unwrap_err(), SessionError::PongError("invalid privilege key".into()));
    }

    #[test]
    fn closing_unregisters_only_the_proxies_that_are_up() {
        let t0 = Instant::now();
        let (mut s, mut frps, _) = logged_in(&["web", "db"], t0);
        let up = frps.write(Message::NewProxyResp(NewProxyResp { proxy_name: "db".into(), ..Default::default() }));
        s.handle_input(&up, t0).unwrap();
        s.close();
        let sent = frps.read(s.poll_transmit());
        assert_eq!(sent, [Message::CloseProxy(CloseProxy { proxy_name: "db".into() })]);
    }
}
