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

/// The query parameter of a share link and the name of its cookie.
pub const SHARE_PARAM: &str = "burrow_share";
/// A token's format version: 2 binds it to the public host it was minted for.
const VERSION: u8 = 2;
/// version, flags, generation, expiry, then the MAC (over these and the host).
const SIGNED: usize = 1 + 1 + 8 + 8;
const TOKEN_BYTES: usize = SIGNED + 32;
/// Longer than any token this burrow makes: refused before it is decoded.
const MAX_TOKEN_CHARS: usize = 96;
/// The longest a share link may live.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

const READ_ONLY: u8 = 1;
/// Minted for an https URL: its cookie is `Secure`.
const SECURE: u8 = 2;

/// Failed basic-auth attempts one client address may make in a minute; past it, 429.
pub const FAILURES_PER_ADDRESS: usize = 10;
/// Failed attempts in a minute from everyone together; past it, each failure waits [`SLOW_FAILURE`].
pub const FAILURES_IN_ALL: usize = 100;
/// How long a failure waits for its 401 once [`FAILURES_IN_ALL`] is reached.
pub const SLOW_FAILURE: Duration = Duration::from_secs(1);
/// Client addresses whose failures are remembered one by one; more share one count.
const TRACKED_ADDRESSES: usize = 4096;

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

/// The site a host (a URL's, or a request's `Host`) names, as tokens and the verify digest are
/// bound to it: lower case, without a root label's dot and without the default ports.
pub fn site(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => (h, Some(p)),
        _ => (a.as_str(), None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    match port {
        Some("80" | "443") | None => host.to_string(),
        Some(p) => format!("{host}:{p}"),
    }
}

/// [`site`] of a public URL, as a visitor's `Host` names it.
pub fn url_site(url: &url::Url) -> String {
    match url.port() {
        Some(p) => site(&format!("{}:{p}", url.host_str().unwrap_or_default())),
        None => site(url.host_str().unwrap_or_default()),
    }
}

/// The access policy.
pub struct Access {
    mode: Mode,
    /// SHA-256 of `user:password`, compared in constant time whatever the guess's length.
    basic: Option<[u8; 32]>,
    key: Vec<u8>,
    generation: AtomicU64,
    throttle: Throttle,
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
    /// Not a token this burrow made for this host: bad encoding, length, version or signature.
    #[error("the share link is not valid here; ask for a new one")]
    Invalid,
    /// Past its expiry.
    #[error("the share link has expired; ask for a new one")]
    Expired,
    /// Of an earlier generation.
    #[error("the share link was revoked; ask for a new one")]
    Revoked,
}

impl TokenError {
    /// The refusal's reason, as the request log names it.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Invalid => "invalid link",
            TokenError::Expired => "expired link",
            TokenError::Revoked => "revoked link",
        }
    }
}

/// What the policy looks at in a tunnel request.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The method.
    pub method: &'a str,
    /// Path and query (origin form).
    pub target: &'a str,
    /// The public host asked for (`Host`, or an absolute target's authority), as [`site`] reads it.
    pub host: &'a str,
    /// A WebSocket upgrade: two-way, so never read-only.
    pub upgrade: bool,
    /// The request has a body (`Content-Length` above 0, or `Transfer-Encoding`).
    pub body: bool,
    /// The first `Authorization` value.
    pub authorization: Option<&'a [u8]>,
    /// Who is asking, for the guessing limits: the address frps appended last to
    /// `X-Forwarded-For`.
    pub client: &'a str,
}

