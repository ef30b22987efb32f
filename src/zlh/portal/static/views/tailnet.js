import { api } from "../api.js";
import { copyButton, errorBox, h } from "../dom.js";

export async function tailnetPanel(panel, vmid) {
  const body = h("div");
  panel.append(h("h2", {}, "Tailnet access"), body);

  function show(info) {
    const rows = [
      ["Login server", info.loginServer],
      ["Container host name", info.hostname],
      ["Container tailnet IP", info.containerIp || "not joined yet"],
      ["Key expires", new Date(info.expiresAt).toLocaleString() + (info.expired ? " (expired)" : "")],
    ];
    const key = info.authKey
      ? h("div", { class: "secret" }, h("code", { id: "tailnet-key" }, info.authKey), copyButton(info.authKey, "Copy key"))
      : h("p", { class: "muted" }, `Key ${info.authKeyHint} was shown once. ${info.note}`);
    body.replaceChildren(
      h("p", {}, "Join your own machine to the tailnet once, then reach this container with SSH, VS Code Remote and your own tools."),
      h("dl", { class: "fields" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h3", {}, "Your one-time key"),
      key,
      h("h3", {}, "Run on your machine"),
      h("div", { class: "secret" }, h("code", {}, info.joinCommand), copyButton(info.joinCommand, "Copy command")),
      regenerate,
    );
  }

  const regenerate = h("button", { type: "button" }, "Regenerate key");
  regenerate.addEventListener("click", async () => {
    try {
      show(await api(`/api/dev/${vmid}/tailnet/regenerate`, { method: "POST" }));
    } catch (err) {
      body.append(errorBox(err));
    }
  });
  try {
    show(await api(`/api/dev/${vmid}/tailnet`));
  } catch (err) {
    body.replaceChildren(errorBox(err));
  }
}
