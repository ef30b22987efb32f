import { Terminal } from "/portal/vendor/xterm/lib/xterm.mjs";
import { FitAddon } from "/portal/vendor/xterm-fit/lib/addon-fit.mjs";
import { h } from "../dom.js";

// xterm.js on the console WebSocket: binary frames carry terminal bytes, text frames JSON control.
export function consolePanel(panel, vmid) {
  const status = h("p", { class: "muted", id: "console-status", "aria-live": "polite" }, "Connecting…");
  const box = h("div", { class: "terminal", id: "terminal" });
  panel.append(status, box);
  const term = new Terminal({ cursorBlink: true, fontFamily: "monospace", fontSize: 14, convertEol: false });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();

  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/dev/${vmid}/console`);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  const sendResize = () => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", rows: term.rows, cols: term.cols }));
  };
  ws.onopen = () => {
    status.textContent = "Connected to the container's shell.";
    sendResize();
    term.focus();
  };
  ws.onmessage = (msg) => {
    if (typeof msg.data === "string") {
      const control = JSON.parse(msg.data);
      if (control.type === "exit") status.textContent = `The shell exited with code ${control.code}.`;
      return;
    }
    term.write(new Uint8Array(msg.data));
  };
  ws.onclose = (ev) => {
    status.textContent = ev.code === 1000 ? "Console closed." : `Console closed (${ev.code}${ev.reason ? ": " + ev.reason : ""}).`;
  };
  term.onData((data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onResize(sendResize);
  const onWindowResize = () => fit.fit();
  window.addEventListener("resize", onWindowResize);
  return () => {
    window.removeEventListener("resize", onWindowResize);
    ws.close(1000);
    term.dispose();
  };
}
