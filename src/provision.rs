//! The provisioning API client (contract §5): reserve tunnels for a user and project, renew the
//! reservation before it expires, release it at shutdown.
//!
//! Transient failures (5xx, timeouts, connection errors) are retried with capped exponential
//! backoff and jitter; a refusal (401/403) is final, and so is a 2xx answer that cannot be read —
//! the server is then broken in a way retrying will not fix, and the error names what is wrong.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{ApiConfig, ServerProxy};
use crate::events::{ErrorCode, Fatal, Reporter};

/// How long one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A reservation as the API returns it.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// `reservationId`.
    pub id: String,
    /// `expiresAt`, if the lease expires.
    pub expires_at: Option<SystemTime>,
    /// When it was made or last renewed (the lease's start, for the renewal schedule).
    pub renewed_at: SystemTime,
    /// Where and how to reach frps.
    pub server: ReservedServer,
    /// The tunnels.
    pub tunnels: Vec<ReservedTunnel>,
}

/// `server` of a reservation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservedServer {
    /// frps host.
    pub addr: String,
    /// frps bind port.
    pub port: u16,
    /// frp auth token (secret).
    pub token: String,
    /// TLS to frps.
    #[serde(default = "yes")]
    pub tls: bool,
    /// tcp_mux.
    #[serde(default = "yes")]
    pub tcp_mux: bool,
    /// SNI / verification name.
    #[serde(default)]
    pub server_name: Option<String>,
    /// SHA-256 pin of frps' certificate, hex.
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// frp wire protocol, `v1` or `v2`; the configuration's when absent.
    #[serde(default)]
    pub wire_protocol: Option<String>,
    /// The frps connection's proxy (secret: may hold credentials), overriding the environment's.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// `tcp`, `websocket` or `wss`; the configuration's when absent.
    #[serde(default)]
    pub protocol: Option<String>,
}

fn yes() -> bool {
    true
}

/// One reserved tunnel.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservedTunnel {
    /// Tunnel name.
    pub name: String,
    /// `http` (the only type burrow reserves).
    #[serde(rename = "type")]
    pub kind: String,
    /// Subdomain on frps.
    #[serde(default)]
    pub subdomain: Option<String>,
    /// Custom domains on frps.
    #[serde(default)]
    pub custom_domains: Vec<String>,
    /// The URL users open.
    #[serde(default)]
    pub public_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReserveBody {
    reservation_id: String,
    #[serde(default)]
    expires_at: Option<String>,
    server: ReservedServer,
    tunnels: Vec<ReservedTunnel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewBody {
    #[serde(default)]
    expires_at: Option<String>,
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused, DNS, timeout.
    #[error("the provisioning API at {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What failed.
        reason: String,
    },
    /// 401/403.
    #[error("the provisioning API refused the request ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// Any other error status (5xx is retried).
    #[error("the provisioning API answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// A 2xx answer that cannot be used.
    #[error("the provisioning API's answer to {what} is malformed: {problem}")]
    Malformed {
        /// Which call.
        what: &'static str,
        /// What is wrong, naming the field.
        problem: String,
    },
}

impl ApiError {
    /// The contract's code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unreachable { .. } => ErrorCode::ApiUnreachable,
            ApiError::Rejected { .. } => ErrorCode::ApiRejected,
            ApiError::Status { .. } | ApiError::Malformed { .. } => ErrorCode::ApiError,
        }
    }

    /// Worth another try.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// What to do about it.
    /// This error as the one that stops burrow.
    pub fn fatal(&self) -> Fatal {
        Fatal::new(self.code(), self.to_string(), self.hint())
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ApiError::Unreachable { .. } => "check BURROW_API_URL and the network; burrow keeps retrying",
            ApiError::Rejected { .. } => "check BURROW_API_TOKEN, BURROW_USER_ID and BURROW_PROJECT_ID",
            ApiError::Status { status, .. } if *status >= 500 => {
                "the provisioning service has a problem; burrow keeps retrying"
            }
            ApiError::Status { .. } => {
                "the provisioning API refused the reservation request; check BURROW_USER_ID and BURROW_PROJECT_ID"
            }
            ApiError::Malformed { .. } => {
                "the provisioning API does not follow burrow's contract (section 5); report it to its operators"
            }
        }
    }
}

