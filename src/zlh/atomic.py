"""Replacing a small file all at once: readers see the old contents or the new, never a part."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``.

    The file gets exactly ``mode`` (whatever the umask) before it holds anything, so a secret
    is never readable by others even for a moment. The temporary name is created exclusively
    (a leftover or a planted link there is removed first, never followed) and is gone
    afterwards, also when writing fails.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
