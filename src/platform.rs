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
