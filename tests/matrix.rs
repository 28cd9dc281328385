//! The frps version matrix: burrow's native client against every supported frp minor, real —
//! 0.65.0 the official binary, the others built from source by `resources/build-frp.sh` — over
//! wire v1 and, for the frps that speak it (0.69+), wire v2. Rows run at once on distinct ports,
//! the cells of one row one after another; the test prints a version × wire × feature table (also
//! written to `target/frp-matrix.md`) and fails on any cell that fails.

use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(30);
const CELLS: [&str; 7] = ["tls+yamux", "tcp+yamux", "tls", "tcp", "enc+comp", "restart", "bad token"];
/// Bytes each way through the tcp tunnel in every transport cell.
const BULK: u64 = 16 << 20;

/// One http tunnel (served by the in-process proxy) and one tcp tunnel through frps `version`.
struct Setup {
    frps: Frps,
    /// frps' dashboard API, where frps 0.69+ lists each client's wire protocol.
    dashboard: Option<u16>,
    burrow: Burrow,
    remote: u16,
    host: String,
    _dir: tempdir::TempDir,
}

/// The rows: every version over v1, and the versions that speak v2 over v2.
fn rows() -> Vec<(&'static str, &'static str)> {
    let v1 = FRP_VERSIONS.iter().map(|v| (*v, "v1"));
    v1.chain(FRP_VERSIONS.iter().filter(|v| speaks_v2(v)).map(|v| (*v, "v2"))).collect()
}

fn speaks_v2(version: &str) -> bool {
    let minor: u32 = version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
    minor >= 69
}

async fn setup(version: &'static str, wire: &str, tls: bool, mux: bool, enc: bool, token: &str) -> Setup {
    let dashboard = speaks_v2(version).then(free_port);
    let extra =
        dashboard.map(|p| format!("webServer.addr = \"127.0.0.1\"\nwebServer.port = {p}\n")).unwrap_or_default();
    let frps = Frps::start(FrpsOpts { tcp_mux: mux, version: Some(version), extra, ..Default::default() }).await;
    let (app, tcp, remote, proxy_port) = (http_upstream().await, tcp_upstream().await, free_port(), free_port());
    let sub = format!("m{}-{wire}", version.replace('.', "-"));
    let both = if enc { "transport.useEncryption = true\ntransport.useCompression = true\n" } else { "" };
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{token}\"\n\
             transport.tcpMux = {mux}\ntransport.tls.enable = {tls}\ntransport.wireProtocol = \"{wire}\"\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {proxy_port}\nsubdomain = \"{sub}\"\n{both}\
             [[proxies]]\nname = \"bulk\"\ntype = \"tcp\"\nlocalPort = {}\nremotePort = {remote}\n{both}",
            frps.bind_port,
            tcp.port()
        ),
    );
    // Native only: in auto mode a failing native cell could pass through the frpc fallback.
    let burrow = Burrow::spawn(&[
        ("BURROW_MODE", "native"),
        ("BURROW_CONFIG", cfg.to_str().unwrap()),
        ("BURROW_PROXY_ADDR", &format!("127.0.0.1:{proxy_port}")),
        ("BURROW_ROUTES", &format!("/=http://{}", app.addr)),
    ]);
    Setup { frps, dashboard, burrow, remote, host: format!("{sub}.{SUBDOMAIN_HOST}"), _dir: dir }
}

/// The http tunnel answers, and `BULK` bytes cross the tcp tunnel each way intact.
async fn traffic(s: &Setup) {
    let body = vhost_get_ok(s.frps.vhost_port, &s.host, "/matrix", T).await;
    assert_eq!(body, "hello /matrix");
    assert_eq!(tcp_download(s.remote, BULK).await.unwrap(), (BULK, pattern_sha256(BULK, BULK)), "download");
    assert!(tcp_upload(s.remote, 7, BULK).await.unwrap(), "upload's SHA-256 differs");
}

