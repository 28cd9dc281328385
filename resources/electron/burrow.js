'use strict';
// burrow for Electron's main process: spawn the burrow binary, follow its JSON-lines events,
// control it over stdin, restart it if it dies, and stop it with the app.
//
//   const { Burrow, Settings } = require('./burrow');
//   const settings = new Settings({ dir: app.getPath('userData'), safeStorage });
//   const burrow = new Burrow({ env: settings.toEnv() });
//   registerIpc(ipcMain, burrow, win.webContents, settings);  // keeps revocations across restarts
//   burrow.on('tunnel', (t) => win.webContents.send('burrow:update', t));
//   burrow.attachToApp(app);            // shutdown on before-quit
//   burrow.watchPower(powerMonitor);    // reconnect at once after sleep or a screen unlock
//   burrow.start();
//
// Dependency-free CommonJS. Secrets go to the child through its environment, never its argv
// (argv is visible to every user of the machine).

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const GO_OS = { darwin: 'darwin', linux: 'linux', win32: 'windows' };
const GO_ARCH = { x64: 'amd64', arm64: 'arm64', ia32: '386' };

/** `<os>-<arch>` as burrow's resources/bin/ is laid out (Go's names, as frp's releases use). */
function platformDir(platform = process.platform, arch = process.arch) {
  return `${GO_OS[platform] || platform}-${GO_ARCH[arch] || arch}`;
}

/**
 * Where the burrow binary is: `process.resourcesPath/bin/<os>-<arch>/burrow[.exe]` in a packaged
 * app (extraResources), else `devPath`, else the source tree's target/release build.
 */
function locateBinary({ packaged, resourcesPath, devPath, platform = process.platform, arch = process.arch } = {}) {
  const exe = platform === 'win32' ? 'burrow.exe' : 'burrow';
  if (packaged && resourcesPath) return path.join(resourcesPath, 'bin', platformDir(platform, arch), exe);
  if (devPath) return devPath;
  return path.join(__dirname, '..', '..', 'target', 'release', exe);
}

/** Plain words for burrow's error codes, for the chat window's top bar. */
const PLAIN = {
  config_invalid: 'The tunnel settings are not valid.',
  api_unreachable: 'Cannot reach the tunnel service. Retrying…',
  api_rejected: 'The tunnel service refused your credentials.',
  api_error: 'The tunnel service answered something unexpected.',
  server_unreachable: 'Cannot reach the tunnel server. Retrying…',
  auth_failed: 'The tunnel server refused the credentials.',
  proxy_rejected: 'The tunnel server refused this tunnel name.',
  tls_failed: 'The tunnel server’s identity could not be verified.',
  protocol_error: 'The tunnel server speaks an unexpected protocol.',
  frpc_missing: 'The fallback tunnel client is missing from the app.',
  frpc_failed: 'The fallback tunnel client stopped. Restarting…',
  port_in_use: 'Another program uses the local port burrow needs.',
  internal: 'burrow hit an internal problem.',
};

class Burrow extends EventEmitter {
  /**
   * @param {object} opts
   * @param {string} [opts.binary]  path of the burrow executable (default: locateBinary())
   * @param {object} [opts.env]     BURROW_* settings (secrets included); merged over process.env
   * @param {string[]} [opts.args]  extra arguments (never secrets)
   * @param {number} [opts.maxRestartDelayMs] cap of the restart backoff (default 20000)
   */
  constructor(opts = {}) {
    super();
    this.binary = opts.binary || locateBinary();
    this.env = opts.env || {};
    this.args = opts.args || [];
    this.maxRestartDelayMs = opts.maxRestartDelayMs || 20000;
    this.child = null;
    this.tunnels = new Map();
    this.state = 'idle';
    this._stopping = false;
    this._restarts = 0;
    this._restartTimer = null;
    this._statusWaiters = [];
    this._reconnectTimer = null;
  }

  /** The child's pid, or null. */
  get pid() {
    return this.child ? this.child.pid : null;
  }

  /** Starts burrow (or, when it runs, brings its tunnels up). */
  start() {
    if (this.child) {
      this._send({ cmd: 'start' });
      return;
    }
    this._stopping = false;
    this._spawn();
  }

  /** Takes the tunnels down; the local proxy keeps serving. */
  stop() {
    this._send({ cmd: 'stop' });
  }

