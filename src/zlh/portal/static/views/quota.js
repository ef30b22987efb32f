import { h } from "../dom.js";

// How many containers the signed-in user holds and runs, of how many they may
// (max_containers_per_user, max_running_per_user).
export function quotaLine(mine) {
  const full = mine.containersHeld >= mine.containerLimit;
  const busy = mine.containersRunning >= mine.runningLimit;
  return h(
    "p",
    { id: "quota", class: full || busy ? "notice" : "muted" },
    `You hold ${mine.containersHeld} of ${mine.containerLimit} containers`,
    full ? ": delete one to make another" : "",
    `; ${mine.containersRunning} running, at most ${mine.runningLimit} at once`,
    busy && !full ? ": stop one to start another." : ".",
  );
}
