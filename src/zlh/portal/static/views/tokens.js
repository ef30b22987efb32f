import { api } from "../api.js";
import { choiceCard, confirmDialog, copyButton, errorBox, h } from "../dom.js";

// The signed-in user's API tokens: list, make (the secret is shown once), revoke.
const SCOPES = [
  ["containers:read", "list and read your containers, follow their events"],
  ["containers:write", "create, stop, start, restart, rebuild, change and delete containers"],
  ["files", "read and change workspace files"],
  ["console", "open a console"],
];
const ADMIN_SCOPES = [
  ["admin", "the operator's routes (audit log)"],
  ["metrics", "read the platform's metrics"],
];

const day = (iso) => (iso ? new Date(iso).toLocaleString() : "never");

export async function tokensView(main, { me }) {
  const created = h("div", { "aria-live": "polite" });
  const list = h("div");
  const status = h("div", { "aria-live": "assertive" });

  async function refresh() {
    const tokens = await api("/api/tokens");
    if (tokens.length === 0) {
      list.replaceChildren(h("p", { class: "muted empty" }, "No API tokens yet."));
      return;
    }
    const head = ["Name", "Scopes", "Created", "Expires", "Last used", ""];
    const rows = tokens.map((t) =>
      h(
        "tr",
        { "data-token": t.name },
        h("td", {}, t.name),
        h("td", {}, t.scopes.join(", ")),
        h("td", { class: "nowrap" }, day(t.createdAt)),
        h("td", { class: "nowrap" }, day(t.expiresAt), t.expired ? " (expired)" : ""),
        h("td", { class: "nowrap" }, day(t.lastUsedAt)),
        h(
          "td",
          { class: "actions" },
          h("button", { type: "button", class: "danger small", "aria-label": `Revoke ${t.name}`, onclick: () => revoke(t) }, "Revoke"),
        ),
      ),
    );
    list.replaceChildren(
      h(
        "div",
        { class: "table-wrap" },
        h("table", { class: "tokens" }, h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
      ),
    );
  }

  async function revoke(token) {
    if (!(await confirmDialog(`Revoke the token “${token.name}”? Programs using it stop working at once.`, "Revoke"))) return;
    status.replaceChildren();
    try {
      await api(`/api/tokens/${token.id}`, { method: "DELETE" });
      created.replaceChildren();
      await refresh();
    } catch (err) {
      status.append(errorBox(err));
    }
  }

  const scopes = [...SCOPES, ...(me.isAdmin ? ADMIN_SCOPES : [])];
  const submit = h("button", { type: "submit" }, "Create token");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "token-new" },
    h("h2", { id: "token-new" }, "New token"),
    h("label", { for: "token-name" }, "Name"),
    h("input", { id: "token-name", name: "name", type: "text", required: true, maxlength: 64, placeholder: "e.g. ci-deploy" }),
    h(
      "fieldset",
      {},
      h("legend", {}, "Scopes"),
      h(
        "div",
        { class: "choices" },
        scopes.map(([scope, words]) =>
          choiceCard({ type: "checkbox", name: "scope", value: scope, id: `scope-${scope.replace(":", "-")}`, title: scope, lines: [words] }),
        ),
      ),
    ),
    h("label", { for: "token-days" }, "Expires in days"),
    h("input", { id: "token-days", name: "days", type: "number", min: 1, value: 30, required: true }),
    status,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren();
    created.replaceChildren();
    const chosen = [...form.querySelectorAll("input[name=scope]:checked")].map((box) => box.value);
    submit.disabled = true;
    try {
      const made = await api("/api/tokens", {
        method: "POST",
        json: { name: form.elements.namedItem("name").value.trim(), scopes: chosen, expiresInDays: Number(form.elements.namedItem("days").value) },
      });
      form.reset();
      created.replaceChildren(
        h(
          "div",
          { class: "notice", role: "status" },
          h("p", {}, `Token “${made.name}” made. Copy it now: it is shown only this once and cannot be shown again.`),
          h("div", { class: "secret" }, h("code", { id: "token-secret" }, made.token), copyButton(made.token, "Copy token")),
          h("p", {}, "Send it as ", h("code", {}, "Authorization: Bearer <token>"), "."),
        ),
      );
      await refresh();
    } catch (err) {
      status.append(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });

  main.append(
    h("h1", {}, "API tokens"),
    h("p", { class: "muted" }, "Tokens let programs use the API as you, limited to the scopes you pick, until they expire or you revoke them. They cannot make or revoke tokens."),
    created,
    list,
    form,
  );
  await refresh();
}
