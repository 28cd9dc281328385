//! The burrow binary under test, its event stream checked against the schema, and its process.

use super::*;

/// The burrow binary under test, with its stdout events collected.
pub struct Burrow {
    pub child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<String>>,
    stdin: Option<tokio::process::ChildStdin>,
    pub env: Vec<(String, String)>,
}

impl Burrow {
    pub fn spawn(env: &[(&str, &str)]) -> Burrow {
        Self::spawn_with_args(env, &[])
    }

    pub fn spawn_with_args(env: &[(&str, &str)], args: &[&str]) -> Burrow {
        Self::spawn_exe(Path::new(env!("CARGO_BIN_EXE_burrow")), env, args)
    }

    pub fn spawn_exe(exe: &Path, env: &[(&str, &str)], args: &[&str]) -> Burrow {
        let mut cmd = Command::new(exe);
        cmd.args(args);
        cmd.env_clear();
        for k in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("BURROW_LOG", "debug");
        // Never the default 127.0.0.1:8080: tests run in parallel.
        if !env.iter().any(|(k, _)| *k == "BURROW_PROXY_ADDR") {
            cmd.env("BURROW_PROXY_ADDR", format!("127.0.0.1:{}", free_port()));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn burrow");
        let events = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let (ev, rw) = (events.clone(), raw.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                rw.lock().unwrap().push_str(&format!("{line}\n"));
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                assert!(v.get("event").is_some() && v.get("ts").is_some(), "event without event/ts: {line}");
                ev.lock().unwrap().push(v);
            }
        });
        let err = child.stderr.take().unwrap();
        let rw = raw.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                rw.lock().unwrap().push_str(&format!("[stderr] {line}\n"));
            }
        });
        let stdin = child.stdin.take();
        Burrow { child, events, raw, stdin, env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Everything burrow wrote on stdout and stderr so far.
    pub fn output(&self) -> String {
        self.raw.lock().unwrap().clone()
    }

    pub fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    /// Waits for the `nth` (0-based) event named `event`.
    pub async fn wait_nth(&self, event: &str, nth: usize, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.events().into_iter().filter(|e| e["event"] == event).nth(nth) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {event:?} #{nth} within {within:?}; output so far:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait(&self, event: &str, within: Duration) -> Value {
        self.wait_nth(event, 0, within).await
    }

    pub async fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes()).await;
    }

    /// Writes raw bytes to burrow's stdin.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let s = self.stdin.as_mut().expect("stdin open");
        s.write_all(bytes).await.unwrap();
        s.flush().await.unwrap();
    }

    /// Closes stdin (the host going away) and waits for the exit code.
    pub async fn close_stdin_and_wait(&mut self, within: Duration) -> i32 {
        self.stdin = None;
        self.wait_exit(within).await
    }

    pub async fn wait_exit(&mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("burrow did not exit within {within:?}; output:\n{}", self.output()))
            .unwrap();
        // Give the stdout reader a moment to drain the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status.code().unwrap_or(-1)
    }

    /// Asserts that no secret appears anywhere in burrow's output.
    pub fn assert_no_secret(&self, secrets: &[&str]) {
        let out = self.output();
        for s in secrets {
            assert!(!out.contains(s), "secret {s:?} leaked into burrow's output:\n{out}");
        }
    }
}

impl Drop for Burrow {
    /// Every test, whatever it checks, also checks that the secrets it gave burrow (frp token, API
    /// token, secrets in its config file) never appeared on burrow's stdout or stderr.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let mut secrets: Vec<String> = self
            .env
            .iter()
            .filter(|(k, v)| {
                let secret = ["_TOKEN", "_PASSWORD", "_AUTH", "_KEY"].iter().any(|s| k.ends_with(s));
                secret && v.len() >= 6
            })
            .map(|(_, v)| v.clone())
            .collect();
        // And the password of `user:password` on its own.
        if let Some((_, auth)) = self.env.iter().find(|(k, _)| k == "BURROW_PUBLIC_AUTH") {
            secrets.extend(auth.split_once(':').map(|(_, p)| p.to_string()).filter(|p| p.len() >= 6));
        }
        if let Some((_, cfg)) = self.env.iter().find(|(k, _)| k == "BURROW_CONFIG") {
            let text = std::fs::read_to_string(cfg).unwrap_or_default();
            for l in text.lines().filter(|l| l.contains("token") || l.contains("assword")) {
                if let Some(v) =
                    l.split('=').nth(1).map(|v| v.trim().trim_matches('"').to_string()).filter(|v| v.len() >= 6)
                {
                    secrets.push(v);
                }
            }
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        self.assert_no_secret(&refs);
        // A panic in any task is a bug even when the process survives it.
        assert!(!self.output().contains("panicked at"), "burrow panicked:\n{}", self.output());
        // And every event it printed follows the published schema.
        for e in self.events() {
            if let Err(why) = validate_event(&e) {
                panic!("event does not match resources/events.schema.json: {why}\n{e}");
            }
        }
    }
}

/// Checks one event against resources/events.schema.json.
pub fn validate_event(e: &Value) -> Result<(), String> {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = V.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/events.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    });
    if v.is_valid(e) {
        Ok(())
    } else {
        Err(v.iter_errors(e).map(|err| err.to_string()).collect::<Vec<_>>().join("; "))
    }
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
