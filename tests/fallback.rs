//! The bundled-frpc fallback with the bundled frpc (0.70.1, built from source) and real frps.

use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(20);

/// Children of a process, over all its threads.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

async fn frpc_child(burrow: u32) -> u32 {
    for _ in 0..100 {
        if let Some(p) = children(burrow).into_iter().find(|p| cmdline(*p).first().is_some_and(|c| c.ends_with("frpc")))
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no frpc child of burrow {burrow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_flag_serves_through_frpc_and_cleans_up() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = app_upstream("app").await;
    let frpc = bundled_frpc();
    let mut env: Vec<(String, String)> = vec![
        ("BURROW_SERVER_ADDR".into(), frps.addr()),
        ("BURROW_SERVER_TOKEN".into(), TOKEN.into()),
        ("BURROW_SUBDOMAIN".into(), "viafrpc".into()),
        ("BURROW_FRPC_PATH".into(), frpc.display().to_string()),
    ];
    env.extend(route_all_to(app));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut b = Burrow::spawn_with_args(&pairs, &["--fallback"]);
    let started = b.wait("starting", T).await;
    assert_eq!(started["mode"], "frpc");
    let c = b.wait("connected", T).await;
    assert_eq!((c["mode"].as_str(), c["transport"].as_str()), (Some("frpc"), Some("tls+yamux")));
    let up = b.wait("tunnel_up", T).await;
    assert_eq!(up["mode"], "frpc");
    assert_eq!(up["url"], format!("http://viafrpc.{SUBDOMAIN_HOST}:{}", frps.vhost_port));
    let body = vhost_get_ok(frps.vhost_port, &format!("viafrpc.{SUBDOMAIN_HOST}"), "/api/x", T).await;
    assert!(body.contains("\"name\":\"app\""), "{body}");

    // frpc's configuration: private, and gone after exit.
    let pid = frpc_child(b.child.id().unwrap()).await;
    let args = cmdline(pid);
    let cfg = std::path::PathBuf::from(&args[args.iter().position(|a| a == "-c").unwrap() + 1]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o600);
    // Contract §4: out within 5 s of the end of stdin, frpc mode included.
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    assert!(!cfg.exists(), "frpc config {cfg:?} removed at exit");
    assert!(!alive(pid), "frpc stopped with burrow");
    b.assert_no_secret(&[TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_burrow_leaves_no_frpc() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let frpc = bundled_frpc();
    // A temp dir of this test's own: other tests' burrows would sweep the killed one's config too.
    let tmp = tempdir::TempDir::new();
    let (addr, frpc_path, tmpdir) = (frps.addr(), frpc.display().to_string(), tmp.path().display().to_string());
    let spawn = |subdomain: &str| {
        Burrow::spawn(&[
            ("BURROW_SERVER_ADDR", &addr),
            ("BURROW_SERVER_TOKEN", TOKEN),
            ("BURROW_SUBDOMAIN", subdomain),
            ("BURROW_MODE", "frpc"),
            ("BURROW_FRPC_PATH", &frpc_path),
            ("TMPDIR", &tmpdir),
        ])
    };
    let b = spawn("orphan");
    b.wait("tunnel_up", T).await;
    let burrow = b.child.id().unwrap();
    let pid = frpc_child(burrow).await;
    assert!(alive(pid));
    let args = cmdline(pid);
    let cfg = std::path::PathBuf::from(&args[args.iter().position(|a| a == "-c").unwrap() + 1]);
    let dir = cfg.parent().unwrap().to_path_buf();
    assert!(dir.starts_with(tmp.path()), "{dir:?}");
    // frpc must not inherit the open, locked directory: the lock would outlive burrow in it.
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .collect();
    assert!(!fds.iter().any(|p| p.starts_with(&dir)), "frpc holds {fds:?}");
    std::process::Command::new("kill").args(["-9", &burrow.to_string()]).status().unwrap();
    let mut orphaned = true;
    for _ in 0..50 {
        if !alive(pid) {
            orphaned = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!orphaned, "frpc {pid} outlived burrow killed with SIGKILL");

    // The killed burrow could not remove its config, which holds the token: the next one does.
    assert!(cfg.exists());
    let next = spawn("heir");
    next.wait("tunnel_up", T).await;
    assert!(!dir.exists(), "{dir:?} left by the killed burrow is swept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_frpc_is_fatal_and_lists_every_place_tried() {
    // A copy of burrow alone in a directory: no frpc beside it, whatever the source tree holds.
    let dir = tempdir::TempDir::new();
    let exe = dir.path().join("burrow");
    std::fs::copy(env!("CARGO_BIN_EXE_burrow"), &exe).unwrap();
    let env = [("BURROW_SERVER_ADDR", "127.0.0.1:9"), ("BURROW_SUBDOMAIN", "x"), ("BURROW_MODE", "frpc")];
    let mut b = Burrow::spawn_exe(&exe, &env, &[]);
    assert_eq!(b.wait_exit(T).await, 1);
    let err = b.events().into_iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(err["code"], "frpc_missing");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("resources/bin/linux-amd64/frpc") && msg.contains("/usr/bin/frpc"), "{msg}");
    assert!(err["hint"].as_str().unwrap().contains("BURROW_FRPC_PATH"));
}

/// An frpc file in `dir` for frps on `port`, with `common` settings and one http tunnel `web` at
/// `sub` with the `proxy` settings (its local address among them).
fn http_file(dir: &tempdir::TempDir, port: u16, common: &str, proxy: &str, sub: &str) -> std::path::PathBuf {
    let text = format!(
        "serverAddr = \"127.0.0.1\"\nserverPort = {port}\nauth.token = \"{TOKEN}\"\n{common}\
         [[proxies]]\nname = \"web\"\ntype = \"http\"\nsubdomain = \"{sub}\"\n{proxy}"
    );
    write_file(dir.path(), &format!("{sub}.toml"), &text)
}

/// kcp and quic, which only frpc speaks, still run the file under frpc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_falls_back_for_kcp_and_quic() {
    for protocol in ["kcp", "quic"] {
        // kcp and quic listen on UDP at the bind port's number.
        let bind = free_port();
        let extra = format!("{protocol}BindPort = {bind}\n");
        let frps = Frps::start_on(bind, FrpsOpts { extra, ..Default::default() }).await;
        let app = http_upstream().await;
        let dir = tempdir::TempDir::new();
        let common = format!("transport.protocol = \"{protocol}\"\n");
        let cfg = http_file(&dir, bind, &common, &format!("localPort = {}\n", app.addr.port()), protocol);
        let frpc = bundled_frpc();
        let mut b =
            Burrow::spawn(&[("BURROW_CONFIG", cfg.to_str().unwrap()), ("BURROW_FRPC_PATH", frpc.to_str().unwrap())]);
        let fb = b.wait("fallback", T).await;
        assert_eq!((fb["from"].as_str(), fb["to"].as_str()), (Some("native"), Some("frpc")));
        assert!(fb["reason"].as_str().unwrap().contains(protocol), "{fb}");
        let up = b.wait("tunnel_up", T).await;
        assert_eq!((up["name"].as_str(), up["mode"].as_str()), (Some("web"), Some("frpc")));
        let path = format!("/over-{protocol}");
        assert_eq!(
            vhost_get_ok(frps.vhost_port, &format!("{protocol}.{SUBDOMAIN_HOST}"), &path, T).await,
            format!("hello {path}")
        );
        let c = b.events().into_iter().find(|e| e["event"] == "connected").unwrap();
        assert_eq!(c["transport"], protocol);
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(10)).await, 0);
    }
}

/// `transport.wireProtocol = "v2"` was a reason to fall back; now `auto` serves it natively.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_serves_a_wire_v2_file_natively() {
    let frps = Frps::start(FrpsOpts { version: Some("0.70.1"), ..Default::default() }).await;
    let app = http_upstream().await;
    let dir = tempdir::TempDir::new();
    let local = format!("localPort = {}\n", app.addr.port());
    let cfg = http_file(&dir, frps.bind_port, "transport.wireProtocol = \"v2\"\n", &local, "wire2");
    let frpc = bundled_frpc();
    let b = Burrow::spawn(&[("BURROW_CONFIG", cfg.to_str().unwrap()), ("BURROW_FRPC_PATH", frpc.to_str().unwrap())]);
    let c = b.wait("connected", T).await;
    assert_eq!((c["mode"].as_str(), c["wire"].as_str()), (Some("native"), Some("v2")), "{c}");
    assert_eq!(vhost_get_ok(frps.vhost_port, &format!("wire2.{SUBDOMAIN_HOST}"), "/v2", T).await, "hello /v2");
    assert_eq!(b.count("fallback"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_falls_back_after_two_protocol_errors() {
    // Something that accepts TCP and closes at once, as a server of another protocol would.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let frpc = bundled_frpc();
    let b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &format!("127.0.0.1:{port}")),
        ("BURROW_SUBDOMAIN", "x"),
        ("BURROW_TLS", "off"),
        ("BURROW_FRPC_PATH", frpc.to_str().unwrap()),
    ]);
    let fb = b.wait("fallback", T).await;
    assert!(fb["reason"].as_str().unwrap().contains("closed"), "{fb}");
    let errors: Vec<_> =
        b.events().into_iter().filter(|e| e["event"] == "error" && e["code"] == "protocol_error").collect();
    assert_eq!(errors.len(), 1, "reported once, then the fallback: {:#?}", b.events());
    assert_eq!(b.count("reconnecting"), 1, "two attempts, then frpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_frpc_is_restarted() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let frpc = bundled_frpc();
    let app = http_upstream().await;
    let routes = format!("/=http://{}", app.addr);
    let b = Burrow::spawn(&[
        ("BURROW_ROUTES", &routes),
        ("BURROW_SERVER_ADDR", &frps.addr()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "phoenix"),
        ("BURROW_MODE", "frpc"),
        ("BURROW_FRPC_PATH", frpc.to_str().unwrap()),
    ]);
    b.wait("tunnel_up", T).await;
    let burrow = b.child.id().unwrap();
    let first = frpc_child(burrow).await;
    std::process::Command::new("kill").args(["-9", &first.to_string()]).status().unwrap();
    let err = b.wait("error", T).await;
    assert_eq!((err["code"].as_str(), err["fatal"].as_bool()), (Some("frpc_failed"), Some(false)));
    b.wait("tunnel_down", T).await;
    b.wait_nth("tunnel_up", 1, T).await;
    let second = frpc_child(burrow).await;
    assert_ne!(first, second);
    vhost_get_ok(frps.vhost_port, &format!("phoenix.{SUBDOMAIN_HOST}"), "/", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frpc_mode_reports_losing_and_regaining_the_server() {
    let mut frps = Frps::start(FrpsOpts::default()).await;
    let frpc = bundled_frpc();
    let b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &frps.addr()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "lost"),
        ("BURROW_MODE", "frpc"),
        ("BURROW_FRPC_PATH", frpc.to_str().unwrap()),
    ]);
    b.wait("tunnel_up", T).await;
    frps.kill().await;
    b.wait("tunnel_down", T).await;
    b.wait("reconnecting", T).await;
    frps.restart().await;
    b.wait_nth("connected", 1, T).await;
    let up = b.wait_nth("tunnel_up", 1, T).await;
    assert_eq!(up["mode"], "frpc");
    // The contract's order: tunnel_down, reconnecting, connected, tunnel_up.
    let names: Vec<String> = b.events().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect();
    let pos = |n: &str, k: usize| names.iter().enumerate().filter(|(_, x)| *x == n).nth(k).unwrap().0;
    assert!(
        pos("tunnel_down", 0) < pos("reconnecting", 0)
            && pos("reconnecting", 0) < pos("connected", 1)
            && pos("connected", 1) < pos("tunnel_up", 1),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frpc_behind_a_wrapper_script_is_stopped_with_it() {
    // A wrapper that starts frpc as its child and waits: a signal to the wrapper alone ends the
    // wrapper and leaves frpc running (sh does not pass SIGTERM on).
    let frps = Frps::start(FrpsOpts::default()).await;
    let dir = tempdir::TempDir::new();
    let pids = dir.path().join("pids");
    let wrapper = write_file(
        dir.path(),
        "frpc",
        &format!("#!/bin/sh\n\"{}\" \"$@\" &\necho $! >> \"{}\"\nwait\n", bundled_frpc().display(), pids.display()),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut b = Burrow::spawn(&[
        ("BURROW_SERVER_ADDR", &frps.addr()),
        ("BURROW_SERVER_TOKEN", TOKEN),
        ("BURROW_SUBDOMAIN", "wrapped"),
        ("BURROW_MODE", "frpc"),
        ("BURROW_FRPC_PATH", wrapper.to_str().unwrap()),
    ]);
    b.wait("tunnel_up", T).await;
    let started: Vec<u32> =
        std::fs::read_to_string(&pids).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    let running: Vec<u32> = started.iter().copied().filter(|p| alive(*p)).collect();
    assert_eq!(running.len(), 1, "one frpc serving, under the wrapper: {started:?}");
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
    for _ in 0..20 {
        if !alive(running[0]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("frpc {} outlived burrow's shutdown", running[0]);
}

/// The frpc burrow bundles is the manifest's 0.70.1, found where a build of burrow looks for it
/// (no BURROW_FRPC_PATH), and it serves a wire v2 fallback: frps' own client list says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_frpc_is_0_70_1_and_serves_wire_v2() {
    bundled_frpc();
    let dashboard = free_port();
    let extra = format!("webServer.addr = \"127.0.0.1\"\nwebServer.port = {dashboard}\n");
    let frps = Frps::start(FrpsOpts { version: Some("0.70.1"), extra, ..Default::default() }).await;
    let app = app_upstream("app").await;
    let mut env: Vec<(String, String)> = vec![
        ("BURROW_SERVER_ADDR".into(), frps.addr()),
        ("BURROW_SERVER_TOKEN".into(), TOKEN.into()),
        ("BURROW_SUBDOMAIN".into(), "bundled".into()),
        ("BURROW_WIRE_PROTOCOL".into(), "v2".into()),
        ("BURROW_MODE".into(), "frpc".into()),
    ];
    env.extend(route_all_to(app));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut b = Burrow::spawn(&pairs);
    let c = b.wait("connected", T).await;
    assert_eq!((c["mode"].as_str(), c["wire"].as_str()), (Some("frpc"), Some("v2")), "{c}");
    b.wait("tunnel_up", T).await;
    let body = vhost_get_ok(frps.vhost_port, &format!("bundled.{SUBDOMAIN_HOST}"), "/x", T).await;
    assert!(body.contains("\"uri\":\"/x\""), "{body}");
    let (status, clients) = vhost_get(dashboard, "127.0.0.1", "/api/clients").await;
    assert_eq!(status, 200, "{clients}");
    assert!(clients.contains("\"version\":\"0.70.1\"") && clients.contains("\"wireProtocol\":\"v2\""), "{clients}");
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(5)).await, 0);
}

/// frp's own `frpc_full_example.toml` of the bundled version uses nearly every key frpc has:
/// `native` mode refuses it naming the keys only frpc serves and pointing at `auto`; `auto` runs
/// it under frpc, the `fallback` event naming the keys. A misspelt key is refused in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frpc_full_example_runs_under_frpc_and_is_refused_by_native() {
    let example = frp_source("0.70.1").join("conf/frpc_full_example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempdir::TempDir::new();
    let full = write_file(dir.path(), "full.toml", &text);
    let frpc = bundled_frpc();
    let (full, frpc) = (full.to_str().unwrap(), frpc.to_str().unwrap());
    // Keys of the example's families that only frpc serves.
    let named = ["clientID", "transport.connectServerLocalIP", "proxies[0].healthCheck.{intervalSeconds,maxFailed"];

    let mut b = Burrow::spawn(&[("BURROW_CONFIG", full), ("BURROW_MODE", "native"), ("BURROW_PROXY_ADDR", "off")]);
    assert_eq!(b.wait_exit(T).await, 2);
    let err = b.events().into_iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(err["code"], "config_invalid", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("BURROW_MODE=auto"), "{msg}");
    assert!(named.iter().all(|k| msg.contains(k)), "names the keys: {msg}");

    let mut b = Burrow::spawn(&[("BURROW_CONFIG", full), ("BURROW_FRPC_PATH", frpc), ("BURROW_PROXY_ADDR", "off")]);
    let fb = b.wait("fallback", T).await;
    let reason = fb["reason"].as_str().unwrap();
    assert!(named.iter().all(|k| reason.contains(k)) && reason.contains("more"), "{reason}");
    assert_eq!(b.close_stdin_and_wait(Duration::from_secs(10)).await, 0);

    // One letter off: frpc would refuse it too, so burrow does, in either mode.
    let typo = write_file(dir.path(), "typo.toml", &text.replace("loginFailExit", "loginFailExits"));
    for mode in ["auto", "native"] {
        let mut b = Burrow::spawn(&[("BURROW_CONFIG", typo.to_str().unwrap()), ("BURROW_MODE", mode)]);
        assert_eq!(b.wait_exit(T).await, 2);
        let err = b.events().into_iter().find(|e| e["event"] == "error").unwrap();
        assert!(err["message"].as_str().unwrap().contains("loginFailExits"), "{err}");
        assert_eq!(b.count("fallback"), 0);
    }
}

/// One file per family of keys only frpc serves: `auto` runs each under frpc against a real
/// frps, the `fallback` event names the key, and the http tunnel serves a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_family_of_frpc_only_keys_runs_under_frpc() {
    let frps = Frps::start(FrpsOpts::default()).await;
    let app = http_upstream().await;
    let frpc = bundled_frpc();
    let dir = tempdir::TempDir::new();
    for (i, (common, proxy, named)) in [
        ("transport.dialServerTimeout = 5\n", "", "transport.dialServerTimeout"),
        ("clientID = \"laptop-1\"\n", "", "clientID"),
        ("", "healthCheck.type = \"http\"\nhealthCheck.path = \"/\"\n", "proxies[0].healthCheck.{path,type}"),
        ("", "loadBalancer.group = \"g\"\nloadBalancer.groupKey = \"k\"\n", "proxies[0].loadBalancer.{group,groupKey}"),
        ("", "transport.bandwidthLimit = \"10MB\"\n", "proxies[0].transport.bandwidthLimit"),
        ("", "metadatas.team = \"a\"\nannotations.note = \"b\"\n", "proxies[0].{annotations,metadatas}"),
        ("", "[proxies.plugin]\ntype = \"http2http\"\nlocalAddr = \"APP\"\n", "proxies[0].plugin"),
    ]
    .into_iter()
    .enumerate()
    {
        let sub = format!("family{i}");
        let proxy = proxy.replace("APP", &app.addr.to_string());
        let local = if proxy.contains("plugin") { String::new() } else { format!("localPort = {}\n", app.addr.port()) };
        let cfg = http_file(&dir, frps.bind_port, common, &format!("{local}{proxy}"), &sub);
        let mut b = Burrow::spawn(&[
            ("BURROW_CONFIG", cfg.to_str().unwrap()),
            ("BURROW_FRPC_PATH", frpc.to_str().unwrap()),
            ("BURROW_PROXY_ADDR", "off"),
        ]);
        let fb = b.wait("fallback", T).await;
        assert!(fb["reason"].as_str().unwrap().contains(named), "{named}: {fb}");
        b.wait("tunnel_up", T).await;
        let body = vhost_get_ok(frps.vhost_port, &format!("{sub}.{SUBDOMAIN_HOST}"), "/fam", T).await;
        assert_eq!(body, "hello /fam", "{named}");
        assert_eq!(b.close_stdin_and_wait(Duration::from_secs(10)).await, 0);
    }
}
