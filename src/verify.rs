//! The public URL verified end to end: after each `tunnel_up` of an http tunnel that ends at the
//! reverse proxy, burrow fetches `<url>/.well-known/burrow-verify/<nonce>` as any visitor would and
//! checks that the answer is the one only this process's proxy gives. The result is a
//! `url_verified` event, or a `url_unverified` warning naming what failed.

use std::collections::HashSet;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ServerProxy;
use crate::events::{Event, Reporter, WarningCode};
use crate::proxy::{Proxy, VERIFY_PREFIX};

/// How long one verification may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer that is read: this burrow's is 64 bytes.
const MAX_ANSWER: usize = 4096;

/// Verifies the URL of every `tunnel_up` of the tunnels in `names` (those served by `proxy`).
pub fn watch(reporter: Reporter, proxy: Arc<Proxy>, names: HashSet<String>, via: ServerProxy) {
    if names.is_empty() {
        return;
    }
    let mut events = reporter.subscribe();
    let protected = proxy.access().mode() == crate::proxy::access::Mode::Protected;
    let mut warned = false;
    tokio::spawn(async move {
        while let Some(line) = events.recv().await {
            let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let (Some("tunnel_up"), Some(name), Some(url)) =
                (ev["event"].as_str(), ev["name"].as_str(), ev["url"].as_str())
            else {
                continue;
            };
            if !names.contains(name) {
                continue;
            }
            if protected && !warned && share_over_http(url) {
                warned = true;
                reporter.warning(
                    WarningCode::ShareOverHttp,
                    format!("the protected URL {url} is plain http: browsers send its share cookie to every port of that host, other people's tunnels on the same frps included, and anyone on the path can read it; serve it over https"),
                );
            }
            let (reporter, proxy, name, url, via) =
                (reporter.clone(), proxy.clone(), name.to_string(), url.to_string(), via.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                match check(&proxy, &url, &via).await {
                    Ok(()) => {
                        let ms = started.elapsed().as_millis() as u64;
                        reporter.status().set_verified(&name, true, format!("reached this burrow in {ms} ms"));
                        reporter.emit(Event::UrlVerified { name, url, ms })
                    }
                    Err(why) => {
                        reporter.status().set_verified(&name, false, why.clone());
                        reporter.warning(
                            WarningCode::UrlUnverified,
                            format!("the public URL {url} of tunnel {name:?} did not reach this burrow: {why}"),
                        )
                    }
                }
            });
        }
    });
}

/// Whether a protected URL's share cookie could reach other services: http, and not `*.localhost`.
fn share_over_http(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
        u.scheme() == "http" && host != "localhost" && !host.ends_with(".localhost")
    })
}

/// Fetches the verification path under `url`; `Err` says what failed, in words.
async fn check(proxy: &Proxy, url: &str, via: &ServerProxy) -> Result<(), String> {
    let base = reqwest::Url::parse(url).map_err(|e| format!("it is not a URL ({e})"))?;
    let host = base.host_str().unwrap_or_default().to_string();
    let port = base.port_or_known_default().unwrap_or(80);
    let nonce = format!("{:032x}", rand::random::<u128>());
    let target = base.join(&format!("{VERIFY_PREFIX}{nonce}")).map_err(|e| format!("it is not a URL ({e})"))?;
    // RFC 6761: *.localhost is this machine, whatever the resolver says; anything else is fetched
    // as a visitor on this machine's network would, through the proxy frps is reached by.
    let local = host == "localhost" || host.ends_with(".localhost");
    let mut client = crate::provision::http_client(if local { None } else { via.for_host(&host) }, TIMEOUT)?
        .redirect(reqwest::redirect::Policy::none());
    if local {
        client = client.resolve(&host, SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let client = client.build().map_err(|e| format!("cannot make an HTTP client ({e})"))?;
    let mut resp = client.get(target).send().await.map_err(|e| describe(&e, &host, port))?;
    let status = resp.status();
    let someone_else = || {
        format!("something other than this burrow answered ({status}); check that the URL's DNS and the frps in front of it lead here")
    };
    // Read as far as this burrow's answer could go: whatever answers may send anything.
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, &host, port))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            return Err(someone_else());
        }
    }
    if status.is_success() && body == proxy.verify_answer(&nonce, &crate::proxy::access::url_site(&base)).as_bytes() {
        Ok(())
    } else {
        Err(someone_else())
    }
}

