"""Changes announced to every replica through PostgreSQL ``NOTIFY``.

Replicas of the API share one PostgreSQL database; what one of them changes, the others must
see at once: a container's record (its SSE subscribers, the front's route) and revoked
sessions. A writer calls :func:`announce` inside the transaction that makes the change, so
PostgreSQL sends the notification on commit only (and never for a rolled-back one). The
payload says *what* changed, never *how*: a listener re-reads the row, so a notification sent
by any other database role can make a replica re-read, never believe something false.

On SQLite (one node) :func:`announce` does nothing: the process that writes is the only one
that serves, and delivers its own changes in-process.
"""

from __future__ import annotations

import logging
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

__all__ = ["CHANNELS", "CONTAINERS", "REVOCATIONS", "announce", "announced_vmid"]

logger = logging.getLogger(__name__)

# The vmid of a container whose record changed or was removed.
CONTAINERS: Final = "zlh_containers"
# A session or API token was revoked, or a user disabled (no payload: the set is re-read).
REVOCATIONS: Final = "zlh_revocations"
CHANNELS: Final = (CONTAINERS, REVOCATIONS)
_MAX_VMID = 2**63 - 1


def announce(session: Session, channel: str, payload: str = "") -> None:
    """``pg_notify(channel, payload)`` in ``session``'s transaction: sent when it commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(channel, payload)))


def announced_vmid(payload: str) -> int | None:
    """The vmid a ``zlh_containers`` payload names; None (logged) for anything else."""
    if (
        len(payload) <= 19
        and payload.isascii()
        and payload.isdigit()
        and 0 < int(payload) <= _MAX_VMID
    ):
        return int(payload)
    logger.warning("ignored a %s notification that names no vmid: %.40r", CONTAINERS, payload)
    return None
