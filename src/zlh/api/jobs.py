"""Jobs: a container's drive -- its provisioning, or a stop, start, restart or rebuild -- as a
row with a lease, so that no replica's death loses it (table ``jobs``, one row per container at
most; :class:`JobKind` says which work it carries).

A dev request (or a lifecycle action) writes its container's new state and its job, held by
the replica that took the request, in one transaction (:meth:`Jobs.hold`). The holder renews
the lease every third of ``job_lease_s`` while it works, and deletes the job when the work has
ended: the container out of the kind's states (:data:`IN_FLIGHT`: provisioning ends ``ready``
or ``failed``, a stop ``stopped``), or gone (a delete removes the job with the container, and a
holder whose renewal finds no row stops). Every replica looks for jobs whose lease ran out (at
start-up also for its own, left by its previous run) and takes one with a conditional UPDATE,
on PostgreSQL after ``SELECT … FOR UPDATE SKIP LOCKED`` (two replicas scanning at once never
lock each other, and never both take one job); SQLite is one node, the conditional UPDATE
suffices.

Every claim gives the job a new ``token``; renewing and finishing need it, so a holder that
lost its job (it stalled past its lease and was taken over) can neither keep nor delete the
new holder's. A claim counts an attempt; a job begun ``job_max_attempts`` times whose drivers
all stopped unfinished is not driven again (:class:`Claim` ``exhausted``): the caller ends the
container failed. Which replica holds a job is the platform's business alone: nothing a
request carries names a holder or a lease.

Lease times are the database's clock (:func:`~zlh.api.db.models.db_now`): every expiry is
written and compared against one clock, so replicas whose hosts' clocks differ still agree on
which leases are live. SQLite is one node; its process's clock is the only one.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zlh.api.db import Container, ContainerState, Database, Job
from zlh.api.db.models import db_now

__all__ = ["IN_FLIGHT", "Claim", "JobKind", "Jobs", "JobsSummary", "read_jobs"]


class JobKind(StrEnum):
    """The work a job carries (zlh.api.lifecycle has the lifecycle ones' state diagram)."""

    PROVISION = "provision"  # requested/creating → created, started, payload accepted → ready
    STOP = "stop"  # stopping → stopped
    START = "start"  # starting → (address recorded, the poller sees the agent) ready
    RESTART = "restart"  # stopping → stopped → starting → ready
    REBUILD = "rebuild"  # rebuilding → creating → provisioning → ready


_S = ContainerState
# The states a job of each kind carries its container through: the job ends once the container
# is in none of them (or gone). A taker of a job whose holder died continues from the state.
IN_FLIGHT: dict[JobKind, frozenset[ContainerState]] = {
    JobKind.PROVISION: frozenset(state for state in _S if state.is_provisioning),
    JobKind.STOP: frozenset({_S.STOPPING}),
    JobKind.START: frozenset({_S.STARTING}),
    JobKind.RESTART: frozenset({_S.STOPPING, _S.STOPPED, _S.STARTING}),
    JobKind.REBUILD: frozenset({_S.REBUILDING, _S.CREATING, _S.PROVISIONING}),
}
# The job a container found in one of these states without a job (left by a version without
# jobs, or work begun outside one) is given at start-up.
_ORPHANS = {
    _S.REQUESTED: JobKind.PROVISION,
    _S.CREATING: JobKind.PROVISION,
    _S.STOPPING: JobKind.STOP,
    _S.STARTING: JobKind.START,
    _S.REBUILDING: JobKind.REBUILD,
}


@dataclass(frozen=True)
class Claim:
    """A job this replica took: do its ``kind`` of work on ``vmid`` holding ``token``; or,
    ``exhausted``, a job begun ``attempts`` times already, now deleted, whose container must
    end failed."""

    vmid: int
    token: str
    attempts: int
    kind: JobKind = JobKind.PROVISION
    exhausted: bool = False


@dataclass(frozen=True)
class JobsSummary:
    """The jobs under way (``zlh doctor``): how many of each kind, and the containers whose
    job's lease ran out over a lease ago: left by a replica that stopped, and taken by none
    (no replica runs on this database, or none can reach it)."""

    kinds: Counter[str]
    stranded: list[int]

    def line(self) -> str:
        if not self.kinds:
            return "none under way"
        each = ", ".join(f"{n} {kind}" for kind, n in sorted(self.kinds.items()))
        return f"{self.kinds.total()} under way ({each})"


def read_jobs(data_dir: Path) -> tuple[JobsSummary, float] | None:
    """The jobs of the platform whose data dir this is and its ``job_lease_s``, read from its
    database; None when it has no database yet. DatabaseError when it cannot be read."""
    from zlh.api.db.engine import read_once
    from zlh.api.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    if (url := settings.existing_db_url) is None:
        return None
    lease = timedelta(seconds=settings.job_lease_s)

    def summary(session: Session) -> JobsSummary:
        now = db_now(session)
        rows = session.execute(select(Job.vmid, Job.kind, Job.lease_expires_at)).all()
        stranded = sorted(vmid for vmid, _, expires in rows if expires < now - lease)
        return JobsSummary(Counter(kind for _, kind, _ in rows), stranded)

    return read_once(url, summary, what="the jobs"), settings.job_lease_s


class Jobs:
    def __init__(self, db: Database, *, holder: str, lease_s: float, max_attempts: int) -> None:
        self.db = db
        self.holder = holder
        self.lease = timedelta(seconds=lease_s)
        self.max_attempts = max_attempts

    @property
    def renew_every_s(self) -> float:
        return self.lease.total_seconds() / 3

    def hold(self, session: Session, vmid: int, kind: JobKind = JobKind.PROVISION) -> str:
        """Make ``vmid``'s job this replica's, fresh (one attempt), in ``session``'s
        transaction; its token. A job it had (a warm-pool build's) is replaced: its holder's
        next renewal fails and it stops."""
        token = secrets.token_hex(16)
        now = db_now(session)
        values = {
            "kind": kind.value,
            "token": token,
            "lease_holder": self.holder,
            "lease_expires_at": now + self.lease,
            "attempts": 1,
        }
        job = session.get(Job, vmid, with_for_update=True)
        if job is None:
            session.add(Job(vmid=vmid, created_at=now, **values))
        else:
            for key, value in values.items():
                setattr(job, key, value)
        session.flush()
        return token

    def hold_now(self, vmid: int) -> str:
        """:meth:`hold` in a transaction of its own."""
        with self.db.session() as session:
            return self.hold(session, vmid)

    def renew(self, vmid: int, token: str) -> bool:
        """Push the lease on; False when the job is no longer this holder's (gone or taken)."""
        with self.db.session() as session:
            changed = session.execute(
                update(Job)
                .where(Job.vmid == vmid, Job.token == token)
                .values(lease_expires_at=db_now(session) + self.lease)
            )
        return bool(changed.rowcount == 1)  # type: ignore[attr-defined]

    def finish(self, vmid: int, token: str) -> None:
        """The work has ended: the job goes (unless another holder has it now)."""
        with self.db.session() as session:
            session.execute(delete(Job).where(Job.vmid == vmid, Job.token == token))

    def drop(self, vmid: int) -> None:
        """Cancel ``vmid``'s job whoever holds it: its holder stops at its next renewal."""
        with self.db.session() as session:
            session.execute(delete(Job).where(Job.vmid == vmid))

    def vmids(self) -> set[int]:
        with self.db.session() as session:
            return set(session.scalars(select(Job.vmid)))

    def get(self, vmid: int) -> Job | None:
        with self.db.session() as session:
            return session.get(Job, vmid)

    def claim_next(self, *, own: bool = False, skip: Iterable[int] = ()) -> Claim | None:
        """Take the oldest job whose lease ran out (``own``: or that this replica's name holds,
        at start-up), but none of ``skip``; None when there is none to take."""
        with self.db.session() as session:
            now = db_now(session)
            free = Job.lease_expires_at < now
            query = (
                select(Job)
                .where(or_(free, Job.lease_holder == self.holder) if own else free)
                .where(Job.vmid.not_in(list(skip)))
                .order_by(Job.created_at, Job.vmid)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            job = session.scalars(query).first()
            if job is None:
                return None
            vmid, attempts, kind = job.vmid, job.attempts, JobKind(job.kind)
            mine = Job.vmid == vmid, Job.token == job.token
            if attempts >= self.max_attempts:
                gone = session.execute(delete(Job).where(*mine))
                if gone.rowcount != 1:  # type: ignore[attr-defined]
                    return None  # SQLite: another connection changed it meanwhile
                return Claim(vmid, job.token, attempts, kind, exhausted=True)
            token = secrets.token_hex(16)
            taken = session.execute(
                update(Job)
                .where(*mine)
                .values(
                    token=token,
                    lease_holder=self.holder,
                    lease_expires_at=now + self.lease,
                    attempts=Job.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return Claim(vmid, token, attempts + 1, kind)

    def adopt_orphans(self) -> list[int]:
        """Give a free job (lease already out) to every container under way without one
        (requested, creating, stopping, starting, rebuilding); their vmids."""
        lonely = (
            select(Container.vmid, Container.state)
            .where(
                Container.state.in_([state.value for state in _ORPHANS]),
                ~exists().where(Job.vmid == Container.vmid),
            )
            .order_by(Container.vmid)
        )
        with self.db.session() as session:
            found = [(vmid, state) for vmid, state in session.execute(lonely)]
        adopted = []
        for vmid, state in found:
            try:
                with self.db.session() as session:
                    now = db_now(session)
                    session.add(
                        Job(
                            vmid=vmid,
                            kind=_ORPHANS[ContainerState(state)].value,
                            token=secrets.token_hex(16),
                            lease_holder=self.holder,
                            lease_expires_at=now - self.lease,
                            # Its drive was begun once before the jobs knew of it.
                            attempts=1,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                continue  # another replica adopted it, or it was deleted meanwhile
            adopted.append(vmid)
        return adopted

    def release(self) -> int:
        """A clean stop hands this replica's jobs back at once (their lease ends now), and
        takes back the attempt each counted: a stop is not a driver that died."""
        with self.db.session() as session:
            changed = session.execute(
                update(Job)
                .where(Job.lease_holder == self.holder)
                .values(lease_expires_at=db_now(session), attempts=Job.attempts - 1)
            )
        return int(changed.rowcount)  # type: ignore[attr-defined]