async fn cell(version: &'static str, wire: &'static str, cell: &'static str) {
    match cell {
        "bad token" => {
            let mut s = setup(version, wire, true, true, false, "not-the-token").await;
            assert_eq!(s.burrow.wait_exit(T).await, 3, "exit code");
            let err = s.burrow.events().into_iter().find(|e| e["event"] == "error").expect("an error event");
            assert_eq!(err["code"], "auth_failed", "{err}");
        }
        "restart" => {
            let mut s = setup(version, wire, true, true, false, TOKEN).await;
            s.burrow.wait_nth("tunnel_up", 1, T).await;
            s.frps.restart().await;
            s.burrow.wait("tunnel_down", T).await;
            s.burrow.wait_nth("tunnel_up", 3, T).await;
            assert_eq!(vhost_get_ok(s.frps.vhost_port, &s.host, "/back", T).await, "hello /back");
        }
        transport => {
            let enc = transport == "enc+comp";
            let name = if enc { "tls+yamux" } else { transport };
            let (tls, mux) = (name.starts_with("tls"), name.ends_with("+yamux"));
            let s = setup(version, wire, tls, mux, enc, TOKEN).await;
            s.burrow.wait_nth("tunnel_up", 1, T).await;
            let c = s.burrow.wait("connected", T).await;
            assert_eq!(c["transport"], name, "{c}");
            assert_eq!(c["wire"], wire, "{c}");
            if let Some(port) = s.dashboard {
                // frps' own word on the wire version the client logged in with.
                let (status, body) = vhost_get(port, "127.0.0.1", "/api/clients").await;
                assert_eq!(status, 200, "{body}");
                assert!(body.contains(&format!("\"wireProtocol\":\"{wire}\"")), "{body}");
            }
            traffic(&s).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frps_version_serves_every_feature() {
    // Built before the clock of any cell starts (a fresh machine builds for minutes).
    for v in FRP_VERSIONS {
        frp_version_dir(v);
    }
    let rows = rows();
    let runs: Vec<_> = rows
        .iter()
        .map(|&(v, wire)| {
            tokio::spawn(async move {
                let mut row = Vec::new();
                for c in CELLS {
                    // A cell's panic fails its cell, not the whole row.
                    let r = tokio::spawn(cell(v, wire, c)).await;
                    row.push(r.map_err(|e| {
                        let p = e.into_panic();
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    }));
                }
                row
            })
        })
        .collect();
    let mut table = format!("| frps | wire | {} |\n|---|---|{}\n", CELLS.join(" | "), "---|".repeat(CELLS.len()));
    let mut failures = Vec::new();
    for ((v, wire), run) in rows.iter().zip(runs) {
        let row = run.await.unwrap();
        let cells: Vec<&str> = row.iter().map(|r| if r.is_ok() { "pass" } else { "FAIL" }).collect();
        table += &format!("| {v} | {wire} | {} |\n", cells.join(" | "));
        for (c, r) in CELLS.iter().zip(&row) {
            if let Err(why) = r {
                failures.push(format!("frps {v}, wire {wire}, {c}: {why}"));
            }
        }
    }
    println!("\nburrow (native) against real frps:\n{table}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/frp-matrix.md");
    let _ = std::fs::write(out, &table);
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}

/// Wire v2 against frps 0.65, which speaks v1 only: it closes the connection without a
/// ServerHello; burrow says so, names the fix, and keeps retrying.
#[tokio::test]
async fn wire_v2_against_a_v1_only_frps_says_to_use_v1_and_retries() {
    for (tls, mux) in [(true, true), (false, false)] {
        let s = setup("0.65.0", "v2", tls, mux, false, TOKEN).await;
        let err = s.burrow.wait("error", T).await;
        assert_eq!(err["code"], "protocol_error", "{err}");
        assert_eq!(err["fatal"], false, "{err}");
        let hint = err["hint"].as_str().unwrap();
        assert!(hint.contains("BURROW_WIRE_PROTOCOL=v1") && hint.contains("0.69"), "{hint}");
        assert!(err["message"].as_str().unwrap().contains("ServerHello"), "{err}");
        s.burrow.wait_nth("reconnecting", 2, T).await;
        assert!(s.burrow.events().iter().all(|e| e["event"] != "connected"));
    }
}
