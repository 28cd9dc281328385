//! Writing frpc's configuration: TOML for frpc ≥ 0.52, INI for older ones, always with frpc's
//! admin API enabled on loopback behind a random password, so burrow can follow frpc's tunnels.
//!
//! The file holds the frp token. It lives in a directory only burrow's user can enter, is itself
//! mode 0600, and is removed when the [`PrivateDir`] is dropped (burrow's exit), or, when burrow
//! was killed outright, by the next burrow that starts frpc.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::config::{ServerConfig, ServerProxy, TunnelConfig, TunnelKind};

/// frpc's admin API as burrow configures it.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Loopback port.
    pub port: u16,
    /// Basic-auth user.
    pub user: String,
    /// Basic-auth password (random per run).
    pub password: String,
}

/// A private temporary directory, removed on drop.
///
/// Drop does not run when burrow is killed outright (SIGKILL, a crash), and the directory holds the
/// frp token. So on Unix burrow holds an `flock` on the directory for as long as it lives (the
/// kernel lets go of it when the process ends, however it ends), and [`PrivateDir::new`] first
/// removes this user's directories that nobody holds. A lock, not the pid in the name, tells the
/// living from the dead: pids are reused, and a burrow in another pid namespace (a sandbox sharing
/// /tmp) has a pid that means nothing here. systemd-tmpfiles' age-based cleaning also skips a
/// locked directory.
pub struct PrivateDir {
    path: PathBuf,
    /// The directory, open and locked; closing it releases the lock.
    _lock: Option<std::fs::File>,
}

const PREFIX: &str = "burrow-frpc-";

impl PrivateDir {
    /// Creates `burrow-frpc-<pid>-<random>` under the temp dir, mode 0700, after sweeping away the
    /// ones dead burrows left.
    pub fn new() -> std::io::Result<Self> {
        Self::new_in(&std::env::temp_dir())
    }

    fn new_in(tmp: &Path) -> std::io::Result<Self> {
        #[cfg(unix)]
        sweep(tmp);
        let path = tmp.join(format!("{PREFIX}{}-{:016x}", std::process::id(), rand::random::<u64>()));
        // Made under a name sweeps pass over, locked, then renamed into place: a sweep never sees
        // it unlocked.
        let building = path.with_extension("new");
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&building)?;
        match lock(&building).and_then(|l| std::fs::rename(&building, &path).map(|()| l)) {
            Ok(_lock) => Ok(Self { path, _lock }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&building);
                Err(e)
            }
        }
    }

    /// The directory.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` with `text`, mode 0600.
    pub fn write(&self, name: &str, text: &str) -> std::io::Result<PathBuf> {
        let path = self.path.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&path)?;
        f.write_all(text.as_bytes())?;
        Ok(path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Opens the directory and locks it, without waiting. (std opens files close-on-exec, so frpc,
/// which burrow starts, never holds the lock.)
#[cfg(unix)]
fn lock(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    let f = std::fs::File::open(dir)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "locked by another process"))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// A directory cannot be opened as a file here: nothing is locked, and nothing swept.
#[cfg(not(unix))]
fn lock(_: &Path) -> std::io::Result<Option<std::fs::File>> {
    Ok(None)
}

/// Removes this user's `burrow-frpc-*` directories in `tmp` that no living burrow holds.
#[cfg(unix)]
fn sweep(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        if !entry.file_name().to_str().is_some_and(is_private_dir_name) {
            continue;
        }
        let dir = entry.path();
        // Not followed through a symlink, and never another user's.
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() && m.uid() == me => {}
            _ => continue,
        }
        match lock(&dir) {
            // Removed while this sweep holds it, so that no other sweep takes it meanwhile.
            Ok(_held) => match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!("removed {}, left by a burrow that was killed", dir.display()),
                Err(e) => tracing::debug!("cannot remove stale {}: {e}", dir.display()),
            },
            // A living burrow's; or, when the lock cannot be tried, kept, as it may be one.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!("cannot tell whether {} is in use: {e}", dir.display()),
        }
    }
}

