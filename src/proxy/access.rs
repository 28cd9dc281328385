//! Who may use the public URL: the one access policy for requests that arrive through the tunnel,
//! whichever engine serves them (loopback requests are the local user's and never pass here).
//!
//! A route may be closed to the public (`;public=no`). In protected mode a request passes with
//! the basic-auth credentials or a share link: a signed token that carries its generation, expiry
//! and flags, so nothing about the links handed out is stored. A link's first use is answered with
//! a redirect that moves the token into a cookie; the app never sees the credentials, the token or
//! the cookie.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Route;

/// The query parameter of a share link and the name of its cookie.
pub const SHARE_PARAM: &str = "burrow_share";
/// A token's format version.
const VERSION: u8 = 1;
/// version, flags, generation, expiry, then the MAC.
const SIGNED: usize = 1 + 1 + 8 + 8;
const TOKEN_BYTES: usize = SIGNED + 32;
/// Longer than any token this burrow makes: refused before it is decoded.
const MAX_TOKEN_CHARS: usize = 96;
/// The longest a share link may live.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

const READ_ONLY: u8 = 1;
/// Minted for an https URL: its cookie is `Secure`.
const SECURE: u8 = 2;

/// Whether the public URL needs credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Anyone with the URL (the default).
    #[default]
    Open,
    /// Basic auth or a share link.
    Protected,
}

/// Whether tunnel requests for any of `routes` meet the policy: protected, or a route closed to
/// the public.
pub fn guards(mode: Mode, routes: &super::Routes) -> bool {
    mode == Mode::Protected || routes.all().iter().any(|r| !r.public)
}

/// The access policy.
pub struct Access {
    mode: Mode,
    /// SHA-256 of `user:password`, compared in constant time whatever the guess's length.
    basic: Option<[u8; 32]>,
    key: Vec<u8>,
    generation: AtomicU64,
}

impl Default for Access {
    fn default() -> Self {
        Self::new(Mode::Open, None, None, 0)
    }
}

/// A share link's grant, as its token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grant {
    read_only: bool,
    secure: bool,
    expires: u64,
}

/// Why a token is refused; each says what the visitor can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this burrow makes: bad encoding, length, version or signature.
    #[error("the share link is not valid; ask for a new one")]
    Invalid,
    /// Past its expiry.
    #[error("the share link has expired; ask for a new one")]
    Expired,
    /// Of an earlier generation.
    #[error("the share link was revoked; ask for a new one")]
    Revoked,
}

/// What the policy looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The method.
    pub method: &'a str,
    /// Path and query (origin form).
    pub target: &'a str,
    /// An `Upgrade` (WebSocket): two-way, so never read-only.
    pub upgrade: bool,
    /// The first `Authorization` value.
    pub authorization: Option<&'a [u8]>,
}

/// What happens to a tunnel request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded, without the share cookie and, when `strip_auth`, without `Authorization`.
    Pass {
        /// The request's `Authorization` is burrow's basic auth, not the app's.
        strip_auth: bool,
    },
    /// 404, as for a path no route serves.
    NotPublic,
    /// 401.
    Unauthorized(Cow<'static, str>),
    /// 403: a read-only link used for something other than GET or HEAD.
    ReadOnly,
    /// A share link's first use: 303 to `location` (the same URL without the token), setting
    /// the cookie.
    Redirect {
        /// Path and query, without the token.
        location: String,
        /// The `Set-Cookie` value.
        cookie: String,
    },
}

impl Access {
    /// A policy; `key` signs share links (a random one when `None`, so links die with the
    /// process), `generation` is the current one.
    pub fn new(mode: Mode, basic: Option<&str>, key: Option<&[u8]>, generation: u64) -> Self {
        Self {
            mode,
            basic: basic.map(|b| Sha256::digest(b.as_bytes()).into()),
            key: key.map_or_else(|| rand::random::<[u8; 32]>().to_vec(), <[u8]>::to_vec),
            generation: AtomicU64::new(generation),
        }
    }

