//! The binary's outward contract: configuration errors, version, exit codes.

use std::time::Duration;

use crate::util::*;

#[tokio::test]
async fn bad_values_exit_2_naming_the_variable() {
    let base = [
        ("BURROW_SERVER_ADDR", "127.0.0.1:7000"),
        ("BURROW_SERVER_TOKEN", "tok-secret-91"),
        ("BURROW_SUBDOMAIN", "app"),
    ];
    let cases: &[(&str, &str)] = &[
        ("BURROW_SERVER_ADDR", "no-port"),
        ("BURROW_SERVER_ADDR", "host:99999"),
        ("BURROW_TLS", "sometimes"),
        ("BURROW_TCP_MUX", "yes please"),
        ("BURROW_TLS_PIN", "xyz"),
        ("BURROW_TLS_CA", "/does/not/exist.pem"),
        ("BURROW_SUBDOMAIN", "has space"),
        ("BURROW_PROXY_ADDR", "nowhere"),
        ("BURROW_CONFIG", "/does/not/exist.toml"),
        ("BURROW_MODE", "sideways"),
        ("BURROW_ROUTES", "/api=ftp://127.0.0.1:8000"),
        ("BURROW_ROUTES", "/=http://127.0.0.1:0"),
        ("BURROW_UPSTREAM_TIMEOUT", "-5"),
        ("BURROW_LOG", "burrow=[[["),
        ("BURROW_TLS_SERVER_NAME", "bad name/x"),
        ("BURROW_ADMIN_ADDR", "somewhere"),
        ("BURROW_ADMIN_TOKEN", "short"),
        ("BURROW_PUBLIC_ACCESS", "sometimes"),
        ("BURROW_PUBLIC_AUTH", "no-colon-secret-5521"),
        ("BURROW_SHARE_KEY", "short-secret"),
        // Long enough, but eight distinct characters at least.
        ("BURROW_SHARE_KEY", "abababababababababababababababab-key"),
        ("BURROW_PUBLIC_AUTH", "ann:seven77"),
        ("BURROW_SHARE_GENERATION", "-1"),
    ];
    for (k, v) in cases {
        let mut env: Vec<(&str, &str)> = base.iter().copied().filter(|(bk, _)| bk != k).collect();
        env.push((k, v));
        let mut b = Burrow::spawn(&env);
        assert_eq!(b.wait_exit(Duration::from_secs(5)).await, 2, "{k}={v}");
        let out = b.output();
        let stderr_line = out
            .lines()
            .find(|l| l.starts_with("[stderr] burrow:"))
            .unwrap_or_else(|| panic!("no message for {k}: {out}"));
        assert!(stderr_line.contains(k) && stderr_line.contains("Example:"), "{stderr_line}");
        let evs = b.events();
        assert_eq!(evs[0]["code"], "config_invalid");
        // The bad value is named too (contract §2), but never a secret's.
        let message = evs[0]["message"].as_str().unwrap();
        if k.ends_with("_TOKEN") || *k == "BURROW_PUBLIC_AUTH" || *k == "BURROW_SHARE_KEY" {
            assert!(!message.contains(v), "{k}'s value in {message}");
        } else {
            assert!(message.contains(v), "{k}={v} not named in {message}");
        }
        assert_eq!(evs.last().unwrap()["event"], "stopped");
        b.assert_no_secret(&["tok-secret-91"]);
    }
}

