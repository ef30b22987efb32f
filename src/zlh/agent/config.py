"""The agent's settings, fixed at start (``zlh agent`` options; tests build them directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zlh.install.download import RetryPolicy

__all__ = ["AgentConfig"]


@dataclass(frozen=True)
class AgentConfig:
    root: Path = Path("/")
    # Where addons listen: 0.0.0.0 inside a container (only the API host can reach it);
    # 127.0.0.1 for the process backend, where "the container" is the host itself.
    bind_host: str = "0.0.0.0"
    # Joined onto relative artifact urls; absolute urls in the payload ignore it.
    artifact_base_url: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # How often supervised addons are health-checked (not a bound on /status latency:
    # /status reports the last result and never waits for a check).
    health_interval_s: float = 2.0
    # How long an addon may take from launch to healthy before provisioning fails.
    addon_start_timeout_s: float = 180.0
    # Fast exits (within fast_exit_s of a start) in a row before a supervisor gives up.
    max_fast_exits: int = 5
    fast_exit_s: float = 10.0
    # File browser uploads larger than this get 413 (the API relays it); not a disk quota.
    max_upload_bytes: int = 1024**3
    # Consoles (login shells) open at once on this agent; one more gets 429.
    max_consoles: int = 8
