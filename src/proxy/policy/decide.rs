//! The one request pipeline: who is asking, which route, and may they. Each request is decided
//! here once, whichever engine serves it; the fast path and hyper only render the decision.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::error_page;
use crate::proxy::access::{self, without_share_cookie, Asked, Mode, Verdict};
use crate::proxy::{Conn, Proxy, VERIFY_PREFIX};

/// What the pipeline reads of a request; each engine fills it in its own pass over the head.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::proxy) struct View<'a> {
    pub method: &'a str,
    /// Path and query (origin form, whatever form the request came in).
    pub target: &'a str,
    /// `Host`, or an absolute target's authority.
    pub host: &'a [u8],
    /// The first `Authorization`.
    pub authorization: Option<&'a [u8]>,
    /// The last `X-Forwarded-For` header's value: frps appends the public client to it.
    pub forwarded_for: Option<&'a [u8]>,
    /// `Content-Length` above 0, or `Transfer-Encoding`.
    pub body: bool,
    /// The `Upgrade` value of a request that asks for one (`Connection: upgrade`).
    pub upgrade: Option<&'a [u8]>,
}

/// What happens to a request.
#[derive(Debug)]
pub(in crate::proxy) enum Decision {
    /// Forwarded to `route` (an index of the route table), its headers edited so.
    Forward { route: usize, edits: Edits },
    /// Answered by the proxy itself.
    Answer(Answer),
}

/// How a forwarded request's headers change, beyond the hop-by-hop rules every request meets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::proxy) struct Edits {
    /// A tunnel request: the method-override headers and `HTTP2-Settings` go.
    pub tunnel: bool,
    /// `Authorization` carried burrow's basic auth.
    pub strip_auth: bool,
    /// burrow's share cookie goes.
    pub strip_cookie: bool,
    /// The request's upgrade goes on: a WebSocket through the tunnel, any upgrade locally.
    pub upgrade: bool,
}

/// Headers through which a client could name another method or path than the ones checked, or
/// ask for HTTP/2 on a connection the policy would no longer see: never sent on for tunnel
/// requests, in any spelling a CGI-style server reads as the same (`X_HTTP_METHOD_OVERRIDE`).
pub(in crate::proxy) const TUNNEL_DROPPED: [&str; 6] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "http2-settings",
    "x-original-url",
    "x-rewrite-url",
];

/// Whether a header name is one of [`TUNNEL_DROPPED`], `_` read as `-`.
pub(in crate::proxy) fn tunnel_dropped(name: &str) -> bool {
    TUNNEL_DROPPED.iter().any(|d| {
        d.len() == name.len()
            && d.bytes().zip(name.bytes()).all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
    })
}

impl Edits {
    /// Whether a header (other than `Cookie`, which [`Self::cookie`] filters) is dropped.
    pub(in crate::proxy) fn drops(&self, name: &str) -> bool {
        (self.strip_auth && name.eq_ignore_ascii_case("authorization")) || (self.tunnel && tunnel_dropped(name))
    }

    /// A `Cookie` value as forwarded (`None`: nothing left of it).
    pub(in crate::proxy) fn cookie<'v>(&self, value: &'v [u8]) -> Option<Cow<'v, [u8]>> {
        if self.strip_cookie {
            without_share_cookie(value)
        } else {
            Some(Cow::Borrowed(value))
        }
    }

    /// Applies the edits to a header map (the hyper engine).
    pub(in crate::proxy) fn apply(&self, h: &mut HeaderMap) {
        if self.strip_auth {
            h.remove(header::AUTHORIZATION);
        }
        if self.tunnel {
            let dropped: Vec<HeaderName> = h.keys().filter(|k| tunnel_dropped(k.as_str())).cloned().collect();
            for name in dropped {
                h.remove(name);
            }
        }
        if self.strip_cookie
            && h.get_all(header::COOKIE).iter().any(|v| matches!(self.cookie(v.as_bytes()), Some(Cow::Owned(_)) | None))
        {
            let values: Vec<HeaderValue> = h.get_all(header::COOKIE).iter().cloned().collect();
            h.remove(header::COOKIE);
            for v in values {
                if let Some(kept) = self.cookie(v.as_bytes()) {
                    if let Ok(v) = HeaderValue::from_bytes(&kept) {
                        h.append(header::COOKIE, v);
                    }
                }
            }
        }
    }
}

/// The proxy's own answer to a request.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::proxy) struct Answer {
    pub status: StatusCode,
    /// The error code of a JSON answer.
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Headers besides the content type and `Cache-Control`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A `text/plain` body in place of the error page (the verify answer).
    pub plain: Option<String>,
    /// Waited before answering: too many wrong passwords from everyone.
    pub delay: Option<Duration>,
    /// Why a tunnel request was refused, in the request log's words.
    pub refused: Option<&'static str>,
}

