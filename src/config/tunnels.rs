//! The tunnels section: what burrow registers with frps, and where each one leads locally.

use std::net::SocketAddr;

use std::collections::BTreeMap;

use super::{get, reaches_proxy, ConfigError, Env, Secret};

/// What a tunnel exposes publicly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelKind {
    /// An http vhost tunnel.
    Http {
        /// `<subdomain>.<subDomainHost>`.
        subdomain: Option<String>,
        /// Host names routed to the tunnel.
        custom_domains: Vec<String>,
        /// Path prefixes routed to the tunnel.
        locations: Vec<String>,
        /// `Host` frps sends on.
        host_header_rewrite: Option<String>,
        /// Basic auth enforced by frps.
        http_user: Option<String>,
        /// Basic auth enforced by frps.
        http_password: Option<Secret>,
        /// Request headers frps sets.
        request_headers: BTreeMap<String, String>,
        /// Response headers frps sets.
        response_headers: BTreeMap<String, String>,
    },
    /// A tcp tunnel.
    Tcp {
        /// Public port on frps; 0 lets frps choose.
        remote_port: u16,
    },
}

impl TunnelKind {
    /// `http` or `tcp`.
    pub fn type_name(&self) -> &'static str {
        match self {
            TunnelKind::Http { .. } => "http",
            TunnelKind::Tcp { .. } => "tcp",
        }
    }
}

/// One tunnel (an frp proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Proxy name (without the user prefix).
    pub name: String,
    /// Type and public side.
    pub kind: TunnelKind,
    /// Local target, `host:port`.
    pub local_addr: String,
    /// Per-proxy AES-CFB on work connections.
    pub use_encryption: bool,
    /// Per-proxy snappy framing on work connections.
    pub use_compression: bool,
    /// The public URL to report (from a reservation), instead of the one frps' answer implies.
    pub public_url: Option<String>,
}

impl TunnelConfig {
    /// The tunnel as frp names its fields: the `NewProxy` burrow sends under `name`, and what
    /// frpc's configuration files say for it. The one projection of a tunnel onto frp.
    pub fn frp_proxy(&self, name: String) -> burrow_proto::msg::NewProxy {
        let mut m = burrow_proto::msg::NewProxy {
            proxy_name: name,
            proxy_type: self.kind.type_name().into(),
            use_encryption: self.use_encryption,
            use_compression: self.use_compression,
            ..Default::default()
        };
        match &self.kind {
            TunnelKind::Http {
                subdomain,
                custom_domains,
                locations,
                host_header_rewrite,
                http_user,
                http_password,
                request_headers,
                response_headers,
            } => {
                m.subdomain = subdomain.clone().unwrap_or_default();
                m.custom_domains = custom_domains.clone();
                m.locations = locations.clone();
                m.host_header_rewrite = host_header_rewrite.clone().unwrap_or_default();
                m.http_user = http_user.clone().unwrap_or_default();
                m.http_pwd = http_password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
                m.headers = request_headers.clone();
                m.response_headers = response_headers.clone();
            }
            TunnelKind::Tcp { remote_port } => m.remote_port = *remote_port,
        }
        m
    }

    /// Where the tunnel connects on this side, read from `host:port` once for every caller.
    pub fn local(&self) -> super::Local {
        let (host, port) = self.local_addr.rsplit_once(':').unwrap_or((&self.local_addr, ""));
        port.parse().map_or(super::Local::Unreadable, |p| super::Local::Addr(host.to_string(), p))
    }

    /// Whether this tunnel's local target is the proxy on `proxy`.
    pub fn reaches_proxy(&self, proxy: SocketAddr) -> bool {
        self.local().addr().is_some_and(|(host, port)| reaches_proxy(host, port, proxy))
    }
}

/// Name of the tunnel burrow registers when no config file lists `[[proxies]]`.
pub const DEFAULT_TUNNEL: &str = "web";

/// The http tunnel that exposes the local proxy.
pub fn default_tunnel(subdomain: Option<String>, proxy: SocketAddr) -> TunnelConfig {
    TunnelConfig {
        name: DEFAULT_TUNNEL.into(),
        kind: TunnelKind::Http {
            subdomain,
            custom_domains: vec![],
            locations: vec![],
            host_header_rewrite: None,
            http_user: None,
            http_password: None,
            request_headers: BTreeMap::new(),
            response_headers: BTreeMap::new(),
        },
        local_addr: proxy.to_string(),
        use_encryption: false,
        use_compression: false,
        public_url: None,
    }
}

fn validate_subdomain(name: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            name,
            v,
            "a subdomain is one DNS label: letters, digits and inner hyphens, at most 63 characters",
            format!("{name}=myapp"),
        ))
    }
}

/// Completes the tunnels of a configuration the native client can serve: a reservation's default
/// http tunnel (`reserved`), the default tunnel with `BURROW_SUBDOMAIN` when the file lists none,
/// or the file's, its first http tunnel's subdomain overridden by `BURROW_SUBDOMAIN`.
pub(super) fn complete(
    env: &Env,
    tunnels: &mut Vec<TunnelConfig>,
    reserved: bool,
    proxy_addr: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    if reserved {
        // The default http tunnel; the reservation names its subdomain and public URL.
        let target = proxy_addr.ok_or_else(|| {
            ConfigError::new(
                "BURROW_PROXY_ADDR",
                "off",
                "reserved tunnels serve the local proxy; it cannot be off with BURROW_API_URL",
                format!("BURROW_PROXY_ADDR={}", super::DEFAULT_PROXY_ADDR),
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
            ConfigError::new("BURROW_PROXY_ADDR", "off", "the default http tunnel serves the local proxy; with the proxy off, list tunnels in an frpc config file", format!("BURROW_PROXY_ADDR={}", super::DEFAULT_PROXY_ADDR))
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
    Ok(())
}
