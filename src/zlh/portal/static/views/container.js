import { api } from "../api.js";
import { versionSummary } from "../catalog.js";
import { bytes, confirmDialog, containerLabel, errorBox, h, yesNo } from "../dom.js";
import { consolePanel } from "./console.js";
import { filesPanel } from "./files.js";
import { previewsSection } from "./previews.js";
import { runtimesSection } from "./runtimes.js";
import { sharedNotice, sharesSection } from "./shares.js";
import { SETTLED, stateBadge, stateReason, stateWords } from "./state.js";
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
// What each state allows (the API answers 409 otherwise).
const ACTIONS = {
  stop: new Set(["ready", "unreachable", "failed"]),
  restart: new Set(["ready", "unreachable", "failed"]),
  start: new Set(["stopped"]),
  rebuild: new Set(["ready", "unreachable", "failed", "stopped"]),
};
const REBUILD_WARNING =
  "Its system is made afresh from the current template and the runtime and add-ons are installed again. /home/dev (the workspace, dotfiles, code-server settings and extensions) is kept; anything installed elsewhere is lost.";

export async function containerView(main, { params, me, navigate }) {
  const vmid = Number(params[0]);
  const [container, catalog] = await Promise.all([api(`/api/dev/${vmid}`), api("/api/catalog").catch(() => null)]);
  // A user it is shared with: "use" opens the IDE, files and console and may start it; "view"
  // sees its status. Everything else is its owner's (and admins').
  const guest = container.role;
  const tabs = guest === "view" ? ["overview"] : ["overview", "files", "console"];
  if (container.addons.includes("tailscale") && !guest) tabs.push("tailnet");
  const tab = tabs.includes(params[1]) ? params[1] : "overview";

  const ideButton = h("a", { class: "button", href: container.idePath, target: "_blank", rel: "noopener", id: "open-ide" }, "Open IDE");
  const badge = h("span", {}, stateBadge(container.state, container));
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete");
  deleteButton.addEventListener("click", async () => {
    if (!(await confirmDialog(`Delete container ${containerLabel(container)}? Its workspace is lost.`))) return;
    try {
      await api(`/api/dev/${vmid}`, { method: "DELETE" });
      navigate("/");
    } catch (err) {
      main.append(errorBox(err));
    }
  });
  let state = container.state;
  function setIde(running) {
    const opens = running || state === "stopped"; // opening a stopped container starts it
    ideButton.classList.toggle("disabled", !opens);
    ideButton.setAttribute("aria-disabled", opens ? "false" : "true");
    ideButton.title = running ? "Open VS Code in a new tab" : opens ? "Start the container and open VS Code" : "Available once code-server is running";
  }
  ideButton.addEventListener("click", (event) => {
    if (ideButton.getAttribute("aria-disabled") === "true") event.preventDefault();
  });
  setIde(Boolean(container.status && container.status.codeServerRunning));

  // Stop, start and restart; the page follows the container's events until it settles again.
  const reasonLine = h("p", { class: "muted", id: "state-reason" }, stateReason(container));
  const idle = idleNotice();
  const actionError = h("div", { id: "action-error" });
  const buttons = Object.keys(ACTIONS).map((action) => {
    const button = h("button", { type: "button", class: "secondary", id: `${action}-container` }, action[0].toUpperCase() + action.slice(1));
    button.addEventListener("click", async () => {
      actionError.replaceChildren();
      if (action === "rebuild" && !(await confirmDialog(`Rebuild container ${containerLabel(container)}? ${REBUILD_WARNING}`, "Rebuild"))) return;
      try {
        show(await api(`/api/dev/${vmid}/${action}`, { method: "POST" }));
        follow();
      } catch (err) {
        actionError.replaceChildren(errorBox(err));
      }
    });
    return [action, button];
  });
  function showButtons() {
    for (const [action, button] of buttons) button.hidden = !ACTIONS[action].has(state) || (guest && action !== "start") || guest === "view";
  }
  ideButton.hidden = guest === "view";
  deleteButton.hidden = Boolean(guest);
  function show(latest) {
    state = latest.state;
    badge.replaceChildren(stateBadge(latest.state, latest));
    reasonLine.textContent = stateReason(latest);
    showButtons();
    setIde(Boolean(latest.status && latest.status.codeServerRunning) && state === "ready");
    idle.show(latest);
  }
  show(container);
  const listeners = [];
  let source = null;
  function follow() {
    if (source !== null) return;
    source = new EventSource(`/api/dev/${vmid}/events`);
    source.addEventListener("status", (msg) => {
      const ev = JSON.parse(msg.data);
      state = ev.state;
      for (const listen of listeners) listen(ev);
      if (SETTLED.has(ev.state)) {
        source.close();
        source = null;
        if (ev.state !== "deleted") api(`/api/dev/${vmid}`).then(show, (err) => actionError.replaceChildren(errorBox(err)));
      } else {
        showButtons();
        if (ev.stateReason) reasonLine.textContent = stateReason(ev); // its time comes once settled
      }
    });
    // A stream cut before it settled (API restart, proxy): EventSource reconnects by itself.
  }

  if (guest) main.append(sharedNotice(container, me, navigate));
  if (container.adminIdeAccess && !guest) {
    main.append(
      h("p", { class: "notice", id: "admin-ide-access", role: "note" }, "Administrators can open this container's IDE on this platform; each opening is recorded in the audit log."),
    );
  }
  main.append(
    h(
      "div",
      { class: "row spread" },
      h("h1", {}, `${containerLabel(container)} · ${container.runtime} ${container.version} `, badge),
      h("div", { class: "row" }, ideButton, ...buttons.map(([, button]) => button), deleteButton),
    ),
    reasonLine,
    idle.line,
    idle.warning,
    actionError,
    h(
      "nav",
      { class: "tabs", "aria-label": "Container sections" },
      tabs.map((t) => h("a", { href: `/c/${vmid}/${t}`, "data-link": true, "aria-current": t === tab ? "page" : false }, t[0].toUpperCase() + t.slice(1))),
    ),
  );
  const panel = h("section", { class: "panel" });
  main.append(panel);
  // How long until it stops for being idle moves with use elsewhere (the IDE, the console).
  const idleTimer = setInterval(() => {
    if (state === "ready") api(`/api/dev/${vmid}`).then(show, () => {});
  }, 30000);
  const stopFollowing = () => {
    if (source !== null) source.close();
    clearInterval(idleTimer);
  };
  if (!SETTLED.has(container.state)) follow();
  if (tab === "files") return chain(filesPanel(panel, vmid), stopFollowing);
  if (tab === "console") return chain(consolePanel(panel, vmid), stopFollowing);
  if (tab === "tailnet") return chain(tailnetPanel(panel, vmid), stopFollowing);
  const stops = [overview(panel, container, { badge, setIde, toolchain: toolchain(container, catalog), listeners })];
  if (!guest) stops.push(runtimesSection(panel, container, catalog));
  if (guest !== "view") stops.push(previewsSection(panel, vmid, { owner: !guest }));
  if (!guest) sharesSection(panel, container);
  return chain(() => stops.forEach((stop) => stop()), stopFollowing);
}

