//! The one supervisor: runs a backend (the native client or frpc) attempt after attempt, with one
//! backoff policy, and decides after each attempt — retry, stop, or fall back to frpc.
//!
//! A backend runs one attempt at a time (one control session, one frpc process) and says how it
//! ended; everything between attempts is here: `tunnel_down` for each tunnel still up, the
//! `error` (once per change of reason) and `reconnecting` events, the wait, the host's
//! `reconnect`, and `auto` mode's switch to frpc.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Mode;
use crate::events::{ErrorCode, Event, Fatal, Reporter};
use crate::status::{BackendKind, State, TunnelState};

/// One way of serving the tunnels.
pub trait Backend: Send {
    /// Which one it is.
    fn kind(&self) -> BackendKind;

    /// Runs one attempt until it fails or `stop` is cancelled (then it closes what it opened,
    /// gracefully, and returns [`Ended::stopped`]). Dropping the future abandons the attempt.
    fn attempt<'a>(&'a mut self, stop: &'a CancellationToken) -> Pin<Box<dyn Future<Output = Ended> + Send + 'a>>;
}

/// How an attempt ended.
#[derive(Debug)]
pub struct Ended {
    /// The attempt got as far as serving (logged in, frpc connected): the backoff starts over.
    pub progressed: bool,
    /// `None` when it was stopped on request.
    pub failure: Option<Failure>,
}

impl Ended {
    /// Stopped on request.
    pub fn stopped(progressed: bool) -> Self {
        Self { progressed, failure: None }
    }

    /// Failed.
    pub fn failed(progressed: bool, failure: Failure) -> Self {
        Self { progressed, failure: Some(failure) }
    }
}

/// What to do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after the backoff.
    Retry,
    /// The transport came up but the frp exchange failed: the server may speak something the
    /// native client does not. Retried; two in a row, with no progress, switch `auto` to frpc.
    Incompatible,
    /// Retrying cannot help (rejected credentials, an unusable configuration): burrow stops.
    Fatal,
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The contract's error code.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
    /// What the user can do about it.
    pub hint: String,
    /// What to do about it.
    pub verdict: Verdict,
}

impl Failure {
    fn into_fatal(self) -> Fatal {
        Fatal { code: self.code, message: self.message, hint: self.hint }
    }
}

/// For this long after a session that served ended, retries come at most [`RECOVERY_CAP`] apart:
/// a laptop back from sleep or on a new network gets its URL back in seconds, not after a 20 s
/// wait grown while the network was gone.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(120);
/// The longest wait between retries inside [`RECOVERY_WINDOW`].
pub const RECOVERY_CAP: Duration = Duration::from_secs(2);

/// Capped exponential backoff with ±10% jitter: 0.5 s, 1 s, 2 s, … 20 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16)).min(20_000);
    let jitter = rand::random::<f64>() * 0.2 - 0.1;
    Duration::from_millis((base as f64 * (1.0 + jitter)) as u64)
}

/// Makes the frpc backend (it finds frpc and writes its configuration), when it is needed.
pub type MakeBackend =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Box<dyn Backend>, Fatal>> + Send>> + Send>;

/// Keeps one backend running; in `auto` mode, replaces the native client with frpc for good when
/// the server turns out not to speak the native client's protocol.
pub struct Supervisor {
    backend: Box<dyn Backend>,
    fallback: Option<MakeBackend>,
    reporter: Reporter,
    reconnect: Arc<Notify>,
}

