//! The Windows build (`x86_64-pc-windows-gnu`) run under Debian's Wine against a Linux frps.
//! `resources/windows-smoke.sh` builds burrow.exe and frpc.exe and runs these (`--ignored`: they
//! need Wine and the cross builds, which a plain `cargo test` does not make).
//!
//! Rust's std and Go's runtime (frpc) import `ProcessPrng` from bcryptprimitives.dll, which Wine 8
//! lacks: each run builds a stand-in from a few lines of C with mingw-w64 and puts it beside a copy
//! of burrow.exe and in the test prefix's System32 (where Go looks). It is for these tests only and
//! never shipped; real Windows (10 and later) has the DLL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(60);
const WINE: &str = "/usr/lib/wine/wine64";

const PROCESS_PRNG: &str = r#"
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, n)) return FALSE;
        data += n; len -= n;
    }
    return TRUE;
}
"#;

/// A directory with burrow.exe and the stand-in DLL, and a Wine prefix.
struct Win {
    exe: PathBuf,
    prefix: PathBuf,
    frpc: PathBuf,
}

fn win() -> &'static Win {
    static WIN: OnceLock<Win> = OnceLock::new();
    WIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let built = std::env::var_os("BURROW_WINDOWS_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/x86_64-pc-windows-gnu/release/burrow.exe"));
        assert!(built.exists(), "{} is missing: run resources/windows-smoke.sh", built.display());
        let bundled = root.join("resources/bin/windows-amd64/frpc.exe");
        assert!(bundled.exists(), "{} is missing: run resources/fetch-frpc.sh windows-amd64", bundled.display());
        assert!(Path::new(WINE).exists(), "{WINE} is missing: apt-get install wine64");
        let dir = std::env::temp_dir().join(format!("burrow-wine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("burrow.exe");
        std::fs::copy(&built, &exe).unwrap();
        std::fs::write(dir.join("prng.c"), PROCESS_PRNG).unwrap();
        let cc = std::process::Command::new("x86_64-w64-mingw32-gcc")
            .args(["-shared", "-O2", "-o", "bcryptprimitives.dll", "prng.c", "-ladvapi32"])
            .current_dir(&dir)
            .status()
            .expect("x86_64-w64-mingw32-gcc (apt-get install mingw-w64)");
        assert!(cc.success(), "the ProcessPrng stand-in did not build");
        let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
        let prefix = Path::new(&home).join(".cache/burrow/wine-prefix");
        // The prefix is made once, here, not by parallel tests racing to make it.
        let boot = std::process::Command::new(WINE)
            .args(["cmd", "/c", "exit"])
            .env("WINEPREFIX", &prefix)
            .env("WINEDEBUG", "-all")
            .stdin(Stdio::null())
            .output()
            .expect("wine64 runs");
        assert!(boot.status.success(), "Wine could not start: {}", String::from_utf8_lossy(&boot.stderr));
        // Go's runtime looks in System32 alone: the stand-in goes there too, in this test prefix.
        std::fs::copy(dir.join("bcryptprimitives.dll"), prefix.join("drive_c/windows/system32/bcryptprimitives.dll"))
            .unwrap();
        Win { exe, prefix, frpc: bundled }
    })
}

/// `Z:\…`: how a Windows program under Wine names a Linux path.
fn windows_path(p: &Path) -> String {
    format!("Z:{}", p.display().to_string().replace('/', "\\"))
}

fn wine_env(env: &[(&str, &str)]) -> Vec<(String, String)> {
    let w = win();
    let mut all = vec![
        ("WINEPREFIX".to_string(), w.prefix.display().to_string()),
        ("WINEDEBUG".into(), "-all".into()),
        ("BURROW_FRPC_PATH".into(), windows_path(&w.frpc)),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}

/// burrow.exe under Wine, driven like the Linux binary.
fn spawn(env: &[(&str, &str)]) -> Burrow {
    let all = wine_env(env);
    let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Burrow::spawn_exe(Path::new(WINE), &pairs, &[win().exe.to_str().unwrap()])
}

/// Runs burrow.exe with `args` to its end: exit code and stdout.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(WINE)
        .arg(&win().exe)
        .args(args)
        .envs(wine_env(env))
        .stdin(Stdio::null())
        .output()
        .expect("wine64 runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Linux pids of Wine processes running `name`.
fn wine_processes(name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).to_ascii_lowercase().contains(name) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Wine and the Windows build: resources/windows-smoke.sh"]
async fn windows_version_and_check() {
    let (code, out) = run(&["version"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("burrow "), "{out}");
    let frps = Frps::start(FrpsOpts::default()).await;
    let addr = frps.addr();
    let env = [("BURROW_SERVER_ADDR", addr.as_str()), ("BURROW_SERVER_TOKEN", TOKEN), ("BURROW_SUBDOMAIN", "wincheck")];
    let (code, out) = run(&["check", "--json"], &env);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(code, 0, "{report:#}");
    assert!(out.contains("frpc 0."), "the Windows frpc was found and ran: {report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Wine and the Windows build: resources/windows-smoke.sh"]
async fn windows_native_tunnel_serves_and_stops_on_shutdown_and_on_stdin_eof() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    for (sub, stop) in [("winnative", "shutdown"), ("wineof", "eof")] {
        let env = tunnel_env(&frps, sub, "native", up.addr);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut b = spawn(&pairs);
        let tunnel = b.wait("tunnel_up", T).await;
        assert_eq!(tunnel["mode"], "native", "{tunnel}");
        let host = format!("{sub}.{SUBDOMAIN_HOST}");
        assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/from-windows", T).await, "hello /from-windows");
        let code = if stop == "shutdown" {
            b.send(r#"{"cmd":"shutdown"}"#).await;
            b.wait_exit(Duration::from_secs(15)).await
        } else {
            b.close_stdin_and_wait(Duration::from_secs(15)).await
        };
        assert_eq!(code, 0, "{}", b.output());
        assert_eq!(b.events().last().unwrap()["event"], "stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Wine and the Windows build: resources/windows-smoke.sh"]
async fn windows_frpc_mode_serves_and_frpc_dies_with_a_hard_killed_burrow() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let up = http_upstream().await;
    let env = tunnel_env(&frps, "winfrpc", "frpc", up.addr);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let before = wine_processes("frpc.exe");
    let mut b = spawn(&pairs);
    let tunnel = b.wait("tunnel_up", T).await;
    assert_eq!(tunnel["mode"], "frpc", "{tunnel}");
    let host = format!("winfrpc.{SUBDOMAIN_HOST}");
    assert_eq!(vhost_get_ok(frps.vhost_port, &host, "/via-frpc", T).await, "hello /via-frpc");
    let frpc: Vec<u32> = wine_processes("frpc.exe").into_iter().filter(|p| !before.contains(p)).collect();
    assert!(!frpc.is_empty(), "no frpc.exe process under Wine");

    // As Task Manager's "End task" would: no chance to stop frpc itself.
    b.child.start_kill().unwrap();
    let _ = b.child.wait().await;
    let gone =
        wait_until(|| frpc.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists()), Duration::from_secs(2)).await;
    if !gone {
        for p in &frpc {
            let _ = std::process::Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
    assert!(gone, "frpc.exe {frpc:?} outlived a hard-killed burrow.exe by 2 s");
}
