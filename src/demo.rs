//! `burrow demo`: the whole path on loopback, in one command.
//!
//! It starts the pinned real frps (fetching it with `resources/fetch-frp.sh` when it is not cached),
//! a small sample web app, burrow's reverse proxy in front of it and burrow's native client; prints
//! the public URL; fetches it through frps (frps → tunnel → proxy in-process → app); and keeps
//! everything serving until Ctrl-C, when every process it started stops with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::config::{default_tunnel, Config, Secret, ServerConfig};
use crate::events::Reporter;
use crate::proxy::{Proxy, Routes};
use crate::supervise::Supervisor;

const SUBDOMAIN_HOST: &str = "burrow.localhost";

/// Runs the demo; returns the exit code.
pub async fn run(frp_dir: Option<PathBuf>) -> i32 {
    match demo(frp_dir).await {
        Ok(()) => 0,
        Err(e) => {
            crate::say!("burrow demo: {e}");
            1
        }
    }
}

fn say(s: &str) {
    println!("{s}");
}

async fn demo(frp_dir: Option<PathBuf>) -> Result<(), String> {
    let frps = find_frps(frp_dir)?;
    let dir = std::env::temp_dir().join(format!("burrow-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = run_in(&frps, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(frps: &Path, dir: &Path) -> Result<(), String> {
    let bind_port = free_port().await?;
    let vhost_port = free_port().await?;
    let token: String = format!("demo-{:016x}", rand::random::<u64>());
    let cfg = dir.join("frps.toml");
    std::fs::write(
        &cfg,
        format!("bindAddr = \"127.0.0.1\"\nbindPort = {bind_port}\nvhostHTTPPort = {vhost_port}\nsubDomainHost = \"{SUBDOMAIN_HOST}\"\nauth.token = \"{token}\"\nlog.to = \"{}\"\n", dir.join("frps.log").display()),
    )
    .map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;

    say(&format!("1/4  starting frps 0.65.0 on 127.0.0.1:{bind_port} (http vhost port {vhost_port})"));
    let mut frps_child = tokio::process::Command::new(frps)
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", frps.display()))?;
    wait_port(bind_port).await?;

    let app = sample_app().await?;
    // The product path: the tunnel feeds burrow's reverse proxy in-process, which routes to the app.
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("no free loopback port: {e}"))?;
    let proxy_addr = proxy_listener.local_addr().map_err(|e| e.to_string())?;
    let routes = Routes::parse(&format!("/=http://{app};name=sample app")).map_err(|e| e.to_string())?;
    let proxy = Proxy::new(routes.clone());
    tokio::spawn(proxy.clone().serve(proxy_listener));
    say(&format!("2/4  sample web app on http://{app}, behind burrow's reverse proxy on http://{proxy_addr}"));

    let config = Config {
        server: ServerConfig::new("127.0.0.1", bind_port, Secret::new(token)),
        tunnels: vec![default_tunnel(Some("demo".into()), proxy_addr)],
        proxy_addr: Some(proxy_addr),
        routes,
        upstream_timeout: crate::proxy::RESPONSE_TIMEOUT,
        max_streams: crate::config::DEFAULT_MAX_STREAMS,
        log_filter: "info".into(),
        mode: crate::config::Mode::Native,
        api: None,
        frpc_path: None,
        frpc_file: None,
        native_gap: None,
        reservation_id: None,
        admin_addr: None,
        access: Default::default(),
        admin_token: None,
    };
    let reporter = Reporter::silent();
    reporter.status().set_tunnels([("web".to_string(), "http")]);
    reporter.status().set_proxy(Some(proxy.clone()));
    let mut rx = reporter.subscribe();
    crate::verify::watch(reporter.clone(), proxy.clone(), ["web".to_string()].into(), config.server.proxy.clone());
    let client = Client::new(&config, reporter.clone(), Some(proxy)).map_err(|e| e.to_string())?;
    let mut supervisor = Supervisor::new(Box::new(client), None, reporter, Default::default());
    let shutdown = CancellationToken::new();
    let token2 = shutdown.clone();
    let mut client_task = tokio::spawn(async move { supervisor.run(&token2).await });
    say("3/4  burrow's native client connecting (TLS + yamux) ...");

    let deadline = tokio::time::sleep(Duration::from_secs(15));
    tokio::pin!(deadline);
    let url = loop {
        let line = tokio::select! {
            line = rx.recv() => line.ok_or("the client stopped")?,
            r = &mut client_task => return Err(match r {
                Ok(Err(fatal)) => format!("{} ({})", fatal.message, fatal.hint),
                _ => "the client stopped".to_string(),
            }),
            _ = &mut deadline => return Err("the tunnel did not come up within 15 s; see the log above".into()),
        };
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if ev["event"] == "tunnel_up" {
            break ev["url"].as_str().unwrap_or_default().to_string();
        }
    };
    say(&format!("     tunnel up: {url}"));
    // The URL verified end to end by burrow itself, as `run` does for every http tunnel.
    loop {
        let line = tokio::select! {
            line = rx.recv() => line.ok_or("the client stopped")?,
            _ = &mut deadline => return Err("the URL was not verified within 15 s; see the log above".into()),
        };
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match ev["event"].as_str() {
            Some("url_verified") => {
                say(&format!("     url_verified: {url} reached this burrow in {} ms", ev["ms"]));
                break;
            }
            Some("warning") if ev["code"] == "url_unverified" => {
                return Err(ev["message"].as_str().unwrap_or("url_unverified").to_string())
            }
            _ => {}
        }
    }
    let host = url.trim_start_matches("http://").split(':').next().unwrap_or_default().to_string();
    let (status, body) = fetch(vhost_port, &host).await?;
    say(&format!(
        "4/4  fetched {url} through frps: HTTP {status}, \"{}\"",
        body.lines().find(|l| l.contains("<h1>")).unwrap_or(&body).trim()
    ));
    say("");
    say(&format!("Open {url}/ in a browser (*.localhost names resolve to this machine), or:"));
    say(&format!("  curl -H 'Host: {host}' http://127.0.0.1:{vhost_port}/"));
    say("Press Ctrl-C to stop; frps, the sample app and the tunnel stop with burrow.");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated() => {}
        r = frps_child.wait() => say(&format!("frps exited unexpectedly ({r:?})")),
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), client_task).await;
    let _ = frps_child.kill().await;
    say("stopped.");
    Ok(())
}