/// What happens to a tunnel request in protected mode.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded, without the share cookie and, when `strip_auth`, without `Authorization`.
    Pass {
        /// The request's `Authorization` is burrow's basic auth, not the app's.
        strip_auth: bool,
    },
    /// 401.
    Unauthorized {
        /// What the visitor is told.
        message: Cow<'static, str>,
        /// The request log's word for it.
        reason: &'static str,
        /// Too many failures from everyone: the answer waits [`SLOW_FAILURE`].
        slow: bool,
    },
    /// 429: this address guessed too often; try again in this many seconds.
    Throttled(u64),
    /// 403: a read-only link used for something other than GET or HEAD without a body.
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
            throttle: Throttle::default(),
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

    /// A token for a link to `host` (the public URL's authority) that lives `ttl` from `now`;
    /// `secure` when the URL is https.
    pub fn mint(
        &self,
        now: SystemTime,
        ttl: Duration,
        read_only: bool,
        secure: bool,
        host: &str,
    ) -> (String, SystemTime) {
        // Whole seconds, rounded up: a link never lives less than it was asked to.
        let secs = (now + ttl.min(MAX_TTL)).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs_f64().ceil() as u64);
        let flags = if read_only { READ_ONLY } else { 0 } | if secure { SECURE } else { 0 };
        let mut t = Vec::with_capacity(TOKEN_BYTES);
        t.push(VERSION);
        t.push(flags);
        t.extend_from_slice(&self.generation().to_be_bytes());
        t.extend_from_slice(&secs.to_be_bytes());
        let mac = self.mac(&t, host);
        t.extend_from_slice(&mac);
        (URL_SAFE_NO_PAD.encode(t), UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn mac(&self, signed: &[u8], host: &str) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        m.update(signed);
        m.update(b"\0");
        m.update(site(host).as_bytes());
        m.finalize().into_bytes().into()
    }

    fn verify(&self, token: &[u8], now: SystemTime, host: &str) -> Result<Grant, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid);
        }
        let t = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Invalid)?;
        if t.len() != TOKEN_BYTES || t[0] != VERSION {
            return Err(TokenError::Invalid);
        }
        let (signed, mac) = t.split_at(SIGNED);
        if !bool::from(self.mac(signed, host).ct_eq(mac)) {
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

    /// Decides on a tunnel request in protected mode, given the values of its `Cookie` headers.
    /// The same answer for every path: a visitor without credentials learns nothing of the routes.
    pub fn check<'a>(&self, asked: Asked<'_>, cookies: impl Iterator<Item = &'a [u8]>, now: SystemTime) -> Verdict {
        let Asked { method, target, host, upgrade, body, authorization, client } = asked;
        if self.mode == Mode::Open {
            return Verdict::Pass { strip_auth: false };
        }
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        if let Some((token, rest)) = query.and_then(take_param) {
            return match self.verify(token.as_bytes(), now, host) {
                Ok(g) => {
                    // One leading slash: `//host` would send the visitor to another site.
                    // A backslash is a slash to browsers: `/\\evil.example` would leave the site too.
                    let path = format!("/{}", path.trim_start_matches(['/', '\\']).replace('\\', "%5C"));
                    let location = if rest.is_empty() { path } else { format!("{path}?{rest}") };
                    let max_age = g.expires.saturating_sub(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
                    let secure = if g.secure { "; Secure" } else { "" };
                    let cookie =
                        format!("{SHARE_PARAM}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
                    Verdict::Redirect { location, cookie }
                }
                Err(e) => Verdict::Unauthorized { message: e.to_string().into(), reason: e.reason(), slow: false },
            };
        }
        // Any basic credentials are burrow's when it asks for them: never the app's.
        let basic = self.basic.is_some() && authorization.and_then(basic_credentials).is_some();
        if basic {
            if let Some(retry) = self.throttle.blocked(client, now) {
                return Verdict::Throttled(retry);
            }
            if authorization.is_some_and(|a| self.basic_ok(a)) {
                return Verdict::Pass { strip_auth: true };
            }
        }
        let mut refused = None;
        for value in cookies {
            for token in share_cookies(value) {
                match self.verify(token, now, host) {
                    Ok(g) if g.read_only && (upgrade || body || (method != "GET" && method != "HEAD")) => {
                        return Verdict::ReadOnly
                    }
                    // A valid link lets in a visitor whose browser also sends stale basic auth.
                    Ok(_) => return Verdict::Pass { strip_auth: basic },
                    Err(e) => refused = Some(e),
                }
            }
        }
        match (refused, basic) {
            (_, true) => Verdict::Unauthorized {
                message: "wrong user name or password".into(),
                reason: "wrong credentials",
                slow: self.throttle.failed(client, now),
            },
            (Some(e), false) => {
                Verdict::Unauthorized { message: e.to_string().into(), reason: e.reason(), slow: false }
            }
            (None, false) => Verdict::Unauthorized {
                message: "this URL is protected: sign in, or open a share link from its owner".into(),
                reason: "no credentials",
                slow: false,
            },
        }
    }
}

/// Failed basic-auth attempts in the last minute: per client address, and in all.
#[derive(Default)]
struct Throttle(std::sync::Mutex<Failures>);

#[derive(Default)]
struct Failures {
    /// Milliseconds since the epoch of each address's failures within the last minute.
    by_address: std::collections::HashMap<String, std::collections::VecDeque<u64>>,
    all: std::collections::VecDeque<u64>,
}

const MINUTE_MS: u64 = 60_000;
/// The count of addresses past [`TRACKED_ADDRESSES`].
const SHARED: &str = "*";

fn millis(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Failures {
    fn forget_before(&mut self, cutoff: u64, now: u64) {
        let expire = |q: &mut std::collections::VecDeque<u64>| {
            while q.front().is_some_and(|&t| t <= cutoff || t > now) {
                q.pop_front();
            }
        };
        expire(&mut self.all);
        if self.by_address.len() >= TRACKED_ADDRESSES {
            self.by_address.retain(|_, q| {
                expire(q);
                !q.is_empty()
            });
        }
    }

    /// The count an address's failures go to: its own (an IPv6 client's /64, which one machine
    /// can hop around in), or once too many are tracked, a shared one.
    fn key(&self, client: &str) -> String {
        let key = match client.trim().parse::<std::net::IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(std::net::IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Ok(ip) => ip.to_string(),
            Err(_) => "unknown".to_string(),
        };
        if self.by_address.contains_key(&key) || self.by_address.len() < TRACKED_ADDRESSES {
            key
        } else {
            SHARED.to_string()
        }
    }
}

impl Throttle {
    /// Seconds until `client` may guess again, when it has used up its failures.
    fn blocked(&self, client: &str, now: SystemTime) -> Option<u64> {
        let now = millis(now);
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = f.key(client);
        // The shared count is everyone's: blocking it would lock out addresses that never guessed.
        if key == SHARED {
            return None;
        }
        let q = f.by_address.get_mut(&key)?;
        // A clock set back leaves failures "in the future": they are forgotten, not held for hours.
        while q.front().is_some_and(|&t| t + MINUTE_MS <= now || t > now) {
            q.pop_front();
        }
        (q.len() >= FAILURES_PER_ADDRESS).then(|| q.front().map_or(1, |&t| (t + MINUTE_MS - now).div_ceil(1000)))
    }

    /// Counts a failure of `client`; whether failures from everyone are past their limit.
    fn failed(&self, client: &str, now: SystemTime) -> bool {
        let now = millis(now);
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.forget_before(now.saturating_sub(MINUTE_MS), now);
        let key = f.key(client);
        f.by_address.entry(key).or_default().push_back(now);
        let slow = f.all.len() >= FAILURES_IN_ALL;
        // Only the count matters past the limit: the queue stays bounded.
        if !slow {
            f.all.push_back(now);
        }
        slow
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

    const HOST: &str = "app.example.com:8080";

    fn protected() -> Access {
        Access::new(Mode::Protected, Some("ann:s3cret pass"), Some(b"key of at least sixteen"), 4)
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    fn asked<'a>(method: &'a str, target: &'a str, auth: Option<&'a str>) -> Asked<'a> {
        Asked {
            method,
            target,
            host: HOST,
            upgrade: false,
            body: false,
            authorization: auth.map(str::as_bytes),
            client: "203.0.113.7",
        }
    }

    fn check(a: &Access, method: &str, target: &str, auth: Option<&str>, cookie: Option<&str>) -> Verdict {
        a.check(asked(method, target, auth), cookie.map(str::as_bytes).into_iter(), at())
    }

    fn token(a: &Access, ttl: u64, read_only: bool) -> String {
        a.mint(at(), Duration::from_secs(ttl), read_only, true, HOST).0
    }

    fn unauthorized(reason: &str) -> impl Fn(&Verdict) -> bool + '_ {
        move |v| matches!(v, Verdict::Unauthorized { reason: r, .. } if *r == reason)
    }

    #[test]
    fn open_mode_passes_everything() {
        let a = Access::default();
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
            &format!("Basic {}", STANDARD.encode("ann s3cret pass")),
            &format!("Basic {}", STANDARD.encode("ann:s3cret pas")),
            &format!("Basic {}", STANDARD.encode("ann:s3cret passs")),
            &format!("Basic {}", "A".repeat(100_000)),
        ] {
            assert!(unauthorized("wrong credentials")(&check(&a, "GET", "/", Some(bad), None)), "{bad:.40}");
        }
        assert!(unauthorized("no credentials")(&check(&a, "GET", "/", Some("Bearer abc"), None)));
        assert!(unauthorized("no credentials")(&check(&a, "GET", "/", Some("Basic"), None)));
        assert!(unauthorized("no credentials")(&check(&a, "GET", "/", None, None)));
    }

    #[test]
    fn guessing_is_throttled_per_address_and_slowed_for_everyone() {
        let a = protected();
        let wrong = format!("Basic {}", STANDARD.encode("ann:guess"));
        let right = format!("Basic {}", STANDARD.encode("ann:s3cret pass"));
        let from = |client: &str, auth: &str, t: SystemTime| {
            a.check(Asked { client, ..asked("GET", "/", Some(auth)) }, std::iter::empty(), t)
        };
        for i in 0..FAILURES_PER_ADDRESS {
            assert!(unauthorized("wrong credentials")(&from("198.51.100.1", &wrong, at())), "{i}");
        }
        // Refused before the password is even looked at, the right one included.
        assert_eq!(from("198.51.100.1", &right, at()), Verdict::Throttled(60));
        assert_eq!(from("198.51.100.1", &wrong, at() + Duration::from_secs(45)), Verdict::Throttled(15));
        assert_eq!(from("198.51.100.1", &right, at() + Duration::from_secs(60)), Verdict::Pass { strip_auth: true });
        // Others are not held back by one address's guesses...
        assert_eq!(from("198.51.100.2", &right, at()), Verdict::Pass { strip_auth: true });
        // ...until everyone together has failed too often: then each failure waits.
        let mut slow = 0;
        for i in 0..FAILURES_IN_ALL {
            let client = format!("192.0.2.{}", i / 5);
            if let Verdict::Unauthorized { slow: true, .. } = from(&client, &wrong, at() + Duration::from_secs(61)) {
                slow += 1;
            }
        }
        assert_eq!(slow, 0);
        assert!(matches!(
            from("192.0.2.250", &wrong, at() + Duration::from_secs(62)),
            Verdict::Unauthorized { slow: true, .. }
        ));
        assert!(matches!(
            from("192.0.2.250", &wrong, at() + Duration::from_secs(130)),
            Verdict::Unauthorized { slow: false, .. }
        ));
        // One machine hopping through its IPv6 /64 is one address.
        let later = at() + Duration::from_secs(300);
        for i in 0..FAILURES_PER_ADDRESS {
            from(&format!("2001:db8:1:2::{:x}", i + 1), &wrong, later);
        }
        assert_eq!(from("2001:db8:1:2:ffff::9", &right, later), Verdict::Throttled(60));
        assert_eq!(from("2001:db8:1:3::1", &right, later), Verdict::Pass { strip_auth: true });
        // A clock set back forgets, rather than holding an address for hours.
        assert_eq!(
            from("2001:db8:1:2::1", &right, later - Duration::from_secs(3600)),
            Verdict::Pass { strip_auth: true }
        );
    }

    #[test]
    fn past_the_tracked_addresses_one_shared_count_never_locks_anyone_out() {
        let a = protected();
        let wrong = format!("Basic {}", STANDARD.encode("ann:guess"));
        let right = format!("Basic {}", STANDARD.encode("ann:s3cret pass"));
        let from = |client: &str, auth: &str| {
            a.check(Asked { client, ..asked("GET", "/", Some(auth)) }, std::iter::empty(), at())
        };
        for i in 0..TRACKED_ADDRESSES as u32 {
            from(&std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(), &wrong);
        }
        for _ in 0..FAILURES_PER_ADDRESS {
            from("198.18.0.1", &wrong);
        }
        assert_eq!(from("198.18.0.2", &right), Verdict::Pass { strip_auth: true });
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
        let Verdict::Redirect { location, .. } =
            check(&a, "GET", &format!("/\\evil.example/a\\b?burrow_share={t}"), None, None)
        else {
            panic!("no redirect")
        };
        assert_eq!(location, "/evil.example/a%5Cb");
        let jar = format!("theme=dark; burrow_share={t}; sid=1");
        assert_eq!(check(&a, "POST", "/", None, Some(&jar)), Verdict::Pass { strip_auth: false });
        assert_eq!(without_share_cookie(jar.as_bytes()).as_deref(), Some(&b"theme=dark; sid=1"[..]));
        assert_eq!(without_share_cookie(format!("burrow_share={t}").as_bytes()), None);
        assert_eq!(without_share_cookie(b"burrow_shared=1").as_deref(), Some(&b"burrow_shared=1"[..]));
    }

    #[test]
    fn a_link_opens_only_the_host_it_was_minted_for() {
        let a = protected();
        let t = token(&a, 60, false);
        let jar = format!("burrow_share={t}");
        for same in ["APP.example.com:8080", "app.example.com.:8080"] {
            let v = a.check(Asked { host: same, ..asked("GET", "/", None) }, std::iter::once(jar.as_bytes()), at());
            assert_eq!(v, Verdict::Pass { strip_auth: false }, "{same}");
        }
        for other in ["other.example.com:8080", "app.example.com:9090", "app.example.com", ""] {
            let v = a.check(Asked { host: other, ..asked("GET", "/", None) }, std::iter::once(jar.as_bytes()), at());
            assert!(unauthorized("invalid link")(&v), "{other}: {v:?}");
            let q = format!("/?burrow_share={t}");
            let v = a.check(Asked { host: other, ..asked("GET", &q, None) }, std::iter::empty(), at());
            assert!(unauthorized("invalid link")(&v), "{other}: {v:?}");
        }
        assert_eq!(site("App.Example.com:443"), "app.example.com");
        assert_eq!(site("[::1]:8080"), "[::1]:8080");
        assert_eq!(url_site(&url::Url::parse("https://x.example:8443/a").unwrap()), "x.example:8443");
    }

    #[test]
    fn read_only_links_allow_get_and_head_without_a_body() {
        let a = protected();
        let jar = format!("burrow_share={}", token(&a, 60, true));
        let with = |asked: Asked<'_>| a.check(asked, std::iter::once(jar.as_bytes()), at());
        for m in ["GET", "HEAD"] {
            assert_eq!(with(asked(m, "/", None)), Verdict::Pass { strip_auth: false });
            assert_eq!(with(Asked { body: true, ..asked(m, "/", None) }), Verdict::ReadOnly);
        }
        for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            assert_eq!(with(asked(m, "/", None)), Verdict::ReadOnly);
        }
        // A WebSocket talks both ways: not for a read-only link.
        assert_eq!(with(Asked { upgrade: true, ..asked("GET", "/ws", None) }), Verdict::ReadOnly);
    }

    #[test]
    fn forged_expired_revoked_truncated_and_oversized_tokens_are_refused() {
        let a = protected();
        let t = token(&a, 60, false);
        let other = Access::new(Mode::Protected, None, Some(b"another key entirely"), 4);
        let expired = a.mint(at() - Duration::from_secs(61), Duration::from_secs(60), false, false, HOST).0;
        let mut flipped = URL_SAFE_NO_PAD.decode(&t).unwrap();
        flipped[1] |= READ_ONLY;
        let mut v1 = URL_SAFE_NO_PAD.decode(&t).unwrap();
        v1[0] = 1;
        let cases = [
            (token(&other, 60, false), TokenError::Invalid),
            (expired, TokenError::Expired),
            (t[..t.len() - 1].to_string(), TokenError::Invalid),
            (t[..10].to_string(), TokenError::Invalid),
            (format!("{t}{}", "A".repeat(5000)), TokenError::Invalid),
            (URL_SAFE_NO_PAD.encode(flipped), TokenError::Invalid),
            (URL_SAFE_NO_PAD.encode(v1), TokenError::Invalid),
            ("%%%%".into(), TokenError::Invalid),
            (String::new(), TokenError::Invalid),
        ];
        for (bad, why) in &cases {
            let msg = Verdict::Unauthorized { message: why.to_string().into(), reason: why.reason(), slow: false };
            assert_eq!(check(&a, "GET", &format!("/?burrow_share={bad}"), None, None), msg, "{bad:.40}");
            assert_eq!(check(&a, "GET", "/", None, Some(&format!("burrow_share={bad}"))), msg, "{bad:.40}");
        }
        assert_eq!(a.revoke(), 5);
        let revoked = Verdict::Unauthorized {
            message: TokenError::Revoked.to_string().into(),
            reason: "revoked link",
            slow: false,
        };
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
        let (t, expires) = a.mint(UNIX_EPOCH, Duration::from_secs(u64::MAX / 4), false, false, HOST);
        assert!(t.len() <= MAX_TOKEN_CHARS && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(expires, UNIX_EPOCH + MAX_TTL);
    }
}
