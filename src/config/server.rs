//! The server section: frps' address and token, the transport to it (TCP, WebSocket, wss), the
//! proxy in front of it, TLS and the heartbeat.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{get, parse_bool, parse_host_port, parse_wire, ConfigError, Env, ProxyUrl, Secret, Wire};

/// Where frps is and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Host name or IP address of frps.
    pub host: String,
    /// frps `bindPort`.
    pub port: u16,
    /// `auth.token`.
    pub token: Secret,
    /// `user`: the proxy-name prefix.
    pub user: String,
    /// TLS to frps.
    pub tls: TlsConfig,
    /// yamux multiplexing; must equal frps' `transport.tcpMux`.
    pub tcp_mux: bool,
    /// frp wire protocol (`transport.wireProtocol`); v2 needs frps 0.69+.
    pub wire: Wire,
    /// The proxy to frps, if any.
    pub proxy: ServerProxy,
    /// How frp connections travel (`transport.protocol`).
    pub protocol: Protocol,
    /// Work connections kept ready (`transport.poolCount`).
    pub pool_count: u32,
    /// Ping period (`transport.heartbeatInterval`; burrow's default 10 s, frpc's 30 s).
    pub heartbeat_interval: std::time::Duration,
    /// No Pong for this long means a dead server (`transport.heartbeatTimeout`; burrow's default
    /// 20 s, frpc's 90 s).
    pub heartbeat_timeout: std::time::Duration,
    /// `metadatas`, sent in Login.
    pub metas: BTreeMap<String, String>,
}

impl ServerConfig {
    /// frps at `host:port` with `token`: frp's defaults (TLS on, tcp_mux on, one pooled work
    /// connection) and burrow's heartbeat (10 s / 20 s).
    pub fn new(host: impl Into<String>, port: u16, token: Secret) -> Self {
        Self {
            host: host.into(),
            port,
            token,
            user: String::new(),
            tls: TlsConfig { enabled: true, ca_file: None, pin: None, server_name: None },
            tcp_mux: true,
            wire: Wire::V1,
            proxy: ServerProxy::Environment { url: None, no_proxy: String::new() },
            protocol: Protocol::Tcp,
            pool_count: 1,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            metas: BTreeMap::new(),
        }
    }

    /// `host:port` as shown to users (IPv6 in brackets).
    pub fn display_addr(&self) -> String {
        crate::transport::host_port(&self.host, self.port)
    }

    /// `tls+yamux`, `ws`, … as the `connected` event names the transport (contract §7).
    pub fn transport_name(&self) -> String {
        let base = match self.protocol {
            Protocol::Tcp if self.tls.enabled => "tls",
            Protocol::Tcp => "tcp",
            Protocol::Websocket => "ws",
            Protocol::Wss => "wss",
        };
        if self.tcp_mux {
            format!("{base}+yamux")
        } else {
            base.to_string()
        }
    }

    /// The proxy to use for frps, if any.
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        self.proxy.for_host(&self.host)
    }
}

/// How frp connections travel to frps (`transport.protocol`, the ones burrow speaks natively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP to `bindPort` (TLS inside when on).
    Tcp,
    /// A WebSocket on `bindPort`'s `/~!frp` (TLS inside it when on).
    Websocket,
    /// TLS to a front server that forwards the WebSocket to frps (no second TLS).
    Wss,
}

impl Protocol {
    /// frp's name for it (`transport.protocol`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Websocket => "websocket",
            Protocol::Wss => "wss",
        }
    }

    /// The protocol frp's `transport.protocol` names, if burrow speaks it natively.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "tcp" => Some(Protocol::Tcp),
            "websocket" => Some(Protocol::Websocket),
            "wss" => Some(Protocol::Wss),
            _ => None,
        }
    }
}

/// Parses `BURROW_TRANSPORT_PROTOCOL` and its kin.
pub fn parse_protocol(name: &str, v: &str) -> Result<Protocol, ConfigError> {
    Protocol::from_name(&v.trim().to_ascii_lowercase()).ok_or_else(|| {
        ConfigError::new(
            name,
            v,
            "expected tcp, websocket or wss (kcp and quic run under frpc: set them in a BURROW_CONFIG file)",
            format!("{name}=websocket"),
        )
    })
}

/// The proxy the frps connection goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerProxy {
    /// None set explicitly: the environment's (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, in that
    /// order, lower case first), unless `NO_PROXY` names frps' host.
    Environment {
        /// The first proxy variable set.
        url: Option<ProxyUrl>,
        /// `NO_PROXY`.
        no_proxy: String,
    },
    /// `BURROW_SERVER_PROXY_URL=off`: straight to frps.
    Direct,
    /// The frpc file's `transport.proxyURL` is one only frpc speaks (`ntlm://`): frpc reads it
    /// from the file.
    FrpcOnly,
    /// Set explicitly (`BURROW_SERVER_PROXY_URL`, `transport.proxyURL`, a reservation's
    /// `server.proxyUrl`): always used.
    Explicit(ProxyUrl),
}