/// Whether `e` is rustls' error, which reaches here wrapped in io::Errors (whose `source` skips it).
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<rustls::Error>()
        || e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).is_some_and(|inner| is_tls(inner))
}

/// What went wrong with the request, from reqwest's error and its causes.
fn describe(e: &reqwest::Error, host: &str, port: u16) -> String {
    let mut chain = String::new();
    let (mut refused, mut tls) = (false, false);
    let mut cause: Option<&dyn std::error::Error> = e.source();
    while let Some(c) = cause {
        chain.push_str(&format!(": {c}"));
        refused |=
            c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        tls |= is_tls(c);
        cause = c.source();
    }
    let lower = chain.to_ascii_lowercase();
    if e.is_timeout() {
        format!("no answer from {host}:{port} within {} s", TIMEOUT.as_secs())
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        format!("the name {host} does not resolve")
    } else if refused {
        format!("the connection to {host}:{port} was refused")
    } else if tls {
        format!("TLS at the edge failed{chain}")
    } else {
        format!("the request failed{chain}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::routes::Routes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers whatever it is sent first with `answer`.
    async fn answering(answer: &'static [u8]) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.read(&mut [0; 4096]).await;
                let _ = s.write_all(answer).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn each_failure_is_named() {
        let proxy = Proxy::new(Routes::parse("/=http://127.0.0.1:9").unwrap());
        let plain = answering(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        let tls = check(&proxy, &format!("https://x.localhost:{plain}"), &ServerProxy::Direct).await.unwrap_err();
        assert!(tls.starts_with("TLS at the edge failed"), "{tls}");
        let other = check(&proxy, &format!("http://x.localhost:{plain}"), &ServerProxy::Direct).await.unwrap_err();
        assert!(other.starts_with("something other than this burrow answered (400"), "{other}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let refused = check(&proxy, &format!("http://x.localhost:{closed}"), &ServerProxy::Direct).await.unwrap_err();
        assert_eq!(refused, format!("the connection to x.localhost:{closed} was refused"));
    }

    #[tokio::test]
    async fn a_huge_answer_is_not_read_past_four_kib() {
        // 50 MB announced and sent: reading it whole took burrow's RSS from 7 to 105 MB.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.read(&mut [0; 4096]).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 50000000\r\n\r\n").await;
            let chunk = vec![b'a'; 64 * 1024];
            while s.write_all(&chunk).await.is_ok() {
                if counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed) > 50_000_000 {
                    break;
                }
            }
        });
        let proxy = Proxy::new(Routes::parse("/=http://127.0.0.1:9").unwrap());
        let why = check(&proxy, &format!("http://x.localhost:{port}"), &ServerProxy::Direct).await.unwrap_err();
        assert!(why.starts_with("something other than this burrow answered (200"), "{why}");
        // Far from all of it was taken (socket buffers hold a few MB at most).
        assert!(sent.load(std::sync::atomic::Ordering::Relaxed) < 20_000_000);
    }

    #[test]
    fn the_answer_is_bound_to_the_host() {
        let proxy = Proxy::new(Routes::parse("/=http://127.0.0.1:9").unwrap());
        let a = proxy.verify_answer("nonce", "a.example:8080");
        assert_eq!(a.len(), 64);
        assert_ne!(a, proxy.verify_answer("nonce", "b.example:8080"));
        assert_ne!(a, proxy.verify_answer("nonce", "a.example:9090"));
        assert_eq!(a, proxy.verify_answer("nonce", "A.Example:8080"));
        assert_ne!(
            a,
            Proxy::new(Routes::parse("/=http://127.0.0.1:9").unwrap()).verify_answer("nonce", "a.example:8080")
        );
    }
}
