import { api } from "../api.js";
import { runtimeTitle, versionSummary } from "../catalog.js";
import { bytes, choiceCard, errorBox, h } from "../dom.js";
import { quotaLine } from "./quota.js";

export async function newView(main, { navigate }) {
  const [catalog, mine] = await Promise.all([api("/api/catalog"), api("/api/auth/me")]);
  const runtimes = Object.entries(catalog.runtimes || {});
  const addons = Object.entries(catalog.addons || {});
  main.append(h("h1", {}, "New dev container"), quotaLine(mine));
  if (runtimes.length === 0) {
    main.append(h("p", { class: "error" }, "The runtime catalog is empty: ask an operator to add runtimes."));
    return;
  }
  const runtimeCards = runtimes.map(([name, entry], i) =>
    choiceCard({
      type: "radio",
      name: "runtime",
      value: name,
      id: `runtime-${name}`,
      checked: i === 0,
      title: runtimeTitle(name),
      lines: [`${name} · ${entry.versions.length === 1 ? "1 version" : `${entry.versions.length} versions`} · default ${entry.default}`],
    }),
  );
  const versionCards = h("div", { class: "choices", id: "versions" });
  const chosenRuntime = () => main.querySelector("input[name=runtime]:checked").value;

  function fillVersions() {
    const runtime = chosenRuntime();
    const entry = catalog.runtimes[runtime];
    versionCards.replaceChildren(
      ...entry.versions.map((v) => {
        const meta = v.artifact.metadata || {};
        return choiceCard({
          type: "radio",
          name: "version",
          value: v.version,
          id: `version-${v.version}`,
          checked: v.version === entry.default,
          title: v.version,
          badge: v.version === entry.default ? "default" : null,
          lines: [
            versionSummary(runtime, v),
            `Upstream ${meta.upstreamVersion || "unknown"} · ${bytes(v.artifact.size)} download`,
            meta.source || "source not recorded",
          ],
        });
      }),
    );
  }

  const addonCards = addons.map(([name, entry]) => {
    const chosen = entry.versions.find((v) => v.version === entry.default);
    return choiceCard({
      type: "checkbox",
      name: "addons",
      value: name,
      id: `addon-${name}`,
      checked: name === "code-server",
      title: name,
      lines: [chosen ? versionSummary(name, chosen) : entry.default, chosen ? `${bytes(chosen.artifact.size)} download` : null],
    });
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
    { class: "card new-container" },
    h("label", { for: "name" }, "Name (optional)"),
    name,
    h("fieldset", { id: "runtime" }, h("legend", {}, "Runtime"), h("div", { class: "choices" }, runtimeCards)),
    h("fieldset", { id: "version" }, h("legend", {}, "Version"), versionCards),
    h("fieldset", {}, h("legend", {}, "Add-ons"), addonCards.length ? h("div", { class: "choices" }, addonCards) : h("p", { class: "muted" }, "No add-ons in the catalog.")),
    status,
    submit,
  );
  form.addEventListener("change", (event) => {
    if (event.target.name === "runtime") fillVersions();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    status.replaceChildren();
    const chosen = [...form.querySelectorAll("input[name=addons]:checked")].map((el) => el.value);
    const version = form.querySelector("input[name=version]:checked");
    try {
      const json = { runtime: chosenRuntime(), version: version ? version.value : undefined, addons: chosen };
      if (name.value.trim()) json.name = name.value.trim();
      const created = await api("/api/dev", { method: "POST", json });
      navigate(`/c/${created.vmid}`);
    } catch (err) {
      status.append(errorBox(err));
      submit.disabled = false;
    }
  });
  main.append(form);
  fillVersions();
}