const ACTIVITY_WORDS = { ide: "IDE", terminal: "terminal input", console: "console input", files: "file browser", preview: "port preview" };
const WARN_MS = 5 * 60 * 1000;

// "Idle for 23 min, stops in 37 min (last activity: terminal input at 14:02)", and a notice
// in the last five minutes; nothing for a container that is not ready or never stops.
function idleNotice() {
  const line = h("p", { class: "muted", id: "idle" });
  const warning = h("div", { id: "idle-warning" });
  function show(c) {
    if (!c.idleStopAt || c.state !== "ready") {
      line.textContent = "";
      warning.replaceChildren();
      return;
    }
    const now = Date.now();
    const last = c.lastActivity;
    const since = Date.parse(last ? last.at : c.stateChangedAt || c.createdAt);
    const left = Date.parse(c.idleStopAt) - now;
    const minutes = (ms) => `${Math.max(0, Math.round(ms / 60000))} min`;
    const what = last ? ` (last activity: ${ACTIVITY_WORDS[last.kind] || last.kind} at ${new Date(last.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })})` : "";
    line.textContent = `Idle for ${minutes(now - since)}, stops in ${minutes(left)}${what}.`;
    warning.replaceChildren(
      left <= WARN_MS
        ? h("p", { class: "notice toast", role: "status" }, `This container stops in ${minutes(left)} for being idle. Type in its IDE or console to keep it running.`)
        : "",
    );
  }
  return { line, warning, show };
}