/// An HTTP client as burrow makes them: its user agent, `timeout`, through `proxy` or direct (only
/// burrow's own reading of the proxy environment applies, not reqwest's second one).
pub fn http_client(
    proxy: Option<&crate::transport::proxy::ProxyUrl>,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, String> {
    let builder = reqwest::Client::builder().timeout(timeout).user_agent(concat!("burrow/", env!("CARGO_PKG_VERSION")));
    Ok(match proxy {
        Some(p) => builder.proxy(reqwest::Proxy::all(p.with_credentials(false)).map_err(|e| format!("{p}: {e}"))?),
        None => builder.no_proxy(),
    })
}

/// The API client.
pub struct Api {
    http: reqwest::Client,
    cfg: ApiConfig,
}

impl Api {
    /// A client for `cfg`, through `proxy` (the same setting as the frps connection's, with
    /// `NO_PROXY` checked against the API's host).
    pub fn new(cfg: ApiConfig, proxy: &ServerProxy) -> Result<Self, String> {
        let host = url::Url::parse(&cfg.url).ok().and_then(|u| u.host_str().map(String::from)).unwrap_or_default();
        let builder = http_client(proxy.for_host(&host), REQUEST_TIMEOUT)
            .map_err(|e| format!("cannot use the proxy for the provisioning API: {e}"))?;
        let http = builder.build().map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Self { http, cfg })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, bytes::Bytes), ApiError> {
        let url = format!("{}{path}", self.cfg.url);
        let mut req = self.http.request(method, &url);
        if !self.cfg.token.expose().is_empty() {
            req = req.bearer_auth(self.cfg.token.expose());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| ApiError::Unreachable { url: url.clone(), reason: short(&e) })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ApiError::Unreachable { url, reason: short(&e) })?;
        if (200..300).contains(&status) {
            return Ok((status, bytes));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned());
        Err(if status == 401 || status == 403 {
            ApiError::Rejected { status, message }
        } else {
            ApiError::Status { status, message }
        })
    }

    /// `POST /v1/reservations`, once.
    pub async fn reserve(&self, tunnels: &[(&str, &str)]) -> Result<Reservation, ApiError> {
        let body = json!({
            "userId": self.cfg.user_id,
            "projectId": self.cfg.project_id,
            "tunnels": tunnels.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        });
        let (_, bytes) = self.call(reqwest::Method::POST, "/v1/reservations", Some(body)).await?;
        parse_reservation(&bytes)
    }

    /// `POST /v1/reservations/{id}/renew`, once; the new expiry.
    pub async fn renew(&self, id: &str) -> Result<Option<SystemTime>, ApiError> {
        let (_, bytes) =
            self.call(reqwest::Method::POST, &format!("/v1/reservations/{}/renew", encode(id)), None).await?;
        let body: RenewBody = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Malformed { what: "renew", problem: e.to_string() })?;
        parse_time(body.expires_at.as_deref(), "renew")
    }

    /// `DELETE /v1/reservations/{id}`, once.
    pub async fn release(&self, id: &str) -> Result<(), ApiError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/reservations/{}", encode(id)), None).await.map(|_| ())
    }
}

