//! The frps connection through a proxy: HTTP `CONNECT` or SOCKS5, as the layer that dials.
//!
//! [`ProxyTransport`] takes [`super::tcp::TcpTransport`]'s place under TLS and yamux: it connects
//! to the proxy and asks it for frps, so every wire mode works through it. `http://` proxies get
//! `CONNECT host:port` (Basic credentials when the URL has them); `socks5://` proxies get the
//! address frps' name resolves to here, `socks5h://` proxies the name itself (RFC 1928, with
//! RFC 1929 user/password when the URL has them).

use std::fmt;
use std::net::SocketAddr;

use base64::Engine as _;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tcp::{TcpTransport, CONNECT_TIMEOUT};
use super::{BoxStream, Transport, TransportError};

/// The longest answer head burrow reads from an HTTP proxy.
const MAX_HEAD: usize = 16 * 1024;

/// How to ask the proxy for frps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS5, given an IP address.
    Socks5,
    /// SOCKS5, given the name (the proxy resolves it).
    Socks5h,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
        }
    }
}

/// A proxy URL: `http://[user:pass@]host:port`, `socks5://…`, `socks5h://…`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// How to ask.
    pub scheme: Scheme,
    /// The proxy's host (no brackets).
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    credentials: Option<(String, String)>,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials are secrets: never printed.
        write!(f, "{}{}", self, if self.credentials.is_some() { " (with credentials)" } else { "" })
    }
}

/// `scheme://host:port`, never the credentials (what `connected.via` shows).
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), super::host_port(&self.host, self.port))
    }
}

impl ProxyUrl {
    /// Parses a proxy URL; the error says what is wrong with it (never echoing credentials).
    pub fn parse(v: &str) -> Result<ProxyUrl, String> {
        let url = url::Url::parse(v.trim()).map_err(|e| format!("not a URL ({e})"))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "socks5" => Scheme::Socks5,
            "socks5h" => Scheme::Socks5h,
            s => return Err(format!("scheme {s:?} is not one burrow speaks (http, socks5, socks5h)")),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err("no host".into()),
        };
        let port = url.port_or_known_default().or((scheme != Scheme::Http).then_some(1080)).ok_or("no port")?;
        if url.path() != "/" && !url.path().is_empty() || url.query().is_some() {
            return Err("a proxy URL has no path or query".into());
        }
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials =
            (!url.username().is_empty()).then(|| (decode(url.username()), decode(url.password().unwrap_or_default())));
        Ok(ProxyUrl { scheme, host, port, credentials })
    }

    /// The whole URL, credentials included (a secret: for frpc's private config file and the
    /// API client only). With `frpc`, `socks5h` is written `socks5`: frpc's SOCKS5 client sends
    /// names, as `socks5h` does.
    pub fn with_credentials(&self, frpc: bool) -> String {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let creds = match &self.credentials {
            Some((u, p)) => format!("{}:{}@", enc(u), enc(p)),
            None => String::new(),
        };
        let scheme = if frpc && self.scheme == Scheme::Socks5h { "socks5" } else { self.scheme.as_str() };
        format!("{scheme}://{creds}{}", super::host_port(&self.host, self.port))
    }
}

/// Why the proxy did not give a connection to frps.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy refused (HTTP status other than 2xx, or a SOCKS reply other than success).
    #[error("{0}")]
    Refused(String),
    /// The proxy wants credentials, or refused the ones given (HTTP 401/407, SOCKS auth).
    #[error("{0}")]
    Auth(String),
    /// The proxy's answer is not HTTP or SOCKS5.
    #[error("{0}")]
    Garbage(String),
}

/// Dials frps through a proxy for every connection.
#[derive(Debug, Clone)]
pub struct ProxyTransport {
    proxy: ProxyUrl,
    dial: TcpTransport,
    host: String,
    port: u16,
}

impl ProxyTransport {
    /// A transport to frps at `host:port` through `proxy`.
    pub fn new(proxy: ProxyUrl, host: impl Into<String>, port: u16) -> Self {
        Self { dial: TcpTransport::new(proxy.host.clone(), proxy.port), proxy, host: host.into(), port }
    }

    fn failed(&self, source: ProxyError) -> TransportError {
        TransportError::Proxy { proxy: self.proxy.to_string(), source }
    }

