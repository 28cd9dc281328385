//! Every key the bundled frpc accepts (`resources/frpc-keys.txt`, listed from frp's own
//! configuration types by `resources/frpc-keys.sh`) and the ones the native client serves: the
//! keys of a file sorted into those burrow runs itself, those only frpc serves (`auto` runs the
//! file under frpc), and those frpc would refuse too (the file is invalid).
//!
//! Key names match as frpc matches them, ignoring case; the native client reads only the
//! spelling frp documents, so another spelling is served by frpc.

use std::collections::HashMap;
use std::sync::LazyLock;

const FRPC_KEYS: &str = include_str!("../../resources/frpc-keys.txt");

/// Common keys the native client serves. `log.*` and `webServer.*` are frpc's own log and admin
/// API, which burrow replaces with its own under either backend (`BURROW_LOG`,
/// `BURROW_ADMIN_ADDR`), so they never call for frpc.
const NATIVE_COMMON: &[&str] = &[
    "serverAddr",
    "serverPort",
    "user",
    "loginFailExit",
    "auth.method",
    "auth.token",
    "metadatas.*",
    "transport.protocol",
    "transport.tcpMux",
    "transport.tcpMuxKeepaliveInterval",
    "transport.wireProtocol",
    "transport.proxyURL",
    "transport.poolCount",
    "transport.heartbeatInterval",
    "transport.heartbeatTimeout",
    "transport.tls.enable",
    "transport.tls.serverName",
    "transport.tls.trustedCaFile",
    "transport.tls.disableCustomTLSFirstByte",
    "log.*",
    "webServer.*",
];

/// Keys of `tcp` and `http` proxies the native client serves (each type takes those of them
/// frpc lists for it).
const NATIVE_PROXY: &[&str] = &[
    "name",
    "type",
    "localIP",
    "localPort",
    "remotePort",
    "subdomain",
    "customDomains",
    "locations",
    "hostHeaderRewrite",
    "httpUser",
    "httpPassword",
    "requestHeaders.set.*",
    "responseHeaders.set.*",
    "transport.useEncryption",
    "transport.useCompression",
];

/// The proxy types the native client serves.
const NATIVE_TYPES: &[&str] = &["tcp", "http"];

/// A file's keys, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sorted {
    /// What only frpc serves, as the user wrote it (`transport.dialServerTimeout`,
    /// `proxies[1] (type "udp")`, `proxies[0].plugin`, `visitors[0]`).
    pub frpc_only: Vec<String>,
    /// Keys frpc does not know either, with where they are (`proxies[0].remotePorts`).
    pub unknown: Vec<String>,
}

/// frpc's key lists by section (`common`, `proxy tcp`, `plugin socks5`, `visitor stcp`,
/// `visitor-plugin virtual_net`), lower-cased.
static SECTIONS: LazyLock<HashMap<&'static str, Vec<String>>> = LazyLock::new(|| {
    let mut sections: HashMap<&str, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in FRPC_KEYS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name);
        } else if let Some(section) = current {
            sections.entry(section).or_default().push(line.to_ascii_lowercase());
        }
    }
    sections
});

/// The version of frpc the list is of, from its first line.
pub fn frpc_version() -> &'static str {
    FRPC_KEYS.split("(frp ").nth(1).and_then(|s| s.split(')').next()).unwrap_or("?")
}

/// The types frpc has for `kind` (`proxy`, `plugin`, `visitor`, `visitor-plugin`).
fn types_of(kind: &str) -> Vec<&'static str> {
    let mut t: Vec<_> =
        SECTIONS.keys().filter_map(|s| s.strip_prefix(kind).and_then(|r| r.strip_prefix(' '))).collect();
    t.sort_unstable();
    t
}

/// Does `pattern` (segments, `*` for any one) match `path`? Both lower-case, or both as written.
fn matches(pattern: &str, path: &[&str]) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    p.len() == path.len() && p.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
}

/// Is `path` a table on the way to some key of `keys`?
fn is_table(keys: &[String], path: &[&str]) -> bool {
    keys.iter().any(|k| {
        let p: Vec<&str> = k.split('.').collect();
        p.len() > path.len() && p.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
    })
}

struct Walk<'a> {
    /// frpc's keys for this section, lower-case.
    keys: &'a [String],
    /// The native client's keys for it, as written; empty when it serves none of the section.
    native: &'a [&'a str],
    /// Record keys only frpc serves one by one (false where the whole item is already recorded).
    each: bool,
}

