#!/usr/bin/env python3
"""Captures real frp traffic between burrow and frps 0.65.0 and writes it as fuzz seeds.

    python3 fuzz/seeds/capture.py [path/to/burrow]

Starts frps (from resources/fetch-frp.sh's cache), a recording TCP relay in front of it and
burrow (TLS and tcp_mux off, so every frp byte crosses the relay as frp framing; compression
on, so work streams carry real snappy framing), sends one request through the vhost port, then
decrypts the control streams with the token's key and writes the seeds into fuzz/seeds/<target>/.
"""
import hashlib, os, socket, subprocess, sys, tempfile, threading, time
import warnings
warnings.filterwarnings("ignore")
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fuzz", "seeds")
TOKEN = "seed-capture-token"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(p, t=10):
    end = time.time() + t
    while time.time() < end:
        try: socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError: time.sleep(0.05)
    sys.exit(f"port {p} never opened")

conns = []  # (client->server bytes, server->client bytes) per relayed connection

def relay(listen, target):
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen)); srv.listen(64)
    def pump(a, b, buf):
        try:
            while (d := a.recv(65536)):
                buf += d; b.sendall(d)
        except OSError: pass
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
    def run():
        while True:
            c, _ = srv.accept()
            u = socket.create_connection(("127.0.0.1", target))
            up, down = bytearray(), bytearray(); conns.append((up, down))
            threading.Thread(target=pump, args=(c, u, up), daemon=True).start()
            threading.Thread(target=pump, args=(u, c, down), daemon=True).start()
    threading.Thread(target=run, daemon=True).start()

def frames(b):
    """Splits v1 frames (type byte, int64 big-endian length, body); stops at a partial one."""
    out, i = [], 0
    while i + 9 <= len(b):
        n = int.from_bytes(b[i + 1:i + 9], "big")
        if n < 0 or i + 9 + n > len(b): break
        out.append(bytes(b[i:i + 9 + n])); i += 9 + n
    return out, i

def decrypt(key, b):
    if len(b) < 16: return b""
    d = Cipher(algorithms.AES(key), modes.CFB(bytes(b[:16]))).decryptor()
    return d.update(bytes(b[16:])) + d.finalize()

def write(target, name, data):
    d = os.path.join(OUT, target); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f: f.write(data)

def main():
    burrow = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "burrow")
    frp_dir = subprocess.run([os.path.join(ROOT, "resources", "fetch-frp.sh")], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
    tmp = tempfile.mkdtemp()
    bind, vhost, front, proxy = free_port(), free_port(), free_port(), free_port()
    with open(os.path.join(tmp, "frps.toml"), "w") as f:
        f.write(f'bindAddr = "127.0.0.1"\nbindPort = {bind}\nvhostHTTPPort = {vhost}\n'
                f'subDomainHost = "seed.test"\nauth.token = "{TOKEN}"\ntransport.tcpMux = false\n')
    frpc_toml = (f'serverAddr = "127.0.0.1"\nserverPort = {front}\nauth.token = "{TOKEN}"\n'
                 'transport.tls.enable = false\ntransport.tcpMux = false\n\n[[proxies]]\nname = "web"\n'
                 f'type = "http"\nlocalIP = "127.0.0.1"\nlocalPort = {proxy}\nsubdomain = "app"\n'
                 'transport.useCompression = true\n')
    with open(os.path.join(tmp, "frpc.toml"), "w") as f: f.write(frpc_toml)
    frps = subprocess.Popen([os.path.join(frp_dir, "frps"), "-c", os.path.join(tmp, "frps.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(bind); relay(front, bind)
        env = dict(os.environ, BURROW_CONFIG=os.path.join(tmp, "frpc.toml"), BURROW_MODE="native",
                   BURROW_PROXY_ADDR=f"127.0.0.1:{proxy}", BURROW_ROUTES=f"/=http://127.0.0.1:{free_port()}")
        b = subprocess.Popen([burrow], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for line in b.stdout:
            if '"tunnel_up"' in line: break
        s = socket.create_connection(("127.0.0.1", vhost))
        s.sendall(b"GET /seed?x=1 HTTP/1.1\r\nHost: app.seed.test\r\nConnection: close\r\n\r\n")
        while s.recv(65536): pass
        time.sleep(1.5)  # a heartbeat or two
        b.stdin.close(); b.wait(10)
    finally:
        frps.kill()
    key = hashlib.pbkdf2_hmac("sha1", TOKEN.encode(), b"frp", 64, 16)
    n = 0
    for idx, (up, down) in enumerate(conns):
        for side, raw in (("c2s", up), ("s2c", down)):
            head, used = frames(raw)
            if not head: continue
            rest = raw[used:]
            if head[0][0] in (ord("o"), ord("1")):  # Login / LoginResp: the rest is encrypted
                write("cipher", f"conn{idx}-{side}", key + bytes(rest[:16]) + b"\x07" + decrypt(key, rest))
                rest = decrypt(key, rest)
            elif head[0][0] == ord("s") and rest:  # StartWorkConn: then the compressed HTTP stream
                write("snappy", f"conn{idx}-{side}", b"\x05" + bytes(rest))
            elif head[0][0] == ord("w") and rest:
                write("snappy", f"conn{idx}-{side}", b"\x05" + bytes(rest))
            more, _ = frames(rest)
            stream = b"".join(head + (more if head[0][0] in (ord("o"), ord("1")) else []))
            write("frame", f"conn{idx}-{side}", b"\x00" + stream)
            for f in head + more:
                write("message", f"{chr(f[0])}-{hashlib.sha1(f).hexdigest()[:12]}", f[0:1] + f[9:]); n += 1
    write("frpc_toml", "capture.toml", frpc_toml.encode())
    print(f"{len(conns)} connections, {n} frames → {OUT}")

if __name__ == "__main__":
    main()
