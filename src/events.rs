//! The host contract's output: every event burrow reports (contract §3), typed, and the one
//! [`Reporter`] that writes them.
//!
//! The reporter owns the stdout stream, the admin API's event subscribers, the status board and
//! the exit path: each event is serialised once (with its `ts`) and that same line goes to stdout
//! and to every subscriber; `stopped` is written by [`Reporter::exit`] alone. stdout belongs to the
//! host (an Electron main process, a script): human logs go to stderr through `tracing`. A host
//! that has gone away must never make burrow panic or hang: lines are written by a thread of their
//! own through a bounded queue (a host that stops reading fills the queue, and further lines are
//! dropped and counted rather than blocking the tunnel), and a failed write turns the stream off.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::status::{BackendKind, Snapshot, State, Status, TunnelState};

/// Error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ErrorCode {
    ConfigInvalid,
    ApiUnreachable,
    ApiRejected,
    ApiError,
    ServerUnreachable,
    AuthFailed,
    ProxyRejected,
    ProxyFailed,
    TlsFailed,
    ProtocolError,
    FrpcMissing,
    FrpcFailed,
    PortInUse,
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::ApiUnreachable => "api_unreachable",
            ErrorCode::ApiRejected => "api_rejected",
            ErrorCode::ApiError => "api_error",
            ErrorCode::ServerUnreachable => "server_unreachable",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::ProxyRejected => "proxy_rejected",
            ErrorCode::ProxyFailed => "proxy_failed",
            ErrorCode::TlsFailed => "tls_failed",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::FrpcMissing => "frpc_missing",
            ErrorCode::FrpcFailed => "frpc_failed",
            ErrorCode::PortInUse => "port_in_use",
            ErrorCode::Internal => "internal",
        }
    }

    /// The process exit code when an error of this kind is fatal (contract §4).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::ConfigInvalid => 2,
            ErrorCode::AuthFailed | ErrorCode::ApiRejected | ErrorCode::ProxyFailed => 3,
            ErrorCode::PortInUse => 4,
            _ => 1,
        }
    }
}

/// A warning's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// TLS to frps runs without a CA or a pin.
    TlsUnverified,
    /// The reverse proxy listens beyond loopback.
    ProxyNotLoopback,
    /// A tunnel's public URL did not reach this burrow.
    UrlUnverified,
    /// A tcp tunnel in a protected configuration: the policy sees only the HTTP inside it.
    TcpUnprotected,
    /// Protected mode on an `http://` URL: the share cookie reaches every service on that host.
    ShareOverHttp,
}

/// Where a tunnel can be reached from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PublicAddr {
    /// An http(s) tunnel's URL (`null` when frps named no host).
    Url {
        /// The URL.
        url: Option<String>,
    },
    /// A tcp (or other) tunnel's `host:port`.
    Remote {
        /// The address.
        remote_addr: String,
    },
}

impl PublicAddr {
    fn as_status(&self) -> Option<String> {
        match self {
            PublicAddr::Url { url } => url.clone(),
            PublicAddr::Remote { remote_addr } => Some(remote_addr.clone()),
        }
    }
}

/// `tunnel_up`'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunnelUp {
    /// The tunnel's name.
    pub name: String,
    /// `http`, `tcp`, … (frpc mode reports its own types).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its public address.
    #[serde(flatten)]
    pub addr: PublicAddr,
    /// Which client serves it.
    pub mode: BackendKind,
    /// The reservation it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
}