// A view's clean-up (what a panel returned, if anything) followed by another.
async function chain(cleanup, more) {
  const first = await cleanup;
  return () => {
    if (typeof first === "function") first();
    more();
  };
}

// What the container's runtime version is, in the catalog's words (a dotnet container says
// whether it has Mono or the .NET SDK); the bare name once the catalog no longer lists it.
function toolchain(container, catalog) {
  const entry = catalog && catalog.runtimes && catalog.runtimes[container.runtime];
  const version = entry && entry.versions.find((v) => v.version === container.version);
  return version ? versionSummary(container.runtime, version) : `${container.runtime} ${container.version}`;
}

function statusFields(status, toolchainLine) {
  const s = status || {};
  const rows = [
    ["Runtime", toolchainLine],
    ["Workspace", s.workspaceRoot || "—"],
    ["Runtime install path", s.runtimeInstallPath || "—"],
    ["Runtime installed", yesNo(s.runtimeInstalled)],
    ["code-server installed", yesNo(s.codeServerInstalled)],
    ["code-server running", yesNo(s.codeServerRunning)],
  ];
  return h("dl", { class: "fields" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// The planned steps in order; add-on steps only when the container asked for add-ons.
function plannedSteps(container) {
  return Object.keys(STEP_WORDS).filter((step) => container.addons.length > 0 || !step.startsWith("addon-"));
}

function duration(ms) {
  const secs = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(secs / 60)}m ${secs % 60}s`;
}

function overview(panel, container, { badge, setIde, toolchain: toolchainLine, listeners }) {
  const started = Date.parse(container.createdAt);
  const order = plannedSteps(container);
  const items = new Map(order.map((step) => [step, h("li", { "data-step": step, "data-state": "pending" }, STEP_WORDS[step])]));
  const steps = h("ol", { class: "steps", id: "steps", "aria-label": "Provisioning steps" }, [...items.values()]);
  const bar = h("progress", { max: 100, value: 0, id: "progress", "aria-label": "Current step progress" });
  const detail = h("p", { class: "muted", id: "progress-detail" });
  const elapsed = h("p", { class: "muted", id: "elapsed" });
  const failure = h("div", { id: "failure" });
  const fields = h("div", {}, statusFields(container.status, toolchainLine));
  panel.append(h("h2", {}, "Provisioning"), steps, bar, detail, elapsed, failure, h("h2", {}, "Status"), fields);

  // Steps before `step` are done, `step` itself takes `state`, later ones stay pending.
  function markStep(step, state) {
    if (!items.has(step)) {
      items.set(step, h("li", { "data-step": step }, STEP_WORDS[step] || step));
      order.splice(order.length - 1, 0, step);
      steps.replaceChildren(...order.map((s) => items.get(s)));
    }
    const at = order.indexOf(step);
    order.forEach((s, i) => {
      items.get(s).dataset.state = i < at ? "done" : i === at ? state : "pending";
    });
  }
  function showFailure(message, step) {
    failure.replaceChildren(
      h(
        "div",
        { class: "error", role: "alert" },
        h("strong", {}, "Provisioning failed"),
        step ? ` at the step “${STEP_WORDS[step] || step}”` : "",
        h("p", { id: "failure-reason" }, message || "no reason given"),
      ),
    );
  }
  let timer = null;
  function tick() {
    elapsed.textContent = `Elapsed ${duration(Date.now() - started)}`;
  }
  function stopClock(state) {
    if (timer === null) return;
    clearInterval(timer);
    timer = null;
    const words = { ready: "Ready", failed: "Failed" };
    elapsed.textContent = `${words[state] || "Stopped"} after ${duration(Date.now() - started)}`;
  }
  if (SETTLED.has(container.state) || container.state === "unreachable") {
    elapsed.textContent = `Created ${new Date(started).toLocaleString()}`;
  } else {
    timer = setInterval(tick, 1000);
    tick();
  }

  function showReady() {
    markStep("ready", "done");
    bar.value = 100;
    detail.textContent = "Ready · 100%";
  }

  // Said in words on the page, not only on the badge's hover: what the platform last heard.
  function showUnreachable(latest) {
    failure.replaceChildren(
      h(
        "p",
        { class: "error", id: "unreachable", role: "status" },
        `The platform has not reached this container's agent since ${new Date(latest.updatedAt).toLocaleString()}: ${latest.error || "no answer"}. `,
        "It keeps trying; files, the console and the IDE work again once the agent answers.",
      ),
    );
  }

  function clearUnreachable() {
    if (failure.querySelector("#unreachable")) failure.replaceChildren();
  }

  async function refresh() {
    const latest = await api(`/api/dev/${container.vmid}`);
    badge.replaceChildren(stateBadge(latest.state, latest));
    if (latest.state === "unreachable") showUnreachable(latest);
    else clearUnreachable();
    fields.replaceChildren(statusFields(latest.status, toolchainLine));
    setIde(Boolean(latest.status && latest.status.codeServerRunning));
    if (latest.state === "ready") showReady();
    if (latest.state === "failed") {
      const err = latest.status && latest.status.error;
      showFailure(err ? err.message : latest.error, err ? err.step : null);
      if (err) markStep(err.step, "failed");
      detail.textContent = "";
      bar.hidden = true;
    }
  }

  let runtimeInstalled = Boolean(container.status && container.status.runtimeInstalled);
  function onEvent(ev) {
    // An unreachable badge says since when and why, which the container record has.
    if (ev.state === "unreachable") refresh().catch((err) => failure.replaceChildren(errorBox(err)));
    else {
      badge.replaceChildren(stateBadge(ev.state));
      clearUnreachable();
    }
    if (ev.runtimeInstalled !== runtimeInstalled && !SETTLED.has(ev.state)) {
      // The runtime just landed: show its install path and workspace without waiting for ready.
      runtimeInstalled = ev.runtimeInstalled;
      refresh().catch((err) => failure.replaceChildren(errorBox(err)));
    }
    const p = ev.progress;
    if (p && p.step === "ready") {
      showReady();
      stopClock("ready");
    } else if (p && ev.state !== "ready") {
      markStep(p.step, ev.state === "failed" ? "failed" : "active");
      bar.value = p.percent;
      const amount = p.bytesTotal ? ` · ${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)}` : p.bytesDone ? ` · ${bytes(p.bytesDone)}` : "";
      detail.textContent = `${p.message || STEP_WORDS[p.step] || p.step} · ${Math.round(p.percent)}%${amount}`;
    } else if (!p) {
      detail.textContent = `State: ${stateWords(ev.state)}`;
    }
    setIde(ev.codeServerRunning);
    if (ev.state === "ready") showReady();
    if (SETTLED.has(ev.state)) {
      stopClock(ev.state);
      refresh().catch((err) => failure.replaceChildren(errorBox(err)));
    }
  }

  listeners.push(onEvent);
  return () => {
    if (timer !== null) clearInterval(timer);
  };
}
