// Opening an IDE: it lives on an origin of its own (never the portal's), so the portal asks the
// API for a one-time ticket and hands the tab over to the IDE origin, which takes it once and
// sets its own cookie. Signed out, the router sends this page to sign-in and back first.
import { api } from "../api.js";
import { h } from "../dom.js";

export async function ideView(main, { params }) {
  const vmid = Number(params[0]);
  main.append(h("p", { class: "muted", id: "opening-ide" }, `Opening the IDE of #${vmid}…`));
  const { url } = await api(`/api/dev/${vmid}/ide-url`);
  location.replace(url);
}
