import { api } from "../api.js";
import { bytes, errorBox, h } from "../dom.js";

export async function newView(main, { navigate }) {
  const catalog = await api("/api/catalog");
  const runtimes = Object.entries(catalog.runtimes || {});
  const addons = Object.entries(catalog.addons || {});
  main.append(h("h1", {}, "New dev container"));
  if (runtimes.length === 0) {
    main.append(h("p", { class: "error" }, "The runtime catalog is empty: ask an operator to add runtimes."));
    return;
  }
  const runtime = h("select", { id: "runtime", name: "runtime" }, runtimes.map(([name]) => h("option", { value: name }, name)));
  const version = h("select", { id: "version", name: "version" });
  const details = h("p", { class: "muted", id: "version-details", "aria-live": "polite" });

  function fillVersions() {
    const entry = catalog.runtimes[runtime.value];
    version.replaceChildren(
      ...entry.versions.map((v) =>
        h("option", { value: v.version, selected: v.version === entry.default }, v.version === entry.default ? `${v.version} (default)` : v.version),
      ),
    );
    showDetails();
  }
  function showDetails() {
    const entry = catalog.runtimes[runtime.value];
    const chosen = entry.versions.find((v) => v.version === version.value);
    const meta = (chosen && chosen.artifact.metadata) || {};
    details.textContent = chosen
      ? `Upstream ${meta.upstreamVersion || "unknown"} · ${bytes(chosen.artifact.size)} download · ${meta.source || "source not recorded"}`
      : "";
  }
  runtime.addEventListener("change", fillVersions);
  version.addEventListener("change", showDetails);

  const addonBoxes = addons.map(([name, entry]) => {
    const id = `addon-${name}`;
    return h(
      "div",
      { class: "check" },
      h("input", { type: "checkbox", id, name: "addons", value: name, checked: name === "code-server" }),
      h("label", { for: id }, name, h("span", { class: "muted" }, ` ${entry.default}`)),
    );
  });
  const name = h("input", {
    id: "name",
    name: "name",
    maxlength: "40",
    autocomplete: "off",
    pattern: "[A-Za-z0-9]([A-Za-z0-9 ._\\-]*[A-Za-z0-9])?",
    title: "letters, digits, '.', '_', '-' and spaces inside",
    placeholder: "e.g. shop api",
  });
  const status = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit" }, "Create");
  const form = h(
    "form",
    { class: "card" },
    h("label", { for: "name" }, "Name (optional)"),
    name,
    h("label", { for: "runtime" }, "Runtime"),
    runtime,
    h("label", { for: "version" }, "Version"),
    version,
    details,
    h("fieldset", {}, h("legend", {}, "Add-ons"), addonBoxes.length ? addonBoxes : h("p", { class: "muted" }, "No add-ons in the catalog.")),
    status,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    status.replaceChildren();
    const chosen = [...form.querySelectorAll("input[name=addons]:checked")].map((el) => el.value);
    try {
      const json = { runtime: runtime.value, version: version.value, addons: chosen };
      if (name.value.trim()) json.name = name.value.trim();
      const created = await api("/api/dev", { method: "POST", json });
      navigate(`/c/${created.vmid}`);
    } catch (err) {
      status.append(errorBox(err));
      submit.disabled = false;
    }
  });
  fillVersions();
  main.append(form);
}
