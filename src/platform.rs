//! What this machine is, in the names frp uses, and the wall clock frp's messages carry.

use std::time::{SystemTime, UNIX_EPOCH};

/// Go's GOOS and GOARCH names for this build, as frpc reports them in `Login` and frp names its
/// release archives.
pub fn go_os_arch() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    (os, arch)
}

/// `<GOOS>-<GOARCH>` (`linux-amd64`, …), the layout of `resources/bin/`.
pub fn platform() -> String {
    let (os, arch) = go_os_arch();
    format!("{os}-{arch}")
}

/// Seconds since the Unix epoch (frp's login and heartbeat timestamps); 0 before 1970.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `pid` and every process below it, parents first: what stopping a child "as a process tree"
/// signals, since a wrapper script's own children would outlive a signal to the wrapper alone.
#[cfg(unix)]
pub fn process_tree(pid: u32) -> Vec<u32> {
    let children = children_table();
    let mut tree = vec![pid];
    let mut i = 0;
    // Bounded: a pid reused while the table was read must not make this walk for ever.
    while i < tree.len() && tree.len() < 4096 {
        tree.extend(children(tree[i]).into_iter().filter(|c| !tree.contains(c)).collect::<Vec<_>>());
        i += 1;
    }
    tree
}

/// The children of a process: from `/proc` on Linux (over all its threads).
#[cfg(target_os = "linux")]
fn children_table() -> impl Fn(u32) -> Vec<u32> {
    |pid| {
        let mut out = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
        out
    }
}

/// The children of a process: from one `ps` listing elsewhere (macOS has no `/proc`).
#[cfg(all(unix, not(target_os = "linux")))]
fn children_table() -> impl Fn(u32) -> Vec<u32> {
    let listing = std::process::Command::new("ps")
        .args(["-A", "-o", "pid=", "-o", "ppid="])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let pairs: Vec<(u32, u32)> = listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((f.next()??, f.next()??))
        })
        .collect();
    move |pid| pairs.iter().filter(|(_, parent)| *parent == pid).map(|(p, _)| *p).collect()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_process_tree_holds_grandchildren() {
        // sh starts a sleep of its own and reports its pid.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(sh.stdout.take().unwrap()), &mut line).unwrap();
        let sleep: u32 = line.trim().parse().unwrap();
        let tree = process_tree(sh.id());
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleep as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = sh.kill();
        let _ = sh.wait();
        assert_eq!(tree, [sh.id(), sleep]);
    }
}