  /** Asks for a `status` event; resolves with it. */
  status(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      if (!this.child) return reject(new Error('burrow is not running'));
      const t = setTimeout(() => reject(new Error('no status from burrow')), timeoutMs);
      this._statusWaiters.push((s) => { clearTimeout(t); resolve(s); });
      this._send({ cmd: 'status' });
    });
  }

  /** Connect again now (after the machine woke up, or the network changed). */
  reconnect() {
    this._send({ cmd: 'reconnect' });
  }

  /**
   * A share link for the public URL (protected mode): resolves with `{ url, expires }`, rejects
   * with burrow's error (for instance when the URL is open to anyone).
   */
  share({ ttlS = 3600, readOnly = false } = {}, timeoutMs = 5000) {
    return this._ask({ cmd: 'share', ttl_s: ttlS, read_only: readOnly }, 'share_link', timeoutMs);
  }

  /** Kills every share link and cookie handed out; resolves with the new generation. */
  revokeShares(timeoutMs = 5000) {
    return this._ask({ cmd: 'revoke_shares' }, 'shares_revoked', timeoutMs).then((e) => e.generation);
  }

  /** Sends `cmd` and resolves with the next `answer` event, or rejects with the next error. */
  _ask(cmd, answer, timeoutMs) {
    return new Promise((resolve, reject) => {
      if (!this.child) return reject(new Error('burrow is not running'));
      const done = (f, v) => { clearTimeout(t); this.off('event', on); f(v); };
      const on = (ev) => {
        if (ev.event === answer) done(resolve, ev);
        else if (ev.event === 'error') done(reject, Object.assign(new Error(ev.message), { code: ev.code, hint: ev.hint }));
      };
      const t = setTimeout(() => done(reject, new Error(`no ${answer} from burrow`)), timeoutMs);
      this.on('event', on);
      this._send(cmd);
    });
  }

  /** Stops burrow (it releases the reservation and stops any frpc); resolves when it has exited. */
  shutdown(timeoutMs = 6000) {
    this._stopping = true;
    clearTimeout(this._restartTimer);
    const child = this.child;
    if (!child) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { clearTimeout(kill); resolve(); };
      const kill = setTimeout(() => this._killTree(child), timeoutMs);
      child.once('exit', done);
      this._send({ cmd: 'shutdown' });
      try { child.stdin.end(); } catch (_) { /* already closed */ }
    });
  }

  /**
   * Reconnect at once when the machine wakes (`resume`), the screen unlocks, or the network comes
   * back (`online`, from the renderer or a net check), instead of waiting for burrow's heartbeat to
   * find the old session dead. Events within `debounceMs` make one reconnect. Returns a function
   * that stops watching.
   *   burrow.watchPower(powerMonitor);
   *   ipcMain.on('burrow:online', () => burrow.networkChanged());
   */
  watchPower(powerMonitor, { debounceMs = 1000 } = {}) {
    const poke = () => this.networkChanged(debounceMs);
    const events = ['resume', 'unlock-screen'];
    for (const e of events) powerMonitor.on(e, poke);
    return () => {
      for (const e of events) powerMonitor.removeListener(e, poke);
      clearTimeout(this._reconnectTimer);
    };
  }

  /** The network may have changed (woke up, online again): one `reconnect` per burst of calls. */
  networkChanged(debounceMs = 1000) {
    if (this._reconnectTimer) return;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this.reconnect();
    }, debounceMs);
    if (this._reconnectTimer.unref) this._reconnectTimer.unref();
  }

  /** Shut burrow down when the app quits (before-quit waits for it). */
  attachToApp(app) {
    let quitting = false;
    app.on('before-quit', (e) => {
      if (quitting || !this.child) return;
      e.preventDefault();
      quitting = true;
      this.shutdown().finally(() => app.quit());
    });
  }

  /** The last resort after stdin's end and `shutdown` went unanswered: SIGKILL to burrow and, on
   *  POSIX, its whole process group (burrow leads it: see _spawn), so an frpc it started goes too
   *  even where the OS has no parent-death signal (macOS); on Windows `taskkill /T /F`, the tree
   *  kill Windows offers (burrow's job object also ends frpc with it). */
  _killTree(child) {
    try {
      if (process.platform === 'win32' && child.pid) {
        spawn('taskkill', ['/pid', String(child.pid), '/T', '/F'], { windowsHide: true, stdio: 'ignore' })
          .on('error', () => child.kill('SIGKILL'));
      } else if (child.pid) {
        process.kill(-child.pid, 'SIGKILL');
      } else {
        child.kill('SIGKILL');
      }
    } catch (_) { /* already gone */ }
  }

  _send(obj) {
    if (this.child && this.child.stdin.writable) this.child.stdin.write(JSON.stringify(obj) + '\n');
  }

  _spawn() {
    const env = { ...process.env, ...this.env };
    // detached on POSIX: burrow leads its own process group, which _killTree can signal whole.
    const child = spawn(this.binary, this.args, { env, stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true, detached: process.platform !== 'win32' });
    this.child = child;
    this.state = 'starting';
    child.on('error', (err) => {
      this._emitError({ code: 'internal', message: `cannot start burrow (${this.binary}): ${err.message}`, fatal: true });
      // A spawn that failed (missing or not executable) never emits 'exit': end it here, without
      // a restart, so shutdown() and the app's quit do not wait for it.
      if (!child.pid && this.child === child) {
        this.child = null;
        this.state = 'exited';
        this.emit('exit', { code: null, signal: null, expected: this._stopping, error: err.message });
      }
    });
    readline.createInterface({ input: child.stdout }).on('line', (line) => this._line(line));
    readline.createInterface({ input: child.stderr }).on('line', (line) => this.emit('log', line));
    child.stdin.on('error', () => { /* burrow exited; nothing to write to */ });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      const expected = this._stopping;
      for (const [name, t] of this.tunnels) {
        if (t.state === 'up') this._tunnel({ ...t, name, state: 'down', reason: 'burrow exited' });
      }
      this.state = 'exited';
      this.emit('exit', { code, signal, expected });
      // Exit codes 2 and 3 mean the settings are wrong: restarting would only repeat the error.
      if (!expected && code !== 2 && code !== 3) this._scheduleRestart();
    });
  }

  _scheduleRestart() {
    this._restarts += 1;
    const delayMs = Math.min(this.maxRestartDelayMs, 500 * 2 ** (this._restarts - 1));
    this.emit('restart', { attempt: this._restarts, delayMs });
    this._restartTimer = setTimeout(() => { if (!this._stopping) this._spawn(); }, delayMs);
  }

  _line(line) {
    let ev;
    try { ev = JSON.parse(line); } catch (_) { this.emit('log', line); return; }
    this.emit('event', ev);
    switch (ev.event) {
      case 'connected':
        this.state = 'connected';
        this._restarts = 0;
        break;
      case 'tunnel_up':
        this._tunnel({ name: ev.name, type: ev.type, url: ev.url || ev.remote_addr || null, state: 'up', mode: ev.mode });
        break;
      case 'tunnel_down':
        this._tunnel({ ...(this.tunnels.get(ev.name) || {}), name: ev.name, state: 'down', reason: ev.reason });
        break;
      case 'reconnecting':
        this.state = 'reconnecting';
        break;
      case 'status':
        this.state = ev.state;
        for (const w of this._statusWaiters.splice(0)) w(ev);
        this.emit('status', ev);
        break;
      case 'error':
        this._emitError(ev);
        break;
      case 'stopped':
        this.state = 'stopped';
        break;
      case 'share_link':
      case 'shares_revoked':
        this.emit(ev.event, ev);
        break;
      default:
        break;
    }
  }

  _tunnel(t) {
    this.tunnels.set(t.name, t);
    this.emit('tunnel', t);
  }

  _emitError(ev) {
    const err = { code: ev.code, message: ev.message, hint: ev.hint, fatal: !!ev.fatal, plain: PLAIN[ev.code] || ev.message };
    // An 'error' event without a listener would throw in Node; report it only to listeners.
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}

