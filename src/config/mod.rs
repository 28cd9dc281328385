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
mod host;
mod local;
mod server;
mod tunnels;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use burrow_proto::Wire;

pub use crate::transport::proxy::ProxyUrl;

pub use access::{reaches_proxy, AccessConfig, Local};
pub use api::ApiConfig;
pub use error::{ConfigError, Secret};
pub use frpc_toml::FrpcFile;
pub use server::*;
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
pub(crate) const PROXY_VARS: [&str; 8] =
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
    let from_file = file_path.as_ref().filter(|_| !tunnels.is_empty() || native_gap.is_some());
    let api = api::read(env, have_server, from_file)?;
    let frpc_path = get(env, "BURROW_FRPC_PATH").map(PathBuf::from);
    have_server |= server::read_env(env, &mut server)?;
    if !have_server && api.is_none() {
        return Err(ConfigError::new(
            "BURROW_SERVER_ADDR",
            "(unset)",
            "no frps address is configured; set it, or give an frpc config file with serverAddr",
            "BURROW_SERVER_ADDR=frps.example.com:7000",
        ));
    }

    let local = local::read(env)?;
    let proxy_addr = local.proxy_addr;
    if native_gap.is_none() {
        tunnels::complete(env, &mut tunnels, api.is_some(), proxy_addr)?;
    }
    let host = host::read(env)?;

    // With reserved tunnels frpc gets burrow's model (the reservation's server and tunnels),
    // never the file's.
    let frpc_file = if api.is_some() { None } else { file.map(|f| (file_path.clone().unwrap_or_default(), f.raw)) };
    let mut access = access::access_config(env)?;
    if api.is_none() {
        let file = frpc_file.as_ref().map(|(_, raw)| raw);
        let guarded = crate::proxy::access::guards(access.mode, &local.routes);
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
        routes: local.routes,
        upstream_timeout: local.upstream_timeout,
        max_streams: local.max_streams,
        log_filter: host.log_filter,
        mode,
        api,
        frpc_path,
        frpc_file,
        native_gap,
        reservation_id: None,
        admin_addr: host.admin_addr,
        access,
        admin_token: host.admin_token,
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
            assert!(host::check_log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["burrow=loud", "a b=info", "[span]=debug", "x[{f=.*}]=info", "=info"] {
            assert!(host::check_log_filter(bad).is_err(), "{bad}");
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