impl ServerProxy {
    /// The proxy to use for a connection to `host`, if any.
    pub fn for_host(&self, host: &str) -> Option<&ProxyUrl> {
        match self {
            ServerProxy::Explicit(p) => Some(p),
            ServerProxy::Environment { url: Some(p), no_proxy } if !no_proxy_matches(no_proxy, host) => Some(p),
            _ => None,
        }
    }
}

/// Whether `NO_PROXY` (comma-separated names, domain suffixes with or without a leading dot, IP
/// addresses, `*`; ports ignored) names `host`.
pub(super) fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        // A port after a name or a bracketed IPv6 address; a bare IPv6 address has colons too.
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h.to_string(),
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && h.starts_with('[') => h.to_string(),
            _ => entry,
        };
        let entry =
            entry.trim_start_matches('[').trim_end_matches(']').trim_start_matches("*.").trim_start_matches('.');
        host == entry || host.ends_with(&format!(".{entry}"))
    })
}

/// The environment's proxy for frps: the first of the standard variables that is set.
fn env_proxy(env: &Env) -> Result<ServerProxy, ConfigError> {
    let mut url = None;
    for var in ["all_proxy", "ALL_PROXY", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"] {
        if let Some(v) = get(env, var) {
            url = Some(parse_proxy_url(var, v)?);
            break;
        }
    }
    let no_proxy = get(env, "no_proxy").or_else(|| get(env, "NO_PROXY")).unwrap_or_default().to_string();
    Ok(ServerProxy::Environment { url, no_proxy })
}

/// Parses a proxy URL, naming `name` and never echoing credentials.
pub fn parse_proxy_url(name: &str, v: &str) -> Result<ProxyUrl, ConfigError> {
    ProxyUrl::parse(v).map_err(|problem| {
        let shown = ProxyUrl::parse(v).map(|p| p.to_string()).unwrap_or_else(|_| {
            // An unparsable URL may still hold credentials: show what precedes an '@' as ***.
            match v.rsplit_once('@') {
                Some((_, rest)) => format!("***@{rest}"),
                None => v.to_string(),
            }
        });
        ConfigError::new(name, shown, problem, format!("{name}=http://proxy.example.com:3128"))
    })
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// TLS on (frp's default since 0.50).
    pub enabled: bool,
    /// Verify the chain against this CA file (PEM).
    pub ca_file: Option<PathBuf>,
    /// Accept exactly the certificate with this SHA-256 of its DER bytes.
    pub pin: Option<[u8; 32]>,
    /// SNI and verification name; by default the server host when it is a name.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Neither a CA nor a pin: encrypted but unauthenticated, as frpc's default.
    pub fn is_unverified(&self) -> bool {
        self.enabled && self.ca_file.is_none() && self.pin.is_none()
    }
}

/// Default ping period. frpc 0.58+ pings only without tcp_mux; burrow always does: a path that
/// died silently (sleep, a new network) is only noticed by a ping left unanswered, and frp's own
/// 30 s / 90 s leave a desktop user's URL dead for up to two minutes. Six pings a minute cost
/// frps and an idle burrow next to nothing.
pub const DEFAULT_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Default dead-server threshold: no Pong for this long, checked at each ping (so 20–30 s).
pub const DEFAULT_HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Parses a SHA-256 pin: 64 hex digits, any case, colons allowed.
pub fn parse_pin(name: &str, v: &str) -> Result<[u8; 32], ConfigError> {
    let hexs: String = v.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hexs, &mut out).map_err(|_| {
        ConfigError::new(
            name,
            v,
            "expected the SHA-256 of the server certificate's DER bytes: 64 hex digits, colons allowed",
            format!("{name}=5f:3c:…:9a (openssl x509 -in cert.pem -outform der | sha256sum)"),
        )
    })?;
    Ok(out)
}

/// The environment's server settings (`BURROW_SERVER_*`, `BURROW_TLS*`, `BURROW_TCP_MUX`, the
/// transport and wire protocols, the proxy to frps) on top of the file's; whether it named frps.
pub(super) fn read_env(env: &Env, server: &mut ServerConfig) -> Result<bool, ConfigError> {
    let mut named = false;
    if let Some(v) = get(env, "BURROW_SERVER_ADDR") {
        let (host, port) = parse_host_port("BURROW_SERVER_ADDR", v, "frps.example.com:7000")?;
        server.host = host;
        server.port = port;
        named = true;
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
    Ok(named)
}