/// One event of the contract (§3), as it is written: `{"event": "<name>", "ts": …, fields…}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Event {
    Starting {
        version: &'static str,
        /// The configured mode: `auto`, `native` or `frpc`.
        mode: &'static str,
    },
    ProxyReady {
        addr: String,
        routes: Vec<crate::proxy::RouteSnapshot>,
    },
    AdminReady {
        url: String,
        /// Only a token burrow generated; one the host chose it already knows.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        page: Option<String>,
    },
    Reserved {
        reservation_id: String,
        expires_at: Option<String>,
    },
    Renewed {
        reservation_id: String,
        expires_at: Option<String>,
    },
    Connected {
        server: String,
        transport: String,
        mode: BackendKind,
        /// frp wire protocol: `v1` or `v2`.
        wire: &'static str,
        /// The proxy to frps, `scheme://host:port`, when one is used.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        server_version: Option<String>,
    },
    TunnelUp(TunnelUp),
    TunnelDown {
        name: String,
        reason: String,
    },
    /// The tunnel's public URL was fetched and reached this burrow.
    UrlVerified {
        name: String,
        url: String,
        ms: u64,
    },
    /// A share link for the public URL, answering `share`.
    ShareLink {
        url: String,
        /// RFC 3339.
        expires: String,
    },
    /// Share links and cookies of earlier generations stopped working.
    SharesRevoked {
        generation: u64,
    },
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    Fallback {
        from: BackendKind,
        to: BackendKind,
        reason: String,
    },
    Warning {
        code: WarningCode,
        message: String,
    },
    Error {
        code: ErrorCode,
        message: String,
        hint: String,
        fatal: bool,
    },
    Status(Snapshot),
    Stopped {
        reason: String,
    },
}

/// A failure that ends burrow: reported once, by [`Reporter::exit`], as a fatal `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The contract's error code (and so the exit code).
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
    /// What the user can do about it.
    pub hint: String,
}

impl Fatal {
    /// A fatal error.
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { code, message: message.into(), hint: hint.into() }
    }
}

/// How a run of burrow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped as asked: `shutdown`, `stdin_closed`, `signal`.
    Stopped(&'static str),
    /// Failed with an error that retrying cannot fix.
    Fatal(Fatal),
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON lines (the contract).
    Json,
    /// One human-readable line per event (`--no-json`).
    Human,
}

/// Writes events. Cheap to clone; all clones write to the same sink in order.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Mutex<Sink>>,
    format: Format,
    status: Status,
}

/// Lines queued for the writer thread, at most. The queue is counted rather than preallocated
/// (`sync_channel` would allocate and touch every slot at start: 316 KiB, where all of burrow's own
/// idle memory is now under 500 KiB).
const QUEUE: usize = 10_000;

/// Lines a subscriber (an admin API event stream) may fall behind by before it is dropped.
const SUBSCRIBER_QUEUE: usize = 256;

enum Out {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
}

struct Sink {
    out: Option<std::sync::mpsc::Sender<Out>>,
    /// Lines sent to the writer thread and not yet written.
    queued: Arc<AtomicUsize>,
    dropped: u64,
    subscribers: Vec<tokio::sync::mpsc::Sender<Arc<str>>>,
}

impl Reporter {
    /// Events written to stdout.
    pub fn stdout(format: Format) -> Self {
        Self::to_writer(Box::new(std::io::stdout()), format)
    }

