"""The container secret the agent accepts, and the file that keeps it across restarts.

The API rotates it (``PUT /token``, authenticated with the current one) when a warm-pool
container is handed to its user: the new secret is written to the token file first (atomically,
0600, durable), then swapped in memory, so from that answer on the old one is refused, also
after the agent restarts.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from zlh.atomic import write_atomically

__all__ = ["AgentToken"]


class AgentToken:
    def __init__(self, secret: str, path: Path | None = None) -> None:
        """``path``: the token file the agent was started with (None: kept in memory only)."""
        if not secret:
            raise ValueError("the agent needs a non-empty secret")
        self.path = path
        self._expected = self._header(secret)

    @staticmethod
    def _header(secret: str) -> bytes:
        return f"Bearer {secret}".encode()

    def accepts(self, authorization: bytes) -> bool:
        """Whether an ``Authorization`` header carries the current secret (constant time)."""
        return hmac.compare_digest(authorization, self._expected)

    def replace(self, secret: str) -> None:
        """Accept ``secret`` instead of the current one (the same one again changes nothing)."""
        header = self._header(secret)
        if hmac.compare_digest(header, self._expected):
            return
        if self.path is not None:
            write_atomically(self.path, secret, mode=0o600, durable=True)
        self._expected = header