impl Supervisor {
    /// Chooses the backend as the mode and the configuration say — the fallback rule's first half:
    /// `frpc` mode, or `auto` with a configuration the native client cannot serve (`native_gap`),
    /// starts on frpc; otherwise the native client, which `auto` may later swap for frpc unless the
    /// server's certificate is pinned (frpc cannot check a pin).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        mode: Mode,
        native_gap: Option<&str>,
        pinned: bool,
        native: impl FnOnce() -> Result<Box<dyn Backend>, Fatal>,
        frpc: MakeBackend,
        reporter: Reporter,
        reconnect: Arc<Notify>,
    ) -> Result<Self, Fatal> {
        let on_frpc = match mode {
            Mode::Frpc => true,
            Mode::Native => false,
            Mode::Auto => native_gap.is_some(),
        };
        if on_frpc {
            if let (Mode::Auto, Some(gap)) = (mode, native_gap) {
                let reason = format!("the configuration needs frpc: {gap}");
                reporter.emit(Event::Fallback { from: BackendKind::Native, to: BackendKind::Frpc, reason });
            }
            return Ok(Self::new(frpc().await?, None, reporter, reconnect));
        }
        let fallback = (mode == Mode::Auto && !pinned).then_some(frpc);
        Ok(Self::new(native()?, fallback, reporter, reconnect))
    }

    /// Supervises `backend`; `fallback`, when given, makes frpc for `auto` mode.
    pub fn new(
        backend: Box<dyn Backend>,
        fallback: Option<MakeBackend>,
        reporter: Reporter,
        reconnect: Arc<Notify>,
    ) -> Self {
        reporter.status().set_mode(backend.kind());
        Self { backend, fallback, reporter, reconnect }
    }

    /// Runs until `stop` is cancelled (`Ok`) or a failure retrying cannot fix.
    pub async fn run(&mut self, stop: &CancellationToken) -> Result<(), Fatal> {
        let reporter = self.reporter.clone();
        let mut failures: u32 = 0;
        let mut last_error: Option<String> = None;
        let mut incompatible = 0u32;
        // When the last session that served ended.
        let mut served_until: Option<tokio::time::Instant> = None;
        loop {
            reporter.set_state(State::Connecting);
            let ended = tokio::select! {
                e = self.backend.attempt(stop) => Some(e),
                // The host says the network changed (wake from sleep): the attempt may be dead
                // without knowing it; start over at once.
                _ = self.reconnect.notified() => None,
            };
            let Some(ended) = ended else {
                self.all_down("reconnect requested");
                failures = 0;
                last_error = None;
                incompatible = 0;
                reporter.emit(Event::Reconnecting { attempt: 1, delay_ms: 0, reason: "reconnect requested".into() });
                continue;
            };
            let Some(failure) = ended.failure else {
                self.all_down("shutdown");
                return Ok(());
            };
            self.all_down(&failure.message);
            if failure.verdict == Verdict::Fatal {
                return Err(failure.into_fatal());
            }
            // "Twice in a row" counts attempts that never logged in: one that did proves the
            // server speaks the protocol, whatever ended it later.
            incompatible =
                if failure.verdict == Verdict::Incompatible && !ended.progressed { incompatible + 1 } else { 0 };
            if incompatible >= 2 {
                if let Some(make) = self.fallback.take() {
                    let reason = format!("the server does not speak the native client's protocol: {}", failure.message);
                    reporter.emit(Event::Fallback { from: self.backend.kind(), to: BackendKind::Frpc, reason });
                    self.backend = make().await?;
                    (failures, incompatible, last_error) = (0, 0, None);
                    continue;
                }
            }
            if ended.progressed {
                failures = 0;
                last_error = None;
                served_until = Some(tokio::time::Instant::now());
            }
            failures += 1;
            // Say what is wrong once per change, not once per attempt.
            if last_error.as_deref() != Some(&failure.message) {
                reporter.error(failure.code, failure.message.clone(), failure.hint.clone());
                last_error = Some(failure.message.clone());
            }
            let recovering = served_until.is_some_and(|t| t.elapsed() < RECOVERY_WINDOW);
            let delay = if recovering { backoff(failures).min(RECOVERY_CAP) } else { backoff(failures) };
            tracing::info!("{} ({}); trying again in {} ms", failure.message, self.backend_name(), delay.as_millis());
            reporter.emit(Event::Reconnecting {
                attempt: failures,
                delay_ms: delay.as_millis() as u64,
                reason: failure.message,
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.reconnect.notified() => failures = 0,
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    fn backend_name(&self) -> &'static str {
        match self.backend.kind() {
            BackendKind::Native => "native client",
            BackendKind::Frpc => "frpc",
        }
    }

    /// `tunnel_down` for every tunnel the status board shows up.
    fn all_down(&self, reason: &str) {
        for t in self.reporter.status().snapshot().tunnels {
            if t.state == TunnelState::Up {
                self.reporter.emit(Event::TunnelDown { name: t.name, reason: reason.to_string() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A backend whose attempts end as scripted; past the script, an attempt serves until stopped.
    struct Scripted {
        kind: BackendKind,
        script: VecDeque<Ended>,
        attempts: Arc<std::sync::atomic::AtomicU32>,
    }

    impl Backend for Scripted {
        fn kind(&self) -> BackendKind {
            self.kind
        }
        fn attempt<'a>(&'a mut self, stop: &'a CancellationToken) -> Pin<Box<dyn Future<Output = Ended> + Send + 'a>> {
            self.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = self.script.pop_front();
            Box::pin(async move {
                match next {
                    Some(e) => e,
                    None => {
                        stop.cancelled().await;
                        Ended::stopped(true)
                    }
                }
            })
        }
    }

    fn failed(progressed: bool, verdict: Verdict, message: &str) -> Ended {
        let failure = Failure { code: ErrorCode::ProtocolError, message: message.into(), hint: "h".into(), verdict };
        Ended::failed(progressed, failure)
    }

    fn scripted(kind: BackendKind, script: impl IntoIterator<Item = Ended>) -> Box<Scripted> {
        Box::new(Scripted { kind, script: script.into_iter().collect(), attempts: Arc::default() })
    }

    fn frpc_maker(made: Arc<std::sync::atomic::AtomicBool>) -> MakeBackend {
        Box::new(move || {
            made.store(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(scripted(BackendKind::Frpc, []) as Box<dyn Backend>) })
        })
    }

    /// Runs the supervisor until its scripted attempts are used up (the next one serves), then
    /// stops it; returns its result and every event it emitted.
    async fn run(
        mut sup: Supervisor,
        reporter: &Reporter,
        settle: Duration,
    ) -> (Result<(), Fatal>, Vec<serde_json::Value>) {
        let mut rx = reporter.subscribe();
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(settle).await;
                stop.cancel();
            })
        };
        let r = sup.run(&stop).await;
        stopper.abort();
        let mut events = Vec::new();
        while let Ok(line) = rx.try_recv() {
            events.push(serde_json::from_str(&line).unwrap());
        }
        (r, events)
    }

    fn named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
        events.iter().filter(|e| e["event"] == name).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_failure_stops_at_once() {
        let reporter = Reporter::silent();
        let backend = scripted(BackendKind::Native, [failed(false, Verdict::Fatal, "token")]);
        let sup = Supervisor::new(backend, None, reporter.clone(), Arc::default());
        let (r, events) = run(sup, &reporter, Duration::from_secs(600)).await;
        assert_eq!(r.unwrap_err().message, "token");
        assert!(named(&events, "reconnecting").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn two_incompatible_attempts_in_a_row_fall_back_to_frpc() {
        let reporter = Reporter::silent();
        let made = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let backend = scripted(
            BackendKind::Native,
            [failed(false, Verdict::Incompatible, "closed"), failed(false, Verdict::Incompatible, "closed")],
        );
        let sup = Supervisor::new(backend, Some(frpc_maker(made.clone())), reporter.clone(), Arc::default());
        let (r, events) = run(sup, &reporter, Duration::from_secs(600)).await;
        assert!(r.is_ok());
        assert!(made.load(std::sync::atomic::Ordering::SeqCst));
        let fb = named(&events, "fallback");
        assert_eq!(fb.len(), 1);
        assert_eq!(fb[0]["to"], "frpc");
        assert_eq!(reporter.status().snapshot().mode, BackendKind::Frpc);
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_between_incompatible_attempts_or_no_fallback_keeps_retrying() {
        for (script, fallback) in [
            // The middle attempt logged in: the server speaks the protocol.
            (
                vec![
                    failed(false, Verdict::Incompatible, "a"),
                    failed(true, Verdict::Incompatible, "b"),
                    failed(false, Verdict::Incompatible, "c"),
                ],
                true,
            ),
            // A pinned configuration, or native mode: no fallback at all.
            (vec![failed(false, Verdict::Incompatible, "a"), failed(false, Verdict::Incompatible, "b")], false),
            // Plain network failures never fall back.
            (vec![failed(false, Verdict::Retry, "a"), failed(false, Verdict::Retry, "b")], true),
        ] {
            let reporter = Reporter::silent();
            let made = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let backend = scripted(BackendKind::Native, script);
            let sup =
                Supervisor::new(backend, fallback.then(|| frpc_maker(made.clone())), reporter.clone(), Arc::default());
            let (r, events) = run(sup, &reporter, Duration::from_secs(600)).await;
            assert!(r.is_ok());
            assert!(!made.load(std::sync::atomic::Ordering::SeqCst));
            assert!(named(&events, "fallback").is_empty());
            assert!(!named(&events, "reconnecting").is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_starts_over_after_progress_and_errors_are_said_once_per_change() {
        let reporter = Reporter::silent();
        let backend = scripted(
            BackendKind::Native,
            [
                failed(false, Verdict::Retry, "down"),
                failed(false, Verdict::Retry, "down"),
                failed(true, Verdict::Retry, "lost"),
                failed(false, Verdict::Retry, "lost"),
            ],
        );
        let sup = Supervisor::new(backend, None, reporter.clone(), Arc::default());
        let (_, events) = run(sup, &reporter, Duration::from_secs(600)).await;
        let attempts: Vec<u64> =
            named(&events, "reconnecting").iter().map(|e| e["attempt"].as_u64().unwrap()).collect();
        assert_eq!(attempts, [1, 2, 1, 2]);
        let errors: Vec<&str> = named(&events, "error").iter().map(|e| e["message"].as_str().unwrap()).collect();
        assert_eq!(errors, ["down", "lost"]);
        assert!(named(&events, "error").iter().all(|e| e["fatal"] == false));
        let delays: Vec<u64> = named(&events, "reconnecting").iter().map(|e| e["delay_ms"].as_u64().unwrap()).collect();
        assert!(delays[0] < 600 && delays[1] > 800 && delays[2] < 600, "{delays:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_close_for_two_minutes_after_a_session_that_served() {
        let reporter = Reporter::silent();
        let mut script = vec![failed(true, Verdict::Retry, "lost")];
        script.extend((0..70).map(|_| failed(false, Verdict::Retry, "down")));
        let backend = scripted(BackendKind::Native, script);
        let sup = Supervisor::new(backend, None, reporter.clone(), Arc::default());
        let (_, events) = run(sup, &reporter, Duration::from_secs(1200)).await;
        let delays: Vec<u64> = named(&events, "reconnecting").iter().map(|e| e["delay_ms"].as_u64().unwrap()).collect();
        // Within the window: never more than RECOVERY_CAP apart, however many attempts failed.
        let mut waited = 0;
        let (inside, after): (Vec<u64>, Vec<u64>) = delays.iter().partition(|&&d| {
            waited += d;
            waited - d < RECOVERY_WINDOW.as_millis() as u64
        });
        assert!(inside.len() > 50 && inside.iter().all(|&d| d <= RECOVERY_CAP.as_millis() as u64), "{inside:?}");
        // Past it, the backoff has grown as usual.
        assert!(after.iter().all(|&d| d > 15_000), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_takes_tunnels_down_first_and_skips_the_wait() {
        let reporter = Reporter::silent();
        reporter.status().set_tunnels([("web".to_string(), "http")]);
        reporter.emit(Event::TunnelUp(crate::events::TunnelUp {
            name: "web".into(),
            kind: "http".into(),
            addr: crate::events::PublicAddr::Url { url: None },
            mode: BackendKind::Native,
            reservation_id: None,
        }));
        let reconnect = Arc::new(Notify::new());
        let backend = scripted(BackendKind::Native, []);
        let attempts = backend.attempts.clone();
        let sup = Supervisor::new(backend, None, reporter.clone(), reconnect.clone());
        let poke = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            reconnect.notify_one();
        });
        let (r, events) = run(sup, &reporter, Duration::from_secs(5)).await;
        poke.await.unwrap();
        assert!(r.is_ok());
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(names, ["tunnel_down", "reconnecting"]);
        assert_eq!(events[1]["delay_ms"], 0);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let ms = |a| backoff(a).as_millis() as u64;
        assert!((450..=550).contains(&ms(1)));
        assert!((900..=1100).contains(&ms(2)));
        assert!((3600..=4400).contains(&ms(4)));
        for a in [7, 10, 50, u32::MAX] {
            assert!((18_000..=22_000).contains(&ms(a)), "{a}");
        }
    }
}