fn short(e: &reqwest::Error) -> String {
    // reqwest's Display names the URL already; its source says what failed.
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn parse_time(v: Option<&str>, what: &'static str) -> Result<Option<SystemTime>, ApiError> {
    match v {
        None => Ok(None),
        Some(t) => humantime::parse_rfc3339_weak(t).map(Some).map_err(|e| ApiError::Malformed {
            what,
            problem: format!("expiresAt {t:?} is not an RFC 3339 time ({e})"),
        }),
    }
}

/// Parses and checks a reservation answer.
pub fn parse_reservation(bytes: &[u8]) -> Result<Reservation, ApiError> {
    let bad = |problem: String| ApiError::Malformed { what: "the reservation", problem };
    let body: ReserveBody = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if body.reservation_id.is_empty() {
        return Err(bad("reservationId is empty".into()));
    }
    if body.server.addr.is_empty() || body.server.port == 0 {
        return Err(bad("server.addr and server.port must name frps".into()));
    }
    if let Some(pin) = &body.server.cert_sha256 {
        crate::config::parse_pin("server.certSha256", pin)
            .map_err(|_| bad(format!("server.certSha256 {pin:?} is not a SHA-256 in hex")))?;
    }
    if let Some(p) = body.server.protocol.as_deref().filter(|p| !p.is_empty()) {
        crate::config::parse_protocol("server.protocol", p).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(p) = body.server.proxy_url.as_deref().filter(|p| !p.is_empty()) {
        crate::config::parse_proxy_url("server.proxyUrl", p).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(w) = body.server.wire_protocol.as_deref().filter(|w| !w.is_empty()) {
        crate::config::parse_wire("server.wireProtocol", w)
            .map_err(|_| bad(format!("server.wireProtocol {w:?} is neither \"v1\" nor \"v2\"")))?;
    }
    if body.tunnels.is_empty() {
        return Err(bad("tunnels is empty".into()));
    }
    for t in &body.tunnels {
        if t.kind != "http" {
            return Err(bad(format!("tunnel {:?} has type {:?}; burrow reserves http tunnels", t.name, t.kind)));
        }
        if let Some(u) = &t.public_url {
            let ok = reqwest::Url::parse(u)
                .is_ok_and(|p| (p.scheme() == "http" || p.scheme() == "https") && p.host_str().is_some());
            if !ok {
                return Err(bad(format!("tunnel {:?} has publicUrl {u:?}, not an http(s) URL", t.name)));
            }
        }
        if t.subdomain.as_deref().is_none_or(str::is_empty) && t.custom_domains.is_empty() {
            return Err(bad(format!("tunnel {:?} has neither subdomain nor customDomains", t.name)));
        }
    }
    Ok(Reservation {
        id: body.reservation_id,
        expires_at: parse_time(body.expires_at.as_deref(), "the reservation")?,
        renewed_at: SystemTime::now(),
        server: body.server,
        tunnels: body.tunnels,
    })
}

/// Retries `op` while it fails transiently: capped exponential backoff with jitter, an `error`
/// event when the reason changes. `None` when shutdown came first.
pub async fn with_retry<T, F, Fut>(
    reporter: &Reporter,
    shutdown: &CancellationToken,
    what: &str,
    mut op: F,
) -> Option<Result<T, ApiError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0u32;
    let mut last: Option<String> = None;
    loop {
        let r = tokio::select! {
            r = op() => r,
            _ = shutdown.cancelled() => return None,
        };
        match r {
            Err(e) if e.is_transient() => {
                attempt += 1;
                let msg = e.to_string();
                if last.as_deref() != Some(&msg) {
                    reporter.error(e.code(), msg.clone(), e.hint());
                    last = Some(msg);
                }
                let delay = crate::supervise::backoff(attempt);
                tracing::info!("{what} failed ({e}); retrying in {} ms", delay.as_millis());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
            other => return Some(other),
        }
    }
}

/// When to renew: when a third of the lease remains.
pub fn renew_at(r: &Reservation) -> Option<SystemTime> {
    let expires = r.expires_at?;
    let lease = expires.duration_since(r.renewed_at).unwrap_or_default();
    Some(expires - lease / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"reservationId":"r-1","expiresAt":"2030-01-01T00:00:00Z","server":{"addr":"frps.example.com","port":7000,"token":"t","tls":true,"tcpMux":true,"serverName":null,"certSha256":null},"tunnels":[{"name":"web","type":"http","subdomain":"abc","customDomains":[],"remotePort":null,"publicUrl":"https://abc.example.com"}]}"#;

    #[test]
    fn a_contract_answer_parses() {
        let r = parse_reservation(GOOD.as_bytes()).unwrap();
        assert_eq!(r.id, "r-1");
        assert_eq!(r.server.port, 7000);
        assert_eq!(r.tunnels[0].public_url.as_deref(), Some("https://abc.example.com"));
        assert!(r.expires_at.is_some());
    }

    #[test]
    fn malformed_answers_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("not json", "expected"),
            (r#"{"expiresAt":null,"server":{"addr":"h","port":1,"token":"t"},"tunnels":[]}"#, "reservationId"),
            (r#"{"reservationId":"r","server":{"port":1,"token":"t"},"tunnels":[]}"#, "addr"),
            (r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t"},"tunnels":[]}"#, "tunnels is empty"),
            (
                r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t"},"tunnels":[{"name":"x","type":"udp","subdomain":"a"}]}"#,
                "udp",
            ),
            (
                r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t"},"tunnels":[{"name":"x","type":"http"}]}"#,
                "neither subdomain",
            ),
            (
                r#"{"reservationId":"r","expiresAt":"soon","server":{"addr":"h","port":1,"token":"t"},"tunnels":[{"name":"x","type":"http","subdomain":"a"}]}"#,
                "expiresAt",
            ),
            (
                r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t","certSha256":"zz"},"tunnels":[{"name":"x","type":"http","subdomain":"a"}]}"#,
                "certSha256",
            ),
            (
                r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t","wireProtocol":"v9"},"tunnels":[{"name":"x","type":"http","subdomain":"a"}]}"#,
                "server.wireProtocol \"v9\"",
            ),
            (
                r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t","protocol":"quic"},"tunnels":[{"name":"x","type":"http","subdomain":"a"}]}"#,
                "server.protocol=quic is invalid",
            ),
            (r#"{"reservationId":"r","server":{"addr":"h","port":70000,"token":"t"},"tunnels":[]}"#, "70000"),
            (
                r#"{"reservationId":"r","server":{"addr":"h","port":1,"token":"t"},"tunnels":[{"name":"x","type":"http","subdomain":"a","publicUrl":"javascript:alert(1)"}]}"#,
                "publicUrl",
            ),
        ];
        for (body, want) in cases {
            let e = parse_reservation(body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
            assert_eq!(e.code(), ErrorCode::ApiError);
            assert!(!e.is_transient());
        }
    }

    #[test]
    fn renewal_when_a_third_remains() {
        let mut r = parse_reservation(GOOD.as_bytes()).unwrap();
        r.renewed_at = SystemTime::UNIX_EPOCH;
        r.expires_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(9));
        assert_eq!(renew_at(&r), Some(SystemTime::UNIX_EPOCH + Duration::from_secs(6)));
    }

    #[test]
    fn transient_and_final_errors() {
        assert!(ApiError::Status { status: 503, message: String::new() }.is_transient());
        assert!(!ApiError::Status { status: 400, message: String::new() }.is_transient());
        assert!(!ApiError::Rejected { status: 401, message: String::new() }.is_transient());
        assert_eq!(ApiError::Rejected { status: 403, message: String::new() }.code().exit_code(), 3);
    }
}
