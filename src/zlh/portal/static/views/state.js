import { h } from "../dom.js";

const WORDS = {
  requested: "requested",
  creating: "creating the container",
  provisioning: "provisioning",
  ready: "ready",
  failed: "failed",
  unreachable: "agent unreachable",
  stopping: "stopping",
  stopped: "stopped",
  starting: "starting",
  rebuilding: "rebuilding",
  deleting: "deleting",
};

// Where a container's event stream ends: nothing more happens without a new request.
export const SETTLED = new Set(["ready", "failed", "stopped", "deleted"]);

export function stateWords(state) {
  return WORDS[state] || state;
}

// The badge; for a container whose agent stopped answering, also since when, and why on hover
// (the poller's last error).
export function stateBadge(state, container = null) {
  const badge = h("span", { class: `badge state-${state}` }, stateWords(state));
  if (state !== "unreachable" || !container) return badge;
  const since = new Date(container.updatedAt).toLocaleString();
  badge.title = container.error || "the agent does not answer";
  return h("span", {}, badge, h("span", { class: "muted since" }, `since ${since}`));
}

// Why it is in its state and since when: "Stopped by user alice · 3 Dec, 14:02".
export function stateReason(container) {
  if (!container.stateReason) return "";
  const reason = container.stateReason[0].toUpperCase() + container.stateReason.slice(1);
  const at = container.stateChangedAt ? ` · ${new Date(container.stateChangedAt).toLocaleString()}` : "";
  return reason + at;
}
