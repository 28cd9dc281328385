#!/usr/bin/env python3
"""Captures a real wire v2 session between frpc and frps (the versions resources/build-frp.sh
builds) as golden data for burrow-proto's tests.

    python3 proto/tests/data/v2/capture.py 0.70.1 [aes|xchacha]

Runs frps and frpc (tcpMux and TLS off, so the relay sees frp's own bytes) with token
"golden-v2-token", one http proxy "web" (subdomain "golden") in front of a one-shot HTTP server,
a relay between them that records each connection's bytes, and one public request. Writes
`<version>-<algorithm>/{control,work}.{c2s,s2c}` next to this script. frpc offers
xchacha20-poly1305 first on a CPU without AES instructions; `xchacha` makes it believe so
(GODEBUG=cpu.aes=off, which golang.org/x/sys/cpu honours).
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../../.."))
TOKEN = "golden-v2-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, what):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"capture: {what} did not open port {port} within 10 s")


def relay(listen, target, conns):
    """Accepts connections on `listen`, forwards them to `target`, records both directions."""

    def pump(src, dst, buf):
        while True:
            try:
                b = src.recv(65536)
            except OSError:
                b = b""
            if not b:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            buf.extend(b)
            dst.sendall(b)

    while True:
        c, _ = listen.accept()
        s = socket.create_connection(("127.0.0.1", target))
        rec = {"c2s": bytearray(), "s2c": bytearray()}
        conns.append(rec)
        threading.Thread(target=pump, args=(c, s, rec["c2s"]), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, rec["s2c"]), daemon=True).start()


def main():
    version = sys.argv[1] if len(sys.argv) > 1 else "0.70.1"
    alg = sys.argv[2] if len(sys.argv) > 2 else "aes"
    frp = subprocess.run(["bash", os.path.join(ROOT, "resources/build-frp.sh")], check=True,
                         capture_output=True, text=True).stdout
    dirs = dict(line.split(" ", 1) for line in frp.splitlines() if " " in line)
    if version not in dirs:
        sys.exit(f"capture: frp {version} is not one resources/build-frp.sh builds")
    bin_dir = dirs[version].strip()

    tmp = tempfile.mkdtemp(prefix="burrow-v2-capture-")
    bind, vhost, upstream = free_port(), free_port(), free_port()
    listen = socket.socket()
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind(("127.0.0.1", 0))
    listen.listen()
    relay_port = listen.getsockname()[1]
    conns = []
    threading.Thread(target=relay, args=(listen, bind, conns), daemon=True).start()

    app = socket.socket()
    app.bind(("127.0.0.1", upstream))
    app.listen()

    def serve_once():
        c, _ = app.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ngolden")
        c.close()

    threading.Thread(target=serve_once, daemon=True).start()

    with open(os.path.join(tmp, "frps.toml"), "w") as f:
        f.write(f'bindAddr = "127.0.0.1"\nbindPort = {bind}\nvhostHTTPPort = {vhost}\n'
                f'subDomainHost = "burrow.test"\nauth.token = "{TOKEN}"\ntransport.tcpMux = false\n')
    with open(os.path.join(tmp, "frpc.toml"), "w") as f:
        f.write(f'serverAddr = "127.0.0.1"\nserverPort = {relay_port}\nauth.token = "{TOKEN}"\n'
                f'transport.tcpMux = false\ntransport.tls.enable = false\ntransport.wireProtocol = "v2"\n'
                f'transport.poolCount = 0\nloginFailExit = true\n'
                f'[[proxies]]\nname = "web"\ntype = "http"\nlocalPort = {upstream}\nsubdomain = "golden"\n')
    env = dict(os.environ)
    if alg == "xchacha":
        env["GODEBUG"] = "cpu.aes=off"
    frps = subprocess.Popen([os.path.join(bin_dir, "frps"), "-c", os.path.join(tmp, "frps.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    frpc = None
    try:
        wait_port(bind, "frps")
        wait_port(vhost, "frps (vhost)")
        frpc = subprocess.Popen([os.path.join(bin_dir, "frpc"), "-c", os.path.join(tmp, "frpc.toml")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        body = b""
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{vhost}/", headers={"Host": "golden.burrow.test"})
                body = urllib.request.urlopen(req, timeout=2).read()
                break
            except Exception:
                time.sleep(0.2)
        if body != b"golden":
            sys.exit("capture: the public request did not reach the app through frpc")
        time.sleep(0.5)
    finally:
        if frpc:
            frpc.terminate()
            frpc.wait()
        frps.terminate()
        frps.wait()
    time.sleep(0.2)
    if len(conns) < 2:
        sys.exit(f"capture: expected a control and a work connection, saw {len(conns)}")
    out = os.path.join(HERE, f"{version}-{alg}")
    os.makedirs(out, exist_ok=True)
    for name, rec in zip(["control", "work"], conns):
        for d in ("c2s", "s2c"):
            with open(os.path.join(out, f"{name}.{d}"), "wb") as f:
                f.write(bytes(rec[d]))
    print(f"capture: wrote {out} ({', '.join(str(len(r['c2s'])) + '/' + str(len(r['s2c'])) for r in conns[:2])} bytes)")


if __name__ == "__main__":
    main()
