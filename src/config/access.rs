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
    // `localhost.` is `localhost` to frpc's resolver.
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    let local = |ip: IpAddr| {
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || ip == proxy.ip().to_canonical()
    };
    match lower.parse::<IpAddr>() {
        Ok(ip) => local(ip),
        // RFC 6761: this machine, whatever a resolver would say.
        Err(_) if lower == "localhost" || lower.ends_with(".localhost") || lower.is_empty() => true,
        Err(_) => resolves_locally(&lower, port, local),
    }
}

/// Whether a name on the proxy's port resolves to an address `local` accepts. Looked up once per
/// process, so the configuration check, the native client and frpc's door get one answer (a name
/// that resolves differently later cannot slip between them); a name that does not resolve is
/// taken for the proxy.
fn resolves_locally(name: &str, port: u16, local: impl Fn(IpAddr) -> bool) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<(String, u16), Vec<IpAddr>>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let addrs = seen
        .entry((name.to_string(), port))
        .or_insert_with(|| (name, port).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default());
    addrs.is_empty() || addrs.iter().any(|ip| local(*ip))
}

/// A `[[proxies]]` entry of an frpc file, as far as where it leads: kept whether or not the
/// native client could serve the file, since frpc will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProxy {
    pub name: String,
    pub kind: String,
    pub local: Local,
    pub http_health_check: bool,
}

/// Where a proxy of an frpc file connects on this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// `localIP` (frpc's default 127.0.0.1) and `localPort`.
    Addr(String, u16),
    /// A plugin's `localAddr` (`https2http` and the like).
    Plugin(String, u16),
    /// A port or address frpc may read another way than burrow (a float, a string).
    Unreadable,
    /// Nowhere local: a plugin that serves by itself (`static_file`, `socks5`, …).
    Nowhere,
}

impl Local {
    /// The address it connects to.
    pub fn addr(&self) -> Option<(&str, u16)> {
        match self {
            Local::Addr(h, p) | Local::Plugin(h, p) => Some((h, *p)),
            _ => None,
        }
    }

    /// Where a `[[proxies]]` table connects.
    pub fn of(p: &toml::Table) -> Local {
        let port = |v: &toml::Value| match v {
            toml::Value::Integer(n) => u16::try_from(*n).ok(),
            // frp reads TOML through JSON: 8080.0 is a port to it.
            toml::Value::Float(f) if f.fract() == 0.0 && (1.0..=65535.0).contains(f) => Some(*f as u16),
            _ => None,
        };
        if let Some(plugin) = p.get("plugin").and_then(toml::Value::as_table) {
            return match plugin.get("localAddr") {
                None => Local::Nowhere,
                Some(toml::Value::String(a)) => a
                    .rsplit_once(':')
                    .and_then(|(h, pt)| Some(Local::Plugin(h.to_string(), pt.parse().ok()?)))
                    .unwrap_or(Local::Unreadable),
                Some(_) => Local::Unreadable,
            };
        }
        let ip = match p.get("localIP") {
            None => "127.0.0.1".to_string(),
            Some(toml::Value::String(ip)) => ip.clone(),
            Some(_) => return Local::Unreadable,
        };
        match p.get("localPort") {
            None => Local::Nowhere,
            Some(v) => port(v).map_or(Local::Unreadable, |port| Local::Addr(ip, port)),
        }
    }
}

/// The `[[proxies]]` of an frpc file.
pub fn file_proxies(raw: &toml::Table) -> Vec<FileProxy> {
    let proxies = raw.get("proxies").and_then(toml::Value::as_array);
    let text = |p: &toml::Table, k: &str| p.get(k).and_then(toml::Value::as_str).map(str::to_string);
    proxies
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .map(|p| FileProxy {
            name: text(p, "name").unwrap_or_else(|| "?".into()),
            kind: text(p, "type").unwrap_or_else(|| "tcp".into()),
            local: Local::of(p),
            http_health_check: p.get("healthCheck").and_then(|h| h.get("type")).and_then(toml::Value::as_str)
                == Some("http"),
        })
        .collect()
}

