//! The JSON-lines event stream on stdout (contract §3).
//!
//! One object per line, flushed per line, always with `event` and `ts`. stdout belongs to the host
//! (an Electron main process, a script): human logs go to stderr through `tracing`. A host that has
//! gone away must never make burrow panic or hang: lines are written by a thread of their own
//! through a bounded queue (a host that stops reading fills the queue, and further lines are
//! dropped and counted rather than blocking the tunnel), and a failed write turns the stream off.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Map, Value};

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
            ErrorCode::AuthFailed | ErrorCode::ApiRejected => 3,
            ErrorCode::PortInUse => 4,
            _ => 1,
        }
    }
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON lines (the contract).
    Json,
    /// One human-readable line per event (`--no-json`).
    Human,
}

/// Where events go. Cheap to clone; all clones write to the same sink in order.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Mutex<Sink>>,
    format: Format,
}

/// Lines queued for the writer thread, at most. The queue is counted rather than preallocated
/// (`sync_channel` would allocate and touch every slot at start: 316 KiB, where all of burrow's own
/// idle memory is now under 500 KiB).
const QUEUE: usize = 10_000;

enum Out {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
}

struct Sink {
    out: Option<std::sync::mpsc::Sender<Out>>,
    /// Lines sent to the writer thread and not yet written.
    queued: Arc<AtomicUsize>,
    dropped: u64,
    subscribers: Vec<tokio::sync::mpsc::UnboundedSender<Value>>,
}

impl Events {
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
        Self { inner: Arc::new(Mutex::new(Sink { out, queued, dropped: 0, subscribers: Vec::new() })), format }
    }

    /// Events that go nowhere but to subscribers.
    pub fn silent() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Sink {
                out: None,
                queued: Arc::default(),
                dropped: 0,
                subscribers: Vec::new(),
            })),
            format: Format::Json,
        }
    }

    /// Waits (at most `within`) until every event emitted so far has been written.
    pub fn flush(&self, within: std::time::Duration) {
        let (ack, done) = std::sync::mpsc::channel();
        let sent = self.lock().out.as_ref().map(|tx| tx.send(Out::Flush(ack)).is_ok()).unwrap_or(false);
        if sent {
            let _ = done.recv_timeout(within);
        }
    }

    /// A live copy of every event from now on (admin API, demo).
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sink> {
        // A panic while holding the lock cannot leave the sink inconsistent: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Emits `event` with the given fields (an object) plus `ts`.
    pub fn emit(&self, event: &str, fields: Value) {
        let mut obj = Map::new();
        obj.insert("event".into(), Value::String(event.into()));
        obj.insert(
            "ts".into(),
            Value::String(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        );
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        let value = Value::Object(obj);
        let mut sink = self.lock();
        sink.subscribers.retain(|s| s.send(value.clone()).is_ok());
        let line = match self.format {
            Format::Json => value.to_string(),
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

    /// Emits an `error` event.
    pub fn error(&self, code: ErrorCode, message: &str, hint: &str, fatal: bool) {
        self.emit("error", json!({"code": code.as_str(), "message": message, "hint": hint, "fatal": fatal}));
    }

    /// Emits a `warning` event.
    pub fn warning(&self, code: &str, message: &str) {
        self.emit("warning", json!({"code": code, "message": message}));
    }
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
        let ev = Events::to_writer(Box::new(buf.clone()), Format::Json);
        ev.emit("tunnel_up", json!({"name": "web", "url": "http://a.b"}));
        ev.error(ErrorCode::AuthFailed, "m", "h", true);
        ev.flush(std::time::Duration::from_secs(5));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["event"], "tunnel_up");
        assert_eq!(lines[0]["name"], "web");
        assert!(humantime::parse_rfc3339(lines[0]["ts"].as_str().unwrap()).is_ok());
        assert_eq!(lines[1]["code"], "auth_failed");
        assert_eq!(lines[1]["fatal"], true);
    }

    #[test]
    fn closed_stdout_is_not_fatal() {
        let ev = Events::to_writer(Box::new(Closed), Format::Json);
        ev.emit("starting", json!({}));
        ev.emit("stopped", json!({}));
        ev.flush(std::time::Duration::from_secs(5));
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
        let ev = Events::to_writer(Box::new(Stuck), Format::Json);
        let start = std::time::Instant::now();
        for i in 0..(QUEUE + 100) {
            ev.emit("status", json!({"i": i}));
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(ev.lock().dropped >= 99);
    }

    #[test]
    fn written_lines_leave_the_queue() {
        let out = Buf::default();
        let ev = Events::to_writer(Box::new(out.clone()), Format::Json);
        for round in 0..3 {
            for i in 0..QUEUE {
                ev.emit("status", json!({"round": round, "i": i}));
            }
            ev.flush(std::time::Duration::from_secs(10));
        }
        assert_eq!(ev.lock().dropped, 0, "a full queue's worth, written, must make room for the next");
        let lines = out.0.lock().unwrap().iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lines, 3 * QUEUE);
    }

    #[test]
    fn flush_returns_when_the_host_stops_reading() {
        let ev = Events::to_writer(Box::new(Stuck), Format::Json);
        for i in 0..(QUEUE + 10) {
            ev.emit("status", json!({"i": i}));
        }
        let start = std::time::Instant::now();
        ev.flush(std::time::Duration::from_millis(100));
        ev.emit("status", json!({"after": "flush"}));
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
}