/// Whether `name` is one [`PrivateDir::new`] gives: `burrow-frpc-<pid>-<16 hex digits>`.
#[cfg(unix)]
fn is_private_dir_name(name: &str) -> bool {
    let Some((pid, tag)) = name.strip_prefix(PREFIX).and_then(|r| r.split_once('-')) else { return false };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && tag.len() == 16
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

fn admin_table(admin: &Admin) -> Value {
    let mut t = Table::new();
    t.insert("addr".into(), "127.0.0.1".into());
    t.insert("port".into(), Value::Integer(admin.port.into()));
    t.insert("user".into(), admin.user.clone().into());
    t.insert("password".into(), admin.password.clone().into());
    Value::Table(t)
}

fn log_table() -> Value {
    let mut t = Table::new();
    t.insert("to".into(), "console".into());
    t.insert("level".into(), "info".into());
    Value::Table(t)
}

/// A user's frpc file with burrow's admin and log settings put in, and the server settings as
/// burrow resolved them (the environment overrides the file: address, token, TLS, tcp_mux).
pub fn toml_from_file(raw: &Table, server: &ServerConfig, admin: &Admin) -> String {
    let mut t = raw.clone();
    if !server.host.is_empty() {
        t.insert("serverAddr".into(), server.host.clone().into());
    }
    t.insert("serverPort".into(), Value::Integer(server.port.into()));
    let sub = |t: &mut Table, k: &str| -> Table { t.get(k).and_then(|v| v.as_table()).cloned().unwrap_or_default() };
    let mut auth = sub(&mut t, "auth");
    auth.insert("token".into(), server.token.expose().into());
    t.insert("auth".into(), Value::Table(auth));
    let mut transport = sub(&mut t, "transport");
    transport.insert("tcpMux".into(), server.tcp_mux.into());
    set_wire(&mut transport, server);
    let mut tls = transport.get("tls").and_then(|v| v.as_table()).cloned().unwrap_or_default();
    tls.insert("enable".into(), server.tls.enabled.into());
    if let Some(ca) = &server.tls.ca_file {
        tls.insert("trustedCaFile".into(), ca.display().to_string().into());
    }
    if let Some(n) = &server.tls.server_name {
        tls.insert("serverName".into(), n.clone().into());
    }
    transport.insert("tls".into(), Value::Table(tls));
    t.insert("transport".into(), Value::Table(transport));
    t.insert("webServer".into(), admin_table(admin));
    t.insert("log".into(), log_table());
    toml::to_string(&t).unwrap_or_default()
}

/// Sends frpc's tunnels to burrow's proxy in at `door` instead of its loopback listener `proxy`,
/// so that the proxy's access policy sees them as the public's: the tunnels of burrow's model,
/// and the `proxies` of a file frpc runs.
pub fn through_door(tunnels: &mut [TunnelConfig], file: Option<&mut Table>, proxy: SocketAddr, door: SocketAddr) {
    for t in tunnels.iter_mut().filter(|t| t.reaches_proxy(proxy)) {
        t.local_addr = door.to_string();
    }
    let Some(Value::Array(proxies)) = file.and_then(|f| f.get_mut("proxies")) else { return };
    for p in proxies.iter_mut().filter_map(Value::as_table_mut) {
        match crate::config::Local::of(p) {
            crate::config::Local::Addr(ip, port) if crate::config::reaches_proxy(&ip, port, proxy) => {
                p.insert("localIP".into(), door.ip().to_string().into());
                p.insert("localPort".into(), Value::Integer(door.port().into()));
            }
            crate::config::Local::Plugin(ip, port) if crate::config::reaches_proxy(&ip, port, proxy) => {
                if let Some(Value::Table(plugin)) = p.get_mut("plugin") {
                    plugin.insert("localAddr".into(), door.to_string().into());
                }
            }
            _ => {}
        }
    }
}

/// `transport.wireProtocol`, written only when it is not frp's default v1 (frpc before 0.69
/// refuses the key), and `transport.proxyURL`.
fn set_wire(transport: &mut Table, server: &ServerConfig) {
    match server.wire {
        crate::config::Wire::V1 => transport.remove("wireProtocol"),
        w => transport.insert("wireProtocol".into(), w.name().into()),
    };
    if server.protocol != crate::config::Protocol::Tcp {
        transport.insert("protocol".into(), server.protocol.name().into());
    }
    // The proxy burrow resolved (explicit, or the environment's that NO_PROXY lets through).
    match (server.proxy(), &server.proxy) {
        (Some(p), _) => transport.insert("proxyURL".into(), p.with_credentials(true).into()),
        (None, ServerProxy::FrpcOnly) => None,
        (None, _) => transport.remove("proxyURL"),
    };
}

/// TOML (frpc ≥ 0.52) for burrow's own model.
pub fn toml_from_model(server: &ServerConfig, tunnels: &[TunnelConfig], admin: &Admin) -> String {
    let mut t = Table::new();
    t.insert("serverAddr".into(), server.host.clone().into());
    t.insert("serverPort".into(), Value::Integer(server.port.into()));
    if !server.user.is_empty() {
        t.insert("user".into(), server.user.clone().into());
    }
    // frpc keeps retrying like the native client; burrow reads a token refusal from its log.
    t.insert("loginFailExit".into(), false.into());
    let mut auth = Table::new();
    auth.insert("method".into(), "token".into());
    auth.insert("token".into(), server.token.expose().into());
    t.insert("auth".into(), Value::Table(auth));
    let mut tls = Table::new();
    tls.insert("enable".into(), server.tls.enabled.into());
    if let Some(n) = &server.tls.server_name {
        tls.insert("serverName".into(), n.clone().into());
    }
    if let Some(ca) = &server.tls.ca_file {
        tls.insert("trustedCaFile".into(), ca.display().to_string().into());
    }
    let mut transport = Table::new();
    transport.insert("tcpMux".into(), server.tcp_mux.into());
    set_wire(&mut transport, server);
    transport.insert("poolCount".into(), Value::Integer(server.pool_count.into()));
    transport.insert("tls".into(), Value::Table(tls));
    t.insert("transport".into(), Value::Table(transport));
    if !server.metas.is_empty() {
        t.insert(
            "metadatas".into(),
            Value::Table(server.metas.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect()),
        );
    }
    t.insert("webServer".into(), admin_table(admin));
    t.insert("log".into(), log_table());
    let proxies: Vec<Value> = tunnels.iter().map(|tun| Value::Table(proxy_table(tun))).collect();
    t.insert("proxies".into(), Value::Array(proxies));
    toml::to_string(&t).unwrap_or_default()
}

fn split_local(addr: &str) -> (String, u16) {
    let (h, p) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse().unwrap_or(0))
}

