// The portal: a few views behind a tiny History-API router. No framework, no external fetches.
import { api, ApiError, toLogin } from "./api.js";
import { errorBox, h } from "./dom.js";
import { loginView } from "./views/login.js";
import { dashboardView } from "./views/dashboard.js";
import { newView } from "./views/new.js";
import { containerView } from "./views/container.js";
import { passwordView } from "./views/password.js";
import { tokensView } from "./views/tokens.js";
import { ideView } from "./views/ide.js";

const main = document.getElementById("main");
let cleanup = () => {};
let me = null;
let rendered = false;

const routes = [
  [/^\/login$/, () => loginView],
  [/^\/$/, () => dashboardView],
  [/^\/new$/, () => newView],
  [/^\/password$/, () => passwordView],
  [/^\/tokens$/, () => tokensView],
  [/^\/c\/(\d+)(?:\/(overview|files|console|tailnet))?$/, () => containerView],
  [/^\/c\/(\d+)\/ide$/, () => ideView],
];

export function navigate(path, { replace = false } = {}) {
  // Pages the portal does not draw (the API's docs, an IDE) are loaded by the browser.
  if (!routes.some(([re]) => re.test(new URL(path, location.href).pathname))) {
    if (replace) location.replace(path);
    else location.assign(path);
    return;
  }
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render();
}

async function whoami() {
  try {
    me = await api("/api/auth/me");
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    me = null;
  }
  return me;
}

function renderAccount() {
  const nav = document.getElementById("account");
  nav.replaceChildren();
  if (!me) return;
  nav.append(
    h("span", { class: "muted" }, h("span", { class: "wide" }, "Signed in as "), h("strong", { title: me.username }, me.username), me.isAdmin ? h("span", { class: "wide" }, " · operator") : ""),
    h("a", { href: "/tokens", "data-link": true }, h("span", { class: "wide" }, "API "), "tokens"),
    h("a", { href: "/password", "data-link": true }, "Password"),
    h("button", { class: "secondary", type: "button", onclick: signOut }, "Sign out"),
  );
}

async function signOut() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } finally {
    me = null;
    navigate("/login", { replace: true });
  }
}

async function render() {
  cleanup();
  cleanup = () => {};
  const path = location.pathname;
  const match = routes.find(([re]) => re.test(path));
  main.replaceChildren();
  if (!match) {
    main.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/", "data-link": true }, "Back to your containers")));
    return;
  }
  const view = match[1]();
  const params = path.match(match[0]).slice(1);
  try {
    if (view !== loginView && !(await whoami())) {
      toLogin();
      return;
    }
    renderAccount();
    const result = await view(main, { params, me, navigate });
    if (typeof result === "function") cleanup = result;
    // After an in-app navigation, keyboard and screen-reader users continue in the new view
    // (unless it focused a field itself); a fresh load starts at the top, skip link first.
    if (rendered && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
    rendered = true;
  } catch (err) {
    main.append(errorBox(err));
  }
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || link.target === "_blank") return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", render);
render();