    /// Whether tunnel requests need credentials.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether basic auth is configured (a 401 then asks for it).
    pub fn asks_basic(&self) -> bool {
        self.basic.is_some()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Moves to the next generation: every link and cookie handed out so far stops working.
    pub fn revoke(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether a tunnel request for `route` needs [`Self::check`]; most need nothing.
    pub fn applies(&self, route: &Route) -> bool {
        !route.public || self.mode == Mode::Protected
    }

    /// A token for a link that lives `ttl` from `now`; `secure` when the URL is https.
    pub fn mint(&self, now: SystemTime, ttl: Duration, read_only: bool, secure: bool) -> (String, SystemTime) {
        // Whole seconds, rounded up: a link never lives less than it was asked to.
        let secs = (now + ttl.min(MAX_TTL)).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs_f64().ceil() as u64);
        let flags = if read_only { READ_ONLY } else { 0 } | if secure { SECURE } else { 0 };
        let mut t = Vec::with_capacity(TOKEN_BYTES);
        t.push(VERSION);
        t.push(flags);
        t.extend_from_slice(&self.generation().to_be_bytes());
        t.extend_from_slice(&secs.to_be_bytes());
        let mac = self.mac(&t);
        t.extend_from_slice(&mac);
        (URL_SAFE_NO_PAD.encode(t), UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn mac(&self, signed: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        m.update(signed);
        m.finalize().into_bytes().into()
    }

    fn verify(&self, token: &[u8], now: SystemTime) -> Result<Grant, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid);
        }
        let t = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Invalid)?;
        if t.len() != TOKEN_BYTES || t[0] != VERSION {
            return Err(TokenError::Invalid);
        }
        let (signed, mac) = t.split_at(SIGNED);
        if !bool::from(self.mac(signed).ct_eq(mac)) {
            return Err(TokenError::Invalid);
        }
        let u64_at = |i: usize| u64::from_be_bytes(signed[i..i + 8].try_into().unwrap_or_default());
        let (generation, expires) = (u64_at(2), u64_at(10));
        if generation != self.generation() {
            return Err(TokenError::Revoked);
        }
        if now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Grant { read_only: signed[1] & READ_ONLY != 0, secure: signed[1] & SECURE != 0, expires })
    }

    /// Whether an `Authorization` value is the configured basic auth.
    fn basic_ok(&self, authorization: &[u8]) -> bool {
        let Some(expected) = &self.basic else { return false };
        let Some(encoded) = basic_credentials(authorization) else { return false };
        let Ok(decoded) = STANDARD.decode(encoded.trim_ascii()) else { return false };
        if !decoded.contains(&b':') {
            return false;
        }
        bool::from(Sha256::digest(&decoded).as_slice().ct_eq(expected))
    }

    /// Decides on a tunnel request for `route` (where [`Self::applies`]), given the values of its
    /// `Cookie` headers.
    pub fn check<'a>(
        &self,
        route: &Route,
        asked: Asked<'_>,
        cookies: impl Iterator<Item = &'a [u8]>,
        now: SystemTime,
    ) -> Verdict {
        let Asked { method, target, upgrade, authorization } = asked;
        if !route.public {
            return Verdict::NotPublic;
        }
        if self.mode == Mode::Open {
            return Verdict::Pass { strip_auth: false };
        }
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        if let Some((token, rest)) = query.and_then(take_param) {
            return match self.verify(token.as_bytes(), now) {
                Ok(g) => {
                    // One leading slash: `//host` would send the visitor to another site.
                    let path = format!("/{}", path.trim_start_matches('/'));
                    let location = if rest.is_empty() { path } else { format!("{path}?{rest}") };
                    let max_age = g.expires.saturating_sub(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
                    let secure = if g.secure { "; Secure" } else { "" };
                    let cookie =
                        format!("{SHARE_PARAM}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
                    Verdict::Redirect { location, cookie }
                }
                Err(e) => Verdict::Unauthorized(e.to_string().into()),
            };
        }
        // Any basic credentials are burrow's when it asks for them: never the app's.
        let basic = self.basic.is_some() && authorization.and_then(basic_credentials).is_some();
        if basic && authorization.is_some_and(|a| self.basic_ok(a)) {
            return Verdict::Pass { strip_auth: true };
        }
        let mut refused = None;
        for value in cookies {
            for token in share_cookies(value) {
                match self.verify(token, now) {
                    Ok(g) if g.read_only && (upgrade || (method != "GET" && method != "HEAD")) => {
                        return Verdict::ReadOnly
                    }
                    Ok(_) => return Verdict::Pass { strip_auth: basic },
                    Err(e) => refused = Some(e),
                }
            }
        }
        Verdict::Unauthorized(match (refused, basic) {
            (Some(e), _) => e.to_string().into(),
            (None, true) => "wrong user name or password".into(),
            (None, false) => "this URL is protected: sign in, or open a share link from its owner".into(),
        })
    }
}

/// The credentials of a `Basic` authorization (the scheme is case-insensitive).
fn basic_credentials(authorization: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = authorization.split_at_checked(6)?;
    scheme.eq_ignore_ascii_case(b"basic ").then_some(rest)
}

/// The share token of a query, and the query without it.
fn take_param(query: &str) -> Option<(&str, String)> {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix(SHARE_PARAM).and_then(|v| v.strip_prefix('=')) {
            Some(v) if token.is_none() => token = Some(v),
            Some(_) => {}
            None => rest.push(pair),
        }
    }
    Some((token?, rest.join("&")))
}

