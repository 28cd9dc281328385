'use strict';
// Preload bridge: the renderer gets `window.burrow` and nothing else of Node or Electron.
const { contextBridge, ipcRenderer } = require('electron');

contextBridge.exposeInMainWorld('burrow', {
  start: () => ipcRenderer.invoke('burrow:start'),
  stop: () => ipcRenderer.invoke('burrow:stop'),
  status: () => ipcRenderer.invoke('burrow:status'),
  share: (opts) => ipcRenderer.invoke('burrow:share', opts),
  revokeShares: () => ipcRenderer.invoke('burrow:revokeShares'),
  onUpdate: (cb) => {
    const listener = (_e, v) => cb(v);
    ipcRenderer.on('burrow:update', listener);
    return () => ipcRenderer.removeListener('burrow:update', listener);
  },
});

// Back online (new Wi-Fi, cable, VPN up): burrow reconnects at once rather than after its heartbeat.
window.addEventListener('online', () => ipcRenderer.send('burrow:online'));
