//! Who may use the public URL, as configured (`BURROW_PUBLIC_ACCESS`, `BURROW_PUBLIC_AUTH`,
//! `BURROW_SHARE_*`), and the rule that makes it hold: every tunnel of a protected configuration
//! goes through burrow's proxy, whichever client serves it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::{get, ConfigError, Env, Secret, TunnelConfig};
use crate::proxy::access::Mode;

/// The shortest `BURROW_PUBLIC_AUTH` password.
pub const MIN_PASSWORD: usize = 8;
/// The shortest `BURROW_SHARE_KEY`, and how many distinct characters it needs at least.
pub const MIN_SHARE_KEY: (usize, usize) = (32, 8);

/// Access control on the public URL, as configured.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// `BURROW_PUBLIC_ACCESS`.
    pub mode: Mode,
    /// `BURROW_PUBLIC_AUTH`: `user:password`.
    pub basic: Option<Secret>,
    /// `BURROW_SHARE_KEY`; `None`: a random key per process.
    pub share_key: Option<Secret>,
    /// `BURROW_SHARE_GENERATION`.
    pub share_generation: u64,
    /// Tunnels of a protected configuration that are not http: the policy sees only the HTTP
    /// inside them (each gets a `tcp_unprotected` warning at start).
    pub unprotected: Vec<String>,
}

impl AccessConfig {
    /// The proxy's policy.
    pub fn policy(&self) -> crate::proxy::Access {
        crate::proxy::Access::new(
            self.mode,
            self.basic.as_ref().map(Secret::expose),
            self.share_key.as_ref().map(|k| k.expose().as_bytes()),
            self.share_generation,
        )
    }
}

/// Whether a local target `host:port` would reach the proxy listening on `proxy`: the proxy's
/// port and any loopback address (127.0.0.0/8, `::1`, `::ffff:127.0.0.0/104`), an unspecified one
/// (`0.0.0.0`, `::`, which connect to this machine), `localhost`, the proxy's own address, or a
/// name that resolves to any of them (`127.1` too, as the resolver reads it). Decided once here
/// for the native client, frpc's door and the configuration check; in doubt, it is the proxy.
pub fn reaches_proxy(host: &str, port: u16, proxy: SocketAddr) -> bool {
    if port != proxy.port() {
        return false;
    }
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    let local = |ip: IpAddr| {
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || ip == proxy.ip().to_canonical()
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => local(ip),
        // RFC 6761: this machine, whatever a resolver would say.
        Err(_) if lower == "localhost" || lower.ends_with(".localhost") || lower.is_empty() => true,
        Err(_) => (host, port).to_socket_addrs().is_ok_and(|mut addrs| addrs.any(|a| local(a.ip()))),
    }
}

/// A `[[proxies]]` entry of an frpc file, as far as where it leads: kept whether or not the
/// native client could serve the file, since frpc will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProxy {
    pub name: String,
    pub kind: String,
    /// `localIP` (frpc's default 127.0.0.1) and `localPort`; `None` for a plugin or no port.
    pub local: Option<(String, u16)>,
    pub http_health_check: bool,
}

/// The `[[proxies]]` of an frpc file.
pub fn file_proxies(raw: &toml::Table) -> Vec<FileProxy> {
    let proxies = raw.get("proxies").and_then(toml::Value::as_array);
    let text = |p: &toml::Table, k: &str| p.get(k).and_then(toml::Value::as_str).map(str::to_string);
    proxies
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .map(|p| {
            let port = p.get("localPort").and_then(toml::Value::as_integer).and_then(|n| u16::try_from(n).ok());
            let plugin = p.contains_key("plugin");
            FileProxy {
                name: text(p, "name").unwrap_or_else(|| "?".into()),
                kind: text(p, "type").unwrap_or_else(|| "tcp".into()),
                local: port
                    .filter(|_| !plugin)
                    .map(|port| (text(p, "localIP").unwrap_or_else(|| "127.0.0.1".into()), port)),
                http_health_check: p.get("healthCheck").and_then(|h| h.get("type")).and_then(toml::Value::as_str)
                    == Some("http"),
            }
        })
        .collect()
}

