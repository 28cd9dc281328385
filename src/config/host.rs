//! The host's section: the log on stderr and the admin API.

use std::net::SocketAddr;

use super::{get, ConfigError, Env, Secret};

/// What the host's section sets.
pub(super) struct Host {
    pub log_filter: String,
    pub admin_addr: Option<SocketAddr>,
    pub admin_token: Option<Secret>,
}

/// `BURROW_LOG`, `BURROW_ADMIN_ADDR`, `BURROW_ADMIN_TOKEN`.
pub(super) fn read(env: &Env) -> Result<Host, ConfigError> {
    let raw_filter = get(env, "BURROW_LOG").unwrap_or("info");
    // Spaces around directives and empty ones are dropped: `Targets` would keep " burrow" as a
    // target name and read an empty directive as "error".
    let mut log_filter = raw_filter.split(',').map(str::trim).filter(|d| !d.is_empty()).collect::<Vec<_>>().join(",");
    if log_filter.is_empty() {
        log_filter = "info".into();
    }
    if let Err(problem) = check_log_filter(&log_filter) {
        return Err(ConfigError::new(
            "BURROW_LOG",
            raw_filter,
            problem,
            "BURROW_LOG=info or BURROW_LOG=warn,burrow=debug",
        ));
    }

    // Unset disables the admin API; `off` does too, as it does for BURROW_PROXY_ADDR.
    let admin_addr = match get(env, "BURROW_ADMIN_ADDR") {
        None => None,
        Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
        Some(v) => match v.trim().parse::<SocketAddr>() {
            // The admin API drives burrow: it is for this machine only (contract §6).
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(_) => {
                return Err(ConfigError::new(
                    "BURROW_ADMIN_ADDR",
                    v,
                    "the admin API listens on loopback only (127.0.0.1 or [::1])",
                    "BURROW_ADMIN_ADDR=127.0.0.1:7401",
                ))
            }
            Err(_) => {
                return Err(ConfigError::new(
                    "BURROW_ADMIN_ADDR",
                    v,
                    "expected a loopback IP address (127.0.0.1) and a port (0 picks a free one), or off",
                    "BURROW_ADMIN_ADDR=127.0.0.1:7401",
                ))
            }
        },
    };
    let admin_token = match env.get("BURROW_ADMIN_TOKEN").filter(|v| !v.is_empty()) {
        None => None,
        Some(t) if t.len() >= 16 && t.chars().all(|c| c.is_ascii_graphic()) => Some(Secret::new(t.clone())),
        Some(_) => {
            return Err(ConfigError::new(
                "BURROW_ADMIN_TOKEN",
                "***",
                "the admin token must be at least 16 printable characters without spaces",
                "BURROW_ADMIN_TOKEN=$(openssl rand -hex 16)",
            ))
        }
    };
    Ok(Host { log_filter, admin_addr, admin_token })
}

/// Accepts levels and `target=level` directives only (tracing's `Targets` filter). tracing's
/// `EnvFilter`, used before, also takes span and field filters (`[span{field=value}]`) and
/// compiles their values into regular-expression automata whose size can explode: fuzzing found
/// a 437-byte BURROW_LOG that kept startup busy for over 10 s.
pub(super) fn check_log_filter(v: &str) -> Result<(), &'static str> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    let target = |t: &str| {
        let t = t.trim();
        !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
    };
    if v.len() > 1024 {
        return Err("longer than 1024 bytes");
    }
    if v.contains(['[', ']', '{', '}']) {
        return Err("span and field filters ([...], {...}) are not supported; use levels and targets");
    }
    for d in v.split(',').filter(|d| !d.trim().is_empty()) {
        let ok = match d.split_once('=') {
            Some((t, l)) => target(t) && level(l),
            None => level(d) || target(d),
        };
        if !ok {
            return Err("expected comma-separated levels (off, error, warn, info, debug, trace) or target=level");
        }
    }
    if v.parse::<tracing_subscriber::filter::Targets>().is_err() {
        return Err("not a tracing filter");
    }
    Ok(())
}