#[tokio::test]
async fn access_control_that_would_protect_nothing_is_refused() {
    let base = [
        ("BURROW_SERVER_ADDR", "127.0.0.1:7000"),
        ("BURROW_SERVER_TOKEN", "tok-secret-91"),
        ("BURROW_SUBDOMAIN", "app"),
    ];
    let dir = tempdir::TempDir::new();
    let direct = write_file(
        dir.path(),
        "frpc.toml",
        "[[proxies]]\nname = \"web\"\ntype = \"http\"\nsubdomain = \"w\"\nlocalPort = 3000\n",
    );
    let direct = direct.display().to_string();
    let health = write_file(dir.path(), "health.toml", "[[proxies]]\nname = \"web\"\ntype = \"http\"\nsubdomain = \"w\"\nlocalPort = 18480\nhealthCheck.type = \"http\"\nhealthCheck.path = \"/\"\n");
    let health = health.display().to_string();
    let cases: &[(&[(&str, &str)], &str)] = &[
        // frpc's http health checks would be refused, and frpc would take the tunnel down.
        (
            &[
                ("BURROW_CONFIG", &health),
                ("BURROW_PROXY_ADDR", "127.0.0.1:18480"),
                ("BURROW_PUBLIC_ACCESS", "protected"),
            ],
            "healthCheck.type = \"http\"",
        ),
        // A password while the URL stays open to anyone.
        (&[("BURROW_PUBLIC_AUTH", "ann:pw-secret-61")], "BURROW_PUBLIC_ACCESS=protected"),
        // A tunnel that does not go through the proxy, which is what enforces it.
        (
            &[("BURROW_PUBLIC_ACCESS", "protected"), ("BURROW_CONFIG", &direct)],
            "web (http) goes to 127.0.0.1:3000, not through",
        ),
    ];
    for (env, why) in cases {
        let mut all: Vec<(&str, &str)> = base.to_vec();
        all.extend_from_slice(env);
        let mut b = Burrow::spawn(&all);
        assert_eq!(b.wait_exit(Duration::from_secs(5)).await, 2, "{env:?}");
        let e = &b.events()[0];
        assert_eq!(e["code"], "config_invalid", "{e}");
        assert!(e["message"].as_str().unwrap().contains(why), "{e}");
        b.assert_no_secret(&["pw-secret-61"]);
    }
}

#[tokio::test]
async fn bad_config_file_names_the_key() {
    let dir = tempdir::TempDir::new();
    let f = write_file(dir.path(), "frpc.toml", "serverAddr = \"127.0.0.1\"\nauth.token = \"file-secret-77\"\n[[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = 80\nsubdomian = \"typo\"\n");
    let mut b = Burrow::spawn(&[("BURROW_CONFIG", f.to_str().unwrap())]);
    assert_eq!(b.wait_exit(Duration::from_secs(5)).await, 2);
    assert!(b.output().contains("subdomian"), "{}", b.output());
    b.assert_no_secret(&["file-secret-77"]);
}

#[test]
fn version_prints_name_and_version_first() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_burrow")).arg("version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().next().unwrap(), format!("burrow {}", env!("CARGO_PKG_VERSION")));
    assert!(text.contains("v1"));
}

#[test]
fn unknown_flag_is_usage_error_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_burrow")).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn demo_serves_the_public_url_and_stops_everything_on_ctrl_c() {
    use tokio::io::AsyncBufReadExt;
    let dir = frp_dir();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(["demo", "--frp-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut verified = None;
    let fetched = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.trim_start().starts_with("url_verified:") {
                verified = Some(l);
            } else if l.starts_with("4/4") {
                return l;
            }
        }
        panic!("demo ended before fetching the URL");
    })
    .await
    .expect("demo fetched its public URL within 30 s");
    assert!(fetched.contains("HTTP 200") && fetched.contains("through burrow"), "{fetched}");
    let verified = verified.expect("the demo verified its URL before fetching it");
    assert!(
        verified.contains("http://demo.burrow.localhost:") && verified.contains("reached this burrow"),
        "{verified}"
    );
    // The frps it started is a child of the demo.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let frps_pid: u32 = children.split_whitespace().next().expect("frps runs as the demo's child").parse().unwrap();
    assert!(std::fs::read_to_string(format!("/proc/{frps_pid}/cmdline")).unwrap().contains("frps"));
    std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = !std::path::Path::new(&format!("/proc/{frps_pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{frps_pid}/stat")).unwrap_or_default().contains(") Z ");
    assert!(gone, "frps {frps_pid} outlived the demo");
}