fn proxy_table(tun: &TunnelConfig) -> Table {
    // frpc puts the user prefix in front of the name itself.
    let m = tun.frp_proxy(tun.name.clone());
    let mut p = Table::new();
    p.insert("name".into(), m.proxy_name.into());
    p.insert("type".into(), m.proxy_type.into());
    let (ip, port) = split_local(&tun.local_addr);
    p.insert("localIP".into(), ip.into());
    p.insert("localPort".into(), Value::Integer(port.into()));
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let text = [
        ("subdomain", m.subdomain),
        ("hostHeaderRewrite", m.host_header_rewrite),
        ("httpUser", m.http_user),
        ("httpPassword", m.http_pwd),
    ];
    for (key, v) in text.into_iter().filter(|(_, v)| !v.is_empty()) {
        p.insert(key.into(), v.into());
    }
    for (key, v) in [("customDomains", m.custom_domains), ("locations", m.locations)] {
        if !v.is_empty() {
            p.insert(key.into(), strings(v));
        }
    }
    for (key, map) in [("requestHeaders", m.headers), ("responseHeaders", m.response_headers)] {
        if !map.is_empty() {
            let mut set = Table::new();
            set.insert("set".into(), Value::Table(map.into_iter().map(|(k, v)| (k, v.into())).collect()));
            p.insert(key.into(), Value::Table(set));
        }
    }
    if matches!(tun.kind, TunnelKind::Tcp { .. }) {
        p.insert("remotePort".into(), Value::Integer(m.remote_port.into()));
    }
    let mut tr = Table::new();
    tr.insert("useEncryption".into(), m.use_encryption.into());
    tr.insert("useCompression".into(), m.use_compression.into());
    p.insert("transport".into(), Value::Table(tr));
    p
}

