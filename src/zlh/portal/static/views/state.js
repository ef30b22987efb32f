import { h } from "../dom.js";

const WORDS = {
  requested: "requested",
  creating: "creating the container",
  provisioning: "provisioning",
  ready: "ready",
  failed: "failed",
  unreachable: "agent unreachable",
  deleting: "deleting",
};

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
