//! The route table: path prefix → upstream, segment-aligned, longest prefix wins.
//!
//! Path policy (decided, not normalised silently): a request path containing a dot-segment (`.` or
//! `..`, literal or percent-encoded), an encoded slash or backslash (`%2F`, `%5C`), a backslash or
//! a NUL is **rejected with 400**. Such paths are how a request aimed at one upstream sneaks into
//! another (`/api/../api/alt`, `/api%2Falt`) when an upstream decodes or resolves them after the
//! proxy has routed; with them refused, the path burrow routes on is the path every upstream sees.
//! For routing, percent-encoded *unreserved* characters are decoded (RFC 3986 §6.2.2.2:
//! `/api/%61lt` is `/api/alt`, as any upstream will read it) and repeated slashes merged
//! (`//api/alt` routes like `/api/alt`); the path itself is forwarded unchanged.

use std::fmt;

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Segment-aligned path prefix, `/` or `/a/b` (no trailing slash).
    pub prefix: String,
    /// Upstream host (name or IP, without brackets).
    pub host: String,
    /// Upstream port.
    pub port: u16,
    /// How errors name this upstream ("frontend", "backend", …).
    pub name: String,
    /// Send the upstream's `host:port` as `Host` instead of the client's.
    pub rewrite_host: bool,
    /// Served to tunnel requests (`;public=no`: only to loopback ones, 404 to the rest).
    pub public: bool,
}

impl Route {
    /// `host:port` of the upstream (IPv6 bracketed).
    pub fn authority(&self) -> String {
        crate::transport::host_port(&self.host, self.port)
    }

    fn matches(&self, path: &str) -> bool {
        self.prefix == "/"
            || path == self.prefix
            || (path.starts_with(&self.prefix) && path.as_bytes()[self.prefix.len()] == b'/')
    }
}

/// Default `BURROW_ROUTES`.
pub const DEFAULT_ROUTES: &str = "/api/alt=http://127.0.0.1:5003,/api=http://127.0.0.1:8000,/=http://127.0.0.1:5002";

/// A route table, longest prefix first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes(Vec<Route>);

/// Why a route spec is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The offending entry.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {:?}: {}", self.entry, self.problem)
    }
}

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `.` or `..` segment, literal or encoded.
    DotSegment,
    /// `%2F` or `%5C`.
    EncodedSlash,
    /// A backslash or NUL.
    BadByte,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::DotSegment => "the path contains a '.' or '..' segment",
            PathError::EncodedSlash => "the path contains an encoded slash or backslash (%2F, %5C)",
            PathError::BadByte => "the path contains a backslash or NUL byte",
        })
    }
}