/** The settings that are secrets: encrypted with safeStorage when it is available. */
const SECRETS = ['apiToken', 'publicPassword', 'shareMaster'];
const PLAIN_FIELDS = ['apiUrl', 'userId', 'projectId', 'accessMode', 'publicUser', 'shareGenerations'];

/** The share key of one project: an HMAC of its id under the install's master secret, so no two
 *  projects (nor two installs) can open each other's links. */
function shareKeyFor(master, projectId) {
  return crypto.createHmac('sha256', master).update(`burrow share key\0${projectId || 'default'}`).digest('hex');
}

/**
 * The user's tunnel settings, in a JSON file under the app's userData: the provisioning API, and
 * who may use the public URL (`accessMode` 'open' or 'protected', `publicUser`/`publicPassword`
 * for basic auth, the install's `shareMaster` secret from which each project's share key is
 * derived, and per project the `shareGenerations` burrow last revoked to). Secrets are encrypted with Electron's safeStorage when it is available; otherwise
 * they are stored in plaintext and `save()` says so (`{ warning }`), so the app can tell the user.
 */
class Settings {
  constructor({ dir, safeStorage = null, file = 'burrow-settings.json', fsImpl = fs } = {}) {
    if (!dir) throw new Error('Settings needs the directory to keep them in (app.getPath("userData"))');
    this.path = path.join(dir, file);
    this.safeStorage = safeStorage;
    this.fs = fsImpl;
  }

  _raw() {
    try { return JSON.parse(this.fs.readFileSync(this.path, 'utf8')); } catch (_) { return {}; }
  }

