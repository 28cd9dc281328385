//! Hooks for the cargo-fuzz targets: the request pipeline on arbitrary requests.

use std::sync::OnceLock;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::access::{Access, Mode};
use super::fast::{plan_request, plan_response, Framing, Plan, Request, MAX_HEADERS};
use super::policy::decide::{Decision, View};
use super::policy::{kind, Kind};
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

/// The fuzz target's own, plainer reading of a hidden path: decoded twice, split at every slash
/// or backslash, each segment without its `;parameters`, whitespace and trailing dots, lower case:
/// a first segment `admin` whose next one is not `open` (a public route of its own).
fn could_be_admin(path: &str) -> bool {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let p = decode(&decode(path)).to_ascii_lowercase();
    let mut segs = p
        .split(['/', '\\'])
        .map(|s| {
            s.split(';').next().unwrap_or_default().trim().trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        })
        .filter(|s| !s.is_empty());
    segs.next() == Some("admin") && segs.next() != Some("open")
}

/// Both head parsers on arbitrary bytes, for the `fast_path` fuzz target: what they let through
/// is one well-formed head (and the body it announces), with no hop-by-hop header left in it.
#[doc(hidden)]
pub fn fuzz_heads(data: &[u8]) {
    use std::sync::OnceLock;
    static CONNS: OnceLock<[Conn; 2]> = OnceLock::new();
    let conns = CONNS.get_or_init(|| {
        let routes = super::Routes::parse(super::routes::DEFAULT_ROUTES).expect("the default routes parse");
        let proxy = super::Proxy::new(routes);
        [super::Origin::Local(([127, 0, 0, 1], 1).into()), super::Origin::Tunnel]
            .map(|origin| Conn::new(proxy.clone(), origin, Default::default()))
    });
    let hop = |name: &str| matches!(kind(name), Kind::Connection | Kind::Hop | Kind::Decline);
    let mut out = Vec::new();
    for conn in conns {
        out.clear();
        if let Plan::Ready(r) = plan_request(conn, data, &mut out) {
            assert!(r.body <= r.len && r.len <= data.len());
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(n)) = req.parse(&out) else { panic!("unparseable upstream request") };
            assert_eq!(out.len() - n, r.body, "the body is the one announced");
            assert!(req.headers.iter().all(|h| !hop(h.name) && !matches!(kind(h.name), Kind::TransferEncoding)));
        }
    }
    for req in [
        Request { route: 0, len: 0, body: 0, close: false, head: false, json: false, idempotent: true },
        Request { route: 0, len: 0, body: 0, close: true, head: true, json: false, idempotent: true },
    ] {
        out.clear();
        let Ok(Some(h)) = plan_response(data, &req, &mut out) else { continue };
        assert!(h.len <= data.len());
        if out.is_empty() {
            assert!((100..200).contains(&h.status));
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = resp.parse(&out) else { panic!("unparseable client response") };
        assert_eq!((n, resp.code), (out.len(), Some(h.status)));
        let chunked = matches!(h.framing, Framing::Chunked(_));
        let kept = |x: &httparse::Header| {
            x.name.eq_ignore_ascii_case("connection") || (chunked && x.name.eq_ignore_ascii_case("trailer"))
        };
        assert!(resp.headers.iter().all(|x| !hop(x.name) || kept(x)));
        assert!(resp.headers.iter().all(|x| chunked || !matches!(kind(x.name), Kind::TransferEncoding)));
    }
}

/// The fast path and hyper's server on the same request bytes, for the `differential` fuzz
/// target: every request the fast path forwards, hyper reads too, ending at the same byte (same
/// method, target and body), and where the fast path finds no complete request, hyper finds none.
/// Past a request the fast path declines, the connection is hyper's anyway.
#[doc(hidden)]
pub fn fuzz_differential(data: &[u8]) {
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex, OnceLock};
    type Seen = (String, String, Vec<u8>);
    static CONN: OnceLock<Conn> = OnceLock::new();
    let conn = CONN.get_or_init(|| {
        // A hidden route: its refusals are the pipeline's in both engines.
        let spec = format!("{},/admin=http://127.0.0.1:5002;public=no", super::routes::DEFAULT_ROUTES);
        let routes = super::Routes::parse(&spec).expect("the routes parse");
        Conn::new(super::Proxy::new(routes), super::Origin::Tunnel, Default::default())
    });

    // The fast path's reading of the bytes, request after request.
    let (mut fast, mut pos, mut declined, mut out) = (Vec::<Seen>::new(), 0, false, Vec::new());
    loop {
        out.clear();
        match plan_request(conn, &data[pos..], &mut out) {
            Plan::Ready(r) => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
                let mut req = httparse::Request::new(&mut headers);
                let Ok(httparse::Status::Complete(n)) = req.parse(&out) else { panic!("unparseable upstream request") };
                let (method, target) =
                    (req.method.unwrap_or_default().to_string(), req.path.unwrap_or_default().to_string());
                fast.push((method, target, out[n..].to_vec()));
                pos += r.len;
                if r.close {
                    break;
                }
            }
            Plan::Handoff => {
                declined = true;
                break;
            }
            // Answered by the proxy, never forwarded: hyper must still read the same request.
            Plan::Answer(a) => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                let Ok(httparse::Status::Complete(n)) = req.parse(&data[pos..]) else {
                    panic!("an answer to no request")
                };
                let (method, target) =
                    (req.method.unwrap_or_default().to_string(), req.path.unwrap_or_default().to_string());
                fast.push((method, target, data[pos + n..pos + a.len].to_vec()));
                pos += a.len;
                if a.close {
                    break;
                }
            }
            Plan::Partial | Plan::Body(..) => break,
        }
    }

    // hyper's, over an in-memory pipe, with the settings of the proxy's server.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let record = seen.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                if let Ok(body) = body.collect().await {
                    let target = parts.uri.path_and_query().map_or(String::new(), |p| p.to_string());
                    record.lock().unwrap().push((parts.method.to_string(), target, body.to_bytes().to_vec()));
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
            }
        });
        // Half-closes allowed: the bytes end with the pipe's write side, before the answers.
        let serve = hyper::server::conn::http1::Builder::new()
            .max_buf_size(2 * super::MAX_HEAD)
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        let feed = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
        };
        let _ = tokio::join!(serve, feed);
    });
    let hyper = seen.lock().unwrap();
    assert!(
        hyper.len() >= fast.len(),
        "hyper read {} requests where the fast path forwarded {}: {fast:?} {hyper:?}",
        hyper.len(),
        fast.len()
    );
    assert_eq!(&hyper[..fast.len()], &fast[..], "the two engines read different requests");
    if !declined {
        assert_eq!(hyper.len(), fast.len(), "hyper read a request the fast path did not find: {hyper:?}");
    }
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
