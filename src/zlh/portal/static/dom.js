// Small DOM helpers: build elements without innerHTML, so API text is never markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

// How a container is called wherever the portal names it: its owner's name, and its vmid.
export function containerLabel(container) {
  return container.name ? `${container.name} (#${container.vmid})` : `#${container.vmid}`;
}

export function yesNo(value) {
  return value ? "yes" : "no";
}

// A card that is one radio button or checkbox: the whole card is its label, the title its
// accessible name and the rest its description.
export function choiceCard({ type, name, value, id, checked, title, badge, lines }) {
  const titleId = `${id}-title`;
  const aboutId = `${id}-about`;
  const input = h("input", { type, name, value, id, checked, "aria-labelledby": titleId, "aria-describedby": aboutId });
  return h(
    "label",
    { class: "choice", for: id },
    input,
    h("span", { class: "choice-head" }, h("span", { class: "choice-title", id: titleId }, title), badge ? h("span", { class: "badge" }, badge) : null),
    h("span", { class: "choice-about", id: aboutId }, lines.filter(Boolean).map((line) => h("span", {}, line))),
  );
}

// A button that copies ``text`` to the clipboard and says so.
export function copyButton(text, label) {
  const button = h("button", { type: "button", class: "secondary small" }, label);
  button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  });
  return button;
}

export function errorBox(err) {
  const text = err && err.describe ? err.describe() : String(err && err.message ? err.message : err);
  return h("p", { class: "error", role: "alert" }, text);
}

// A modal confirmation that resolves true or false; Escape and Cancel say no.
export function confirmDialog(message, confirmLabel = "Delete") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-label": message },
      h("p", {}, message),
      h(
        "form",
        { method: "dialog", class: "row" },
        h("button", { value: "cancel", class: "secondary" }, "Cancel"),
        h("button", { value: "ok", class: "danger" }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// A modal asking for one line of text; resolves the text or null.
export function promptDialog(label, value = "") {
  return new Promise((resolve) => {
    const input = h("input", { type: "text", value, required: true, id: "prompt-input" });
    const dialog = h(
      "dialog",
      { class: "confirm" },
      h(
        "form",
        { method: "dialog" },
        h("label", { for: "prompt-input" }, label),
        input,
        h(
          "div",
          { class: "row" },
          h("button", { value: "cancel", class: "secondary", formnovalidate: true }, "Cancel"),
          h("button", { value: "ok" }, "OK"),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" ? input.value.trim() || null : null);
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    input.select();
  });
}
