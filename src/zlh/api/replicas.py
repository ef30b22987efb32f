"""Replicas: the API processes sharing one PostgreSQL database, and which containers each polls.

Each process holds a row in ``replicas`` under its name (``ApiSettings.replica_name``) and
refreshes its ``heartbeat_at`` every ``replica_heartbeat_s``; a replica whose heartbeat is older
than ``replica_lease_s`` is dead. Times are the database's clock, so replicas on hosts whose
clocks differ still agree on who is alive. Every heartbeat re-reads the live names, and the next
one comes no later than the moment the first other replica's lease runs out: a dead replica's
containers are taken over one lease after its last heartbeat.

A container belongs to the live replica that rendezvous (highest-random-weight) hashing of its
vmid picks: every replica computes the same owner from the same names, and a replica joining or
leaving moves only the containers it takes or gave up (about 1/N of them).

Two processes under one name would each believe that name's share is theirs. ``holder``
(host, pid and a random tag) tells them apart: :meth:`Membership.join` takes a name only when
its row is free, its heartbeat expired, or its holder was a process of this host that no longer
exists; while another holder keeps heartbeating it raises :class:`ReplicaNameTaken`. A replica
that finds its name taken over later (it stalled past its lease and another process took the
name) polls nothing and says so in the log, until the name is free again.

SQLite is one node: no membership at all, the poller polls everything (see
:func:`zlh.api.app.build_services`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from zlh.api.db import Database, Replica
from zlh.api.db.models import db_now
from zlh.api.metrics import Metrics
from zlh.errors import ZlhError

__all__ = ["Membership", "ReplicaNameTaken", "owner"]

logger = logging.getLogger(__name__)

# Rows of replicas dead this long are deleted (a renamed or retired replica leaves no litter).
_FORGET_AFTER = timedelta(days=1)
# A heartbeat is never scheduled sooner than this (a lease about to run out is re-read then).
_MIN_WAIT_S = 0.05


class ReplicaNameTaken(ZlhError):
    """Another live process holds this replica name."""


def owner(vmid: int | str, names: Sequence[str]) -> str | None:
    """The replica among ``names`` that polls ``vmid`` (rendezvous hashing); None if none.
    A string key names a platform-wide duty instead (:meth:`Membership.leads`)."""
    best, best_weight = None, -1
    for name in names:
        digest = hashlib.blake2b(f"{name}/{vmid}".encode(), digest_size=8).digest()
        weight = int.from_bytes(digest, "big")
        if weight > best_weight:
            best, best_weight = name, weight
    return best


@dataclass(frozen=True)
class _Seen:
    """What one read of the table found: the live names, and when to read it again."""

    live: tuple[str, ...]
    wait_s: float
    holder: str | None = None  # the other process holding this name, when not us
    holder_beat: datetime | None = None


def _gone(holder: str) -> bool:
    """A holder that was a process of this host which no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Membership:
    """This process's row in ``replicas``: joined, heartbeated, left; the live names and
    :meth:`owns` for the poller. ``on_change`` is called when the live names change (the
    poller's wake-up: it reloads its share at once)."""

    def __init__(
        self,
        db: Database,
        *,
        name: str,
        heartbeat_s: float,
        lease_s: float,
        on_change: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.metrics = metrics or Metrics()
        self.name = name
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.on_change = on_change
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.live: tuple[str, ...] = ()
        self.lost = False  # another live process holds our name: we poll nothing
        self._owned: dict[int, bool] = {}
        self._beat_at = 0.0  # monotonic time of the last heartbeat that went through

    def owns(self, vmid: int) -> bool:
        """Whether this replica polls ``vmid`` now."""
        known = self._owned.get(vmid)
        if known is None:
            known = self._owned[vmid] = not self.lost and owner(vmid, self.live) == self.name
        return known

    def leads(self, duty: str) -> bool:
        """Whether this replica does ``duty``, a platform-wide task exactly one live replica
        does (the warm pool's filling): the one rendezvous hashing of ``duty`` picks."""
        return not self.lost and owner(duty, self.live) == self.name

    # -- driving --------------------------------------------------------------------------------

    async def join(self) -> None:
        """Take this name's row (see the module's docstring); ReplicaNameTaken if a live
        process holds it. Waits at most one lease for a crashed holder's heartbeat to expire."""
        first: datetime | None = None
        while True:
            seen = await asyncio.to_thread(self._beat, claim=True)
            if seen.holder is None:
                self._beat_at = time.monotonic()
                self._set(seen.live, lost=False)
                logger.info("replica %s joined; live replicas: %s", self.name, ", ".join(seen.live))
                return
            if first is None:
                first = seen.holder_beat
            elif seen.holder_beat != first:
                raise ReplicaNameTaken(
                    f"replica name {self.name!r} is held by a live process ({seen.holder}): "
                    "give this process another --replica name",
                )
            await asyncio.sleep(seen.wait_s)

    async def run(self) -> None:
        """Heartbeat until cancelled; a failing database for over a lease leaves it owning
        nothing (the others have taken its share by then)."""
        while True:
            wait_s = self.heartbeat_s
            try:
                seen = await asyncio.to_thread(self._beat, claim=False)
            except (ZlhError, SQLAlchemyError) as exc:
                problem = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
                logger.warning("replica %s: heartbeat failed: %s", self.name, problem)
                if time.monotonic() - self._beat_at > self.lease_s:
                    self._set((), lost=self.lost)
            else:
                self._beat_at = time.monotonic()
                lost = seen.holder is not None
                if lost and not self.lost:
                    logger.error(
                        "replica name %s was taken over by %s: this process polls nothing until "
                        "the name is free; restart it under another --replica name",
                        self.name,
                        seen.holder,
                    )
                self._set(seen.live, lost=lost)
                wait_s = seen.wait_s
            await asyncio.sleep(wait_s)

    async def leave(self) -> None:
        """Delete this process's row (a clean stop): the others take its share at once."""
        await asyncio.to_thread(self._leave)
        self._set((), lost=False)

    # -- the table ------------------------------------------------------------------------------

    def _set(self, live: Sequence[str], *, lost: bool) -> None:
        live = tuple(sorted(live))
        if live == self.live and lost == self.lost:
            return
        self.live, self.lost = live, lost
        self._owned.clear()
        self.metrics.replicas_live.set(len(live))
        self.on_change()

    def _beat(self, *, claim: bool) -> _Seen:
        """One heartbeat in one transaction: refresh (or, with ``claim``, take) our row, then
        read the live names. ``holder`` set in the answer: someone else holds our name."""
        lease = timedelta(seconds=self.lease_s)
        try:
            with self.db.session() as session:
                now = db_now(session)
                row = session.get(Replica, self.name, with_for_update=True)
                other: Replica | None = None
                if row is None:
                    session.add(
                        Replica(
                            name=self.name, holder=self.holder, heartbeat_at=now, started_at=now
                        )
                    )
                elif row.holder == self.holder:
                    row.heartbeat_at = now
                elif row.heartbeat_at <= now - lease or _gone(row.holder):
                    if not claim:
                        logger.warning(
                            "replica %s: taking back its name from %s", self.name, row.holder
                        )
                    row.holder, row.heartbeat_at, row.started_at = self.holder, now, now
                else:
                    other = row
                session.flush()
                session.execute(delete(Replica).where(Replica.heartbeat_at < now - _FORGET_AFTER))
                rows = session.execute(
                    select(Replica.name, Replica.heartbeat_at).where(
                        Replica.heartbeat_at > now - lease
                    )
                ).all()
        except IntegrityError:
            # Another process inserted this name first: it is a holder like any other.
            return self._beat(claim=claim)
        expiries = [
            (beat + lease - now).total_seconds() for name, beat in rows if name != self.name
        ]
        wait_s = min([self.heartbeat_s, *(e + _MIN_WAIT_S for e in expiries)])
        live = tuple(name for name, _ in rows)
        if other is not None:
            # Re-read after its next heartbeat would have come, or when its lease runs out.
            until_expiry = (other.heartbeat_at + lease - now).total_seconds()
            wait_s = min(self.heartbeat_s * 1.5, until_expiry + _MIN_WAIT_S)
            return _Seen(live, max(wait_s, _MIN_WAIT_S), other.holder, other.heartbeat_at)
        return _Seen(live, max(wait_s, _MIN_WAIT_S))

    def _leave(self) -> None:
        with self.db.session() as session:
            session.execute(
                delete(Replica).where(Replica.name == self.name, Replica.holder == self.holder)
            )
