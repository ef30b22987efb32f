"""`zlh up` keeps the data dir to itself: another local user can read none of it.

Checked the way it matters: as ``nobody`` (uid 65534, via ``setpriv``), every file of the data
dir (database with its -wal and -shm, key files, the log, settings, the admin password) fails
to open, while a file outside it with the same old mode opens. The data dir sits under a world
traversable parent, as ``/var/lib/zlh`` does.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_kit import PASSWORD
from support import ZLH, free_port_pair, wait_for_port, zlh

pytestmark = [pytest.mark.root, pytest.mark.slow]

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
FAST_ENV = {
    "ZLH_ARGON2_TIME_COST": "1",
    "ZLH_ARGON2_MEMORY_KIB": "64",
    "ZLH_ARGON2_PARALLELISM": "1",
}


@pytest.fixture
def world_traversable() -> Iterator[Path]:
    """A 0755 directory: only the data dir's own modes keep others out below it."""
    path = Path(tempfile.mkdtemp(prefix="zlh-datadir-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, check=False)


def old_install(data_dir: Path) -> None:
    """What an older install has: everything 0644 in a 0755 data dir."""
    data_dir.mkdir()
    data_dir.chmod(0o755)
    (data_dir / "run").mkdir(mode=0o755)
    (data_dir / "run").chmod(0o755)
    files = {
        "jwt.key": os.urandom(32).hex() + "\n",
        "api.toml": "session_ttl_s = 3600\n",
        "admin-password": "hunter2hunter2\n",
        "zlh-up.log": "an old run\n",
    }
    for name, text in files.items():
        (data_dir / name).write_text(text)
        (data_dir / name).chmod(0o644)


def test_after_zlh_up_no_file_of_the_data_dir_is_readable_by_another_user(
    world_traversable: Path,
) -> None:
    control = world_traversable / "control.txt"
    control.write_text("anyone may read this\n")
    control.chmod(0o644)
    assert as_nobody("cat", str(control)).returncode == 0  # the check can see a readable file

    data_dir = world_traversable / "zlh"
    old_install(data_dir)
    env = {**os.environ, **FAST_ENV, "ZLH_DATA_DIR": str(data_dir)}
    port = free_port_pair()
    with (data_dir / "zlh-up.log").open("ab") as log:
        proc = subprocess.Popen(
            [*ZLH, "up", "--backend", "process", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        zlh("user", "add", "alice", "--password-stdin", input=PASSWORD + "\n", env=env)
        login = httpx.post(
            f"http://127.0.0.1:{port}/api/auth/login",
            json={"username": "alice", "password": PASSWORD},
        )
        assert login.status_code == 200, login.text  # a session written: the WAL is in use
        files = sorted(p for p in data_dir.rglob("*") if p.is_file() and not p.is_symlink())
        names = {p.relative_to(data_dir).as_posix() for p in files}
        for expected in ("zlh.db", "zlh.db-wal", "zlh.db-shm", "jwt.key", "agent.key"):
            assert expected in names
        assert {"zlh-up.log", "api.toml", "admin-password"} <= names

        listing = as_nobody("ls", str(data_dir))
        assert listing.returncode != 0 and "Permission denied" in listing.stderr
        for path in files:
            read = as_nobody("cat", str(path))
            assert read.returncode != 0, f"nobody read {path}"
            assert "Permission denied" in read.stderr, read.stderr
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        for directory in [data_dir, *(p for p in data_dir.rglob("*") if p.is_dir())]:
            assert stat.S_IMODE(directory.stat().st_mode) & 0o067 == 0, directory
    finally:
        proc.terminate()
        proc.wait(timeout=30)
