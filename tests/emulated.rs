//! burrow built for linux-arm64 (`aarch64-unknown-linux-gnu`, linked by Debian's cross gcc) run
//! under Debian's qemu-user against an x86_64 frps. `resources/arm64-smoke.sh` builds it and runs
//! this (`--ignored`: a plain `cargo test` makes no cross build).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(60);
const QEMU: &str = "/usr/bin/qemu-aarch64-static";
/// The arm64 C library qemu loads the binary's dynamic dependencies from.
const SYSROOT: &str = "/usr/aarch64-linux-gnu";

fn arm64_exe() -> PathBuf {
    let exe = std::env::var_os("BURROW_ARM64_EXE").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/aarch64-unknown-linux-gnu/release/burrow")
    });
    assert!(exe.exists(), "{} is missing: run resources/arm64-smoke.sh", exe.display());
    assert!(Path::new(QEMU).exists(), "{QEMU} is missing: apt-get install qemu-user-static");
    exe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs qemu-user and the arm64 build: resources/arm64-smoke.sh"]
async fn arm64_version_and_a_native_tunnel_under_emulation() {
    let exe = arm64_exe();
    let out = std::process::Command::new(QEMU)
        .arg(&exe)
        .arg("version")
        .env("QEMU_LD_PREFIX", SYSROOT)
        .output()
        .expect("qemu runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("burrow "), "{text}");

    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    let mut env = tunnel_env(&frps, "arm", "native", up.addr);
    env.push(("QEMU_LD_PREFIX".to_string(), SYSROOT.to_string()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut b = Burrow::spawn_exe(Path::new(QEMU), &pairs, &[exe.to_str().unwrap()]);
    let tunnel = b.wait("tunnel_up", T).await;
    assert_eq!(tunnel["mode"], "native", "{tunnel}");
    let host = format!("arm.{SUBDOMAIN_HOST}");
    assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/from-arm64", T).await, "hello /from-arm64");
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(15)).await, 0, "{}", b.output());
}
