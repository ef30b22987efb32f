"""One ``flock`` helper: a lock file held for the length of a ``with`` block, shared or
exclusive, waiting or not (threads and processes alike: each call opens its own descriptor)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["flocked"]


@contextlib.contextmanager
def flocked(path: Path, *, wait: bool = True, shared: bool = False) -> Iterator[bool]:
    """Hold ``path`` (created 0600, never through a link); yields False when ``wait`` is off
    and another holder has it (nothing held then), else True."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
