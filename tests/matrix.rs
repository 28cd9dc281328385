//! The frps version matrix: burrow's native client (wire v1) against every supported frp minor,
//! real — 0.65.0 the official binary, the others built from source by `resources/build-frp.sh`.
//! Versions run at once on distinct ports, the cells of one version one after another; the test
//! prints a version × feature table (also written to `target/frp-matrix.md`) and fails on any
//! cell that fails.

use std::time::Duration;

use crate::util::*;

const T: Duration = Duration::from_secs(30);
const CELLS: [&str; 7] = ["tls+yamux", "tcp+yamux", "tls", "tcp", "enc+comp", "restart", "bad token"];
/// Bytes each way through the tcp tunnel in every transport cell.
const BULK: u64 = 16 << 20;

/// One http tunnel (served by the in-process proxy) and one tcp tunnel through frps `version`.
struct Setup {
    frps: Frps,
    burrow: Burrow,
    remote: u16,
    host: String,
    _dir: tempdir::TempDir,
}

async fn setup(version: &'static str, tls: bool, mux: bool, enc: bool, token: &str) -> Setup {
    let frps = Frps::start(FrpsOpts { tcp_mux: mux, version: Some(version), ..Default::default() }).await;
    let (app, tcp, remote, proxy_port) = (http_upstream().await, tcp_upstream().await, free_port(), free_port());
    let sub = format!("m{}", version.replace('.', "-"));
    let both = if enc { "transport.useEncryption = true\ntransport.useCompression = true\n" } else { "" };
    let dir = tempdir::TempDir::new();
    let cfg = write_file(
        dir.path(),
        "frpc.toml",
        &format!(
            "serverAddr = \"127.0.0.1\"\nserverPort = {}\nauth.token = \"{token}\"\n\
             transport.tcpMux = {mux}\ntransport.tls.enable = {tls}\n\
             [[proxies]]\nname = \"web\"\ntype = \"http\"\nlocalPort = {proxy_port}\nsubdomain = \"{sub}\"\n{both}\
             [[proxies]]\nname = \"bulk\"\ntype = \"tcp\"\nlocalPort = {}\nremotePort = {remote}\n{both}",
            frps.bind_port,
            tcp.port()
        ),
    );
    let burrow = Burrow::spawn(&[
        ("BURROW_CONFIG", cfg.to_str().unwrap()),
        ("BURROW_PROXY_ADDR", &format!("127.0.0.1:{proxy_port}")),
        ("BURROW_ROUTES", &format!("/=http://{}", app.addr)),
    ]);
    Setup { frps, burrow, remote, host: format!("{sub}.{SUBDOMAIN_HOST}"), _dir: dir }
}

/// The http tunnel answers, and `BULK` bytes cross the tcp tunnel each way intact.
async fn traffic(s: &Setup) {
    let body = vhost_get_ok(s.frps.vhost_port, &s.host, "/matrix", T).await;
    assert_eq!(body, "hello /matrix");
    assert_eq!(tcp_download(s.remote, BULK).await.unwrap(), (BULK, pattern_sha256(BULK, BULK)), "download");
    assert!(tcp_upload(s.remote, 7, BULK).await.unwrap(), "upload's SHA-256 differs");
}

async fn cell(version: &'static str, cell: &'static str) {
    match cell {
        "bad token" => {
            let mut s = setup(version, true, true, false, "not-the-token").await;
            assert_eq!(s.burrow.wait_exit(T).await, 3, "exit code");
            let err = s.burrow.events().into_iter().find(|e| e["event"] == "error").expect("an error event");
            assert_eq!(err["code"], "auth_failed", "{err}");
        }
        "restart" => {
            let mut s = setup(version, true, true, false, TOKEN).await;
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
            let s = setup(version, tls, mux, enc, TOKEN).await;
            s.burrow.wait_nth("tunnel_up", 1, T).await;
            let c = s.burrow.wait("connected", T).await;
            assert_eq!(c["transport"], name, "{c}");
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
    let runs: Vec<_> = FRP_VERSIONS
        .iter()
        .map(|v| {
            tokio::spawn(async move {
                let mut row = Vec::new();
                for c in CELLS {
                    // A cell's panic fails its cell, not the whole row.
                    let r = tokio::spawn(cell(v, c)).await;
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
    let mut table = format!("| frps | {} |\n|---|{}\n", CELLS.join(" | "), "---|".repeat(CELLS.len()));
    let mut failures = Vec::new();
    for (v, run) in FRP_VERSIONS.iter().zip(runs) {
        let row = run.await.unwrap();
        let cells: Vec<&str> = row.iter().map(|r| if r.is_ok() { "pass" } else { "FAIL" }).collect();
        table += &format!("| {v} | {} |\n", cells.join(" | "));
        for (c, r) in CELLS.iter().zip(&row) {
            if let Err(why) = r {
                failures.push(format!("frps {v}, {c}: {why}"));
            }
        }
    }
    println!("\nburrow (native, wire v1) against real frps:\n{table}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/frp-matrix.md");
    let _ = std::fs::write(out, &table);
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}
