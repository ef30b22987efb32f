import { api, safeNext } from "../api.js";
import { errorBox, h } from "../dom.js";

function waitText(seconds) {
  if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  return `${Math.ceil(seconds / 60)} minutes`;
}

export async function loginView(main, { navigate }) {
  const next = safeNext(new URLSearchParams(location.search).get("next") || "/");
  const status = h("div", { "aria-live": "assertive" });
  const username = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = h("input", {
    id: "password", name: "password", type: "password", autocomplete: "current-password", required: true,
  });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("label", { for: "username" }, "User name"),
    username,
    h("label", { for: "password" }, "Password"),
    password,
    status,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren();
    submit.disabled = true;
    try {
      await api("/api/auth/login", { method: "POST", json: { username: username.value, password: password.value } });
      navigate(next, { replace: true });
    } catch (err) {
      if (err.status === 429) {
        // Backed off: the API does not even check passwords from here until the wait is over.
        status.append(h("p", { class: "error", role: "alert" },
          `Too many failed sign-ins from your address. Try again in ${waitText(err.retryAfter)}.`));
        setTimeout(() => { submit.disabled = false; }, err.retryAfter * 1000);
        return;
      }
      status.append(errorBox(err));
      password.select();
    }
    submit.disabled = false;
  });
  main.append(form);
  username.focus();
}
