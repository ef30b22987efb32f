"""File-level building blocks of the artifact store: staged copies, atomic writes, safe lookups.

A staged copy is a hidden ``.<file>.partial-*`` file beside its final place, flock-held by its
writer for its whole life, hashed and counted as it is written, fsynced, then renamed into
place. A dead writer's partial file is recognisable: old and not locked.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from zlh.artifacts.errors import ArtifactError
from zlh.atomic import fsync_dir

__all__ = [
    "CHUNK_SIZE",
    "PartialFile",
    "file_in_store",
    "hash_file",
    "read_chunks",
    "sweep_partials",
]

CHUNK_SIZE = 1 << 20
_PARTIAL = ".partial-"
# A partial file younger than this is never swept, even unlocked: it may be a copy that has
# been created but not yet locked by its writer.
_PARTIAL_GRACE_S = 60.0


def file_in_store(root: Path, relative: str) -> Path | None:
    """The real path of the regular file ``relative`` names inside ``root``, else None.

    ``relative`` is an already-decoded URL path below the store. Refused (None): empty, ``.``
    or ``..`` segments, hidden names (lock, partial and temp files), backslashes, NUL, and
    anything whose real path (after symlinks) leaves the store or is not a regular file.
    """
    segments = relative.split("/")
    if any(not s or s.startswith(".") or "\\" in s or "\x00" in s for s in segments):
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *segments))
    if os.path.commonpath([real_root, real]) != real_root:
        return None
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except OSError:
        return None
    return Path(real)


class PartialFile:
    """A hidden, flock-held temp file that hashes what is written and renames into place."""

    def __init__(self, directory: Path, filename: str) -> None:
        self._directory = directory
        try:
            fd, name = tempfile.mkstemp(dir=directory, prefix=f".{filename}{_PARTIAL}")
        except OSError as exc:
            raise ArtifactError(f"cannot write into {directory}: {exc.strerror}") from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256 = ""
        self._committed = False

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()
        if not self._committed:
            self.path.unlink(missing_ok=True)

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise ArtifactError(f"cannot write {self.path}: {exc.strerror}") from exc

    def finish(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            os.fchmod(self._file.fileno(), 0o644)
        except OSError as exc:
            raise ArtifactError(f"cannot write {self.path}: {exc.strerror}") from exc
        self.sha256 = self._hash.hexdigest()

    def commit(self, target: Path) -> None:
        try:
            os.replace(self.path, target)
            fsync_dir(self._directory)
        except OSError as exc:
            raise ArtifactError(f"cannot move {self.path} to {target}: {exc.strerror}") from exc
        self._committed = True


def hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def read_chunks(src: BinaryIO, source: Path) -> Iterator[bytes]:
    try:
        while chunk := src.read(CHUNK_SIZE):
            yield chunk
    except OSError as exc:
        raise ArtifactError(f"cannot read {source}: {exc.strerror}") from exc


def sweep_partials(directory: Path) -> None:
    """Delete partial files left by dead writers: old enough and nobody holds their flock."""
    for path in directory.glob(f".*{_PARTIAL}*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < _PARTIAL_GRACE_S:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except OSError:
            continue  # locked: a live copy
        finally:
            os.close(fd)
