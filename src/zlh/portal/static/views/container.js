import { api } from "../api.js";
import { bytes, confirmDialog, errorBox, h, yesNo } from "../dom.js";
import { consolePanel } from "./console.js";
import { filesPanel } from "./files.js";
import { stateBadge } from "./state.js";
import { tailnetPanel } from "./tailnet.js";

const STEP_WORDS = {
  "dev-user": "Creating the dev user and workspace",
  "runtime-download": "Downloading the runtime",
  "runtime-extract": "Unpacking and verifying the runtime",
  "runtime-activate": "Activating the runtime",
  "addon-download": "Downloading add-ons",
  "addon-install": "Installing add-ons",
  "addon-start": "Starting add-ons",
  ready: "Ready",
};
const FINAL = new Set(["ready", "failed", "deleted"]);

export async function containerView(main, { params, navigate }) {
  const vmid = Number(params[0]);
  const tab = params[1] || "overview";
  const container = await api(`/api/dev/${vmid}`);
  const tabs = ["overview", "files", "console"];
  if (container.addons.includes("tailscale")) tabs.push("tailnet");

  const ideButton = h("a", { class: "button", href: container.idePath, target: "_blank", rel: "noopener", id: "open-ide" }, "Open IDE");
  const badge = h("span", {}, stateBadge(container.state));
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete");
  deleteButton.addEventListener("click", async () => {
    if (!(await confirmDialog(`Delete container #${vmid}? Its workspace is lost.`))) return;
    try {
      await api(`/api/dev/${vmid}`, { method: "DELETE" });
      navigate("/");
    } catch (err) {
      main.append(errorBox(err));
    }
  });
  function setIde(running) {
    ideButton.classList.toggle("disabled", !running);
    ideButton.setAttribute("aria-disabled", running ? "false" : "true");
    ideButton.title = running ? "Open VS Code in a new tab" : "Available once code-server is running";
  }
  ideButton.addEventListener("click", (event) => {
    if (ideButton.getAttribute("aria-disabled") === "true") event.preventDefault();
  });
  setIde(Boolean(container.status && container.status.codeServerRunning));

  main.append(
    h(
      "div",
      { class: "row spread" },
      h("h1", {}, `#${vmid} · ${container.runtime} ${container.version} `, badge),
      h("div", { class: "row" }, ideButton, deleteButton),
    ),
    h(
      "nav",
      { class: "tabs", "aria-label": "Container sections" },
      tabs.map((t) => h("a", { href: `/c/${vmid}/${t}`, "data-link": true, "aria-current": t === tab ? "page" : false }, t[0].toUpperCase() + t.slice(1))),
    ),
  );
  const panel = h("section", { class: "panel" });
  main.append(panel);
  if (tab === "files") return filesPanel(panel, vmid);
  if (tab === "console") return consolePanel(panel, vmid);
  if (tab === "tailnet") return tailnetPanel(panel, vmid);
  return overview(panel, container, { badge, setIde });
}

function statusFields(status) {
  const s = status || {};
  const rows = [
    ["Workspace", s.workspaceRoot || "—"],
    ["Runtime install path", s.runtimeInstallPath || "—"],
    ["Runtime installed", yesNo(s.runtimeInstalled)],
    ["code-server installed", yesNo(s.codeServerInstalled)],
    ["code-server running", yesNo(s.codeServerRunning)],
  ];
  return h("dl", { class: "fields" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function overview(panel, container, { badge, setIde }) {
  const started = Date.parse(container.createdAt);
  const steps = h("ol", { class: "steps", "aria-label": "Provisioning steps" });
  const bar = h("progress", { max: 100, value: 0, "aria-label": "Current step progress" });
  const detail = h("p", { class: "muted", id: "progress-detail" });
  const elapsed = h("p", { class: "muted", id: "elapsed" });
  const failure = h("div", { id: "failure" });
  const fields = h("div", {}, statusFields(container.status));
  panel.append(h("h2", {}, "Provisioning"), steps, bar, detail, elapsed, failure, h("h2", {}, "Status"), fields);

  const seen = new Map();
  function markStep(step, state) {
    if (!step) return;
    for (const [name, li] of seen) if (name !== step && li.dataset.state === "active") li.dataset.state = "done";
    let li = seen.get(step);
    if (!li) {
      li = h("li", { "data-step": step }, STEP_WORDS[step] || step);
      seen.set(step, li);
      steps.append(li);
    }
    li.dataset.state = state;
  }
  function showFailure(message, step) {
    failure.replaceChildren(
      h("div", { class: "error", role: "alert" }, h("strong", {}, "Provisioning failed"), step ? ` at “${STEP_WORDS[step] || step}”` : "", h("p", {}, message || "no reason given")),
    );
  }
  function tick() {
    const secs = Math.max(0, Math.round((Date.now() - started) / 1000));
    elapsed.textContent = `Elapsed ${Math.floor(secs / 60)}m ${secs % 60}s`;
  }
  const timer = setInterval(tick, 1000);
  tick();

  async function refresh() {
    const latest = await api(`/api/dev/${container.vmid}`);
    fields.replaceChildren(statusFields(latest.status));
    setIde(Boolean(latest.status && latest.status.codeServerRunning));
    if (latest.state === "failed") {
      const err = latest.status && latest.status.error;
      showFailure(err ? err.message : latest.error, err ? err.step : null);
      if (err) markStep(err.step, "failed");
    }
  }

  function onEvent(ev) {
    badge.replaceChildren(stateBadge(ev.state));
    const p = ev.progress;
    if (p) {
      markStep(p.step, ev.state === "failed" ? "failed" : "active");
      bar.value = p.percent;
      const amount = p.bytesTotal ? ` · ${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)}` : p.bytesDone ? ` · ${bytes(p.bytesDone)}` : "";
      detail.textContent = `${p.message || STEP_WORDS[p.step] || p.step} · ${Math.round(p.percent)}%${amount}`;
    } else {
      detail.textContent = `State: ${ev.state}`;
    }
    setIde(ev.codeServerRunning);
    if (ev.state === "ready") {
      markStep("ready", "done");
      bar.value = 100;
    }
    if (FINAL.has(ev.state)) {
      clearInterval(timer);
      refresh().catch(() => {});
    }
  }

  const source = new EventSource(`/api/dev/${container.vmid}/events`);
  source.addEventListener("status", (msg) => {
    const ev = JSON.parse(msg.data);
    onEvent(ev);
    if (FINAL.has(ev.state)) source.close();
  });
  source.onerror = () => {
    // The stream ends after ready/failed; a broken stream falls back to one refresh.
    source.close();
    refresh().catch(() => {});
  };
  if (FINAL.has(container.state)) {
    if (container.state === "ready") markStep("ready", "done");
    refresh().catch(() => {});
  }
  return () => {
    source.close();
    clearInterval(timer);
  };
}
