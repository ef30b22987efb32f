import { api } from "../api.js";
import { errorBox, h } from "../dom.js";

// The signed-in user's own password. The API ends every other session of the user.
export async function passwordView(main) {
  const status = h("div", { "aria-live": "assertive" });
  const field = (id, label, autocomplete) => [
    h("label", { for: id }, label),
    h("input", { id, name: id, type: "password", autocomplete, required: true }),
  ];
  const submit = h("button", { type: "submit" }, "Change password");
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "password-title" },
    h("h1", { id: "password-title" }, "Change password"),
    ...field("current", "Current password", "current-password"),
    ...field("new", "New password (at least 8 characters)", "new-password"),
    ...field("confirm", "New password again", "new-password"),
    status,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren();
    const value = (name) => form.elements.namedItem(name).value;
    if (value("new") !== value("confirm")) {
      status.append(h("p", { class: "error", role: "alert" }, "The new passwords differ."));
      return;
    }
    submit.disabled = true;
    try {
      await api("/api/auth/password", { method: "POST", json: { current: value("current"), new: value("new") } });
      form.reset();
      status.append(h("p", { class: "notice", role: "status" }, "Password changed. Your other sessions are signed out."));
    } catch (err) {
      status.append(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
  form.elements.namedItem("current").focus();
}
