//! Hooks for the cargo-fuzz targets: the request pipeline on arbitrary requests.

use std::sync::OnceLock;
use std::time::SystemTime;

use super::access::{Access, Mode};
use super::policy::decide::{Decision, View};
use super::{Conn, Origin, Proxy, Routes};

/// The password the `decide` target knows; the fuzzer may also send it.
pub const PASSWORD: &str = "ann:a password the fuzzer is handed";

/// [`Proxy::decide`] on a tunnel request made of `data`, for the `decide` fuzz target: no panic;
/// in protected mode nothing is forwarded without the password (no token is ever minted); a path
/// that some upstream could read as the hidden `/admin` is never forwarded; burrow's credentials
/// are always stripped.
///
/// `data` is: a flags byte (bit 0: protected, bit 1: send the password, bit 2: body, bit 3:
/// upgrade), then `method \n target \n host \n authorization \n cookie \n x-forwarded-for \n upgrade`.
#[doc(hidden)]
pub fn fuzz_decide(data: &[u8]) {
    static CONNS: OnceLock<[Conn; 2]> = OnceLock::new();
    let conns = CONNS.get_or_init(|| {
        let routes = "/admin=http://127.0.0.1:1;public=no,/admin/open=http://127.0.0.1:2,/=http://127.0.0.1:1";
        let routes = Routes::parse(routes).expect("the routes parse");
        let proxy = |mode| {
            let access = Access::new(mode, Some(PASSWORD), None, 0);
            Proxy::with_access(routes.clone(), super::RESPONSE_TIMEOUT, access)
        };
        [Mode::Open, Mode::Protected].map(|m| Conn::new(proxy(m), Origin::Tunnel, Default::default()))
    });
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut parts = rest.splitn(7, |&b| b == b'\n');
    let mut next = || parts.next().unwrap_or_default();
    let (method, target, host) = (next(), next(), next());
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target)) else { return };
    let (authorization, cookie, xff, upgrade) = (next(), next(), next(), next());
    use base64::Engine;
    let password = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(PASSWORD));
    let authorization = if flags & 2 != 0 { password.as_bytes() } else { authorization };
    let protected = flags & 1 != 0;
    let conn = &conns[usize::from(protected)];
    let view = View {
        method,
        target,
        host,
        authorization: Some(authorization).filter(|a| !a.is_empty()),
        forwarded_for: Some(xff),
        body: flags & 4 != 0,
        upgrade: (flags & 8 != 0).then_some(upgrade),
    };
    let decision = conn.proxy.decide(conn, &view, std::iter::once(cookie), SystemTime::now());
    let Decision::Forward { route, edits } = decision else { return };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    assert!(!could_be_admin(path), "{path:?} reached route {route} though some upstream may read it as /admin");
    assert!(edits.tunnel, "a tunnel request kept its method overrides");
    if protected {
        assert!(flags & 2 != 0, "forwarded without the password: {view:?}");
        assert!(edits.strip_auth && edits.strip_cookie, "burrow's credentials went on: {edits:?}");
    }
    if let Some(u) = view.upgrade {
        assert_eq!(edits.upgrade, u.trim_ascii().eq_ignore_ascii_case(b"websocket"), "upgrade {u:?}");
    }
}

/// The fuzz target's own, plainer reading of a hidden path: decoded twice, lower case, leading
/// slashes and spaces gone, `admin` then anything that ends a name to some server.
fn could_be_admin(path: &str) -> bool {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let p = decode(&decode(path)).to_ascii_lowercase();
    let p = p.trim_start_matches(|c: char| c == '/' || c == '\\' || c.is_whitespace());
    let Some(rest) = p.strip_prefix("admin") else { return false };
    let exposed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '.');
    (exposed.is_empty() || exposed.starts_with(['/', '\\', ';'])) && !rest.starts_with("/open")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_decide_fuzz_target_passes_its_seeds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/decide");
        let mut n = 0;
        for seed in std::fs::read_dir(dir).unwrap() {
            super::fuzz_decide(&std::fs::read(seed.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 15, "{n} seeds");
    }
}