/// The value of a `name=value` cookie pair when it is burrow's.
fn share_value(pair: &[u8]) -> Option<&[u8]> {
    Some(pair.trim_ascii().strip_prefix(SHARE_PARAM.as_bytes())?.strip_prefix(b"=")?.trim_ascii())
}

/// The share-cookie values in one `Cookie` header value.
fn share_cookies(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b';').filter_map(share_value)
}

/// A `Cookie` value without burrow's cookie; `None` when nothing is left of it.
pub fn without_share_cookie(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    if share_cookies(value).next().is_none() {
        return Some(Cow::Borrowed(value));
    }
    let kept: Vec<&[u8]> = value
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty() && share_value(p).is_none())
        .collect();
    (!kept.is_empty()).then(|| Cow::Owned(kept.join(&b"; "[..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(public: bool) -> Route {
        let mut r = super::super::Routes::parse("/=http://127.0.0.1:1").unwrap().all()[0].clone();
        r.public = public;
        r
    }

    fn protected() -> Access {
        Access::new(Mode::Protected, Some("ann:s3cret pass"), Some(b"key of at least sixteen"), 4)
    }

    fn check(a: &Access, method: &str, target: &str, auth: Option<&str>, cookie: Option<&str>) -> Verdict {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let asked = Asked { method, target, upgrade: false, authorization: auth.map(str::as_bytes) };
        a.check(&route(true), asked, cookie.map(str::as_bytes).into_iter(), now)
    }

    fn token(a: &Access, ttl: u64, read_only: bool) -> String {
        a.mint(UNIX_EPOCH + Duration::from_secs(1_000_000), Duration::from_secs(ttl), read_only, true).0
    }

    #[test]
    fn open_mode_passes_everything_but_closed_routes() {
        let a = Access::default();
        assert!(!a.applies(&route(true)) && a.applies(&route(false)));
        let now = SystemTime::now();
        let asked = Asked { method: "GET", target: "/", upgrade: false, authorization: None };
        assert_eq!(a.check(&route(false), asked, std::iter::empty(), now), Verdict::NotPublic);
        assert_eq!(
            check(&a, "POST", "/x?burrow_share=zz", Some("Basic !!"), None),
            Verdict::Pass { strip_auth: false }
        );
    }

    #[test]
    fn basic_auth_passes_only_with_the_right_credentials() {
        let a = protected();
        let good = format!("Basic {}", STANDARD.encode("ann:s3cret pass"));
        assert_eq!(check(&a, "POST", "/", Some(&good), None), Verdict::Pass { strip_auth: true });
        let lower = good.replacen("Basic", "bAsIc", 1);
        assert_eq!(check(&a, "GET", "/", Some(&lower), None), Verdict::Pass { strip_auth: true });
        for bad in [
            "Basic !!!not base64",
            "Basic ",
            "Basic",
            &format!("Basic {}", STANDARD.encode("ann s3cret pass")),
            &format!("Basic {}", STANDARD.encode("ann:s3cret pas")),
            &format!("Basic {}", STANDARD.encode("ann:s3cret passs")),
            &format!("Basic {}", "A".repeat(100_000)),
        ] {
            assert!(matches!(check(&a, "GET", "/", Some(bad), None), Verdict::Unauthorized(_)), "{bad:.40}");
        }
        assert!(matches!(check(&a, "GET", "/", Some("Bearer abc"), None), Verdict::Unauthorized(_)));
        assert!(matches!(check(&a, "GET", "/", None, None), Verdict::Unauthorized(_)));
    }

    #[test]
    fn a_share_link_redirects_into_a_cookie_that_then_passes() {
        let a = protected();
        let t = token(&a, 3600, false);
        let Verdict::Redirect { location, cookie } =
            check(&a, "GET", &format!("/p?a=1&burrow_share={t}&b=2"), None, None)
        else {
            panic!("no redirect")
        };
        assert_eq!(location, "/p?a=1&b=2");
        assert_eq!(cookie, format!("burrow_share={t}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"));
        let Verdict::Redirect { location, .. } = check(&a, "GET", &format!("/?burrow_share={t}"), None, None) else {
            panic!("no redirect")
        };
        assert_eq!(location, "/");
        // Never a location on another site.
        let Verdict::Redirect { location, .. } =
            check(&a, "GET", &format!("//evil.example?burrow_share={t}"), None, None)
        else {
            panic!("no redirect")
        };
        assert_eq!(location, "/evil.example");
        let jar = format!("theme=dark; burrow_share={t}; sid=1");
        assert_eq!(check(&a, "POST", "/", None, Some(&jar)), Verdict::Pass { strip_auth: false });
        assert_eq!(without_share_cookie(jar.as_bytes()).as_deref(), Some(&b"theme=dark; sid=1"[..]));
        assert_eq!(without_share_cookie(format!("burrow_share={t}").as_bytes()), None);
        assert_eq!(without_share_cookie(b"burrow_shared=1").as_deref(), Some(&b"burrow_shared=1"[..]));
    }

    #[test]
    fn read_only_links_allow_get_and_head() {
        let a = protected();
        let jar = format!("burrow_share={}", token(&a, 60, true));
        for m in ["GET", "HEAD"] {
            assert_eq!(check(&a, m, "/", None, Some(&jar)), Verdict::Pass { strip_auth: false });
        }
        for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            assert_eq!(check(&a, m, "/", None, Some(&jar)), Verdict::ReadOnly);
        }
        // A WebSocket talks both ways: not for a read-only link.
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ws = Asked { method: "GET", target: "/ws", upgrade: true, authorization: None };
        assert_eq!(a.check(&route(true), ws, std::iter::once(jar.as_bytes()), now), Verdict::ReadOnly);
    }

    #[test]
    fn forged_expired_revoked_truncated_and_oversized_tokens_are_refused() {
        let a = protected();
        let t = token(&a, 60, false);
        let other = Access::new(Mode::Protected, None, Some(b"another key entirely"), 4);
        let expired = a.mint(UNIX_EPOCH + Duration::from_secs(1_000_000 - 61), Duration::from_secs(60), false, false).0;
        let mut flipped = URL_SAFE_NO_PAD.decode(&t).unwrap();
        flipped[1] |= READ_ONLY;
        let cases = [
            (token(&other, 60, false), TokenError::Invalid),
            (expired, TokenError::Expired),
            (t[..t.len() - 1].to_string(), TokenError::Invalid),
            (t[..10].to_string(), TokenError::Invalid),
            (format!("{t}{}", "A".repeat(5000)), TokenError::Invalid),
            (URL_SAFE_NO_PAD.encode(flipped), TokenError::Invalid),
            ("%%%%".into(), TokenError::Invalid),
            (String::new(), TokenError::Invalid),
        ];
        for (bad, why) in &cases {
            let msg = Verdict::Unauthorized(why.to_string().into());
            assert_eq!(check(&a, "GET", &format!("/?burrow_share={bad}"), None, None), msg, "{bad:.40}");
            assert_eq!(check(&a, "GET", "/", None, Some(&format!("burrow_share={bad}"))), msg, "{bad:.40}");
        }
        assert_eq!(a.revoke(), 5);
        let revoked = Verdict::Unauthorized(TokenError::Revoked.to_string().into());
        assert_eq!(check(&a, "GET", "/", None, Some(&format!("burrow_share={t}"))), revoked);
        // A restart with the next generation persisted keeps it dead; a new link works.
        let restarted = Access::new(Mode::Protected, None, Some(b"key of at least sixteen"), 5);
        assert_eq!(check(&restarted, "GET", "/", None, Some(&format!("burrow_share={t}"))), revoked);
        let fresh = format!("burrow_share={}", token(&restarted, 60, false));
        assert_eq!(check(&restarted, "GET", "/", None, Some(&fresh)), Verdict::Pass { strip_auth: false });
    }

    #[test]
    fn tokens_stay_short_and_never_outlive_the_cap() {
        let a = protected();
        let (t, expires) = a.mint(UNIX_EPOCH, Duration::from_secs(u64::MAX / 4), false, false);
        assert!(t.len() <= MAX_TOKEN_CHARS && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(expires, UNIX_EPOCH + MAX_TTL);
    }
}
