//! Both proxy engines side by side: the fast path and hyper, given the same bytes by the same
//! clients and upstreams, must forward, answer and refuse alike.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Origin, Proxy, Routes};

fn local() -> Origin {
    Origin::Local("10.1.2.3:4567".parse().unwrap())
}

// Against real sockets: an upstream on loopback, a client over an in-memory pipe.

/// An upstream that records each request head and answers `answer(path)`; with `one_shot`,
/// it closes each connection after one response (without saying so), as an upstream whose
/// idle timeout has passed.
async fn upstream(one_shot: bool) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (port, rx, _) = counted_upstream(one_shot).await;
    (port, rx)
}

/// The next request head on `s` (what follows it stays in `buf`); `None` at its end.
async fn read_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            return Some(String::from_utf8(buf.drain(..end + 4).collect()).unwrap());
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// [`upstream`], counting the connections it accepts.
async fn counted_upstream(
    one_shot: bool,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>, Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < len {
                        let mut chunk = [0u8; 4096];
                        let n = s.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body: Vec<u8> = buf.drain(..len).collect();
                    let path = head.split(' ').nth(1).unwrap().to_string();
                    let _ = tx.send(head);
                    let answer = if path == "/chunked" {
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                            .to_string()
                    } else {
                        let body = format!("{path} {}", String::from_utf8_lossy(&body));
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: 1\r\n\r\n{body}", body.len())
                    };
                    if s.write_all(answer.as_bytes()).await.is_err() || one_shot {
                        return;
                    }
                }
            });
        }
    });
    (port, rx, accepted)
}

fn routes_to(port: u16) -> Routes {
    Routes::parse(&format!("/api=http://127.0.0.1:{port};host=upstream,/=http://127.0.0.1:{port}")).unwrap()
}

/// A client connection to `proxy`, served as the listener would serve it.
fn client(proxy: Arc<Proxy>, origin: Origin) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(proxy.serve_connection(theirs, origin, CancellationToken::new()));
    ours
}

/// Reads `n` responses (with a length or chunked) off `c`, as text, heads normalised: status
/// line, then header lines lowercased and sorted, without `date` (hyper adds one).
async fn responses(c: &mut DuplexStream, n: usize) -> Vec<String> {
    answers(c, &vec![false; n]).await
}

/// [`responses`] to requests of which those marked true were HEAD requests.
async fn answers(c: &mut DuplexStream, head: &[bool]) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < head.len() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let parsed = resp.parse(&buf).unwrap();
        let body_len = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
        let chunked = resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
        if let httparse::Status::Complete(len) = parsed {
            let body_end = match (body_len, chunked) {
                _ if head[out.len()] => Some(len),
                (Some(b), _) => Some(len + b).filter(|e| *e <= buf.len()),
                (None, true) => memchr::memmem::find(&buf[len..], b"0\r\n\r\n").map(|i| len + i + 5),
                (None, false) => Some(len),
            };
            if let Some(end) = body_end {
                let mut lines: Vec<String> = resp
                    .headers
                    .iter()
                    .filter(|h| !h.name.eq_ignore_ascii_case("date"))
                    .map(|h| format!("{}: {}", h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value)))
                    .collect();
                lines.sort();
                let body = String::from_utf8_lossy(&buf[len..end]).to_string();
                out.push(format!("{} | {} | {body}", resp.code.unwrap(), lines.join(" | ")));
                buf.drain(..end);
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk)).await.expect("a response").unwrap();
        assert!(n > 0, "connection closed after {} responses: {out:?}", out.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    out
}

/// The upstream's view of a request, normalised as [`responses`] does.
fn normalised(head: &str) -> String {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap().to_string();
    let mut rest: Vec<String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            format!("{}: {}", k.to_ascii_lowercase(), v.trim())
        })
        .collect();
    rest.sort();
    format!("{first} | {}", rest.join(" | "))
}

