// The container page's "Runtime versions" section: the installed versions of its runtime (the
// active one marked), the catalog's other versions with Upgrade/Switch, Remove for inactive
// installed ones, and the install's progress while the agent downloads (the container's SSE).
import { api } from "../api.js";
import { versionSummary } from "../catalog.js";
import { bytes, confirmDialog, errorBox, h } from "../dom.js";

// Versions compared by their numeric parts: "Upgrade" to a newer one, "Switch" to an older one.
function newer(a, b) {
  const pa = a.split(/[^0-9]+/).map(Number);
  const pb = b.split(/[^0-9]+/).map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    if ((pa[i] || 0) !== (pb[i] || 0)) return (pa[i] || 0) > (pb[i] || 0);
  }
  return false;
}

// Renders into `host`; returns the cleanup the router calls when the page goes.
export function runtimesSection(host, container, catalog) {
  const vmid = container.vmid;
  const entry = catalog && catalog.runtimes && catalog.runtimes[container.runtime];
  const offered = entry ? entry.versions : [];
  const list = h("ul", { class: "runtime-versions", id: "runtime-versions", "aria-label": "Runtime versions" });
  const bar = h("progress", { max: 100, value: 0, id: "runtime-progress", hidden: true, "aria-label": "Runtime install progress" });
  const detail = h("p", { class: "muted", id: "runtime-progress-detail" });
  const message = h("div", { id: "runtime-message" });
  host.append(h("section", { id: "runtimes" }, h("h2", {}, "Runtime versions"), list, bar, detail, message));
  let source = null;

  function render(latest) {
    const status = latest.status || {};
    const installed = new Map((status.runtimes || []).filter((r) => r.name === latest.runtime).map((r) => [r.version, r]));
    const active = [...installed.values()].find((r) => r.active);
    const activeVersion = active ? active.version : latest.version;
    const change = status.runtimeChange;
    const busy = Boolean(change && change.state === "installing");
    const versions = [...new Set([...offered.map((v) => v.version), ...installed.keys()])];
    list.replaceChildren(
      ...versions.map((version) => {
        const known = offered.find((v) => v.version === version);
        const isActive = version === activeVersion;
        const row = h(
          "li",
          { class: "row", "data-version": version, "data-state": isActive ? "active" : installed.has(version) ? "installed" : "available" },
          h("strong", {}, `${latest.runtime} ${version}`),
          h("span", { class: "muted" }, known ? versionSummary(latest.runtime, known) : "not in the catalog"),
          isActive ? h("span", { class: "badge", "aria-label": "active version" }, "active") : installed.has(version) ? h("span", { class: "badge" }, "installed") : "",
        );
        if (!isActive && known) {
          const label = newer(version, activeVersion) ? "Upgrade" : "Switch";
          const button = h("button", { type: "button", class: "small", "data-action": "change", disabled: busy }, label);
          button.addEventListener("click", () => change_(version));
          row.append(button);
        }
        if (!isActive && installed.has(version)) {
          const button = h("button", { type: "button", class: "small danger", "data-action": "remove", disabled: busy }, "Remove");
          button.addEventListener("click", () => remove(version));
          row.append(button);
        }
        return row;
      }),
    );
    if (change && change.state === "failed") {
      const why = change.error ? change.error.message : "no reason given";
      message.replaceChildren(h("p", { class: "error", role: "alert", id: "runtime-failure" }, `${latest.runtime} ${change.version} was not installed; ${activeVersion} stays active: ${why}`));
    } else if (change && change.state === "active") {
      message.replaceChildren(h("p", { class: "muted", role: "status" }, `${latest.runtime} ${change.version} is active; new terminals use it.`));
    }
    if (busy) follow();
  }

  function showProgress(p) {
    bar.hidden = false;
    bar.value = p.percent;
    const amount = p.bytesTotal ? ` · ${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)}` : "";
    detail.textContent = `${p.message || p.step} · ${Math.round(p.percent)}%${amount}`;
  }

  async function refresh() {
    render(await api(`/api/dev/${vmid}`));
  }

  // The container's SSE carries the agent's progress while a change installs; it ends after.
  function follow() {
    if (source) return;
    source = new EventSource(`/api/dev/${vmid}/events`);
    const done = () => {
      if (!source) return;
      source.close();
      source = null;
      bar.hidden = true;
      detail.textContent = "";
      refresh().catch((err) => message.replaceChildren(errorBox(err)));
    };
    source.addEventListener("status", (msg) => {
      const ev = JSON.parse(msg.data);
      if (ev.progress && ev.progress.step === "ready") done();
      else if (ev.progress) showProgress(ev.progress);
    });
    // The stream ends once the change is done (or the API went away): read the result.
    source.onerror = done;
  }

  async function change_(version) {
    message.replaceChildren();
    try {
      render(await api(`/api/dev/${vmid}`, { method: "PATCH", json: { runtime: container.runtime, version } }));
    } catch (err) {
      message.replaceChildren(errorBox(err));
    }
  }

  async function remove(version) {
    if (!(await confirmDialog(`Remove ${container.runtime} ${version} from this container?`, "Remove"))) return;
    message.replaceChildren();
    try {
      await api(`/api/dev/${vmid}/runtimes/${container.runtime}/${encodeURIComponent(version)}`, { method: "DELETE" });
      await refresh();
    } catch (err) {
      message.replaceChildren(errorBox(err));
    }
  }

  render(container);
  return () => {
    if (source) source.close();
    source = null;
  };
}
