'use strict';
// node:test tests of the Electron host module against the real burrow binary and real frps 0.65.0.
// Run: node --test resources/electron/test/   (after `cargo build`; BURROW_BIN overrides the binary)

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { once } = require('node:events');

const { Burrow, Settings, locateBinary, platformDir } = require('../burrow.js');

const ROOT = path.join(__dirname, '..', '..', '..');
const BIN = process.env.BURROW_BIN || path.join(ROOT, 'target', 'debug', 'burrow');
const TOKEN = 'node-test-token-4a7c';

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function waitPort(port, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((r) => { const c = net.connect(port, '127.0.0.1', () => { c.end(); r(true); }); c.on('error', () => r(false)); });
    if (ok) return;
    if (Date.now() > end) throw new Error(`port ${port} did not open`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startFrps() {
  const dir = execFileSync('bash', [path.join(ROOT, 'resources', 'fetch-frp.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const bind = await freePort();
  const vhost = await freePort();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'burrow-node-'));
  const cfg = path.join(tmp, 'frps.toml');
  fs.writeFileSync(cfg, `bindAddr = "127.0.0.1"\nbindPort = ${bind}\nvhostHTTPPort = ${vhost}\nsubDomainHost = "burrow.test"\nauth.token = "${TOKEN}"\nlog.to = "${path.join(tmp, 'frps.log')}"\n`);
  const child = spawn(path.join(dir, 'frps'), ['-c', cfg], { stdio: 'ignore' });
  await waitPort(bind);
  await waitPort(vhost);
  return { bind, vhost, stop: () => { child.kill('SIGKILL'); fs.rmSync(tmp, { recursive: true, force: true }); } };
}

async function upstream() {
  const srv = http.createServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return srv;
}

function get(port, host, p) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, headers: { host } }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode, body: b }));
    }).on('error', reject);
  });
}

async function getOk(port, host, p, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    try { const r = await get(port, host, p); if (r.status === 200) return r.body; } catch (_) { /* not yet */ }
    if (Date.now() > end) throw new Error(`no 200 for ${host}${p}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function nextEvent(emitter, name, pred = () => true, ms = 15000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { emitter.off(name, f); reject(new Error(`no ${name} within ${ms} ms`)); }, ms);
    function f(v) { if (pred(v)) { clearTimeout(t); emitter.off(name, f); resolve(v); } }
    emitter.on(name, f);
  });
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch (_) { return false; }
}

test('the burrow binary is built', () => {
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: run cargo build first (or set BURROW_BIN)`);
});

test('start → tunnel with URL, status, stop, start, shutdown leaves no child', async (t) => {
  const frps = await startFrps();
  const app = await upstream();
  t.after(() => { frps.stop(); app.close(); });
  const proxy = await freePort();
  const b = new Burrow({
    binary: BIN,
    env: {
      BURROW_SERVER_ADDR: `127.0.0.1:${frps.bind}`, BURROW_SERVER_TOKEN: TOKEN, BURROW_SUBDOMAIN: 'node',
      BURROW_PROXY_ADDR: `127.0.0.1:${proxy}`, BURROW_ROUTES: `/=http://127.0.0.1:${app.address().port}`, BURROW_MODE: 'native',
    },
  });
  const logs = [];
  b.on('log', (l) => logs.push(l));
  const up = nextEvent(b, 'tunnel', (v) => v.state === 'up');
  b.start();
  const tun = await up;
  assert.equal(tun.name, 'web');
  assert.equal(tun.url, `http://node.burrow.test:${frps.vhost}`);
  assert.equal(await getOk(frps.vhost, 'node.burrow.test', '/from-node'), 'hello /from-node');

  const st = await b.status();
  assert.equal(st.state, 'connected');
  assert.equal(st.tunnels[0].url, tun.url);

  const down = nextEvent(b, 'tunnel', (v) => v.state === 'down');
  b.stop();
  await down;
  const again = nextEvent(b, 'tunnel', (v) => v.state === 'up');
  b.start();
  await again;

  const pid = b.pid;
  const exit = nextEvent(b, 'exit');
  await b.shutdown();
  const ex = await exit;
  assert.equal(ex.code, 0);
  assert.equal(ex.expected, true);
  assert.equal(alive(pid), false, 'the child is gone after shutdown');
  assert.ok(!logs.join('\n').includes(TOKEN), 'the token never appears in burrow output');
});

