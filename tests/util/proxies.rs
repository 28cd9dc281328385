//! Real proxies between burrow and frps, from Debian's packages: tinyproxy (HTTP CONNECT), danted
//! (SOCKS5) and nginx (terminating wss in front of frps), each on a loopback port of its own,
//! stopped when dropped.

use super::*;

/// The user name and password the proxies accept when they ask for credentials.
pub const PROXY_USER: &str = "burrow-socks";
pub const PROXY_PASS: &str = "proxy-pass-3c9f";

/// A real proxy on loopback; its log shows what it carried.
pub struct RealProxy {
    pub port: u16,
    pub dir: tempdir::TempDir,
    child: Option<Child>,
    log: &'static str,
}

impl RealProxy {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log)).unwrap_or_default()
    }

    /// Stops the proxy and every process it forked (danted runs several): its process group.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
            }
            let _ = c.wait().await;
        }
    }
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        }
    }
}

fn need(program: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin"].iter().map(|d| Path::new(d).join(program)).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("{program} is missing; install it (apt-get install {package}) or run resources/test.sh, which does")
    })
}

async fn start(program: PathBuf, args: &[&str], dir: tempdir::TempDir, port: u16, log: &'static str) -> RealProxy {
    let child = Command::new(&program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let p = RealProxy { port, dir, child: Some(child), log };
    wait_port(port).await;
    p
}

/// tinyproxy answering CONNECT, asking for [`PROXY_USER`]/[`PROXY_PASS`] when `auth`.
pub async fn tinyproxy(auth: bool) -> RealProxy {
    tinyproxy_on(free_port(), auth).await
}

pub async fn tinyproxy_on(port: u16, auth: bool) -> RealProxy {
    let program = need("tinyproxy", "tinyproxy");
    let dir = tempdir::TempDir::new();
    let basic = if auth { format!("BasicAuth {PROXY_USER} {PROXY_PASS}\n") } else { String::new() };
    // No ConnectPort line: CONNECT to any port (frps' bind port is not 443).
    let cfg = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nMaxClients 200\nLogLevel Connect\nLogFile \"{}\"\n{basic}",
        dir.path().join("tinyproxy.log").display()
    );
    let conf = write_file(dir.path(), "tinyproxy.conf", &cfg);
    start(program, &["-d", "-c", conf.to_str().unwrap()], dir, port, "tinyproxy.log").await
}

/// A system user danted checks [`PROXY_USER`]'s password against (its `username` method reads
/// the system's password database); made once, which needs root.
fn socks_user() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let exists = std::process::Command::new("id").arg(PROXY_USER).output().is_ok_and(|o| o.status.success());
        if !exists {
            let ok = std::process::Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", PROXY_USER])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "danted's user/password test needs a system user {PROXY_USER}; create it as root (useradd) or run the tests as root");
        }
        let mut p = std::process::Command::new("chpasswd").stdin(Stdio::piped()).spawn().expect("chpasswd");
        use std::io::Write;
        p.stdin.take().unwrap().write_all(format!("{PROXY_USER}:{PROXY_PASS}\n").as_bytes()).unwrap();
        assert!(p.wait().unwrap().success(), "chpasswd failed for {PROXY_USER}; run the tests as root");
    });
}

/// danted answering SOCKS5, asking for [`PROXY_USER`]/[`PROXY_PASS`] when `auth`.
pub async fn danted(auth: bool) -> RealProxy {
    let program = need("danted", "dante-server");
    if auth {
        socks_user();
    }
    let dir = tempdir::TempDir::new();
    let port = free_port();
    let method = if auth { "username" } else { "none" };
    let cfg = format!(
        "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\nsocksmethod: {method}\nclientmethod: none\n\
         user.privileged: root\nuser.unprivileged: nobody\n\
         client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect }}\nsocks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect }}\n",
        dir.path().join("danted.log").display()
    );
    let conf = write_file(dir.path(), "danted.conf", &cfg);
    let pid = dir.path().join("danted.pid");
    start(program, &["-f", conf.to_str().unwrap(), "-N", "1", "-p", pid.to_str().unwrap()], dir, port, "danted.log")
        .await
}

/// nginx terminating TLS with `pki`'s certificate on `port` and forwarding frp's websocket
/// (`/~!frp`, with the upgrade) to frps' bind port: what an operator puts on 443.
pub async fn nginx_wss_on(port: u16, pki: &Pki, frps_port: u16) -> RealProxy {
    let program = need("nginx", "nginx");
    let dir = tempdir::TempDir::new();
    let d = dir.path().display();
    let cfg = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log {d}/access.log;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name {CERT_NAME};\n\
             ssl_certificate {};\n    ssl_certificate_key {};\n\
             location = /~!frp {{\n      proxy_pass http://127.0.0.1:{frps_port};\n      proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
               proxy_buffering off;\n      proxy_read_timeout 600s;\n      proxy_send_timeout 600s;\n    }}\n  }}\n}}\n",
        pki.cert.display(),
        pki.key.display()
    );
    let conf = write_file(dir.path(), "nginx.conf", &cfg);
    let (prefix, conf) = (dir.path().to_str().unwrap().to_string(), conf.to_str().unwrap().to_string());
    let err = format!("{prefix}/error.log");
    start(program, &["-p", &prefix, "-e", &err, "-c", &conf], dir, port, "access.log").await
}

pub async fn nginx_wss(pki: &Pki, frps_port: u16) -> RealProxy {
    nginx_wss_on(free_port(), pki, frps_port).await
}