impl Routes {
    /// Parses `prefix=http://host:port[;host=upstream][;name=label][;public=no]`, comma-separated.
    pub fn parse(spec: &str) -> Result<Routes, RouteError> {
        let default_names = spec.trim() == DEFAULT_ROUTES;
        let mut routes = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let err = |problem: &str| RouteError { entry: entry.to_string(), problem: problem.to_string() };
            let mut parts = entry.split(';');
            let head = parts.next().unwrap_or_default();
            let (prefix, url) = head.split_once('=').ok_or_else(|| err("expected prefix=http://host:port"))?;
            let prefix = prefix.trim();
            if !prefix.starts_with('/')
                || prefix.contains(['?', '#', '%', '\\', ' '])
                || prefix.split('/').any(|s| s == "." || s == "..")
            {
                return Err(err("the prefix must be a plain path starting with /"));
            }
            // Requests are routed with repeated slashes merged, so the prefix is written that way
            // too: `//api` must still match `/api/x`.
            let merged = prefix.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/");
            let prefix = format!("/{merged}");
            let rest = url
                .trim()
                .strip_prefix("http://")
                .ok_or_else(|| err("the upstream must be an http://host:port URL"))?;
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            if authority.contains(['/', '@', '?', '#']) {
                return Err(err("the upstream must be http://host:port with no path"));
            }
            let (host, port) = authority
                .rsplit_once(':')
                .ok_or_else(|| err("the upstream needs an explicit port: http://host:port"))?;
            let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err("the upstream port must be from 1 to 65535"))?;
            if host.is_empty() {
                return Err(err("the upstream needs a host"));
            }
            let mut route = Route {
                name: format!("route {prefix}"),
                prefix,
                host: host.to_string(),
                port,
                rewrite_host: false,
                public: true,
            };
            if default_names {
                route.name = match route.prefix.as_str() {
                    "/api/alt" => "backend",
                    "/api" => "vibe app",
                    _ => "frontend",
                }
                .to_string();
            }
            for opt in parts {
                match opt.trim().split_once('=') {
                    Some(("host", "upstream")) => route.rewrite_host = true,
                    Some(("host", "preserve")) => route.rewrite_host = false,
                    Some(("name", n)) if !n.trim().is_empty() => route.name = n.trim().to_string(),
                    Some(("public", "no")) => route.public = false,
                    Some(("public", "yes")) => route.public = true,
                    _ => {
                        return Err(err(
                            "options are ;host=upstream, ;host=preserve, ;name=label, ;public=no and ;public=yes",
                        ))
                    }
                }
            }
            if routes.iter().any(|r: &Route| r.prefix == route.prefix) {
                return Err(err("two routes have this prefix"));
            }
            // Which of the two a lenient upstream serves is anyone's guess: hidden or not.
            if routes.iter().any(|r: &Route| r.prefix.eq_ignore_ascii_case(&route.prefix) && r.public != route.public) {
                return Err(err("another route has this prefix in other letter case and another public= setting"));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(RouteError { entry: spec.to_string(), problem: "no routes".into() });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Routes(routes))
    }

    /// The routes, longest prefix first.
    pub fn all(&self) -> &[Route] {
        &self.0
    }

    /// The route for a request path (`None` when no route covers it: no `/` route).
    pub fn select(&self, path: &str) -> Result<Option<&Route>, PathError> {
        Ok(self.select_index(path)?.map(|i| &self.0[i]))
    }

    /// [`Self::select`], as the route's index in [`Self::all`].
    pub fn select_index(&self, path: &str) -> Result<Option<usize>, PathError> {
        if is_plain(path.as_bytes()) {
            return Ok(self.0.iter().position(|r| r.matches(path)));
        }
        check_path(path)?;
        let normal = routing_form(path);
        Ok(self.0.iter().position(|r| r.matches(&normal)))
    }
}

impl Routes {
    /// Whether `path`, read as leniently as some upstream may read it, falls under a route closed
    /// to the public (`;public=no`): percent-encodings decoded (twice), cut at a decoded `?` or
    /// `#`, case folded, `;parameters` dropped, whitespace and trailing dots trimmed, and `.` and
    /// `..` segments resolved (`/x/..;/admin` is `/admin` to Tomcat) or dropped. Such a path is
    /// hidden even when the strict routing above sends it to a public route with the same upstream.
    pub fn hides(&self, path: &str) -> bool {
        if self.0.iter().all(|r| r.public) {
            return false;
        }
        // Four readings, hidden if any is: `..` resolved or dropped (a server that trims what
        // hides a dot-segment from the strict check, `..\u{b}`, need not resolve it), and the
        // path cut at a decoded `?` or `#` or not.
        let prefixes: Vec<String> = self.0.iter().map(|r| lenient_form(&r.prefix, true, true)).collect();
        [(true, true), (true, false), (false, true), (false, false)].into_iter().any(|(resolve, cut)| {
            let lenient = lenient_form(path, resolve, cut);
            let folded = |prefix: &String| {
                let p = prefix.as_bytes();
                prefix == "/"
                    || (lenient.len() >= p.len()
                        && lenient.as_bytes()[..p.len()].eq_ignore_ascii_case(p)
                        && matches!(lenient.as_bytes().get(p.len()), None | Some(b'/')))
            };
            prefixes.iter().position(folded).is_some_and(|i| !self.0[i].public)
        })
    }
}

/// [`Routes::hides`]'s reading of a path: what the most lenient upstream could take it for.
fn lenient_form(path: &str, resolve: bool, cut: bool) -> String {
    let mut bytes = path.as_bytes().to_vec();
    // Twice: `%2541` is `%41` to one decoder and `A` to the next.
    for _ in 0..2 {
        if !bytes.contains(&b'%') {
            break;
        }
        bytes = percent_decode(&bytes);
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let text = if cut { text.split(['?', '#']).next().unwrap_or_default() } else { &text };
    let mut segs: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        let seg = seg.split(';').next().unwrap_or_default();
        let seg = seg.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        match seg {
            ".." => {
                if resolve {
                    segs.pop();
                }
            }
            "." | "" => {}
            _ => {
                let seg = seg.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
                if !seg.is_empty() {
                    segs.push(seg);
                }
            }
        }
    }
    format!("/{}", segs.join("/"))
}