test('waking up, unlocking and coming back online reconnect at once, one reconnect per burst', async (t) => {
  const frps = await startFrps();
  const app = await upstream();
  const proxy = await freePort();
  const b = new Burrow({
    binary: BIN,
    env: {
      BURROW_SERVER_ADDR: `127.0.0.1:${frps.bind}`, BURROW_SERVER_TOKEN: TOKEN, BURROW_SUBDOMAIN: 'wake',
      BURROW_PROXY_ADDR: `127.0.0.1:${proxy}`, BURROW_ROUTES: `/=http://127.0.0.1:${app.address().port}`, BURROW_MODE: 'native',
    },
  });
  t.after(async () => { await b.shutdown(); frps.stop(); app.close(); });
  const events = [];
  b.on('event', (e) => events.push(e));
  const up = nextEvent(b, 'tunnel', (v) => v.state === 'up');
  b.start();
  await up;
  // Electron's powerMonitor is an EventEmitter; a plain one stands in for it.
  const power = new (require('node:events').EventEmitter)();
  const unwatch = b.watchPower(power, { debounceMs: 200 });
  const requested = () => events.filter((e) => e.event === 'reconnecting' && e.reason === 'reconnect requested').length;
  const back = nextEvent(b, 'tunnel', (v) => v.state === 'up');
  power.emit('resume');
  power.emit('unlock-screen');
  b.networkChanged(200); // the renderer's `online` (preload.js → ipcMain 'burrow:online')
  await back;
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(requested(), 1, 'one burst, one reconnect');
  const kinds = events.map((e) => e.event);
  const at = kinds.indexOf('reconnecting');
  assert.deepEqual([kinds[at - 1], kinds.indexOf('tunnel_up', at) > at], ['tunnel_down', true], 'down before up again');
  assert.equal(await getOk(frps.vhost, 'wake.burrow.test', '/after-wake'), 'hello /after-wake');
  unwatch();
  power.emit('resume');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(requested(), 1, 'no reconnect once unwatched');
});

test('unexpected death is restarted with backoff', async (t) => {
  const frps = await startFrps();
  const app = await upstream();
  t.after(() => { frps.stop(); app.close(); });
  const b = new Burrow({
    binary: BIN,
    maxRestartDelayMs: 1000,
    env: {
      BURROW_SERVER_ADDR: `127.0.0.1:${frps.bind}`, BURROW_SERVER_TOKEN: TOKEN, BURROW_SUBDOMAIN: 'phoenix',
      BURROW_PROXY_ADDR: `127.0.0.1:${await freePort()}`, BURROW_ROUTES: `/=http://127.0.0.1:${app.address().port}`, BURROW_MODE: 'native',
    },
  });
  const up = nextEvent(b, 'tunnel', (v) => v.state === 'up');
  b.start();
  await up;
  const first = b.pid;
  const restart = nextEvent(b, 'restart');
  const upAgain = nextEvent(b, 'tunnel', (v) => v.state === 'up');
  process.kill(first, 'SIGKILL');
  const r = await restart;
  assert.equal(r.attempt, 1);
  await upAgain;
  assert.notEqual(b.pid, first);
  assert.equal(await getOk(frps.vhost, 'phoenix.burrow.test', '/back'), 'hello /back');
  await b.shutdown();
});