    /// Events written to any writer (tests, or a file), by a thread of their own.
    pub fn to_writer(mut out: Box<dyn Write + Send>, format: Format) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Out>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let spawned = std::thread::Builder::new().name("burrow-events".into()).spawn(move || {
            let mut open = true;
            for item in rx {
                match item {
                    Out::Line(line) => {
                        // The host closed our stdout: nobody is listening, keep running without it.
                        open = open && writeln!(out, "{line}").and_then(|_| out.flush()).is_ok();
                        written.fetch_sub(1, Ordering::Relaxed);
                    }
                    Out::Flush(ack) => {
                        let _ = ack.send(());
                    }
                }
            }
        });
        let out = spawned.ok().map(|_| tx);
        Self::with_sink(out, queued, format)
    }

    /// Events that go nowhere but to subscribers.
    pub fn silent() -> Self {
        Self::with_sink(None, Arc::default(), Format::Json)
    }

    fn with_sink(out: Option<std::sync::mpsc::Sender<Out>>, queued: Arc<AtomicUsize>, format: Format) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Sink { out, queued, dropped: 0, subscribers: Vec::new() })),
            format,
            status: Status::default(),
        }
    }

    /// The status board the events keep current.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Sets a state that no event names (`connecting`, `reserving`, `stopping`, `stopped`).
    pub fn set_state(&self, state: State) {
        self.status.set_state(state);
    }

    /// The `status` event as it would be written now.
    pub fn status_event(&self) -> Event {
        Event::Status(self.status.snapshot())
    }

    /// Waits (at most `within`) until every event emitted so far has been written.
    pub fn flush(&self, within: std::time::Duration) {
        let (ack, done) = std::sync::mpsc::channel();
        let sent = self.lock().out.as_ref().map(|tx| tx.send(Out::Flush(ack)).is_ok()).unwrap_or(false);
        if sent {
            let _ = done.recv_timeout(within);
        }
    }

    /// Every event line from now on, as stdout gets it (admin API, demo). A subscriber that falls
    /// [`SUBSCRIBER_QUEUE`] lines behind is dropped: its channel closes.
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<Arc<str>> {
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE);
        self.lock().subscribers.push(tx);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sink> {
        // A panic while holding the lock cannot leave the sink inconsistent: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The JSON line `event` is written as now (its fields plus `event` and `ts`), whatever the
    /// stdout format.
    pub fn json_line(&self, event: &Event) -> String {
        stamped(event).to_string()
    }

    /// Writes `event` to stdout and every subscriber, and applies it to the status board.
    pub fn emit(&self, event: Event) {
        self.apply(&event);
        let value = stamped(&event);
        let json: Arc<str> = value.to_string().into();
        let mut sink = self.lock();
        sink.subscribers.retain(|s| s.try_send(json.clone()).is_ok());
        let line = match self.format {
            Format::Json => json.to_string(),
            Format::Human => human_line(&value),
        };
        if let Some(tx) = sink.out.as_ref() {
            // Only emitters add to the count, and they hold the sink's lock: check-then-add is exact.
            if sink.queued.load(Ordering::Relaxed) < QUEUE {
                sink.queued.fetch_add(1, Ordering::Relaxed);
                if tx.send(Out::Line(line)).is_err() {
                    // The writer thread is gone; nothing will write (or uncount) lines again.
                    sink.queued.fetch_sub(1, Ordering::Relaxed);
                    sink.out = None;
                }
            } else {
                sink.dropped += 1;
                if sink.dropped == 1 {
                    tracing::warn!("the host is not reading burrow's stdout; events are being dropped");
                }
            }
        }
    }

    fn apply(&self, event: &Event) {
        let s = &self.status;
        match event {
            Event::Connected { .. } => s.set_state(State::Connected),
            Event::Reconnecting { .. } => s.set_state(State::Reconnecting),
            Event::TunnelUp(t) => s.set_tunnel(&t.name, TunnelState::Up, t.addr.as_status()),
            Event::TunnelDown { name, .. } => s.set_tunnel(name, TunnelState::Down, None),
            Event::Fallback { to, .. } => s.set_mode(*to),
            _ => {}
        }
    }

    /// Emits a non-fatal `error` event.
    pub fn error(&self, code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) {
        self.emit(Event::Error { code, message: message.into(), hint: hint.into(), fatal: false });
    }

    /// Emits a `warning` event.
    pub fn warning(&self, code: WarningCode, message: impl Into<String>) {
        self.emit(Event::Warning { code, message: message.into() });
    }

    /// The one way out: a fatal outcome's `error`, then `stopped`, both written before it returns
    /// (within 2 s); returns the process exit code.
    pub fn exit(&self, outcome: Outcome) -> i32 {
        let (reason, code) = match outcome {
            Outcome::Stopped(reason) => (reason.to_string(), 0),
            Outcome::Fatal(f) => {
                crate::say!("burrow: {}", f.message);
                let code = f.code.exit_code();
                let reason = f.code.as_str().to_string();
                self.emit(Event::Error { code: f.code, message: f.message, hint: f.hint, fatal: true });
                (reason, code)
            }
        };
        self.emit(Event::Stopped { reason });
        self.flush(std::time::Duration::from_secs(2));
        code
    }
}

