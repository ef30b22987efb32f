// Served by the platform's front on the IDE origin and appended to the IDE's page: when the
// IDE cookie no longer opens this container (signed out, session expired, container deleted
// or handed to someone else), cover the IDE with a notice and a way to sign in again instead
// of leaving code-server trying to reconnect for ever.
(() => {
  "use strict";
  const script = document.currentScript;
  const stateUrl = script.dataset.state;
  const signInUrl = script.dataset.signin;
  const portalUrl = script.dataset.portal;
  const POLL_MS = 10000;
  let shown = false;
  let checking = false;

  const ENDED = {
    401: {
      title: "Your session has ended",
      text: "You signed out, or your sign-in expired. Your files are still in the container: " +
        "sign in again to go on where you left off.",
      link: signInUrl,
      label: "Sign in again",
    },
    404: {
      title: "This container is no longer open to you",
      text: "It was deleted, or it is no longer yours to open.",
      link: portalUrl,
      label: "Your containers",
    },
  };

  function el(tag, style, text) {
    const node = document.createElement(tag);
    node.setAttribute("style", style);
    if (text) node.textContent = text;
    return node;
  }

  function show(what) {
    shown = true;
    const cover = el(
      "div",
      "position:fixed;inset:0;z-index:2147483647;display:flex;align-items:center;" +
        "justify-content:center;background:rgba(17,24,39,.72);" +
        "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans',sans-serif",
    );
    cover.id = "zlh-session-ended";
    cover.setAttribute("role", "alertdialog");
    cover.setAttribute("aria-modal", "true");
    const box = el(
      "div",
      "max-width:30em;margin:1rem;padding:1.4rem 1.6rem;background:#fff;color:#1c2330;" +
        "border:1px solid #d9dee6;border-radius:8px;box-shadow:0 10px 30px rgba(0,0,0,.3)",
    );
    const title = el("h1", "font-size:1.4rem;margin:0 0 .8rem", what.title);
    title.id = "zlh-session-ended-title";
    cover.setAttribute("aria-labelledby", title.id);
    const link = el(
      "a",
      "display:inline-block;padding:.5rem 1rem;border-radius:6px;background:#1f6feb;" +
        "color:#fff;text-decoration:none;font-weight:600",
      what.label,
    );
    link.href = what.link;
    box.append(title, el("p", "margin:0 0 1.2rem;line-height:1.45", what.text), link);
    cover.append(box);
    document.body.append(cover);
    link.focus();
  }

  async function check() {
    if (shown || checking) return;
    checking = true;
    try {
      const response = await fetch(stateUrl, { credentials: "same-origin", cache: "no-store" });
      const what = ENDED[response.status];
      if (what) show(what);
    } catch {
      // Offline or the platform restarting: code-server says so itself; ask again later.
    } finally {
      checking = false;
    }
  }

  // The front closes an IDE's WebSockets the moment its access ends: ask at once then.
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("close", check);
    }
  };
  // A person using the IDE (keys, clicks) keeps the container from being stopped as idle:
  // told to the front at most every ACTIVITY_MS, terminal input named as such.
  const ACTIVITY_MS = 15000;
  let pending = null;
  let lastSent = 0;
  let timer = null;
  async function report() {
    timer = null;
    const kind = pending;
    pending = null;
    lastSent = Date.now();
    try {
      const url = `${stateUrl}?activity=${kind}`;
      const response = await fetch(url, { method: "POST", credentials: "same-origin", cache: "no-store" });
      const what = ENDED[response.status];
      if (what && !shown) show(what);
    } catch {
      // Offline: the next use reports again.
    }
  }
  function used(event) {
    if (shown) return;
    const inTerminal = event.target instanceof Element && event.target.closest(".xterm, .terminal");
    if (pending !== "terminal") pending = inTerminal ? "terminal" : "ide";
    if (timer === null) timer = setTimeout(report, Math.max(0, lastSent + ACTIVITY_MS - Date.now()));
  }
  for (const type of ["keydown", "pointerdown", "wheel"]) {
    window.addEventListener(type, used, { capture: true, passive: true });
  }
  window.addEventListener("focus", check);
  window.addEventListener("online", check);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) check();
  });
  setInterval(check, POLL_MS);
})();
