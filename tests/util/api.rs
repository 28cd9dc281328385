//! The provisioning API (contract §5), a real HTTP server on loopback.

use super::*;

/// A real HTTP provisioning API on loopback (contract §5) with scripted reservation answers.
/// Every request is logged as `(method, path, authorization, body)`.
pub struct ProvisioningApi {
    /// Base URL, with a path prefix (`http://127.0.0.1:port/tunnels`).
    pub url: String,
    pub log: Arc<Mutex<Vec<(String, String, String, String)>>>,
    pub script: Arc<Mutex<std::collections::VecDeque<(u16, String)>>>,
    pub lease_secs: Arc<Mutex<u64>>,
}

pub fn rfc3339_in(secs: u64) -> String {
    // Milliseconds, as a provisioning API may send: a lease cut to whole seconds would move the
    // renewal the tests time.
    humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(secs)).to_string()
}

/// A contract reservation answer for frps at `bind_port` with subdomain `sub`.
pub fn reservation_json(id: &str, bind_port: u16, token: &str, sub: &str, lease_secs: u64) -> String {
    serde_json::json!({
        "reservationId": id,
        "expiresAt": rfc3339_in(lease_secs),
        "server": {"addr": "127.0.0.1", "port": bind_port, "token": token, "tls": true, "tcpMux": true, "serverName": null, "certSha256": null},
        "tunnels": [{"name": "web", "type": "http", "subdomain": sub, "customDomains": [], "remotePort": null, "publicUrl": format!("https://{sub}.public.example")}],
    })
    .to_string()
}

pub async fn provisioning_api() -> ProvisioningApi {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Mutex<std::collections::VecDeque<(u16, String)>>> = Arc::new(Mutex::new(Default::default()));
    let lease_secs = Arc::new(Mutex::new(60u64));
    let (l2, s2, ls2) = (log.clone(), script.clone(), lease_secs.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let (log, script, lease) = (l2.clone(), s2.clone(), ls2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (log, script, lease) = (log.clone(), script.clone(), lease.clone());
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap_or("").to_string())
                            .unwrap_or_default();
                        let body =
                            String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes()).into_owned();
                        log.lock().unwrap().push((method.clone(), path.clone(), auth, body));
                        let (status, body) = if method == "POST" && path == "/tunnels/v1/reservations" {
                            script
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or((500, r#"{"error":{"code":"empty","message":"no scripted answer"}}"#.into()))
                        } else if method == "POST" && path.ends_with("/renew") {
                            (200, serde_json::json!({"expiresAt": rfc3339_in(*lease.lock().unwrap())}).to_string())
                        } else if method == "DELETE" {
                            (204, String::new())
                        } else {
                            (404, r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#.into())
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    ProvisioningApi { url: format!("http://{addr}/tunnels"), log, script, lease_secs }
}

impl ProvisioningApi {
    pub fn push(&self, status: u16, body: impl Into<String>) {
        self.script.lock().unwrap().push_back((status, body.into()));
    }
    pub fn requests(&self) -> Vec<(String, String, String, String)> {
        self.log.lock().unwrap().clone()
    }
}