#[tokio::test]
async fn api_variables_are_validated_too() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("BURROW_API_URL", "ftp://api.example.com"), ("BURROW_USER_ID", "u"), ("BURROW_PROJECT_ID", "p")],
            "BURROW_API_URL",
        ),
        (&[("BURROW_API_URL", "not a url"), ("BURROW_USER_ID", "u"), ("BURROW_PROJECT_ID", "p")], "BURROW_API_URL"),
        (&[("BURROW_API_URL", "https://api.example.com"), ("BURROW_PROJECT_ID", "p")], "BURROW_USER_ID"),
        (&[("BURROW_API_URL", "https://api.example.com"), ("BURROW_USER_ID", "u")], "BURROW_PROJECT_ID"),
        (
            &[
                ("BURROW_API_URL", "https://api.example.com"),
                ("BURROW_USER_ID", "u"),
                ("BURROW_PROJECT_ID", "p"),
                ("BURROW_SERVER_ADDR", "h:1"),
            ],
            "BURROW_SERVER_ADDR",
        ),
    ];
    for (env, var) in cases {
        let mut env = env.to_vec();
        env.push(("BURROW_API_TOKEN", "api-secret-3f9"));
        let mut b = Burrow::spawn(&env);
        assert_eq!(b.wait_exit(Duration::from_secs(5)).await, 2, "{env:?}");
        let line = b.output().lines().find(|l| l.starts_with("[stderr] burrow:")).map(String::from).unwrap_or_default();
        assert!(line.contains(var), "{env:?}: {line}");
        b.assert_no_secret(&["api-secret-3f9"]);
    }
}

#[tokio::test]
async fn check_reports_and_exits_by_outcome() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let frpc = bundled_frpc();
    let run = |server: String, json: bool| {
        let frpc = frpc.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_burrow"));
            cmd.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("BURROW_SERVER_ADDR", server)
                .env("BURROW_SERVER_TOKEN", "check-secret-1")
                .env("BURROW_SUBDOMAIN", "c")
                .env("BURROW_PROXY_ADDR", format!("127.0.0.1:{}", free_port()))
                .env("BURROW_FRPC_PATH", frpc)
                .arg("check");
            if json {
                cmd.arg("--json");
            }
            let out = cmd.output().await.unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let (code, text) = run(frps.addr(), false).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("frpc 0.70.1") && text.contains("handshake succeeded") && text.contains("not verified"),
        "{text}"
    );
    assert!(!text.contains("check-secret-1"));
    let (code, text) = run(format!("127.0.0.1:{}", free_port()), true).await;
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!(v["ok"], false);
    let server = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == "server").unwrap();
    assert_eq!(server["ok"], false);
    assert_eq!(v["config"]["token"], "***");
    // A configuration that does not load is reported in the same shape.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(["check", "--json"])
        .env_clear()
        .env("BURROW_SERVER_ADDR", "127.0.0.1:9")
        .env("BURROW_MODE", "sideways")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!((v["ok"].as_bool(), v["config"].is_null()), (Some(false), true), "{v}");
    let only = &v["checks"][0];
    assert_eq!((only["name"].as_str(), only["ok"].as_bool()), (Some("configuration"), Some(false)), "{v}");
    assert!(only["detail"].as_str().unwrap().contains("BURROW_MODE"), "{v}");
}

#[tokio::test]
async fn a_bad_mode_flag_is_exit_2_with_stopped_last() {
    let mut b = Burrow::spawn_with_args(
        &[("BURROW_SERVER_ADDR", "127.0.0.1:9"), ("BURROW_SUBDOMAIN", "x")],
        &["--mode", "sideways"],
    );
    assert_eq!(b.wait_exit(Duration::from_secs(5)).await, 2);
    let evs = b.events();
    assert_eq!(evs[0]["code"], "config_invalid");
    assert_eq!(evs.last().unwrap()["event"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burrow_log_sets_the_stderr_level() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    let routes = format!("/=http://{}", up.addr);
    let server = frps.addr();
    let base = [
        ("BURROW_SERVER_ADDR", server.as_str()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "logs"),
        ("BURROW_ROUTES", routes.as_str()),
    ];
    let debug_lines = |b: &Burrow| b.output().lines().filter(|l| l.contains(" DEBUG ")).count();
    for (level, debug_expected) in [("debug", true), ("info", false), ("warn, yamux=debug", true)] {
        let mut env = base.to_vec();
        env.push(("BURROW_LOG", level));
        let mut b = Burrow::spawn(&env);
        b.wait("tunnel_up", Duration::from_secs(15)).await;
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
        assert_eq!(debug_lines(&b) > 0, debug_expected, "BURROW_LOG={level}:\n{}", b.output());
        if level == "info" {
            assert!(b.output().contains(" INFO "), "{}", b.output());
        }
    }
}
