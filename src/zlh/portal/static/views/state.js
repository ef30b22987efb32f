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

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, stateWords(state));
}