#[tokio::test(flavor = "current_thread")]
async fn the_fast_path_forwards_what_the_hyper_path_forwards() {
    let (port, mut seen) = upstream(false).await;
    let requests = [
        "GET /x?y=1 HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive\r\nX-Forwarded-For: 203.0.113.7\r\nUser-Agent: t\r\n\r\n",
        "HEAD /x HTTP/1.1\r\nHost: app.example\r\nAccept: text/html\r\n\r\n",
        "POST /api/v1 HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nTE: trailers\r\n\r\nhello",
        "GET /chunked HTTP/1.1\r\nhost: app.example\r\nX-Forwarded-Proto: https\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    ];
    for origin in [local(), Origin::Tunnel] {
        let mut views = Vec::new();
        for proxy in [Proxy::new(routes_to(port)), Proxy::hyper_only(routes_to(port), Duration::from_secs(5))] {
            let fast = proxy.fast_path;
            let mut c = client(proxy, origin);
            c.write_all(requests.concat().as_bytes()).await.unwrap();
            let answers = answers(&mut c, &[false, true, false, false]).await;
            let heads: Vec<String> = (0..requests.len()).map(|_| normalised(&seen.try_recv().unwrap())).collect();
            views.push((fast, heads, answers));
        }
        let (fast, hyper) = (&views[0], &views[1]);
        assert!(fast.0 && !hyper.0);
        for i in 0..requests.len() {
            assert_eq!(fast.1[i], hyper.1[i], "what the upstream saw of request {i} ({origin:?})");
            // hyper re-frames: its HEAD answer keeps the length, and it counts chunks anew.
            assert_eq!(fast.2[i], hyper.2[i], "what the client saw of response {i} ({origin:?})");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn both_engines_apply_one_access_policy_to_tunnel_requests() {
    use super::access::{Access, Mode};
    use base64::Engine;
    let (port, mut seen) = upstream(false).await;
    let routes =
        || Routes::parse(&format!("/admin=http://127.0.0.1:{port};public=no,/=http://127.0.0.1:{port}")).unwrap();
    let key = b"a key for both engines";
    let access = || Access::new(Mode::Protected, Some("ann:pw"), Some(key), 0);
    let now = std::time::SystemTime::now();
    let share = access().mint(now, Duration::from_secs(600), false, false, "h").0;
    let read_only = access().mint(now, Duration::from_secs(600), true, false, "h").0;
    let elsewhere = access().mint(now, Duration::from_secs(600), false, false, "other").0;
    let basic = base64::engine::general_purpose::STANDARD.encode("ann:pw");
    let requests = [
        format!("GET /a HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\nCookie: a=1; burrow_share={share}\r\n\r\n"),
        format!("POST /b HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer app-token\r\nCookie: burrow_share={share}\r\nContent-Length: 2\r\n\r\nhi"),
        "GET /c HTTP/1.1\r\nHost: h\r\nCookie: burrow_share=forged\r\n\r\n".to_string(),
        format!("GET /d?x=1&burrow_share={share} HTTP/1.1\r\nHost: h\r\n\r\n"),
        format!("GET /admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        format!("GET /e HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        // Hidden under other spellings, with the right credentials.
        format!("GET /ADMIN/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        format!("GET /%41dmin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        format!("GET /admin;x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        format!("GET /admin%20/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        // Without credentials every path is the same 401, hidden or not.
        "GET /admin/x HTTP/1.1\r\nHost: h\r\n\r\n".to_string(),
        // A method named in a header never reaches the app; nor does a write in a read-only GET.
        format!("GET /f HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\nX-HTTP-Method-Override: DELETE\r\nX-Method-Override: PUT\r\nX-HTTP-Method: PATCH\r\nX_HTTP_Method_Override: DELETE\r\nX-Original-URL: /admin\r\nX-Rewrite-Url: /admin\r\n\r\n"),
        format!("GET /g HTTP/1.1\r\nHost: h\r\nCookie: burrow_share={read_only}\r\nContent-Length: 2\r\n\r\nhi"),
        // An upgrade other than a WebSocket goes on as a plain request.
        format!("GET /h HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
        // A link minted for another host opens nothing here.
        format!("GET /i?burrow_share={elsewhere} HTTP/1.1\r\nHost: h\r\n\r\n"),
        // Absolute-form targets (hyper's on both): the same decisions as origin form.
        format!("GET http://h/j?burrow_share={share} HTTP/1.1\r\nHost: h\r\n\r\n"),
        format!("GET http://h/admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
        format!("GET http://h/x/..;/admin HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {basic}\r\n\r\n"),
    ];
    let mut views = Vec::new();
    for fast in [true, false] {
        let proxy = Proxy::build(routes(), Duration::from_secs(5), fast, access());
        let mut c = client(proxy, Origin::Tunnel);
        c.write_all(requests.concat().as_bytes()).await.unwrap();
        let answers = answers(&mut c, &[false; 18]).await;
        let heads: Vec<String> = std::iter::from_fn(|| seen.try_recv().ok()).map(|h| normalised(&h)).collect();
        views.push((heads, answers));
    }
    assert_eq!(views[0], views[1], "the fast path and hyper disagree");
    let (heads, answers) = &views[0];
    let codes: Vec<&str> = answers.iter().map(|a| &a[..3]).collect();
    assert_eq!(
        codes,
        [
            "200", "200", "401", "303", "404", "200", "404", "404", "404", "404", "401", "200", "403", "200", "401",
            "303", "404", "404"
        ],
        "{answers:#?}"
    );
    assert_eq!(heads.len(), 5, "{heads:#?}");
    assert!(
        heads[3].starts_with("GET /f ") && !heads[3].contains("override") && !heads[3].contains("method:"),
        "{}",
        heads[3]
    );
    assert!(!heads[3].contains("original") && !heads[3].contains("rewrite"), "{}", heads[3]);
    assert!(answers[15].contains("location: /j"), "{}", answers[15]);
    assert!(
        heads[4].starts_with("GET /h ") && !heads[4].contains("h2c") && !heads[4].contains("http2"),
        "{}",
        heads[4]
    );
    assert!(heads[0].starts_with("GET /a ") && heads[0].contains("| cookie: a=1 |"), "{}", heads[0]);
    assert!(heads[1].contains("authorization: Bearer app-token") && !heads[1].contains("cookie"), "{}", heads[1]);
    assert!(heads.iter().all(|h| !h.contains(&share) && !h.contains(&basic)), "{heads:#?}");
    assert!(answers[2].contains("www-authenticate: Basic realm=\"burrow\""), "{}", answers[2]);
    assert!(answers[3].contains("location: /d?x=1") && answers[3].contains("HttpOnly; SameSite=Lax"), "{}", answers[3]);
    assert!(answers[4].contains("no route serves /admin/x"), "{}", answers[4]);

    // The local user reaches every route, credentials untouched; another machine does not.
    let on_loopback = Origin::Local("127.0.0.1:4567".parse().unwrap());
    let mut c = client(Proxy::build(routes(), Duration::from_secs(5), true, access()), on_loopback);
    c.write_all(requests[4].as_bytes()).await.unwrap();
    assert!(responses(&mut c, 1).await[0].starts_with("200"));
    assert!(seen.try_recv().unwrap().contains(&basic));
    let mut c = client(Proxy::build(routes(), Duration::from_secs(5), true, access()), local());
    c.write_all(requests[4].as_bytes()).await.unwrap();
    assert!(responses(&mut c, 1).await[0].starts_with("404"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_moves_to_hyper_at_the_first_request_it_needs() {
    let (port, mut seen, accepted) = counted_upstream(false).await;
    let mut c = client(Proxy::new(routes_to(port)), local());
    let reqs = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
                GET /two HTTP/1.1\r\nHost: a\r\nConnection: X-Hop\r\nX-Hop: secret\r\n\r\n\
                GET /three HTTP/1.1\r\nHost: a\r\n\r\n";
    c.write_all(reqs.as_bytes()).await.unwrap();
    let answers = responses(&mut c, 3).await;
    for (answer, path) in answers.iter().zip(["/one", "/two", "/three"]) {
        assert!(answer.starts_with("200 |") && answer.ends_with(&format!("| {path} ")), "{answer}");
    }
    let two = seen.try_recv().and_then(|_| seen.try_recv()).unwrap();
    assert!(!two.to_ascii_lowercase().contains("x-hop"), "{two}");
    // hyper took over the fast path's kept-alive upstream connection.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_sent_after_its_head_is_waited_for() {
    let (port, mut seen) = upstream(false).await;
    let mut c = client(Proxy::new(routes_to(port)), local());
    c.write_all(b"PUT /doc HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b" world").await.unwrap();
    let answer = &responses(&mut c, 1).await[0];
    assert!(answer.ends_with("| /doc hello world"), "{answer}");
    assert!(seen.try_recv().unwrap().contains("Content-Length: 11"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_closed_idle_upstream_connection_is_not_reused() {
    let (port, _seen) = upstream(true).await;
    let mut c = client(Proxy::new(routes_to(port)), local());
    for (i, method) in ["GET", "POST", "GET"].iter().enumerate() {
        c.write_all(format!("{method} /{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let answer = &responses(&mut c, 1).await[0];
        assert!(answer.starts_with("200 |"), "request {i}: {answer}");
        // Time for the upstream's close to reach the reactor, as it would between requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_upstream_is_a_502_and_the_connection_goes_on() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let (port, _seen) = upstream(false).await;
    let routes =
        Routes::parse(&format!("/api=http://127.0.0.1:{dead};name=vibe app,/=http://127.0.0.1:{port}")).unwrap();
    let mut c = client(Proxy::new(routes), local());
    c.write_all(
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    let answers = responses(&mut c, 2).await;
    assert!(
        answers[0].starts_with("502 |")
            && answers[0].contains(&format!("vibe app at 127.0.0.1:{dead} is not answering")),
        "{}",
        answers[0]
    );
    assert!(answers[0].contains("content-type: application/json"), "{}", answers[0]);
    assert!(answers[1].starts_with("200 |"), "{}", answers[1]);
}

/// An upstream whose answers to HEAD, and its 204s and 304s, carry a body anyway: a stray
/// response ("evil") right behind the real head. Other requests get `{path}` as the body.
async fn stray_bytes_upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    let (method, path) = head.split_once(' ').unwrap();
                    let path = path.split(' ').next().unwrap().to_string();
                    let evil = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";
                    let answer = match (method, path.as_str()) {
                        ("HEAD", _) => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_string(),
                        (_, "/204") => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
                        (_, "/304") => "HTTP/1.1 304 Not Modified\r\n\r\n".to_string(),
                        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len()),
                    };
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    // The stray body comes a moment after its head, in a segment of its own:
                    // after the proxy has finished the response, before it reads the next one.
                    if method == "HEAD" || path == "/204" || path == "/304" {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if s.write_all(evil.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "current_thread")]
async fn no_answer_reaches_the_next_request_after_a_bodiless_response() {
    let port = stray_bytes_upstream().await;
    let routes = || Routes::parse(&format!("/=http://127.0.0.1:{port}")).unwrap();
    for proxy in [Proxy::new(routes()), Proxy::hyper_only(routes(), Duration::from_secs(5))] {
        for (first, is_head) in [("HEAD /h", true), ("GET /204", false), ("GET /304", false)] {
            let mut c = client(proxy.clone(), Origin::Tunnel);
            c.write_all(format!("{first} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await.unwrap();
            answers(&mut c, &[is_head]).await;
            c.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
            let next = responses(&mut c, 1).await;
            assert!(next[0].ends_with("| /next"), "after {first}: {next:?}");
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_that_stops_coming_is_answered_408_on_both_origins() {
    let (port, mut seen) = upstream(false).await;
    for origin in [local(), Origin::Tunnel] {
        let mut c = client(Proxy::new(routes_to(port)), origin);
        c.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
        assert!(answer.contains("within 30 s"), "{answer}");
        assert_eq!(started.elapsed().as_secs(), super::policy::BODY_TIMEOUT.as_secs());
        assert!(seen.try_recv().is_err(), "the upstream never saw the request");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_tunnel_stream_may_idle_but_not_stall_in_a_head() {
    let (port, _seen) = upstream(false).await;
    let mut c = client(Proxy::new(routes_to(port)), Origin::Tunnel);
    // Idle for longer than any timeout (frps keeps pooled work connections like this), then
    // half a head and nothing: closed once the head timeout has passed since that half.
    tokio::time::sleep(super::policy::HEAD_TIMEOUT * 4).await;
    c.write_all(b"GET /half HTTP/1.1\r\nHo").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(started.elapsed().as_secs(), super::policy::HEAD_TIMEOUT.as_secs());
}

/// An upstream on `l` that reads each connection's first request head, then leaves the
/// connection to `then`.
fn after_head<F, Fut>(l: TcpListener, then: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let then = then.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut s, &mut Vec::new()).await;
                then(s).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "current_thread")]
async fn an_upstream_that_stops_reading_an_upload_gets_a_504() {
    // It reads the request head, then nothing more, and never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = after_head(l, |s| async move {
        let _held = s;
        std::future::pending::<()>().await
    });
    // A chunked upload goes to hyper; its response deadline is 300 ms.
    let proxy = Proxy::hyper_only(routes_to(port), Duration::from_millis(300));
    let (mut rd, mut wr) = tokio::io::split(client(proxy, local()));
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        let _ = wr.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").await;
        let chunk = [b"10000\r\n".as_slice(), &[b'u'; 0x10000], b"\r\n"].concat();
        while wr.write_all(&chunk).await.is_ok() {}
    });
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut head)).await.expect("an answer").unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(head.contains("stopped reading the request body"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "current_thread")]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    // It reads the request head, answers 413 at once and closes, the body unread (which makes
    // its kernel reset the connection). Its small receive buffer leaves even the fast path's
    // 60 KiB mid-write when that happens.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = after_head(socket.listen(16).unwrap(), |mut s| async move {
        let body = "too large";
        let answer = format!(
            "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(answer.as_bytes()).await;
    });
    // 60 KiB is read whole by the fast path; 4 MiB streams through hyper.
    for (method, len) in [("POST", 60 * 1024), ("PUT", 60 * 1024), ("POST", 4 << 20)] {
        for origin in [local(), Origin::Tunnel] {
            let (mut rd, mut wr) = tokio::io::split(client(Proxy::new(routes_to(port)), origin));
            tokio::spawn(async move {
                let head = format!("{method} /up HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
                let _ = wr.write_all(head.as_bytes()).await;
                let _ = wr.write_all(&vec![b'u'; len]).await;
                std::future::pending::<()>().await;
            });
            // The answer, up to its body's end (the client connection may stay open).
            let mut answer = Vec::new();
            while !answer.ends_with(b"too large") {
                let mut chunk = [0u8; 4096];
                match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 413 "), "{method} of {len} bytes: {answer}");
            assert!(answer.ends_with("too large"), "{method} of {len} bytes: {answer}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_that_hangs_up_cancels_its_upstream_exchange() {
    // It reads the request head and never answers; it reports when the proxy lets go.
    let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let port = after_head(TcpListener::bind("127.0.0.1:0").await.unwrap(), move |mut s| {
        let tx = tx.clone();
        async move {
            let _ = s.read(&mut [0u8; 64]).await;
            let _ = tx.send(());
        }
    });
    let routes = || routes_to(port);
    // A plain GET (fast path) and one hyper takes (a chunked upload's head ends it).
    let requests = [
        "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /wait HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for request in requests {
        for origin in [local(), Origin::Tunnel] {
            // An upstream deadline far beyond the test's.
            let proxy = Proxy::with_timeout(routes(), Duration::from_secs(300));
            let mut c = client(proxy, origin);
            c.write_all(request.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(c);
            tokio::time::timeout(Duration::from_secs(2), ended.recv())
                .await
                .unwrap_or_else(|_| panic!("upstream still held 2 s after the client left: {request:?}"));
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_tunnel_stream_hyper_serves_may_not_stall_in_a_head() {
    let (port, _seen) = upstream(false).await;
    let mut c = client(Proxy::hyper_only(routes_to(port), Duration::from_secs(5)), Origin::Tunnel);
    c.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    responses(&mut c, 1).await;
    // Idle as long as frps keeps a pooled work connection: still served.
    tokio::time::sleep(Duration::from_secs(59)).await;
    c.write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    responses(&mut c, 1).await;
    // Half a head and nothing more: closed once the tunnel head timeout has passed.
    c.write_all(b"GET /half HTTP/1.1\r\nHo").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(600), c.read_to_end(&mut rest)).await;
    let waited = started.elapsed().as_secs();
    assert!(waited <= super::policy::TUNNEL_HEAD_TIMEOUT.as_secs(), "closed after {waited} s");
    assert!(waited >= 60, "closed after {waited} s");
}

#[test]
fn the_differential_fuzz_target_passes_its_seeds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/differential");
    for seed in std::fs::read_dir(dir).unwrap() {
        super::fuzz::fuzz_differential(&std::fs::read(seed.unwrap().path()).unwrap());
    }
}

/// An upstream that misbehaves by path; it records each request head it reads as
/// "METHOD /path".
async fn misbehaving_upstream() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut n = 0;
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    n += 1;
                    let mut words = head.split(' ');
                    let (method, path) = (words.next().unwrap(), words.next().unwrap().to_string());
                    record.lock().unwrap().push(format!("{method} {path}"));
                    let answer = match path.as_str() {
                        "/extra" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_string(),
                        "/hints" => "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_string(),
                        "/truncated" => "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_string(),
                        "/badchunks" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_string(),
                        // Closed just as a request arrives on a kept-alive connection.
                        "/closes" if n > 1 => return,
                        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len()),
                    };
                    if s.write_all(answer.as_bytes()).await.is_err() || path == "/truncated" || path == "/badchunks" {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "current_thread")]
async fn misbehaving_upstreams_on_both_engines_and_both_origins() {
    let (port, seen) = misbehaving_upstream().await;
    let routes = || Routes::parse(&format!("/=http://127.0.0.1:{port}")).unwrap();
    for (engine, proxy) in
        [("fast", Proxy::new(routes())), ("hyper", Proxy::hyper_only(routes(), Duration::from_secs(5)))]
    {
        for origin in [local(), Origin::Tunnel] {
            let case = format!("{engine} path, {origin:?}");
            let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
            // Bytes beyond Content-Length are not the next answer.
            let mut c = client(proxy.clone(), origin);
            c.write_all(get("/extra").as_bytes()).await.unwrap();
            assert!(responses(&mut c, 1).await[0].ends_with("| ok"), "{case}");
            c.write_all(get("/next").as_bytes()).await.unwrap();
            assert!(responses(&mut c, 1).await[0].ends_with("| /next"), "{case}");
            // 103 Early Hints is dropped; the final answer arrives.
            c.write_all(get("/hints").as_bytes()).await.unwrap();
            let r = responses(&mut c, 1).await;
            assert!(r[0].starts_with("200 ") && r[0].ends_with("| final"), "{case}: {r:?}");
            // A body cut short, or chunks that do not parse: the client's connection ends
            // there, without a complete message.
            for (path, never) in [("/truncated", "abcabc"), ("/badchunks", "0\r\n\r\n")] {
                let mut c = client(proxy.clone(), origin);
                c.write_all(get(path).as_bytes()).await.unwrap();
                let mut got = Vec::new();
                tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
                    .await
                    .unwrap_or_else(|_| panic!("{case}: {path} left the client waiting"))
                    .unwrap();
                let got = String::from_utf8_lossy(&got);
                assert!(!got.contains(never), "{case}: {path}: {got}");
            }
            // A kept-alive connection closed as a request is sent: a GET goes again on a new
            // connection; a POST is answered 502 and never sent twice.
            seen.lock().unwrap().clear();
            let mut c = client(proxy.clone(), origin);
            c.write_all(get("/first").as_bytes()).await.unwrap();
            responses(&mut c, 1).await;
            c.write_all(get("/closes").as_bytes()).await.unwrap();
            let r = responses(&mut c, 1).await;
            assert!(r[0].starts_with("200 ") && r[0].ends_with("| /closes"), "{case}: {r:?}");
            let mut c = client(proxy.clone(), origin);
            c.write_all(get("/first").as_bytes()).await.unwrap();
            responses(&mut c, 1).await;
            c.write_all(b"POST /closes HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx").await.unwrap();
            let r = responses(&mut c, 1).await;
            assert!(r[0].starts_with("502 "), "{case}: {r:?}");
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.iter().filter(|s| *s == "GET /closes").count(), 2, "{case}: the GET, sent again: {seen:?}");
            assert_eq!(seen.iter().filter(|s| *s == "POST /closes").count(), 1, "{case}: {seen:?}");
        }
    }
}
