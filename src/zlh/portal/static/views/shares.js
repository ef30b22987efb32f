// The container page's "Sharing" section, for its owner (and admins): who else may use or view
// it, a form to share it with someone, and "Stop sharing" for each share (their open IDE and
// console close at once). A user it is shared with sees who shared it instead, and may leave.
import { api } from "../api.js";
import { confirmDialog, containerLabel, errorBox, h } from "../dom.js";

export const ROLE_WORDS = {
  use: "can open the IDE, the console and the files",
  view: "can see its status",
};

// Renders into `host`; returns nothing to clean up.
export function sharesSection(host, container) {
  const vmid = container.vmid;
  const list = h("ul", { class: "shares", id: "shares", "aria-label": "Shared with" });
  const message = h("div", { id: "share-message" });
  const user = h("input", { name: "user", id: "share-user", required: true, maxlength: 64, autocomplete: "off" });
  const role = h(
    "select",
    { name: "role", id: "share-role" },
    h("option", { value: "use" }, "Use (IDE, console, files)"),
    h("option", { value: "view" }, "View (status only)"),
  );
  const form = h(
    "form",
    { class: "row", id: "share-form" },
    h("label", { for: "share-user" }, "Share with user"),
    user,
    h("label", { for: "share-role", class: "visually-hidden" }, "Role"),
    role,
    h("button", { type: "submit" }, "Share"),
  );
  host.append(h("section", { id: "sharing" }, h("h2", {}, "Sharing"), list, form, message));

  function render(shares) {
    list.replaceChildren(
      ...(shares.length
        ? shares.map((share) => {
            const stop = h("button", { type: "button", class: "small danger", "data-user": share.user }, "Stop sharing");
            stop.addEventListener("click", async () => {
              if (!(await confirmDialog(`Stop sharing ${containerLabel(container)} with ${share.user}? Their open IDE and console close.`, "Stop sharing"))) return;
              try {
                await api(`/api/dev/${vmid}/shares/${encodeURIComponent(share.user)}`, { method: "DELETE" });
                render(await api(`/api/dev/${vmid}/shares`));
              } catch (err) {
                message.replaceChildren(errorBox(err));
              }
            });
            return h("li", { class: "row", "data-user": share.user }, h("strong", {}, share.user), h("span", { class: "badge" }, share.role), h("span", { class: "muted" }, ROLE_WORDS[share.role]), stop);
          })
        : [h("li", { class: "muted" }, "Not shared with anyone.")]),
    );
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.replaceChildren();
    try {
      const updated = await api(`/api/dev/${vmid}/shares`, { method: "POST", json: { user: user.value.trim(), role: role.value } });
      user.value = "";
      render(updated.shares);
    } catch (err) {
      message.replaceChildren(errorBox(err));
    }
  });
  render(container.shares || []);
}

// For a user the container is shared with: who shared it, what they may do, and "Leave".
export function sharedNotice(container, me, navigate) {
  const leave = h("button", { type: "button", class: "small secondary", id: "leave-share" }, "Leave");
  const message = h("span", {});
  leave.addEventListener("click", async () => {
    if (!(await confirmDialog(`Leave ${containerLabel(container)}? ${container.owner} can share it with you again.`, "Leave"))) return;
    try {
      await api(`/api/dev/${container.vmid}/shares/${encodeURIComponent(me.username)}`, { method: "DELETE" });
      navigate("/");
    } catch (err) {
      message.replaceChildren(errorBox(err));
    }
  });
  return h(
    "p",
    { class: "notice row", id: "shared-by", role: "note" },
    `Shared with you by ${container.owner}: you ${ROLE_WORDS[container.role]}.`,
    leave,
    message,
  );
}
