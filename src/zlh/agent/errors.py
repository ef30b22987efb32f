"""Errors of the agent. Each carries a stable ``code`` that ``/status`` reports on failure.

::

    ZlhError (zlh.errors)
     └── AgentError                 500  code "internal-error"
          ├── DownloadError         502  the artifact could not be fetched ("download-failed")
          │    ├── SizeMismatch          the bytes served are not the size the payload pins
          │    └── DigestMismatch        the bytes served do not hash to the pinned sha256
          ├── ArchiveError          422  the tarball cannot be read ("bad-archive")
          │    └── UnsafeArchive         a member would escape or subvert the target
          ├── InstallError          500  verification or the final rename failed
          ├── DevUserError          500  the dev user or workspace could not be set up
          │    └── UnsafeDevHome         something planted in the dev home is in the agent's way
          ├── AddonError            500  an addon failed to configure, start or stay up
          ├── NotFound              404
          └── Conflict              409

The installing errors (download, archive, install) live with the installer in
:mod:`zlh.install.errors`, whose base is ``AgentError``. aiohttp, OSError and tarfile errors
are translated where they happen (``raise ... from exc``).
"""

from __future__ import annotations

from zlh.install.errors import (
    ArchiveError,
    DigestMismatch,
    DownloadError,
    InstallError,
    SizeMismatch,
    UnsafeArchive,
)
from zlh.install.errors import InstallFailure as AgentError

__all__ = [
    "AddonError",
    "AgentError",
    "ArchiveError",
    "Conflict",
    "DevUserError",
    "DigestMismatch",
    "DownloadError",
    "InstallError",
    "NotFound",
    "SizeMismatch",
    "UnsafeArchive",
    "UnsafeDevHome",
]


class DevUserError(AgentError):
    code = "dev-user-failed"


class UnsafeDevHome(DevUserError):
    """A symlink, hard link, FIFO or non-directory where the agent works in the dev home."""

    code = "unsafe-dev-home"


class AddonError(AgentError):
    code = "addon-failed"


class NotFound(AgentError):
    status_code = 404
    code = "not-found"


class Conflict(AgentError):
    status_code = 409
    code = "conflict"
