'use strict';
// Renderer snippet for the chat window's top bar: start/stop, the public URL with a copy button,
// share links and their revocation when the URL is protected, the state, and errors in plain
// words. Needs preload.js (window.burrow). Usage:
//   <div id="burrow-bar"></div> <script src="topbar.js"></script>
//   mountBurrowBar(document.getElementById('burrow-bar'), { shareLinks: settings.accessMode === 'protected' });
(function (global) {
  function mountBurrowBar(root, { shareLinks = false } = {}) {
    const el = (tag, props) => Object.assign(document.createElement(tag), props || {});
    const state = el('span', { className: 'burrow-state', textContent: 'starting…' });
    const url = el('a', { className: 'burrow-url', target: '_blank', rel: 'noopener' });
    const copy = el('button', { type: 'button', textContent: 'Copy link', hidden: true });
    // Protected URLs: a link that lets one person in for an hour, and the way to take all back.
    const share = el('button', { type: 'button', textContent: 'Copy link (expires in 1 h)', hidden: true });
    const revoke = el('button', { type: 'button', textContent: 'Revoke links', hidden: true });
    const start = el('button', { type: 'button', textContent: 'Go public' });
    const stop = el('button', { type: 'button', textContent: 'Stop' });
    const error = el('span', { className: 'burrow-error', role: 'alert' });
    root.replaceChildren(state, url, copy, share, revoke, start, stop, error);
    const flash = (b, text, back) => { b.textContent = text; setTimeout(() => { b.textContent = back; }, 1500); };
    share.onclick = async () => {
      try {
        const link = await global.burrow.share({ ttlS: 3600 });
        await navigator.clipboard.writeText(link.url);
        flash(share, 'Link copied', 'Copy link (expires in 1 h)');
      } catch (e) { error.textContent = e.message; }
    };
    revoke.onclick = async () => {
      try { await global.burrow.revokeShares(); flash(revoke, 'Links revoked', 'Revoke links'); } catch (e) { error.textContent = e.message; }
    };
    copy.onclick = async () => {
      try { await navigator.clipboard.writeText(url.href); copy.textContent = 'Copied'; } catch (_) { copy.textContent = 'Copy failed'; }
      setTimeout(() => { copy.textContent = 'Copy link'; }, 1500);
    };
    start.onclick = () => global.burrow.start();
    stop.onclick = () => global.burrow.stop();
    const show = (up, link) => {
      state.textContent = up ? 'Public' : 'Private';
      url.textContent = up && link ? link : '';
      if (up && link) url.href = link; else url.removeAttribute('href');
      copy.hidden = !(up && link);
      share.hidden = revoke.hidden = !(up && link && shareLinks);
      start.disabled = up;
      stop.disabled = !up;
    };
    show(false);
    return global.burrow.onUpdate((u) => {
      if (u.kind === 'tunnel') { show(u.state === 'up', u.url); if (u.state === 'up') error.textContent = ''; }
      if (u.kind === 'error') error.textContent = u.plain || u.message;
      if (u.kind === 'exit' && !u.expected) { show(false); error.textContent = 'The tunnel stopped unexpectedly. Restarting…'; }
    });
  }
  global.mountBurrowBar = mountBurrowBar;
})(typeof window !== 'undefined' ? window : globalThis);
