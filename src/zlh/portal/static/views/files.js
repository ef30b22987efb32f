import { api, upload } from "../api.js";
import { bytes, confirmDialog, errorBox, h, promptDialog, when } from "../dom.js";

function join(dir, name) {
  return dir ? `${dir}/${name}` : name;
}

export async function filesPanel(panel, vmid) {
  const base = `/api/dev/${vmid}/files`;
  let dir = new URLSearchParams(location.search).get("path") || "";
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Folder" });
  const messages = h("div", { "aria-live": "polite" });
  const list = h("div", { class: "table-wrap" });
  const uploads = h("ul", { class: "uploads", "aria-label": "Uploads" });
  const picker = h("input", { type: "file", id: "upload-input", multiple: true, class: "visually-hidden" });
  const drop = h(
    "div",
    { class: "drop", id: "drop-zone", tabindex: 0, role: "button", "aria-label": "Upload files: drop them here or press Enter to choose" },
    "Drop files here to upload, or ",
    h("label", { for: "upload-input", class: "link" }, "choose files"),
    picker,
  );
  const newFolder = h("button", { type: "button", class: "secondary" }, "New folder");
  panel.append(h("div", { class: "row spread" }, crumbs, newFolder), messages, drop, uploads, list);

  function show(err) {
    messages.replaceChildren(errorBox(err));
  }

  async function load() {
    messages.replaceChildren();
    let listing;
    try {
      listing = await api(`${base}?path=${encodeURIComponent(dir)}`);
    } catch (err) {
      list.replaceChildren();
      show(err);
      return;
    }
    const parts = dir ? dir.split("/") : [];
    crumbs.replaceChildren(
      h("button", { type: "button", class: "crumb", onclick: () => go("") }, "workspace"),
      ...parts.flatMap((part, i) => ["/", h("button", { type: "button", class: "crumb", onclick: () => go(parts.slice(0, i + 1).join("/")) }, part)]),
    );
    const rows = listing.entries.map((e) => {
      const path = join(dir, e.name);
      const name =
        e.type === "dir"
          ? h("button", { type: "button", class: "link", onclick: () => go(path) }, `${e.name}/`)
          : e.type === "symlink"
            ? h("span", {}, e.name, h("span", { class: "muted" }, e.target ? ` → ${e.target}` : " → (outside the workspace)"))
            : h("a", { href: `${base}/content?path=${encodeURIComponent(path)}`, download: e.name }, e.name);
      return h(
        "tr",
        { "data-name": e.name },
        h("td", {}, name),
        h("td", { class: "num" }, e.type === "file" ? bytes(e.size) : "—"),
        h("td", {}, when(e.mtime)),
        h(
          "td",
          { class: "actions" },
          h("button", { type: "button", class: "secondary small", "aria-label": `Rename ${e.name}`, onclick: () => rename(path, e.name) }, "Rename"),
          h("button", { type: "button", class: "danger small", "aria-label": `Delete ${e.name}`, onclick: () => remove(path, e) }, "Delete"),
        ),
      );
    });
    list.replaceChildren(
      rows.length
        ? h("table", { class: "files" }, h("thead", {}, h("tr", {}, ["Name", "Size", "Modified", ""].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))
        : h("p", { class: "muted empty" }, "This folder is empty."),
    );
  }

  function go(path) {
    dir = path;
    const url = new URL(location.href);
    if (dir) url.searchParams.set("path", dir);
    else url.searchParams.delete("path");
    history.replaceState(null, "", url);
    load();
  }

  async function rename(path, name) {
    const next = await promptDialog(`New name for ${name}`, name);
    if (!next || next === name) return;
    try {
      await api(`${base}/move`, { method: "POST", json: { source: path, destination: join(dir, next) } });
      load();
    } catch (err) {
      show(err);
    }
  }

  async function remove(path, entry) {
    const what = entry.type === "dir" ? `the folder ${entry.name} and everything in it` : entry.name;
    if (!(await confirmDialog(`Delete ${what}?`))) return;
    try {
      const recursive = entry.type === "dir" ? "&recursive=true" : "";
      await api(`${base}?path=${encodeURIComponent(path)}${recursive}`, { method: "DELETE" });
      load();
    } catch (err) {
      show(err);
    }
  }

  async function sendFiles(files) {
    for (const file of files) {
      const bar = h("progress", { max: 100, value: 0, "aria-label": `Uploading ${file.name}` });
      const item = h("li", {}, `${file.name} `, bar);
      uploads.append(item);
      try {
        await upload(`${base}/content?path=${encodeURIComponent(join(dir, file.name))}`, file, (done, total) => {
          bar.value = total ? (100 * done) / total : 0;
        });
        item.replaceChildren(`${file.name} uploaded (${bytes(file.size)})`);
      } catch (err) {
        item.replaceChildren(errorBox(err));
      }
    }
    load();
  }

  newFolder.addEventListener("click", async () => {
    const name = await promptDialog("Folder name");
    if (!name) return;
    try {
      await api(`${base}/mkdir`, { method: "POST", json: { path: join(dir, name) } });
      load();
    } catch (err) {
      show(err);
    }
  });
  picker.addEventListener("change", () => sendFiles([...picker.files]).finally(() => (picker.value = "")));
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      picker.click();
    }
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    sendFiles([...e.dataTransfer.files]);
  });
  await load();
}
