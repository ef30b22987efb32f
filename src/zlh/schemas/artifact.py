"""One pinned artifact (url, sha256, size, format) and the checked strings it is made of.

Catalog entries, provisioning payloads and the API's stored pins all carry these.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator

from zlh.schemas._base import WireModel

__all__ = ["VERSION_PATTERN", "Artifact", "ArtifactFormat", "ArtifactMetadata", "Sha256", "Version"]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
# The same rule for a JSON schema (an API's path parameter or body field): no '/', no '..'.
VERSION_PATTERN = _VERSION_RE.pattern


class ArtifactFormat(StrEnum):
    TAR_GZ = "tar.gz"
    TAR_XZ = "tar.xz"
    TAR_ZST = "tar.zst"

    @classmethod
    def from_filename(cls, filename: str) -> ArtifactFormat:
        """The format a file name announces; ``.tgz`` counts as ``tar.gz``."""
        lowered = filename.lower()
        if lowered.endswith(".tgz"):
            return cls.TAR_GZ
        for fmt in cls:
            if lowered.endswith("." + fmt.value):
                return fmt
        raise ValueError(
            f"cannot tell the archive format of {filename!r}: expected one of "
            + ", ".join("." + f.value for f in cls)
        )


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.fullmatch(value):
        raise ValueError("must be 64 lowercase hex digits (a sha256 digest)")
    return value


def _check_version(value: str) -> str:
    if not _VERSION_RE.fullmatch(value) or value in {".", ".."}:
        raise ValueError(
            "must start with a letter or digit and contain only letters, digits, '.', '_', '+', '-'"
            " (at most 64 characters)"
        )
    return value


def _check_relative_dir(value: str) -> str:
    parts = value.split("/")
    if not value or value.startswith("/") or "\\" in value or "\x00" in value:
        raise ValueError(f"{value!r} must be a relative directory inside the artifact")
    if any(part in {"", "..", "."} for part in parts) and value != ".":
        raise ValueError(f"{value!r} must not contain empty, '.' or '..' components")
    return value


Sha256 = Annotated[str, AfterValidator(_check_sha256)]
Version = Annotated[str, AfterValidator(_check_version)]
RelativeDir = Annotated[str, AfterValidator(_check_relative_dir)]


class ArtifactMetadata(WireModel):
    """Where the bits came from. Free-form ``labels`` carry anything else worth recording."""

    upstream_version: str | None = None
    os: str = "linux"
    arch: str = "x86_64"
    source: str | None = None
    created: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Artifact(WireModel):
    """One pinned tarball. ``url`` is absolute (http/https) or relative to the artifact server."""

    url: str = Field(min_length=1, max_length=2048)
    sha256: Sha256
    size: int = Field(ge=0)
    format: ArtifactFormat
    strip_components: int = Field(default=0, ge=0, le=16)
    bin: list[RelativeDir] = Field(default_factory=list)
    metadata: ArtifactMetadata = Field(default_factory=ArtifactMetadata)

    @field_validator("url")
    @classmethod
    def _url_is_http_or_relative(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme:
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise ValueError("must be an http(s) URL or a path relative to the artifact server")
        elif value.startswith("/") or ".." in value.split("/") or "\\" in value:
            raise ValueError("a relative url must not start with '/' or contain '..'")
        return value

    def resolved_url(self, base_url: str) -> str:
        """The absolute URL, joining a relative ``url`` onto the artifact server's base URL."""
        if urlsplit(self.url).scheme:
            return self.url
        return base_url.rstrip("/") + "/" + self.url
