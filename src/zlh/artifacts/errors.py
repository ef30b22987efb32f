"""Exceptions of the artifact store and its commands.

::

    ZlhError (zlh.errors)
     └── ArtifactError                 any store, catalog or transfer failure
          ├── CatalogInvalidError      catalog.json is not valid JSON or breaks the schema
          ├── UnknownArtifactError     a kind, runtime/addon name, version or file name the
          │                            schema does not allow, or a version not in the catalog
          ├── ArtifactConflictError    the version exists with another digest (no --replace)
          ├── DigestMismatchError      the bytes do not hash to the sha256 they were promised
          └── DownloadError            an --url download failed (HTTP status, network)

OSError and httpx errors are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from zlh.errors import ZlhError

__all__ = [
    "ArtifactConflictError",
    "ArtifactError",
    "CatalogInvalidError",
    "DigestMismatchError",
    "DownloadError",
    "UnknownArtifactError",
]


class ArtifactError(ZlhError):
    status_code = 500


class CatalogInvalidError(ArtifactError):
    status_code = 500


class UnknownArtifactError(ArtifactError):
    status_code = 404


class ArtifactConflictError(ArtifactError):
    status_code = 409


class DigestMismatchError(ArtifactError):
    status_code = 422


class DownloadError(ArtifactError):
    status_code = 502