test('share links: copy a link, open it, revoke, and the generation is kept for the next start', async (t) => {
  const frps = await startFrps();
  const app = await upstream();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'burrow-share-'));
  t.after(() => { frps.stop(); app.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const settings = new Settings({ dir, safeStorage: { isEncryptionAvailable: () => false } });
  settings.save({ accessMode: 'protected', publicUser: 'ann', publicPassword: 'pw-node-share-91' });
  const proxy = await freePort();
  const b = new Burrow({
    binary: BIN,
    env: {
      ...settings.toEnv(), BURROW_SERVER_ADDR: `127.0.0.1:${frps.bind}`, BURROW_SERVER_TOKEN: TOKEN, BURROW_SUBDOMAIN: 'share',
      BURROW_PROXY_ADDR: `127.0.0.1:${proxy}`, BURROW_ROUTES: `/=http://127.0.0.1:${app.address().port}`, BURROW_MODE: 'native',
    },
  });
  // registerIpc's wiring, with a stand-in for ipcMain: the handlers are what the renderer calls.
  const handlers = {};
  const ipcMain = { handle: (n, f) => { handlers[n] = f; }, on: () => {} };
  require('../burrow.js').registerIpc(ipcMain, b, { isDestroyed: () => false, send: () => {} }, settings);
  const up = nextEvent(b, 'tunnel', (v) => v.state === 'up');
  b.start();
  await up;
  // With the port, as a browser names it: links are bound to it.
  const host = `share.burrow.test:${frps.vhost}`;
  assert.equal((await get(frps.vhost, host, '/')).status, 401, 'protected without credentials');

  const link = await handlers['burrow:share'](null, { ttlS: 3600 });
  assert.ok(Date.parse(link.expires) - Date.now() > 3500e3, link.expires);
  const u = new URL(link.url);
  const first = await get(frps.vhost, host, u.pathname + u.search);
  assert.equal(first.status, 303);

  assert.equal(await handlers['burrow:revokeShares'](), 1);
  assert.equal((await get(frps.vhost, host, u.pathname + u.search)).status, 401, 'a revoked link opens nothing');
  assert.deepEqual(settings.load().shareGenerations, { default: 1 });
  assert.equal(settings.toEnv().BURROW_SHARE_GENERATION, '1');
  await b.shutdown();
});

test('each project has its own share key: one project\'s link never opens another\'s URL', async (t) => {
  const frps = await startFrps();
  const app = await upstream();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'burrow-projects-'));
  t.after(() => { frps.stop(); app.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const settings = new Settings({ dir, safeStorage: { isEncryptionAvailable: () => false } });
  settings.save({ accessMode: 'protected', publicUser: 'ann', publicPassword: 'pw-node-projects-7', projectId: 'alpha' });
  const [a, b] = [settings.toEnv(), settings.toEnv({ projectId: 'beta' })];
  assert.notEqual(a.BURROW_SHARE_KEY, b.BURROW_SHARE_KEY);
  assert.equal(a.BURROW_SHARE_KEY, settings.toEnv().BURROW_SHARE_KEY, 'stable for a project');
  assert.match(a.BURROW_SHARE_KEY, /^[0-9a-f]{64}$/);
  assert.ok(!Object.values(a).includes(settings.load().shareMaster), 'the master secret never leaves the settings');
  // Both projects on the same public host, one after the other (a reservation may hand it out again).
  const run = async (env) => {
    const proxy = await freePort();
    const bur = new Burrow({
      binary: BIN,
      env: {
        ...env, BURROW_SERVER_ADDR: `127.0.0.1:${frps.bind}`, BURROW_SERVER_TOKEN: TOKEN, BURROW_SUBDOMAIN: 'samehost',
        BURROW_PROXY_ADDR: `127.0.0.1:${proxy}`, BURROW_ROUTES: `/=http://127.0.0.1:${app.address().port}`, BURROW_MODE: 'native',
      },
    });
    const up = nextEvent(bur, 'tunnel', (v) => v.state === 'up');
    bur.start();
    await up;
    return bur;
  };
  const host = `samehost.burrow.test:${frps.vhost}`;
  const first = await run(a);
  const link = new URL((await first.share({ ttlS: 600 })).url);
  assert.equal((await get(frps.vhost, host, link.pathname + link.search)).status, 303, 'the link opens its own project');
  await first.shutdown();
  const second = await run(b);
  const other = await get(frps.vhost, host, link.pathname + link.search);
  assert.equal(other.status, 401, 'project alpha\'s link opened project beta');
  await second.shutdown();
});