/// INI (frpc < 0.52) for burrow's own model.
pub fn ini_from_model(server: &ServerConfig, tunnels: &[TunnelConfig], admin: &Admin) -> String {
    // INI values end at the line: refuse to write one that would smuggle another key in.
    let clean = |v: &str| v.replace(['\n', '\r'], "");
    let mut s = String::from("[common]\n");
    s += &format!("server_addr = {}\nserver_port = {}\n", clean(&server.host), server.port);
    s += &format!("token = {}\n", clean(server.token.expose()));
    if !server.user.is_empty() {
        s += &format!("user = {}\n", clean(&server.user));
    }
    s += &format!(
        "tls_enable = {}\ntcp_mux = {}\npool_count = {}\nlogin_fail_exit = false\n",
        server.tls.enabled, server.tcp_mux, server.pool_count
    );
    if let Some(n) = &server.tls.server_name {
        s += &format!("tls_server_name = {}\n", clean(n));
    }
    if let Some(ca) = &server.tls.ca_file {
        s += &format!("tls_trusted_ca_file = {}\n", clean(&ca.display().to_string()));
    }
    s += &format!(
        "admin_addr = 127.0.0.1\nadmin_port = {}\nadmin_user = {}\nadmin_pwd = {}\nlog_file = console\n",
        admin.port, admin.user, admin.password
    );
    for t in tunnels {
        let m = t.frp_proxy(t.name.clone());
        let (ip, port) = split_local(&t.local_addr);
        s += &format!(
            "\n[{}]\ntype = {}\nlocal_ip = {}\nlocal_port = {port}\n",
            clean(&m.proxy_name),
            m.proxy_type,
            clean(&ip)
        );
        s += &format!("use_encryption = {}\nuse_compression = {}\n", m.use_encryption, m.use_compression);
        let (domains, locations) = (m.custom_domains.join(","), m.locations.join(","));
        for (key, v) in [
            ("subdomain", &m.subdomain),
            ("custom_domains", &domains),
            ("locations", &locations),
            ("host_header_rewrite", &m.host_header_rewrite),
        ] {
            if !v.is_empty() {
                s += &format!("{key} = {}\n", clean(v));
            }
        }
        if matches!(t.kind, TunnelKind::Tcp { .. }) {
            s += &format!("remote_port = {}\n", m.remote_port);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn server() -> ServerConfig {
        ServerConfig::new("127.0.0.1", 7000, Secret::new("tok\"en"))
    }

    fn admin() -> Admin {
        Admin { port: 7400, user: "burrow".into(), password: "pw".into() }
    }

    #[test]
    fn model_toml_parses_back_as_frpc_would() {
        let tunnels = vec![crate::config::default_tunnel(Some("app".into()), "127.0.0.1:8080".parse().unwrap())];
        let text = toml_from_model(&server(), &tunnels, &admin());
        let back: Table = toml::from_str(&text).unwrap();
        assert_eq!(back["auth"]["token"].as_str(), Some("tok\"en"), "quoting is the serializer's job");
        assert_eq!(back["webServer"]["port"].as_integer(), Some(7400));
        assert_eq!(back["proxies"][0]["subdomain"].as_str(), Some("app"));
        assert_eq!(back["proxies"][0]["localPort"].as_integer(), Some(8080));
        assert_eq!(back["loginFailExit"].as_bool(), Some(false));
        // burrow's own parser reads it too: the file is valid frpc TOML of the subset.
        assert!(crate::config::FrpcFile::parse(Path::new("x.toml"), &text).is_ok());
    }

    #[test]
    fn tunnels_to_the_proxy_go_through_its_door_and_others_stay() {
        let (proxy, door): (SocketAddr, SocketAddr) =
            ("127.0.0.1:8080".parse().unwrap(), "127.0.0.1:41000".parse().unwrap());
        let mut tunnels = vec![
            crate::config::default_tunnel(Some("a".into()), proxy),
            crate::config::default_tunnel(Some("b".into()), "127.0.0.1:9000".parse().unwrap()),
        ];
        let mut raw: Table = toml::from_str("[[proxies]]\nname = \"a\"\ntype = \"http\"\nlocalPort = 8080\n[[proxies]]\nname = \"b\"\ntype = \"http\"\nlocalIP = \"localhost\"\nlocalPort = 8080\n[[proxies]]\nname = \"c\"\ntype = \"tcp\"\nlocalIP = \"10.0.0.1\"\nlocalPort = 8080\n").unwrap();
        through_door(&mut tunnels, Some(&mut raw), proxy, door);
        assert_eq!(
            [tunnels[0].local_addr.as_str(), tunnels[1].local_addr.as_str()],
            ["127.0.0.1:41000", "127.0.0.1:9000"]
        );
        let ports: Vec<i64> =
            raw["proxies"].as_array().unwrap().iter().map(|p| p["localPort"].as_integer().unwrap()).collect();
        assert_eq!(ports, [41000, 41000, 8080]);
        // A plugin's localAddr goes through the door too.
        let mut raw: Table = toml::from_str("[[proxies]]\nname = \"t\"\ntype = \"https\"\n[proxies.plugin]\ntype = \"https2http\"\nlocalAddr = \"localhost.:8080\"\n").unwrap();
        through_door(&mut [], Some(&mut raw), proxy, door);
        assert_eq!(raw["proxies"][0]["plugin"]["localAddr"].as_str(), Some("127.0.0.1:41000"));
    }

    #[test]
    fn user_file_keeps_its_keys_and_gets_the_admin_api() {
        let raw: Table = toml::from_str("serverAddr = \"h\"\ntransport.protocol = \"kcp\"\nwebServer.port = 1\n[[proxies]]\nname = \"u\"\ntype = \"udp\"\nlocalPort = 53\n").unwrap();
        let mut srv = server();
        srv.host = "env.example".into();
        srv.tcp_mux = false;
        let back: Table = toml::from_str(&toml_from_file(&raw, &srv, &admin())).unwrap();
        assert_eq!(back["transport"]["protocol"].as_str(), Some("kcp"));
        assert_eq!(back["serverAddr"].as_str(), Some("env.example"), "the environment overrides the file");
        assert_eq!(back["transport"]["tcpMux"].as_bool(), Some(false));
        assert_eq!(back["auth"]["token"].as_str(), Some("tok\"en"));
        assert_eq!(back["webServer"]["port"].as_integer(), Some(7400));
        assert_eq!(back["proxies"][0]["type"].as_str(), Some("udp"));
    }

    #[test]
    fn ini_for_old_frpc_cannot_be_injected() {
        let mut s = server();
        s.token = Secret::new("a\nadmin_port = 1");
        let tunnels = vec![crate::config::default_tunnel(Some("app".into()), "127.0.0.1:8080".parse().unwrap())];
        let ini = ini_from_model(&s, &tunnels, &admin());
        assert!(ini.contains("[common]") && ini.contains("[web]") && ini.contains("subdomain = app"));
        assert_eq!(ini.lines().filter(|l| l.starts_with("admin_port")).count(), 1);
    }

    #[test]
    fn private_files_are_0600_and_vanish() {
        let dir = PrivateDir::new().unwrap();
        let p = dir.write("frpc.toml", "x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        let d = dir.path().to_path_buf();
        drop(dir);
        assert!(!d.exists());
    }

    /// A fresh directory to stand for the temp dir, so sweeps see only what a test puts there;
    /// removed when the test ends, passed or not.
    #[cfg(unix)]
    struct Scratch(PathBuf);

    #[cfg(unix)]
    impl Scratch {
        fn new() -> Self {
            let p = std::env::temp_dir().join(format!("burrow-sweep-test-{:016x}", rand::random::<u64>()));
            std::fs::create_dir(&p).unwrap();
            Self(p)
        }
    }

    #[cfg(unix)]
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    #[cfg(unix)]
    fn dirs_of_killed_burrows_are_swept_and_living_ones_kept() {
        let scratch = Scratch::new();
        let tmp = &scratch.0;
        let living = PrivateDir::new_in(tmp).unwrap();
        living.write("frpc.toml", "token").unwrap();
        // What a SIGKILLed burrow leaves: the directory and its config, with nobody holding it.
        let killed = tmp.join(format!("{PREFIX}{}-00000000000000aa", std::process::id()));
        std::fs::create_dir(&killed).unwrap();
        std::fs::write(killed.join("frpc.toml"), "token").unwrap();
        // Not names burrow gives (one still being built): left alone.
        let others = ["burrow-frpc-1-xyz", "burrow-frpc-1-00000000000000dd.new", "burrow-frpc--00000000000000ee"];
        for n in others {
            std::fs::create_dir(tmp.join(n)).unwrap();
        }

        let _next = PrivateDir::new_in(tmp).unwrap();
        assert!(!killed.exists());
        assert!(living.path().join("frpc.toml").exists());
        assert!(others.iter().all(|n| tmp.join(n).exists()));
    }

    #[test]
    #[cfg(unix)]
    fn a_private_dir_is_locked_while_it_lives() {
        let scratch = Scratch::new();
        let dir = PrivateDir::new_in(&scratch.0).unwrap();
        let held = std::fs::File::open(dir.path()).unwrap();
        assert!(matches!(held.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 1, "no half-built directory left beside it");
        drop(dir);
        assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 0);
    }
}