/// Protected means every tunnel, in every mode: each must go through burrow's proxy, which is
/// what enforces it — the model's tunnels, and the proxies of a file frpc would run, even when
/// only frpc can run it. Answers the tunnels that are not http (the policy sees only the HTTP
/// inside them).
pub(super) fn check_guarded_tunnels(
    tunnels: &[TunnelConfig],
    file: Option<&toml::Table>,
    proxy: Option<SocketAddr>,
    mode: Mode,
) -> Result<Vec<String>, ConfigError> {
    if mode != Mode::Protected {
        return Ok(Vec::new());
    }
    let proxy_addr = proxy.map_or_else(|| "off".to_string(), |a| a.to_string());
    let fix = |problem: String| {
        ConfigError::new(
            "BURROW_PUBLIC_ACCESS",
            "protected",
            problem,
            format!(
                "every tunnel's localIP/localPort is BURROW_PROXY_ADDR ({proxy_addr}), or BURROW_PUBLIC_ACCESS=open"
            ),
        )
    };
    let model = tunnels.iter().map(|t| {
        let (host, port) = t.local_addr.rsplit_once(':').unwrap_or((&t.local_addr, ""));
        let local = port.parse().ok().map(|p| (host.to_string(), p));
        FileProxy { name: t.name.clone(), kind: t.kind.type_name().into(), local, http_health_check: false }
    });
    let mut unprotected = Vec::new();
    for p in model.chain(file.map(file_proxies).unwrap_or_default()) {
        let at_proxy = proxy.zip(p.local.as_ref()).is_some_and(|(a, (h, port))| reaches_proxy(h, *port, a));
        if !at_proxy {
            let to = p.local.map_or_else(|| "a plugin or no local port".into(), |(h, port)| format!("{h}:{port}"));
            return Err(fix(format!(
                "tunnel {} ({}) goes to {to}, not through burrow's proxy, so no one would ask its visitors for credentials; point it at the proxy, or remove it",
                p.name, p.kind
            )));
        }
        if p.http_health_check {
            return Err(fix(format!(
                "proxy {} has healthCheck.type = \"http\", whose checks a protected URL would refuse (401); use healthCheck.type = \"tcp\"",
                p.name
            )));
        }
        if p.kind != "http" && !unprotected.contains(&p.name) {
            unprotected.push(p.name);
        }
    }
    Ok(unprotected)
}

