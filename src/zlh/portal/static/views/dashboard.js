import { api } from "../api.js";
import { h, yesNo } from "../dom.js";
import { stateBadge } from "./state.js";

export async function dashboardView(main, { me }) {
  const containers = await api("/api/dev");
  main.append(
    h(
      "div",
      { class: "row spread" },
      h("h1", {}, me.isAdmin ? "All dev containers" : "Your dev containers"),
      h("a", { href: "/new", class: "button", "data-link": true }, "New dev container"),
    ),
  );
  if (containers.length === 0) {
    main.append(h("p", { class: "muted" }, "No containers yet. Ask for one with “New dev container”."));
    return;
  }
  const head = ["Container", ...(me.isAdmin ? ["Owner"] : []), "Runtime", "State", "Workspace",
    "Runtime install path", "Runtime installed", "code-server"];
  const rows = containers.map((c) => {
    const s = c.status || {};
    return h(
      "tr",
      {},
      h("td", {}, h("a", { href: `/c/${c.vmid}`, "data-link": true }, `#${c.vmid}`)),
      me.isAdmin ? h("td", {}, c.owner) : null,
      h("td", {}, `${c.runtime} ${c.version}`),
      h("td", {}, stateBadge(c.state)),
      h("td", {}, s.workspaceRoot || "—"),
      h("td", {}, h("code", {}, s.runtimeInstallPath || "—")),
      h("td", {}, yesNo(s.runtimeInstalled)),
      h("td", {}, s.codeServerRunning ? "running" : s.codeServerInstalled ? "installed, not running" : "not installed"),
    );
  });
  main.append(
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "containers" }, h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
    ),
  );
}
