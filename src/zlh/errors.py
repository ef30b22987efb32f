"""Exceptions shared by every part of ``zlh``.

::

    ZlhError                      anything the platform reports as a clean failure
     ├── UsageError               bad command-line or config input (CLI exit code 2)
     └── (each package adds its own subtree, e.g. zlh.artifacts.errors.ArtifactError)

Lower-level errors (OSError, httpx/aiohttp errors, lxc failures) are translated at the package
boundary with ``raise ... from exc`` so callers only ever catch ``ZlhError``.
"""

from __future__ import annotations

__all__ = ["UsageError", "ZlhError"]


class ZlhError(Exception):
    """A failure with a message meant for a person. ``status_code`` is the HTTP mapping."""

    status_code: int = 500

    def __init__(self, message: str, *, reason: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        if status_code is not None:
            self.status_code = status_code


class UsageError(ZlhError):
    status_code = 400
