//! Finding the bundled frpc and asking its version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::platform::platform;

fn exe_name() -> &'static str {
    if cfg!(windows) {
        "frpc.exe"
    } else {
        "frpc"
    }
}

/// Every place burrow looks for frpc, in order: `BURROW_FRPC_PATH` alone when it is set;
/// otherwise beside burrow, `bin/<os>-<arch>/` beside it, an Electron `resources/` layout
/// (Windows/Linux `resources/bin/…`, macOS `Contents/Resources/bin/…`), then `PATH`.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let name = exe_name();
    let plat = platform();
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        out.push(dir.join(name));
        out.push(dir.join("bin").join(&plat).join(name));
        out.push(dir.join("resources").join("bin").join(&plat).join(name));
        out.push(dir.join("..").join("Resources").join("bin").join(&plat).join(name));
        out.push(dir.join("..").join("..").join("bin").join(&plat).join(name));
        // A development build in target/{debug,release}/ of the source tree.
        out.push(dir.join("..").join("..").join("resources").join("bin").join(&plat).join(name));
    }
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    out
}

/// The first candidate that is an executable file, or every path tried.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf, Vec<PathBuf>> {
    let tried = candidates(explicit);
    for p in &tried {
        if is_executable(p) {
            return Ok(p.clone());
        }
    }
    Err(tried)
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// `frpc --version`, e.g. `0.65.0`.
pub async fn version(frpc: &Path) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new(frpc)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().trim_start_matches('v').to_string();
    let ok = !v.is_empty() && v.split('.').take(2).all(|p| p.parse::<u32>().is_ok());
    ok.then_some(v)
}

/// frpc reads TOML from 0.52 on; older versions read INI.
pub fn speaks_toml(version: &str) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (0, 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_format_by_version() {
        assert!(speaks_toml("0.65.0"));
        assert!(speaks_toml("0.52.0"));
        assert!(speaks_toml("1.0.0"));
        assert!(!speaks_toml("0.51.3"));
        assert!(!speaks_toml("0.38.0"));
    }

    #[test]
    fn an_explicit_path_is_the_only_candidate() {
        let c = candidates(Some(Path::new("/opt/frpc")));
        assert_eq!(c, vec![PathBuf::from("/opt/frpc")]);
        assert!(resolve(Some(Path::new("/nonexistent/frpc"))).is_err());
        let all = candidates(None);
        assert!(all.iter().any(|p| p.to_string_lossy().contains(&format!("bin/{}", platform()))));
    }
}
