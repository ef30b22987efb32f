"""Errors of an install. Each carries a stable ``code`` that the agent's ``/status`` reports.

::

    ZlhError (zlh.errors)
     └── InstallFailure             500  code "internal-error" (the agent's AgentError)
          ├── DownloadError         502  the artifact could not be fetched ("download-failed")
          │    ├── SizeMismatch          the bytes served are not the size the payload pins
          │    └── DigestMismatch        the bytes served do not hash to the pinned sha256
          ├── ArchiveError          422  the tarball cannot be read ("bad-archive")
          │    └── UnsafeArchive         a member would escape or subvert the target
          └── InstallError          500  verification or the final rename failed

The base is the agent's own error base (``zlh.agent.errors.AgentError`` is this class), so an
install failure inside a container reports its code like any other agent error, and the host,
which installs its shared layers with the same code, gets the same messages.
"""

from __future__ import annotations

from zlh.errors import ZlhError

__all__ = [
    "ArchiveError",
    "DigestMismatch",
    "DownloadError",
    "InstallError",
    "InstallFailure",
    "SizeMismatch",
    "UnsafeArchive",
]


class InstallFailure(ZlhError):
    code = "internal-error"


class DownloadError(InstallFailure):
    status_code = 502
    code = "download-failed"


class SizeMismatch(DownloadError):
    code = "size-mismatch"


class DigestMismatch(DownloadError):
    code = "digest-mismatch"


class ArchiveError(InstallFailure):
    status_code = 422
    code = "bad-archive"


class UnsafeArchive(ArchiveError):
    code = "unsafe-archive"


class InstallError(InstallFailure):
    code = "install-failed"