  load() {
    const raw = this._raw();
    const out = {};
    for (const k of PLAIN_FIELDS) if (raw[k] !== undefined) out[k] = raw[k];
    // Before per-project keys the one `shareKey` was every project's: it becomes the master.
    const stored = (k) => raw[`${k}Encrypted`] || raw[`${k}Plain`] ? k : k === 'shareMaster' ? 'shareKey' : k;
    for (const k of SECRETS) {
      const from = stored(k);
      if (raw[`${from}Encrypted`] && this.safeStorage) {
        out[k] = this.safeStorage.decryptString(Buffer.from(raw[`${from}Encrypted`], 'base64'));
      } else if (raw[`${from}Plain`]) {
        out[k] = raw[`${from}Plain`];
      }
    }
    return out;
  }

  /** Saves `settings` whole. Protected access gets a share key on first save, so links survive
   *  restarts. */
  save(settings) {
    const s = { ...settings };
    if (s.accessMode === 'protected' && !s.shareMaster) s.shareMaster = crypto.randomBytes(32).toString('hex');
    const data = {};
    for (const k of PLAIN_FIELDS) if (s[k] !== undefined) data[k] = s[k];
    let warning = null;
    const secure = this.safeStorage && this.safeStorage.isEncryptionAvailable();
    for (const k of SECRETS) {
      if (!s[k]) continue;
      if (secure) {
        data[`${k}Encrypted`] = this.safeStorage.encryptString(s[k]).toString('base64');
      } else {
        data[`${k}Plain`] = s[k];
        warning = 'The tunnel secrets are stored without encryption: this system offers no secure storage (Electron safeStorage).';
      }
    }
    this.fs.mkdirSync(path.dirname(this.path), { recursive: true });
    this.fs.writeFileSync(this.path, JSON.stringify(data, null, 2), { mode: 0o600 });
    return { warning };
  }

  /** Keeps the generation of a `shares_revoked` event for the project (the stored `projectId`
   *  unless given), so revoked links stay dead after a restart. */
  setShareGeneration(generation, projectId) {
    const s = this.load();
    const id = projectId || s.projectId || 'default';
    return this.save({ ...s, shareGenerations: { ...(s.shareGenerations || {}), [id]: generation } });
  }

  /** The share key for a project: what `toEnv` passes as BURROW_SHARE_KEY. */
  shareKey(projectId) {
    const s = this.load();
    return s.shareMaster ? shareKeyFor(s.shareMaster, projectId || s.projectId) : undefined;
  }

  /** The environment for `new Burrow({ env })`, for the stored project or `projectId`. */
  toEnv({ projectId } = {}) {
    const s = this.load();
    const id = projectId || s.projectId;
    const env = {};
    if (s.apiUrl) env.BURROW_API_URL = s.apiUrl;
    if (s.userId) env.BURROW_USER_ID = s.userId;
    if (id) env.BURROW_PROJECT_ID = id;
    if (s.apiToken) env.BURROW_API_TOKEN = s.apiToken;
    if (s.accessMode === 'protected') {
      env.BURROW_PUBLIC_ACCESS = 'protected';
      if (s.publicUser && s.publicPassword) env.BURROW_PUBLIC_AUTH = `${s.publicUser}:${s.publicPassword}`;
    }
    if (s.shareMaster) env.BURROW_SHARE_KEY = shareKeyFor(s.shareMaster, id);
    const generation = (s.shareGenerations || {})[id || 'default'];
    if (generation) env.BURROW_SHARE_GENERATION = String(generation);
    return env;
  }
}

/** Wires a Burrow to Electron's ipcMain for the preload bridge (preload.js); with `settings`,
 *  a revocation's generation is kept in them. */
function registerIpc(ipcMain, burrow, webContents, settings = null) {
  ipcMain.handle('burrow:start', () => burrow.start());
  ipcMain.handle('burrow:share', (_e, opts) => burrow.share(opts || {}));
  ipcMain.handle('burrow:revokeShares', () => burrow.revokeShares());
  if (settings) burrow.on('shares_revoked', ({ generation }) => settings.setShareGeneration(generation));
  ipcMain.handle('burrow:stop', () => burrow.stop());
  ipcMain.handle('burrow:status', () => burrow.status());
  ipcMain.on('burrow:online', () => burrow.networkChanged());
  const send = (kind) => (v) => { if (!webContents.isDestroyed()) webContents.send('burrow:update', { kind, ...v }); };
  burrow.on('tunnel', send('tunnel'));
  burrow.on('status', send('status'));
  burrow.on('error', send('error'));
  burrow.on('exit', send('exit'));
}

module.exports = { Burrow, Settings, locateBinary, platformDir, registerIpc, PLAIN };
