//! The host's controls: commands from stdin (and the admin API) and what they do.
//!
//! `start` and `stop` switch the tunnels (the proxy stays up), `status` answers with a `status`
//! event, `reconnect` drops the current attempt or backoff wait and connects now — for a laptop
//! waking from sleep — and `shutdown`, like the end of stdin or SIGINT/SIGTERM, stops burrow.
//! `share` mints a share link for the public URL, `revoke_shares` kills all links handed out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::events::{ErrorCode, Event, Reporter};
use crate::lines::{Line, LineReader};
use crate::proxy::access::{Mode, MAX_TTL, SHARE_PARAM};
use crate::proxy::Proxy;
use crate::status::TunnelState;

/// The longest command line read from stdin.
const MAX_LINE: usize = 64 * 1024;

/// A command from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Bring the tunnels up.
    Start,
    /// Take the tunnels down; the proxy stays.
    Stop,
    /// Answer with a `status` event.
    Status,
    /// Stop burrow.
    Shutdown,
    /// Connect again now, with the backoff reset.
    Reconnect,
    /// Answer with a `share_link` event.
    Share(ShareRequest),
    /// Kill every share link handed out so far.
    RevokeShares,
}

/// What `share` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareRequest {
    /// How long the link lives.
    pub ttl: Duration,
    /// GET and HEAD only.
    pub read_only: bool,
}

impl ShareRequest {
    /// Reads `ttl_s` (default one hour) and `read_only` (default false) off a command or an
    /// admin API body.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let ttl_s = match v.get("ttl_s") {
            None | Some(serde_json::Value::Null) => 3600,
            Some(t) => t
                .as_u64()
                .filter(|t| (1..=MAX_TTL.as_secs()).contains(t))
                .ok_or(format!("\"ttl_s\" must be whole seconds from 1 to {}", MAX_TTL.as_secs()))?,
        };
        let read_only = match v.get("read_only") {
            None | Some(serde_json::Value::Null) => false,
            Some(b) => b.as_bool().ok_or("\"read_only\" must be true or false")?,
        };
        Ok(Self { ttl: Duration::from_secs(ttl_s), read_only })
    }
}

/// The commands, for error messages.
pub const COMMANDS: &str = r#"{"cmd":"start"}, {"cmd":"stop"}, {"cmd":"status"}, {"cmd":"reconnect"}, {"cmd":"share","ttl_s":3600,"read_only":false}, {"cmd":"revoke_shares"}, {"cmd":"shutdown"}"#;

