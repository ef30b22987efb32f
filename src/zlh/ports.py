"""The ports inside every container, one constant each (the backends publish them, the payload
and the front target them)."""

from __future__ import annotations

from typing import Final

__all__ = ["AGENT_PORT", "CODE_SERVER_PORT"]

AGENT_PORT: Final = 7100  # the agent's HTTP API (bearer-authenticated)
CODE_SERVER_PORT: Final = 6000  # code-server, run with --auth none: reachable by the host only