impl Answer {
    fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Answer { status, code, message: message.into(), headers: Vec::new(), plain: None, delay: None, refused: None }
    }

    fn refused(mut self, why: &'static str) -> Self {
        self.refused = Some(why);
        self
    }

    fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The content type and body: an error page (HTML, or JSON for API clients), or the plain text.
    pub(in crate::proxy) fn body(&self, json: bool) -> (&'static str, String) {
        match &self.plain {
            Some(text) => ("text/plain", text.clone()),
            None => error_page(self.status, self.code, &self.message, json),
        }
    }
}

/// A 404 exactly like a path no route serves: the public learns nothing of hidden routes.
fn no_route(path: &str) -> Answer {
    Answer::new(StatusCode::NOT_FOUND, "no_route", format!("no route serves {path}"))
}

/// Whether an `Upgrade` value asks for a WebSocket and nothing else.
fn websocket(upgrade: &[u8]) -> bool {
    upgrade.trim_ascii().eq_ignore_ascii_case(b"websocket")
}

impl Proxy {
    /// Decides on one request of `conn`, given the values of its `Cookie` headers.
    pub(in crate::proxy) fn decide<'a>(
        &self,
        conn: &Conn,
        view: &View<'_>,
        cookies: impl Iterator<Item = &'a [u8]>,
        now: SystemTime,
    ) -> Decision {
        let path = view.target.split_once('?').map_or(view.target, |(p, _)| p);
        let host = std::str::from_utf8(view.host).unwrap_or_default();
        if let Some(nonce) = path.strip_prefix(VERIFY_PREFIX) {
            if view.method != "GET" {
                let a = Answer::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "the verify path answers GET only",
                );
                return Decision::Answer(a.header(header::ALLOW, "GET"));
            }
            let mut a = Answer::new(StatusCode::OK, "verify", "");
            a.plain = Some(self.verify_answer(nonce, host));
            return Decision::Answer(a);
        }
        let tunnel = conn.tunnel;
        let ws = view.upgrade.is_some_and(websocket);
        let protected = tunnel && self.access.mode() == Mode::Protected;
        let mut strip_auth = false;
        if protected {
            // A client from another machine is its own address; frps names a tunnel's visitor last.
            let client = match &conn.client_ip {
                Some(ip) => ip.as_bytes(),
                None => view.forwarded_for.and_then(|v| v.rsplit(|&b| b == b',').next()).unwrap_or(b"unknown"),
            };
            let asked = Asked {
                method: view.method,
                target: view.target,
                host,
                upgrade: ws,
                body: view.body,
                authorization: view.authorization,
                client: std::str::from_utf8(client.trim_ascii()).unwrap_or("unknown"),
            };
            match self.access.check(asked, cookies, now) {
                Verdict::Pass { strip_auth: s } => strip_auth = s,
                refused => return Decision::Answer(self.refusal(refused)),
            }
        }
        let route = match self.routes.select_index(path) {
            Ok(Some(i)) => i,
            Ok(None) => return Decision::Answer(no_route(path)),
            Err(e) => {
                return Decision::Answer(Answer::new(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    format!("{e}; request refused"),
                ))
            }
        };
        if tunnel && (!self.routes.all()[route].public || self.routes.hides(path)) {
            return Decision::Answer(no_route(path).refused("hidden route"));
        }
        let upgrade = view.upgrade.is_some() && (!tunnel || ws);
        Decision::Forward { route, edits: Edits { tunnel, strip_auth, strip_cookie: protected, upgrade } }
    }

    /// The answer to a tunnel request the access policy refuses.
    fn refusal(&self, verdict: Verdict) -> Answer {
        match verdict {
            Verdict::Pass { .. } => no_route("/"),
            Verdict::Unauthorized { message, reason, slow } => {
                let mut a = Answer::new(StatusCode::UNAUTHORIZED, "unauthorized", message).refused(reason);
                a.delay = slow.then_some(access::SLOW_FAILURE);
                if self.access.asks_basic() {
                    a = a.header(header::WWW_AUTHENTICATE, "Basic realm=\"burrow\", charset=\"UTF-8\"");
                }
                a
            }
            Verdict::Throttled(secs) => Answer::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many wrong passwords from this address; try again in {secs} s"),
            )
            .refused("throttled")
            .header(header::RETRY_AFTER, &secs.to_string()),
            Verdict::ReadOnly => Answer::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "this share link is read-only: only GET and HEAD without a body are allowed",
            )
            .refused("read-only"),
            Verdict::Redirect { location, cookie } => {
                Answer::new(StatusCode::SEE_OTHER, "share_link", "the share link is now a cookie")
                    .header(header::LOCATION, &location)
                    .header(header::SET_COOKIE, &cookie)
                    .header(header::REFERRER_POLICY, "no-referrer")
            }
        }
    }
}