/// Parses one stdin line: a JSON object with a `cmd` string.
pub fn parse_command(line: &str) -> Result<Command, String> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("stdin line is not JSON ({e}); send one JSON object per line"))?;
    let cmd = v.get("cmd").and_then(|c| c.as_str()).ok_or("the JSON object has no \"cmd\" string")?;
    match cmd {
        "start" => Ok(Command::Start),
        "stop" => Ok(Command::Stop),
        "status" => Ok(Command::Status),
        "shutdown" => Ok(Command::Shutdown),
        "reconnect" => Ok(Command::Reconnect),
        "share" => ShareRequest::from_json(&v).map(Command::Share),
        "revoke_shares" => Ok(Command::RevokeShares),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// What one stdin line (any bytes, without its newline) asks for; `Ok(None)` for a blank line.
pub fn command_of(line: &[u8]) -> Result<Option<Command>, String> {
    let text =
        std::str::from_utf8(line).map_err(|_| "stdin line is not UTF-8; send one JSON object per line".to_string())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_command(text).map(Some)
}

/// Shared by everything that can control burrow.
#[derive(Clone)]
pub struct Controller {
    /// Cancelled when burrow is to stop.
    pub shutdown: CancellationToken,
    reason: Arc<Mutex<Option<&'static str>>>,
    wanted: Arc<watch::Sender<bool>>,
    /// Woken by `reconnect`.
    pub reconnect: Arc<Notify>,
    reporter: Reporter,
    /// The reverse proxy, whose access policy the share commands drive.
    proxy: Option<Arc<Proxy>>,
}

impl Controller {
    /// Tunnels wanted up from the start.
    pub fn new(reporter: Reporter, proxy: Option<Arc<Proxy>>) -> Self {
        Self {
            shutdown: CancellationToken::new(),
            reason: Arc::default(),
            wanted: Arc::new(watch::channel(true).0),
            reconnect: Arc::new(Notify::new()),
            reporter,
            proxy,
        }
    }

    /// Stops burrow; the first reason given wins.
    pub fn stop_burrow(&self, reason: &'static str) {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(reason);
        self.shutdown.cancel();
    }

    /// Why burrow is stopping.
    pub fn reason(&self) -> Option<&'static str> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the tunnels are wanted up, and changes to it.
    pub fn wanted(&self) -> watch::Receiver<bool> {
        self.wanted.subscribe()
    }

    /// Carries out a command.
    pub fn apply(&self, cmd: Command) {
        match cmd {
            Command::Start => {
                self.wanted.send_replace(true);
            }
            Command::Stop => {
                self.wanted.send_replace(false);
            }
            Command::Status => self.reporter.emit(self.reporter.status_event()),
            Command::Shutdown => self.stop_burrow("shutdown"),
            Command::Reconnect => self.reconnect.notify_one(),
            Command::Share(req) => {
                if let Err((message, hint)) = self.share(req) {
                    self.reporter.error(ErrorCode::ConfigInvalid, message, hint);
                }
            }
            Command::RevokeShares => {
                if let Err((message, hint)) = self.revoke_shares() {
                    self.reporter.error(ErrorCode::ConfigInvalid, message, hint);
                }
            }
        }
    }

    fn protected_proxy(&self) -> Result<&Proxy, (String, String)> {
        match &self.proxy {
            Some(p) if p.access().mode() == Mode::Protected => Ok(p),
            Some(_) => Err((
                "share links need a protected public URL; it is open to anyone now".into(),
                "set BURROW_PUBLIC_ACCESS=protected (and BURROW_PUBLIC_AUTH if you like) and start burrow again".into(),
            )),
            None => Err((
                "share links need burrow's reverse proxy, which is off".into(),
                "set BURROW_PROXY_ADDR (default 127.0.0.1:8080) and start burrow again".into(),
            )),
        }
    }

    /// Mints a share link for the first http tunnel that is up, and emits it.
    pub fn share(&self, req: ShareRequest) -> Result<(String, String), (String, String)> {
        let proxy = self.protected_proxy()?;
        let snapshot = self.reporter.status().snapshot();
        let Some(url) = snapshot
            .tunnels
            .iter()
            .filter(|t| t.kind == "http" && t.state == TunnelState::Up)
            .find_map(|t| t.url.clone())
        else {
            return Err((
                "no http tunnel is up with a public URL to share".into(),
                "wait for tunnel_up, then send share again".into(),
            ));
        };
        let Ok(mut link) = url::Url::parse(&url) else {
            return Err((format!("the public URL {url} cannot be parsed"), "report this as a bug".into()));
        };
        let site = crate::proxy::access::url_site(&link);
        let (token, expires) =
            proxy.access().mint(SystemTime::now(), req.ttl, req.read_only, link.scheme() == "https", &site);
        link.query_pairs_mut().append_pair(SHARE_PARAM, &token);
        let expires = humantime::format_rfc3339_seconds(expires).to_string();
        self.reporter.emit(Event::ShareLink { url: link.to_string(), expires: expires.clone() });
        Ok((link.to_string(), expires))
    }

    /// Moves to the next share generation, and emits it.
    pub fn revoke_shares(&self) -> Result<u64, (String, String)> {
        let generation = self.protected_proxy()?.access().revoke();
        self.reporter.emit(Event::SharesRevoked { generation });
        Ok(generation)
    }

    /// Reads commands from stdin until it ends; the end of stdin means the host is gone. A line
    /// that is not a command (not UTF-8, not JSON, too long) is answered and changes nothing.
    pub fn watch_stdin(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut lines = LineReader::new(tokio::io::BufReader::new(tokio::io::stdin()), MAX_LINE);
            loop {
                let bad = match lines.next().await {
                    Ok(Some(Line::Bytes(line))) => match command_of(line) {
                        Ok(Some(cmd)) => {
                            this.apply(cmd);
                            continue;
                        }
                        Ok(None) => continue,
                        Err(e) => e,
                    },
                    Ok(Some(Line::TooLong)) => {
                        format!("stdin line is longer than {} KiB; send one JSON object per line", MAX_LINE / 1024)
                    }
                    Ok(None) | Err(_) => {
                        this.stop_burrow("stdin_closed");
                        return;
                    }
                };
                this.reporter.error(ErrorCode::Internal, bad, format!("commands: {COMMANDS}"));
            }
        });
    }

    /// SIGINT and SIGTERM stop burrow cleanly.
    pub fn watch_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    tracing::warn!("cannot install signal handlers; stop burrow through stdin instead");
                    return;
                };
                tokio::select! {
                    _ = int.recv() => this.stop_burrow("signal"),
                    _ = term.recv() => this.stop_burrow("signal"),
                }
            }
            #[cfg(not(unix))]
            {
                if tokio::signal::ctrl_c().await.is_ok() {
                    this.stop_burrow("signal");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_lines_say_why() {
        assert_eq!(parse_command(r#"{"cmd":"start"}"#), Ok(Command::Start));
        assert_eq!(parse_command(r#"{"cmd":"reconnect","extra":1}"#), Ok(Command::Reconnect));
        assert_eq!(parse_command(r#" {"cmd":"shutdown"} "#), Ok(Command::Shutdown));
        let share = |ttl, read_only| Ok(Command::Share(ShareRequest { ttl: Duration::from_secs(ttl), read_only }));
        assert_eq!(parse_command(r#"{"cmd":"share","ttl_s":60,"read_only":true}"#), share(60, true));
        assert_eq!(parse_command(r#"{"cmd":"share"}"#), share(3600, false));
        assert_eq!(parse_command(r#"{"cmd":"revoke_shares"}"#), Ok(Command::RevokeShares));
        for (bad, why) in [
            (r#"{"cmd":"share","ttl_s":0}"#, "ttl_s"),
            (r#"{"cmd":"share","ttl_s":-5}"#, "ttl_s"),
            (r#"{"cmd":"share","ttl_s":"1h"}"#, "ttl_s"),
            (r#"{"cmd":"share","ttl_s":99999999999}"#, "ttl_s"),
            (r#"{"cmd":"share","read_only":"yes"}"#, "read_only"),
            ("start", "not JSON"),
            (r#"{"command":"x"}"#, "no \"cmd\""),
            (r#"{"cmd":5}"#, "no \"cmd\""),
            (r#"{"cmd":"fly"}"#, "unknown command"),
            ("[1]", "no \"cmd\""),
        ] {
            assert!(parse_command(bad).unwrap_err().contains(why), "{bad}");
        }
        assert_eq!(command_of(b" \t"), Ok(None));
        assert_eq!(command_of(br#"{"cmd":"status"}"#), Ok(Some(Command::Status)));
        assert!(command_of(b"\xff{\"cmd\":\"status\"}").unwrap_err().contains("not UTF-8"));
    }
}
