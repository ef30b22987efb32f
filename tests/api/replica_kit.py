"""Several ``zlh up --backend process --replica NAME`` processes on one PostgreSQL database.

Each replica has its own data dir (its own agents' directories, unix socket, log) and the
first replica's key files, as an operator installs them on every replica: a session token
signed by one is verified by all, and every replica computes the same agent secrets.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from api_kit import PASSWORD, up_env, zlh_up
from support import free_port_pair
from zlh.api import accounts
from zlh.api.db import Database
from zlh.api.keys import load_or_create_key

KEY_FILES = ("jwt.key", "agent.key")


@dataclass
class Replica:
    """One running replica: its name, data dir, public port (the IDE origin is the next one)
    and process (``kill()`` is a kill -9)."""

    name: str
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ide_origin(self) -> str:
        return f"http://127.0.0.1:{self.port + 1}"

    def kill(self) -> None:
        """SIGKILL, no shutdown of any kind."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return (self.data_dir / "up.log").read_text(errors="replace")


def replica_env(data_dir: Path, db_url: str) -> dict[str, str]:
    return {**up_env(data_dir), "ZLH_DATABASE_URL": db_url}


@contextmanager
def replica_up(
    data_dir: Path, store: Path, db_url: str, name: str, *, port: int | None = None
) -> Iterator[Replica]:
    """``zlh up --backend process --replica name`` over ``store`` on ``db_url``; stopped
    (SIGTERM) at the end unless it is gone already."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port_pair()
    env = replica_env(data_dir, db_url)
    with zlh_up(
        data_dir, store, port, extra_args=["--replica", name], env=env, timeout_s=60
    ) as proc:
        yield Replica(name, data_dir, port, proc)


def share_keys(source: Path, dest: Path) -> None:
    """Install ``source``'s key files in ``dest`` (made private), as on a second host."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)
    for name in KEY_FILES:
        shutil.copy2(source / name, dest / name)


def add_users(db_url: str, users: Sequence[tuple[str, bool]]) -> None:
    """(name, admin) users with ``api_kit.PASSWORD`` in the shared database."""
    db = Database(db_url)
    try:
        db.migrate()
        for name, admin in users:
            accounts.create_user(db, name, PASSWORD, admin=admin)
    finally:
        db.dispose()


@contextmanager
def replicas_up(
    base: Path,
    store: Path,
    db_url: str,
    names: Sequence[str] = ("a", "b"),
    *,
    at_once: bool = False,
) -> Iterator[list[Replica]]:
    """Replicas ``names`` (data dirs ``base/<name>``), started one after another: the first
    makes the key files, the others get copies. ``at_once``: the key files made here first,
    and every replica started at the same moment (their start-up work races)."""
    with ExitStack() as stack:
        started: list[Replica] = []
        if at_once:
            first = base / names[0]
            first.mkdir(parents=True, exist_ok=True)
            first.chmod(0o700)
            for key in KEY_FILES:
                load_or_create_key(first / key)
            for name in names[1:]:
                share_keys(first, base / name)
            starts = [replica_up(base / name, store, db_url, name) for name in names]
            with ThreadPoolExecutor(len(starts)) as threads:
                entered = list(threads.map(lambda start: start.__enter__(), starts))
            for start in starts:
                stack.push(start.__exit__)
            yield entered
            return
        for name in names:
            data_dir = base / name
            if started:
                share_keys(started[0].data_dir, data_dir)
            started.append(stack.enter_context(replica_up(data_dir, store, db_url, name)))
        yield started
