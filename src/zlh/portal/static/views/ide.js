// Opening an IDE: it lives on an origin of its own (never the portal's), so the portal asks the
// API for a one-time ticket and hands the tab over to the IDE origin, which takes it once and
// sets its own cookie. Signed out, the router sends this page to sign-in and back first.
// A stopped container is started here first (the IDE origin sends a stopped container's page
// loads here): the page shows its progress and goes on into the IDE once it is ready.
// With ?port=&next= it opens that page of one of the container's port previews instead (the
// portal's Open links, and the IDE origin's way back for a stopped container's preview).
import { api } from "../api.js";
import { errorBox, h } from "../dom.js";
import { SETTLED, stateWords } from "./state.js";

const WAITING = new Set(["requested", "creating", "provisioning", "starting", "stopping", "rebuilding"]);

export async function ideView(main, { params }) {
  const vmid = Number(params[0]);
  let container = await api(`/api/dev/${vmid}`);
  if (container.role === "view") {
    main.append(
      h(
        "p",
        { class: "notice", id: "view-only", role: "note" },
        `${container.owner} shared #${vmid} with you to see its status only: its IDE does not open for you. `,
        h("a", { href: `/c/${vmid}`, "data-link": true }, "Back to the container"),
      ),
    );
    return;
  }
  if (container.state === "stopped" || WAITING.has(container.state)) {
    container = await startAndWait(main, container);
    if (container === null) return;
  }
  const wanted = new URLSearchParams(location.search);
  const preview = wanted.has("port") && wanted.has("next") ? new URLSearchParams({ port: wanted.get("port"), next: wanted.get("next") }) : null;
  const what = preview ? `port ${preview.get("port")} of #${vmid}` : `the IDE of #${vmid}`;
  main.append(h("p", { class: "muted", id: "opening-ide" }, `Opening ${what}…`));
  const { url } = await api(`/api/dev/${vmid}/ide-url${preview ? `?${preview}` : ""}`);
  location.replace(url);
}

// Starts it if it is stopped, then follows its events until it is ready (null if it is not).
async function startAndWait(main, container) {
  const vmid = container.vmid;
  const bar = h("progress", { max: 100, id: "starting-progress", "aria-label": "Start progress" });
  const detail = h("p", { class: "muted", id: "starting-detail" }, stateWords(container.state));
  const failure = h("div", { id: "starting-failure" });
  main.append(
    h(
      "section",
      { class: "panel starting", id: "starting", "aria-live": "polite" },
      h("h1", {}, "Starting your container…"),
      h("p", {}, `#${vmid} was ${container.state === "stopped" ? "stopped" : "not ready yet"}; the IDE opens by itself once it is ready.`),
      bar,
      detail,
      failure,
    ),
  );
  if (container.state === "stopped") {
    try {
      await api(`/api/dev/${vmid}/start`, { method: "POST" });
    } catch (err) {
      failure.replaceChildren(errorBox(err), h("p", {}, h("a", { href: `/c/${vmid}`, "data-link": true }, "Back to the container")));
      return null;
    }
  }
  const last = await new Promise((resolve) => {
    const source = new EventSource(`/api/dev/${vmid}/events`);
    source.addEventListener("status", (msg) => {
      const ev = JSON.parse(msg.data);
      // A started agent still reports its last provisioning as done until it restores.
      const p = ev.progress && ev.progress.step !== "ready" ? ev.progress : null;
      if (p) bar.value = p.percent;
      else bar.removeAttribute("value"); // under way, amount unknown
      detail.textContent = p && p.message ? `${stateWords(ev.state)} · ${p.message}` : `${stateWords(ev.state)}…`;
      if (SETTLED.has(ev.state)) {
        source.close();
        resolve(ev);
      }
    });
  });
  if (last.state === "ready") {
    bar.value = 100;
    return last;
  }
  failure.replaceChildren(
    h("p", { class: "error", role: "alert" }, `The container did not start: ${last.error || stateWords(last.state)}.`),
    h("p", {}, h("a", { href: `/c/${vmid}`, "data-link": true }, "Back to the container")),
  );
  return null;
}