/// The event's fields with `event` and `ts`.
fn stamped(event: &Event) -> Value {
    let mut value = serde_json::to_value(event).unwrap_or_else(|e| {
        // Every field is a string, number, bool or map with string keys: this cannot fail.
        serde_json::json!({"event": "error", "code": "internal", "message": format!("an event could not be serialised: {e}"), "hint": "", "fatal": false})
    });
    if let Value::Object(m) = &mut value {
        m.insert(
            "ts".into(),
            Value::String(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        );
    }
    value
}

/// Writes one line on stderr for a human; a closed stderr is ignored (eprintln! would panic).
pub fn say_stderr(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::events::say_stderr(format_args!($($t)*)) };
}

fn human_line(v: &Value) -> String {
    let mut s = String::new();
    if let Some(ev) = v.get("event").and_then(Value::as_str) {
        s.push_str(ev);
    }
    if let Value::Object(m) = v {
        for (k, val) in m {
            if k == "event" || k == "ts" {
                continue;
            }
            match val {
                Value::String(t) => s.push_str(&format!(" {k}={t}")),
                other => s.push_str(&format!(" {k}={other}")),
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnecting(i: usize) -> Event {
        Event::Reconnecting { attempt: i as u32, delay_ms: 0, reason: String::new() }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_event_and_ts() {
        let buf = Buf::default();
        let ev = Reporter::to_writer(Box::new(buf.clone()), Format::Json);
        ev.emit(Event::TunnelUp(TunnelUp {
            name: "web".into(),
            kind: "http".into(),
            addr: PublicAddr::Url { url: Some("http://a.b".into()) },
            mode: BackendKind::Native,
            reservation_id: None,
        }));
        assert_eq!(ev.exit(Outcome::Fatal(Fatal::new(ErrorCode::AuthFailed, "m", "h"))), 3);
        ev.flush(std::time::Duration::from_secs(5));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["event"], "tunnel_up");
        assert_eq!(lines[0]["name"], "web");
        assert!(humantime::parse_rfc3339(lines[0]["ts"].as_str().unwrap()).is_ok());
        assert_eq!(lines[0]["url"], "http://a.b");
        assert_eq!(lines[0]["mode"], "native");
        assert!(lines[0].get("reservation_id").is_none());
        assert_eq!(lines[1]["code"], "auth_failed");
        assert_eq!(lines[1]["fatal"], true);
        assert_eq!(lines[2]["event"], "stopped");
        assert_eq!(lines[2]["reason"], "auth_failed");
    }

    #[test]
    fn closed_stdout_is_not_fatal() {
        let ev = Reporter::to_writer(Box::new(Closed), Format::Json);
        ev.emit(Event::Starting { version: "0", mode: "auto" });
        assert_eq!(ev.exit(Outcome::Stopped("shutdown")), 0);
    }

    /// A writer that never returns, like a pipe whose reader stopped reading.
    struct Stuck;
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_host_that_stops_reading_never_blocks_emit() {
        let ev = Reporter::to_writer(Box::new(Stuck), Format::Json);
        let start = std::time::Instant::now();
        for i in 0..(QUEUE + 100) {
            ev.emit(reconnecting(i));
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(ev.lock().dropped >= 99);
    }

    #[test]
    fn written_lines_leave_the_queue() {
        let out = Buf::default();
        let ev = Reporter::to_writer(Box::new(out.clone()), Format::Json);
        for round in 0..3 {
            for i in 0..QUEUE {
                ev.emit(reconnecting(round * QUEUE + i));
            }
            ev.flush(std::time::Duration::from_secs(10));
        }
        assert_eq!(ev.lock().dropped, 0, "a full queue's worth, written, must make room for the next");
        let lines = out.0.lock().unwrap().iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lines, 3 * QUEUE);
    }

    #[test]
    fn flush_returns_when_the_host_stops_reading() {
        let ev = Reporter::to_writer(Box::new(Stuck), Format::Json);
        for i in 0..(QUEUE + 10) {
            ev.emit(reconnecting(i));
        }
        let start = std::time::Instant::now();
        ev.flush(std::time::Duration::from_millis(100));
        ev.emit(reconnecting(0));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(ErrorCode::ConfigInvalid.exit_code(), 2);
        assert_eq!(ErrorCode::AuthFailed.exit_code(), 3);
        assert_eq!(ErrorCode::PortInUse.exit_code(), 4);
        assert_eq!(ErrorCode::ProtocolError.exit_code(), 1);
        assert_eq!(serde_json::to_value(ErrorCode::TlsFailed).unwrap(), "tls_failed");
    }

    #[test]
    fn events_keep_the_status_board_current() {
        let ev = Reporter::silent();
        ev.status().set_tunnels([("web".to_string(), "http"), ("db".to_string(), "tcp")]);
        let up = |name: &str, addr| {
            Event::TunnelUp(TunnelUp {
                name: name.into(),
                kind: "x".into(),
                addr,
                mode: BackendKind::Frpc,
                reservation_id: None,
            })
        };
        ev.emit(Event::Connected {
            server: "s:1".into(),
            transport: "tcp".into(),
            mode: BackendKind::Frpc,
            wire: "v1",
            via: None,
            server_version: None,
        });
        ev.emit(Event::Fallback { from: BackendKind::Native, to: BackendKind::Frpc, reason: "r".into() });
        ev.emit(up("web", PublicAddr::Url { url: Some("http://w".into()) }));
        ev.emit(up("db", PublicAddr::Remote { remote_addr: "h:9".into() }));
        ev.emit(Event::TunnelDown { name: "db".into(), reason: "r".into() });
        let s = serde_json::to_value(ev.status_event()).unwrap();
        assert_eq!(s["event"], "status");
        assert_eq!(s["state"], "connected");
        assert_eq!(s["mode"], "frpc");
        assert_eq!(s["tunnels"][0]["state"], "up");
        assert_eq!(s["tunnels"][0]["url"], "http://w");
        assert_eq!(s["tunnels"][1]["state"], "down");
        assert_eq!(s["tunnels"][1]["url"], "h:9");
        ev.emit(Event::Reconnecting { attempt: 1, delay_ms: 0, reason: String::new() });
        assert_eq!(ev.status().snapshot().state, State::Reconnecting);
    }

    #[tokio::test]
    async fn subscribers_get_the_stdout_line_and_slow_ones_are_dropped() {
        let out = Buf::default();
        let ev = Reporter::to_writer(Box::new(out.clone()), Format::Json);
        let mut fast = ev.subscribe();
        let mut slow = ev.subscribe();
        ev.emit(reconnecting(7));
        ev.flush(std::time::Duration::from_secs(5));
        let line = fast.recv().await.unwrap();
        assert_eq!(format!("{line}\n"), String::from_utf8(out.0.lock().unwrap().clone()).unwrap());
        assert_eq!(slow.recv().await.unwrap(), line);
        for i in 0..SUBSCRIBER_QUEUE + 1 {
            ev.emit(reconnecting(i));
            let _ = fast.try_recv();
        }
        let mut got = 0;
        while slow.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(got, SUBSCRIBER_QUEUE, "a subscriber that fell behind is dropped, not buffered for ever");
        ev.emit(reconnecting(0));
        assert!(fast.recv().await.is_some());
    }

    /// One of each event, with optional fields both set and unset where the schema cares.
    fn one_of_each() -> Vec<Event> {
        let up = |addr, reservation_id| {
            Event::TunnelUp(TunnelUp {
                name: "web".into(),
                kind: "http".into(),
                addr,
                mode: BackendKind::Native,
                reservation_id,
            })
        };
        let snapshot = Snapshot {
            state: State::Connected,
            mode: BackendKind::Native,
            tunnels: vec![crate::status::TunnelStatus {
                name: "web".into(),
                kind: "http",
                url: None,
                state: TunnelState::Pending,
                verified: Some(false),
                verify_message: Some("the name x.test does not resolve".into()),
            }],
            proxy: None,
            streams: Some(crate::status::Streams { active: 3, max: 4096 }),
        };
        vec![
            Event::Starting { version: "0.1.0", mode: "auto" },
            Event::ProxyReady { addr: "127.0.0.1:8080".into(), routes: vec![] },
            Event::AdminReady { url: "http://127.0.0.1:1/".into(), token: None, page: None },
            Event::AdminReady { url: "http://127.0.0.1:1/".into(), token: Some("t".into()), page: Some("p".into()) },
            Event::Reserved { reservation_id: "r".into(), expires_at: None },
            Event::Renewed { reservation_id: "r".into(), expires_at: Some("2026-12-02T00:00:00Z".into()) },
            Event::Connected {
                server: "h:7000".into(),
                transport: "tls+yamux".into(),
                mode: BackendKind::Frpc,
                wire: "v2",
                via: Some("http://proxy.corp:3128".into()),
                server_version: None,
            },
            up(PublicAddr::Url { url: None }, None),
            up(PublicAddr::Url { url: Some("http://a.b".into()) }, Some("r".into())),
            up(PublicAddr::Remote { remote_addr: "h:6000".into() }, None),
            Event::TunnelDown { name: "web".into(), reason: "r".into() },
            Event::UrlVerified { name: "web".into(), url: "http://a.b".into(), ms: 12 },
            Event::ShareLink { url: "https://a.b/?burrow_share=t".into(), expires: "2026-12-04T05:00:00Z".into() },
            Event::SharesRevoked { generation: 3 },
            Event::Reconnecting { attempt: 1, delay_ms: 500, reason: "r".into() },
            Event::Fallback { from: BackendKind::Native, to: BackendKind::Frpc, reason: "r".into() },
            Event::Warning { code: WarningCode::TlsUnverified, message: "m".into() },
            Event::Error { code: ErrorCode::PortInUse, message: "m".into(), hint: "h".into(), fatal: true },
            Event::Status(snapshot),
            Event::Stopped { reason: "shutdown".into() },
        ]
    }

    #[test]
    fn every_warning_code_is_in_the_published_schema() {
        use WarningCode::*;
        let schema: Value = serde_json::from_str(include_str!("../resources/events.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for code in [TlsUnverified, ProxyNotLoopback, UrlUnverified, TcpUnprotected, ShareOverHttp] {
            // Exhaustive on purpose: a new code does not compile until it is listed above.
            match code {
                TlsUnverified | ProxyNotLoopback | UrlUnverified | TcpUnprotected | ShareOverHttp => {}
            }
            let line = stamped(&Event::Warning { code, message: "m".into() });
            let errors: Vec<String> = validator.iter_errors(&line).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{line}: {errors:?}");
        }
    }

    #[test]
    fn every_event_is_valid_against_the_published_schema() {
        let schema: Value = serde_json::from_str(include_str!("../resources/events.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let titles: std::collections::BTreeSet<String> =
            schema["oneOf"].as_array().unwrap().iter().map(|o| o["title"].as_str().unwrap().to_string()).collect();
        let mut seen = std::collections::BTreeSet::new();
        for ev in one_of_each() {
            // Exhaustive on purpose: a new variant does not compile until it has a sample above.
            let name = match &ev {
                Event::Starting { .. } => "starting",
                Event::ProxyReady { .. } => "proxy_ready",
                Event::AdminReady { .. } => "admin_ready",
                Event::Reserved { .. } => "reserved",
                Event::Renewed { .. } => "renewed",
                Event::Connected { .. } => "connected",
                Event::TunnelUp(_) => "tunnel_up",
                Event::TunnelDown { .. } => "tunnel_down",
                Event::UrlVerified { .. } => "url_verified",
                Event::ShareLink { .. } => "share_link",
                Event::SharesRevoked { .. } => "shares_revoked",
                Event::Reconnecting { .. } => "reconnecting",
                Event::Fallback { .. } => "fallback",
                Event::Warning { .. } => "warning",
                Event::Error { .. } => "error",
                Event::Status(_) => "status",
                Event::Stopped { .. } => "stopped",
            };
            let line = stamped(&ev);
            assert_eq!(line["event"], name);
            let errors: Vec<String> = validator.iter_errors(&line).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{line}: {errors:?}");
            seen.insert(name.to_string());
        }
        assert_eq!(seen, titles, "the enum and the schema name the same events");
    }
}