test('settings round trip: the API token is encrypted when safeStorage is available', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'burrow-settings-'));
  try {
    // A stand-in with Electron's safeStorage API (the real one needs a running Electron).
    const safeStorage = {
      isEncryptionAvailable: () => true,
      encryptString: (s) => Buffer.from('enc:' + Buffer.from(s).toString('hex')),
      decryptString: (b) => Buffer.from(b.toString().slice(4), 'hex').toString(),
    };
    const s = new Settings({ dir, safeStorage });
    const r = s.save({ apiUrl: 'https://api.example.com', userId: 'u1', projectId: 'p1', apiToken: 'secret-api-token-xyz' });
    assert.equal(r.warning, null);
    const onDisk = fs.readFileSync(s.path, 'utf8');
    assert.ok(!onDisk.includes('secret-api-token-xyz'), 'no token in clear on disk');
    assert.equal(fs.statSync(s.path).mode & 0o777, 0o600);
    assert.deepEqual(s.load(), { apiUrl: 'https://api.example.com', userId: 'u1', projectId: 'p1', apiToken: 'secret-api-token-xyz' });
    assert.deepEqual(s.toEnv(), { BURROW_API_URL: 'https://api.example.com', BURROW_USER_ID: 'u1', BURROW_PROJECT_ID: 'p1', BURROW_API_TOKEN: 'secret-api-token-xyz' });

    const plain = new Settings({ dir, file: 'plain.json', safeStorage: { isEncryptionAvailable: () => false } });
    assert.match(plain.save({ apiUrl: 'https://a', userId: 'u', projectId: 'p', apiToken: 't0k3n' }).warning, /without encryption/);
    assert.equal(plain.load().apiToken, 't0k3n');

    // Access control: the password and the share key are secrets too; a protected URL gets a share
    // key of its own on first save, and a revocation's generation is kept.
    const a = new Settings({ dir, file: 'access.json', safeStorage });
    a.save({ accessMode: 'protected', publicUser: 'ann', publicPassword: 'pw-secret-on-disk' });
    const master = a.load().shareMaster;
    const key = a.shareKey();
    assert.match(master, /^[0-9a-f]{64}$/);
    assert.match(key, /^[0-9a-f]{64}$/);
    const disk = fs.readFileSync(a.path, 'utf8');
    assert.ok(!disk.includes('pw-secret-on-disk') && !disk.includes(master), 'no secret in clear on disk');
    a.setShareGeneration(3);
    assert.deepEqual(a.toEnv(), {
      BURROW_PUBLIC_ACCESS: 'protected', BURROW_PUBLIC_AUTH: 'ann:pw-secret-on-disk', BURROW_SHARE_KEY: key, BURROW_SHARE_GENERATION: '3',
    });
    a.save({ ...a.load(), accessMode: 'open' });
    assert.equal(a.toEnv().BURROW_PUBLIC_AUTH, undefined, 'an open URL sends no password');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('binary location: packaged and development', () => {
  assert.equal(platformDir('darwin', 'arm64'), 'darwin-arm64');
  assert.equal(platformDir('win32', 'x64'), 'windows-amd64');
  assert.equal(locateBinary({ packaged: true, resourcesPath: '/app/resources', platform: 'linux', arch: 'x64' }), '/app/resources/bin/linux-amd64/burrow');
  assert.equal(locateBinary({ packaged: true, resourcesPath: 'C:\\app\\resources', platform: 'win32', arch: 'x64' }).endsWith('burrow.exe'), true);
  assert.equal(locateBinary({ packaged: false, devPath: '/src/target/debug/burrow' }), '/src/target/debug/burrow');
});

test('a missing binary is reported and does not block shutdown', async () => {
  const b = new Burrow({ binary: '/nonexistent/burrow' });
  const errors = [];
  b.on('error', (e) => errors.push(e));
  const exit = nextEvent(b, 'exit');
  b.start();
  const ex = await exit;
  assert.equal(ex.code, null);
  assert.match(errors[0].message, /cannot start burrow/);
  await b.shutdown(); // resolves at once: nothing runs
  assert.equal(b.pid, null);
});
