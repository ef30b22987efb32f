// How the portal names what the runtime catalog offers.

const RUNTIME_TITLES = { node: "Node.js", python: "Python", go: "Go", java: "Java", dotnet: ".NET / C#" };

export function runtimeTitle(name) {
  return RUNTIME_TITLES[name] || name;
}

// One line saying what a catalog version is: the artifact's `summary` label where the build or
// the operator gave one (it says, say, that a dotnet entry is Mono and not the .NET SDK).
export function versionSummary(runtime, entry) {
  const meta = (entry && entry.artifact && entry.artifact.metadata) || {};
  const labels = meta.labels || {};
  if (labels.summary) return labels.summary;
  return `${runtimeTitle(runtime)} ${meta.upstreamVersion || (entry ? entry.version : "")}`.trim();
}
