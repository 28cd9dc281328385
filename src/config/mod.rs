//! burrow's configuration: environment variables and an frpc TOML file, merged and validated
//! before anything starts (contract §1–2).
//!
//! Precedence: flags > environment > config file > defaults. Every invalid value stops the start
//! with one [`ConfigError`] naming the variable (or file key), the bad value — masked when it is a
//! secret — and an accepted example.

mod access;
mod api;
mod error;
pub mod frpc_keys;
pub mod frpc_toml;
mod server;
mod tunnels;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use burrow_proto::Wire;

pub use crate::transport::proxy::ProxyUrl;

pub use access::{reaches_proxy, AccessConfig, Local};
use api::parse_api_url;
pub use api::ApiConfig;
pub use error::{ConfigError, Secret};
pub use frpc_toml::FrpcFile;
use server::env_proxy;
pub use server::*;
use tunnels::validate_subdomain;
pub use tunnels::{default_tunnel, TunnelConfig, TunnelKind, DEFAULT_TUNNEL};

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// frps.
    pub server: ServerConfig,
    /// Tunnels to register.
    pub tunnels: Vec<TunnelConfig>,
    /// Listen address of the in-process reverse proxy; `None` when `off`.
    pub proxy_addr: Option<SocketAddr>,
    /// The proxy's route table (`BURROW_ROUTES`).
    pub routes: crate::proxy::Routes,
    /// How long an upstream may take to answer (`BURROW_UPSTREAM_TIMEOUT`).
    pub upstream_timeout: std::time::Duration,
    /// Tunnel work streams served at once, at most (`BURROW_MAX_STREAMS`); more wait.
    pub max_streams: usize,
    /// `BURROW_LOG`.
    pub log_filter: String,
    /// `BURROW_MODE` / `--mode` / `--fallback`.
    pub mode: Mode,
    /// Tunnels come from this provisioning API instead of the configuration.
    pub api: Option<ApiConfig>,
    /// `BURROW_FRPC_PATH`.
    pub frpc_path: Option<PathBuf>,
    /// The frpc file, as given, for frpc to run unchanged.
    pub frpc_file: Option<(PathBuf, toml::Table)>,
    /// Why only frpc can serve this configuration, if so.
    pub native_gap: Option<String>,
    /// The reservation the tunnels come from, once reserved.
    pub reservation_id: Option<String>,
    /// `BURROW_ADMIN_ADDR`: where the admin API and status page listen; `None` disables them.
    pub admin_addr: Option<SocketAddr>,
    /// Who may use the public URL (`BURROW_PUBLIC_ACCESS`, `BURROW_PUBLIC_AUTH`, `BURROW_SHARE_*`).
    pub access: AccessConfig,
    /// `BURROW_ADMIN_TOKEN`; `None`: a random one is made and given in `admin_ready`.
    pub admin_token: Option<Secret>,
}

/// Work streams served at once by default: with the 1,024 frps may have waiting and the control
/// stream, well under yamux's 8,192 streams per session.
pub const DEFAULT_MAX_STREAMS: usize = 4096;
/// The most `BURROW_MAX_STREAMS` may be.
pub const MAX_STREAMS_LIMIT: usize = 7000;

/// Command-line settings that override the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--mode` or `--fallback`.
    pub mode: Option<Mode>,
}

/// How tunnels are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The native client, falling back to frpc when the server or configuration needs it.
    Auto,
    /// The native client only.
    Native,
    /// The bundled frpc only.
    Frpc,
}

impl Mode {
    /// Parses `auto`, `native` or `frpc`.
    pub fn parse(name: &str, v: &str) -> Result<Mode, ConfigError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Mode::Auto),
            "native" => Ok(Mode::Native),
            "frpc" | "fallback" => Ok(Mode::Frpc),
            _ => Err(ConfigError::new(name, v, "expected auto, native or frpc", format!("{name}=auto"))),
        }
    }

    /// The name as events show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Frpc => "frpc",
        }
    }
}

/// Default of `BURROW_PROXY_ADDR`.
pub const DEFAULT_PROXY_ADDR: &str = "127.0.0.1:8080";

