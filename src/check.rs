//! `burrow check`: would this configuration work? Resolves the configuration, looks for frpc,
//! reaches the provisioning API and frps (TLS included), and reports; exits 0 only when
//! everything checked would work.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{Config, Mode};
use crate::frpc::locate;
use crate::transport::tls::{self, TlsTransport};
use crate::transport::Transport;

struct Item {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Runs the checks; prints a report (JSON with `json`); returns the exit code.
pub async fn run(config: &Config, json_out: bool) -> i32 {
    let mut items = Vec::new();

    // frpc: required when frpc will run, informative otherwise.
    let frpc_needed = config.mode == Mode::Frpc || (config.mode == Mode::Auto && config.native_gap.is_some());
    match locate::resolve(config.frpc_path.as_deref()) {
        Ok(p) => {
            let v = locate::version(&p).await;
            let ok = v.is_some() || !frpc_needed;
            let detail = match v {
                Some(v) => format!("frpc {v} at {}", p.display()),
                None => format!("{} does not report an frpc version", p.display()),
            };
            items.push(Item { name: "frpc", ok, detail });
        }
        Err(tried) => items.push(Item {
            name: "frpc",
            ok: !frpc_needed,
            detail: format!(
                "not found{}; tried {}",
                if frpc_needed { "" } else { " (only needed for the fallback)" },
                tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }

    // The provisioning API, or frps.
    if let Some(api) = &config.api {
        let r = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string());
        let r = match r {
            Ok(c) => c
                .get(format!("{}/v1/reservations", api.url))
                .send()
                .await
                .map(|resp| resp.status().as_u16())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        items.push(match r {
            Ok(status) => Item { name: "api", ok: true, detail: format!("{} answers (HTTP {status})", api.url) },
            Err(e) => Item { name: "api", ok: false, detail: format!("{} is unreachable: {e}", api.url) },
        });
        items.push(Item { name: "server", ok: true, detail: "given by the reservation (not checked)".into() });
    } else {
        let s = &config.server;
        let dial = crate::transport::dialer(s.proxy(), &s.host, s.port);
        let via = s.proxy().map(|p| format!(" through {p}")).unwrap_or_default();
        let reach = tokio::time::timeout(Duration::from_secs(20), dial.connect()).await;
        match reach {
            Ok(Ok(_)) => items.push(Item {
                name: "server",
                ok: true,
                detail: format!("{} accepts connections{via}", s.display_addr()),
            }),
            Ok(Err(e)) => items.push(Item { name: "server", ok: false, detail: e.to_string() }),
            Err(_) => items.push(Item {
                name: "server",
                ok: false,
                detail: format!("{} did not answer within 20 s{via}", s.display_addr()),
            }),
        }
        if s.tls.enabled && items.last().is_some_and(|i| i.ok) {
            let how = if s.tls.pin.is_some() {
                "verified against BURROW_TLS_PIN"
            } else if s.tls.ca_file.is_some() {
                "verified against the CA file"
            } else {
                "not verified (no CA or pin: encrypted, unauthenticated)"
            };
            let setup = tls::client_config(&tls::Verification { ca_file: s.tls.ca_file.as_deref(), pin: s.tls.pin })
                .and_then(|c| tls::server_name(&s.host, s.tls.server_name.as_deref()).map(|n| (c, n)));
            let item = match setup {
                Err(e) => Item { name: "tls", ok: false, detail: e.to_string() },
                Ok((cfg, name)) => match TlsTransport::new(dial, cfg, name, s.display_addr()).connect().await {
                    Ok(_) => Item { name: "tls", ok: true, detail: format!("handshake succeeded; certificate {how}") },
                    Err(e) => Item { name: "tls", ok: false, detail: e.to_string() },
                },
            };
            items.push(item);
        }
    }

    // The proxy's address.
    if let Some(addr) = config.proxy_addr {
        items.push(match std::net::TcpListener::bind(addr) {
            Ok(_) => Item { name: "proxy", ok: true, detail: format!("{addr} is free") },
            Err(e) => Item { name: "proxy", ok: false, detail: format!("cannot listen on {addr}: {e}") },
        });
    }

    let ok = items.iter().all(|i| i.ok);
    report(ok, summary(config), &items, json_out);
    if ok {
        0
    } else {
        1
    }
}

/// A configuration that does not load, reported as `burrow check` reports anything (the same
/// JSON shape: no `config`, one failed `configuration` check); its exit code.
pub fn invalid(e: &crate::config::ConfigError, json_out: bool) -> i32 {
    let item = Item { name: "configuration", ok: false, detail: e.to_string() };
    report(false, Value::Null, std::slice::from_ref(&item), json_out);
    crate::events::ErrorCode::ConfigInvalid.exit_code()
}

/// Prints the report: one JSON object, or the human one.
fn report(ok: bool, summary: Value, items: &[Item], json_out: bool) {
    if json_out {
        let checks: Vec<Value> =
            items.iter().map(|i| json!({"name": i.name, "ok": i.ok, "detail": i.detail})).collect();
        println!("{}", json!({"ok": ok, "config": summary, "checks": checks}));
        return;
    }
    println!("burrow {} — configuration check", env!("CARGO_PKG_VERSION"));
    println!();
    for (k, v) in summary.as_object().into_iter().flatten() {
        println!("  {k:<10} {}", v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
    }
    if summary.is_object() {
        println!();
    }
    for i in items {
        println!("  [{}] {:<7} {}", if i.ok { " ok " } else { "FAIL" }, i.name, i.detail);
    }
    println!();
    println!(
        "{}",
        if ok {
            "Everything checked would work."
        } else {
            "Something above would fail; fix it and run `burrow check` again."
        }
    );
}

/// The resolved configuration, secrets masked.
fn summary(c: &Config) -> Value {
    let mask = |s: &str| if s.is_empty() { "(empty)".to_string() } else { "***".to_string() };
    let tunnels: Vec<String> =
        c.tunnels.iter().map(|t| format!("{} ({} → {})", t.name, t.kind.type_name(), t.local_addr)).collect();
    let mut v = json!({
        "mode": c.mode.as_str(),
        "proxy": c.proxy_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        "routes": c.routes.all().iter().map(|r| format!("{}={}", r.prefix, r.authority())).collect::<Vec<_>>().join(", "),
        "tunnels": tunnels.join(", "),
    });
    if let Some(api) = &c.api {
        v["api"] = json!(api.url);
        v["api_token"] = json!(mask(api.token.expose()));
        v["user"] = json!(format!("{} / project {}", api.user_id, api.project_id));
    } else {
        v["server"] = json!(c.server.display_addr());
        v["token"] = json!(mask(c.server.token.expose()));
        let t = if c.server.tls.enabled { "tls" } else { "tcp" };
        v["transport"] = json!(if c.server.tcp_mux { format!("{t}+yamux") } else { t.to_string() });
        v["wire"] = json!(c.server.wire.name());
        if let Some(p) = c.server.proxy() {
            v["via"] = json!(p.to_string());
        }
    }
    if let Some(gap) = &c.native_gap {
        v["needs"] = json!(format!("frpc: {gap}"));
    }
    v
}
