"""``zlh artifacts add`` killed mid-way, or racing another add, never damages the catalog."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import ZLH
from zlh.artifacts.store import ArtifactStore
from zlh.schemas import ArtifactKind

MiB = 1024 * 1024


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def partials(directory: Path) -> list[Path]:
    return list(directory.glob(".*.partial-*")) if directory.is_dir() else []


def visible_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


@contextlib.contextmanager
def started(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*ZLH, "artifacts", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def open_fifo_writer(fifo: Path, proc: subprocess.Popen[bytes]) -> int:
    """Open ``fifo`` for writing once the reader has it open (blocking writes from then on)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # ENXIO: no reader yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"zlh never opened {fifo} (exit {proc.returncode})") from None
            time.sleep(0.02)
    os.set_blocking(fd, True)
    return fd


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "store")
    source = tmp_path / "node-v22.tar.gz"
    source.write_bytes(os.urandom(100_000))
    store.add_file("runtime", "node", "22", source)
    return store


def test_sigkill_mid_copy_leaves_the_previous_catalog_and_no_referenced_half_file(
    store: ArtifactStore, tmp_path: Path
) -> None:
    before = store.catalog_path.read_bytes()
    fifo = tmp_path / "node-v24.tar.gz"
    os.mkfifo(fifo)
    target = store.root / "runtime/node/24"
    with started(
        "add", "runtime", "node", "24", "--file", str(fifo), "--store", str(store.root)
    ) as proc:
        fd = open_fifo_writer(fifo, proc)
        try:
            os.write(fd, os.urandom(2 * MiB))  # the source stays open: the copy cannot finish
            wait_for(
                lambda: any(p.stat().st_size >= MiB for p in partials(target)),
                "the copy to be under way",
            )
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
        finally:
            with contextlib.suppress(BrokenPipeError):
                os.close(fd)

    assert store.catalog_path.read_bytes() == before
    assert store.catalog().section(ArtifactKind.RUNTIME)["node"].get("24") is None
    assert store.verify() == []
    assert partials(target), "the kill should have caught the copy half-way"
    assert visible_files(target) == []

    # The store is still usable: the same version can be added afterwards.
    complete = tmp_path / "complete" / "node-v24.tar.gz"
    complete.parent.mkdir()
    complete.write_bytes(b"complete")
    store.add_file("runtime", "node", "24", complete)
    assert visible_files(target) == ["node-v24.tar.gz"]
    assert store.verify() == []


def test_add_waits_for_the_lock_and_a_kill_while_waiting_changes_nothing(
    store: ArtifactStore, tmp_path: Path
) -> None:
    before = store.catalog_path.read_bytes()
    lock = store.root / ".lock"
    holder = subprocess.Popen(["flock", "--no-fork", str(lock), "sleep", "600"])  # one process
    try:

        def held_by_someone_else() -> bool:
            with lock.open("rb") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                return False

        wait_for(held_by_someone_else, "flock(1) to take the store lock")
        source = tmp_path / "go.tar.gz"
        source.write_bytes(os.urandom(300_000))
        target = store.root / "runtime/go/1.25"
        with started(
            "add", "runtime", "go", "1.25", "--file", str(source), "--store", str(store.root)
        ) as waiting:
            wait_for(
                lambda: any(p.stat().st_size == 300_000 for p in partials(target)),
                "the copy to finish and the add to wait for the lock",
            )
            assert waiting.poll() is None
            assert store.catalog_path.read_bytes() == before
            waiting.send_signal(signal.SIGKILL)
            waiting.wait()
        assert store.catalog_path.read_bytes() == before
        assert visible_files(target) == []

        # Once the holder dies (killed while holding it), the kernel drops the lock.
        with started(
            "add", "runtime", "go", "1.25", "--file", str(source), "--store", str(store.root)
        ) as next_add:
            holder.send_signal(signal.SIGKILL)
            assert next_add.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()
    assert visible_files(target) == ["go.tar.gz"]
    assert store.verify() == []


def test_concurrent_adds_keep_every_entry(store: ArtifactStore, tmp_path: Path) -> None:
    wanted = [("python", "3.12"), ("go", "1.25"), ("java", "21")]
    procs = []
    for name, version in wanted:
        source = tmp_path / f"{name}-{version}.tar.gz"
        source.write_bytes(os.urandom(500_000))
        add = ["add", "runtime", name, version, "--file", str(source), "--store", str(store.root)]
        procs.append(subprocess.Popen([*ZLH, "artifacts", *add], stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    catalog = store.catalog()
    for name, version in [*wanted, ("node", "22")]:
        assert catalog.section(ArtifactKind.RUNTIME)[name].get(version) is not None, name
    assert store.verify() == []
