"""Replicas: the API processes sharing one PostgreSQL database, and which containers each polls.

Each process holds a row in ``replicas`` under its name (``ApiSettings.replica_name``) and
refreshes its ``heartbeat_at`` every ``replica_heartbeat_s``; a replica whose heartbeat is older
than ``replica_lease_s`` is dead. Times are the database's clock, so replicas on hosts whose
clocks differ still agree on who is alive. Every heartbeat re-reads the live names, and the next
one comes no later than the moment the first other replica's lease runs out: a dead replica's
containers are taken over one lease after its last heartbeat at the latest. On PostgreSQL a
process that dies (killed, crashed) is seen sooner: each replica holds an advisory lock on a
connection of its own, which PostgreSQL releases the moment the dead process's socket closes,
and a replica seen holding its lock and then not is dead at the next heartbeat. The heartbeat
runs on a thread of its own, so a loop busy with thousands of polls delays neither.

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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, text
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
# Each replica holds the PostgreSQL advisory lock (_LOCK_SPACE, _lock_key(name)) on a connection
# of its own; PostgreSQL drops a session's locks when its connection closes, a killed process's
# at once, so a replica seen holding its lock and then not is dead at the next heartbeat, without
# waiting out its lease (a host that vanishes closes no connection: the lease still applies).
_LOCK_SPACE = 0x7A6C6801
_HELD_LOCKS = text(
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND objsubid = 2 AND classid::bigint = :space"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


# Whether a vmid is this replica's to poll and take up (:meth:`Membership.owns`).
Share = Callable[[int], bool]


def everything(_vmid: int) -> bool:
    """A single node's share: every container."""
    return True


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
class _View:
    """The live names as last read, and the ownership answers computed from them."""

    live: tuple[str, ...]
    lost: bool
    owned: dict[int, bool]


@dataclass(frozen=True)
class _Seen:
    """What one read of the table found: the live names, and when to read it again."""

    live: tuple[str, ...]
    wait_s: float
    holder: str | None = None  # the other process holding this name, when not us
    holder_beat: datetime | None = None
    locks: frozenset[int] | None = None  # the replicas' advisory locks held (None: SQLite)