/// Protected means every tunnel, in every mode: each must go through burrow's proxy, which is
/// what enforces it — the model's tunnels, and the proxies of a file frpc would run, even when
/// only frpc can run it. Whenever the policy guards anything (`guarded`: protected, or a hidden
/// route), a file must not hold proxies burrow cannot see or point at the door. Answers the
/// tunnels that are not http (the policy sees only the HTTP inside them).
pub(super) fn check_guarded_tunnels(
    tunnels: &[TunnelConfig],
    file: Option<&toml::Table>,
    proxy: Option<SocketAddr>,
    mode: Mode,
    guarded: bool,
) -> Result<Vec<String>, ConfigError> {
    if !guarded {
        return Ok(Vec::new());
    }
    let proxy_addr = proxy.map_or_else(|| "off".to_string(), |a| a.to_string());
    let var = if mode == Mode::Protected { "BURROW_PUBLIC_ACCESS" } else { "BURROW_ROUTES" };
    let fix = |problem: String| {
        let example = if mode == Mode::Protected {
            format!(
                "every tunnel's localIP/localPort is BURROW_PROXY_ADDR ({proxy_addr}), or BURROW_PUBLIC_ACCESS=open"
            )
        } else {
            "the file's proxies listed in it, each with a plain localIP and an integer localPort".to_string()
        };
        ConfigError::new(
            var,
            if mode == Mode::Protected { "protected" } else { "(a ;public=no route)" },
            problem,
            example,
        )
    };
    // Proxies frpc would load from elsewhere: neither checked here nor sent through the door.
    for key in ["includes", "store"] {
        if file.is_some_and(|f| f.contains_key(key)) {
            return Err(fix(format!(
                "the frpc file's `{key}` adds proxies burrow cannot check or send through its proxy's access policy; list the proxies in the file itself"
            )));
        }
    }
    let model = tunnels.iter().map(|t| FileProxy {
        name: t.name.clone(),
        kind: t.kind.type_name().into(),
        local: t.local(),
        http_health_check: false,
    });
    let mut unprotected = Vec::new();
    for p in model.chain(file.map(file_proxies).unwrap_or_default()) {
        if p.local == Local::Unreadable {
            return Err(fix(format!(
                "proxy {} has a localIP, localPort or plugin localAddr that frpc may read otherwise than burrow; write the port as an integer and the address as a string",
                p.name
            )));
        }
        if mode != Mode::Protected {
            continue;
        }
        let at_proxy = proxy.zip(p.local.addr()).is_some_and(|(a, (h, port))| reaches_proxy(h, port, a));
        if !at_proxy {
            let to = p
                .local
                .addr()
                .map_or_else(|| "a plugin that serves by itself".into(), |(h, port)| format!("{h}:{port}"));
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
            "localhost.",
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
        assert_eq!(p[0].local, Local::Addr("127.0.0.1".into(), 5002));
        assert_eq!((p[1].kind.as_str(), p[1].local.clone()), ("tcp", Local::Addr("0.0.0.0".into(), 8080)));
        assert_eq!(p[2].local, Local::Nowhere);
        let proxy = Some("127.0.0.1:8080".parse().unwrap());
        let e = check_guarded_tunnels(&[], Some(&raw), proxy, Mode::Protected, true).unwrap_err();
        assert!(e.to_string().contains("tunnel web (http) goes to 127.0.0.1:5002"), "{e}");
        assert!(check_guarded_tunnels(&[], Some(&raw), proxy, Mode::Open, true).unwrap().is_empty());
        // What frpc reads its own way, or loads from elsewhere, is refused while anything is guarded.
        for (text, why) in [
            ("[[proxies]]\nname = \"f\"\ntype = \"http\"\nlocalPort = 8080.5\n", "proxy f has a localIP"),
            ("[[proxies]]\nname = \"s\"\ntype = \"http\"\nlocalPort = \"8080\"\n", "proxy s has a localIP"),
            ("includes = [\"/etc/frpc.d/*.toml\"]\n", "`includes`"),
            ("store.path = \"./store.json\"\n", "`store`"),
        ] {
            let raw: toml::Table = toml::from_str(text).unwrap();
            let e = check_guarded_tunnels(&[], Some(&raw), proxy, Mode::Open, true).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
            assert!(check_guarded_tunnels(&[], Some(&raw), proxy, Mode::Open, false).is_ok());
        }
        let plugin: toml::Table = toml::from_str(
            "[[proxies]]\nname = \"tls\"\ntype = \"https\"\n[proxies.plugin]\ntype = \"https2http\"\nlocalAddr = \"127.0.0.1:8080\"\n\
             [[proxies]]\nname = \"f\"\ntype = \"http\"\nlocalPort = 8080.0\n",
        )
        .unwrap();
        let p = file_proxies(&plugin);
        assert_eq!(
            (p[0].local.clone(), p[1].local.clone()),
            (Local::Plugin("127.0.0.1".into(), 8080), Local::Addr("127.0.0.1".into(), 8080))
        );
        assert_eq!(check_guarded_tunnels(&[], Some(&plugin), proxy, Mode::Protected, true).unwrap(), ["tls"]);
    }
}
