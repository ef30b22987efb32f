"""A replica follows what the others change: ``LISTEN`` on the channels of ``zlh.api.notify``.

One psycopg connection per replica listens; a container's announcement has the registry
re-read that row (announcements arriving together are read in one query) and is handed to the
poller (its share's container, driven by another replica) and a revocation's runs the
revocation sync at once. A replica's own announcements (sent by one of its own database
connections, told by the notification's sender pid) are skipped: its registry delivered the
change as it committed it, and its own components tell each other directly. On every
(re)connect the replica first takes a snapshot -- every container re-read and delivered,
vanished routes dropped, revocations synced -- so whatever was announced while it did not
listen is not lost. A lost connection is retried with a growing back-off; the periodic
revocation sync keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from zlh.api.containers import ContainerRegistry
from zlh.api.notify import CHANNELS, CONTAINERS, REVOCATIONS, announced_vmid
from zlh.errors import ZlhError

__all__ = ["Follower", "libpq_url", "to_thread_to_the_end"]

logger = logging.getLogger(__name__)

# Announced vmids re-read in one query at most: a burst, or a flood some other database role
# sends, is read in rounds of bounded statements (70,000 vmids: 0.5 s here, 2.8 s in one).
REFRESH_BATCH: Final = 1000
MIN_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 30.0
# A dead peer (host gone, no RST) is noticed by TCP keep-alives within about 25 s.
_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


P = ParamSpec("P")
T = TypeVar("T")


async def to_thread_to_the_end(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread``, except that a cancelled caller still waits for the thread (it
    cannot be stopped): the app's shutdown disposes of the database only once no read is
    under way on it."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # seen: the caller is gone, nobody else would look at it
        raise


def libpq_url(sqlalchemy_url: str) -> str:
    """The database URL as libpq takes it (no ``+psycopg`` driver part)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


class Follower:
    """Listens for the other replicas' changes and delivers them to this replica."""

    def __init__(
        self,
        db_url: str,
        *,
        replica: str,
        registry: ContainerRegistry,
        revocations_changed: Callable[[], None],
        container_announced: Callable[[int], None] = lambda _vmid: None,
        resynced: Callable[[], None] = lambda: None,
    ) -> None:
        """``container_announced`` is told every announced vmid as it arrives, ``resynced``
        each snapshot (what this replica may have missed meanwhile), both on the loop."""
        # Seen in pg_stat_activity: an operator (or a test) finds the listener by it.
        self.application_name = f"zlh-follow:{replica}"[:63]
        self._conninfo = make_conninfo(
            libpq_url(db_url), application_name=self.application_name, **_KEEPALIVES
        )
        self._registry = registry
        self._own_backends = registry.db.backend_pids
        self._revocations_changed = revocations_changed
        self._container_announced = container_announced
        self._resynced = resynced
        self._pending: set[int] = set()
        self._kick = asyncio.Event()
        self.connects = 0  # (re)connects that got as far as listening

    async def run(self) -> None:
        """Listen until cancelled, reconnecting; re-reads announced rows alongside."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._refresh_announced(), name="follow-refresh")
            group.create_task(self._listen(), name="follow-listen")

    async def _listen(self) -> None:
        delay = MIN_BACKOFF_S
        while True:
            try:
                await self._listen_once()
            except (psycopg.Error, OSError, SQLAlchemyError, ZlhError) as exc:
                logger.warning(
                    "following the other replicas' changes: %s; listening again in %.1fs",
                    str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__,
                    delay,
                )
            else:
                delay = MIN_BACKOFF_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def _listen_once(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
            for channel in CHANNELS:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            # Listening first, then the snapshot: a change after it is announced to us.
            await to_thread_to_the_end(self._registry.resync)
            self._resynced()
            self._revocations_changed()
            self.connects += 1
            async for note in conn.notifies():
                self._received(note.channel, note.payload, note.pid)

    def _received(self, channel: str, payload: str, sender: int) -> None:
        if channel == REVOCATIONS:
            self._revocations_changed()
        elif sender in self._own_backends:
            return  # this replica's own write: delivered here as it committed, nothing to read
        elif channel == CONTAINERS and (vmid := announced_vmid(payload)) is not None:
            self._pending.add(vmid)
            self._kick.set()
            self._container_announced(vmid)

    async def _refresh_announced(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            vmids = set(itertools.islice(self._pending, REFRESH_BATCH))
            self._pending -= vmids
            if self._pending:
                self._kick.set()  # the rest in the next round
            try:
                await to_thread_to_the_end(self._registry.refresh, vmids)
            except (SQLAlchemyError, ZlhError) as exc:
                logger.warning("re-reading containers %s failed: %s", sorted(vmids)[:5], exc)
                self._pending |= vmids
                await asyncio.sleep(MIN_BACKOFF_S)
                self._kick.set()
