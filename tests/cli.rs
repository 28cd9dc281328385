//! The binary's outward contract: configuration errors, version, exit codes.

mod common;

use std::time::Duration;

use common::*;

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
        assert_eq!(evs.last().unwrap()["event"], "stopped");
        b.assert_no_secret(&["tok-secret-91"]);
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