def _lock_key(name: str) -> int:
    """The second half of ``name``'s advisory lock key (31 bits: pg_locks shows it unsigned)."""
    digest = hashlib.blake2b(f"zlh-replica/{name}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _settle(future: asyncio.Future[None]) -> None:
    """Mark ``future`` done, unless it was cancelled meanwhile."""
    if not future.done():
        future.set_result(None)


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
        self._view = _View((), False, {})
        self._beat_at = 0.0  # monotonic time of the last heartbeat that went through
        self._lock: Connection | None = None  # holds our advisory lock (heartbeat thread)
        self._locked: set[str] = set()  # other replicas seen holding their lock
        # A heartbeat went through after join: replicas that joined at the same moment (their
        # rows not yet visible to our join) are seen. Until then this one leads no duty.
        self._settled = False
        self._settled_event = asyncio.Event()  # set on the loop once _settled is

    @property
    def live(self) -> tuple[str, ...]:
        """The live replicas' names, sorted."""
        return self._view.live

    @property
    def lost(self) -> bool:
        """Another live process holds our name: we poll nothing."""
        return self._view.lost

    def owns(self, vmid: int) -> bool:
        """Whether this replica polls ``vmid`` now."""
        view = self._view
        known = view.owned.get(vmid)
        if known is None:
            known = view.owned[vmid] = not view.lost and owner(vmid, view.live) == self.name
        return known

    def leads(self, duty: str) -> bool:
        """Whether this replica does ``duty``, a platform-wide task exactly one live replica
        does (the warm pool's filling): the one rendezvous hashing of ``duty`` picks. None
        before this replica's first heartbeat after joining: two replicas joining at the same
        moment each see only themselves at first, and both would lead."""
        view = self._view
        return self._settled and not view.lost and owner(duty, view.live) == self.name

    async def settled(self) -> None:
        """Return once a heartbeat after :meth:`join` has gone through (see :meth:`leads`):
        from then on :meth:`owns` counts the replicas that started at the same moment."""
        await self._settled_event.wait()

    # -- driving --------------------------------------------------------------------------------

    async def join(self) -> None:
        """Take this name's row (see the module's docstring); ReplicaNameTaken if a live
        process holds it. Waits at most one lease for a crashed holder's heartbeat to expire."""
        first: datetime | None = None
        while True:
            seen = await asyncio.to_thread(self._beat, claim=True)
            if seen.holder is None:
                self._beat_at = time.monotonic()
                if self._set(seen.live, lost=False):
                    self.on_change()
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
        """Heartbeat until cancelled, on a thread of its own: a loop busy with thousands of
        polls (or a saturated default thread pool) must neither delay our heartbeat, which
        would look like a death to the others, nor our noticing that another one's lease ran
        out. A failing database for over a lease leaves it owning nothing (the others have
        taken its share by then)."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        ended: asyncio.Future[None] = loop.create_future()

        def beats() -> None:
            try:
                while not stop.wait(self._beat_once(loop)):
                    pass
            finally:
                self._unlock()
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_settle, ended)

        thread = threading.Thread(target=beats, name=f"replica-{self.name}-heartbeat", daemon=True)
        thread.start()
        try:
            await asyncio.shield(ended)
        finally:
            stop.set()
            await ended  # the thread ends after the heartbeat under way

    def _beat_once(self, loop: asyncio.AbstractEventLoop) -> float:
        """One heartbeat (on the heartbeat thread); the seconds until the next one."""
        try:
            self._hold_lock()
            seen = self._beat(claim=False)
        except (ZlhError, SQLAlchemyError) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            logger.warning("replica %s: heartbeat failed: %s", self.name, problem)
            if time.monotonic() - self._beat_at > self.lease_s and self._set((), lost=self.lost):
                loop.call_soon_threadsafe(self.on_change)
            return self.heartbeat_s
        self._beat_at = time.monotonic()
        lost = seen.holder is not None
        if lost and not self.lost:
            logger.error(
                "replica name %s was taken over by %s: this process polls nothing until "
                "the name is free; restart it under another --replica name",
                self.name,
                seen.holder,
            )
        settling, self._settled = not self._settled, True
        if self._set(self._alive(seen), lost=lost) or settling:
            loop.call_soon_threadsafe(self.on_change)
        if settling:
            loop.call_soon_threadsafe(self._settled_event.set)
        return seen.wait_s

    def _alive(self, seen: _Seen) -> tuple[str, ...]:
        """The live names less those whose advisory lock went (see ``_LOCK_SPACE``): another
        replica seen holding its lock, or this one when its lock's connection broke (it polls
        nothing until it holds the lock again, as the others count it dead meanwhile)."""
        if seen.locks is None:
            return seen.live
        locked = {name for name in seen.live if _lock_key(name) in seen.locks}
        if self.name not in locked and self._lock is not None:
            self._unlock()  # taken again at the next heartbeat
        self._locked = (self._locked & set(seen.live)) | (locked - {self.name})
        gone = (self._locked - locked) | ({self.name} - locked)
        return tuple(name for name in seen.live if name not in gone)

    def _hold_lock(self) -> None:
        """Take this name's advisory lock on a connection of its own, unless held (PostgreSQL)."""
        if self._lock is not None or self.db.engine.dialect.name != "postgresql":
            return
        connection = self.db.engine.connect()
        try:
            held = connection.scalar(
                text("SELECT pg_try_advisory_lock(:space, :key)"),
                {"space": _LOCK_SPACE, "key": _lock_key(self.name)},
            )
            connection.commit()
        except BaseException:
            connection.close()
            raise
        if held:
            self._lock = connection
        else:
            connection.close()  # another process of this name holds it: _beat says which

    def _unlock(self) -> None:
        """Release the advisory lock: close its database connection for good (one handed back
        to the pool would keep the lock, for whoever gets it next)."""
        if self._lock is not None:
            lock, self._lock = self._lock, None
            try:
                lock.invalidate()
                lock.close()
            except SQLAlchemyError as exc:
                logger.warning("replica %s: closing its lock's connection: %s", self.name, exc)

    async def leave(self) -> None:
        """Delete this process's row (a clean stop): the others take its share at once."""
        await asyncio.to_thread(self._leave)
        if self._set((), lost=False):
            self.on_change()

    # -- the table ------------------------------------------------------------------------------

    def _set(self, live: Sequence[str], *, lost: bool) -> bool:
        """Take the live names (from any thread); whether they changed (the caller then calls
        ``on_change`` on the loop)."""
        live = tuple(sorted(live))
        if live == self.live and lost == self.lost:
            return False
        # One assignment: :meth:`owns` on the loop sees the old view or the new one, never a mix.
        self._view = _View(live, lost, {})
        self.metrics.replicas_live.set(len(live))
        return True

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
                locks = None
                if session.get_bind().dialect.name == "postgresql":
                    found = session.scalars(_HELD_LOCKS, {"space": _LOCK_SPACE})
                    locks = frozenset(int(key) for key in found)
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
        return _Seen(live, max(wait_s, _MIN_WAIT_S), locks=locks)

    def _leave(self) -> None:
        with self.db.session() as session:
            session.execute(
                delete(Replica).where(Replica.name == self.name, Replica.holder == self.holder)
            )