    async fn open(&self) -> Result<BoxStream, TransportError> {
        let mut s = self.dial.dial().await.map_err(|e| match e {
            TransportError::Connect { source, .. } => {
                self.failed(ProxyError::Refused(format!("cannot connect: {source}")))
            }
            TransportError::ConnectTimeout { secs, .. } => {
                self.failed(ProxyError::Refused(format!("connecting timed out after {secs} s")))
            }
            e => e,
        })?;
        let handshake = async {
            match self.proxy.scheme {
                Scheme::Http => self.connect_http(&mut s).await.map(|()| Box::new(s) as BoxStream),
                Scheme::Socks5 | Scheme::Socks5h => self.connect_socks(s).await,
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, handshake).await.unwrap_or_else(|_| {
            Err(self.failed(ProxyError::Refused(format!(
                "no answer to the request for {} within {} s",
                self.target(),
                CONNECT_TIMEOUT.as_secs()
            ))))
        })
    }

    fn target(&self) -> String {
        super::host_port(&self.host, self.port)
    }

    async fn connect_http(&self, s: &mut TcpStream) -> Result<(), TransportError> {
        let target = self.target();
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, pass)) = &self.proxy.credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            req += &format!("Proxy-Authorization: Basic {token}\r\n");
        }
        req += "\r\n";
        let io = |e: std::io::Error| self.failed(ProxyError::Refused(format!("connection failed: {e}")));
        s.write_all(req.as_bytes()).await.map_err(io)?;
        // Byte by byte up to the blank line: what follows is frps' (the TLS server's) first bytes.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(self.failed(ProxyError::Garbage(format!(
                    "its answer to CONNECT has no end of head within {MAX_HEAD} bytes"
                ))));
            }
            let b = s.read_u8().await.map_err(|e| {
                let what = if head.is_empty() {
                    "closed the connection without answering CONNECT"
                } else {
                    "closed the connection inside its answer to CONNECT"
                };
                self.failed(ProxyError::Refused(format!("{what} ({e})")))
            })?;
            head.push(b);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                let first = String::from_utf8_lossy(&head[..head.len().min(60)]).escape_debug().to_string();
                return Err(self.failed(ProxyError::Garbage(format!("its answer to CONNECT is not HTTP: {first:?}"))));
            }
        }
        let code = resp.code.unwrap_or(0);
        let line = format!("HTTP/1.{} {code} {}", resp.version.unwrap_or(1), resp.reason.unwrap_or(""));
        match code {
            200..=299 => Ok(()),
            401 | 407 => Err(self.failed(ProxyError::Auth(format!("refused CONNECT {target}: {line}")))),
            _ => Err(self.failed(ProxyError::Refused(format!("refused CONNECT {target}: {line}")))),
        }
    }

    async fn connect_socks(&self, s: TcpStream) -> Result<BoxStream, TransportError> {
        use tokio_socks::tcp::Socks5Stream;
        use tokio_socks::Error as E;
        let target = self.target();
        let addr: tokio_socks::TargetAddr<'_> = match self.proxy.scheme {
            Scheme::Socks5h => tokio_socks::TargetAddr::Domain(self.host.as_str().into(), self.port),
            _ => {
                // socks5: the proxy is given an address, resolved here.
                let resolved = tokio::net::lookup_host((self.host.as_str(), self.port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| TransportError::Connect {
                        addr: target.clone(),
                        source: std::io::Error::other(
                            "the name does not resolve (socks5h:// lets the proxy resolve it)",
                        ),
                    })?;
                tokio_socks::TargetAddr::Ip::<'_>(resolved as SocketAddr)
            }
        };
        let r = match &self.proxy.credentials {
            Some((user, pass)) => Socks5Stream::connect_with_password_and_socket(s, addr, user, pass).await,
            None => Socks5Stream::connect_with_socket(s, addr).await,
        };
        match r {
            Ok(stream) => Ok(Box::new(stream) as BoxStream),
            Err(e @ (E::PasswordAuthFailure(_) | E::NoAcceptableAuthMethods | E::InvalidAuthValues(_))) => {
                Err(self.failed(ProxyError::Auth(format!("SOCKS5 authentication failed: {e}"))))
            }
            Err(
                e @ (E::InvalidResponseVersion
                | E::UnknownAddressType
                | E::InvalidReservedByte
                | E::UnknownAuthMethod
                | E::UnknownError),
            ) => Err(self.failed(ProxyError::Garbage(format!("its SOCKS5 answer is invalid: {e}")))),
            Err(e) => Err(self.failed(ProxyError::Refused(format!("refused SOCKS5 CONNECT {target}: {e}")))),
        }
    }
}

impl Transport for ProxyTransport {
    fn connect(&self) -> BoxFuture<'_, Result<BoxStream, TransportError>> {
        Box::pin(self.open())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_credentials() {
        let p = ProxyUrl::parse("http://alice:s%40cret@proxy.corp:3128").unwrap();
        assert_eq!((p.scheme, p.host.as_str(), p.port), (Scheme::Http, "proxy.corp", 3128));
        assert_eq!(p.credentials, Some(("alice".into(), "s@cret".into())));
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        assert!(!format!("{p:?}").contains("cret"));
        assert_eq!(p.with_credentials(true), "http://alice:s%40cret@proxy.corp:3128");
        assert_eq!(ProxyUrl::parse(&p.with_credentials(false)).unwrap(), p);
        let p = ProxyUrl::parse("socks5h://[::1]:1080").unwrap();
        assert_eq!(
            (p.scheme, p.host.as_str(), p.to_string().as_str()),
            (Scheme::Socks5h, "::1", "socks5h://[::1]:1080")
        );
        assert_eq!(p.with_credentials(true), "socks5://[::1]:1080");
        assert_eq!(ProxyUrl::parse("socks5://10.0.0.1").unwrap().port, 1080);
        assert_eq!(ProxyUrl::parse("http://p").unwrap().port, 80);
        for (bad, says) in [
            ("ftp://p:1", "scheme \"ftp\""),
            ("proxy:3128", "scheme"),
            ("http://p:1/path", "no path"),
            ("not a url", "not a URL"),
        ] {
            let e = ProxyUrl::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
