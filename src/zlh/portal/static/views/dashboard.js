import { api } from "../api.js";
import { containerLabel, h, yesNo } from "../dom.js";
import { quotaLine } from "./quota.js";
import { stateBadge, stateReason } from "./state.js";

export async function dashboardView(main, { me }) {
  const [containers, mine, pool] = await Promise.all([
    api("/api/dev"),
    api("/api/auth/me"),
    me.isAdmin ? api("/api/pool") : null,
  ]);
  main.append(
    h(
      "div",
      { class: "row spread" },
      h("h1", {}, me.isAdmin ? "All dev containers" : "Your dev containers"),
      h("a", { href: "/new", class: "button", "data-link": true }, "New dev container"),
    ),
    quotaLine(mine),
    pool ? poolLine(pool) : "",
  );
  if (containers.length === 0) {
    main.append(h("p", { class: "muted" }, "No containers yet. Ask for one with “New dev container”."));
    return;
  }
  // Columns marked "detail" give way on narrow screens; the container page shows them all.
  const head = [["Container"], ...(me.isAdmin ? [["Owner"]] : []), ["Runtime"], ["State"], ["Workspace", "detail"],
    ["Runtime install path", "detail"], ["Runtime installed", "detail"], ["code-server", "detail"], ["IDE"]];
  const rows = containers.map((c) => {
    const s = c.status || {};
    return h(
      "tr",
      {},
      h(
        "td",
        {},
        // A warm-pool container is nobody's: no page to open until a request takes it.
        c.pool ? containerLabel(c) : h("a", { href: `/c/${c.vmid}`, "data-link": true }, containerLabel(c)),
        c.pool ? h("span", { class: "badge pool", title: "Provisioned ahead of demand; the next matching request takes it" }, "warm pool") : "",
        c.role ? h("span", { class: "badge shared", title: `${c.owner} shared it with you (${c.role})` }, `shared by ${c.owner}`) : "",
      ),
      me.isAdmin ? h("td", {}, c.owner) : null,
      h("td", { class: "nowrap" }, `${c.runtime} ${c.version}`),
      h("td", { class: "nowrap", title: stateReason(c) }, stateBadge(c.state, c)),
      h("td", { class: "detail" }, h("code", {}, s.workspaceRoot || "—")),
      h("td", { class: "detail" }, h("code", {}, s.runtimeInstallPath || "—")),
      h("td", { class: "detail" }, yesNo(s.runtimeInstalled)),
      h("td", { class: "detail" }, s.codeServerRunning ? "running" : s.codeServerInstalled ? "installed, not running" : "not installed"),
      h(
        "td",
        { class: "nowrap" },
        !c.pool && c.role !== "view" && ((c.state === "ready" && s.codeServerRunning) || c.state === "stopped")
          ? h(
              "a",
              { href: c.idePath, class: "button small", target: "_blank", rel: "noopener", "aria-label": `Open the IDE of ${containerLabel(c)}`, title: c.state === "stopped" ? "Starts the container first" : "" },
              c.state === "stopped" ? "Start and open IDE" : "Open IDE",
            )
          : "",
      ),
    );
  });
  main.append(
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "containers" }, h("thead", {}, h("tr", {}, head.map(([t, cls]) => h("th", { scope: "col", class: cls }, t)))), h("tbody", {}, rows)),
    ),
  );
}

// Admins: the containers kept ready ahead of demand, and what they cost.
function poolLine(pool) {
  if (pool.wanted === 0 && pool.ready + pool.building === 0) {
    return h("p", { class: "muted", "data-pool": "" }, "Warm pool: off.");
  }
  const building = pool.building ? `, ${pool.building} being built` : "";
  return h(
    "p",
    { class: "muted", "data-pool": "" },
    `Warm pool: ${pool.ready} ready of ${pool.wanted} wanted${building}, ${pool.memoryMb} MB of memory.`,
  );
}
