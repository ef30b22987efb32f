"""Replacing a small file all at once: readers see the old contents or the new, never a part."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "partial_glob", "write_atomically"]


def write_atomically(
    path: Path, data: str | bytes, *, mode: int = 0o644, durable: bool = False
) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    The file gets exactly ``mode`` (whatever the umask) before it holds anything, so a secret
    is never readable by others even for a moment. The temporary name is created exclusively
    (a leftover or a planted link there is removed first, never followed) and is gone
    afterwards, also when writing fails. ``durable``: the data and the rename reach the disk
    before this returns (fsync of the file and of its directory), for records that must
    survive a power cut.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(partial, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def partial_glob(path: Path) -> str:
    """The names :func:`write_atomically` writes ``path`` through, for sweeping leftovers."""
    return f".{path.name}.*.partial"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
