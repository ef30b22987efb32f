// Port previews on the container's page: the ports listening in it (asked of its agent), each
// with Open links in both modes (prefix stripped: the app sees "/"; prefix kept: it sees
// /dev/<vmid>/port/<port>/) and the public toggle. Links go through the portal's IDE page,
// which fetches a one-time ticket for the preview (it lives on the IDE origin).
import { api } from "../api.js";
import { errorBox, h } from "../dom.js";

// `owner`: its owner (or an admin) may make previews public; a user it is shared with only opens.
export function previewsSection(panel, vmid, { owner = true } = {}) {
  const list = h("div", { id: "previews" });
  const refresh = h("button", { type: "button", class: "secondary", id: "refresh-previews" }, "Refresh");
  panel.append(
    h("div", { class: "row spread" }, h("h2", {}, "Port previews"), refresh),
    h("p", { class: "muted" }, owner ? "Web servers running in the container, on the IDE's origin. Only you (and those you share it with) can open them unless you make one public." : "Web servers running in the container, on the IDE's origin."),
    list,
  );
  async function load() {
    try {
      show(await api(`/api/dev/${vmid}/ports`));
    } catch (err) {
      list.replaceChildren(errorBox(err));
    }
  }
  function show({ running, previews }) {
    if (previews.length === 0) {
      list.replaceChildren(h("p", { class: "muted", id: "no-previews" }, running ? "Nothing listens on a previewable port (1024–65535) yet." : "Start the container to see its ports."));
      return;
    }
    const rows = previews.map((p) => row(p));
    // A narrow screen scrolls the table, not the page.
    list.replaceChildren(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "previews" },
          h("thead", {}, h("tr", {}, h("th", {}, "Port"), h("th", {}, "Listening on"), h("th", {}, "Open"), h("th", {}, "Public"))),
          h("tbody", {}, rows),
        ),
      ),
    );
  }
  function row(p) {
    const error = h("span", {});
    const toggle = h("button", { type: "button", class: "secondary", "data-port": p.port }, p.public ? "Make private" : "Make public");
    toggle.addEventListener("click", async () => {
      try {
        await api(`/api/dev/${vmid}/previews/${p.port}/public`, { method: p.public ? "DELETE" : "PUT" });
        await load();
      } catch (err) {
        error.replaceChildren(errorBox(err));
      }
    });
    const where = !p.listening ? "not listening" : p.reachable ? p.address : `${p.address} only: start it with --host 0.0.0.0`;
    return h(
      "tr",
      { "data-port": p.port },
      h("td", {}, String(p.port)),
      h("td", { class: p.listening && !p.reachable ? "error" : "muted" }, where),
      h("td", {}, opener(p.port, p.url, "Open", "prefix stripped: the app sees /"), " ", opener(p.port, p.urlKeepPrefix, "Open with prefix", `prefix kept: the app sees /dev/${vmid}/port/${p.port}/`)),
      h(
        "td",
        {},
        p.public ? h("span", { class: "badge public", title: p.url }, "public") : "",
        " ",
        owner ? toggle : "",
        p.public ? h("a", { href: p.url, class: "muted share", target: "_blank", rel: "noopener" }, " link") : "",
        error,
      ),
    );
  }
  function opener(port, url, label, title) {
    const target = new URL(url);
    const query = new URLSearchParams({ port: String(port), next: target.pathname + target.search });
    return h("a", { class: "button", href: `/c/${vmid}/ide?${query}`, target: "_blank", rel: "noopener", title }, label);
  }
  refresh.addEventListener("click", load);
  load();
  return () => {};
}
