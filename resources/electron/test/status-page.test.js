'use strict';
// The status page in a real browser: headless Chromium (Debian's `chromium`) driven by
// playwright-core. It opens the page burrow's admin API serves, sees the tunnel URL, clicks Stop
// and sees the state change. Screenshots go to target/.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { execFileSync, spawn } = require('node:child_process');
const os = require('node:os');

const { Burrow } = require('../burrow.js');

const ROOT = path.join(__dirname, '..', '..', '..');
const BIN = process.env.BURROW_BIN || path.join(ROOT, 'target', 'debug', 'burrow');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TOKEN = 'page-test-token-91ad';

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function waitPort(port) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((r) => { const c = net.connect(port, '127.0.0.1', () => { c.end(); r(true); }); c.on('error', () => r(false)); });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} did not open`);
}

test('status page: tunnel URL shown, Stop changes the state', async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as resources/test.sh does`);
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (_) {
    assert.fail('playwright-core is missing: run `npm ci` in resources/electron (as resources/test.sh does)');
  }

  const dir = execFileSync('bash', [path.join(ROOT, 'resources', 'fetch-frp.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const bind = await freePort();
  const vhost = await freePort();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'burrow-page-'));
  fs.writeFileSync(path.join(tmp, 'frps.toml'), `bindAddr = "127.0.0.1"\nbindPort = ${bind}\nvhostHTTPPort = ${vhost}\nsubDomainHost = "burrow.test"\nauth.token = "${TOKEN}"\nlog.to = "${path.join(tmp, 'frps.log')}"\n`);
  const frps = spawn(path.join(dir, 'frps'), ['-c', path.join(tmp, 'frps.toml')], { stdio: 'ignore' });
  await waitPort(bind);
  const app = http.createServer((req, res) => res.end('app'));
  await new Promise((r) => app.listen(0, '127.0.0.1', r));

  const b = new Burrow({
    binary: BIN,
    env: {
      BURROW_SERVER_ADDR: `127.0.0.1:${bind}`, BURROW_SERVER_TOKEN: TOKEN, BURROW_SUBDOMAIN: 'page',
      BURROW_PROXY_ADDR: `127.0.0.1:${await freePort()}`, BURROW_ROUTES: `/=http://127.0.0.1:${app.address().port}`,
      BURROW_ADMIN_ADDR: '127.0.0.1:0', BURROW_MODE: 'native',
    },
  });
  const ready = new Promise((resolve) => b.on('event', (e) => { if (e.event === 'admin_ready') resolve(e); }));
  const up = new Promise((resolve) => b.on('tunnel', (v) => { if (v.state === 'up') resolve(v); }));
  b.start();
  const admin = await ready;
  const tunnel = await up;

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.after(async () => {
    await browser.close();
    await b.shutdown();
    frps.kill('SIGKILL');
    app.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const page = await browser.newPage({ viewport: { width: 900, height: 560 } });
  await page.goto(admin.page);
  const link = page.locator('#tunnels a.url');
  await link.waitFor({ timeout: 10000 });
  assert.equal(await link.textContent(), tunnel.url);
  assert.equal((await page.locator('#state').textContent()).trim(), 'connected');
  fs.mkdirSync(path.join(ROOT, 'target'), { recursive: true });
  await page.screenshot({ path: path.join(ROOT, 'target', 'status-page.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(ROOT, 'target', 'status-page-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });

  await page.click('#stop');
  await page.locator('#tunnels td.tunnel-state', { hasText: 'down' }).waitFor({ timeout: 10000 });
  await page.locator('#state', { hasText: 'stopped' }).waitFor({ timeout: 10000 });
  assert.equal(await page.locator('#start').isEnabled(), true);
  await page.screenshot({ path: path.join(ROOT, 'target', 'status-page-stopped.png') });

  await page.click('#start');
  await page.locator('#tunnels td.tunnel-state', { hasText: 'up' }).waitFor({ timeout: 15000 });
});