impl Walk<'_> {
    fn table(&self, t: &toml::Table, path: &mut Vec<String>, shown: &str, out: &mut Sorted) {
        for (k, v) in t {
            path.push(k.clone());
            let here = if shown.is_empty() { k.clone() } else { format!("{shown}.{k}") };
            let lower: Vec<String> = path.iter().map(|s| s.to_ascii_lowercase()).collect();
            let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
            if let Some(pattern) = self.keys.iter().find(|p| matches(p, &lower)) {
                let exact: Vec<&str> = path.iter().map(String::as_str).collect();
                if self.each && !self.native.iter().any(|p| matches(p, &exact)) {
                    // A map's entries (`annotations.*`) are named by the map, once.
                    let name = if pattern.ends_with(".*") { shown.to_string() } else { here };
                    if out.frpc_only.last() != Some(&name) {
                        out.frpc_only.push(name);
                    }
                }
            } else if let (Some(sub), true) = (v.as_table(), is_table(self.keys, &lower)) {
                self.table(sub, path, &here, out);
            } else if let (Some(items), true) = (v.as_array(), is_list(self.keys, &lower)) {
                // A list of tables (`healthCheck.httpHeaders`), which the native client never
                // serves: named once; its elements' keys, under `[]`, only checked.
                if self.each {
                    out.frpc_only.push(here.clone());
                }
                let quiet = Walk { keys: self.keys, native: &[], each: false };
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[]"));
                for (i, item) in items.iter().enumerate() {
                    match item.as_table() {
                        Some(sub) => quiet.table(sub, path, &format!("{here}[{i}]"), out),
                        None => out.unknown.push(format!("{here}[{i}] (expected a table)")),
                    }
                }
            } else {
                out.unknown.push(here);
            }
            path.pop();
        }
    }
}

