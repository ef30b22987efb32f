"""``GET /ports`` on the agent: the TCP ports listening in the container."""

from __future__ import annotations

from pydantic import Field

from zlh.schemas._base import WireModel

__all__ = ["ListeningPort", "ListeningPorts"]


class ListeningPort(WireModel):
    port: int = Field(ge=1, le=65535)
    # Where it listens: 0.0.0.0 / :: (every address, the front reaches it) or a loopback
    # address (only the container itself reaches it: the dev server needs --host).
    address: str = Field(examples=["0.0.0.0", "127.0.0.1", "::"])


class ListeningPorts(WireModel):
    ports: list[ListeningPort] = Field(description="by port; the platform's own are left out")
