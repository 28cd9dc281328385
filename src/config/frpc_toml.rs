//! The subset of frpc's TOML configuration (0.52+) that burrow reads.
//!
//! Parsing is strict, as frpc's is since 0.55: an unknown key is an error naming the key, so a
//! typo never silently turns into a default. Keys frpc knows but burrow's native client has no use
//! for (`log.*`, `webServer.*`, `loginFailExit`, keepalive tuning) are accepted and ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, Secret, ServerConfig, TunnelConfig, TunnelKind, Wire};

/// A parsed frpc TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FrpcFile {
    #[serde(skip)]
    path: PathBuf,
    /// The whole file as parsed, for handing to frpc unchanged (plus burrow's admin settings).
    #[serde(skip)]
    pub raw: toml::Table,
    /// What in the file the native client cannot serve (kcp, udp proxies, …): frpc must.
    #[serde(skip)]
    pub native_gap: Option<String>,
    server_addr: Option<String>,
    server_port: Option<u16>,
    user: Option<String>,
    #[allow(dead_code)]
    login_fail_exit: Option<bool>,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    transport: Transport,
    #[serde(default)]
    metadatas: BTreeMap<String, String>,
    #[allow(dead_code)]
    log: Option<toml::Value>,
    #[allow(dead_code)]
    web_server: Option<toml::Value>,
    #[serde(default)]
    proxies: Vec<Proxy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Auth {
    #[allow(dead_code)] // read by `native_gap` from the raw table
    method: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Transport {
    protocol: Option<String>,
    tcp_mux: Option<bool>,
    #[allow(dead_code)]
    tcp_mux_keepalive_interval: Option<i64>,
    wire_protocol: Option<String>,
    #[serde(rename = "proxyURL")]
    proxy_url: Option<String>,
    pool_count: Option<u32>,
    heartbeat_interval: Option<i64>,
    heartbeat_timeout: Option<i64>,
    #[serde(default)]
    tls: Tls,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Tls {
    enable: Option<bool>,
    server_name: Option<String>,
    trusted_ca_file: Option<PathBuf>,
    #[allow(dead_code)]
    #[serde(rename = "disableCustomTLSFirstByte")]
    disable_custom_tls_first_byte: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Proxy {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(rename = "localIP")]
    local_ip: Option<String>,
    local_port: Option<u16>,
    subdomain: Option<String>,
    #[serde(default)]
    custom_domains: Vec<String>,
    #[serde(default)]
    locations: Vec<String>,
    host_header_rewrite: Option<String>,
    #[serde(rename = "httpUser")]
    http_user: Option<String>,
    #[serde(rename = "httpPassword")]
    http_password: Option<String>,
    #[serde(default)]
    request_headers: Headers,
    #[serde(default)]
    response_headers: Headers,
    remote_port: Option<u16>,
    #[serde(default)]
    transport: ProxyTransport,
    #[allow(dead_code)]
    #[serde(default)]
    metadatas: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Headers {
    #[serde(default)]
    set: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProxyTransport {
    #[serde(default)]
    use_encryption: bool,
    #[serde(default)]
    use_compression: bool,
}

const EXAMPLE: &str = "serverAddr = \"frps.example.com\" / [[proxies]] name = \"web\" type = \"http\" localPort = 8080 subdomain = \"myapp\"";

impl FrpcFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "BURROW_CONFIG",
                path.display().to_string(),
                format!("cannot read the file: {e}"),
                "BURROW_CONFIG=/path/to/frpc.toml",
            )
        })?;
        Self::parse(path, &text)
    }

    /// Parses TOML text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let describe = |e: toml::de::Error| {
            let at_pos = e.span().map(|s| line_col(text, s.start));
            let mut msg = e.message().to_string();
            // toml quotes the offending value; on a secret's line that would print the secret.
            if let Some((line, _)) = at_pos {
                let key =
                    text.lines().nth(line - 1).and_then(|l| l.split('=').next()).unwrap_or("").to_ascii_lowercase();
                if ["token", "password", "secret", "pwd"].iter().any(|k| key.contains(k)) {
                    msg = format!("invalid value for {} (value hidden; it must be a quoted string)", key.trim());
                }
            }
            let at = at_pos.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default();
            ConfigError::new(
                "BURROW_CONFIG",
                path.display().to_string(),
                format!("not a valid frpc TOML file: {msg}{at}"),
                EXAMPLE,
            )
        };
        let raw: toml::Table = toml::from_str(text).map_err(describe)?;
        // What frpc itself would refuse is refused here too, gap or not.
        let protocol = raw.get("transport").and_then(|t| t.get("protocol")).and_then(|p| p.as_str());
        let frp_knows = |p: &str| super::Protocol::from_name(p).is_some() || p == "kcp" || p == "quic";
        if let Some(p) = protocol.filter(|p| !frp_knows(p)) {
            return Err(ConfigError::new(
                format!("{}: transport.protocol", path.display()),
                p,
                "expected \"tcp\", \"websocket\", \"wss\", \"kcp\" or \"quic\"",
                "transport.protocol = \"websocket\"".to_string(),
            ));
        }
        let keys = super::frpc_keys::sort(&raw);
        if let Some((first, rest)) = keys.unknown.split_first() {
            let also = if rest.is_empty() { String::new() } else { format!(" (nor: {})", rest.join(", ")) };
            return Err(ConfigError::new(
                path.display().to_string(),
                first.clone(),
                format!(
                    "frpc {} has no such key{also}; check the spelling against frp's conf/frpc_full_example.toml",
                    super::frpc_keys::frpc_version()
                ),
                EXAMPLE,
            ));
        }
        let mut gaps = keys.frpc_only;
        gaps.extend(native_gap(&raw));
        if !gaps.is_empty() {
            let gap = describe_gaps(&gaps);
            // frpc will read this file; burrow only needs where the server is, for its events.
            let at = |path: &[&str]| path.iter().try_fold(toml::Value::Table(raw.clone()), |v, k| v.get(k).cloned());
            let text = |path: &[&str]| at(path).and_then(|v| v.as_str().map(String::from));
            let flag = |path: &[&str]| at(path).and_then(|v| v.as_bool());
            let f = FrpcFile {
                path: path.to_path_buf(),
                server_addr: text(&["serverAddr"]),
                server_port: at(&["serverPort"]).and_then(|v| v.as_integer()).and_then(|p| u16::try_from(p).ok()),
                user: text(&["user"]),
                auth: Auth { method: text(&["auth", "method"]), token: text(&["auth", "token"]) },
                transport: Transport {
                    tcp_mux: flag(&["transport", "tcpMux"]),
                    protocol: text(&["transport", "protocol"]),
                    wire_protocol: text(&["transport", "wireProtocol"]),
                    proxy_url: text(&["transport", "proxyURL"]),
                    tls: Tls {
                        enable: flag(&["transport", "tls", "enable"]),
                        server_name: text(&["transport", "tls", "serverName"]),
                        trusted_ca_file: text(&["transport", "tls", "trustedCaFile"]).map(PathBuf::from),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                native_gap: Some(gap),
                raw,
                ..Default::default()
            };
            return Ok(f);
        }
        let mut f: FrpcFile = toml::from_str(text).map_err(describe)?;
        f.raw = raw;
        f.path = path.to_path_buf();
        f.validate()?;
        Ok(f)
    }

    fn key_err(&self, key: &str, value: impl Into<String>, problem: impl Into<String>, example: &str) -> ConfigError {
        ConfigError::new(format!("{}: {key}", self.path.display()), value, problem, example.to_string())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.transport.proxy_url {
            super::parse_proxy_url("transport.proxyURL", p).map_err(|e| {
                self.key_err(
                    "transport.proxyURL",
                    e.value,
                    e.problem,
                    "transport.proxyURL = \"http://proxy.example.com:3128\"",
                )
            })?;
        }
        if let Some(w) = self.transport.wire_protocol.as_deref().filter(|w| Wire::from_name(w).is_none()) {
            return Err(self.key_err(
                "transport.wireProtocol",
                w,
                "expected \"v1\" or \"v2\" (v2 needs frps 0.69 or newer)",
                "transport.wireProtocol = \"v2\"",
            ));
        }
        if let Some(ca) = &self.transport.tls.trusted_ca_file {
            if !ca.is_file() {
                return Err(self.key_err(
                    "transport.tls.trustedCaFile",
                    ca.display().to_string(),
                    "no such file; give the PEM file of the CA that signed frps' certificate",
                    "transport.tls.trustedCaFile = \"/etc/burrow/frps-ca.pem\"",
                ));
            }
        }
        if self.server_port == Some(0) {
            return Err(self.key_err("serverPort", "0", "the port must be from 1 to 65535", "serverPort = 7000"));
        }
        if let Some(a) = &self.server_addr {
            if a.is_empty() || a.contains(['/', ' ']) {
                return Err(self.key_err(
                    "serverAddr",
                    a.clone(),
                    "expected a host name or IP address",
                    "serverAddr = \"frps.example.com\"",
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.proxies.iter().enumerate() {
            let key = |k: &str| format!("proxies[{i}].{k}");
            if p.name.is_empty() || p.name.contains(char::is_whitespace) {
                return Err(self.key_err(
                    &key("name"),
                    p.name.clone(),
                    "a proxy needs a name without spaces",
                    "name = \"web\"",
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(self.key_err(
                    &key("name"),
                    p.name.clone(),
                    "two proxies have this name; names must be unique",
                    "name = \"web2\"",
                ));
            }
            match p.ty.as_str() {
                "http" => {
                    if p.subdomain.is_none() && p.custom_domains.is_empty() {
                        return Err(self.key_err(
                            &key("subdomain"),
                            "(unset)",
                            "an http proxy needs a subdomain or customDomains",
                            "subdomain = \"myapp\"",
                        ));
                    }
                    if p.remote_port.is_some() {
                        return Err(self.key_err(
                            &key("remotePort"),
                            "set",
                            "remotePort is for tcp proxies",
                            "subdomain = \"myapp\"",
                        ));
                    }
                }
                "tcp" => {
                    if p.subdomain.is_some() || !p.custom_domains.is_empty() {
                        return Err(self.key_err(
                            &key("subdomain"),
                            "set",
                            "subdomain and customDomains are for http proxies",
                            "remotePort = 6000",
                        ));
                    }
                }
                other => unreachable!("native_gap lets only http and tcp through, not {other}"),
            }
            if p.local_port.is_none() || p.local_port == Some(0) {
                return Err(self.key_err(
                    &key("localPort"),
                    p.local_port.map(|v| v.to_string()).unwrap_or_else(|| "(unset)".into()),
                    "every proxy needs a localPort from 1 to 65535",
                    "localPort = 8080",
                ));
            }
        }
        Ok(())
    }

    /// Writes the file's server settings into `s`; returns whether the file names a server.
    pub fn apply_server(&self, s: &mut ServerConfig) -> bool {
        if let Some(a) = &self.server_addr {
            s.host = a.clone();
        }
        if let Some(p) = self.server_port {
            s.port = p;
        }
        if let Some(u) = &self.user {
            s.user = u.clone();
        }
        if let Some(t) = &self.auth.token {
            s.token = Secret::new(t.clone());
        }
        if let Some(m) = self.transport.tcp_mux {
            s.tcp_mux = m;
        }
        if let Some(w) = self.transport.wire_protocol.as_deref().and_then(Wire::from_name) {
            s.wire = w;
        }
        if let Some(p) = self.transport.protocol.as_deref().and_then(super::Protocol::from_name) {
            s.protocol = p;
        }
        if let Some(p) = &self.transport.proxy_url {
            s.proxy = match super::ProxyUrl::parse(p) {
                Ok(p) => super::ServerProxy::Explicit(p),
                // Checked by `validate` unless it is a native gap (ntlm): then frpc reads it.
                Err(_) => super::ServerProxy::FrpcOnly,
            };
        }
        if let Some(n) = self.transport.pool_count {
            s.pool_count = n;
        }
        // frpc's -1 (off) is not offered: burrow always keeps a heartbeat; positive values apply.
        if let Some(n) = self.transport.heartbeat_interval.filter(|n| *n > 0) {
            s.heartbeat_interval = std::time::Duration::from_secs(n as u64);
        }
        if let Some(n) = self.transport.heartbeat_timeout.filter(|n| *n > 0) {
            s.heartbeat_timeout = std::time::Duration::from_secs(n as u64);
        }
        if let Some(e) = self.transport.tls.enable {
            s.tls.enabled = e;
        }
        if let Some(n) = &self.transport.tls.server_name {
            s.tls.server_name = Some(n.clone());
        }
        if let Some(ca) = &self.transport.tls.trusted_ca_file {
            s.tls.ca_file = Some(ca.clone());
        }
        s.metas.extend(self.metadatas.clone());
        self.server_addr.is_some()
    }

    /// The `[[proxies]]`, validated.
    pub fn tunnels(&self) -> Result<Vec<TunnelConfig>, ConfigError> {
        Ok(self
            .proxies
            .iter()
            .map(|p| {
                let ip = p.local_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
                let kind = if p.ty == "http" {
                    TunnelKind::Http {
                        subdomain: p.subdomain.clone(),
                        custom_domains: p.custom_domains.clone(),
                        locations: p.locations.clone(),
                        host_header_rewrite: p.host_header_rewrite.clone(),
                        http_user: p.http_user.clone(),
                        http_password: p.http_password.clone().map(Secret::new),
                        request_headers: p.request_headers.set.clone(),
                        response_headers: p.response_headers.set.clone(),
                    }
                } else {
                    TunnelKind::Tcp { remote_port: p.remote_port.unwrap_or(0) }
                };
                TunnelConfig {
                    name: p.name.clone(),
                    kind,
                    local_addr: crate::transport::host_port(&ip, p.local_port.unwrap_or_default()),
                    use_encryption: p.transport.use_encryption,
                    use_compression: p.transport.use_compression,
                    public_url: None,
                }
            })
            .collect())
    }
}

/// The keys only frpc serves, for a message: siblings grouped (`healthCheck.{path,type}`), the
/// first dozen groups named.
fn describe_gaps(gaps: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for g in gaps {
        let (parent, leaf) = match g.rsplit_once('.') {
            Some((p, l)) if !g.contains(' ') => (p.to_string(), l.to_string()),
            _ => (String::new(), g.clone()),
        };
        match groups.last_mut() {
            Some((p, leaves)) if !parent.is_empty() && *p == parent => leaves.push(leaf),
            _ => groups.push((parent, vec![leaf])),
        }
    }
    let shown: Vec<String> = groups
        .iter()
        .take(SHOWN)
        .map(|(p, l)| match (p.is_empty(), l.len()) {
            (true, _) => l.join(", "),
            (false, 1) => format!("{p}.{}", l[0]),
            (false, _) => format!("{p}.{{{}}}", l.join(",")),
        })
        .collect();
    let mut out = shown.join(", ");
    if groups.len() > SHOWN {
        out += &format!(" and {} more", groups.len() - SHOWN);
    }
    out
}

/// Values in a parsed frpc file that only frpc serves (its keys are sorted by `frpc_keys`).
pub fn native_gap(raw: &toml::Table) -> Vec<String> {
    let mut gaps = Vec::new();
    let table = |v: Option<&toml::Value>| v.and_then(|v| v.as_table()).cloned().unwrap_or_default();
    let transport = table(raw.get("transport"));
    if let Some(p) =
        transport.get("protocol").and_then(|v| v.as_str()).filter(|p| super::Protocol::from_name(p).is_none())
    {
        gaps.push(format!("transport.protocol = \"{p}\" (the native client speaks tcp, websocket and wss)"));
    }
    if transport.get("proxyURL").and_then(|v| v.as_str()).is_some_and(|p| p.starts_with("ntlm:")) {
        gaps.push("transport.proxyURL = \"ntlm://…\" (the native client speaks http and socks5 proxies)".into());
    }
    if let Some(m) = table(raw.get("auth")).get("method").and_then(|v| v.as_str()).filter(|m| *m != "token") {
        gaps.push(format!("auth.method = \"{m}\" (the native client authenticates with a token)"));
    }
    gaps
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;

    fn parse(text: &str) -> Result<FrpcFile, ConfigError> {
        FrpcFile::parse(Path::new("frpc.toml"), text)
    }

    #[test]
    fn full_subset() {
        let f = parse(
            r#"
serverAddr = "127.0.0.1"
serverPort = 7001
user = "alice"
loginFailExit = false
auth.method = "token"
auth.token = "tok"
transport.tcpMux = false
transport.poolCount = 3
transport.tls.enable = false
transport.tls.serverName = "frps.local"
metadatas.k = "v"
log.level = "debug"
webServer.port = 7400

[[proxies]]
name = "web"
type = "http"
localPort = 5002
subdomain = "app"
customDomains = ["a.example.com"]
locations = ["/", "/api"]
hostHeaderRewrite = "inner"
httpUser = "u"
httpPassword = "p"
requestHeaders.set.x-from = "frp"
responseHeaders.set.x-resp = "yes"
transport.useEncryption = true

[[proxies]]
name = "ssh"
type = "tcp"
localIP = "::1"
localPort = 22
remotePort = 6000
transport.useCompression = true
"#,
        )
        .unwrap();
        let mut s = ServerConfig::new("", 7000, Secret::default());
        assert!(f.apply_server(&mut s));
        assert_eq!((s.host.as_str(), s.port, s.user.as_str(), s.token.expose()), ("127.0.0.1", 7001, "alice", "tok"));
        assert!(!s.tcp_mux && !s.tls.enabled);
        assert_eq!(s.pool_count, 3);
        assert_eq!(s.metas.get("k").map(String::as_str), Some("v"));
        let t = f.tunnels().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].local_addr, "127.0.0.1:5002");
        assert!(t[0].use_encryption && !t[0].use_compression);
        match &t[0].kind {
            TunnelKind::Http { subdomain, custom_domains, locations, request_headers, .. } => {
                assert_eq!(subdomain.as_deref(), Some("app"));
                assert_eq!(custom_domains, &["a.example.com"]);
                assert_eq!(locations.len(), 2);
                assert_eq!(request_headers.get("x-from").map(String::as_str), Some("frp"));
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(t[1].local_addr, "[::1]:22");
        assert_eq!(t[1].kind, TunnelKind::Tcp { remote_port: 6000 });
    }

    #[test]
    fn features_only_frpc_has_are_gaps_not_errors() {
        for (text, want) in [
            ("serverAddr = \"h\"\ntransport.protocol = \"kcp\"\n", "transport.protocol = \"kcp\""),
            ("auth.method = \"oidc\"\n", "auth.method"),
            ("[[proxies]]\nname=\"a\"\ntype=\"udp\"\nlocalPort=1\nremotePort=2\n", "proxies[0] (type \"udp\")"),
            ("transport.dialServerTimeout = 5\n", "transport.dialServerTimeout"),
            // One per family of frpc's keys the native client does not serve.
            ("includes = [\"./confd/*.toml\"]\n", "includes"),
            ("store.path = \"./store.json\"\n", "store.path"),
            ("virtualNet.address = \"100.86.0.1/24\"\n", "virtualNet.address"),
            ("featureGates.VirtualNet = true\n", "featureGates"),
            ("natHoleStunServer = \"stun.example.com:3478\"\nudpPacketSize = 1500\n", "natHoleStunServer, udpPacketSize"),
            ("auth.tokenSource.type = \"file\"\nauth.tokenSource.file.path = \"/t\"\n", "auth.tokenSource.file.path, auth.tokenSource.type"),
            ("auth.oidc.clientID = \"c\"\n", "auth.oidc.clientID"),
            ("transport.quic.keepalivePeriod = 10\n", "transport.quic.keepalivePeriod"),
            ("transport.tls.certFile = \"c.pem\"\ntransport.tls.keyFile = \"k.pem\"\n", "transport.tls.{certFile,keyFile}"),
            ("start = [\"web\"]\ndnsServer = \"8.8.8.8\"\n", "dnsServer, start"),
            ("[[proxies]]\nname=\"a\"\ntype=\"tcp\"\nlocalPort=1\ntransport.proxyProtocolVersion=\"v2\"\n", "proxies[0].transport.proxyProtocolVersion"),
            ("[[proxies]]\nname=\"a\"\ntype=\"http\"\nlocalPort=1\nsubdomain=\"s\"\nrouteByHTTPUser=\"u\"\nenabled=false\n", "proxies[0].{enabled,routeByHTTPUser}"),
            ("[[proxies]]\nname=\"a\"\ntype=\"stcp\"\nsecretKey=\"k\"\nlocalPort=1\n", "proxies[0] (type \"stcp\")"),
            ("[[visitors]]\nname=\"v\"\ntype=\"xtcp\"\nserverName=\"a\"\nbindPort=1\n", "visitors[0]"),
            ("[[proxies]]\nname=\"a\"\ntype=\"tcp\"\n[proxies.plugin]\ntype=\"socks5\"\n", "plugin"),
        ] {
            let f = parse(text).unwrap();
            assert!(f.native_gap.as_deref().unwrap_or_default().contains(want), "{text}: {:?}", f.native_gap);
        }
        assert!(parse("serverAddr = \"h\"\n").unwrap().native_gap.is_none());
    }

    #[test]
    fn websocket_and_wss_are_native_kcp_and_quic_gaps_others_invalid() {
        for (p, want) in [("tcp", Protocol::Tcp), ("websocket", Protocol::Websocket), ("wss", Protocol::Wss)] {
            let f = parse(&format!("transport.protocol = \"{p}\"\n")).unwrap();
            assert!(f.native_gap.is_none(), "{p}: {:?}", f.native_gap);
            let mut s = ServerConfig::new("", 7000, Secret::default());
            f.apply_server(&mut s);
            assert_eq!(s.protocol, want);
        }
        for p in ["kcp", "quic"] {
            let f = parse(&format!("transport.protocol = \"{p}\"\n")).unwrap();
            assert!(f.native_gap.is_some_and(|g| g.contains(p)), "{p}");
        }
        let e = parse("transport.protocol = \"ws\"\n").unwrap_err().to_string();
        assert!(e.contains("transport.protocol=ws is invalid") && e.contains("\"websocket\""), "{e}");
    }

    #[test]
    fn wire_protocol_is_native_and_checked() {
        let f = parse("transport.wireProtocol = \"v2\"\n").unwrap();
        assert!(f.native_gap.is_none(), "{:?}", f.native_gap);
        let mut s = ServerConfig::new("", 7000, Secret::default());
        f.apply_server(&mut s);
        assert_eq!(s.wire, Wire::V2);
        let e = parse("transport.wireProtocol = \"v3\"\n").unwrap_err().to_string();
        assert!(e.contains("transport.wireProtocol") && e.contains("v3") && e.contains("\"v1\" or \"v2\""), "{e}");
    }

    #[test]
    fn secrets_in_bad_values_are_hidden() {
        for text in ["auth.token = 987654321\n", "[[proxies]]\nname=\"a\"\ntype=\"http\"\nhttpPassword = 987654321\n"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(!e.contains("987654321"), "{e}");
            assert!(e.contains("value hidden"), "{e}");
        }
    }

    #[test]
    fn strict_and_clear_errors() {
        let cases: &[(&str, &str)] = &[
            ("serverAddr = \"h\"\nfoo = 1\n", "frpc.toml=foo is invalid: frpc 0.70.1 has no such key"),
            ("serverAddr = \n", "line 1"),

            ("[[proxies]]\nname=\"a\"\ntype=\"http\"\nlocalPort=1\n", "proxies[0].subdomain"),
            ("[[proxies]]\nname=\"a\"\ntype=\"tcp\"\n", "proxies[0].localPort"),
            ("[[proxies]]\nname=\"a\"\ntype=\"tcp\"\nlocalPort=1\n[[proxies]]\nname=\"a\"\ntype=\"tcp\"\nlocalPort=2\n", "proxies[1].name"),
            ("[[proxies]]\nname=\"a\"\ntype=\"tcp\"\nlocalPort=1\nbogus=2\n", "proxies[0].bogus"),

            ("serverPort = 70000\n", "70000"),
            ("transport.tls.trustedCaFile = \"/no/such/ca.pem\"\n", "trustedCaFile"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