/// Every `%XX` decoded.
fn percent_decode(b: &[u8]) -> Vec<u8> {
    let hex = |x: u8| (x as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Whether the path has nothing to refuse, decode or merge — no `%`, `\\`, NUL, `//`, or segment
/// starting with `.` — so that it is its own routing form. One pass, for the common case: the
/// full policy below searches the path several times.
pub(super) fn is_plain(path: &[u8]) -> bool {
    let mut prev = b'/';
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | 0 => return false,
            b'.' if prev == b'/' => return false,
            b'/' if prev == b'/' && i > 0 => return false,
            _ => {}
        }
        prev = b;
    }
    true
}

/// The path as routing sees it: encoded unreserved characters decoded, repeated slashes merged.
fn routing_form(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains("//") && !path.contains('%') {
        return path.into();
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            let hex = |x: u8| (x as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let d = (h * 16 + l) as u8;
                if d.is_ascii_alphanumeric() || matches!(d, b'-' | b'.' | b'_' | b'~') {
                    out.push(d);
                    i += 3;
                    continue;
                }
            }
        }
        if !(c == b'/' && out.last() == Some(&b'/')) {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8(out).map(Into::into).unwrap_or_else(|_| path.into())
}

/// Applies the path policy of this module.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    if bytes.iter().any(|&b| b == b'\\' || b == 0) {
        return Err(PathError::BadByte);
    }
    // The common case — no '%' and no dot-only segment — costs one scan and no allocation.
    let has_pct = bytes.contains(&b'%');
    if has_pct {
        for w in bytes.windows(3).filter(|w| w[0] == b'%') {
            let code = [w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()];
            if matches!(&code, b"2f" | b"5c" | b"00") {
                return Err(PathError::EncodedSlash);
            }
        }
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg.len() > 6 || !(seg.starts_with('.') || seg.starts_with('%')) {
            continue;
        }
        let decoded = if has_pct { seg.to_ascii_lowercase().replace("%2e", ".") } else { seg.to_string() };
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_for(routes: &Routes, path: &str) -> Option<u16> {
        routes.select(path).unwrap().map(|r| r.port)
    }

    #[test]
    fn hidden_routes_are_found_under_every_lenient_spelling() {
        let r =
            Routes::parse("/admin=http://127.0.0.1:1;public=no,/admin/static=http://127.0.0.1:1,/=http://127.0.0.1:1")
                .unwrap();
        for p in [
            "/admin",
            "/ADMIN/x",
            "/%41dmin/x",
            "/%2541dmin",
            "/Admin",
            "/admin;x",
            "/admin%20/x",
            "/admin./x",
            "//admin",
            "/x/..;/admin/users",
            "/x/%2e%2e;/admin",
            "/x/%252e%252e/admin",
            "/admin/static/..;/users",
            "/admin/static/../users",
            "/admin%3F",
            "/admin%23frag",
            "/./admin",
            "/ admin /x",
            // Found by the decide fuzz target: `..` behind whitespace, either reading.
            "/...//admin.\u{b}/..\u{b}/y.",
            ";#;%2%2%/admin",
        ] {
            assert!(r.hides(p), "{p} is not hidden");
        }
        for p in ["/", "/administrator", "/admin-panel", "/x/admin", "/admin/static/app.js", "/ADMIN/STATIC/x"] {
            assert!(!r.hides(p), "{p} is hidden");
        }
        // A prefix a lenient upstream reads as another: hidden under both.
        let dotted = Routes::parse("/admin.=http://127.0.0.1:1;public=no,/=http://127.0.0.1:1").unwrap();
        assert!(dotted.hides("/admin/x"));
        let e = Routes::parse("/Admin=http://127.0.0.1:1,/admin=http://127.0.0.1:1;public=no").unwrap_err();
        assert!(e.problem.contains("letter case"), "{e}");
    }

    #[test]
    fn the_plain_path_shortcut_agrees_with_the_full_policy() {
        let plain = ["/", "/api", "/api/alt/x", "/a-b_c~d/e?", "/api/alt.json", "/x./y", "", "/é"];
        for p in plain {
            assert!(is_plain(p.as_bytes()), "{p}");
            assert!(check_path(p).is_ok() && routing_form(p) == p, "{p}");
        }
        // Everything the full policy refuses, decodes or merges takes the long way.
        let not_plain =
            ["//api", "/api//x", "/./x", "/../x", "/api/..", "/.well-known", "/%61pi", "/a%2fb", "/a\\b", "/a\0b", "."];
        for p in not_plain {
            assert!(!is_plain(p.as_bytes()), "{p}");
        }
        let r = Routes::parse(DEFAULT_ROUTES).unwrap();
        assert_eq!(port_for(&r, "/api/alt/x"), Some(5003));
        assert_eq!(port_for(&r, "/api//alt/x"), Some(5003));
        assert_eq!(port_for(&r, "/api/alternative"), Some(8000));
        assert_eq!(r.select("/api/../alt"), Err(PathError::DotSegment));
    }

    #[test]
    fn prefix_slashes_are_merged_like_request_paths() {
        // Found by fuzz/fuzz_targets/routes.rs: a `///x` prefix never matched, since request
        // paths are routed with their slashes merged.
        let r = Routes::parse("///ap+tl.-x-=http://local:30,/=http://127.0.0.1:1").unwrap();
        assert_eq!(r.all()[0].prefix, "/ap+tl.-x-");
        assert_eq!(r.select("//ap+tl.-x-/v1").unwrap().unwrap().port, 30);
        let r = Routes::parse("/api//alt/=http://h:1,//=http://h:2").unwrap();
        assert_eq!(r.select("/api/alt/x").unwrap().unwrap().port, 1);
        assert_eq!(r.select("/").unwrap().unwrap().port, 2);
    }

    #[test]
    fn segment_aligned_longest_prefix() {
        let r = Routes::parse(DEFAULT_ROUTES).unwrap();
        for (path, port) in [
            ("/api/alt", 5003),
            ("/api/alt/", 5003),
            ("/api/alt/x/y", 5003),
            ("/api/alternative", 8000),
            ("/api", 8000),
            ("/api/", 8000),
            ("/api/v1/chat", 8000),
            ("/apix", 5002),
            ("/", 5002),
            ("/index.html", 5002),
            ("//api/alt/x", 5003),
            ("/api//alt", 5003),
            ("/api/%61lt/x", 5003),
            ("/%61pi/%41lt", 8000),
            ("/ap%69/alt", 5003),
            ("/api/alt%7e", 8000),
        ] {
            assert_eq!(port_for(&r, path), Some(port), "{path}");
        }
        assert_eq!(r.all()[0].name, "backend");
        assert_eq!(r.all()[2].name, "frontend");
    }

    #[test]
    fn dangerous_paths_are_refused() {
        let r = Routes::parse(DEFAULT_ROUTES).unwrap();
        for p in [
            "/api/../api/alt",
            "/api/./alt",
            "/api/%2e%2e/alt",
            "/api/%2E./alt",
            "/..",
            "/api/alt/..",
            "/api%2Falt",
            "/api%2falt/x",
            "/api%5Calt",
            "/api\\alt",
            "/a%00b",
        ] {
            assert!(r.select(p).is_err(), "{p}");
        }
        // Dots inside names are fine.
        assert_eq!(port_for(&r, "/api/alt/file.tar.gz"), Some(5003));
        assert_eq!(port_for(&r, "/...x"), Some(5002));
    }

    #[test]
    fn spec_errors_are_named() {
        for bad in [
            "/api",
            "api=http://h:1",
            "/a=https://h:1",
            "/a=http://h",
            "/a=http://h:0",
            "/a=http://h:70000",
            "/a=http://h:1/path",
            "/a=http://:1",
            "/a=http://h:1;bogus",
            "/a=http://h:1;public=maybe",
            "/a=http://h:1,/a=http://h:2",
            "",
        ] {
            assert!(Routes::parse(bad).is_err(), "{bad}");
        }
        let r = Routes::parse("/x/=http://[::1]:9000;host=upstream;name=docs").unwrap();
        let route = &r.all()[0];
        assert_eq!(
            (route.prefix.as_str(), route.host.as_str(), route.port, route.rewrite_host, route.name.as_str()),
            ("/x", "::1", 9000, true, "docs")
        );
        assert_eq!(route.authority(), "[::1]:9000");
        assert!(route.public);
        // No "/" route: unmatched paths have no upstream.
        assert_eq!(port_for(&r, "/y"), None);
        let r = Routes::parse("/admin=http://h:1;public=no,/=http://h:2").unwrap();
        assert_eq!(r.all().iter().map(|r| r.public).collect::<Vec<_>>(), [false, true]);
    }
}