/// SIGTERM (a supervisor stopping the demo) ends it as cleanly as Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await
}

fn find_frps(dir: Option<PathBuf>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = dir
        .into_iter()
        .chain(std::env::var_os("BURROW_FRP_DIR").map(PathBuf::from))
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/burrow/frp-0.65.0")))
        .collect();
    for d in &candidates {
        if d.join("frps").is_file() {
            return Ok(d.join("frps"));
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/fetch-frp.sh");
    if script.is_file() {
        say("0/4  frps 0.65.0 is not cached yet; fetching it with resources/fetch-frp.sh ...");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            return Ok(d.join("frps"));
        }
        return Err(format!("{} failed; run it by hand to see why", script.display()));
    }
    Err(format!("frps 0.65.0 not found in {candidates:?}; run resources/fetch-frp.sh from burrow's source tree, or pass --frp-dir"))
}

async fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("no free loopback port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

async fn wait_port(port: u16) -> Result<(), String> {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("frps did not open port {port} within 5 s"))
}

async fn sample_app() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let page = format!(
                        "<!doctype html><html><head><title>burrow demo</title></head><body>\n<h1>Hello from your local app, through burrow.</h1>\n<p>You asked for {}.</p>\n</body></html>\n",
                        req.uri().path()
                    );
                    let resp = hyper::Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .body(Full::new(Bytes::from(page)));
                    Ok::<_, hyper::http::Error>(resp.expect("static response"))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn fetch(vhost_port: u16, host: &str) -> Result<(u16, String), String> {
    let s = TcpStream::connect(("127.0.0.1", vhost_port))
        .await
        .map_err(|e| format!("cannot reach frps' vhost port: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/").header("host", host).body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request through frps failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