/// The environment, as burrow reads it. Taken as a map so tests need not touch the process env.
pub type Env = BTreeMap<String, String>;

/// The standard proxy variables burrow honours for the frps connection.
const PROXY_VARS: [&str; 8] =
    ["all_proxy", "ALL_PROXY", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"];

/// The `BURROW_*` variables of this process, and the standard proxy variables.
pub fn process_env() -> Env {
    std::env::vars().filter(|(k, _)| k.starts_with("BURROW_") || PROXY_VARS.contains(&k.as_str())).collect()
}

fn get<'a>(env: &'a Env, key: &str) -> Option<&'a str> {
    env.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// Parses `on/off/true/false/1/0` (any case).
pub fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::new(name, v, "expected on, off, true, false, 1 or 0", format!("{name}=on"))),
    }
}

/// Parses a wire protocol version (`v1`, `v2`).
pub fn parse_wire(name: &str, v: &str) -> Result<Wire, ConfigError> {
    Wire::from_name(&v.trim().to_ascii_lowercase()).ok_or_else(|| {
        ConfigError::new(name, v, "expected v1 or v2 (v2 needs frps 0.69 or newer)", format!("{name}=v2"))
    })
}

/// Parses `host:port` (`[v6]:port` for IPv6).
pub fn parse_host_port(name: &str, v: &str, example: &str) -> Result<(String, u16), ConfigError> {
    let bad = |problem: &str| ConfigError::new(name, v, problem, format!("{name}={example}"));
    let (host, port) = v.trim().rsplit_once(':').ok_or_else(|| bad("expected host:port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty()
        || host.contains(['/', ' '])
        || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
    {
        return Err(bad("expected a host name or IP address before the port"));
    }
    let port = parse_port(port).ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
    Ok((host.to_string(), port))
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_socket_addr(name: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim()
        .parse::<SocketAddr>()
        .map_err(|_| {
            ConfigError::new(
                name,
                v,
                "expected an IP address and a port (1–65535), or off",
                format!("{name}={DEFAULT_PROXY_ADDR}"),
            )
        })
        .and_then(|a| {
            if a.port() == 0 {
                Err(ConfigError::new(
                    name,
                    v,
                    "the port must be from 1 to 65535",
                    format!("{name}={DEFAULT_PROXY_ADDR}"),
                ))
            } else {
                Ok(a)
            }
        })
}

/// Accepts levels and `target=level` directives only (tracing's `Targets` filter). tracing's
/// `EnvFilter`, used before, also takes span and field filters (`[span{field=value}]`) and
/// compiles their values into regular-expression automata whose size can explode: fuzzing found
/// a 437-byte BURROW_LOG that kept startup busy for over 10 s.
fn check_log_filter(v: &str) -> Result<(), &'static str> {
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

/// Resolves the configuration from the environment, an optional frpc TOML file and the flags.
pub fn load(env: &Env, flags: &Overrides) -> Result<Config, ConfigError> {
    let file_path = flags.config_file.clone().or_else(|| get(env, "BURROW_CONFIG").map(PathBuf::from));
    let file = match &file_path {
        Some(p) => Some(FrpcFile::load(p)?),
        None => None,
    };

    // Server: file first, then the environment on top.
    let mut server = ServerConfig::new("", 7000, Secret::default());
    let mut tunnels = Vec::new();
    let mut have_server = false;
    let native_gap = file.as_ref().and_then(|f| f.native_gap.clone());
    if let Some(f) = &file {
        have_server |= f.apply_server(&mut server);
        if native_gap.is_none() {
            tunnels = f.tunnels()?;
        }
    }
    let env_mode = get(env, "BURROW_MODE").map(|v| Mode::parse("BURROW_MODE", v)).transpose()?;
    let mode = flags.mode.or(env_mode).unwrap_or(Mode::Auto);
    let api = match get(env, "BURROW_API_URL") {
        None => None,
        Some(url) => {
            let url = parse_api_url(url)?;
            if get(env, "BURROW_SERVER_ADDR").is_some() || have_server {
                let (var, value) = if get(env, "BURROW_SERVER_ADDR").is_some() {
                    ("BURROW_SERVER_ADDR", get(env, "BURROW_SERVER_ADDR").unwrap_or_default().to_string())
                } else {
                    ("BURROW_CONFIG", "(serverAddr in the file)".to_string())
                };
                return Err(ConfigError::new(var, value, "BURROW_API_URL is set: tunnels and their server come from the provisioning API, one source at a time", "unset BURROW_SERVER_ADDR (and serverAddr), or unset BURROW_API_URL"));
            }
            if !tunnels.is_empty() || native_gap.is_some() {
                return Err(ConfigError::new(
                    "BURROW_CONFIG",
                    file_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                    "BURROW_API_URL is set: tunnels come from the provisioning API, not [[proxies]]",
                    "unset BURROW_CONFIG, or unset BURROW_API_URL",
                ));
            }
            let need = |k: &str, ex: &str| {
                get(env, k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).ok_or_else(|| {
                    ConfigError::new(
                        k,
                        "(unset)",
                        "required with BURROW_API_URL: the reservation is made for a user and a project",
                        format!("{k}={ex}"),
                    )
                })
            };
            Some(ApiConfig {
                url,
                token: Secret::new(env.get("BURROW_API_TOKEN").cloned().unwrap_or_default()),
                user_id: need("BURROW_USER_ID", "user-123")?,
                project_id: need("BURROW_PROJECT_ID", "project-456")?,
            })
        }
    };
    let frpc_path = get(env, "BURROW_FRPC_PATH").map(PathBuf::from);
    if let Some(v) = get(env, "BURROW_SERVER_ADDR") {
        let (host, port) = parse_host_port("BURROW_SERVER_ADDR", v, "frps.example.com:7000")?;
        server.host = host;
        server.port = port;
        have_server = true;
    }
    if let Some(v) = env.get("BURROW_SERVER_TOKEN") {
        server.token = Secret::new(v.clone());
    }
    if let Some(v) = get(env, "BURROW_TLS") {
        server.tls.enabled = parse_bool("BURROW_TLS", v)?;
    }
    if let Some(v) = get(env, "BURROW_TCP_MUX") {
        server.tcp_mux = parse_bool("BURROW_TCP_MUX", v)?;
    }
    if let Some(v) = get(env, "BURROW_TRANSPORT_PROTOCOL") {
        server.protocol = parse_protocol("BURROW_TRANSPORT_PROTOCOL", v)?;
    }
    if let Some(v) = get(env, "BURROW_WIRE_PROTOCOL") {
        server.wire = parse_wire("BURROW_WIRE_PROTOCOL", v)?;
    }
    // An explicit proxy (the variable, or the file's transport.proxyURL) always applies; else
    // the environment's, filtered by NO_PROXY.
    match get(env, "BURROW_SERVER_PROXY_URL") {
        Some(v) if v.eq_ignore_ascii_case("off") => server.proxy = ServerProxy::Direct,
        Some(v) => server.proxy = ServerProxy::Explicit(parse_proxy_url("BURROW_SERVER_PROXY_URL", v)?),
        None if !matches!(server.proxy, ServerProxy::Environment { .. }) => {}
        None => server.proxy = env_proxy(env)?,
    }
    if let Some(v) = get(env, "BURROW_TLS_CA") {
        let p = PathBuf::from(v);
        if !p.is_file() {
            return Err(ConfigError::new(
                "BURROW_TLS_CA",
                v,
                "no such file; give the PEM file of the CA that signed frps' certificate",
                "BURROW_TLS_CA=/etc/burrow/frps-ca.pem",
            ));
        }
        server.tls.ca_file = Some(p);
    }
    if let Some(v) = get(env, "BURROW_TLS_PIN") {
        server.tls.pin = Some(parse_pin("BURROW_TLS_PIN", v)?);
    }
    if let Some(v) = get(env, "BURROW_TLS_SERVER_NAME") {
        if v.contains(['/', ' ', ':']) {
            return Err(ConfigError::new(
                "BURROW_TLS_SERVER_NAME",
                v,
                "expected a DNS name",
                "BURROW_TLS_SERVER_NAME=frps.example.com",
            ));
        }
        server.tls.server_name = Some(v.to_string());
    }
    if (server.tls.ca_file.is_some() || server.tls.pin.is_some()) && !server.tls.enabled {
        let var = if server.tls.pin.is_some() { "BURROW_TLS_PIN" } else { "BURROW_TLS_CA" };
        return Err(ConfigError::new(
            "BURROW_TLS",
            "off",
            format!("{var} verifies a TLS server, but TLS is off"),
            "BURROW_TLS=on",
        ));
    }
    if !have_server && api.is_none() {
        return Err(ConfigError::new(
            "BURROW_SERVER_ADDR",
            "(unset)",
            "no frps address is configured; set it, or give an frpc config file with serverAddr",
            "BURROW_SERVER_ADDR=frps.example.com:7000",
        ));
    }

    let proxy_addr = match get(env, "BURROW_PROXY_ADDR") {
        Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
        Some(v) => Some(parse_socket_addr("BURROW_PROXY_ADDR", v)?),
        None => Some(DEFAULT_PROXY_ADDR.parse().expect("valid default")),
    };

    if native_gap.is_some() {
        // frpc serves the file's proxies as they are.
    } else if api.is_some() {
        // The default http tunnel; the reservation names its subdomain and public URL.
        let target = proxy_addr.ok_or_else(|| {
            ConfigError::new(
                "BURROW_PROXY_ADDR",
                "off",
                "reserved tunnels serve the local proxy; it cannot be off with BURROW_API_URL",
                format!("BURROW_PROXY_ADDR={DEFAULT_PROXY_ADDR}"),
            )
        })?;
        tunnels.push(default_tunnel(None, target));
    } else if tunnels.is_empty() {
        // No [[proxies]]: the default http tunnel, which exposes the local web stack.
        let subdomain = get(env, "BURROW_SUBDOMAIN").ok_or_else(|| {
            ConfigError::new(
                "BURROW_SUBDOMAIN",
                "(unset)",
                "the default http tunnel needs a subdomain (or give an frpc config file with [[proxies]])",
                "BURROW_SUBDOMAIN=myapp",
            )
        })?;
        validate_subdomain("BURROW_SUBDOMAIN", subdomain)?;
        let target = proxy_addr.ok_or_else(|| {
            ConfigError::new("BURROW_PROXY_ADDR", "off", "the default http tunnel serves the local proxy; with the proxy off, list tunnels in an frpc config file", format!("BURROW_PROXY_ADDR={DEFAULT_PROXY_ADDR}"))
        })?;
        tunnels.push(default_tunnel(Some(subdomain.to_string()), target));
    } else if let Some(v) = get(env, "BURROW_SUBDOMAIN") {
        // The environment names the subdomain of the first http tunnel, overriding the file.
        validate_subdomain("BURROW_SUBDOMAIN", v)?;
        if let Some(TunnelKind::Http { subdomain, .. }) =
            tunnels.iter_mut().map(|t| &mut t.kind).find(|k| matches!(k, TunnelKind::Http { .. }))
        {
            *subdomain = Some(v.to_string());
        }
    }

    let routes_spec = get(env, "BURROW_ROUTES").unwrap_or(crate::proxy::routes::DEFAULT_ROUTES);
    let routes = crate::proxy::Routes::parse(routes_spec).map_err(|e| {
        ConfigError::new(
            "BURROW_ROUTES",
            routes_spec,
            format!("{e}; routes are prefix=http://host:port, comma-separated"),
            format!("BURROW_ROUTES={}", crate::proxy::routes::DEFAULT_ROUTES),
        )
    })?;

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

    let upstream_timeout = match get(env, "BURROW_UPSTREAM_TIMEOUT") {
        None => crate::proxy::RESPONSE_TIMEOUT,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs <= 86_400.0 => std::time::Duration::from_secs_f64(secs),
            _ => {
                return Err(ConfigError::new(
                    "BURROW_UPSTREAM_TIMEOUT",
                    v,
                    "expected seconds, more than 0 and at most 86400",
                    "BURROW_UPSTREAM_TIMEOUT=60",
                ))
            }
        },
    };

    let max_streams = match get(env, "BURROW_MAX_STREAMS") {
        None => DEFAULT_MAX_STREAMS,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_STREAMS_LIMIT).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    "BURROW_MAX_STREAMS",
                    v,
                    format!("expected a number of work streams from 1 to {MAX_STREAMS_LIMIT}"),
                    format!("BURROW_MAX_STREAMS={DEFAULT_MAX_STREAMS}"),
                ))
            }
        },
    };

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
    // With reserved tunnels frpc gets burrow's model (the reservation's server and tunnels),
    // never the file's.
    let frpc_file = if api.is_some() { None } else { file.map(|f| (file_path.clone().unwrap_or_default(), f.raw)) };
    let mut access = access::access_config(env)?;
    if api.is_none() {
        let file = frpc_file.as_ref().map(|(_, raw)| raw);
        let guarded = crate::proxy::access::guards(access.mode, &routes);
        access.unprotected = access::check_guarded_tunnels(&tunnels, file, proxy_addr, access.mode, guarded)?;
    }
    // After the access check: a file that would leave a protected URL open says so in every mode.
    if let (Mode::Native, Some(gap)) = (mode, &native_gap) {
        return Err(ConfigError::new(
            "BURROW_MODE",
            "native",
            format!("the config file needs frpc: {gap}"),
            "BURROW_MODE=auto (falls back to the bundled frpc)",
        ));
    }
    Ok(Config {
        server,
        tunnels,
        proxy_addr,
        routes,
        upstream_timeout,
        max_streams,
        log_filter,
        mode,
        api,
        frpc_path,
        frpc_file,
        native_gap,
        reservation_id: None,
        admin_addr,
        access,
        admin_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("BURROW_SERVER_ADDR", "frps.example.com:7000"),
            ("BURROW_SERVER_TOKEN", "s3cret"),
            ("BURROW_SUBDOMAIN", "myapp"),
        ]
    }

    #[test]
    fn transport_protocol_and_its_name_in_connected() {
        let named = |extra: &[(&str, &str)]| {
            let mut e = base();
            e.extend_from_slice(extra);
            load(&env(&e), &Overrides::default()).unwrap().server.transport_name()
        };
        assert_eq!(named(&[]), "tls+yamux");
        assert_eq!(named(&[("BURROW_TLS", "off"), ("BURROW_TCP_MUX", "off")]), "tcp");
        assert_eq!(named(&[("BURROW_TRANSPORT_PROTOCOL", "websocket")]), "ws+yamux");
        assert_eq!(named(&[("BURROW_TRANSPORT_PROTOCOL", "WSS"), ("BURROW_TCP_MUX", "off")]), "wss");
    }

    #[test]
    fn the_frps_proxy_comes_from_the_setting_then_the_environment() {
        let proxy = |extra: &[(&str, &str)]| {
            let mut e = base();
            e.extend_from_slice(extra);
            load(&env(&e), &Overrides::default()).map(|c| c.server.proxy().map(|p| p.to_string()))
        };
        assert_eq!(proxy(&[]).unwrap(), None);
        assert_eq!(proxy(&[("HTTP_PROXY", "http://h:1")]).unwrap().as_deref(), Some("http://h:1"));
        // ALL_PROXY before HTTPS_PROXY before HTTP_PROXY; lower case first.
        let all = [("HTTP_PROXY", "http://c:3"), ("HTTPS_PROXY", "http://b:2"), ("all_proxy", "socks5h://a:1")];
        assert_eq!(proxy(&all).unwrap().as_deref(), Some("socks5h://a:1"));
        assert_eq!(proxy(&all[..2]).unwrap().as_deref(), Some("http://b:2"));
        // NO_PROXY names frps (by suffix, with or without the dot, with a port, or `*`).
        for no in ["example.com", ".example.com", "frps.example.com:7000", "*", "other, *.example.com"] {
            assert_eq!(proxy(&[("HTTPS_PROXY", "http://b:2"), ("NO_PROXY", no)]).unwrap(), None, "{no}");
        }
        for no in ["ample.com", "frps.example.org", "10.0.0.1"] {
            assert!(proxy(&[("HTTPS_PROXY", "http://b:2"), ("no_proxy", no)]).unwrap().is_some(), "{no}");
        }
        // An explicit proxy applies whatever NO_PROXY says; `off` means direct.
        let explicit = [("BURROW_SERVER_PROXY_URL", "socks5://s:9"), ("NO_PROXY", "*"), ("HTTPS_PROXY", "http://b:2")];
        assert_eq!(proxy(&explicit).unwrap().as_deref(), Some("socks5://s:9"));
        assert_eq!(proxy(&[("BURROW_SERVER_PROXY_URL", "off"), ("HTTPS_PROXY", "http://b:2")]).unwrap(), None);
        // A bad URL names its variable and hides the credentials.
        let e = proxy(&[("HTTPS_PROXY", "gopher://u:pw-9x@h:1")]).unwrap_err().to_string();
        assert!(e.contains("HTTPS_PROXY") && e.contains("gopher") && !e.contains("pw-9x"), "{e}");
        let e = proxy(&[("BURROW_SERVER_PROXY_URL", "u:pw-9x@h")]).unwrap_err().to_string();
        assert!(e.contains("BURROW_SERVER_PROXY_URL") && !e.contains("pw-9x"), "{e}");
    }

    #[test]
    fn log_filter_is_normalized() {
        for (given, used) in [("info, burrow=debug", "info,burrow=debug"), ("debug,", "debug"), (" , ", "info")] {
            let mut e = base();
            e.push(("BURROW_LOG", given));
            assert_eq!(load(&env(&e), &Overrides::default()).unwrap().log_filter, used, "{given:?}");
        }
    }

    #[test]
    fn log_filter_takes_levels_and_targets_only() {
        for ok in ["info", "warn,burrow=debug", "burrow::client=trace", "DEBUG", "off"] {
            assert!(check_log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["burrow=loud", "a b=info", "[span]=debug", "x[{f=.*}]=info", "=info"] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
        // Found by fuzz/fuzz_targets/env_config.rs: a field filter whose value took tracing over
        // 10 s to compile. Refused at once now.
        let slow = format!("x[{{a=5{}w_{}L}}]=info", ".".repeat(70), ".".repeat(60));
        let t = std::time::Instant::now();
        let mut e = base();
        e.push(("BURROW_LOG", &slow));
        let err = load(&env(&e), &Overrides::default()).unwrap_err();
        assert_eq!(err.source_name, "BURROW_LOG");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn env_only_gives_default_http_tunnel_to_the_proxy() {
        let c = load(&env(&base()), &Overrides::default()).unwrap();
        assert_eq!(c.server.host, "frps.example.com");
        assert_eq!(c.server.port, 7000);
        assert_eq!(c.server.token.expose(), "s3cret");
        assert!(c.server.tls.enabled && c.server.tcp_mux);
        assert_eq!(c.tunnels.len(), 1);
        assert_eq!(c.tunnels[0].name, "web");
        assert_eq!(c.tunnels[0].local_addr, "127.0.0.1:8080");
        assert!(matches!(&c.tunnels[0].kind, TunnelKind::Http { subdomain: Some(s), .. } if s == "myapp"));
    }

    #[test]
    fn admin_api_is_off_unless_given_an_address() {
        let admin = |v: Option<&str>| {
            let mut e = base();
            e.extend(v.map(|v| ("BURROW_ADMIN_ADDR", v)));
            load(&env(&e), &Overrides::default()).unwrap().admin_addr
        };
        assert_eq!(admin(None), None);
        assert_eq!(admin(Some("off")), None);
        assert_eq!(admin(Some(" OFF ")), None);
        assert_eq!(admin(Some("127.0.0.1:7401")), Some("127.0.0.1:7401".parse().unwrap()));
        assert_eq!(admin(Some("[::1]:0")), Some("[::1]:0".parse().unwrap()));
    }

    #[test]
    fn bad_values_name_the_variable_and_mask_secrets() {
        let cases: &[(&str, &str)] = &[
            ("BURROW_SERVER_ADDR", "nohost"),
            ("BURROW_SERVER_ADDR", "host:0"),
            ("BURROW_SERVER_ADDR", "host:70000"),
            ("BURROW_SERVER_ADDR", ":7000"),
            ("BURROW_TLS", "maybe"),
            ("BURROW_TCP_MUX", "2"),
            ("BURROW_TRANSPORT_PROTOCOL", "kcp"),
            ("BURROW_TRANSPORT_PROTOCOL", "ws"),
            ("BURROW_TLS_PIN", "abc"),
            ("BURROW_TLS_CA", "/nonexistent/ca.pem"),
            ("BURROW_TLS_SERVER_NAME", "a b"),
            ("BURROW_SUBDOMAIN", "not_a.label"),
            ("BURROW_PROXY_ADDR", "localhost"),
            ("BURROW_PROXY_ADDR", "127.0.0.1:0"),
            ("BURROW_CONFIG", "/nonexistent/frpc.toml"),
            ("BURROW_LOG", "burrow=[["),
            ("BURROW_ROUTES", "/api=https://127.0.0.1:8000"),
            ("BURROW_ROUTES", "/api=http://127.0.0.1"),
            ("BURROW_ROUTES", "/=http://127.0.0.1:0"),
            ("BURROW_UPSTREAM_TIMEOUT", "0"),
            ("BURROW_UPSTREAM_TIMEOUT", "soon"),
            ("BURROW_MAX_STREAMS", "0"),
            ("BURROW_MAX_STREAMS", "8192"),
            ("BURROW_MAX_STREAMS", "many"),
            ("BURROW_ADMIN_ADDR", "localhost"),
            ("BURROW_ADMIN_ADDR", "0.0.0.0:7401"),
            ("BURROW_ADMIN_ADDR", "192.0.2.1:7401"),
            ("BURROW_ADMIN_TOKEN", "short"),
        ];
        for (k, v) in cases {
            let mut e = env(&base());
            e.insert(k.to_string(), v.to_string());
            let err = load(&e, &Overrides::default()).unwrap_err();
            assert_eq!(&err.source_name, k, "{k}={v}: {err}");
            assert!(err.to_string().contains("Example:"), "{err}");
            assert!(!err.to_string().contains("s3cret"));
        }
    }

    #[test]
    fn missing_pieces_are_named() {
        let err = load(&env(&[("BURROW_SUBDOMAIN", "x")]), &Overrides::default()).unwrap_err();
        assert_eq!(err.source_name, "BURROW_SERVER_ADDR");
        let err = load(&env(&[("BURROW_SERVER_ADDR", "h:1")]), &Overrides::default()).unwrap_err();
        assert_eq!(err.source_name, "BURROW_SUBDOMAIN");
        let mut e = env(&base());
        e.insert("BURROW_PROXY_ADDR".into(), "off".into());
        assert_eq!(load(&e, &Overrides::default()).unwrap_err().source_name, "BURROW_PROXY_ADDR");
        let mut e = env(&base());
        e.insert("BURROW_TLS".into(), "off".into());
        e.insert("BURROW_TLS_PIN".into(), "00".repeat(32));
        assert_eq!(load(&e, &Overrides::default()).unwrap_err().source_name, "BURROW_TLS");
    }

    #[test]
    fn pins_accept_colons_and_case() {
        let hexs = "AB".repeat(32);
        assert_eq!(parse_pin("P", &hexs).unwrap(), [0xab; 32]);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_pin("P", &colons).unwrap(), [0xab; 32]);
        assert!(parse_pin("P", &"ab".repeat(31)).is_err());
    }

    #[test]
    fn ipv6_server_addresses() {
        assert_eq!(parse_host_port("X", "[::1]:7000", "").unwrap(), ("::1".to_string(), 7000));
        assert!(parse_host_port("X", "::1:7000", "").is_ok());
        assert!(parse_host_port("X", "a:b:7000", "").is_err());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = load(&env(&base()), &Overrides::default()).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