fn is_list(keys: &[String], path: &[&str]) -> bool {
    let Some((last, init)) = path.split_last() else { return false };
    let mut p: Vec<String> = init.iter().map(|s| s.to_string()).collect();
    p.push(format!("{last}[]"));
    is_table(keys, &p.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Sorts the keys of a parsed frpc file.
pub fn sort(raw: &toml::Table) -> Sorted {
    let mut out = Sorted::default();
    let no_keys: Vec<String> = Vec::new();
    let common = SECTIONS.get("common").unwrap_or(&no_keys);
    let mut top = raw.clone();
    let proxies = top.remove("proxies");
    let visitors = top.remove("visitors");
    Walk { keys: common, native: NATIVE_COMMON, each: true }.table(&top, &mut Vec::new(), "", &mut out);
    for (list, kind, value) in [(proxies, "proxy", "proxies"), (visitors, "visitor", "visitors")] {
        let Some(list) = list else { continue };
        let Some(items) = list.as_array() else {
            out.unknown.push(format!("{value} (expected a list of tables: [[{value}]])"));
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let shown = format!("{value}[{i}]");
            let Some(item) = item.as_table() else {
                out.unknown.push(format!("{shown} (expected a table)"));
                continue;
            };
            item_keys(item, kind, &shown, &mut out);
        }
    }
    out
}

/// A proxy's or visitor's keys, by its type; its plugin's by the plugin's type.
fn item_keys(item: &toml::Table, kind: &str, shown: &str, out: &mut Sorted) {
    let ty = item.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let Some(keys) = SECTIONS.get(format!("{kind} {ty}").as_str()) else {
        out.unknown.push(format!("{shown}.type = {ty:?} (frpc's {kind} types: {})", types_of(kind).join(", ")));
        return;
    };
    let native = kind == "proxy" && NATIVE_TYPES.contains(&ty);
    if !native {
        let what = if kind == "proxy" { format!("{shown} (type {ty:?})") } else { shown.to_string() };
        out.frpc_only.push(what);
    }
    let mut rest = item.clone();
    let plugin = rest.remove("plugin");
    Walk { keys, native: if native { NATIVE_PROXY } else { &[] }, each: native }.table(
        &rest,
        &mut Vec::new(),
        shown,
        out,
    );
    if let Some(plugin) = plugin {
        let shown = format!("{shown}.plugin");
        if native {
            out.frpc_only.push(shown.clone());
        }
        let plugin_kind = if kind == "proxy" { "plugin" } else { "visitor-plugin" };
        match plugin.as_table() {
            Some(p) => {
                let ty = p.get("type").and_then(|t| t.as_str()).unwrap_or("");
                match SECTIONS.get(format!("{plugin_kind} {ty}").as_str()) {
                    Some(keys) => Walk { keys, native: &[], each: false }.table(p, &mut Vec::new(), &shown, out),
                    None => out
                        .unknown
                        .push(format!("{shown}.type = {ty:?} (frpc's plugins: {})", types_of(plugin_kind).join(", "))),
                }
            }
            None => out.unknown.push(format!("{shown} (expected a table with a type)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(text: &str) -> Sorted {
        sort(&toml::from_str(text).unwrap())
    }

    #[test]
    fn the_list_is_frpcs_and_the_native_keys_are_in_it() {
        assert_eq!(frpc_version(), "0.70.1");
        assert_eq!(types_of("proxy"), ["http", "https", "stcp", "sudp", "tcp", "tcpmux", "udp", "xtcp"]);
        let common = &SECTIONS["common"];
        for k in NATIVE_COMMON {
            let path: Vec<String> = k.to_ascii_lowercase().split('.').map(String::from).collect();
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            assert!(common.iter().any(|p| matches(p, &path)) || k.ends_with(".*"), "{k} is not an frpc key");
        }
        for k in NATIVE_PROXY {
            let path: Vec<String> = k.to_ascii_lowercase().split('.').map(String::from).collect();
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let in_some =
                NATIVE_TYPES.iter().any(|t| SECTIONS[format!("proxy {t}").as_str()].iter().any(|p| matches(p, &path)));
            assert!(in_some, "{k} is not a key of frpc's tcp or http proxies");
        }
    }

    #[test]
    fn native_keys_are_nothing_to_report() {
        let s = sorted(
            "serverAddr = \"h\"\nauth.token = \"t\"\nmetadatas.a = \"b\"\nlog.level = \"debug\"\nwebServer.port = 7400\n\
             transport.tls.serverName = \"x\"\n\
             [[proxies]]\nname = \"w\"\ntype = \"http\"\nlocalPort = 1\nsubdomain = \"s\"\nrequestHeaders.set.x-a = \"1\"\n\
             [[proxies]]\nname = \"t\"\ntype = \"tcp\"\nlocalPort = 2\nremotePort = 3\ntransport.useEncryption = true\n",
        );
        assert_eq!(s, Sorted::default());
    }

    #[test]
    fn frpc_only_keys_are_named_where_they_are() {
        let s = sorted(
            "serverAddr = \"h\"\ntransport.dialServerTimeout = 5\nServerPort = 7000\nincludes = [\"a.toml\"]\n\
             [[proxies]]\nname = \"w\"\ntype = \"http\"\nlocalPort = 1\nsubdomain = \"s\"\nhealthCheck.type = \"http\"\n\
             healthCheck.httpHeaders = [{ name = \"a\", value = \"b\" }]\n\
             [[proxies]]\nname = \"u\"\ntype = \"udp\"\nlocalPort = 53\nremotePort = 53\n\
             [[proxies]]\nname = \"p\"\ntype = \"tcp\"\nremotePort = 9\n[proxies.plugin]\ntype = \"socks5\"\nusername = \"a\"\n\
             [[visitors]]\nname = \"v\"\ntype = \"stcp\"\nserverName = \"x\"\nbindPort = 9000\n",
        );
        assert_eq!(
            s.frpc_only,
            [
                "ServerPort",
                "includes",
                "transport.dialServerTimeout",
                "proxies[0].healthCheck.httpHeaders",
                "proxies[0].healthCheck.type",
                "proxies[1] (type \"udp\")",
                "proxies[2].plugin",
                "visitors[0]",
            ]
        );
        assert!(s.unknown.is_empty(), "{:?}", s.unknown);
    }

    #[test]
    fn keys_frpc_does_not_know_are_unknown() {
        let s = sorted(
            "serverAdress = \"h\"\ntransport.tls.foo = 1\n\
             [[proxies]]\nname = \"w\"\ntype = \"http\"\nlocalPort = 1\nremotePort = 8\n\
             [[proxies]]\nname = \"x\"\ntype = \"ftp\"\n\
             [[proxies]]\nname = \"p\"\ntype = \"tcp\"\n[proxies.plugin]\ntype = \"socks5\"\nuser = \"a\"\n",
        );
        assert_eq!(
            s.unknown,
            [
                "serverAdress",
                "transport.tls.foo",
                "proxies[0].remotePort",
                "proxies[1].type = \"ftp\" (frpc's proxy types: http, https, stcp, sudp, tcp, tcpmux, udp, xtcp)",
                "proxies[2].plugin.user",
            ]
        );
    }
}