/// Reads the access-control variables.
pub(super) fn access_config(env: &Env) -> Result<AccessConfig, ConfigError> {
    let mode = match get(env, "BURROW_PUBLIC_ACCESS").map(|v| (v, v.trim().to_ascii_lowercase())) {
        None => Mode::Open,
        Some((_, m)) if m == "open" => Mode::Open,
        Some((_, m)) if m == "protected" => Mode::Protected,
        Some((v, _)) => {
            return Err(ConfigError::new(
                "BURROW_PUBLIC_ACCESS",
                v,
                "expected open or protected",
                "BURROW_PUBLIC_ACCESS=protected",
            ))
        }
    };
    let example = "BURROW_PUBLIC_AUTH=ann:$(openssl rand -hex 12)";
    let basic = match get(env, "BURROW_PUBLIC_AUTH") {
        None => None,
        Some(v) => {
            let Some((user, password)) = v.split_once(':').filter(|(u, p)| !u.is_empty() && !p.is_empty()) else {
                return Err(ConfigError::new(
                    "BURROW_PUBLIC_AUTH",
                    "***",
                    "expected user:password, both non-empty, without control characters",
                    example,
                ));
            };
            if v.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    "BURROW_PUBLIC_AUTH",
                    "***",
                    "expected user:password, both non-empty, without control characters",
                    example,
                ));
            }
            if password.chars().count() < MIN_PASSWORD {
                return Err(ConfigError::new(
                    "BURROW_PUBLIC_AUTH",
                    format!("{user}:***"),
                    format!("the password must be at least {MIN_PASSWORD} characters; a short one is guessed quickly"),
                    example,
                ));
            }
            if mode == Mode::Open {
                return Err(ConfigError::new(
                    "BURROW_PUBLIC_AUTH",
                    "***",
                    "it protects nothing while BURROW_PUBLIC_ACCESS is open (the default); set BURROW_PUBLIC_ACCESS=protected, or unset BURROW_PUBLIC_AUTH",
                    "BURROW_PUBLIC_ACCESS=protected",
                ));
            }
            Some(Secret::new(v))
        }
    };
    let share_key = match get(env, "BURROW_SHARE_KEY") {
        None => None,
        Some(k) => {
            let (len, distinct) = MIN_SHARE_KEY;
            let mut chars: Vec<char> = k.chars().collect();
            let n = chars.len();
            chars.sort_unstable();
            chars.dedup();
            if n < len || chars.len() < distinct {
                return Err(ConfigError::new(
                    "BURROW_SHARE_KEY",
                    "***",
                    format!("the share key must be at least {len} characters with at least {distinct} different ones; a weak key lets anyone forge share links"),
                    "BURROW_SHARE_KEY=$(openssl rand -hex 32)",
                ));
            }
            Some(Secret::new(k))
        }
    };
    let share_generation = match get(env, "BURROW_SHARE_GENERATION") {
        None => 0,
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            ConfigError::new(
                "BURROW_SHARE_GENERATION",
                v,
                "expected a whole number from 0 (the generation the last shares_revoked event gave)",
                "BURROW_SHARE_GENERATION=0",
            )
        })?,
    };
    Ok(AccessConfig { mode, basic, share_key, share_generation, unprotected: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_this_machine_reaches_the_proxy() {
        let on_loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        for host in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "127.1",
            "0.0.0.0",
            "::",
            "[::]",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            "[::ffff:127.0.0.1]",
            "localhost",
            "LOCALHOST",
            "app.localhost",
            "2130706433",
            "0x7f.1",
        ] {
            assert!(reaches_proxy(host, 8080, on_loopback), "{host}");
            assert!(reaches_proxy(host, 8080, everywhere), "{host}");
        }
        assert!(!reaches_proxy("127.0.0.1", 8081, on_loopback));
        assert!(!reaches_proxy("192.0.2.5", 8080, on_loopback));
        let on_lan: SocketAddr = "192.0.2.5:8080".parse().unwrap();
        assert!(reaches_proxy("192.0.2.5", 8080, on_lan));
        assert!(reaches_proxy("::ffff:192.0.2.5", 8080, on_lan));
    }

    #[test]
    fn a_files_proxies_are_read_whatever_else_it_holds() {
        let raw: toml::Table = toml::from_str(
            "transport.dialServerTimeout = 10\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = 5002\nsubdomain = \"s\"\n\
             [[proxies]]\nname = \"db\"\ntype = \"tcp\"\nlocalIP = \"0.0.0.0\"\nlocalPort = 8080\nremotePort = 7000\n\
             [[proxies]]\nname = \"files\"\ntype = \"http\"\nlocalPort = 8080\n[proxies.plugin]\ntype = \"static_file\"\n",
        )
        .unwrap();
        let p = file_proxies(&raw);
        assert_eq!(p[0].local, Some(("127.0.0.1".into(), 5002)));
        assert_eq!((p[1].kind.as_str(), p[1].local.clone()), ("tcp", Some(("0.0.0.0".into(), 8080))));
        assert_eq!(p[2].local, None);
        let proxy = Some("127.0.0.1:8080".parse().unwrap());
        let e = check_guarded_tunnels(&[], Some(&raw), proxy, Mode::Protected).unwrap_err();
        assert!(e.to_string().contains("tunnel web (http) goes to 127.0.0.1:5002"), "{e}");
        assert!(check_guarded_tunnels(&[], Some(&raw), proxy, Mode::Open).unwrap().is_empty());
    }
}
