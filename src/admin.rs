//! The admin API and status page (contract §6), on a loopback address.
//!
//! `GET /` serves the status page (it holds no secret: it reads the token from its URL fragment,
//! which browsers never send). Every `/api/*` call needs `Authorization: Bearer <token>`; a
//! request with an `Origin` other than the admin address itself is refused (403), so a web page
//! the user happens to visit cannot drive burrow through the user's browser.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::control::{Command, Controller, ShareRequest};
use crate::events::Reporter;

const PAGE: &str = include_str!("../resources/status.html");

type Body = BoxBody<Bytes, Infallible>;

struct Admin {
    addr: SocketAddr,
    token: String,
    ctl: Controller,
    reporter: Reporter,
}

/// Serves the admin API on `listener` until burrow exits.
pub fn serve(listener: TcpListener, token: String, ctl: Controller, reporter: Reporter) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let admin = Arc::new(Admin { addr, token, ctl, reporter });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

fn full(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, ctype.parse().expect("static content type"));
    r.headers_mut().insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    r
}

fn json_resp(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

/// `share`'s settings from the query (`ttl_s`, `read_only`), as the stdin command takes them.
fn share_request(query: Option<&str>) -> Result<ShareRequest, String> {
    let mut v = serde_json::Map::new();
    for (k, val) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let parsed = serde_json::from_str(&val).unwrap_or(serde_json::Value::String(val.into_owned()));
        v.insert(k.into_owned(), parsed);
    }
    ShareRequest::from_json(&serde_json::Value::Object(v))
}

/// 409: burrow cannot do that as configured.
/// The admin API's refusals, each with its status and code (contract §6).
enum ApiError {
    /// No or a wrong bearer token.
    Unauthorized,
    /// A browser request from another origin.
    ForbiddenOrigin,
    /// No such page or endpoint.
    NotFound(&'static str),
    /// The endpoint takes another method.
    Method(&'static str),
    /// Bad parameters.
    BadRequest(String),
    /// Not possible now (a share link for an open URL, no tunnel up): what to do about it.
    NotPossible { message: String, hint: String },
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::ForbiddenOrigin => "forbidden_origin",
            ApiError::NotFound(_) => "not_found",
            ApiError::Method(_) => "method",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotPossible { .. } => "not_possible",
        }
    }

    fn response(self) -> Response<Body> {
        let code = self.code();
        let (status, body) = match self {
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, json!({"code": code, "message": "missing or wrong bearer token"}))
            }
            ApiError::ForbiddenOrigin => {
                (StatusCode::FORBIDDEN, json!({"code": code, "message": "requests from other origins are refused"}))
            }
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, json!({"code": code, "message": what})),
            ApiError::Method(what) => (StatusCode::METHOD_NOT_ALLOWED, json!({"code": code, "message": what})),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"code": code, "message": m})),
            ApiError::NotPossible { message, hint } => {
                (StatusCode::CONFLICT, json!({"code": code, "message": message, "hint": hint}))
            }
        };
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut r = json_resp(status, json!({ "error": body }));
        if unauthorized {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        r
    }
}

fn refused(message: String, hint: String) -> Response<Body> {
    ApiError::NotPossible { message, hint }.response()
}

impl Admin {
    fn origin_ok(&self, req: &Request<Incoming>) -> bool {
        match req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            None => true,
            Some(o) => {
                let port = self.addr.port();
                let ok = [
                    format!("http://{}", self.addr),
                    format!("http://localhost:{port}"),
                    format!("http://127.0.0.1:{port}"),
                ];
                ok.iter().any(|x| x == o)
            }
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Constant time: timing must not reveal how much of a guess was right.
        got.is_some_and(|t| bool::from(subtle::ConstantTimeEq::ct_eq(t.trim().as_bytes(), self.token.as_bytes())))
    }

    fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if !self.origin_ok(&req) {
            return ApiError::ForbiddenOrigin.response();
        }
        let path = req.uri().path();
        if path == "/" || path == "/index.html" {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return ApiError::Method("GET only").response();
            }
            let mut r = full(StatusCode::OK, "text/html; charset=utf-8", PAGE);
            r.headers_mut().insert(
                "content-security-policy",
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
                    .parse()
                    .expect("static"),
            );
            r.headers_mut().insert("x-frame-options", "DENY".parse().expect("static"));
            return r;
        }
        if !path.starts_with("/api/") {
            return ApiError::NotFound("no such page").response();
        }
        if !self.authorized(&req) {
            return ApiError::Unauthorized.response();
        }
        let cmd = |c: Command| {
            self.ctl.apply(c);
            json_resp(StatusCode::ACCEPTED, json!({"ok": true}))
        };
        match (req.method(), path) {
            (&Method::GET, "/api/status") => json_resp(StatusCode::OK, json!(self.reporter.status().snapshot())),
            (&Method::POST, "/api/start") => cmd(Command::Start),
            (&Method::POST, "/api/stop") => cmd(Command::Stop),
            (&Method::POST, "/api/reconnect") => cmd(Command::Reconnect),
            (&Method::POST, "/api/share") => match share_request(req.uri().query()) {
                Ok(r) => match self.ctl.share(r) {
                    Ok((url, expires)) => json_resp(StatusCode::OK, json!({"url": url, "expires": expires})),
                    Err((message, hint)) => refused(message, hint),
                },
                Err(e) => ApiError::BadRequest(e).response(),
            },
            (&Method::POST, "/api/revoke_shares") => match self.ctl.revoke_shares() {
                Ok(generation) => json_resp(StatusCode::OK, json!({"generation": generation})),
                Err((message, hint)) => refused(message, hint),
            },
            (&Method::GET, "/api/events") => self.sse(),
            (
                _,
                "/api/status" | "/api/start" | "/api/stop" | "/api/reconnect" | "/api/events" | "/api/share"
                | "/api/revoke_shares",
            ) => ApiError::Method("wrong method for this endpoint").response(),
            _ => ApiError::NotFound("no such endpoint").response(),
        }
    }

    /// Server-sent events: the current status first, then every event as stdout gets it (the
    /// same lines). A client that falls behind is disconnected; it reconnects and starts over.
    fn sse(&self) -> Response<Body> {
        let rx = self.reporter.subscribe();
        let first = format!("data: {}\n\n", self.reporter.json_line(&self.reporter.status_event()));
        let stream = futures::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
            if let Some(f) = first {
                return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(f))), (None, rx)));
            }
            let v = rx.recv().await?;
            Some((Ok(Frame::data(Bytes::from(format!("data: {v}\n\n")))), (None, rx)))
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().expect("static"));
        r.headers_mut().insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
        r
    }
}
